"""Parse the summary table of `strace -c` (strace 6.x) into per-syscall counts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from p2pkpvm.errors import HarnessError

HEADER_RE = re.compile(r"^\s*% time\s+seconds\s+usecs/call\s+calls\s+errors\s+syscall\s*$")
RULE_RE = re.compile(r"^[-\s]+$")
# "% time  seconds  usecs/call  calls  [errors]  name"; errors may be blank.
ROW_RE = re.compile(
    r"^\s*(?P<pct>\d+\.\d+)\s+(?P<secs>\d+\.\d+)\s+(?P<usecs>\d+)\s+"
    r"(?P<calls>\d+)\s+(?:(?P<errors>\d+)\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$"
)


class StraceParseError(HarnessError, ValueError):
    """The text is not an `strace -c` summary table."""


@dataclass(frozen=True)
class SyscallCount:
    name: str
    calls: int
    errors: int


@dataclass(frozen=True)
class StraceSummary:
    syscalls: dict[str, SyscallCount]
    total_calls: int
    total_errors: int

    def calls(self, name: str) -> int:
        """Calls of syscall `name` (0 if it does not appear)."""
        entry = self.syscalls.get(name)
        return entry.calls if entry else 0


def parse_strace_summary(text: str, where: str = "strace -c output") -> StraceSummary:
    """Parse the table `strace -c -o FILE` writes; checks rows against the total line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if HEADER_RE.match(line)), None)
    if start is None:
        raise StraceParseError(f"{where}: no '% time ... syscall' header line")
    syscalls: dict[str, SyscallCount] = {}
    total: SyscallCount | None = None
    for lineno, line in enumerate(lines[start + 1 :], start + 2):
        if not line.strip() or RULE_RE.match(line):
            continue
        m = ROW_RE.match(line)
        if m is None:
            raise StraceParseError(f"{where}:{lineno}: unexpected line {line!r}")
        entry = SyscallCount(name=m["name"], calls=int(m["calls"]), errors=int(m["errors"] or 0))
        if entry.name == "total":
            total = entry
            break
        if entry.name in syscalls:
            raise StraceParseError(f"{where}:{lineno}: syscall {entry.name} listed twice")
        syscalls[entry.name] = entry
    if total is None:
        raise StraceParseError(f"{where}: no 'total' line after the table")
    summed = sum(s.calls for s in syscalls.values())
    if summed != total.calls:
        raise StraceParseError(
            f"{where}: rows add up to {summed} calls but the total line says {total.calls}"
        )
    return StraceSummary(syscalls=syscalls, total_calls=total.calls, total_errors=total.errors)
