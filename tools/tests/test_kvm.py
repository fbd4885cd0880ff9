"""KVM decision: env override and per-boot cache (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pkpvm.vm import kvm


def test_env_forces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PKP_ACCEL", "tcg")
    d = kvm.decide_accel(Path("/nonexistent"), "vng", {})
    assert (d.accel, d.source) == ("tcg", "env")
    monkeypatch.setenv("P2PKP_ACCEL", "fast")
    with pytest.raises(ValueError, match="kvm' or 'tcg"):
        kvm.decide_accel(Path("/nonexistent"), "vng", {})


def test_cache_roundtrip_keyed_by_boot_and_kernel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("P2PKP_ACCEL", raising=False)
    monkeypatch.setattr(kvm, "CACHE", tmp_path / "kvm.json")
    k = Path("/boot/k")
    kvm.write_cache(k, kvm.AccelDecision("tcg", "probe", "hung"))
    got = kvm.read_cache(k)
    assert got is not None and got.accel == "tcg" and got.source == "cache"
    assert kvm.read_cache(Path("/boot/other")) is None
    monkeypatch.setattr(kvm, "boot_id", lambda: "another-boot")
    assert kvm.read_cache(k) is None


def test_probe_without_dev_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2pkpvm.vm.kvm.os.access", lambda *_a: False)
    ok, detail = kvm.probe_kvm(Path("/boot/k"), "vng", {})
    assert not ok and "/dev/kvm" in detail
