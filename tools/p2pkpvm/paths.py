"""Where the checkout is: the root every other path of the harness is found from."""

from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """The checkout this package lives in (tools/p2pkpvm/paths.py -> root)."""
    return Path(__file__).resolve().parents[2]


def out_dir() -> Path:
    """Logs of every run (consoles, per-test dmesg, summaries): <root>/out."""
    return project_root() / "out"


# ---- the one table of tool paths (the guests see the host's tree at the same paths) ----------
TOOLS = project_root() / "tools"
SEND = TOOLS / "p2pkp-send"  # p2pkp-send, p2pkp-recv, p2pkp-op: tools/*.c
RECV = TOOLS / "p2pkp-recv"
OP = TOOLS / "p2pkp-op"
FUZZ_SYS = TOOLS / "p2pkp-fuzz-sys"
FANOUT = TOOLS / "p2pkp-fanout"
BENCH_TOOLS = TOOLS / "bench"  # bench-udp, bench-tcp, bench-timeit
GUEST_DIR = TOOLS / "p2pkp_guest"  # guest-side payloads (package p2pkp_guest)
GUEST_SHELL = GUEST_DIR / "guest-shell"  # the console shell of every guest
VENV_BIN = project_root() / ".venv" / "bin"
