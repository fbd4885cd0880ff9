"""Which QEMU the guests run on (vng starts `qemu-system-x86_64` from PATH) and what it offers.

virtio-net UDP segmentation offload (USO: a UDP GSO run crosses virtio whole instead of frame
by frame) needs QEMU 8.2+ (properties host_uso, guest_uso4, guest_uso6 of virtio-net-pci, on
by default on the newest machine type when the host's tap has it) and a 6.2+ guest kernel.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

from p2pkpvm.errors import HarnessError

QEMU_BINARY = "qemu-system-x86_64"
USO_SINCE = (8, 2)
_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?\s*(?:\(([^)]*)\))?")


@dataclass(frozen=True)
class QemuVersion:
    release: tuple[int, int, int]
    package: str  # "Debian 1:7.2+dfsg-7+deb12u18+b3" ("" when QEMU does not say)

    def __str__(self) -> str:
        text = "QEMU " + ".".join(str(n) for n in self.release)
        return f"{text} ({self.package})" if self.package else text

    @property
    def has_uso(self) -> bool:
        return self.release[:2] >= USO_SINCE


def parse_version(text: str) -> QemuVersion:
    """The first line of `qemu-system-x86_64 --version`."""
    m = _VERSION_RE.search(text)
    if m is None:
        raise HarnessError(f"cannot read a QEMU version from {text.strip()[:200]!r}")
    major, minor, micro, package = m.groups()
    return QemuVersion((int(major), int(minor), int(micro or 0)), package or "")


@functools.cache
def installed() -> QemuVersion:
    """The QEMU on PATH (once per process)."""
    try:
        out = subprocess.run(
            [QEMU_BINARY, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise HarnessError(f"{QEMU_BINARY} --version failed ({exc}): run `make deps`") from exc
    return parse_version(out)


def qemu_version() -> str:
    """'QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)', or why it is unknown."""
    try:
        return str(installed())
    except HarnessError as exc:
        return f"QEMU ? ({exc})"


def uso_device_options(uso: bool | None, version: QemuVersion | None = None) -> str:
    """virtio-net-pci options for virtio USO: '' (QEMU's default), or all three offloads
    forced on or off; HarnessError when this QEMU has no such properties."""
    if uso is None:
        return ""
    version = version or installed()
    if not version.has_uso:
        raise HarnessError(
            f"virtio-net USO needs QEMU {'.'.join(map(str, USO_SINCE))}+, this is {version} "
            "(make deps QEMU=backports)"
        )
    state = "on" if uso else "off"
    return "".join(f",{p}={state}" for p in ("host_uso", "guest_uso4", "guest_uso6"))
