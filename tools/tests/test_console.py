"""Console text helpers and error messages (no VM)."""

from __future__ import annotations

import subprocess

from p2pkpvm.errors import CommandFailed, CommandTimeout, GuestDied
from p2pkpvm.vm.console import clean, split_literal


def test_split_literal_prints_token_without_containing_it() -> None:
    token = "@@SYNC42@@"
    text = split_literal(token)
    assert token not in text
    out = subprocess.run(
        ["sh", "-c", f"echo {text}"], capture_output=True, text=True, check=True
    ).stdout
    assert out == token + "\n"


def test_clean() -> None:
    assert clean("\x1b[?2004hroot@vm1:/# ls\r\r\nx\r\n") == "root@vm1:/# ls\nx\n"


def test_errors_name_vm_command_and_tail() -> None:
    e = CommandTimeout("vm3", "sleep 1000", "no result within 3.0 s", "last lines")
    assert "[vm3]" in str(e) and "sleep 1000" in str(e) and "last lines" in str(e)
    f = CommandFailed("vm1", "false", 1, "oops", "tail")
    assert f.rc == 1 and "exit code 1" in str(f) and "oops" in str(f)
    d = GuestDied("vm2", "echo c", "qemu exited", "tail", crash_summary="panic: sysrq")
    assert "panic: sysrq" in str(d) and d.console_tail == "tail"
