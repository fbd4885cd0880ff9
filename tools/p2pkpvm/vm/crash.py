"""Kernel crash detection in console output and dmesg text.

``scan(text)`` finds the kernel's crash and sanitizer reports (Oops, BUG, WARNING, KASAN, UBSAN,
kmemleak, hung task, soft/hard lockup, RCU stall, lockdep, panic, general protection fault) in
raw console or dmesg text and returns one ``CrashReport`` per report, in order of appearance.

The input may carry console noise: ``\\r``, ANSI escape sequences, printk timestamps
(``[   12.345678]``), caller tags (``[T123]``), log-level prefixes (``<4>``) and lines from
other CPUs interleaved with a report. Benign lines (module taint notices, ``Tainted:`` lines,
user-space ``WARNING:`` messages, user-space segfault notices) are not reports.

Kinds: "kasan" also covers KFENCE and KMSAN reports (memory-safety sanitizers); "bug" covers
``kernel BUG at``, ``BUG: scheduling while atomic``, ``BUG: sleeping function called from
invalid context``, KCSAN data races and any other ``BUG:`` line confirmed by kernel context
nearby (a ``CPU: N PID: N`` line, ``Call Trace:``, a stack frame...); "oops" covers ``BUG:
kernel NULL pointer dereference`` / ``BUG: unable to handle ...`` and bare die() banners
(``Oops: 0000 [#1]``, ``invalid opcode: 0000 [#1]``). A panic after an oops is a second
report. ``frames`` start at the culprit: the kernel-mode RIP of an oops/WARN/lockup, then the
first "Call Trace:" (or kmemleak "backtrace:") block without unreliable ``?`` frames and
without the reporting machinery on top (dump_stack, panic, kasan_report, __warn...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KINDS",
    "MAX_EXCERPT_LINES",
    "MAX_FRAMES",
    "CrashReport",
    "normalize_lines",
    "scan",
    "summarize",
]

KINDS = (
    "oops",
    "bug",
    "warning",
    "kasan",
    "ubsan",
    "kmemleak",
    "hung_task",
    "soft_lockup",
    "hard_lockup",
    "rcu_stall",
    "lockdep",
    "panic",
    "general_protection",
)

MAX_EXCERPT_LINES = 80
MAX_FRAMES = 16
SUMMARY_FRAMES = 5


@dataclass(frozen=True)
class CrashReport:
    """One kernel report found in console or dmesg text."""

    kind: str
    title: str
    frames: tuple[str, ...]
    excerpt: str

    def summary(self) -> str:
        """One short paragraph: kind, title and the first stack frames."""
        text = f"kernel {self.kind}: {self.title}"
        if self.frames:
            text += "; frames: " + " <- ".join(self.frames[:SUMMARY_FRAMES])
        else:
            text += "; no stack frames"
        return text


# --------------------------------------------------------------------------- normalisation

_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# "<4>", "<4>[   12.345678]", "[   12.345678] ", "[T123] " / "[C1] " (CONFIG_PRINTK_CALLER),
# "kern  :warn  : " (dmesg -x). Applied in a loop because they stack.
_PREFIX_RES = (
    re.compile(r"^<\d{1,2}>"),
    re.compile(r"^\[\s*\d+\.\d+\]\s?"),
    re.compile(r"^\[\s*[TC]\d+\]\s?"),
    re.compile(r"^[a-z]+\s*:[a-z]+\s*: "),
)


_MIDLINE_RECORD_RE = re.compile(r"(?<=.)(?=(?:<\d{1,2}>)?\[\s*\d+\.\d{6}\] )")


def _strip_prefixes(line: str) -> str:
    changed = True
    while changed:
        changed = False
        for pat in _PREFIX_RES:
            new = pat.sub("", line, count=1)
            if new != line:
                line = new
                changed = True
    return line


def normalize_lines(text: str) -> list[str]:
    """Split console/dmesg text into lines without ANSI escapes, \\r, levels or timestamps.

    Leading indentation (meaningful in stack traces and kmemleak reports) is kept.
    """
    text = _ANSI_RE.sub("", text)
    out: list[str] = []
    for raw in re.split(r"\r*\n|\r(?!\n)", text):
        line = _CTRL_RE.sub("", raw).replace("\t", "    ").rstrip()
        # A printk record that starts after a partial user-space line on the console.
        for part in _MIDLINE_RECORD_RE.split(_strip_prefixes(line)):
            out.append(_strip_prefixes(part))
    return out


# --------------------------------------------------------------------------- headlines

_DIE_RE = re.compile(r"^(?P<what>[A-Za-z][\w ,-]*?)(?:, [^:]*)?: [0-9a-f]{4} \[#\d+\]")
_GPF_RE = re.compile(r"^general protection fault(?:, .*)?: [0-9a-f]{4} \[#\d+\]")
_OOPS_RE = re.compile(r"^Oops: .*\[#\d+\]")

_LOCKDEP_TITLES = re.compile(
    r"^(?:WARNING|INFO|BUG): (?:"
    r"possible circular locking dependency detected|possible recursive locking detected"
    r"|inconsistent lock state|possible irq lock inversion dependency detected"
    r"|(?:HARD|SOFT)IRQ-(?:safe|READ-safe) -> (?:HARD|SOFT)IRQ-(?:unsafe|READ-unsafe) lock order"
    r" detected|bad unlock balance detected!|suspicious RCU usage\.?|held lock freed!"
    r"|lock held when returning to user space!|Nested lock was not taken"
    r"|bad contention detected!|lock held at task exit time!|suspicious unlock balance detected!"
    r"|circular locking deadlock detected!|MAX_\w+ too low!|chain_key collision"
    r"|\S+/\d+ still has locks held!|trying to register non-static key"
    r"|key \S+ has not been registered!|looking up invalid subclass"
    r"|possible deadlock detected|detected possible deadlock"
    r")"
)

_KMEMLEAK_SUMMARY_RE = re.compile(r"^kmemleak: \d+ new suspected memory leaks?")
_KMEMLEAK_RECORD_LINE_RE = re.compile(r"^(?:kmemleak: )?\s")

_HEADLINES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"^Kernel panic - not syncing")),
    ("kasan", re.compile(r"^BUG: (?:KASAN|KFENCE|KMSAN): ")),
    ("ubsan", re.compile(r"^UBSAN: \S")),
    ("kmemleak", re.compile(r"^(?:kmemleak: )?unreferenced object 0x[0-9a-f]+ \(size \d+\)")),
    ("kmemleak", _KMEMLEAK_SUMMARY_RE),
    ("hung_task", re.compile(r"^INFO: task \S.* blocked for more than \d+ seconds")),
    ("soft_lockup", re.compile(r"^(?:\S+: )?(?:watchdog: )?BUG: soft lockup - CPU#\d+ stuck")),
    ("hard_lockup", re.compile(r"^(?:NMI )?watchdog: Watchdog detected hard LOCKUP on cpu")),
    ("hard_lockup", re.compile(r"^Kernel panic - not syncing: Hard LOCKUP")),
    (
        "rcu_stall",
        re.compile(
            r"^(?:rcu: )?INFO: rcu_\w+ (?:self-detected stall|detected (?:expedited )?stalls)"
        ),
    ),
    ("lockdep", _LOCKDEP_TITLES),
    ("oops", re.compile(r"^BUG: (?:kernel NULL pointer dereference|unable to handle)")),
    ("bug", re.compile(r"^kernel BUG at \S+:\d+")),
    (
        "bug",
        re.compile(
            r"^BUG: (?:sleeping function called from invalid context|scheduling "
            r"while atomic)"
        ),
    ),
    ("warning", re.compile(r"^WARNING: (?:CPU: \d+ PID: \d+ at |at |\S+:\d+ at )\S")),
    ("general_protection", _GPF_RE),
    ("oops", _OOPS_RE),
    ("oops", _DIE_RE),
    ("bug", re.compile(r"^BUG: \S")),
)

# Headlines that carry their own kernel evidence. Anything else (generic "BUG: ...",
# die()-style "xxx: 0000 [#1]") must be confirmed by a kernel context line in the report,
# so that user-space output such as "BUG: foo" is not taken for a kernel report.
_SELF_EVIDENT = {
    "panic",
    "kasan",
    "ubsan",
    "kmemleak",
    "hung_task",
    "soft_lockup",
    "hard_lockup",
    "rcu_stall",
    "warning",
    "general_protection",
    "lockdep",
}
_EVIDENCE_RE = re.compile(
    r"^(?:CPU: \d+ PID: \d+|\S+ #\d+\s.*(?:Not tainted|Tainted: )|Call Trace:|Hardware name:"
    r"|RIP: [0-9a-f]{4}:|Modules linked in:|#PF: |Oops: .*\[#\d+\]"
    r"|[a-z ]+: [0-9a-f]{4} \[#\d+\]|\S+\+0x[0-9a-f]+/0x[0-9a-f]+$)"
)
_EVIDENCE_WINDOW = 12


def _headline(line: str) -> str | None:
    """The kind of report that ``line`` starts, or None."""
    # Headlines are never indented (stack frames and kmemleak's record lines are).
    stripped = line.strip()
    if not stripped or line[:1].isspace():
        return None
    for kind, pat in _HEADLINES:
        if pat.match(stripped):
            return kind
    return None


def _continues(kind: str, lines: list[str], new_line: str) -> bool:
    """Whether a headline-looking line belongs to the report being collected."""
    # The die() banner ("Oops: 0000 [#1]", "invalid opcode: 0000 [#1]", "general protection
    # fault ...: 0000 [#1]") follows the "BUG: ..." / "kernel BUG at" line of the same oops.
    is_die = _DIE_RE.match(new_line) is not None or _OOPS_RE.match(new_line) is not None
    if is_die and kind in ("oops", "bug", "general_protection"):
        return not any(_DIE_RE.match(x) or _OOPS_RE.match(x) for x in lines[1:])
    return False


# --------------------------------------------------------------------------- report extents

_END_TRACE_RE = re.compile(r"^-+\[ end (?:trace|Kernel panic)")
_RULER_RE = re.compile(r"^={20,}$")
# Kinds whose report the kernel closes with "---[ end trace ... ]---" (die(), __warn(), panic).
_ENDS_WITH_TRACE_MARKER = {"oops", "general_protection", "warning", "panic"}


def _collect(lines: list[str], start: int, kind: str) -> tuple[list[str], int]:
    """Lines of the report starting at ``start`` and the index just after it."""
    body = [lines[start]]
    headline = lines[start].strip()
    die_style = kind in _ENDS_WITH_TRACE_MARKER or headline.startswith("kernel BUG at")
    # Sanitizer reports sit between two "=====" rulers and hold several stacks.
    ruled = kind in ("kasan", "ubsan") or headline.startswith("BUG: KCSAN:")
    i = start + 1
    if _KMEMLEAK_SUMMARY_RE.match(headline):
        return body, i  # a one-line notice; the records are in /sys/kernel/debug/kmemleak
    while i < len(lines) and len(body) < MAX_EXCERPT_LINES:
        line = lines[i]
        stripped = line.strip()
        new_kind = _headline(line)
        if new_kind is not None and not _continues(kind, body, stripped):
            break
        # A kmemleak record is its headline and indented lines (each after a "kmemleak: "
        # prefix when the kernel logs it): the next other line ends it.
        if kind == "kmemleak" and not _KMEMLEAK_RECORD_LINE_RE.match(line):
            break
        body.append(line)
        i += 1
        if _END_TRACE_RE.match(stripped):
            break
        if ruled and _RULER_RE.match(stripped):
            break
        if stripped == "</TASK>" and not die_style and not ruled:
            break
        if _is_die_banner(stripped) and kind in ("oops", "bug"):
            die_style = True
    return body, i


def _is_die_banner(line: str) -> bool:
    return bool(_DIE_RE.match(line) or _OOPS_RE.match(line))


# --------------------------------------------------------------------------- stack frames

_FRAME_RE = re.compile(
    r"^(?:\[<[0-9a-fx]+>\]\s*)?(?P<unreliable>\?\s+)?"
    r"(?P<func>[A-Za-z_.$][\w.$]*|0x[0-9a-f]+)"
    r"(?P<off>\+0x[0-9a-f]+/0x[0-9a-f]+)?"
    r"(?:\s+\[(?P<mod>[\w-]+)(?:\s+[0-9a-f]+)?\])?"
    r"(?P<src>\s+\(?[\w./-]+\.[chS]:\d+(?::\d+)?\)?)?"
    r"(?:\s+\[inline\])?$"
)
_RIP_RE = re.compile(
    r"^(?:RIP: 0010:|EIP: 0060:|EIP: |IP: )(?:\[<[0-9a-f]+>\]\s*)*"
    r"(?P<frame>[A-Za-z_.$][\w.$]*\+0x[0-9a-f]+/0x[0-9a-f]+(?:\s+\[[\w-]+\])?)"
)
_TRACE_START_RE = re.compile(r"^(?:Call Trace:|Call trace:|backtrace(?: \(crc [0-9a-f]+\))?:)$")
_TRACE_STOP_RE = re.compile(
    r"^(?:Modules linked in|-+\[ end |Allocated by task|Freed by task|The buggy address"
    r"|Memory state around|Last potentially related work|Second to last potentially|={20,}$"
    r"|Showing all locks|irq event stamp|other info that might help|Kernel Offset:"
    r"|unreferenced object|CR2: )"
)
_MARKER_RE = re.compile(r"^</?(?:TASK|IRQ|NMI|SOFTIRQ|#DF|#MC|#DB|#BP|#VC|EOE)>$")

# Report machinery at the top of a stack: skipped so that frames[0] is the culprit.
_INFRA_RE = re.compile(
    r"^(?:dump_stack\w*|__dump_stack|show_stack|show_trace_log_lvl|show_regs|sched_show_task"
    r"|print_address_description\w*|print_report|describe_object\w*|kasan_\w+|__kasan_\w+"
    r"|__asan_\w+|check_memory_region\w*|check_region_inline|kfence_\w+|ubsan_\w+|__ubsan_\w+"
    r"|panic|vpanic|__warn\w*|warn_slowpath\w*|report_bug|handle_bug|exc_invalid_op"
    r"|asm_exc_invalid_op|__schedule_bug|__might_sleep|__might_resched|___might_sleep"
    r"|__might_fault|might_fault|print_circular_bug\w*|check_noncircular|check_prev_add"
    r"|check_prevs_add|validate_chain|__lock_acquire|lock_acquire|print_usage_bug\w*|valid_state"
    r"|mark_lock\w*|print_deadlock_bug|check_deadlock|lockdep_\w+|lockdep_rcu_suspicious"
    r"|print_unlock_imbalance_bug|nmi_cpu_backtrace\w*|nmi_trigger_cpumask_backtrace"
    r"|arch_trigger_cpumask_backtrace|trigger_single_cpu_backtrace|rcu_dump_cpu_stacks"
    r"|dump_cpu_task|print_cpu_stall|check_cpu_stall|rcu_pending|rcu_sched_clock_irq"
    r"|update_process_times|tick_sched_handle|tick_sched_timer|__hrtimer_run_queues"
    r"|hrtimer_interrupt|__sysvec_apic_timer_interrupt|sysvec_apic_timer_interrupt"
    r"|asm_sysvec_apic_timer_interrupt|watchdog_timer_fn|kmemleak_\w+|__kmemleak_\w+"
    r"|create_object\w*|slab_post_alloc_hook|__dump_page|dump_page|bad_page"
    r"|__list_add_valid|__list_del_entry_valid)$"
)


def _parse_frame(line: str) -> str | None:
    """``func+0x1a/0x40 [mod]`` (or ``func``) for a reliable stack frame line, else None."""
    m = _FRAME_RE.match(line.strip())
    if m is None or m.group("unreliable"):
        return None
    if not (m.group("off") or m.group("src") or m.group("func").startswith("0x")):
        return None
    frame = m.group("func") + (m.group("off") or "")
    if m.group("mod"):
        frame += f" [{m.group('mod')}]"
    return frame


def _func(frame: str) -> str:
    """The function of a frame without offset, module or compiler suffix (.cold, .isra.0)."""
    return re.split(r"[+ .]", frame, maxsplit=1)[0]


def _frames(body: list[str]) -> tuple[str, ...]:
    """The report's first stack frames, culprit first."""
    start = next((i for i, x in enumerate(body) if _TRACE_START_RE.match(x.strip())), None)
    frames: list[str] = []
    rip: str | None = None
    for line in body[: start if start is not None else len(body)]:
        m = _RIP_RE.match(line.strip())
        if m:
            rip = re.sub(r"\s+", " ", m.group("frame"))
            break
    if start is not None:
        for line in body[start + 1 :]:
            stripped = line.strip()
            if _TRACE_STOP_RE.match(stripped) or stripped == "</TASK>":
                break
            if _MARKER_RE.match(stripped):
                continue
            frame = _parse_frame(stripped)
            if frame is not None:
                frames.append(frame)
    else:
        frames = [f for f in (_parse_frame(x) for x in body[1:]) if f is not None]
    trimmed = list(frames)
    while trimmed and _INFRA_RE.match(_func(trimmed[0])):
        trimmed.pop(0)
    if not trimmed:
        trimmed = frames
    # The faulting instruction (RIP of an oops, WARN or lockup) is the culprit frame.
    if (
        rip is not None
        and not _INFRA_RE.match(_func(rip))
        and (not trimmed or _func(trimmed[0]) != _func(rip))
    ):
        trimmed.insert(0, rip)
    return tuple(trimmed[:MAX_FRAMES])


