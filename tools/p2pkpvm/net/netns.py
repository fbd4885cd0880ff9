"""A private network namespace with one bridge and one tap per guest.

The bridge is never attached to a host interface: guests only reach each other.  Bridge and
taps get the cluster's MTU (topology `mtu:`); at 1500 nothing is said (their default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pkpvm.errors import HarnessError, NotRootError
from p2pkpvm.net.mtu import DEFAULT_MTU

log = logging.getLogger(__name__)
NS_PREFIX = "p2pkp-"
BRIDGE = "br0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` with a deadline; raise HarnessError naming the command on failure."""
    argv = ["ip", *args]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"'{' '.join(argv)}' did not finish within 20 s") from exc
    if check and res.returncode != 0:
        raise HarnessError(f"'{' '.join(argv)}' failed ({res.returncode}): {res.stderr.strip()}")
    return res


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            f"{what} needs root (network namespaces, bridges and taps); run as root or with sudo"
        )


def unique_ns_name() -> str:
    return f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"


def list_namespaces() -> list[str]:
    res = ip("netns", "list", check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.strip()]


def orphaned(names: list[str], alive: Callable[[int], bool]) -> list[str]:
    """The harness's namespaces (p2pkp-PID-HEX) whose creating process is gone: left by a
    run that was killed before its teardown (SIGKILL, a machine stopped mid-run)."""

    def pid(name: str) -> int | None:
        parts = name.removeprefix(NS_PREFIX).split("-")
        ok = name.startswith(NS_PREFIX) and len(parts) == 2 and parts[0].isdigit()
        return int(parts[0]) if ok else None

    return [n for n in names if (p := pid(n)) is not None and not alive(p)]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def sweep_orphans() -> list[str]:
    """Delete the namespaces orphaned() finds (what runs inside is killed first); returns
    their names.  A live run's namespace is never touched."""
    gone = []
    for name in orphaned(list_namespaces(), _alive):
        try:
            Netns(name=name, created=True).destroy()
        except HarnessError as exc:
            log.warning("orphaned namespace %s: %s", name, exc)
            continue
        log.warning("deleted namespace %s, left by a run that was killed", name)
        gone.append(name)
    return gone


@dataclass
class Netns:
    """Network namespace `name` holding bridge br0 and taps tap0..tapN-1, all at `mtu`."""

    name: str = field(default_factory=unique_ns_name)
    taps: list[str] = field(default_factory=list)
    created: bool = False
    mtu: int = DEFAULT_MTU

    def create(self, n_taps: int, mtu: int = DEFAULT_MTU) -> None:
        require_root("creating a network namespace")
        if self.name in list_namespaces():
            raise HarnessError(f"network namespace {self.name} already exists")
        self.mtu = mtu
        ip("netns", "add", self.name)
        self.created = True
        try:
            self.ip("link", "set", "lo", "up")
            # A bridge told its MTU keeps it (it no longer follows its smallest port).
            self.ip("link", "add", BRIDGE, *self._mtu_args(), "type", "bridge")
            self.ip("link", "set", BRIDGE, "up")
            for i in range(n_taps):
                self.add_tap(f"tap{i}")
        except BaseException:
            self.destroy()
            raise
        log.info("netns %s: bridge %s, taps %s, MTU %d", self.name, BRIDGE, self.taps, self.mtu)

    def _mtu_args(self) -> list[str]:
        return ["mtu", str(self.mtu)] if self.mtu != DEFAULT_MTU else []

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ip("-n", self.name, *args, check=check)

    def add_tap(self, tap: str) -> None:
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.taps.append(tap)
        if self.mtu != DEFAULT_MTU:
            self.ip("link", "set", tap, *self._mtu_args())
        self.ip("link", "set", tap, "master", BRIDGE)
        self.ip("link", "set", tap, "up")

    def pids(self) -> list[int]:
        res = ip("netns", "pids", self.name, check=False)
        return [int(p) for p in res.stdout.split() if p.isdigit()]

    def destroy(self) -> None:
        """Kill what runs in the namespace, delete taps, bridge and namespace. Idempotent."""
        if not self.created:
            return
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for tap in self.taps:
            self.ip("link", "del", tap, check=False)
        self.ip("link", "del", BRIDGE, check=False)
        res = ip("netns", "del", self.name, check=False)
        if res.returncode != 0 and self.name in list_namespaces():
            raise HarnessError(f"could not delete namespace {self.name}: {res.stderr.strip()}")
        self.created = False
        self.taps = []
        log.info("netns %s deleted", self.name)
