"""Crash parser tests on real captured kernel logs (tools/tests/data/crash, see its README)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2pkpvm.crash import KINDS, MAX_EXCERPT_LINES, CrashReport, normalize_lines, scan

DATA = Path(__file__).resolve().parent / "data" / "crash"


def load(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8", errors="replace")


def only(text: str) -> CrashReport:
    reports = scan(text)
    assert len(reports) == 1, [r.summary() for r in reports]
    return reports[0]


# name, kind, title, first frames (prefixes of the function names, culprit first)
CAPTURED: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "warn.log",
        "warning",
        "WARNING: CPU: 1 PID: 249 at /work/main/vmtests/crashme/crashme.c:88 "
        "crashme_write.cold+0x2a/0x164 [crashme]",
        ("crashme_write.cold+0x2a/0x164 [crashme]", "proc_reg_write+0x56/0xa0", "vfs_write"),
    ),
    (
        "warn-raw.log",
        "warning",
        "WARNING: CPU: 1 PID: 249 at /work/main/vmtests/crashme/crashme.c:88 "
        "crashme_write.cold+0x2a/0x164 [crashme]",
        ("crashme_write.cold+0x2a/0x164 [crashme]", "proc_reg_write+0x56/0xa0"),
    ),
    (
        "null-deref.log",
        "oops",
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        ("crashme_write.cold+0x60/0x164 [crashme]", "proc_reg_write", "vfs_write"),
    ),
    (
        "null-deref-raw.log",
        "oops",
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
        ("crashme_write.cold+0x60/0x164 [crashme]", "proc_reg_write"),
    ),
    (
        "page-fault.log",
        "oops",
        "BUG: unable to handle page fault for address: ffffffffff000000",
        ("crashme_write.cold+0xf3/0x164 [crashme]", "proc_reg_write"),
    ),
    (
        "gpf.log",
        "general_protection",
        "general protection fault, probably for non-canonical address 0xdead000000000100: "
        "0000 [#2] PREEMPT SMP NOPTI",
        ("crashme_write.cold+0xb9/0x164 [crashme]", "proc_reg_write"),
    ),
    (
        "list-corruption-bug.log",
        "bug",
        "kernel BUG at lib/list_debug.c:27!",
        ("crashme_list_corrupt+0x58/0x84 [crashme]", "crashme_write.cold", "proc_reg_write"),
    ),
    (
        "hung-task.log",
        "hung_task",
        "INFO: task sh:257 blocked for more than 2 seconds.",
        ("__schedule", "schedule", "schedule_timeout", "msleep", "crashme_write.cold"),
    ),
    (
        "soft-lockup.log",
        "soft_lockup",
        "watchdog: BUG: soft lockup - CPU#0 stuck for 3s! [sh:265]",
        ("crashme_spin+0x2f/0x45 [crashme]", "crashme_write.cold", "proc_reg_write"),
    ),
    (
        "rcu-stall.log",
        "rcu_stall",
        "rcu: INFO: rcu_preempt self-detected stall on CPU",
        ("crashme_spin+0x2f/0x45 [crashme]", "crashme_write.cold", "proc_reg_write"),
    ),
]


def check_frames(frames: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert len(frames) >= len(expected), frames
    for got, want in zip(frames, expected, strict=False):
        assert got.startswith(want), (frames, expected)


@pytest.mark.parametrize(
    ("name", "kind", "title", "frames"), CAPTURED, ids=[c[0] for c in CAPTURED]
)
def test_captured_report(name: str, kind: str, title: str, frames: tuple[str, ...]) -> None:
    report = only(load(name))
    assert report.kind == kind
    assert report.title == title
    check_frames(report.frames, frames)
    assert report.excerpt.splitlines()[0].strip() == title
    assert len(report.excerpt.splitlines()) <= MAX_EXCERPT_LINES
    summary = report.summary()
    assert kind in summary and title in summary and frames[0] in summary


def test_frames_skip_unreliable_and_registers() -> None:
    report = only(load("warn.log"))
    for frame in report.frames:
        assert not frame.startswith("?"), frame
        assert re.match(r"^[\w.$]+(\+0x[0-9a-f]+/0x[0-9a-f]+)?( \[[\w-]+\])?$", frame), frame
    funcs = [f.split("+")[0] for f in report.frames]
    assert "do_user_addr_fault" not in funcs  # a "? " frame in the log
    assert "entry_SYSCALL_64_after_hwframe" in funcs


def test_scheduling_while_atomic_both_reports() -> None:
    reports = scan(load("scheduling-while-atomic.log"))
    assert [r.kind for r in reports] == ["bug", "bug"]
    assert reports[0].title == "BUG: scheduling while atomic: sh/253/0x00000002"
    # dump_stack_lvl and __schedule_bug are report machinery, not the culprit.
    check_frames(reports[0].frames, ("__schedule", "schedule", "schedule_timeout", "msleep"))
    assert any(f.startswith("crashme_atomic_sleep") for f in reports[0].frames)
    check_frames(reports[1].frames, ("__schedule", "do_task_dead", "do_exit"))


def test_repeated_reports_are_deduplicated() -> None:
    # The hung task is reported at 2, 4 and 6 seconds: one ongoing condition.
    assert load("hung-task.log").count("INFO: task sh:257 blocked") == 3
    assert len(scan(load("hung-task.log"))) == 1
    # Two soft lockup reports (3 s, 6 s) of the same spin.
    assert load("soft-lockup.log").count("soft lockup") == 2
    assert len(scan(load("soft-lockup.log"))) == 1


@pytest.mark.parametrize("name", ["boot-normal.log", "insmod-out-of-tree.log"])
def test_clean_logs_have_no_report(name: str) -> None:
    text = load(name)
    assert text.strip()
    assert scan(text) == []


def test_out_of_tree_taint_lines_are_benign() -> None:
    text = load("insmod-out-of-tree.log")
    assert "loading out-of-tree module taints kernel" in text
    assert "module verification failed" in text
    assert scan(text) == []


def test_normalize_strips_console_noise() -> None:
    raw = "\x1b[?2004l\r<4>[   12.345678] WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2\r\r\n"
    # A lone \r (carriage return on the console) starts a fresh line.
    assert normalize_lines(raw)[:2] == ["", "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2"]
    assert normalize_lines("[T123] [    1.000000] hello")[0] == "hello"


def test_kinds_are_the_documented_set() -> None:
    for case in CAPTURED:
        assert case[1] in KINDS
