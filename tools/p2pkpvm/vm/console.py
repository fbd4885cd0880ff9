"""Drive a guest's serial shell with pexpect: prompt sync, commands with exit codes."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import IO

import pexpect

from p2pkpvm.errors import BootError, CommandTimeout, GuestDied

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TAIL_CHARS = 3000


@dataclass(frozen=True)
class CommandResult:
    rc: int
    output: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def clean(text: str) -> str:
    return ANSI_RE.sub("", text).replace("\r", "")


def split_literal(token: str) -> str:
    """Shell text that prints `token` but does not contain it (so echoes never match)."""
    half = len(token) // 2
    return f"'{token[:half]}''{token[half:]}'"


class Console:
    """A bash on a serial console. Not thread-safe: one caller at a time."""

    def __init__(self, child: pexpect.spawn, vm: str, log: IO[str]) -> None:
        self.child = child
        self.vm = vm
        self.prompt = f"@@P2PKP-{vm}@@ "
        self._seq = 0
        self._tail = ""
        child.logfile_read = _Tee(log, self)

    def note(self, data: str) -> None:
        self._tail = (self._tail + data)[-TAIL_CHARS:]

    def tail(self) -> str:
        return clean(self._tail)

    def _next(self, what: str) -> str:
        self._seq += 1
        return f"@@{what}{self._seq}@@"

    def wait_shell(self, timeout: float) -> None:
        """Wait for the first shell prompt, then make the console machine-friendly."""
        try:
            self.child.expect(rf"{re.escape(self.vm)}:[^\n]*[#$] ", timeout=timeout)
        except pexpect.TIMEOUT as exc:
            raise BootError(
                self.vm, "", f"no shell prompt within {timeout:.0f} s", self.tail()
            ) from exc
        except pexpect.EOF as exc:
            raise BootError(self.vm, "", "qemu exited during boot", self.tail()) from exc
        self.child.sendline(
            "stty -echo cols 4096; bind 'set enable-bracketed-paste off' 2>/dev/null; "
            f"unset PROMPT_COMMAND; PS2=''; PS1={split_literal(self.prompt)}"
        )
        self.sync(timeout=max(15.0, timeout / 4))

    def sync(self, timeout: float) -> None:
        """Resynchronise on a fresh marker followed by the prompt."""
        marker = self._next("SYNC")
        self.child.sendline(f"echo {split_literal(marker)}")
        try:
            self.child.expect_exact(marker, timeout=timeout)
            self.child.expect_exact(self.prompt, timeout=timeout)
        except pexpect.TIMEOUT as exc:
            raise GuestDied(
                self.vm, "", f"console did not answer within {timeout:.0f} s", self.tail()
            ) from exc
        except pexpect.EOF as exc:
            raise GuestDied(self.vm, "", "qemu exited", self.tail()) from exc

    def run(self, cmd: str, timeout: float) -> CommandResult:
        """Run cmd (stdin from /dev/null); raise CommandTimeout/GuestDied(EOF)."""
        marker = self._next("RC")
        half = len(marker) // 2
        self.child.sendline(
            f"{{ {cmd}\n}} </dev/null; printf '{marker[:half]}''{marker[half:]} %d\\n' $?"
        )
        try:
            self.child.expect(re.escape(marker) + r" (\d+)\r*\n", timeout=timeout)
            output = self.child.before
            rc = int(self.child.match.group(1))
            self.child.expect_exact(self.prompt, timeout=max(5.0, timeout))
        except pexpect.TIMEOUT as exc:
            raise CommandTimeout(
                self.vm, cmd, f"no result within {timeout:.1f} s", self.tail()
            ) from exc
        except pexpect.EOF as exc:
            raise GuestDied(
                self.vm, cmd, "qemu exited while running the command", self.tail()
            ) from exc
        return CommandResult(rc=rc, output=clean(output))

    def interrupt(self, timeout: float = 15.0) -> None:
        """Ctrl-C the foreground command and resync (GuestDied when that fails)."""
        deadline = time.monotonic() + timeout
        self.child.send("\x03")
        while True:
            left = deadline - time.monotonic()
            try:
                self.sync(timeout=min(5.0, max(left, 1.0)))
                return
            except GuestDied:
                if left <= 0 or not self.child.isalive():
                    raise
                self.child.send("\x03")


class _Tee:
    """pexpect logfile_read: full console log to a file, tail kept in memory."""

    def __init__(self, log: IO[str], console: Console) -> None:
        self.log = log
        self.console = console

    def write(self, data: str | bytes) -> None:
        if isinstance(data, bytes):  # pexpect's interact() logs raw bytes
            data = data.decode("utf-8", "replace")
        self.log.write(data)
        self.console.note(data)

    def flush(self) -> None:
        self.log.flush()
