"""The kernel pins (configs/kernel-pin.yaml): a list of Debian kernels by name, one default.

A pin is chosen by name: `make ... PIN=6.12` passes it on as `python -m p2pkpvm --pin 6.12`
and `pytest --pin 6.12`; without one, the file's default.  From there it travels as an argument
and with the cluster (KernelChoice.pin), never through the environment.  kernel/pin.sh reads the
same file for make and shell scripts (test_pin_deps checks that both agree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from p2pkpvm.errors import HarnessError
from p2pkpvm.paths import project_root

NAME_RE = re.compile(r"^\d+\.\d+$")
# 6.1.0-56-amd64, 6.12.117+deb12-amd64
ABI_RE = re.compile(r"^\d+\.\d+\.\d+[-+][0-9A-Za-z.+-]*-amd64$")
# 6.1.192-2, 6.12.117-1~deb12u1
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+-[0-9A-Za-z.+~]+$")
PIN_KEYS = {"name", "abi", "version", "packages"}
PACKAGE_KEYS = {"image", "headers", "source"}


class PinError(HarnessError):
    """The pin file is missing or malformed, or names no such pin."""


def default_pin_path() -> Path:
    return project_root() / "configs" / "kernel-pin.yaml"


@dataclass(frozen=True)
class KernelPin:
    name: str  # "6.1", "6.12": what PIN= takes
    abi: str
    version: str
    image_pkg: str
    headers_pkg: str
    source_pkg: str
    is_default: bool = False

    @property
    def vmlinuz(self) -> Path:
        return Path("/boot") / f"vmlinuz-{self.abi}"

    @property
    def modules_dir(self) -> Path:
        return Path("/lib/modules") / self.abi

    @property
    def build_dir(self) -> Path:
        return self.modules_dir / "build"

    @property
    def source_tarball(self) -> Path:
        return Path("/usr/src") / f"{self.source_pkg}.tar.xz"

    @property
    def tag(self) -> str:
        """'' for the default pin, '-6.12' for another: part of its build output names."""
        return "" if self.is_default else f"-{self.name}"

    def make(self, target: str) -> str:
        """The make command of `target` for this pin ('make kernel', 'make kernel PIN=6.12')."""
        return f"make {target}" if self.is_default else f"make {target} PIN={self.name}"

    @property
    def abi_pattern(self) -> re.Pattern[str]:
        """ABIs of the same series and shape: other uploads a pin could move to
        (6.1.0-57-amd64 for 6.1.0-56-amd64; 6.12.119+deb12-amd64 for 6.12.117+deb12-amd64)."""
        rest = re.escape(self.abi.removeprefix(self.name))
        return re.compile(re.escape(self.name) + re.sub(r"\d+", r"\\d+", rest))

    def packages(self) -> dict[str, str]:
        """Package name -> pinned version, for apt."""
        return {p: self.version for p in (self.image_pkg, self.headers_pkg, self.source_pkg)}


@dataclass(frozen=True)
class PinSet:
    pins: tuple[KernelPin, ...]
    default: str

    def names(self) -> list[str]:
        return [p.name for p in self.pins]

    def get(self, name: str | None = None) -> KernelPin:
        """The pin `name`; None or '': the default."""
        name = name or self.default
        for pin in self.pins:
            if pin.name == name:
                return pin
        raise PinError(f"no kernel pin {name!r}: the pins are {', '.join(self.names())}")


def _field(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PinError(f"{where}: '{key}' must be a non-empty string")
    return value


def _mapping(value: object, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PinError(f"{where}: expected a mapping with {', '.join(sorted(keys))}")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise PinError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return value


def parse_entry(data: object, where: str, is_default: bool = False) -> KernelPin:
    """One `- name: ...` entry, checked for consistency between its name and packages."""
    entry = _mapping(data, PIN_KEYS, where)
    name = entry.get("name")
    if not isinstance(name, str):
        raise PinError(
            f"{where}: 'name' must be a quoted string such as \"6.12\" "
            f"(got {name!r}: YAML reads an unquoted 6.10 as the number 6.1)"
        )
    where = f"{where} ({name})"
    pkgs = _mapping(entry.get("packages"), PACKAGE_KEYS, f"{where}: 'packages'")
    pin = KernelPin(
        name=name,
        abi=_field(entry, "abi", where),
        version=_field(entry, "version", where),
        image_pkg=_field(pkgs, "image", where),
        headers_pkg=_field(pkgs, "headers", where),
        source_pkg=_field(pkgs, "source", where),
        is_default=is_default,
    )
    if not NAME_RE.match(name):
        raise PinError(f"{where}: name {name!r} is not of the form MAJOR.MINOR (6.12)")
    if not ABI_RE.match(pin.abi) or not pin.abi.startswith(f"{name}."):
        raise PinError(f"{where}: abi '{pin.abi}' is not a {name}.N...-amd64 kernel ABI")
    if not VERSION_RE.match(pin.version) or not pin.version.startswith(f"{name}."):
        raise PinError(f"{where}: version '{pin.version}' is not of the form {name}.N-R")
    for kind, pkg in (("image", pin.image_pkg), ("headers", pin.headers_pkg)):
        if pkg != f"linux-{kind}-{pin.abi}":
            raise PinError(f"{where}: package '{pkg}' is not linux-{kind}-{pin.abi}")
    if pin.source_pkg != f"linux-source-{name}":
        raise PinError(f"{where}: source package '{pin.source_pkg}' is not linux-source-{name}")
    return pin


def parse_pins(text: str, where: str = "kernel pins") -> PinSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PinError(f"{where}: not valid YAML: {exc}") from exc
    top = _mapping(data, {"default", "pins"}, where)
    default = top.get("default")
    if not isinstance(default, str):
        raise PinError(f"{where}: 'default' must be a quoted pin name such as \"6.1\"")
    entries = top.get("pins")
    if not isinstance(entries, list) or not entries:
        raise PinError(f"{where}: 'pins' must be a non-empty list of pins")
    pins: list[KernelPin] = []
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        pin = parse_entry(entry, f"{where}: pins[{i}]", is_default=name == default)
        if pin.name in (p.name for p in pins):
            raise PinError(f"{where}: pin {pin.name!r} is listed twice")
        pins.append(pin)
    if default not in (p.name for p in pins):
        raise PinError(f"{where}: default {default!r} is not one of the pins")
    return PinSet(tuple(pins), default)


def load_pins(path: Path | None = None) -> PinSet:
    path = path or default_pin_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise PinError(f"cannot read kernel pins {path}: {exc.strerror}") from exc
    return parse_pins(text, str(path))


def load_pin(name: str | None = None, path: Path | None = None) -> KernelPin:
    """The pin `name` (None: the default); PinError naming the pins when there is none."""
    return load_pins(path).get(name)
