"""Decide KVM or TCG: probe by booting a guest that must print a marker in time.

The result is cached per host boot (/proc/sys/kernel/random/boot_id). P2PKP_ACCEL=kvm|tcg
forces the choice and skips the probe.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.vm.vng import VngSpec, build_argv

log = logging.getLogger(__name__)
CACHE = Path("/var/tmp/p2pkp/kvm-probe.json")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MARKER = "P2PKP-KVM-PROBE-42"
PROBE_CMD = ("sh", "-c", "echo P2PKP-KVM-PROBE-$((40+2))")  # the argv never contains MARKER
_warned = False


@dataclass(frozen=True)
class AccelDecision:
    accel: str  # "kvm" or "tcg"
    source: str  # "env", "cache", "probe"
    detail: str


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(
    kernel: Path, vng: str, env: dict[str, str], deadline: float = 40.0
) -> tuple[bool, str]:
    """Boot kernel with KVM; True if the marker appears within the deadline."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    argv = build_argv(
        VngSpec(
            kernel=kernel,
            name="kvmprobe",
            accel="kvm",
            append=(),
            extra_qemu=(),
            exec_cmd=PROBE_CMD,
        ),
        vng=vng,
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
        env=env,
    )
    try:
        out, _ = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"KVM guest printed nothing within {deadline:.0f} s (killed)"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if MARKER in out:
        return True, f"KVM guest answered in {time.monotonic() - t0:.1f} s"
    return False, f"KVM guest exited ({proc.returncode}) without the marker: {out[-300:]!r}"


def read_cache(kernel: Path) -> AccelDecision | None:
    try:
        data = json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("boot_id") != boot_id()
        or data.get("kernel") != str(kernel)
        or data.get("accel") not in ("kvm", "tcg")
    ):
        return None
    return AccelDecision(str(data["accel"]), "cache", str(data.get("detail", "")))


def write_cache(kernel: Path, decision: AccelDecision) -> None:
    try:
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps(
                {
                    "boot_id": boot_id(),
                    "kernel": str(kernel),
                    "accel": decision.accel,
                    "detail": decision.detail,
                }
            )
        )
        tmp.replace(CACHE)
    except OSError as exc:
        log.warning("cannot write KVM probe cache %s: %s", CACHE, exc)


def decide_accel(
    kernel: Path, vng: str, env: dict[str, str], forced: str | None = None, use_cache: bool = True
) -> AccelDecision:
    """kvm or tcg for this host, from P2PKP_ACCEL/forced, the cache, or a probe."""
    global _warned
    forced = forced or os.environ.get("P2PKP_ACCEL") or None
    if forced is not None:
        if forced not in ("kvm", "tcg"):
            raise ValueError(f"P2PKP_ACCEL/--accel must be 'kvm' or 'tcg', not {forced!r}")
        return AccelDecision(forced, "env", "forced")
    decision = read_cache(kernel) if use_cache else None
    if decision is None:
        ok, detail = probe_kvm(kernel, vng, env)
        decision = AccelDecision("kvm" if ok else "tcg", "probe", detail)
        write_cache(kernel, decision)
    if decision.accel == "tcg" and not _warned:
        _warned = True
        log.warning("KVM unusable (%s): using TCG (slow emulation)", decision.detail)
    return decision
