"""Helpers for the module's VM scenario tests: tool paths, test files, receivers, p2pkp-op.

Every command runs in a guest through the harness (`vm.run` / `vm.spawn`), so a failure names
the VM and the command.  Each test gets a `Scenario`: a fresh directory under /tmp on every guest
and background jobs that are killed when the test ends.
"""

from __future__ import annotations

import itertools
import re
import shlex
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from p2pkpvm import netem
from p2pkpvm.kernels import module_path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
SEND = str(TOOLS / "p2pkp-send")
RECV = str(TOOLS / "p2pkp-recv")
OP = str(TOOLS / "p2pkp-op")
# The wire fuzzer runs from the project tree, which the guest sees through an overlay:
# no .pyc written there (test_privilege looks for files the guest created).
WIRE = f"PYTHONDONTWRITEBYTECODE=1 python3 {TOOLS / 'p2pkp-fuzz-wire'}"
MiB = 1 << 20


def module_ko() -> str:
    """The p2pkp.ko the guests load: $P2PKP_MODULE (set by conftest for --kernel debug).

    Read at each call, not at import: conftest imports this module before pytest_configure
    sets the variable (a constant here once made `--kernel debug` insmod the stock build)."""
    return str(module_path(ROOT / "p2pkp.ko"))


# Run a command as nobody:nogroup with no supplementary groups.
AS_NOBODY = "setpriv --reuid=nobody --regid=nogroup --clear-groups"

_ports = itertools.count(7200)


def next_port() -> int:
    """A port no earlier test of this session used (receivers never collide)."""
    return next(_ports)


def transfer_deadline(size: int) -> float:
    """A generous bound (s) for moving `size` bytes under TCG; a deadline, not a measurement."""
    return 60.0 + 10.0 * size / MiB


class Result(Protocol):
    @property
    def rc(self) -> int: ...

    @property
    def output(self) -> str: ...


class Job(Protocol):
    def wait(self, timeout: float) -> Result: ...

    def output(self) -> str: ...

    def kill(self) -> None: ...


class Guest(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def ipv4(self) -> str: ...

    def run(self, cmd: str, timeout: float = ..., check: bool = ...) -> Result: ...

    def spawn(self, cmd: str) -> Job: ...

    def wait_for(self, cmd: str, timeout: float) -> Result: ...


def q(s: str) -> str:
    return shlex.quote(s)


def wait_output(job: Job, pattern: str, timeout: float, what: str) -> re.Match[str]:
    """Poll a background job's output until `pattern` matches; fail with the output."""
    rx = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        out = job.output()
        m = rx.search(out)
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: no line matching {pattern!r} within {timeout:.0f}s; output:\n{out}"
            )
        time.sleep(0.2)


def op_lines(output: str) -> list[str]:
    """The result lines of p2pkp-op ("NAME ARGS = RET ..."), without the indented details."""
    return [line.strip() for line in output.splitlines() if " = " in line]


def op_result(output: str, call: str) -> str:
    """The result ("0", "3", "-1 EACCES", ...) of the first p2pkp-op line for `call`."""
    for line in op_lines(output):
        name, _, res = line.partition(" = ")
        if name == call:
            return res.split(" ")[0] if not res.startswith("-1 ") else " ".join(res.split()[:2])
    raise AssertionError(f"p2pkp-op output has no line for {call!r}:\n{output}")


def parse_received(output: str) -> list[tuple[str, int]]:
    """(path, size) of every 'received PATH SIZE bytes' line of p2pkp-recv."""
    return [
        (m[1], int(m[2]))
        for m in re.finditer(r"^received (\S+) (\d+) bytes$", output, re.MULTILINE)
    ]


@dataclass
class PeerResult:
    addr: str
    state: str
    status: str
    bytes_acked: int


def parse_peer_results(output: str) -> list[PeerResult]:
    """The 'peer[i] addr=... state=... status=... bytes_acked=...' lines of p2pkp-op."""
    rx = re.compile(r"peer\[\d+\] addr=(\S+) state=(\S+) status=(\S+) bytes_acked=(\d+)")
    return [PeerResult(m[1], m[2], m[3], int(m[4])) for m in rx.finditer(output)]


