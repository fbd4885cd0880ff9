"""A stand-in for a Guest in unit tests: records the commands it is given, answers rc 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeResult:
    rc: int = 0
    output: str = ""


@dataclass
class FakeGuest:
    """Guest's attributes and calls; subclasses answer what their test needs."""

    name: str = "vm1"
    ipv4: str = "10.99.0.1"
    ipv6: str | None = None
    time_scale: float = 1.0
    module: Path = Path("/p2pkp.ko")
    ran: list[str] = field(default_factory=list)

    def run(self, cmd: str, timeout: float = 30.0, check: bool = True) -> FakeResult:
        self.ran.append(cmd)
        return FakeResult()

    def spawn(self, cmd: str) -> FakeResult:  # a Job in the real thing; unused here
        raise NotImplementedError

    def wait_for(self, cmd: str, timeout: float, interval: float = 0.5) -> FakeResult:
        return self.run(cmd)
