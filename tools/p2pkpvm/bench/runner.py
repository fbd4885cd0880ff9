"""The matrix of `make bench` on a running cluster: vm1 sends, vm2.. receive.

Each timed run: receivers start (each prints its /proc/stat 'cpu' line before and after),
the sender's page cache is dropped (cold) or filled (warm), then on vm1
`bench-timeit SENDER` measures the wall time from the sender's start until it exits, which
every sender does only after each receiver has confirmed the whole file written and closed
(P2PKP: write() returns when every peer acknowledged the file).  Afterwards every received
file's SHA-256 is compared with the source: a wrong or missing file makes the sample a
failure, never a time.  System calls are counted in separate runs under `strace -f -c`.
"""

from __future__ import annotations

import random
import re
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from p2pkp_guest import wire
from p2pkpvm import paths
from p2pkpvm.bench.hostload import LoadSnapshot, foreign_cpus, snapshot
from p2pkpvm.bench.model import (
    DEFAULT_METHODS,
    METHODS,
    BenchParseError,
    Iperf,
    Sample,
    SyscallSample,
    cpu_seconds,
    parse_iperf,
    parse_sha256,
    parse_timeit,
    parse_total_delta,
    parse_udp_counters,
    parse_wire,
)
from p2pkpvm.errors import HarnessError, VMError
from p2pkpvm.net.mtu import DEFAULT_MTU
from p2pkpvm.scenario.scenario import (
    SEND,
    mcast_group,
    next_port,
    start_receiver,
    transfer_deadline,
)
from p2pkpvm.scenario.scenario import (
    recv_cmd as p2pkp_recv_cmd,
)
from p2pkpvm.scenario.strace import StraceParseError, parse_strace_summary
from p2pkpvm.vm.guest import Guest, Job

KiB, MiB = 1 << 10, 1 << 20
TIMEIT = str(paths.BENCH_TOOLS / "bench-timeit")
UDP = str(paths.BENCH_TOOLS / "bench-udp")
TCP = str(paths.BENCH_TOOLS / "bench-tcp")
WORK = "/tmp/bench"
KEY = f"{WORK}/key"  # P2PKP_KEY of method p2pkp-key, the same on every guest
ZC_PARAM = "/sys/module/p2pkp/parameters/tx_zerocopy"
SRC = f"{WORK}/src"  # ext4 on a loop device, so that drop_caches really makes a cold read
IMG = f"{WORK}/disk.img"
# The sender's NIC counters, printed before and after the timed command (parse_wire).
WIRE = (
    "read p < /sys/class/net/eth0/statistics/tx_packets; "
    "read b < /sys/class/net/eth0/statistics/tx_bytes; echo wire tx_packets=$p tx_bytes=$b"
)
PROC_TOTAL = "grep '^total ' /proc/net/p2pkp"
UDP_MODES = {"udp-rw": "rw", "udp-sendfile": "sendfile", "udp-gso": "gso"}


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[int, ...]
    peers: tuple[int, ...]
    caches: tuple[str, ...]
    reps: int
    methods: tuple[str, ...] = DEFAULT_METHODS
    strace: bool = True
    iperf_seconds: int = 5
    warmup: bool = True  # one round of every method per cell first, not counted
    seed: int = 0  # of the method order within each round (recorded in raw.json)
    mtu: int = DEFAULT_MTU  # of the cluster's links (topology mtu)

    @property
    def payload(self) -> int:
        """Bytes of file per datagram of the UDP baselines and iperf3: P2PKP's chunk on a
        link of this MTU (IPv4, no key), so that every method sends as many datagrams."""
        return wire.chunk_for(self.mtu)


# 6 repetitions: the smallest count whose min-max covers the median with >= 95 % (96.9 %)
FULL = BenchConfig(sizes=(4 * KiB, MiB, 64 * MiB), peers=(1, 2, 3), caches=("cold", "warm"), reps=6)
QUICK = BenchConfig(
    sizes=(4 * KiB, MiB, 8 * MiB), peers=(1, 3), caches=("cold", "warm"), reps=1, iperf_seconds=3
)


def recv_cmd(method: str, port: int, out: str, payload: int) -> str:
    """The receiver of `method`: every one prints a JSON 'listening' event once bound;
    payload: bytes of file per datagram of the UDP baselines."""
    if method in ("p2pkp", "p2pkp-copy", "p2pkp-mcast"):
        return p2pkp_recv_cmd(port, out)
    if method == "p2pkp-key":
        return f"{p2pkp_recv_cmd(port, out)} --key-file {KEY}"
    if method in UDP_MODES:
        return f"{UDP} recv --listen {port} --out {out} --payload {payload} --timeout 60000"
    if method in ("tcp-sendfile", "tcp-sendfile-par"):
        return f"{TCP} recv --listen {port} --out {out} --timeout 60000"
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")


