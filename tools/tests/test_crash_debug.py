"""crash.scan() on real reports captured from the debug kernel (`make kernel`).

The logs in data/crash/debug-*.log were captured in vng guests running the debug build of the
pinned 6.1.192-2 source (KASAN, UBSAN, lockdep, kmemleak), provoked by vmtests/crashme built
against that tree; see data/crash/README.md (section "Captured from the debug kernel").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pkpvm.vm import crash

DATA = Path(__file__).parent / "data" / "crash"


@dataclass(frozen=True)
class Expected:
    kind: str
    title: str  # a substring of the report's title
    frame: str  # a function that must be among the report's frames


CASES: dict[str, list[Expected]] = {
    "debug-kasan-use-after-free.log": [
        Expected("kasan", "BUG: KASAN: use-after-free in crashme_slab", "crashme_slab"),
    ],
    "debug-kasan-slab-out-of-bounds.log": [
        Expected("kasan", "BUG: KASAN: slab-out-of-bounds in crashme_slab", "crashme_slab"),
    ],
    "debug-kasan-double-free.log": [
        Expected("kasan", "BUG: KASAN: double-free in", "crashme_slab"),
    ],
    # UBSAN reports the bad index first, then KASAN the stack slot it reads.
    "debug-ubsan-array-index.log": [
        Expected("ubsan", "UBSAN: array-index-out-of-bounds in", "crashme_ubsan"),
        Expected("kasan", "BUG: KASAN: stack-out-of-bounds in crashme_ubsan", "crashme_ubsan"),
    ],
    # msleep() with preemption off: the schedule() BUG, then (the task returns to user space
    # with a bad preempt count) the might_sleep() check in rseq and a uaccess WARN, and the
    # schedule() BUG again when the shell exits.
    "debug-atomic-sleep.log": [
        Expected("bug", "BUG: scheduling while atomic: sh/117/", "crashme_atomic_sleep"),
        Expected(
            "bug",
            "BUG: sleeping function called from invalid context at kernel/rseq.c:132",
            "__rseq_handle_notify_resume",
        ),
        Expected("warning", "WARNING: CPU: 0 PID: 117 at", "__rseq_handle_notify_resume"),
        Expected("bug", "BUG: scheduling while atomic: sh/117/", "do_exit"),
    ],
    "debug-kmemleak-dmesg.log": [
        Expected("kmemleak", "kmemleak: 1 new suspected memory leaks", ""),
    ],
    "debug-kmemleak-record.log": [
        Expected("kmemleak", "unreferenced object 0xff11000001f66e00 (size 64)", "crashme_leak"),
    ],
    # A false positive of the kernel itself, at 0.003 s of a boot (1 of 3 boots here): an
    # interrupt while identify_cpu() has cleared the CPU feature bits, LA57 included, so KASAN
    # computes the 4-level shadow start for a 5-level (QEMU TCG) address. Fixed by
    # CONFIG_X86_5LEVEL=n in guest.config (or `no5lvl`).
    "debug-boot-kasan-la57-irq.log": [
        Expected("kasan", "BUG: KASAN: wild-memory-access in do_raw_spin_lock", "handle_edge_irq"),
    ],
    "debug-lockdep-circular.log": [
        Expected(
            "lockdep",
            "WARNING: possible circular locking dependency detected",
            "crashme_lock_order",
        ),
    ],
}

# Real debug-kernel output that must not be taken for a report.
CLEAN = (
    # A whole boot of the debug kernel (KASAN/kmemleak/lockdep banners, "hpet: Lost RTC
    # interrupts" noise from a starved TCG guest).
    "debug-boot-clean.log",
    # p2pkp.ko built against the debug tree: load, 8 MiB loopback transfer, unload.
    "debug-p2pkp-loopback.log",
    # lockorder after KASAN reports: the KASAN taint switched lockdep off, no report.
    "debug-lockorder-after-kasan.log",
)


def _scan(name: str) -> list[crash.CrashReport]:
    return crash.scan((DATA / name).read_text(errors="replace"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_debug_kernel_report_is_detected(name: str) -> None:
    reports = _scan(name)
    expected = CASES[name]
    got = [(r.kind, r.title) for r in reports]
    assert len(reports) == len(expected), f"{name}: {got}"
    for report, want in zip(reports, expected, strict=True):
        assert report.kind == want.kind, f"{name}: {got}"
        assert want.title in report.title, f"{name}: {report.title!r}"
        if want.frame:
            names = [f.split("+")[0] for f in report.frames]
            assert want.frame in names, f"{name}: {want.frame} not in {report.frames}"
        else:
            assert report.frames == ()


@pytest.mark.parametrize("name", CLEAN)
def test_debug_kernel_clean_logs_have_no_report(name: str) -> None:
    assert _scan(name) == []


def test_kasan_report_starts_at_the_culprit() -> None:
    """The frames of a KASAN report skip the reporting machinery (kasan_report...)."""
    (report,) = _scan("debug-kasan-use-after-free.log")
    assert report.frames[0].startswith("crashme_slab+")
    assert "Read of size 1" in report.excerpt


def test_every_debug_sample_is_listed_in_the_readme() -> None:
    readme = (DATA / "README.md").read_text()
    samples = sorted(p.name for p in DATA.glob("debug-*.log"))
    assert samples, "no debug-kernel samples"
    missing = [s for s in samples if s not in readme]
    assert not missing, f"undocumented samples: {missing}"
    unlisted = [s for s in samples if s not in CASES and s not in CLEAN]
    assert unlisted == ["debug-actions-stock-kernel.log"], unlisted
