"""Crash parser tests on real captured kernel logs (tools/tests/data/crash, see its README)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pkpvm.cli.main import main as cli_main
from p2pkpvm.vm.crash import KINDS, MAX_EXCERPT_LINES, CrashReport, normalize_lines, scan

DATA = Path(__file__).resolve().parent / "data" / "crash"


def load(name: str) -> str:
    with (DATA / name).open(encoding="utf-8", errors="replace", newline="") as f:
        return f.read()  # newline="": keep the console's \r bytes


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
        "double-free-slub-bug.log",
        "bug",
        "kernel BUG at mm/slub.c:419!",
        ("__kmem_cache_free+0x284/0x2a0", "crashme_slab+0xa8/0xc4 [crashme]", "crashme_write"),
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
    lines = report.excerpt.splitlines()
    assert lines[0].strip() == title
    assert len(lines) <= MAX_EXCERPT_LINES
    # The report ends where the kernel ends it: its end marker, or the end of its stack.
    if kind in ("warning", "oops", "general_protection") or title.startswith("kernel BUG"):
        assert lines[-1].startswith("---[ end trace"), lines[-1]
    else:
        assert lines[-1].strip() == "</TASK>", lines[-1]
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


@pytest.mark.parametrize(
    "name", ["boot-normal.log", "insmod-out-of-tree.log", "debug-actions-stock-kernel.log"]
)
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
    seen = set()
    for path in sorted(DATA.glob("*.log")):
        seen |= {r.kind for r in scan(load(path.name))}
    assert seen <= set(KINDS)
    # Every kind but the hard lockup (no perf NMI under TCG) has a real sample here.
    assert set(KINDS) - seen == {"hard_lockup"}


# --------------------------------------------------------------------------- published samples

# Real reports from the kernel's own documentation (see README.md, extract-doc-samples.sh).
DOC_SAMPLES: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "doc-kasan-slab-out-of-bounds.log",
        "kasan",
        "BUG: KASAN: slab-out-of-bounds in kmalloc_oob_right+0xa8/0xbc [test_kasan]",
        # dump_stack, print_address_description, kasan_report, __asan_* are skipped
        ("kmalloc_oob_right+0xa8/0xbc [test_kasan]", "kmalloc_tests_init", "do_one_initcall"),
    ),
    (
        "doc-ubsan-shift-out-of-bounds.log",
        "ubsan",
        "UBSAN: Undefined behaviour in ../include/linux/bitops.h:110:33",
        ("_mix_pool_bytes+0x1e6/0x480", "add_device_randomness", "dmi_walk_early"),
    ),
    (
        "doc-kmemleak.log",
        "kmemleak",
        "unreferenced object 0xffff89862ca702e8 (size 32):",
        ("0xffffffffc01d2036", "do_one_initcall+0x41/0x1df", "do_init_module"),
    ),
    (
        "doc-lockdep-suspicious-rcu.log",
        "lockdep",
        "WARNING: suspicious RCU usage",
        ("__cfq_exit_single_io_context+0xe9/0x120", "cfq_exit_queue", "elevator_exit"),
    ),
    (
        "doc-kfence-out-of-bounds.log",
        "kasan",
        "BUG: KFENCE: out-of-bounds read in test_out_of_bounds_read+0xa6/0x234",
        ("test_out_of_bounds_read+0xa6/0x234", "kunit_try_run_case"),
    ),
    (
        "doc-kcsan-data-race.log",
        "bug",
        "BUG: KCSAN: data-race in test_kernel_read / test_kernel_write",
        ("test_kernel_write+0x1d/0x30", "access_thread"),
    ),
    (
        "doc-rcu-stall-other-cpus.log",
        "rcu_stall",
        "INFO: rcu_sched detected stalls on CPUs/tasks:",
        (),
    ),
    (
        "doc-oops-old-format.log",
        "oops",
        "BUG: unable to handle kernel NULL pointer dereference at   (null)",
        ("iret_exc+0x7d0/0xa59",),  # from the i386 "IP:" line
    ),
]


@pytest.mark.parametrize(
    ("name", "kind", "title", "frames"), DOC_SAMPLES, ids=[c[0] for c in DOC_SAMPLES]
)
def test_published_sample(name: str, kind: str, title: str, frames: tuple[str, ...]) -> None:
    report = only(load(name))
    assert report.kind == kind
    assert report.title == title
    check_frames(report.frames, frames)


def test_kasan_report_spans_to_closing_ruler() -> None:
    report = only(load("doc-kasan-slab-out-of-bounds.log"))
    lines = report.excerpt.splitlines()
    assert "Allocated by task 2760:" in lines
    assert "Freed by task 815:" in lines
    assert lines[-1].startswith("=" * 20)


def test_kmemleak_records_are_separate_reports() -> None:
    one = load("doc-kmemleak.log")
    # A second object leaked at the same site: the same bug, reported once.
    same_site = one.replace("0xffff89862ca702e8", "0xffff89862ca70400")
    assert len(scan(one + same_site)) == 1
    # A leak from another call chain is another report.
    other = same_site.replace("do_one_initcall+0x41/0x1df", "p2pkp_sendfile+0x41/0x1df")
    reports = scan(one + other)
    assert [r.title for r in reports] == [
        "unreferenced object 0xffff89862ca702e8 (size 32):",
        "unreferenced object 0xffff89862ca70400 (size 32):",
    ]
    assert reports[1].frames[1] == "p2pkp_sendfile+0x41/0x1df"


def test_kmemleak_notice_in_dmesg() -> None:
    # kmemleak's scan thread only logs a count (mm/kmemleak.c: "%d new suspected memory
    # leaks (see /sys/kernel/debug/kmemleak)" with pr_fmt "kmemleak: ").
    text = (
        "[  612.345678] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)\n"
    )
    report = only(text + load("boot-normal.log"))
    assert report.kind == "kmemleak"
    assert report.frames == ()
    assert report.excerpt.count("\n") == 0


# --------------------------------------------------------------------------- console noise


def test_console_capture_warn_oops_panic() -> None:
    reports = scan(load("console-warn-oops-panic.log"))
    assert [r.kind for r in reports] == ["warning", "oops", "panic"]
    assert reports[2].title == "Kernel panic - not syncing: sysrq triggered crash"
    # After an oops the kernel does not dump the stack again on panic.
    assert reports[2].frames == ()
    check_frames(reports[1].frames, ("crashme_write.cold+0x60/0x164 [crashme]", "proc_reg_write"))
    # The echoed user-space "WARNING: ..." line is not a kernel report.
    assert "WARNING: this line is user space" in load("console-warn-oops-panic.log")


def test_console_capture_interleaved_noise_and_panic_stack() -> None:
    text = load("console-noisy-warn-panic.log")
    # Kernel records start in the middle of user-space lines in this capture.
    assert re.search(r"noise-\d+ \[\s*\d+\.\d+\] WARNING: CPU:", text)
    assert "BUG: user space says so" in text
    reports = scan(text)
    assert [r.kind for r in reports] == ["warning", "panic"]
    check_frames(reports[0].frames, ("crashme_write.cold+0x2a/0x164 [crashme]", "proc_reg_write"))
    check_frames(
        reports[1].frames,
        ("sysrq_handle_crash+0x16/0x20", "__handle_sysrq.cold", "write_sysrq_trigger"),
    )


def _strip_timestamps(text: str) -> str:
    return re.sub(r"(?m)^\[\s*\d+\.\d+\] ", "", text)


def _console_noise(text: str) -> str:
    out = []
    for i, line in enumerate(text.splitlines()):
        if i % 7 == 3:
            out.append("\x1b[?2004h\x1b[01;32mroot@vm\x1b[0m# \x1b[?2004l\r")
        out.append(line + "\r\r")
    return "\n".join(out) + "\n"


def _interleave(text: str, other: str, every: int = 3) -> str:
    noise = [x for x in other.splitlines() if x.strip()]
    out = []
    for i, line in enumerate(text.splitlines()):
        out.append(line)
        if i % every == every - 1 and noise:
            out.append(noise[i % len(noise)])
    return "\n".join(out) + "\n"


def _interleave_boot(text: str) -> str:
    return _interleave(text, load("boot-normal.log"))


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "no-timestamps": _strip_timestamps,
    "ansi-and-cr": _console_noise,
    "interleaved-boot-lines": _interleave_boot,
}


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize(
    ("name", "kind", "title", "frames"), CAPTURED, ids=[c[0] for c in CAPTURED]
)
def test_noise_does_not_change_reports(
    transform: str, name: str, kind: str, title: str, frames: tuple[str, ...]
) -> None:
    report = only(TRANSFORMS[transform](load(name)))
    assert report.kind == kind
    assert report.title == title
    check_frames(report.frames, frames)


def test_reports_in_order_of_appearance() -> None:
    text = load("warn.log") + load("null-deref.log") + load("hung-task.log")
    assert [r.kind for r in scan(text)] == ["warning", "oops", "hung_task"]


def test_identical_report_twice_is_kept_once() -> None:
    assert len(scan(load("warn.log") + load("warn.log"))) == 1


def test_excerpt_is_bounded() -> None:
    text = load("null-deref.log")
    frame = "[   17.000000]  filler_frame+0x10/0x20\n"
    big = text.replace("Call Trace:\n", "Call Trace:\n" + frame * 500, 1)
    report = only(big)
    assert len(report.excerpt.splitlines()) <= MAX_EXCERPT_LINES
    assert len(report.frames) <= 16


BENIGN_LINES = [
    "[   15.486231] crashme: loading out-of-tree module taints kernel.",
    "[   15.487159] crashme: module verification failed: signature and/or required key "
    "missing - tainting kernel",
    "[   20.089096]       Tainted: G        W  OE      6.1.0-56-amd64 #1 Debian 6.1.192-2",
    # arch/x86/kernel/traps.c and arch/x86/mm/fault.c: user-space faults, not kernel bugs
    "[   30.000000] traps: a.out[412] general protection fault ip:401136 sp:7ffd3c1f8e40 "
    "error:0 in a.out[401000+1000]",
    "[   30.100000] a.out[413]: segfault at 0 ip 0000000000401136 sp 00007ffd3c1f8e40 "
    "error 4 in a.out[401000+1000] likely on CPU 0 (core 0, socket 0)",
    "WARNING: this line is user space, not the kernel",
    "BUG: user space says so",
    "Oops: user space again",
    "INFO: nothing to see",
]


@pytest.mark.parametrize("line", BENIGN_LINES)
def test_benign_line_is_not_a_report(line: str) -> None:
    assert scan(line + "\n" + load("boot-normal.log")) == []


def test_summary_is_one_short_paragraph() -> None:
    report = only(load("hung-task.log"))
    summary = report.summary()
    assert "\n" not in summary
    assert summary.startswith("kernel hung_task: INFO: task sh:257 blocked")
    for frame in report.frames[:5]:
        assert frame in summary
    assert report.frames[5] not in summary


# --------------------------------------------------------------------------- headline formats

# Headlines as the pinned 6.1 source prints them (format string file:line, values filled in).
# There is no captured sample of these kinds on the stock kernel (they need lockdep,
# DEBUG_ATOMIC_SLEEP or a perf NMI): each is grafted onto the real hung-task report body so
# that detection, kind and frame extraction are checked on real surrounding lines.
SOURCE_HEADLINES: list[tuple[str, str]] = [
    # kernel/locking/lockdep.c
    ("WARNING: possible circular locking dependency detected", "lockdep"),  # :1974
    ("WARNING: possible recursive locking detected", "lockdep"),  # :3021
    ("WARNING: inconsistent lock state", "lockdep"),  # :4004
    ("WARNING: possible irq lock inversion dependency detected", "lockdep"),  # :4066
    ("WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected", "lockdep"),  # :2603
    ("WARNING: bad unlock balance detected!", "lockdep"),  # :5215
    ("WARNING: held lock freed!", "lockdep"),  # :6584
    ("WARNING: sh/257 still has locks held!", "lockdep"),  # :6642
    ("WARNING: lock held when returning to user space!", "lockdep"),  # :6708
    ("INFO: trying to register non-static key.", "lockdep"),  # :1000
    ("BUG: MAX_LOCKDEP_ENTRIES too low!", "lockdep"),  # :1424
    # kernel/sched/core.c
    ("BUG: sleeping function called from invalid context at net/p2pkp.c:120", "bug"),  # :9998
    ("BUG: scheduling while atomic: sh/257/0x00000002", "bug"),  # :5791
    # kernel/watchdog_hld.c:142 with pr_fmt "NMI watchdog: "
    ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", "hard_lockup"),
    # kernel/rcu/tree_stall.h:582, :653 (with pr_fmt "rcu: ")
    ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "rcu_stall"),
    ("rcu: INFO: rcu_sched self-detected stall on CPU", "rcu_stall"),
    # mm/kasan/report.c:210, lib/ubsan.c:143
    ("BUG: KASAN: use-after-free in p2pkp_release+0x1a/0x40 [p2pkp]", "kasan"),
    ("UBSAN: array-index-out-of-bounds in net/p2pkp.c:88:12", "ubsan"),
    # kernel/panic.c
    ("Kernel panic - not syncing: Fatal exception", "panic"),
    # arch/x86/kernel/dumpstack.c:426 die() banner without a preceding BUG: line
    ("invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", "oops"),
    ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops"),
]


@pytest.mark.parametrize(("headline", "kind"), SOURCE_HEADLINES)
def test_source_headline_on_real_body(headline: str, kind: str) -> None:
    text = load("hung-task.log").split("[   22.104704]")[0]  # the first report only
    grafted = re.sub(
        r"(?m)^(\[\s*[\d.]+\] )INFO: task sh:257 blocked.*$", rf"\g<1>{headline}", text
    )
    assert grafted != text
    report = only(grafted)
    assert report.kind == kind
    assert report.title == headline
    check_frames(report.frames, ("__schedule", "schedule", "schedule_timeout", "msleep"))


def test_kmemleak_record_logged_with_prefix() -> None:
    # With kmemleak's verbose mode the kernel logs each record through pr_warn() with its
    # pr_fmt "kmemleak: " in front of every line (mm/kmemleak.c warn_or_seq_printf).
    record = "".join(
        f"[  612.000000] kmemleak: {x}\n" for x in load("doc-kmemleak.log").splitlines()
    )
    after = "[  612.100000] random: crng reseeded\n[  612.200000] e1000: link up\n"
    report = only(record + after)
    assert report.kind == "kmemleak"
    assert report.title == "unreferenced object 0xffff89862ca702e8 (size 32):"
    check_frames(report.frames, ("0xffffffffc01d2036", "do_one_initcall+0x41/0x1df"))
    assert "crng" not in report.excerpt
    assert len(report.excerpt.splitlines()) == len(load("doc-kmemleak.log").splitlines())


def test_console_capture_panic_on_oops() -> None:
    reports = scan(load("console-panic-on-oops.log"))
    assert [(r.kind, r.title) for r in reports] == [
        ("oops", "BUG: kernel NULL pointer dereference, address: 0000000000000000"),
        ("panic", "Kernel panic - not syncing: Fatal exception"),
    ]
    check_frames(reports[0].frames, ("crashme_write.cold+0x60/0x164 [crashme]", "proc_reg_write"))
    # The oops report stops where the panic starts.
    assert "Kernel panic" not in reports[0].excerpt


def test_cli_reports_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["crash-scan", str(DATA / "boot-normal.log")]) == 0
    assert capsys.readouterr().out == ""
    assert cli_main(["crash-scan", str(DATA / "boot-normal.log"), str(DATA / "warn.log")]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "warn.log: kernel warning: WARNING: CPU: 1 PID: 249" in out
    assert cli_main(["crash-scan", str(DATA / "no-such.log")]) == 2
    assert "cannot read" in capsys.readouterr().err
