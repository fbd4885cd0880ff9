"""Unit tests of the `strace -c` summary parser on captured real output."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pkpvm.scenario.strace import StraceParseError, parse_strace_summary

DATA = Path(__file__).parent / "data" / "strace"


def test_parses_real_host_capture() -> None:
    text = (DATA / "host-p2pkp-op-udp.txt").read_text()
    summary = parse_strace_summary(text)
    assert summary.calls("socket") == 1
    assert summary.calls("connect") == 2
    assert summary.calls("write") == 6
    assert summary.syscalls["openat"].errors == 1
    assert summary.calls("sendfile") == 0
    assert summary.total_calls == 45
    assert summary.total_errors == 3


def test_rejects_text_without_header() -> None:
    with pytest.raises(StraceParseError, match="no '% time"):
        parse_strace_summary("hello\n")


def test_rejects_table_without_total() -> None:
    text = (DATA / "host-p2pkp-op-udp.txt").read_text()
    truncated = "\n".join(line for line in text.splitlines() if "total" not in line)
    with pytest.raises(StraceParseError, match="no 'total' line"):
        parse_strace_summary(truncated)


def test_rejects_rows_that_do_not_add_up() -> None:
    text = (DATA / "host-p2pkp-op-udp.txt").read_text()
    tampered = text.replace("         1           socket", "         2           socket")
    with pytest.raises(StraceParseError, match="add up to 46"):
        parse_strace_summary(tampered)


def test_rejects_garbage_row() -> None:
    text = (DATA / "host-p2pkp-op-udp.txt").read_text()
    broken = text.replace("socket", "socket extra words")
    with pytest.raises(StraceParseError, match="unexpected line"):
        parse_strace_summary(broken)


def test_parses_real_guest_capture_of_the_paper_claim() -> None:
    """strace -f -c of p2pkp-send with 2 files to 3 peers, captured in a TCG guest."""
    text = (DATA / "guest-p2pkp-send-2files-3peers.txt").read_text()
    summary = parse_strace_summary(text)
    assert (summary.calls("socket"), summary.calls("connect"), summary.calls("write")) == (1, 3, 2)
    assert summary.syscalls["access"].errors == 1
    assert summary.total_calls == 42
