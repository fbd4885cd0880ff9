"""Adapter to crash.py (owned by the crash engineer): text -> crash findings.

crash.py provides scan(text) -> list[CrashReport] with .kind, .title, .frames, .summary().
Until it is importable, a minimal built-in pattern scan stands in.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

_FALLBACK = re.compile(
    r"(Kernel panic - not syncing.*|BUG: .*|Oops: .*|WARNING: CPU: .*|"
    r"general protection fault.*|unreferenced object .*|INFO: task .* blocked for more.*|"
    r"watchdog: BUG: soft lockup.*|rcu: INFO: .*detected stalls.*|UBSAN: .*)"
)


@dataclass(frozen=True)
class Finding:
    kind: str
    title: str
    summary: str


def scan(text: str) -> list[Finding]:
    try:
        mod: Any = importlib.import_module("p2pkpvm.crash")
    except ImportError:
        mod = None
    if mod is not None and hasattr(mod, "scan"):
        return [
            Finding(kind=str(r.kind), title=str(r.title), summary=str(r.summary()))
            for r in mod.scan(text)
        ]
    return [
        Finding(kind="crash", title=m.group(1).strip(), summary=m.group(1).strip())
        for m in _FALLBACK.finditer(text)
    ]


def summarize(findings: list[Finding]) -> str:
    return "\n\n".join(f.summary for f in findings)
