"""Kernel selection for the VM tests (stock | debug): module path, vermagic, kmemleak."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel import choice as kernels
from p2pkpvm.kernel.pin import load_pins
from p2pkpvm.paths import project_root
from p2pkpvm.vm import crash
from p2pkpvm.vm.machine import VM
from p2pkpvm.vm.vng import DEFAULT_APPEND, VngSpec, build_argv

DATA = Path(__file__).parent / "data" / "crash"


def fake_module(tmp_path: Path, vermagic: str) -> Path:
    """A minimal ELF file whose .modinfo says `vermagic` (what modinfo reads)."""
    if shutil.which("objcopy") is None:
        pytest.skip("objcopy (binutils) is not installed")
    info = tmp_path / "modinfo.bin"
    info.write_bytes(b"license=GPL\0vermagic=" + vermagic.encode() + b"\0")
    ko = tmp_path / "x.ko"
    subprocess.run(
        [
            "objcopy",
            "-I",
            "binary",
            "-O",
            "elf64-x86-64",
            "-B",
            "i386:x86-64",
            "--rename-section",
            ".data=.modinfo",
            str(info),
            str(ko),
        ],
        check=True,
        timeout=30,
    )
    return ko


def test_stock_is_the_work_tree_module() -> None:
    """The default pin's stock kernel uses p2pkp.ko of the work tree; another pin's, the
    module `make PIN=6.12` builds in out/ (the rule of kernel/kernel.mk)."""
    pins = load_pins()
    default = pins.get(pins.default)
    k = kernels.select("stock", default)
    assert k.image == default.vmlinuz and k.pin == pins.default
    assert k.module == project_root() / "p2pkp.ko" and not k.verify_module
    assert k.time_scale == 1.0 and k.append == () and not k.kmemleak
    other = kernels.select("stock", pins.get("6.12"))
    assert other.image == Path("/boot/vmlinuz-6.12.117+deb12-amd64")
    assert other.module == project_root() / "out" / "stock-6.12-module" / "p2pkp.ko"
    assert other.verify_module
    assert other.label == "stock 6.12 (vmlinuz-6.12.117+deb12-amd64)"


def test_module_dirs_follow_kernel_and_pin() -> None:
    pins = load_pins()
    root = project_root()
    assert kernels.module_dir("debug", pins.get("6.1")) == root / "out" / "debug-module"
    assert kernels.module_dir("lean", pins.get("6.12")) == root / "out" / "lean-6.12-module"


def test_unknown_kernel() -> None:
    with pytest.raises(HarnessError, match="unknown kernel 'rt'"):
        kernels.select("rt")


def test_kernel_choice_travels_with_the_guest() -> None:
    """The module a guest loads comes from the kernel it booted, not from the environment."""
    debug = kernels.KernelChoice("debug", Path("/k/bzImage"), Path("/x/out/debug-module/p2pkp.ko"))
    spec = VngSpec(kernel=debug.image, name="vm1")
    vm = VM(spec, Path("/nonexistent"), kernel=debug)
    assert vm.module == Path("/x/out/debug-module/p2pkp.ko")
    pins = load_pins()
    stock = kernels.stock(pins.get(pins.default))
    assert VM(spec, Path("/nonexistent"), kernel=stock).module == project_root() / "p2pkp.ko"


def test_vermagic_match_and_mismatch(tmp_path: Path) -> None:
    ko = fake_module(tmp_path, "6.1.192-p2pkp SMP preempt mod_unload ")
    assert kernels.vermagic(ko) == "6.1.192-p2pkp"
    kernels.check_vermagic(ko, "6.1.192-p2pkp", "vm1")
    with pytest.raises(HarnessError, match=r"vm1: .*built for kernel '6.1.192-p2pkp'"):
        kernels.check_vermagic(ko, "6.1.0-56-amd64", "vm1")


def test_vermagic_missing_module(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="is not built"):
        kernels.vermagic(tmp_path / "none.ko")


def test_kmemleak_file_record_is_a_finding() -> None:
    # What `cat /sys/kernel/debug/kmemleak` prints (captured from the debug kernel),
    # as it comes back over the console (CRLF).
    text = (DATA / "debug-kmemleak-record.log").read_text().replace("\n", "\r\n")
    found = [f for f in crash.scan(text) if f.kind == "kmemleak"]
    assert found, "a kmemleak record must fail the module"
    assert "crashme_leak" in found[0].summary()


def test_extra_append_keeps_the_defaults() -> None:
    spec = VngSpec(kernel=Path("/k"), name="vm1", append=(*DEFAULT_APPEND, "kasan_multi_shot"))
    argv = build_argv(spec)
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert appended == [*DEFAULT_APPEND, "kasan_multi_shot"]


def test_each_boot_of_a_guest_logs_its_kernel_to_a_new_file(tmp_path: Path) -> None:
    """QEMU truncates its console file: a replacement must not share (and truncate) the
    log of the boot it replaces, whose crash report is the evidence."""
    from p2pkpvm.vm.machine import fresh_log

    first = fresh_log(tmp_path, "vm4", ".kmsg.log")
    first.write_text("Kernel panic - not syncing: sysrq triggered crash\n")
    second = fresh_log(tmp_path, "vm4", ".kmsg.log")
    assert (first.name, second.name) == ("vm4.kmsg.log", "vm4-2.kmsg.log")
