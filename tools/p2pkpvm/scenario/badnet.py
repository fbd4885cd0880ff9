"""Bad-network scenarios: repeated 1-to-N transfers over impaired links, checked bit for bit.

Used by vmtests/test_badnet.py (fast suite) and vmtests/test_badnet_long.py (issue 4's full
matrix).  Every file is sha256-checked on every receiver; the counters that show the impairment
really happened (netem drops, duplicate datagrams, UDP checksum errors) are read from the guests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.impair import clear, impair
from p2pkpvm.net.netem import REORDER_DELAY_MS, Link
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import (
    SEND,
    Guest,
    Scenario,
    next_port,
    parse_received,
    proc_total,
    q,
    sha256,
    transfer_deadline,
)
from p2pkpvm.scenario.toolout import Peer as PeerLine

__all__ = [
    "LINKS",
    "PeerLine",
    "parse_peer_lines",
    "peer_addr",
    "run_link_matrix",
    "transfer_rounds",
]


def parse_peer_lines(output: str) -> dict[str, PeerLine]:
    """p2pkp-send --json's per-peer results by address."""
    return toolout.peers(output)


def peer_addr(vm: Guest, port: int, ipv6: bool) -> str:
    """The address as p2pkp-send takes and prints it."""
    if ipv6:
        addr = getattr(vm, "ipv6", None)
        if not addr:
            raise AssertionError(f"{vm.name} has no IPv6 address in this topology")
        return f"[{addr}]:{port}"
    return f"{vm.ipv4}:{port}"


def udp_csum_errors(vm: Guest) -> int:
    """UDP (v4 + v6) datagrams vm dropped for a bad checksum since boot."""
    out = vm.run(
        "awk '/^Udp: / { n++; if (n == 1) split($0, k); else for (i in k) "
        'if (k[i] == "InCsumErrors") s += $i } '
        "END { print s + 0 }' /proc/net/snmp; "
        "awk '$1 == \"Udp6InCsumErrors\" { print $2 }' /proc/net/snmp6",
        timeout=30.0,
    ).output
    return sum(int(w) for w in out.split() if w.isdigit())


def netem_drops(vm: Guest, ingress_only: bool = False) -> int:
    """Datagrams the netem qdiscs of vm (eth0 egress, ifb0 = ingress; ingress_only: ifb0's)
    dropped so far."""
    eth0 = "" if ingress_only else "tc -s qdisc show dev eth0; "
    out = vm.run(f"{eth0}tc -s qdisc show dev ifb0 2>/dev/null; true", timeout=30.0).output
    return parse_netem_drops(out)


def parse_netem_drops(text: str) -> int:
    """Sum of `dropped N` over the netem qdiscs of `tc -s qdisc show` output."""
    total = 0
    for block in re.split(r"^qdisc ", text, flags=re.MULTILINE):
        if block.startswith("netem "):
            m = re.search(r"\(dropped (\d+),", block)
            total += int(m[1]) if m else 0
    return total


@dataclass
class RoundsReport:
    """What a series of transfers did (for the test's printout; never asserted on timing)."""

    ms: list[float] = field(default_factory=list)
    dgrams: int = 0
    retrans: int = 0

    def summary(self, size: int, npeers: int) -> str:
        if not self.ms:
            return "no transfers"
        avg = sum(self.ms) / len(self.ms)
        mbs = size / (avg / 1000) / 1e6 if avg else 0.0
        return (
            f"{len(self.ms)} x {size} bytes to {npeers} peers: avg {avg:.0f} ms "
            f"({mbs:.2f} MB/s goodput per peer), {self.dgrams} datagrams sent, "
            f"{self.retrans} retransmitted"
        )


