"""A receiver namespace seen as a guest: what the layers above run on `Guest`s (the bench's
runner, scenario helpers) works unchanged on receivers r1, r2, ... (topology `receivers:`).

Every command runs in the receiver's network namespace inside its guest, through that
guest's console; the file system is the guest's, shared with its other receivers, so
callers give each receiver its own paths (its `name` is unique in the topology).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from p2pkpvm.net.receivers import Receiver
from p2pkpvm.vm.guest import Guest, Job, Result


class NamespaceGuest:
    """Receiver `r` of guest `vm`, as a Guest."""

    def __init__(self, vm: Guest, r: Receiver) -> None:
        if r.guest != vm.name:
            raise ValueError(f"receiver {r.name} lives in {r.guest}, not {vm.name}")
        self.vm = vm
        self.receiver = r

    @property
    def name(self) -> str:
        return self.receiver.name

    @property
    def ipv4(self) -> str:
        return str(self.receiver.ipv4.ip)

    @property
    def ipv6(self) -> str | None:
        return str(self.receiver.ipv6.ip) if self.receiver.ipv6 else None

    @property
    def time_scale(self) -> float:
        return self.vm.time_scale

    @property
    def module(self) -> Path:
        return self.vm.module

    def wrap(self, cmd: str) -> str:
        """cmd (a shell command line) run by sh inside the receiver's namespace."""
        return f"{self.receiver.exec_prefix}sh -c {shlex.quote(cmd)}"

    def run(self, cmd: str, timeout: float = 30.0, check: bool = True) -> Result:
        return self.vm.run(self.wrap(cmd), timeout=timeout, check=check)

    def spawn(self, cmd: str) -> Job:
        return self.vm.spawn(self.wrap(cmd))

    def wait_for(self, cmd: str, timeout: float, interval: float = 0.5) -> Result:
        return self.vm.wait_for(self.wrap(cmd), timeout, interval)
