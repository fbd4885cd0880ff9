"""Which kernel the VM tests boot (`--kernel stock|debug`) and what goes with it.

stock: the pinned Debian image and `p2pkp.ko` in the work tree (the default).
debug: the cached sanitizer build of `make kernel` (tools/p2pkpvm/kbuild.py), the module
built against it into `out/debug-module/` (`make KERNEL=debug debug-module`), longer
deadlines (KASAN + lockdep under TCG are several times slower) and `kasan_multi_shot`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.errors import HarnessError
from p2pkpvm.pin import project_root

KERNELS = ("stock", "debug")
DEBUG_TIME_SCALE = 6.0
# Set by conftest for the whole pytest process, so that helpers that only know a path
# (p2pkp_scenario.module_ko, cluster.default_module) load the module built for the kernel.
MODULE_ENV = "P2PKP_MODULE"


@dataclass(frozen=True)
class KernelChoice:
    name: str
    image: Path | None  # None: the pinned stock vmlinuz (Cluster's default)
    module: Path
    time_scale: float = 1.0
    append: tuple[str, ...] = ()
    kmemleak: bool = False  # scan kmemleak after each test module


def debug_module_dir() -> Path:
    return project_root() / "out" / "debug-module"


def select(name: str) -> KernelChoice:
    """The kernel `name`; HarnessError with the command to run when it is not built."""
    if name == "stock":
        return KernelChoice("stock", None, project_root() / "p2pkp.ko")
    if name != "debug":
        raise HarnessError(f"unknown kernel {name!r}: expected one of {', '.join(KERNELS)}")
    from p2pkpvm import kbuild  # only the debug kernel needs it

    kb = kbuild.plan("debug")
    if not kb.complete():
        raise HarnessError(f"the debug kernel is not built ({kb.directory}): run `make kernel`")
    return KernelChoice(
        "debug",
        kb.bzimage,
        debug_module_dir() / "p2pkp.ko",
        time_scale=DEBUG_TIME_SCALE,
        append=("kasan_multi_shot",),
        kmemleak=True,
    )


def module_path(default: Path) -> Path:
    """The module the tests load: $P2PKP_MODULE when set (debug runs), else `default`."""
    env = os.environ.get(MODULE_ENV)
    return Path(env) if env else default


def vermagic(module: Path) -> str:
    """The release field of a .ko's vermagic (e.g. '6.1.0-56-amd64')."""
    if not module.exists():
        raise HarnessError(f"module {module} is not built")
    try:
        out = subprocess.run(
            ["modinfo", "-F", "vermagic", str(module)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"cannot read the vermagic of {module}: {exc}") from exc
    fields = out.split()
    if not fields:
        raise HarnessError(f"{module} has no vermagic (not a kernel module?)")
    return fields[0]


def check_vermagic(module: Path, release: str, where: str) -> None:
    """HarnessError unless `module` was built for kernel `release` (booted in `where`)."""
    built_for = vermagic(module)
    if built_for != release:
        hint = (
            "`make KERNEL=debug debug-module`"
            if module.parent == debug_module_dir()
            else "`make` (stock) or `make KERNEL=debug debug-module` (debug)"
        )
        raise HarnessError(
            f"{where}: {module} was built for kernel {built_for!r} but the guest runs "
            f"{release!r}: insmod would fail; rebuild it with {hint}"
        )