def transfer_rounds(
    scn: Scenario,
    tx: Guest,
    rxs: Sequence[Guest],
    rounds: int,
    size: int,
    ipv6: bool = False,
) -> RoundsReport:
    """`rounds` transfers of a fresh random `size`-byte file from tx to every rx.

    Each round is one p2pkp-send (one write) to all receivers; every receiver's copy is
    sha256-checked, then deleted (guests keep /tmp in RAM).
    """
    port = next_port()
    host = "::" if ipv6 else "0.0.0.0"
    pattern = scn.path("in-%03d")
    jobs = scn.receivers(rxs, pattern, port, count=rounds, host=host)
    addrs = {rx.name: peer_addr(rx, port, ipv6) for rx in rxs}
    report = RoundsReport()
    src = scn.path("src")
    for i in range(1, rounds + 1):
        _, digest = scn.make_file(tx, "src", size)
        cmd = f"{SEND} --json" + "".join(f" --to {a}" for a in addrs.values()) + f" {q(src)}"
        res = tx.run(cmd, timeout=transfer_deadline(size, len(rxs)), check=False)
        where = f"round {i}/{rounds}: {tx.name}: {cmd}"
        assert res.rc == 0, f"{where}: exit {res.rc}:\n{res.output}"
        files = toolout.sent(res.output)
        assert [f.size for f in files] == [size], f"{where}: no 'sent' event:\n{res.output}"
        report.ms.append(files[0].ms)
        for rx in rxs:
            p = files[0].results.get(addrs[rx.name])
            assert p is not None, f"{where}: no result for {addrs[rx.name]}:\n{res.output}"
            assert (p.state, p.acked) == ("DONE", size), f"{where}: {rx.name}: {p}"
            report.dgrams += p.dgrams
            report.retrans += p.retrans
        name = scn.path(f"in-{i:03d}")
        for rx in rxs:
            scn_wait_file(rx, name, size, f"round {i}/{rounds}")
            got = sha256(rx, name, size)
            assert got == digest, f"round {i}/{rounds}: {rx.name}: {name} differs from {src}"
            rx.run(f"rm -f {q(name)}")
    for rx, job in zip(rxs, jobs, strict=True):
        res = job.wait(timeout=60.0)
        assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
        got_names = [p for p, _ in parse_received(res.output)]
        want = [scn.path(f"in-{i:03d}") for i in range(1, rounds + 1)]
        assert got_names == want, f"{rx.name}: p2pkp-recv said:\n{res.output}"
    return report


def scn_wait_file(rx: Guest, name: str, size: int, where: str) -> None:
    """The receiver's read() has returned once the final name has the full size."""
    try:
        rx.wait_for(f"test $(stat -c %s {q(name)} 2>/dev/null || echo -1) -eq {size}", 60.0)
    except Exception as exc:
        raise AssertionError(f"{where}: {rx.name}: {name} never reached {size} bytes") from exc


@dataclass
class PingProbe:
    """`ping` through an impaired link: round trips, and replies in arrival order."""

    output: str
    rtts_ms: list[float]
    seqs: list[int]

    @property
    def rtt_min_ms(self) -> float:
        return min(self.rtts_ms) if self.rtts_ms else float("nan")

    @property
    def out_of_order(self) -> int:
        """Replies that arrived after one with a higher sequence number."""
        highest, late = -1, 0
        for s in self.seqs:
            if s < highest:
                late += 1
            highest = max(highest, s)
        return late

    def faster_than(self, ms: float) -> int:
        """Round trips shorter than ms."""
        return sum(1 for t in self.rtts_ms if t < ms)

    def describe(self) -> str:
        return (
            f"{len(self.seqs)} replies, min rtt {self.rtt_min_ms:.1f} ms, "
            f"{self.out_of_order} out of order"
        )


def reorder_evidence(probe: PingProbe, delay_ms: float) -> str | None:
    """Why probe shows no netem reordering on a link delayed by delay_ms (both directions),
    or None when it does.

    netem reorders by sending a share of the packets at once while the rest wait delay_ms.
    Replies overtaking each other need pings sent less than delay_ms apart, which TCG does not
    promise (200 pings at 2 ms took 1.7 s, 8.7 ms apart: 0 of 200 out of order, captured).
    What reordering always shows is round trips both faster and slower than delay_ms: a
    fast one skipped the delay on both hops (25 %: 1 in 16), a slow one waited.  With jitter,
    pass the delay's floor (delay - jitter)."""
    if probe.out_of_order:
        return None
    fast = probe.faster_than(delay_ms)
    if delay_ms > 0 and 0 < fast < len(probe.rtts_ms):
        return None
    return (
        f"no reply out of order and {fast} of {len(probe.rtts_ms)} round trips under "
        f"{delay_ms:g} ms (some must skip the delay, others wait)"
    )


