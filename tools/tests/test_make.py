"""`make help` lists every target of the Makefile (and of kernel/kernel.mk, which it includes)."""

from __future__ import annotations

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
