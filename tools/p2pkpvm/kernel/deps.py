"""Install the chosen kernel pin, the host tools the suite needs and QEMU (`make deps`).

Idempotent: when every package is installed at the right version nothing is run.  Uses sudo
when not root.  When a pinned package is no longer available it stops with the versions that
are, and how to move the pin.  QEMU: bookworm's (7.2) or bookworm-backports' (10.0), see
QEMU_CHOICES; the backports suite is added to apt's sources (same mirror as bookworm) when
asked for.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel import apt
from p2pkpvm.kernel.pin import KernelPin, default_pin_path

# Host packages the build, the guests (which run the host's binaries) and the
# suite need, besides the kernel pin and QEMU.
TOOL_PACKAGES: tuple[str, ...] = (
    "busybox-static",
    "iproute2",
    "iputils-ping",
    "strace",
    "iperf3",
    # make bench reports the guest NIC's UDP segmentation offload (ethtool -k)
    "ethtool",
    "nftables",
    # the power-cut test (dm-flakey, ext4 on a loop device)
    "dmsetup",
    "e2fsprogs",
    # tests of the receiver's fallback without O_TMPFILE (a FUSE mirror, scenario.py)
    "bindfs",
    "tmux",
    "kmod",
    "procps",
    "util-linux",
    "gcc",
    "make",
    "perl",
    "xz-utils",
    # make kernel (the debug kernel, tools/p2pkpvm/kbuild.py)
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
)

CHECKPATCH_FILES = (
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
)


class DepsError(HarnessError):
    """A dependency cannot be installed; the message says what to do."""


@dataclass(frozen=True)
class QemuChoice:
    """Where `make deps QEMU=<name>` takes qemu-system-x86 from."""

    name: str
    suite: str  # the Debian suite
    version: str | None  # the version it must be at (None: what the suite serves)
    what: str


QEMU_PACKAGE = "qemu-system-x86"
QEMU_SOURCE = "qemu"  # the source package of qemu-system-x86, -common, -data, ...
BASE_SUITE = "bookworm"
BACKPORTS_LIST = apt.SOURCES_DIR / "p2pkp-bookworm-backports.list"
QEMU_CHOICES = {
    "debian": QemuChoice("debian", BASE_SUITE, None, "bookworm's QEMU 7.2"),
    "backports": QemuChoice(
        "backports",
        "bookworm-backports",
        "1:10.0.2+ds-2+deb13u1~bpo12+1",
        "QEMU 10.0 from bookworm-backports",
    ),
}
DEFAULT_QEMU = "debian"


def cache_dir() -> Path:
    return Path(os.environ.get("P2PKP_CACHE", "/var/cache/p2pkp"))


def qemu_choice(name: str | None) -> QemuChoice:
    choice = QEMU_CHOICES.get(name or DEFAULT_QEMU)
    if choice is None:
        raise DepsError(f"QEMU={name}: expected one of {', '.join(QEMU_CHOICES)}")
    return choice


def from_backports(version: str) -> bool:
    return "~bpo" in version


def qemu_ok(choice: QemuChoice, installed: dict[str, str]) -> bool:
    """Whether the installed packages of source qemu (name -> version) are the choice's."""
    have = installed.get(QEMU_PACKAGE)
    if have is None:
        return False
    if choice.version is not None:
        return have == choice.version
    return not any(from_backports(v) for v in installed.values())


installed_version = apt.installed_version
parse_madison = apt.parse_madison
available_versions = apt.available_versions


