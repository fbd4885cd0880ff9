"""p2pkp.ko in a guest: load it when absent, reload it when the build changed (one rule).

The guest remembers which build it loaded (the build id in /run, a tmpfs of the guest):
a module loaded by hand or by a test (insmod with parameters) counts as a different build.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from p2pkpvm.errors import HarnessError
from p2pkpvm.vm.guest import Guest

MODULE_NAME = "p2pkp"
STAMP = "/run/p2pkp-module.sha256"
SYS_MODULE = "/sys/module"  # a directory per loaded module
_digests: dict[tuple[str, int, int], str] = {}


def build_id(ko: Path) -> str:
    """Which build of a .ko this is: SHA-256 of its bytes and its mtime, cached per file
    state (path, mtime, size)."""
    try:
        st = ko.stat()
    except OSError as exc:
        raise HarnessError(f"module {ko} is not built: run `make`") from exc
    key = (str(ko), st.st_mtime_ns, st.st_size)
    if key not in _digests:
        # The file's time is part of the id: every rebuild is reloaded, also one that made
        # the same bytes (a reload costs a second; a stale module costs a wrong result).
        h = hashlib.sha256(ko.read_bytes())
        h.update(str(st.st_mtime_ns).encode())
        _digests[key] = h.hexdigest()
    return _digests[key]


def ensure_script(ko: Path, want: str, load: bool = True) -> str:
    """Shell: reload p2pkp when the loaded build is not `want`; insmod it when absent (if
    load). Prints what it did: kept, loaded, reloaded or absent."""
    k = shlex.quote(str(ko))
    insmod = f"insmod {k} && echo {want} > {STAMP}"
    absent = f"{insmod} && echo loaded" if load else "echo absent"
    # Builtins only on the usual path (kept): each exec costs ~0.2 s under TCG, once per test.
    return (
        f"if ! [ -d {SYS_MODULE}/{MODULE_NAME} ]; then rm -f {STAMP}; {absent}; "
        f"else have=; {{ read -r have < {STAMP}; }} 2>/dev/null; "
        f'if [ "$have" != {want} ]; then rmmod {MODULE_NAME} && '
        f"{insmod} && echo reloaded; else echo kept; fi; fi"
    )


def ensure_module(vm: Guest, load: bool = True, before: str = "") -> str:
    """Make vm run the current build of its module: kept, loaded, reloaded (or absent when
    load is False and it was not loaded). rmmod fails while a P2PKP socket is open.  `before`:
    shell run first in the same console round (it must succeed)."""
    ko = vm.module
    cmd = ensure_script(ko, build_id(ko), load)
    if before:
        cmd = f"{before} && {{ {cmd}; }}"
    return vm.run(cmd, timeout=60.0).output.strip()
