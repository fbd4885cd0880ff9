"""Errors raised by the VM harness. Every message names the VM and the command."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class for harness failures."""


class NotRootError(HarnessError):
    """A network-namespace operation needs root."""


class VMError(HarnessError):
    """A failure tied to one guest; carries the tail of its console."""

    def __init__(self, vm: str, command: str, message: str, console_tail: str) -> None:
        self.vm = vm
        self.command = command
        self.console_tail = console_tail
        text = f"[{vm}] {message}"
        if command:
            text += f"\n  command: {command!r}"
        if console_tail:
            text += "\n  console tail:\n" + _indent(console_tail)
        super().__init__(text)


class CommandTimeout(VMError):
    """A command did not finish within its deadline (the console was recovered)."""


class CommandFailed(VMError):
    """A command exited non-zero (run(check=True))."""

    def __init__(self, vm: str, command: str, rc: int, output: str, console_tail: str) -> None:
        self.rc = rc
        self.output = output
        super().__init__(
            vm,
            command,
            f"command failed with exit code {rc}:\n" + _indent(output[-2000:] or "(no output)"),
            "",
        )
        self.console_tail = console_tail


class GuestDied(VMError):
    """The guest is gone: kernel panic/crash, qemu exit, or an unrecoverable console."""

    def __init__(
        self, vm: str, command: str, message: str, console_tail: str, crash_summary: str = ""
    ) -> None:
        self.crash_summary = crash_summary
        if crash_summary:
            message += "\n  crash report:\n" + _indent(crash_summary)
        super().__init__(vm, command, message, console_tail)


class BootError(VMError):
    """The guest did not reach a shell prompt."""


class MtuMismatch(VMError):
    """A guest's NIC came up without the MTU its topology asks for."""


class TopologyError(HarnessError):
    """A topology file is missing or invalid."""


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())