def _abi_key(abi: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", abi))


def available_abis(pin: KernelPin) -> list[str]:
    """ABIs of installable images of the pin's series and shape, newest first."""
    prefix = "linux-image-"
    names = apt.search_names(re.compile(prefix + pin.abi_pattern.pattern), f"{prefix}{pin.name}.")
    return sorted((n.removeprefix(prefix) for n in names), key=_abi_key, reverse=True)


def missing_packages(pin: KernelPin) -> list[str]:
    """apt install arguments for what is absent or at the wrong version."""
    wanted: list[str] = []
    for pkg, version in pin.packages().items():
        if installed_version(pkg) != version:
            wanted.append(f"{pkg}={version}")
    wanted.extend(pkg for pkg in TOOL_PACKAGES if installed_version(pkg) is None)
    return wanted


def unavailable(wanted: dict[str, str], offered: dict[str, list[str]]) -> list[str]:
    """`pkg=version` of each wanted package apt does not offer at that version (offered:
    package -> versions, as `apt-cache madison` lists them)."""
    return [f"{pkg}={v}" for pkg, v in wanted.items() if v not in offered.get(pkg, [])]


def repin_message(
    pin: KernelPin, gone: list[str], images: dict[str, list[str]], sources: list[str]
) -> str:
    """One line: what has gone, what apt has instead (images of the pin's series, newest
    first, and the source package's versions) and how to move the pin."""
    have = "; ".join(f"{img} {', '.join(v) or '?'}" for img, v in images.items())
    return (
        f"deps: kernel pin {pin.name} ({pin.abi} {pin.version}) is gone from apt: "
        f"{' '.join(gone)} not available; available: "
        f"{have or f'no linux-image-{pin.name}.*-amd64 images'}; "
        f"{pin.source_pkg} {', '.join(sources) or 'none'}; move pin {pin.name} in "
        f"{default_pin_path()} to a version all three packages have, then `{pin.make('deps')}`"
    )


def gone_message(pin: KernelPin, gone: list[str]) -> str:
    """repin_message with what apt offers now."""
    images = {
        f"linux-image-{abi}": available_versions(f"linux-image-{abi}")
        for abi in available_abis(pin)[:4]
    }
    return repin_message(pin, gone, images, available_versions(pin.source_pkg))


def qemu_offers_message(choice: QemuChoice, offers: list[apt.Offer]) -> str:
    listed = [f"  {o.version} ({o.suite or o.origin})" for o in offers] or ["  none"]
    return "\n".join(
        [
            f"deps: QEMU={choice.name}: {QEMU_PACKAGE} {choice.version or ''} is not available "
            f"from {choice.suite}; {QEMU_PACKAGE} versions apt has:",
            *listed,
            f"to move it: set the version of '{choice.name}' in QEMU_CHOICES "
            "(tools/p2pkpvm/kernel/deps.py)",
        ]
    )


def qemu_targets(choice: QemuChoice, installed: dict[str, str]) -> list[str]:
    """apt-get install arguments that make qemu the choice's (installed: source qemu's
    packages now); DepsError with what apt offers when the version has gone."""
    found = apt.offers(QEMU_PACKAGE)
    if choice.version is not None:
        if not any(o.version == choice.version and o.suite == choice.suite for o in found):
            raise DepsError(qemu_offers_message(choice, found))
        return ["-t", choice.suite, f"{QEMU_PACKAGE}={choice.version}"]
    if not installed:
        return [QEMU_PACKAGE]
    # Back from backports: each of source qemu's packages to its newest non-backports version.
    targets = ["--allow-downgrades"]
    for pkg in sorted(installed):
        versions = [o.version for o in apt.offers(pkg) if not from_backports(o.version)]
        if not versions:
            raise DepsError(qemu_offers_message(choice, found))
        targets.append(f"{pkg}={versions[0]}")
    return targets


def install(pin: KernelPin, qemu: str | None = None, log: bool = True) -> None:
    choice = qemu_choice(qemu)
    wanted = missing_packages(pin)
    qemu_now = apt.installed_of_source(QEMU_SOURCE)
    if not wanted and qemu_ok(choice, qemu_now):
        if log:
            print(
                f"deps: kernel pin {pin.name} ({pin.abi} {pin.version}), host tools and "
                f"{choice.what} ({qemu_now[QEMU_PACKAGE]}) present"
            )
        return
    if choice.suite != BASE_SUITE:
        apt.ensure_suite(BASE_SUITE, choice.suite, BACKPORTS_LIST)
    print(f"deps: installing {' '.join(wanted) or 'nothing but QEMU'}", flush=True)
    apt.run_root(["apt-get", "update", "-q"], "apt-get update")
    # only what is to be installed: an installed package apt has dropped since is no reason
    todo = {pkg: v for pkg, v in pin.packages().items() if f"{pkg}={v}" in wanted}
    gone = unavailable(todo, {pkg: available_versions(pkg) for pkg in todo})
    if gone:
        raise DepsError(gone_message(pin, gone))
    apt_install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if wanted:
        apt.run_root([*apt_install, *wanted], "installing the kernel pin and host tools")
    if not qemu_ok(choice, qemu_now):
        print(f"deps: QEMU={choice.name}: {choice.what}", flush=True)
        apt.run_root([*apt_install, *qemu_targets(choice, qemu_now)], f"installing {choice.what}")
    still = missing_packages(pin)
    if not qemu_ok(choice, apt.installed_of_source(QEMU_SOURCE)):
        still.append(f"{QEMU_PACKAGE} ({choice.what})")
    if still:
        raise DepsError(f"deps: still missing after apt-get install: {' '.join(still)}")


def checkpatch(pin: KernelPin) -> Path:
    """Path of checkpatch.pl from the pinned source tarball, extracted once."""
    root = cache_dir() / f"linux-source-{pin.version}"
    script = root / CHECKPATCH_FILES[0]
    if script.exists():
        return script
    tarball = pin.source_tarball
    if not tarball.exists():
        raise DepsError(f"deps: {tarball} missing: run `{pin.make('deps')}`")
    top = tarball.name.removesuffix(".tar.xz")
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:xz") as tar:
        for name in CHECKPATCH_FILES:
            member = tar.getmember(f"{top}/{name}")
            data = tar.extractfile(member)
            if data is None:
                raise DepsError(f"deps: {name} not a file in {tarball}")
            dest = root / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data.read())
    script.chmod(0o755)
    return script
