"""Unit tests of the kernel pin and of `make deps` helpers (no VM, no apt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pkpvm.kernel import deps
from p2pkpvm.kernel.pin import PinError, load_pin, parse_pin

DATA = Path(__file__).parent / "data"

GOOD = """
abi: 6.1.0-56-amd64
version: 6.1.192-2
packages:
  image: linux-image-6.1.0-56-amd64
  headers: linux-headers-6.1.0-56-amd64
  source: linux-source-6.1
"""


def test_repo_pin_loads() -> None:
    pin = load_pin()
    assert pin.vmlinuz.name == f"vmlinuz-{pin.abi}"
    assert str(pin.build_dir) == f"/lib/modules/{pin.abi}/build"
    assert set(pin.packages()) == {pin.image_pkg, pin.headers_pkg, pin.source_pkg}


def test_parse_good_pin() -> None:
    pin = parse_pin(GOOD)
    assert pin.abi == "6.1.0-56-amd64"
    assert pin.packages()["linux-source-6.1"] == "6.1.192-2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abi: [", "not valid YAML"),
        ("- a\n- b\n", "mapping at top level"),
        ("abi: 6.1.0-56-amd64\nversion: 6.1.192-2\n", "'packages' must be a mapping"),
        (GOOD.replace("abi: 6.1.0-56-amd64", "abi: 6.2.0-1-arm64"), "not of the form"),
        (GOOD.replace("version: 6.1.192-2", "version: latest"), "version 'latest'"),
        (
            GOOD.replace("image: linux-image-6.1.0-56", "image: linux-image-6.1.0-55"),
            "does not name",
        ),
        (GOOD.replace("  source: linux-source-6.1\n", ""), "'source' must be"),
    ],
)
def test_bad_pins_say_why(text: str, message: str) -> None:
    with pytest.raises(PinError, match=message):
        parse_pin(text)


def test_parse_madison_captured() -> None:
    text = (DATA / "apt-madison-linux-source-6.1.txt").read_text()
    versions = deps.parse_madison(text)
    assert versions[0] == "6.1.192-2"
    assert "6.1.170-3" in versions
    assert len(versions) == len(set(versions)) == 6


def test_parse_madison_empty() -> None:
    assert deps.parse_madison("") == []


def test_repin_message_names_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps, "available_abis", lambda: ["6.1.0-57-amd64"])
    monkeypatch.setattr(deps, "available_versions", lambda pkg: ["6.1.193-1"])
    msg = deps.repin_message(parse_pin(GOOD), ["linux-image-6.1.0-56-amd64=6.1.192-2"])
    assert "no longer available" in msg
    assert "linux-image-6.1.0-57-amd64: 6.1.193-1" in msg
    assert "kernel-pin.yaml" in msg
