"""Helpers for the module's VM scenario tests: tool paths, test files, receivers, p2pkp-op.

Every command runs in a guest through the harness (`vm.run` / `vm.spawn`), so a failure names
the VM and the command.  Each test gets a `Scenario`: a fresh directory under /tmp on every guest
and background jobs that are killed when the test ends.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from p2pkpvm import paths
from p2pkpvm.cluster.cluster import ClusterView, run_parallel
from p2pkpvm.errors import HarnessError
from p2pkpvm.net import netem
from p2pkpvm.scenario import toolout
from p2pkpvm.vm.guest import Guest as Guest
from p2pkpvm.vm.guest import Job, Result

TOOLS = paths.TOOLS
SEND = str(paths.SEND)
RECV = str(paths.RECV)
# p2pkp-op as tests run it: machine-readable (read with op_result, Transcript).
OP = f"{paths.OP} --json"
SYS = str(paths.FUZZ_SYS)
FANOUT = str(paths.FANOUT)
# Guest-side payloads run with the project's interpreter (the guest sees the host's tree, so
# .venv/bin/python finds package p2pkp_guest), without .pyc writes into the guest-visible tree
# (test_privilege looks for files the guest created).
GUEST_PY = f"PYTHONDONTWRITEBYTECODE=1 {paths.VENV_BIN / 'python'}"
WIRE = f"{GUEST_PY} -m p2pkp_guest.wirefuzz"
MiB = 1 << 20


def module_ko(vm: Guest) -> str:
    """The p2pkp.ko built for vm's kernel (the kernel choice travels with the cluster)."""
    return str(vm.module)


# Run a command as nobody:nogroup with no supplementary groups.
AS_NOBODY = "setpriv --reuid=nobody --regid=nogroup --clear-groups"

# The one port allocator: unique within a process; processes (e.g. sessions on one attached
# cluster, or bench next to tests) start at different bases.
_ports = itertools.count(10000 + (os.getpid() % 500) * 100)


def next_port() -> int:
    """A port no earlier test of this process used (receivers never collide)."""
    return next(_ports)


def mcast_group(port: int, ipv6: bool = False) -> str:
    """A multicast group of the transfer on `port` (P2PKP_GROUP, p2pkp-send --group): IPv4
    239.99.x.y (administratively scoped), IPv6 ff12::5032:PORT (transient, link scope)."""
    return f"ff12::5032:{port:x}" if ipv6 else f"239.99.{port >> 8 & 0xFF}.{port & 0xFF}"


def transfer_deadline(size: int, peers: int = 1) -> float:
    """The one deadline rule (s) for moving `size` bytes to `peers` receivers under TCG on a
    loaded machine: generous; a deadline, not a measurement."""
    return 60.0 + 10.0 * peers * size / MiB


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


def recv_cmd(
    port: int,
    out: str,
    count: int = 1,
    host: str = "0.0.0.0",
    timeout_ms: int | None = None,
    extra: str = "",
) -> str:
    """p2pkp-recv --json on host:port into out (opts: timeout_ms; extra: more options, e.g.
    " --resume")."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = f"{RECV} --json --listen {listen} --out {q(out)} --count {count}"
    if timeout_ms is not None:
        cmd += f" --timeout {timeout_ms}"
    return cmd + extra


def start_receiver(vm: Guest, cmd: str, within: float = 60.0) -> Job:
    """The one receiver start-and-wait: spawn cmd (a p2pkp-recv --json command line, maybe
    wrapped) on vm and wait until it has bound ("listening"); killed and an error naming vm
    and cmd when it fails or does not bind in time."""
    job = vm.spawn(cmd)
    deadline = time.monotonic() + within * vm.time_scale
    while True:
        out = job.output()
        if toolout.listening(out) is not None:
            return job
        failed = toolout.errors(out)
        if failed or time.monotonic() > deadline:
            job.kill("KILL")
            why = "failed" if failed else f"not listening within {within:g} s"
            raise HarnessError(f"[{vm.name}] receiver {why}\n  command: {cmd!r}\n{out}")
        time.sleep(0.1)


def op_lines(output: str) -> list[str]:
    """The result lines of p2pkp-op --json output ("NAME ARGS = RET ...")."""
    return [c.line for c in toolout.op_calls(output) if c.op != "echo"]


def op_result(output: str, call: str) -> str:
    """The result ("0", "3", "-1 EACCES", ...) of the first p2pkp-op call named `call`."""
    return toolout.Transcript(output).call(call).result


def parse_received(output: str) -> list[tuple[str, int]]:
    """(path, size) of every file p2pkp-recv --json received."""
    return toolout.received(output)


@dataclass
class PeerResult:
    addr: str
    state: str
    status: str
    bytes_acked: int


def parse_peer_results(output: str) -> list[PeerResult]:
    """The peers of p2pkp-op's `getsockopt:peer_results` call."""
    call = toolout.Transcript(output).call("getsockopt peer_results")
    return [
        PeerResult(str(p["addr"]), str(p["state"]), str(p["status"]), int(p["bytes_acked"]))
        for p in call.extra.get("peers", [])
    ]