@dataclass
class Scenario:
    """One test's directory on every guest and its background jobs."""

    guests: Sequence[Guest]
    name: str
    jobs: list[tuple[Guest, Job]] = field(default_factory=list)

    @property
    def dir(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")
        return f"/tmp/p2pkp-{safe}"

    def setup(self) -> None:
        for vm in self.guests:
            vm.run(f"rm -rf {q(self.dir)} && mkdir -p {q(self.dir)} && chmod 1777 {q(self.dir)}")

    def teardown(self) -> None:
        errors: list[str] = []
        for vm, job in self.jobs:
            try:
                job.kill()
            except Exception as exc:  # cleanup must reach every guest
                errors.append(f"{vm.name}: kill: {exc}")
        for vm in self.guests:
            try:
                vm.run(f"rm -rf {q(self.dir)}", timeout=60.0)
            except Exception as exc:
                errors.append(f"{vm.name}: rm -rf {self.dir}: {exc}")
        self.jobs.clear()
        if errors:
            raise AssertionError("scenario cleanup failed:\n" + "\n".join(errors))

    def path(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def spawn(self, vm: Guest, cmd: str) -> Job:
        job = vm.spawn(cmd)
        self.jobs.append((vm, job))
        return job

    def make_file(self, vm: Guest, name: str, size: int) -> tuple[str, str]:
        """A file of `size` random bytes on vm; returns (path, sha256)."""
        path = self.path(name)
        vm.run(f"head -c {size} /dev/urandom > {q(path)}", timeout=transfer_deadline(size))
        return path, sha256(vm, path, size)

    def receiver(
        self,
        vm: Guest,
        out: str,
        port: int,
        count: int = 1,
        timeout_ms: int | None = None,
        prefix: str = "",
        host: str = "0.0.0.0",
    ) -> Job:
        """Start p2pkp-recv on vm and wait until it has bound (its 'listening' line)."""
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        cmd = f"{RECV} --listen {listen} --out {q(out)} --count {count}"
        if timeout_ms is not None:
            cmd += f" --timeout {timeout_ms}"
        job = self.spawn(vm, f"{prefix}{cmd}")
        ready = rf"^listening {re.escape(listen)}$|p2pkp-recv: "
        wait_output(job, ready, 60.0, f"{vm.name}: {cmd}")
        if "p2pkp-recv: " in job.output():
            raise AssertionError(f"{vm.name}: {cmd} failed:\n{job.output()}")
        return job

    def op_job(self, vm: Guest, ops: Iterable[str], ready: str, prefix: str = "") -> Job:
        """Start p2pkp-op OPS in the background on vm; wait for a line starting with `ready`."""
        cmd = f"{prefix}{OP} " + " ".join(q(o) for o in ops)
        job = self.spawn(vm, cmd)
        wait_output(job, rf"^{re.escape(ready)}", 60.0, f"{vm.name}: {cmd}")
        return job


def op(vm: Guest, ops: Iterable[str], timeout: float = 60.0, prefix: str = "") -> str:
    """Run p2pkp-op OPS on vm (it exits 0 unless an OP is malformed); its output."""
    cmd = f"{prefix}{OP} " + " ".join(q(o) for o in ops)
    return vm.run(cmd, timeout=timeout).output


def sha256(vm: Guest, path: str, size: int = 0) -> str:
    out = vm.run(f"sha256sum {q(path)}", timeout=transfer_deadline(size)).output
    m = re.search(r"^([0-9a-f]{64})\s", out, re.MULTILINE)
    if not m:
        raise AssertionError(f"{vm.name}: sha256sum {path}: unexpected output {out!r}")
    return m[1]


def proc_total(vm: Guest) -> dict[str, int]:
    """The namespace counters (`total` line of /proc/net/p2pkp) of vm."""
    out = vm.run("cat /proc/net/p2pkp", timeout=30.0).output
    for line in out.splitlines():
        if line.startswith("total "):
            return {k: int(v) for k, v in (w.split("=", 1) for w in line.split()[1:])}
    raise AssertionError(f"{vm.name}: /proc/net/p2pkp has no 'total' line:\n{out}")


def proc_sock(vm: Guest, local: str) -> dict[str, str]:
    """Every key=value of the `sock` line of /proc/net/p2pkp for the socket bound to `local`
    ("0.0.0.0:7200"): state, auth, rcvbuf and the counters (as strings)."""
    out = vm.run("cat /proc/net/p2pkp", timeout=30.0).output
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["sock"] and f"local={local}" in words:
            return dict(w.split("=", 1) for w in words[1:] if "=" in w)
    raise AssertionError(f"{vm.name}: /proc/net/p2pkp has no socket bound to {local}:\n{out}")


def sock_counters(vm: Guest, local: str) -> dict[str, int]:
    """The counters of the receiver socket bound to `local`."""
    return {k: int(v) for k, v in proc_sock(vm, local).items() if v.lstrip("-").isdigit()}


def wait_counters(
    vm: Guest, local: str, base: dict[str, int], want: dict[str, int], timeout: float
) -> dict[str, int]:
    """Poll until every counter in `want` has risen by at least its value over `base` (the
    datagrams were counted); return the deltas of every counter then."""
    deadline = time.monotonic() + timeout
    while True:
        now = sock_counters(vm, local)
        delta = {k: now.get(k, 0) - base.get(k, 0) for k in now}
        if all(delta.get(k, 0) >= v for k, v in want.items()):
            return delta
        if time.monotonic() > deadline:
            raise AssertionError(f"{vm.name}: counters of {local} did not reach {want}: {delta}")
        time.sleep(0.2)


def udp_source_to(vm: Guest, dst: tuple[str, int]) -> tuple[str, int]:
    """Local address and port of vm's UDP socket connected to dst (IPv4): e.g. the kernel
    socket a P2PKP sender uses for that peer (from /proc/net/udp)."""

    def hexaddr(a: str, p: int) -> str:
        return "".join(f"{int(o):02X}" for o in reversed(a.split("."))) + f":{p:04X}"

    out = vm.run("cat /proc/net/udp").output
    want = hexaddr(*dst)
    for line in out.splitlines()[1:]:
        f = line.split()
        if len(f) > 2 and f[2] == want:
            ip, port = f[1].split(":")
            addr = ".".join(str(int(ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            return addr, int(port, 16)
    raise AssertionError(f"{vm.name}: no UDP socket connected to {dst}:\n{out}")


@dataclass
class DirSampler:
    """Lists a directory on a guest every 50 ms in the background (a sampling interval, not a
    wait), to tell afterwards every name seen in it."""

    vm: Guest
    directory: str
    log: str
    job: Job | None = None

    def start(self, scn: Scenario) -> DirSampler:
        d, log = q(self.directory), q(self.log)
        self.job = scn.spawn(
            self.vm, f": > {log}; while :; do ls -A {d} >> {log}; echo . >> {log}; sleep 0.05; done"
        )
        self.vm.wait_for(f"grep -q '^\\.$' {log}", timeout=30.0)
        return self

    def names(self) -> tuple[set[str], int]:
        """(every name seen, number of samples)."""
        if self.job is not None:
            self.job.kill()
            self.job = None
        out = self.vm.run(f"cat {q(self.log)}", timeout=60.0).output
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        return {ln for ln in lines if ln != "."}, lines.count(".")


def listing(vm: Guest, directory: str) -> list[str]:
    """Names in a directory (ls -A), sorted."""
    out = vm.run(f"ls -A {q(directory)}").output
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def send(
    vm: Guest,
    peers: Sequence[tuple[Guest, int]],
    files: Sequence[str],
    timeout: float,
    timeout_ms: int | None = None,
    check: bool = True,
    verbose: bool = False,
) -> Result:
    """Run p2pkp-send on vm to every (guest, port) in peers."""
    cmd = SEND + (" --verbose" if verbose else "")
    cmd += "".join(f" --to {g.ipv4}:{p}" for g, p in peers)
    if timeout_ms is not None:
        cmd += f" --timeout {timeout_ms}"
    cmd += "".join(f" {q(f)}" for f in files)
    return vm.run(cmd, timeout=timeout, check=check)


@contextmanager
def rate_limited(vm: Guest, rate_mbit: float, dev: str = "eth0") -> Iterator[None]:
    """Limit vm's egress on dev with netem so a transfer lasts long enough to be interrupted
    on purpose, whatever the accelerator; removed on exit."""
    vm.run(netem.script(netem.apply_cmds(netem.Link(rate_mbit=rate_mbit), dev, "egress")))
    try:
        yield
    finally:
        vm.run(netem.script(netem.clear_cmds(dev)))
