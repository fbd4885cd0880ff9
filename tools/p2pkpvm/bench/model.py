"""Result model of `make bench`: samples, parsers of guest output, JSON/CSV, aggregation."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from p2pkpvm.errors import HarnessError

USER_HZ = 100  # /proc/stat unit on x86_64 Linux

METHODS = (
    "p2pkp",
    "p2pkp-key",
    "udp-rw",
    "udp-sendfile",
    "udp-gso",
    "tcp-sendfile",
    "tcp-sendfile-par",
    "p2pkp-copy",
    "p2pkp-mcast",
)
# The methods of `make bench` unless --methods names others (the concurrent TCP sender and
# P2PKP to a multicast group are the scaling matrix's: at 1-3 peers they add little beside
# the sequential one and plain P2PKP; P2PKP without zero-copy sends is make bench-mtu's).
DEFAULT_METHODS = METHODS[:6]
METHOD_LABELS = {
    "p2pkp": "P2PKP",
    "p2pkp-key": "P2PKP with P2PKP_KEY",
    "udp-rw": "UDP read/sendto",
    "udp-sendfile": "UDP sendfile/datagram",
    "udp-gso": "UDP GSO",
    "tcp-sendfile": "TCP sendfile",
    "tcp-sendfile-par": "TCP sendfile, concurrent",
    "p2pkp-copy": "P2PKP, tx_zerocopy=0",
    "p2pkp-mcast": "P2PKP to a multicast group",
}


class BenchParseError(HarnessError, ValueError):
    """Guest output that does not have the expected form."""


@dataclass(frozen=True)
class Timeit:
    wall_ns: int
    rc: int
    utime_us: int
    stime_us: int


TIMEIT_RE = re.compile(
    r"^timeit wall_ns=(\d+) rc=(\d+) utime_us=(\d+) stime_us=(\d+)\s*$", re.MULTILINE
)


def parse_timeit(text: str, where: str = "bench-timeit output") -> Timeit:
    """The last 'timeit ...' line of bench-timeit."""
    found = TIMEIT_RE.findall(text)
    if not found:
        raise BenchParseError(f"{where}: no 'timeit wall_ns=...' line in:\n{text[-1500:]}")
    w, rc, u, s = (int(x) for x in found[-1])
    return Timeit(wall_ns=w, rc=rc, utime_us=u, stime_us=s)


@dataclass(frozen=True)
class CpuTicks:
    """The aggregate 'cpu' line of /proc/stat: busy (all but idle, iowait) and total ticks."""

    busy: int
    total: int


CPU_RE = re.compile(r"^cpu\s+(\d+(?:\s+\d+)+)\s*$", re.MULTILINE)


def parse_cpu_lines(text: str, where: str = "/proc/stat") -> list[CpuTicks]:
    """Every aggregate 'cpu ...' line of /proc/stat found in text, in order."""
    out = []
    for m in CPU_RE.finditer(text):
        v = [int(x) for x in m[1].split()]
        if len(v) < 8:
            raise BenchParseError(f"{where}: 'cpu' line with {len(v)} fields: {m[0]!r}")
        # user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
        idle = v[3] + v[4]
        total = sum(v[:8])
        out.append(CpuTicks(busy=total - idle, total=total))
    return out


def cpu_seconds(text: str, where: str) -> float:
    """Busy CPU seconds between the first and the last 'cpu' line of /proc/stat in text."""
    lines = parse_cpu_lines(text, where)
    if len(lines) < 2:
        raise BenchParseError(f"{where}: expected two /proc/stat 'cpu' lines, got {len(lines)}")
    return (lines[-1].busy - lines[0].busy) / USER_HZ


SHA_RE = re.compile(r"^([0-9a-f]{64})\s", re.MULTILINE)


def parse_sha256(text: str, where: str) -> str:
    m = SHA_RE.search(text)
    if not m:
        raise BenchParseError(f"{where}: no SHA-256 in {text[-500:]!r}")
    return m[1]


IPERF_RE = re.compile(r"^iperf bps=([0-9.eE+]+) lost_percent=([0-9.eE+-]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Iperf:
    """iperf3 -u between two guests: offered rate and loss; `rate` is what arrived."""

    sender_bps: float
    lost_percent: float

    @property
    def received_bps(self) -> float:
        return self.sender_bps * (1.0 - self.lost_percent / 100.0)


UDP_SENT_RE = re.compile(
    r"^sent \S+ \d+ bytes to \d+ peers mode=\S+ datagrams=(\d+) timeouts=(\d+)", re.M
)


def parse_udp_counters(text: str) -> dict[str, int]:
    """bench-udp's own counters from its 'sent ...' line: datagrams (of the file, once) and
    timeouts (go-back rounds: each resends from the slowest peer's first missing datagram);
    empty when the line is missing (the sample then fails on its exit status)."""
    m = UDP_SENT_RE.search(text)
    return {"datagrams": int(m[1]), "timeouts": int(m[2])} if m else {}


TOTAL_RE = re.compile(r"^total (\S.*)$", re.MULTILINE)


def parse_total_delta(text: str) -> dict[str, int]:
    """The counters that changed between the first and the last `total` line of
    /proc/net/p2pkp in text (empty without two lines)."""
    found = TOTAL_RE.findall(text)
    if len(found) < 2:
        return {}

    def counters(line: str) -> dict[str, int]:
        return {k: int(v) for k, v in (w.split("=", 1) for w in line.split() if "=" in w)}

    before, after = counters(found[0]), counters(found[-1])
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k)}


WIRE_RE = re.compile(r"^wire tx_packets=(\d+) tx_bytes=(\d+)\s*$", re.MULTILINE)


def parse_wire(text: str) -> dict[str, int]:
    """What the sender's NIC sent between the first and the last 'wire tx_packets=N
    tx_bytes=N' line: wire_packets, wire_bytes (empty without two lines)."""
    found = WIRE_RE.findall(text)
    if len(found) < 2:
        return {}
    (p0, b0), (p1, b1) = found[0], found[-1]
    return {"wire_packets": int(p1) - int(p0), "wire_bytes": int(b1) - int(b0)}


def parse_iperf(text: str, where: str = "iperf3") -> Iperf:
    m = IPERF_RE.search(text)
    if not m:
        raise BenchParseError(f"{where}: no 'iperf bps=... lost_percent=...' line in:\n{text}")
    return Iperf(sender_bps=float(m[1]), lost_percent=float(m[2]))


@dataclass(frozen=True)
class Sample:
    """One timed transfer: method, file size, peers, page cache state, repetition."""

    method: str
    size: int
    peers: int
    cache: str  # "cold" | "warm"
    rep: int
    wall_s: float
    cpu_s: float  # busy CPU seconds on the sender and the receivers involved
    sender_cpu_s: float  # the sender process's user + system time (rusage)
    ok: bool
    error: str = ""
    warmup: bool = False  # the cell's warm-up round: kept in raw.json, left out of every table
    counters: dict[str, int] = field(default_factory=dict)  # the sender's own (2.6 of README)
    loadavg: float = -1.0  # the host's 1-minute load average just before the sample
    foreign_cpu: float = -1.0  # host CPUs busy with work not of this bench during the sample
    # busy CPU seconds of the sender's guest (its kernel's work too: P2PKP sends from a
    # kworker, outside the process's rusage); -1 in older raw.json
    sender_busy_s: float = -1.0


@dataclass(frozen=True)
class SyscallSample:
    method: str
    size: int
    peers: int
    total: int
    calls: dict[str, int]
    ok: bool
    error: str = ""


@dataclass
class BenchRun:
    meta: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    syscalls: list[SyscallSample] = field(default_factory=list)
    iperf: Iperf | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "meta": self.meta,
                "samples": [asdict(s) for s in self.samples],
                "syscalls": [asdict(s) for s in self.syscalls],
                "iperf": asdict(self.iperf) if self.iperf else None,
            },
            indent=1,
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> BenchRun:
        d = json.loads(text)
        ip = d.get("iperf")
        return BenchRun(
            meta=d["meta"],
            samples=[Sample(**s) for s in d["samples"]],
            syscalls=[SyscallSample(**s) for s in d["syscalls"]],
            iperf=Iperf(**ip) if ip else None,
        )

    def samples_csv(self) -> str:
        buf = io.StringIO()
        names = list(Sample.__dataclass_fields__)
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for s in self.samples:
            row = asdict(s)
            row["counters"] = json.dumps(s.counters, sort_keys=True)
            w.writerow(row)
        return buf.getvalue()