class OpJob:
    """A p2pkp-op --json job whose output reads as a Transcript."""

    def __init__(self, job: Job) -> None:
        self.job = job

    @property
    def pid(self) -> int:
        return self.job.pid

    def wait(self, timeout: float) -> OpResult:
        res = self.job.wait(timeout)
        return OpResult(res.rc, toolout.Transcript(res.output))

    def output(self) -> toolout.Transcript:
        return toolout.Transcript(self.job.output())

    def kill(self, sig: str = "TERM") -> None:
        self.job.kill(sig)


@dataclass(frozen=True)
class OpResult:
    rc: int
    output: toolout.Transcript


@dataclass
class Scenario:
    """One test's directory on every guest and its background jobs."""

    guests: Sequence[Guest]
    name: str
    jobs: list[tuple[Guest, Job]] = field(default_factory=list)
    done: bool = False  # cleaned up (cleaned())

    @property
    def dir(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")
        return f"/tmp/p2pkp-{safe}"

    def setup_script(self) -> str:
        """Shell that makes this test's directory on a guest: a tmpfs of its own (receivers
        create their files with O_TMPFILE, which the guests' /tmp, an overlayfs, lacks before
        6.6; tests of the fallback make their own overlay directory)."""
        d = q(self.dir)
        # (a leftover of an interrupted run is removed first; the usual case execs only
        # mkdir and mount: each exec costs ~0.2 s under TCG)
        return (
            f"{{ if [ -e {d} ]; then umount -l {d} 2>/dev/null; rm -rf {d}; fi && "
            f"mkdir -p {d} && mount -t tmpfs -o mode=1777 p2pkp-scn {d}; }}"
        )

    def setup(self) -> None:
        """The directory on every guest, all at once (the pytest plugin runs setup_script
        with its per-test health probe instead: one console round less)."""
        script = self.setup_script()
        run_parallel(lambda vm: vm.run(script), "scenario setup", self.guests)

    def cleanup_script(self, vm: Guest) -> str:
        """Shell that kills this test's jobs on vm (each job's process group) and removes its
        directory (a lazy umount also detaches what tests mounted inside it)."""
        groups = " ".join(f"-{job.pid}" for owner, job in self.jobs if owner is vm and job.pid > 0)
        kill = f"kill -TERM -- {groups} 2>/dev/null; " if groups else ""
        return f"{kill}umount -l {q(self.dir)} 2>/dev/null; rm -rf {q(self.dir)}"

    def cleanup_guests(self) -> list[Guest]:
        """The guests cleanup_script must run on: the scenario's and any other a job ran on."""
        others = [vm for vm, _ in self.jobs if all(vm is not g for g in self.guests)]
        return [*self.guests, *others]

    def cleaned(self) -> None:
        """cleanup_script ran on every guest of cleanup_guests (the pytest plugin runs it
        in the same console round as its dmesg check after the test): teardown has nothing
        left to do."""
        self.jobs.clear()
        self.done = True

    def teardown(self) -> None:
        """Kill the test's jobs and remove its directory, every guest at once; every guest is
        cleaned even when one fails.  Nothing when the plugin already did (cleaned)."""
        if self.done:
            return
        errors: list[str] = []

        def clean(vm: Guest) -> None:
            # One console round per guest: every job's process group, then the directory.
            try:
                vm.run(self.cleanup_script(vm), timeout=60.0)
            except Exception as exc:  # cleanup must reach every guest
                errors.append(f"{vm.name}: {self.cleanup_script(vm)}: {exc}")

        run_parallel(clean, "scenario teardown", self.cleanup_guests())
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
        extra: str = "",
    ) -> Job:
        """Start p2pkp-recv --json on vm and wait until it has bound (its 'listening');
        extra: more options (e.g. " --resume")."""
        cmd = prefix + recv_cmd(port, out, count, host, timeout_ms=timeout_ms, extra=extra)
        job = start_receiver(vm, cmd)
        self.jobs.append((vm, job))
        return job

    def receiver_as(
        self,
        view: ClusterView,
        name: str,
        out: str,
        port: int,
        timeout_ms: int | None = None,
        count: int = 1,
        host: str = "0.0.0.0",
        extra: str = "",
    ) -> Job:
        """receiver() as receiver `name` (r1, r2, ...: a network namespace inside a guest,
        topology `receivers:`), listening on its own address (host "::" for IPv6)."""
        vm, r = view.receiver(name)
        return self.receiver(
            vm,
            out,
            port,
            count=count,
            timeout_ms=timeout_ms,
            prefix=r.exec_prefix,
            host=host,
            extra=extra,
        )

    def receivers_as(
        self,
        view: ClusterView,
        names: Sequence[str],
        out: str,
        port: int,
        timeout_ms: int | None = None,
        host: str = "0.0.0.0",
        extra: str = "",
    ) -> dict[str, Job]:
        """receiver_as() for every receiver of `names`, each into `out`.NAME (receivers of
        one guest share its file system); guests in parallel, a guest's receivers one after
        the other.  Their jobs by name."""
        by_guest: dict[str, list[str]] = {}
        for name in names:
            by_guest.setdefault(view.receiver(name)[1].guest, []).append(name)

        def start(guest: str) -> list[tuple[str, Job]]:
            return [
                (n, self.receiver_as(view, n, f"{out}.{n}", port, timeout_ms, 1, host, extra))
                for n in by_guest[guest]
            ]

        started = run_parallel(start, "receivers", list(by_guest))
        return {name: job for jobs in started for name, job in jobs}

    def receivers(
        self, vms: Sequence[Guest], out: str, port: int, count: int = 1, host: str = "0.0.0.0"
    ) -> list[Job]:
        """receiver() on every guest of vms at once (they are independent); in vms' order."""
        return run_parallel(
            lambda vm: self.receiver(vm, out, port, count=count, host=host), "receivers", vms
        )

    def op_job(self, vm: Guest, ops: Iterable[str], ready: str, prefix: str = "") -> OpJob:
        """Start p2pkp-op --json OPS in the background on vm; wait for a call whose line
        starts with `ready` (an echo's text, or e.g. 'bind 0.0.0.0:7200 = 0')."""
        cmd = f"{prefix}{OP} " + " ".join(q(o) for o in ops)
        job = OpJob(self.spawn(vm, cmd))
        deadline = time.monotonic() + 60.0 * vm.time_scale
        while not any(c.line.startswith(ready) for c in job.output().calls):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{vm.name}: {cmd}: no call {ready!r} within 60 s; output:\n{job.output()}"
                )
            time.sleep(0.2)
        return job