def send_cmd(method: str, addrs: Sequence[str], port: int, path: str, payload: int) -> str:
    to = " ".join(f"--to {a}:{port}" for a in addrs)
    if method == "p2pkp":
        return f"{SEND} {to} {path}"
    if method == "p2pkp-copy":
        return f"{SEND} {to} {path}"
    if method == "p2pkp-mcast":
        return f"{SEND} --group {mcast_group(port)} {to} {path}"
    if method == "p2pkp-key":
        return f"{SEND} --key-file {KEY} {to} {path}"
    if method in UDP_MODES:
        return f"{UDP} send --mode {UDP_MODES[method]} --payload {payload} {to} {path}"
    if method == "tcp-sendfile":
        return f"{TCP} send {to} {path}"
    if method == "tcp-sendfile-par":
        return f"{TCP} send --concurrent {to} {path}"
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")


def zerocopy_cmd(method: str) -> str:
    """The sender's module parameter tx_zerocopy for `method` (read by each write()): off for
    p2pkp-copy, on for the other P2PKP methods; nothing for the baselines."""
    if not method.startswith("p2pkp"):
        return ""
    return f"echo {0 if method == 'p2pkp-copy' else 1} > {ZC_PARAM}; "


def deadline(size: int, peers: int) -> float:
    return transfer_deadline(size, peers)


def src_path(size: int) -> str:
    return f"{SRC}/file-{size}"


def timed_plan(c: BenchConfig) -> list[tuple[int, int, str, int, str]]:
    """(size, peers, cache, rep, method) of every timed run, in order: per cell a warm-up round
    (rep -1, when configured) and then c.reps rounds, each round every method once in an
    order drawn anew (random.Random(c.seed)), so that no method always runs first or right
    after a particular other."""
    rng = random.Random(c.seed)
    plan = []
    for size in c.sizes:
        for peers in c.peers:
            for cache in c.caches:
                for rep in range(-1 if c.warmup else 0, c.reps):
                    order = list(c.methods)
                    rng.shuffle(order)
                    plan += [(size, peers, cache, rep, m) for m in order]
    return plan