@dataclass(frozen=True)
class Row:
    """One table row: a (method, size, peers, cache) cell over its repetitions."""

    method: str
    size: int
    peers: int
    cache: str
    n_ok: int
    n_failed: int
    wall_med: float | None
    wall_min: float | None
    wall_max: float | None
    wall_lo: float | None  # the distribution-free interval of the median (median_ci)
    wall_hi: float | None
    ci_level: float | None  # its confidence, e.g. 0.9375 for n = 5, >= 0.95 from n = 6
    cpu_med: float | None
    syscalls: int | None

    @property
    def throughput_bps(self) -> float | None:
        """Bytes delivered (size x peers) per second of median wall time."""
        if not self.wall_med:
            return None
        return self.size * self.peers / self.wall_med


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """A distribution-free confidence interval of the median: the order statistics
    x_(k) and x_(n+1-k) (1-based) with the largest k whose coverage 1 - 2 P(X <= k-1),
    X ~ Binomial(n, 1/2), is at least `level`.  Below 6 samples no k reaches 95 %: the
    interval is then min-max and its coverage (93.75 % for 5, 87.5 % for 4) says so.
    None for no sample."""
    n = len(values)
    if n == 0:
        return None
    xs = sorted(values)
    best = 1
    for k in range(1, n // 2 + 1):
        if 1 - 2 * _binom_cdf_half(k - 1, n) >= level:
            best = k
    return xs[best - 1], xs[n - best], 1 - 2 * _binom_cdf_half(best - 1, n)


def timed_samples(run: BenchRun) -> list[Sample]:
    """The samples that count: every one but the warm-up rounds."""
    return [s for s in run.samples if not s.warmup]


def aggregate(run: BenchRun) -> list[Row]:
    """Rows sorted by size, peers, cache, method order; failed samples are counted, not timed;
    warm-up rounds are left out."""
    samples = timed_samples(run)
    keys = sorted(
        {(s.method, s.size, s.peers, s.cache) for s in samples},
        key=lambda k: (k[1], k[2], k[3], METHODS.index(k[0]) if k[0] in METHODS else 99),
    )
    sc = {(s.method, s.size, s.peers): s.total for s in run.syscalls if s.ok}
    rows = []
    for method, size, peers, cache in keys:
        cell = [
            s
            for s in samples
            if (s.method, s.size, s.peers, s.cache) == (method, size, peers, cache)
        ]
        good = [s for s in cell if s.ok]
        walls = [s.wall_s for s in good]
        ci = median_ci(walls)
        rows.append(
            Row(
                method=method,
                size=size,
                peers=peers,
                cache=cache,
                n_ok=len(good),
                n_failed=len(cell) - len(good),
                wall_med=statistics.median(walls) if walls else None,
                wall_min=min(walls) if walls else None,
                wall_max=max(walls) if walls else None,
                wall_lo=ci[0] if ci else None,
                wall_hi=ci[1] if ci else None,
                ci_level=ci[2] if ci else None,
                cpu_med=statistics.median([s.cpu_s for s in good]) if good else None,
                syscalls=sc.get((method, size, peers)),
            )
        )
    return rows