def op(
    vm: Guest, ops: Iterable[str], timeout: float = 60.0, prefix: str = ""
) -> toolout.Transcript:
    """Run p2pkp-op --json OPS on vm (it exits 0 unless an OP is malformed); its calls, which
    read as text lines 'NAME ARGS = RET'."""
    cmd = f"{prefix}{OP} " + " ".join(q(o) for o in ops)
    return toolout.Transcript(vm.run(cmd, timeout=timeout).output)


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


def silent_addr(vm: Guest, host: int = 200) -> str:
    """An address on vm's subnet that no guest has (host part `host`): a peer that never
    answers, or a forged source."""
    a, b, c, _ = vm.ipv4.split(".")
    return f"{a}.{b}.{c}.{host}"


# Prints EOPNOTSUPP when open(O_TMPFILE) is refused in the directory argv[1], OK when it works.
_TMPFILE_PROBE = (
    "import errno, os, sys\n"
    "try:\n"
    "    os.close(os.open(sys.argv[1], os.O_TMPFILE | os.O_RDWR, 0o600))\n"
    "    print('probe=OK')\n"
    "except OSError as e:\n"
    "    no = 'EOPNOTSUPP' if e.errno == errno.EOPNOTSUPP else errno.errorcode.get(e.errno)\n"
    "    print('probe=' + str(no or e.errno))\n"
)


