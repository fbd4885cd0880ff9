"""The one Guest protocol: what every layer above needs of a guest (a VM, a remote VM of an
attached cluster, or a fake in unit tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Result(Protocol):
    @property
    def rc(self) -> int: ...

    @property
    def output(self) -> str: ...


class Job(Protocol):
    """A command started in the background on a guest."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float) -> Result: ...

    def output(self) -> str: ...

    def kill(self, sig: str = ...) -> None: ...


class Guest(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def ipv4(self) -> str: ...

    @property
    def ipv6(self) -> str | None: ...

    @property
    def time_scale(self) -> float: ...

    @property
    def module(self) -> Path: ...

    def run(self, cmd: str, timeout: float = ..., check: bool = ...) -> Result: ...

    def spawn(self, cmd: str) -> Job: ...

    def wait_for(self, cmd: str, timeout: float, interval: float = ...) -> Result: ...
