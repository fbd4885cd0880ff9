"""Which kernel a cluster boots (`--kernel stock|lean|debug`) and what goes with it.

stock: the pinned Debian image and `p2pkp.ko` in the work tree (the default).
lean: the pinned source built with configs/kconfig/guest.config only (`make lean-kernel`,
cached): everything the guests need built in, so they boot faster; the module built against
it into `out/lean-module/` (`make KERNEL=lean lean-module`).
debug: the cached sanitizer build of `make kernel` (p2pkpvm.kernel.kbuild), the module built
against it into `out/debug-module/` (`make KERNEL=debug debug-module`), longer deadlines (KASAN +
lockdep under TCG are several times slower) and `kasan_multi_shot`.

The choice travels with the cluster (Cluster.kernel) and each of its guests (VM.kernel): whoever
loads the module asks the guest which one it needs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.pin import load_pin
from p2pkpvm.paths import project_root

KERNELS = ("stock", "lean", "debug")
# kernel name -> kbuild flavour of the pinned source
FLAVOURS = {"lean": "guest", "debug": "debug"}
DEBUG_TIME_SCALE = 6.0


@dataclass(frozen=True)
class KernelChoice:
    name: str
    image: Path  # what vng boots
    module: Path  # the p2pkp.ko built for it
    time_scale: float = 1.0  # every deadline is multiplied by this
    append: tuple[str, ...] = ()  # kernel command line additions
    kmemleak: bool = False  # scan kmemleak after each test module

    @property
    def verify_module(self) -> bool:
        """Check the module's vermagic after boot (clear error instead of insmod's)."""
        return self.name != "stock"


def stock() -> KernelChoice:
    return KernelChoice("stock", load_pin().vmlinuz, project_root() / "p2pkp.ko")


def debug_module_dir() -> Path:
    return module_dir("debug")


def module_dir(name: str) -> Path:
    """Where `make KERNEL=name name-module` puts the module of a built kernel."""
    return project_root() / "out" / f"{name}-module"


def select(name: str) -> KernelChoice:
    """The kernel `name`; HarnessError with the command to run when it is not built."""
    if name == "stock":
        return stock()
    if name not in FLAVOURS:
        raise HarnessError(f"unknown kernel {name!r}: expected one of {', '.join(KERNELS)}")
    from p2pkpvm.kernel import kbuild  # only the built kernels need it

    kb = kbuild.plan(FLAVOURS[name])
    if not kb.complete():
        target = "kernel" if name == "debug" else f"{name}-kernel"
        raise HarnessError(f"the {name} kernel is not built ({kb.directory}): run `make {target}`")
    if name == "lean":
        return KernelChoice("lean", kb.bzimage, module_dir("lean") / "p2pkp.ko")
    return KernelChoice(
        "debug",
        kb.bzimage,
        debug_module_dir() / "p2pkp.ko",
        time_scale=DEBUG_TIME_SCALE,
        append=("kasan_multi_shot",),
        kmemleak=True,
    )


def modinfo(module: Path, field: str) -> str:
    """One field of a .ko's modinfo ("" when absent)."""
    if not module.exists():
        raise HarnessError(f"module {module} is not built: run `make`")
    try:
        return subprocess.run(
            ["modinfo", "-F", field, str(module)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"cannot read the {field} of {module}: {exc}") from exc


def vermagic(module: Path) -> str:
    """The release field of a .ko's vermagic (e.g. '6.1.0-56-amd64')."""
    fields = modinfo(module, "vermagic").split()
    if not fields:
        raise HarnessError(f"{module} has no vermagic (not a kernel module?)")
    return fields[0]


def check_vermagic(module: Path, release: str, where: str) -> None:
    """HarnessError unless `module` was built for kernel `release` (booted in `where`)."""
    built_for = vermagic(module)
    if built_for != release:
        built = [n for n in FLAVOURS if module.parent == module_dir(n)]
        hint = (
            f"`make KERNEL={built[0]} {built[0]}-module`"
            if built
            else "`make` (stock), `make KERNEL=lean lean-module` or "
            "`make KERNEL=debug debug-module`"
        )
        raise HarnessError(
            f"{where}: {module} was built for kernel {built_for!r} but the guest runs "
            f"{release!r}: insmod would fail; rebuild it with {hint}"
        )
