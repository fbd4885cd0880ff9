"""The pinned kernel (configs/kernel-pin.yaml): names, paths, validation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from p2pkpvm.errors import HarnessError
from p2pkpvm.paths import project_root

ABI_RE = re.compile(r"^6\.1\.0-\d+-amd64$")
VERSION_RE = re.compile(r"^6\.1\.\d+-\d+$")


class PinError(HarnessError):
    """The pin file is missing or malformed."""


def default_pin_path() -> Path:
    return project_root() / "configs" / "kernel-pin.yaml"


@dataclass(frozen=True)
class KernelPin:
    abi: str
    version: str
    image_pkg: str
    headers_pkg: str
    source_pkg: str

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

    def packages(self) -> dict[str, str]:
        """Package name -> pinned version, for apt."""
        return {p: self.version for p in (self.image_pkg, self.headers_pkg, self.source_pkg)}


def _field(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PinError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_pin(text: str, where: str = "kernel pin") -> KernelPin:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PinError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PinError(f"{where}: expected a mapping at top level")
    pkgs = data.get("packages")
    if not isinstance(pkgs, dict):
        raise PinError(f"{where}: 'packages' must be a mapping with image, headers, source")
    pin = KernelPin(
        abi=_field(data, "abi", where),
        version=_field(data, "version", where),
        image_pkg=_field(pkgs, "image", where),
        headers_pkg=_field(pkgs, "headers", where),
        source_pkg=_field(pkgs, "source", where),
    )
    if not ABI_RE.match(pin.abi):
        raise PinError(f"{where}: abi '{pin.abi}' is not of the form 6.1.0-NN-amd64")
    if not VERSION_RE.match(pin.version):
        raise PinError(f"{where}: version '{pin.version}' is not of the form 6.1.N-R")
    for pkg in (pin.image_pkg, pin.headers_pkg):
        if not pkg.endswith(pin.abi):
            raise PinError(f"{where}: package '{pkg}' does not name abi {pin.abi}")
    return pin


def load_pin(path: Path | None = None) -> KernelPin:
    path = path or default_pin_path()
    try:
        text = path.read_text()
    except OSError as exc:
        raise PinError(f"cannot read kernel pin {path}: {exc.strerror}") from exc
    return parse_pin(text, str(path))