@contextmanager
def module_param(vm: Guest, name: str, on: bool) -> Iterator[None]:
    """p2pkp's boolean module parameter `name` at `on` on vm for the block, then back at 1
    (every such parameter defaults to on: rx_gro, tx_zerocopy)."""
    param = f"/sys/module/p2pkp/parameters/{name}"
    vm.run(f"echo {int(on)} > {param}")
    try:
        yield
    finally:
        vm.run(f"echo 1 > {param}")


@contextmanager
def module_param_at(vm: Guest, name: str, value: int) -> Iterator[None]:
    """p2pkp's module parameter `name` at `value` on vm for the block, then back at what it
    was, also on failure; a missing or read-only parameter is an error naming it."""
    param = f"/sys/module/p2pkp/parameters/{name}"
    if vm.run(f"test -w {param}", check=False).rc != 0:
        raise AssertionError(f"{vm.name}: the module has no writable {param}")
    old = vm.run(f"cat {param}").output.strip()
    vm.run(f"echo {value} > {param}")
    try:
        yield
    finally:
        vm.run(f"echo {q(old)} > {param}")


@contextmanager
def dir_without_o_tmpfile(vm: Guest, base: str) -> Iterator[str]:
    """A world-writable sticky directory on vm (`base`-fuse) where open(O_TMPFILE) fails with
    EOPNOTSUPP, on every kernel: a bindfs (FUSE) mirror of `base`-back.  bindfs mounts with
    default_permissions, so the guest kernel checks file modes as on a disk file system, and
    its libfuse answers FUSE_TMPFILE with ENOSYS.  (The guests' /tmp, an overlayfs, served
    this purpose until overlayfs gained O_TMPFILE in 6.6.)  Probed, not assumed: a directory
    that has O_TMPFILE after all is an error.  Unmounted and removed on exit."""
    back, mnt = q(f"{base}-back"), q(f"{base}-fuse")
    vm.run(
        "{ modprobe -q fuse || test -e /dev/fuse; } && "
        f"rm -rf {back} {mnt} && mkdir -m 1777 {back} && mkdir {mnt} && bindfs {back} {mnt}"
    )
    try:
        probe = vm.run(f"{GUEST_PY} -c {q(_TMPFILE_PROBE)} {mnt}").output
        if "probe=EOPNOTSUPP" not in probe:
            raise HarnessError(f"{vm.name}: {base}-fuse (bindfs) should refuse O_TMPFILE: {probe}")
        yield f"{base}-fuse"
    finally:
        # lazily: a receiver being killed may still hold its file there
        vm.run(f"umount -l {mnt}; rm -rf {mnt} {back}", timeout=60.0, check=False)


def listing(vm: Guest, directory: str) -> list[str]:
    """Names in a directory (ls -A1: the console is a tty), sorted."""
    out = vm.run(f"ls -A1 {q(directory)}").output
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
    """Run p2pkp-send on vm to every (guest, port) in peers; verbose: --json (read the
    output with p2pkpvm.scenario.toolout.sent/peers)."""
    cmd = SEND + (" --json" if verbose else "")
    cmd += "".join(f" --to {g.ipv4}:{p}" for g, p in peers)
    if timeout_ms is not None:
        cmd += f" --timeout {timeout_ms}"
    cmd += "".join(f" {q(f)}" for f in files)
    return vm.run(cmd, timeout=timeout, check=check)


@contextmanager
def rate_limited(
    vm: Guest, rate_mbit: float, dev: str = "eth0", queue: int = netem.QUEUE_LIMIT
) -> Iterator[None]:
    """Limit vm's egress on dev with netem so a transfer lasts long enough to be interrupted
    on purpose, whatever the accelerator; removed on exit.  queue: netem's queue in packets
    (the default holds minutes of data at a low rate: a sender's retransmissions then wait
    behind it, and its round trip grows without bound)."""
    link = netem.Link(rate_mbit=rate_mbit)
    vm.run(netem.script(netem.apply_cmds(link, dev, "egress", limit=queue)))
    try:
        yield
    finally:
        vm.run(netem.script(netem.clear_cmds(dev)))
