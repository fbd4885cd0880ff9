"""Install the pinned kernel and the host tools the suite needs (`make deps`).

Idempotent: when every package is installed at the right version nothing is
run.  Uses sudo when not root.  When a pinned package is no longer available
it stops with the versions that are, and how to move the pin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.pin import KernelPin, default_pin_path

# Host packages the build, the guests (which run the host's binaries) and the
# suite need, besides the pinned kernel.
TOOL_PACKAGES: tuple[str, ...] = (
    "qemu-system-x86",
    "busybox-static",
    "iproute2",
    "iputils-ping",
    "strace",
    "iperf3",
    "nftables",
    # the power-cut test (dm-flakey, ext4 on a loop device)
    "dmsetup",
    "e2fsprogs",
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


def cache_dir() -> Path:
    return Path(os.environ.get("P2PKP_CACHE", "/var/cache/p2pkp"))


def _sudo() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        raise DepsError("not root and no sudo: run `make deps` as root")
    return ["sudo", "-n"]


def installed_version(pkg: str) -> str | None:
    """The installed version of a Debian package, or None."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    status, _, version = proc.stdout.partition("\t")
    return version if status.endswith(" installed") else None


def parse_madison(text: str) -> list[str]:
    """Versions from `apt-cache madison PKG` output (` pkg | ver | source`)."""
    versions: list[str] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[1] and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def available_versions(pkg: str) -> list[str]:
    proc = subprocess.run(
        ["apt-cache", "madison", pkg], capture_output=True, text=True, check=False
    )
    return parse_madison(proc.stdout)


def available_abis() -> list[str]:
    """ABI names of installable Debian 6.1 amd64 images, newest first."""
    proc = subprocess.run(
        ["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"],
        capture_output=True,
        text=True,
        check=False,
    )
    abis = re.findall(r"^linux-image-(6\.1\.0-\d+-amd64)\s", proc.stdout, re.MULTILINE)
    return sorted(set(abis), key=lambda a: int(a.split("-")[1]), reverse=True)


def missing_packages(pin: KernelPin) -> list[str]:
    """apt install arguments for what is absent or at the wrong version."""
    wanted: list[str] = []
    for pkg, version in pin.packages().items():
        if installed_version(pkg) != version:
            wanted.append(f"{pkg}={version}")
    wanted.extend(pkg for pkg in TOOL_PACKAGES if installed_version(pkg) is None)
    return wanted


def repin_message(pin: KernelPin, unavailable: Sequence[str]) -> str:
    lines = [
        f"deps: the pinned kernel {pin.abi} ({pin.version}) is no longer available:",
        *(f"  {item}" for item in unavailable),
        "available now:",
    ]
    for abi in available_abis()[:6]:
        image = f"linux-image-{abi}"
        lines.append(f"  {image}: {', '.join(available_versions(image)) or '?'}")
    lines.append(f"  {pin.source_pkg}: {', '.join(available_versions(pin.source_pkg)) or 'none'}")
    lines.append(
        f"to re-pin: edit {default_pin_path()} (abi, version, package names: all three "
        "packages must exist at that version), then `make deps && make clean && make`."
    )
    return "\n".join(lines)


def install(pin: KernelPin, log: bool = True) -> None:
    wanted = missing_packages(pin)
    if not wanted:
        if log:
            print(f"deps: kernel {pin.abi} {pin.version} and host tools present")
        return
    sudo = _sudo()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"deps: installing {' '.join(wanted)}", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    unavailable = [
        f"{pkg}={version}"
        for pkg, version in pin.packages().items()
        if f"{pkg}={version}" in wanted and version not in available_versions(pkg)
    ]
    if unavailable:
        raise DepsError(repin_message(pin, unavailable))
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *wanted],
        check=True,
        env=env,
    )
    still = missing_packages(pin)
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
        raise DepsError(f"deps: {tarball} missing: run `make deps`")
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
