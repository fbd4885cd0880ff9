"""One line from a pytest junit file (`make vm-test-matrix` prints one per pin)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

COUNTS = ("tests", "failures", "errors", "skipped")


def summary_text(text: str) -> str:
    """'312 tests, 0 failures, 0 errors, 5 skipped in 2710 s' of a junit document's suites."""
    root = ET.fromstring(text)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = dict.fromkeys(COUNTS, 0)
    seconds = 0.0
    for suite in suites:
        for key in COUNTS:
            totals[key] += int(suite.get(key, "0"))
        seconds += float(suite.get("time", "0"))
    return ", ".join(f"{totals[k]} {k}" for k in COUNTS) + f" in {seconds:.0f} s"


def summary(path: Path) -> str:
    """The summary of a junit file, or why there is none (the run ended before pytest)."""
    try:
        return f"{summary_text(path.read_text())} ({path})"
    except OSError:
        return f"no junit file {path} (pytest did not finish: see above)"
    except (ET.ParseError, ValueError) as exc:
        return f"unreadable junit file {path}: {exc}"
