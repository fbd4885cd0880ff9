"""vng command building (no VM)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from p2pkpvm.vm.vng import (
    ETH_MTU,
    NicSpec,
    VngSpec,
    build_argv,
    guest_mac,
    masked_in_guest,
    stderr_to_file,
    without_udev,
)

KERNEL = Path("/boot/vmlinuz-test")


def test_tcg_guest_with_nic() -> None:
    nic = NicSpec(tap="tap1", mac="02:00:00:00:00:01")
    argv = build_argv(
        VngSpec(kernel=KERNEL, name="vm2", cpus=1, memory="512M", cwd=Path("/work"), nics=(nic,)),
        vng="vng",
    )
    assert argv[:3] == ["vng", "--run", str(KERNEL)]
    assert argv[argv.index("--name") + 1] == "vm2"
    assert argv[argv.index("--cpus") + 1] == "1"
    assert argv[argv.index("--memory") + 1] == "512M"
    assert argv[argv.index("--cwd") + 1] == "/work"
    assert "--disable-kvm" in argv
    appends = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert {"net.ifnames=0", "panic=-1"} <= set(appends)
    qemu = [a for a in argv if a.startswith("--qemu-opts=")]
    assert len(qemu) == 1
    opts = shlex.split(qemu[0].split("=", 1)[1])
    assert "-no-reboot" in opts
    assert opts[opts.index("-netdev") + 1] == "tap,id=n0,ifname=tap1,script=no,downscript=no"
    assert opts[opts.index("-device") + 1] == "virtio-net-pci,netdev=n0,mac=02:00:00:00:00:01"


def test_nic_mtu_is_announced_with_host_mtu() -> None:
    """Another MTU than 1500 goes to virtio-net as host_mtu (before the USO options); 1500
    leaves the device exactly as before (no host_mtu)."""
    plain = NicSpec(tap="tap0", mac="02:00:00:00:00:01", device_options=",host_uso=off")
    assert plain.mtu == ETH_MTU == 1500
    assert plain.qemu_args()[-1] == "virtio-net-pci,netdev=n0,mac=02:00:00:00:00:01,host_uso=off"
    assert (
        NicSpec(tap="tap0", mac="02:00:00:00:00:01", mtu=1500).qemu_args()
        == NicSpec(tap="tap0", mac="02:00:00:00:00:01").qemu_args()
    )
    jumbo = NicSpec(tap="tap0", mac="02:00:00:00:00:01", device_options=",host_uso=off", mtu=65520)
    assert jumbo.qemu_args() == [
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-pci,netdev=n0,mac=02:00:00:00:00:01,host_mtu=65520,host_uso=off",
    ]
    argv = build_argv(VngSpec(kernel=KERNEL, name="vm1", nics=(jumbo,)))
    (qemu,) = [a for a in argv if a.startswith("--qemu-opts=")]
    assert "host_mtu=65520" in shlex.split(qemu.split("=", 1)[1])[-1]


@pytest.mark.parametrize("mtu", [0, 67, 65536])
def test_nic_mtu_outside_what_host_mtu_can_say(mtu: int) -> None:
    with pytest.raises(ValueError, match=r"68\.\.65535"):
        NicSpec(tap="tap0", mac="02:00:00:00:00:01", mtu=mtu)


def test_kvm_and_exec() -> None:
    argv = build_argv(
        VngSpec(
            kernel=KERNEL, name="p", accel="kvm", append=(), extra_qemu=(), exec_cmd=("echo", "hi")
        ),
        vng="/x/vng",
    )
    assert "--disable-kvm" not in argv
    assert not any(a.startswith("--qemu-opts") for a in argv)
    assert argv[-3:] == ["--", "echo", "hi"]


@pytest.mark.parametrize("accel,cpus", [("qemu", 1), ("tcg", 0)])
def test_bad_spec(accel: str, cpus: int) -> None:
    with pytest.raises(ValueError):
        VngSpec(kernel=KERNEL, name="x", accel=accel, cpus=cpus)


def test_macs_distinct_local_unicast() -> None:
    macs = {guest_mac("run-a", i) for i in range(8)} | {guest_mac("run-b", i) for i in range(8)}
    assert len(macs) == 16
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01, mac
    assert guest_mac("run-a", 3) == guest_mac("run-a", 3)
    with pytest.raises(ValueError):
        guest_mac("r", 256)


def test_stderr_to_file_keeps_argv() -> None:
    argv = stderr_to_file(["vng", "a b", "--x"], Path("/tmp/log file"))
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[4:] == ["/tmp/log file", "vng", "a b", "--x"]


def test_shell_override() -> None:
    argv = build_argv(VngSpec(kernel=KERNEL, name="x", shell=Path("/s/guest-shell")))
    assert argv[argv.index("--shell") + 1] == "/s/guest-shell"


@pytest.mark.parametrize(
    ("path", "hidden"),
    [
        ("/var/tmp/clone", "/var/tmp"),
        ("/var/tmp", "/var/tmp"),
        ("/var/cache/p2pkp/x", "/var/cache"),
        ("/run/user/0/p", "/run"),
        ("/tmp/ci/p", None),
        ("/work/main", None),
        ("/var/tmpfoo/p", None),
    ],
)
def test_masked_in_guest(path: str, hidden: str | None) -> None:
    assert masked_in_guest(Path(path)) == hidden


def test_project_under_masked_dir_is_refused() -> None:
    """A clone in /var/tmp booted guests whose shell was missing (found the hard way)."""
    with pytest.raises(ValueError, match=r"under /var/tmp, which virtme-ng replaces"):
        VngSpec(kernel=Path("/boot/vmlinuz"), name="vm1", cwd=Path("/var/tmp/p2pkp"))
    with pytest.raises(ValueError, match=r"shell /var/tmp/p/guest-shell is under /var/tmp"):
        VngSpec(kernel=Path("/boot/vmlinuz"), name="vm1", shell=Path("/var/tmp/p/guest-shell"))


def test_without_udev_hides_udevd_from_what_it_runs(tmp_path: Path) -> None:
    """The wrapper really hides the directories (a mount namespace of its own, a tmpfs over
    each) from the command it runs, and only from it."""
    d = tmp_path / "systemd"
    d.mkdir()
    (d / "systemd-udevd").write_text("")
    link = tmp_path / "lib-systemd"
    link.symlink_to(d)  # like /lib -> usr/lib: one mount, not two
    probe = ["/bin/sh", "-c", f"ls -A {d}; grep -c p2pkp-no-udev /proc/self/mounts"]
    argv = without_udev(probe, dirs=(str(d), str(link), str(tmp_path / "absent")))
    assert argv[-len(probe) :] == probe
    if os.geteuid() != 0:
        pytest.skip("mounting in a new mount namespace needs root (the harness runs as root)")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1"], out  # nothing listed; one tmpfs
    assert (d / "systemd-udevd").exists()  # the host's view is unchanged


def test_without_udev_is_default_and_optional() -> None:
    assert VngSpec(kernel=Path("/k"), name="vm1").udev is False
    assert without_udev(["vng"], dirs=("/nonexistent-p2pkp",)) == ["vng"]
