"""The rule that keeps p2pkp.ko current in a guest, run by a real shell against a fake
/sys/module, insmod and rmmod (no VM)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from p2pkpvm.vm import module


def run(script: str, tmp: Path) -> str:
    """script with /sys/module, /run and the module tools redirected into tmp."""
    bin_ = tmp / "bin"
    bin_.mkdir(exist_ok=True)
    for tool, body in {
        "insmod": f'mkdir -p {tmp}/sys/p2pkp; echo insmod "$@" >> {tmp}/log',
        "rmmod": f"rmdir {tmp}/sys/p2pkp; echo rmmod >> {tmp}/log",
    }.items():
        (bin_ / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / tool).chmod(0o755)
    (tmp / "sys").mkdir(exist_ok=True)
    script = script.replace(module.SYS_MODULE, f"{tmp}/sys").replace(module.STAMP, f"{tmp}/s")
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}")
    return subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_load_keep_reload(tmp_path: Path) -> None:
    ko = tmp_path / "p2pkp.ko"
    ko.write_bytes(b"build 1")
    first = module.build_id(ko)
    assert run(module.ensure_script(ko, first, load=False), tmp_path) == "absent"
    assert run(module.ensure_script(ko, first), tmp_path) == "loaded"
    assert run(module.ensure_script(ko, first), tmp_path) == "kept"
    os.utime(ko, ns=(1, 2))  # rebuilt: same bytes, new file
    second = module.build_id(ko)
    assert second != first
    assert run(module.ensure_script(ko, second, load=False), tmp_path) == "reloaded"
    assert (tmp_path / "log").read_text().splitlines() == [f"insmod {ko}", "rmmod", f"insmod {ko}"]