class BenchRunner:
    """Runs one configuration's matrix on guests[0] (sender) and guests[1:] (receivers)."""

    def __init__(
        self,
        guests: Sequence[Guest],
        config: BenchConfig,
        progress: Callable[[str], None],
        load: Callable[[], LoadSnapshot] = snapshot,
        receiver_cpu: bool = True,
    ) -> None:
        if len(guests) < 1 + max(config.peers):
            raise ValueError(
                f"{max(config.peers)} peers need {1 + max(config.peers)} guests, got {len(guests)}"
            )
        self.sender = guests[0]
        self.receivers = list(guests[1:])
        self.config = config
        self.progress = progress
        self.load = load
        # False when receivers share guests (namespaces): their /proc/stat is the guest's
        self.receiver_cpu = receiver_cpu
        self.digests: dict[int, str] = {}

    # ---- preparation ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Source files on an ext4 loop mount on the sender, work dirs on the receivers."""
        img_mib = 64 + 2 * sum(self.config.sizes) // MiB
        s = self.sender
        s.run(
            f"modprobe loop && mkdir -p {WORK} {SRC} && truncate -s {img_mib}M {IMG} && "
            f"mkfs.ext4 -q -F {IMG} && mount -o loop {IMG} {SRC}",
            timeout=120,
        )
        for size in self.config.sizes:
            path = src_path(size)
            s.run(f"head -c {size} /dev/urandom > {path} && sync", timeout=deadline(size, 1))
            self.digests[size] = parse_sha256(
                s.run(f"sha256sum {path}", timeout=deadline(size, 1)).output,
                f"{s.name}: sha256sum {path}",
            )
        key = secrets.token_hex(32)
        for vm in [s, *self.receivers]:
            vm.run(f"mkdir -p {WORK} && (umask 077 && echo {key} > {KEY})")

    def cleanup(self) -> None:
        self.sender.run(f"umount {SRC}; rm -rf {WORK}", timeout=60, check=False)
        for vm in self.receivers:
            vm.run(f"rm -rf {WORK}", timeout=60, check=False)

    # ---- one transfer -----------------------------------------------------------------------
    def _start_receivers(
        self, method: str, peers: int, port: int, out: str
    ) -> list[tuple[Guest, Job, str]]:
        """The first `peers` receivers, each writing to `out`-NAME (receivers that are
        namespaces of one guest share its file system)."""
        vms = self.receivers[:peers]

        def start(vm: Guest) -> tuple[Guest, Job, str]:
            path = f"{out}-{vm.name}"
            recv = recv_cmd(method, port, path, self.config.payload)
            cmd = f"rm -f {path}; head -1 /proc/stat; {recv}; rc=$?; head -1 /proc/stat; exit $rc"
            return vm, start_receiver(vm, cmd), path

        with ThreadPoolExecutor(max_workers=min(peers, 16)) as pool:
            return list(pool.map(start, vms))

    def prepare_cache(self, size: int, cache: str) -> None:
        path = src_path(size)
        if cache == "cold":
            self.sender.run("sync && echo 3 > /proc/sys/vm/drop_caches", timeout=60)
        else:
            self.sender.run(f"cat {path} > /dev/null", timeout=deadline(size, 1))

    def _finish(self, jobs: list[tuple[Guest, Job, str]], size: int) -> tuple[float, list[str]]:
        """Wait for the receivers; their busy CPU seconds (0 unless self.receiver_cpu) and
        the errors found (wrong digest, receiver failure)."""
        errors: list[str] = []
        cpu = 0.0

        def finish(item: tuple[Guest, Job, str]) -> tuple[float, str]:
            vm, job, out = item
            try:
                res = job.wait(timeout=deadline(size, 1))
            except HarnessError as exc:
                job.kill("KILL")
                return 0.0, f"{vm.name}: receiver did not finish: {exc}"
            if res.rc != 0:
                return 0.0, f"{vm.name}: receiver exit {res.rc}:\n{res.output[-800:]}"
            got = parse_sha256(
                vm.run(f"sha256sum {out}; rm -f {out}", timeout=deadline(size, 1)).output,
                f"{vm.name}: sha256sum {out}",
            )
            if got != self.digests[size]:
                return 0.0, f"{vm.name}: {out} has SHA-256 {got}, source {self.digests[size]}"
            if not self.receiver_cpu:
                return 0.0, ""
            return cpu_seconds(res.output, f"{vm.name} receiver"), ""

        with ThreadPoolExecutor(max_workers=max(min(len(jobs), 16), 1)) as pool:
            for c, err in pool.map(finish, jobs):
                cpu += c
                if err:
                    errors.append(err)
        return cpu, errors

    def timed(
        self, method: str, size: int, peers: int, cache: str, rep: int, warmup: bool = False
    ) -> Sample:
        port = next_port()
        out = f"{WORK}/recv-{port}"
        addrs = [vm.ipv4 for vm in self.receivers[:peers]]
        jobs = self._start_receivers(method, peers, port, out)
        self.prepare_cache(size, cache)
        send = send_cmd(method, addrs, port, src_path(size), self.config.payload)
        # the P2PKP sender's namespace counters before and after, in the same console round
        total = f"{PROC_TOTAL}; " if method.startswith("p2pkp") else ""
        load0 = self.load()
        res = self.sender.run(
            f"{zerocopy_cmd(method)}{total}{WIRE}; head -1 /proc/stat; {TIMEIT} {send}; "
            "head -1 /proc/stat; "
            f"{WIRE}; {total}",
            timeout=deadline(size, peers),
            check=False,
        )
        load1 = self.load()
        if method.startswith("p2pkp"):
            counters = parse_total_delta(res.output)
        else:
            counters = parse_udp_counters(res.output) if method in UDP_MODES else {}
        counters.update(parse_wire(res.output))
        errors: list[str] = []
        wall = cpu = scpu = 0.0
        try:
            t = parse_timeit(res.output, f"{self.sender.name}: {send}")
            wall, scpu = t.wall_ns / 1e9, (t.utime_us + t.stime_us) / 1e6
            cpu = cpu_seconds(res.output, f"{self.sender.name} sender")
            if t.rc != 0:
                errors.append(f"{self.sender.name}: sender exit {t.rc}:\n{res.output[-800:]}")
        except BenchParseError as exc:
            errors.append(str(exc))
        if errors:  # the receivers may wait for a sender that gave up
            for _vm, job, _out in jobs:
                job.kill("KILL")
        rcpu, rerrors = self._finish(jobs, size)
        errors += rerrors
        return Sample(
            method=method,
            size=size,
            peers=peers,
            cache=cache,
            rep=rep,
            wall_s=wall,
            cpu_s=cpu + rcpu,
            sender_cpu_s=scpu,
            sender_busy_s=cpu,
            ok=not errors,
            error="\n".join(errors),
            warmup=warmup,
            counters=counters,
            loadavg=load0.loadavg1,
            foreign_cpu=round(foreign_cpus(load0, load1), 3),
        )

    def syscalls(self, method: str, size: int, peers: int) -> SyscallSample:
        port = next_port()
        out = f"{WORK}/recv-{port}"
        addrs = [vm.ipv4 for vm in self.receivers[:peers]]
        jobs = self._start_receivers(method, peers, port, out)
        send = send_cmd(method, addrs, port, src_path(size), self.config.payload)
        trace = f"{WORK}/strace-{port}.txt"
        res = self.sender.run(
            f"{zerocopy_cmd(method)}strace -f -c -o {trace} {send}; echo send_rc=$?; cat {trace}",
            timeout=10 * deadline(size, peers),
            check=False,
        )
        errors: list[str] = []
        m = re.search(r"^send_rc=(\d+)", res.output, re.MULTILINE)
        if not m or m[1] != "0":
            errors.append(f"{self.sender.name}: {send} under strace failed:\n{res.output[-800:]}")
            for _vm, job, _out in jobs:
                job.kill("KILL")
        total, calls = 0, {}
        try:
            summary = parse_strace_summary(
                res.output.split("send_rc=", 1)[-1], f"{self.sender.name}: strace -c {send}"
            )
            total = summary.total_calls
            calls = {name: c.calls for name, c in summary.syscalls.items()}
        except StraceParseError as exc:
            errors.append(str(exc))
        _cpu, rerrors = self._finish(jobs, size)
        errors += rerrors
        return SyscallSample(
            method=method,
            size=size,
            peers=peers,
            total=total,
            calls=calls,
            ok=not errors,
            error="\n".join(errors),
        )

    def iperf(self) -> Iperf:
        """iperf3 -u, unlimited rate, vm1 -> vm2, in datagrams as long as the UDP baselines'
        (their 16-byte header + the payload)."""
        server = self.receivers[0]
        job = server.spawn("iperf3 -s -1 -p 5201")
        try:
            # iperf3 block-buffers its output into a file: wait for its socket instead
            limit = time.monotonic() + 60
            while server.run("ss -Hltn 'sport = :5201' | grep -q .", check=False).rc != 0:
                if time.monotonic() > limit:
                    raise VMError(
                        server.name, "iperf3 -s", "not listening within 60 s:\n" + job.output(), ""
                    )
                time.sleep(0.2)
            secs = self.config.iperf_seconds
            extract = (
                "import json,sys; s=json.load(open(sys.argv[1]))['end']['sum']; "
                "print('iperf bps=%s lost_percent=%s' % "
                "(s['bits_per_second'], s.get('lost_percent', 0.0)))"
            )
            js = f"{WORK}/iperf.json"
            dgram = self.config.payload + 16
            res = self.sender.run(
                f"iperf3 -u -b 0 -l {dgram} -t {secs} -c {server.ipv4} -p 5201 --json > {js}; "
                f"python3 -c {shlex.quote(extract)} {js}",
                timeout=secs + 90,
            )
            return parse_iperf(res.output, f"{self.sender.name}: iperf3 -u")
        finally:
            job.kill("KILL")

    # ---- the matrix -------------------------------------------------------------------------
    def run(
        self, on_sample: Callable[[Sample], None], on_syscalls: Callable[[SyscallSample], None]
    ) -> None:
        c = self.config
        timed = timed_plan(c)
        traced = (
            [(m, size, peers) for size in c.sizes for peers in c.peers for m in c.methods]
            if c.strace
            else []
        )
        total = len(timed) + len(traced)
        i = 0
        for size, peers, cache, rep, method in timed:
            i += 1
            t0 = time.monotonic()
            s = self.timed(method, size, peers, cache, rep, warmup=rep < 0)
            verdict = f"{s.wall_s * 1000:.1f} ms" if s.ok else "FAILED: " + s.error.splitlines()[0]
            self.progress(
                f"[{i}/{total}] {method} {size} B -> {peers} peers, {cache}, "
                f"{'warm-up' if rep < 0 else f'rep {rep + 1}'}: {verdict} "
                f"({time.monotonic() - t0:.0f} s, other host load {s.foreign_cpu:.2f} CPUs)"
            )
            on_sample(s)
        for method, size, peers in traced:
            i += 1
            sc = self.syscalls(method, size, peers)
            verdict = f"{sc.total} calls" if sc.ok else "FAILED: " + sc.error.splitlines()[0]
            self.progress(f"[{i}/{total}] strace {method} {size} B -> {peers} peers: {verdict}")
            on_syscalls(sc)