# --------------------------------------------------------------------------- scanning

_KMEMLEAK_PREFIX_RE = re.compile(r"^kmemleak: (?=\s|unreferenced)")
_VOLATILE_RE = re.compile(r"0x[0-9a-f]+|\b[0-9a-f]{8,}\b|\d+")


# Reports the kernel repeats periodically for one ongoing condition, with a growing duration.
_PERIODIC_KINDS = {"hung_task", "soft_lockup", "hard_lockup", "rcu_stall"}
_DURATION_RE = re.compile(r"stuck for \d+s|more than \d+ seconds")


def _dedup_key(report: CrashReport) -> tuple[str, str, tuple[str, ...]]:
    if report.kind in _PERIODIC_KINDS:
        return report.kind, _DURATION_RE.sub("N", report.title), ()
    title = _VOLATILE_RE.sub("N", report.title)
    return report.kind, title, tuple(_func(f) for f in report.frames[:SUMMARY_FRAMES])


def _has_evidence(body: Iterable[str]) -> bool:
    """Whether a kernel context line follows the headline closely."""
    return any(_EVIDENCE_RE.match(x.strip()) for x in list(body)[1 : 1 + _EVIDENCE_WINDOW])


def scan(text: str) -> list[CrashReport]:
    """All kernel reports in ``text``, in order of appearance.

    A report printed again with only numbers changed (a repeated WARN at the same place) and
    a periodic report of one ongoing condition (a soft lockup re-reported with a longer
    "stuck for", the same task still hung, the same RCU stall) are kept once.
    """
    # Blank lines carry no information here, and console text read with universal newlines
    # turns every "\r\r\n" into a blank line.
    lines = [x for x in normalize_lines(text) if x.strip()]
    reports: list[CrashReport] = []
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    i = 0
    while i < len(lines):
        kind = _headline(lines[i])
        if kind is None:
            i += 1
            continue
        body, end = _collect(lines, i, kind)
        if kind not in _SELF_EVIDENT and not _has_evidence(body):
            i += 1
            continue
        if kind == "kmemleak":
            body = [_KMEMLEAK_PREFIX_RE.sub("", x) for x in body]
        title = body[0].strip()
        report = CrashReport(
            kind=kind, title=title, frames=_frames(body), excerpt="\n".join(body).strip("\n")
        )
        key = _dedup_key(report)
        if key not in seen:
            seen.add(key)
            reports.append(report)
        i = max(end, i + 1)
    return reports


def summarize(reports: list[CrashReport]) -> str:
    """The summaries of reports, one paragraph each (for error messages)."""
    return "\n\n".join(r.summary() for r in reports)
