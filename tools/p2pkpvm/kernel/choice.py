"""Which kernel a cluster boots (`--pin 6.1|6.12`, `--kernel stock|lean|debug`) and what goes
with it.

Each of a pin's kernels (p2pkpvm.kernel.pin):
stock: the pin's Debian image (the default).
lean: the pin's source built with configs/kconfig/guest.config only (`make lean-kernel`,
cached): everything the guests need built in, so they boot faster.
debug: the cached sanitizer build of `make kernel` (p2pkpvm.kernel.kbuild), longer deadlines
(KASAN + lockdep under TCG are several times slower) and `kasan_multi_shot`.

The module built for each (`make [PIN=..] [KERNEL=..] module`, kernel/kernel.mk): `p2pkp.ko` in
the work tree for the stock kernel of the default pin, else `out/<kernel><tag>-module/p2pkp.ko`
(tag: '' for the default pin, '-6.12' for another), see module_dir.

The choice travels with the cluster (Cluster.kernel) and each of its guests (VM.kernel): whoever
loads the module asks the guest which one it needs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.pin import KernelPin, load_pin
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
    pin: str = ""  # the kernel pin it comes from (6.1, 6.12; "": the chosen one)

    @property
    def verify_module(self) -> bool:
        """Check the module's vermagic after boot (clear error instead of insmod's): every
        kernel but the default pin's stock one (whose p2pkp.ko `make` checks)."""
        return self.module.parent != project_root()

    @property
    def label(self) -> str:
        """'stock 6.12 (vmlinuz-6.12.117+deb12-amd64)': what a summary or a result names."""
        return f"{self.name} {self.pin} ({self.image.name})"


def stock(pin: KernelPin | None = None) -> KernelChoice:
    """The pin's Debian image (default: the default pin)."""
    pin = pin or load_pin()
    return KernelChoice("stock", pin.vmlinuz, module_dir("stock", pin) / "p2pkp.ko", pin=pin.name)


def module_dir(name: str, pin: KernelPin | None = None) -> Path:
    """Where `make [PIN=..] KERNEL=name module` puts the module (kernel/kernel.mk's rule)."""
    pin = pin or load_pin()
    build = f"{name}{pin.tag}"
    return project_root() if build == "stock" else project_root() / "out" / f"{build}-module"


def select(name: str, pin: KernelPin | None = None) -> KernelChoice:
    """The kernel `name` of the pin (default: the default pin); HarnessError with the command
    to run when it is not built."""
    pin = pin or load_pin()
    if name == "stock":
        return stock(pin)
    if name not in FLAVOURS:
        raise HarnessError(f"unknown kernel {name!r}: expected one of {', '.join(KERNELS)}")
    from p2pkpvm.kernel import kbuild  # only the built kernels need it

    kb = kbuild.plan(FLAVOURS[name], pin)
    if not kb.complete():
        target = "kernel" if name == "debug" else f"{name}-kernel"
        raise HarnessError(
            f"the {name} kernel of pin {pin.name} is not built ({kb.directory}): run "
            f"`{pin.make(target)}`"
        )
    module = module_dir(name, pin) / "p2pkp.ko"
    if name == "lean":
        return KernelChoice("lean", kb.bzimage, module, pin=pin.name)
    return KernelChoice(
        "debug",
        kb.bzimage,
        module,
        pin=pin.name,
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
        hint = "`make [PIN=<pin>] [KERNEL=stock|lean|debug] module` for the kernel it boots"
        raise HarnessError(
            f"{where}: {module} was built for kernel {built_for!r} but the guest runs "
            f"{release!r}: insmod would fail; rebuild it with {hint}"
        )
