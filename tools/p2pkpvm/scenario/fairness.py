"""Fairness on a shared bottleneck (issue 15): two flows from two senders into one receiver host.

The receiver's incoming link is capped (netem `rate` on its ingress, a queue of QUEUE_PKTS
datagrams: `p2pkpvm.net.netem`); flow A is a P2PKP transfer, flow B either a TCP flow (iperf3)
or a second P2PKP transfer.  Each sender measures its own flow over the same window with its own
clock: LEAD_S seconds after both are running, for `window_s` seconds.

* P2PKP: the bytes its peer acknowledged (/proc/net/p2pkp `peer ... acked=`) at the window's two
  ends, read in the sender guest (one shell line: no console round trip inside the window).
* TCP: iperf3 -J's one-second intervals that lie inside the window.

A share is one flow's rate over the sum of both.  Everything here but `measure` is pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from p2pkpvm.errors import HarnessError
from p2pkpvm.net.impair import impair
from p2pkpvm.net.netem import Link
from p2pkpvm.scenario.scenario import SEND, MiB, Scenario, next_port, q
from p2pkpvm.vm.guest import Guest, Job

RATE_MBIT = 20.0
# The bottleneck's queue: 100 datagrams (~60 ms at 20 Mbit/s), a router-like buffer; netem's
# default of 1000 would let either flow hide its losses in a 600 ms queue.
QUEUE_PKTS = 100
LEAD_S = 3.0  # both flows run this long before the window opens
SHORT_S = 10.0  # the always-run window
LONG_S = 30.0  # the window (marker long, and make lossbench)
SHARE_MIN, SHARE_MAX = 1 / 3, 2 / 3
FILE_SIZE = 64 * MiB  # outlasts a 30 s window at two thirds of 20 Mbit/s
Against = Literal["tcp", "p2pkp"]

PEER_RE = re.compile(r"^peer (.*)$", re.MULTILINE)
WINDOW_RE = re.compile(r"^fair ns=(\d+) bytes=(-?\d+)\s*$", re.MULTILINE)
CC_KEYS = ("cwnd", "ssthresh", "srtt_us", "losses", "timeouts", "undos", "retrans", "sent")


class FairnessError(HarnessError):
    """A measurement that cannot be read (the message has the guest's output)."""


def bottleneck(rate_mbit: float = RATE_MBIT) -> Link:
    return Link(rate_mbit=rate_mbit)


def peer_lines(proc: str) -> list[dict[str, str]]:
    """Every `peer` line of /proc/net/p2pkp as key -> value."""
    return [dict(w.split("=", 1) for w in m[1].split() if "=" in w) for m in PEER_RE.finditer(proc)]


def acked_script() -> str:
    """Shell printing the sum of `acked=` over the peer lines of /proc/net/p2pkp."""
    return (
        "awk '/^peer /{for(i=2;i<=NF;i++) if ($i ~ /^acked=/) a+=substr($i,7)} "
        "END{print a+0}' /proc/net/p2pkp"
    )


def window_script(lead_s: float, window_s: float) -> str:
    """Shell measuring the acked bytes of this guest's P2PKP peers over a window, then printing
    `fair ns=N bytes=B` and the peer lines (their congestion state at the window's end)."""
    a = acked_script()
    return (
        f"sleep {lead_s:g}; a0=$({a}); t0=$(date +%s%N); sleep {window_s:g}; "
        f'a1=$({a}); t1=$(date +%s%N); echo "fair ns=$((t1 - t0)) bytes=$((a1 - a0))"; '
        "grep '^peer ' /proc/net/p2pkp"
    )


@dataclass(frozen=True)
class Flow:
    """One flow's measured rate and what its sender said about it."""

    name: str  # e.g. "p2pkp vm1->vm3"
    bytes_per_s: float
    cc: dict[str, str]  # the P2PKP peer's congestion state at the window's end (empty: TCP)

    def describe(self) -> str:
        cc = " ".join(f"{k}={self.cc[k]}" for k in CC_KEYS if k in self.cc)
        return f"{self.name}: {self.bytes_per_s * 8 / 1e6:.2f} Mbit/s" + (f" ({cc})" if cc else "")


def parse_window(name: str, text: str) -> Flow:
    """The Flow of a window_script() run's output."""
    m = WINDOW_RE.search(text)
    if m is None:
        raise FairnessError(f"{name}: no 'fair ns=... bytes=...' line in:\n{text}")
    ns, nbytes = int(m[1]), int(m[2])
    peers = peer_lines(text[m.end() :])
    if ns <= 0 or nbytes <= 0 or len(peers) != 1:
        raise FairnessError(f"{name}: {nbytes} bytes in {ns} ns, {len(peers)} peers:\n{text}")
    if peers[0].get("state") != "data":
        raise FairnessError(
            f"{name}: the transfer was no longer sending at the window's end (state="
            f"{peers[0].get('state')}): the file is too small for the window:\n{text}"
        )
    return Flow(name, nbytes / (ns / 1e9), peers[0])


def parse_iperf_window(name: str, text: str, lead_s: float, window_s: float) -> Flow:
    """The rate of iperf3 -J's intervals inside [lead_s, lead_s + window_s]."""
    try:
        doc = json.loads(text[text.index("{") :])
        spans = [(i["sum"]["start"], i["sum"]["end"], i["sum"]["bytes"]) for i in doc["intervals"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise FairnessError(f"{name}: iperf3 -J output unreadable ({exc}):\n{text}") from exc
    inside = [
        (s, e, b) for s, e, b in spans if s >= lead_s - 0.05 and e <= lead_s + window_s + 0.05
    ]
    secs = sum(e - s for s, e, _ in inside)
    if secs < window_s / 2:
        raise FairnessError(
            f"{name}: iperf3 covered {secs:.1f} s of the {window_s:g} s window:\n{text}"
        )
    return Flow(name, sum(b for _, _, b in inside) / secs, {})


@dataclass(frozen=True)
class Shares:
    a: Flow
    b: Flow
    capacity_bps: float  # bytes/s of the bottleneck

    @property
    def share_a(self) -> float:
        return self.a.bytes_per_s / (self.a.bytes_per_s + self.b.bytes_per_s)

    @property
    def utilisation(self) -> float:
        return (self.a.bytes_per_s + self.b.bytes_per_s) / self.capacity_bps

    def describe(self) -> str:
        return (
            f"{self.a.describe()}\n{self.b.describe()}\n"
            f"share of the first {self.share_a:.1%}, link used {self.utilisation:.0%}"
        )


def _acked_positive(vm: Guest, timeout: float) -> None:
    vm.wait_for(f'[ "$({acked_script()})" -gt 0 ]', timeout=timeout)


def _p2pkp_flow(scn: Scenario, tx: Guest, rx: Guest, src: str) -> Job:
    port = next_port()
    scn.receiver(rx, scn.path(f"dst-{tx.name}"), port)
    return scn.spawn(tx, f"{SEND} --json --to {rx.ipv4}:{port} {q(src)}")


@contextmanager
def capped(rx: Guest, rate_mbit: float = RATE_MBIT) -> Iterator[None]:
    """rx's incoming link capped at rate_mbit with a QUEUE_PKTS-datagram queue."""
    with impair(rx, bottleneck(rate_mbit), direction="ingress", limit=QUEUE_PKTS):
        yield


def measure_vs_tcp(
    scn: Scenario, tx: Guest, tcp_tx: Guest, rx: Guest, src: str, window_s: float
) -> Shares:
    """P2PKP tx -> rx against iperf3 TCP tcp_tx -> rx through rx's capped ingress (the caller
    holds capped(rx)); src is a file on tx large enough to outlast the window."""
    iport = next_port()
    scn.spawn(rx, f"iperf3 -s -1 -p {iport}")
    rx.wait_for(f"ss -ltn | grep -q ':{iport} '", timeout=30.0)
    send = _p2pkp_flow(scn, tx, rx, src)
    _acked_positive(tx, 60.0)
    total = 2 * LEAD_S + window_s
    tcp = scn.spawn(tcp_tx, f"iperf3 -c {rx.ipv4} -p {iport} -t {total:g} -i 1 -J")
    win = scn.spawn(tx, window_script(LEAD_S, window_s))
    a = parse_window(f"p2pkp {tx.name}->{rx.name}", _finished(win, tx, window_s))
    b = parse_iperf_window(
        f"tcp {tcp_tx.name}->{rx.name}", _finished(tcp, tcp_tx, total), LEAD_S, window_s
    )
    send.kill()
    return Shares(a, b, RATE_MBIT * 1e6 / 8)


def measure_two_senders(
    scn: Scenario, tx_a: Guest, tx_b: Guest, rx: Guest, srcs: tuple[str, str], window_s: float
) -> Shares:
    """Two P2PKP transfers, tx_a -> rx and tx_b -> rx, through rx's capped ingress."""
    sends = [_p2pkp_flow(scn, tx, rx, src) for tx, src in zip((tx_a, tx_b), srcs, strict=True)]
    for tx in (tx_a, tx_b):
        _acked_positive(tx, 60.0)
    wins = [scn.spawn(tx, window_script(LEAD_S, window_s)) for tx in (tx_a, tx_b)]
    a, b = (
        parse_window(f"p2pkp {tx.name}->{rx.name}", _finished(w, tx, window_s))
        for tx, w in zip((tx_a, tx_b), wins, strict=True)
    )
    for s in sends:
        s.kill()
    return Shares(a, b, RATE_MBIT * 1e6 / 8)


def run(scn: Scenario, against: Against, a: Guest, b: Guest, rx: Guest, window_s: float) -> Shares:
    """One whole fairness run: P2PKP a -> rx (a FILE_SIZE file) against TCP or a second P2PKP
    transfer b -> rx, through rx's capped ingress, measured over window_s."""
    src_a = scn.make_file(a, "src", FILE_SIZE)[0]
    if against == "tcp":
        with capped(rx):
            return measure_vs_tcp(scn, a, b, rx, src_a, window_s)
    src_b = scn.make_file(b, "src", FILE_SIZE)[0]
    with capped(rx):
        return measure_two_senders(scn, a, b, rx, (src_a, src_b), window_s)


def _finished(job: Job, vm: Guest, window_s: float) -> str:
    res = job.wait(timeout=window_s + 2 * LEAD_S + 60.0)
    if res.rc != 0:
        raise FairnessError(f"{vm.name}: measurement exited {res.rc}:\n{res.output}")
    return res.output