PING_RE = re.compile(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms")


def parse_ping(output: str) -> PingProbe:
    found = [(int(m[1]), float(m[2])) for m in PING_RE.finditer(output)]
    return PingProbe(output, [t for _, t in found], [s for s, _ in found])


def ping_probe(src: Guest, addr: str, count: int = 200, interval_s: float = 0.002) -> PingProbe:
    """`count` pings from src to addr, `interval_s` apart (shorter than any delay of LINKS, so
    a delayed request or reply is overtaken by the next when reordering happens)."""
    res = src.run(
        f"ping -n -c {count} -i {interval_s} -W 2 {addr}", timeout=60.0 + count * 0.1, check=False
    )
    probe = parse_ping(res.output)
    assert probe.seqs, f"{src.name}: ping {addr} got no reply:\n{res.output}"
    return probe


RECEIVERS = ("vm2", "vm3", "vm4")
# issue 4 item 6: the links of the matrix, applied to every receiver (vm4 alone for one_peer).
LINKS: dict[str, dict[str, Link]] = {
    "loss5": {rx: Link(loss_pct=5) for rx in RECEIVERS},
    "reorder25": {rx: Link(reorder_pct=25, delay_ms=5) for rx in RECEIVERS},
    "dup5": {rx: Link(duplicate_pct=5) for rx in RECEIVERS},
    "corrupt1": {rx: Link(corrupt_pct=1) for rx in RECEIVERS},
    "delay50j20": {rx: Link(delay_ms=50, jitter_ms=20) for rx in RECEIVERS},
    "onepeer_loss10": {"vm4": Link(loss_pct=10)},
}


def run_link_matrix(
    scn: Scenario,
    cluster: ClusterView,
    link: str,
    rounds: int,
    size: int,
    ipv6: bool = False,
) -> None:
    """`rounds` x `size` to the three receivers with LINKS[link]; checks the link was bad:
    netem drops and retransmissions (loss), duplicates seen (duplication), checksum errors
    (corruption), out-of-order ping replies (reordering), round trips (delay)."""
    tx = cluster["vm1"]
    rxs = [cluster[n] for n in RECEIVERS]
    for vm in [tx, *rxs]:
        if vm.name not in LINKS[link]:
            clear(vm)  # clean links are really clean (fails if an impairment is left)
    before = {rx.name: (proc_total(rx), udp_csum_errors(rx)) for rx in rxs}
    with ExitStack() as stack:
        for name, lk in LINKS[link].items():
            stack.enter_context(impair(cluster[name], lk))
        probes = {
            name: ping_probe(tx, cluster[name].ipv4)
            for name, lk in LINKS[link].items()
            if lk.delay_ms or lk.reorder_pct
        }
        report = transfer_rounds(scn, tx, rxs, rounds, size, ipv6=ipv6)
        drops = {name: netem_drops(cluster[name]) for name in LINKS[link]}
    after = {rx.name: (proc_total(rx), udp_csum_errors(rx)) for rx in rxs}
    dups = sum(after[n][0]["drop_dup"] - before[n][0]["drop_dup"] for n in after)
    csum = sum(after[n][1] - before[n][1] for n in after)
    print(
        f"\n{link}: {report.summary(size, len(rxs))}; netem drops {drops}, "
        f"duplicates dropped by receivers {dups}, UDP checksum errors {csum}; ping "
        + ", ".join(f"{n}: {p.describe()}" for n, p in probes.items())
    )
    lk = next(iter(LINKS[link].values()))
    if lk.loss_pct:
        assert all(d > 0 for d in drops.values()), f"{link}: netem dropped nothing: {drops}"
        assert report.retrans > 0, f"{link}: nothing was retransmitted despite loss"
    if lk.duplicate_pct:
        assert dups > 0, f"{link}: receivers saw no duplicate datagram"
    if lk.corrupt_pct:
        assert csum > 0, f"{link}: no UDP checksum error: corruption was not applied"
    for name, probe in probes.items():
        plk = LINKS[link][name]
        if plk.delay_ms and not plk.reorder_pct:
            # Both directions of the receiver's link are delayed: a round trip crosses two
            # impaired hops, each at least delay - jitter (with reordering, the reordered
            # share skips the delay: no floor then, the out-of-order replies prove it).
            floor = 2 * (plk.delay_ms - plk.jitter_ms)
            assert probe.rtt_min_ms >= floor, (
                f"{link}: {name}: ping round trip {probe.rtt_min_ms:.1f} ms < {floor:g} ms: "
                f"the delay was not applied:\n{probe.output}"
            )
        if plk.reorder_pct:
            delay = plk.delay_ms or REORDER_DELAY_MS
            why = reorder_evidence(probe, delay - plk.jitter_ms)
            assert why is None, (
                f"{link}: {name}: reordering was not applied: {why}:\n{probe.output}"
            )
