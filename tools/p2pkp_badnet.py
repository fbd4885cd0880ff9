"""Bad-network scenarios: repeated 1-to-N transfers over impaired links, checked bit for bit.

Used by vmtests/test_badnet.py (fast suite) and vmtests/test_badnet_long.py (issue 4's full
matrix).  Every file is sha256-checked on every receiver; the counters that show the impairment
really happened (netem drops, duplicate datagrams, UDP checksum errors) are read from the guests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from p2pkp_scenario import (
    SEND,
    Guest,
    Scenario,
    next_port,
    parse_received,
    q,
    sha256,
    transfer_deadline,
)

PEER_LINE = re.compile(
    r"^(?:p2pkp-send:)?\s*peer (\S+): (\w+)(?: (\w+) \([^)]*\))?, (\d+) bytes acked, "
    r"(\d+) datagrams sent, (\d+) retransmitted$",
    re.MULTILINE,
)


@dataclass
class PeerLine:
    addr: str
    state: str
    errname: str
    acked: int
    dgrams: int
    retrans: int


def parse_peer_lines(output: str) -> dict[str, PeerLine]:
    """p2pkp-send's per-peer lines (--verbose, or on a failed write) by address."""
    return {
        m[1]: PeerLine(m[1], m[2], m[3] or "", int(m[4]), int(m[5]), int(m[6]))
        for m in PEER_LINE.finditer(output)
    }


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


def netem_drops(vm: Guest) -> int:
    """Datagrams the netem qdiscs of vm (eth0 egress, ifb0 = ingress) dropped so far."""
    out = vm.run(
        "tc -s qdisc show dev eth0; tc -s qdisc show dev ifb0 2>/dev/null; true", timeout=30.0
    ).output
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
    jobs = [scn.receiver(rx, pattern, port, count=rounds, host=host) for rx in rxs]
    addrs = {rx.name: peer_addr(rx, port, ipv6) for rx in rxs}
    report = RoundsReport()
    src = scn.path("src")
    for i in range(1, rounds + 1):
        _, digest = scn.make_file(tx, "src", size)
        cmd = f"{SEND} --verbose" + "".join(f" --to {a}" for a in addrs.values()) + f" {q(src)}"
        res = tx.run(cmd, timeout=transfer_deadline(len(rxs) * size), check=False)
        where = f"round {i}/{rounds}: {tx.name}: {cmd}"
        assert res.rc == 0, f"{where}: exit {res.rc}:\n{res.output}"
        m = re.search(
            rf"^sent \S+ \({size} bytes\) to \d+ peers? in ([\d.]+) ms$", res.output, re.MULTILINE
        )
        assert m, f"{where}: no 'sent' line:\n{res.output}"
        report.ms.append(float(m[1]))
        peers = parse_peer_lines(res.output)
        for rx in rxs:
            p = peers.get(addrs[rx.name])
            assert p is not None, f"{where}: no result line for {addrs[rx.name]}:\n{res.output}"
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
