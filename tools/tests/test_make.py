"""`make help` lists every target of the Makefile (and of kernel/kernel.mk, which it includes)."""

from __future__ import annotations

import os
import re
import subprocess

from p2pkpvm.paths import project_root


def targets() -> set[str]:
    root = project_root()
    text = (root / "Makefile").read_text() + (root / "kernel" / "kernel.mk").read_text()
    rules = re.findall(r"^([a-z][a-z0-9 -]*):(?!=)", text, re.MULTILINE)
    return {t for rule in rules for t in rule.split()}


def test_help_lists_every_target() -> None:
    found = targets()
    assert {"all", "vm-test", "vm-up", "kernel", "debug-module"} <= found
    out = subprocess.run(
        ["make", "-s", "help"], cwd=project_root(), capture_output=True, text=True, timeout=60
    ).stdout
    listed = set(re.findall(r"make ([a-z][a-z0-9-]*)", out)) | {"all", "help"}
    for line in out.splitlines():  # "make checkpatch | w1 | lint | unit"
        if "|" in line and line.strip().startswith("make "):
            listed |= {w.strip().split()[0] for w in line.strip()[5:].split("|")}
    missing = sorted(found - listed)
    assert not missing, f"make help does not list: {missing}\n{out}"


def _make_n(*args: str) -> subprocess.CompletedProcess[str]:
    """`make -n ARGS` as a user would type it (not the PIN of a make running these tests)."""
    env = dict(os.environ)
    for name in ("KDIR", "KERNEL", "PIN", "P2PKP_PIN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    return subprocess.run(
        ["make", "-s", "-n", *args],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_pin_chooses_headers_and_build_dir() -> None:
    """The default pin builds p2pkp.ko in the work tree, another pin in out/stock-<pin>-module
    against its own headers (the rule p2pkpvm.kernel.choice.module_dir follows)."""
    root = project_root()
    default = _make_n("deps", "module")
    assert "--pin 6.1 deps install" in default.stdout
    assert f"-C /lib/modules/6.1.0-56-amd64/build M={root} modules" in default.stdout
    other = _make_n("module", "deps", "PIN=6.12", "QEMU=backports")
    assert "--pin 6.12 deps install --qemu backports" in other.stdout
    assert (
        f"-C /lib/modules/6.12.117+deb12-amd64/build M={root}/out/stock-6.12-module modules"
        in other.stdout
    )


def test_unknown_pin_stops_make() -> None:
    proc = _make_n("module", "PIN=5.10")
    assert proc.returncode != 0
    assert "PIN=5.10 is not a kernel pin of configs/kernel-pin.yaml (pins: 6.1 6.12)" in proc.stderr


def test_matrix_runs_every_pin() -> None:
    proc = _make_n("vm-test-matrix")
    assert "for p in 6.1 6.12; do" in proc.stdout, proc.stdout + proc.stderr
