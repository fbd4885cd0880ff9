"""The ping probe of the bad-network matrix, on captured guest output (no guest needed)."""

from __future__ import annotations

from pathlib import Path

from p2pkpvm.scenario.badnet import PingProbe, parse_ping, reorder_evidence

DATA = Path(__file__).parent / "data" / "ping"


def captured() -> PingProbe:
    # vm1 -> vm3 through 'delay 5ms reorder 25%' on both directions (6.1 guests, TCG):
    # 200 pings at -i 0.002 took 1737 ms, so none overtook another.
    return parse_ping((DATA / "reorder25-delay5-tcg.txt").read_text())


def test_parse_ping_reads_every_reply_in_arrival_order() -> None:
    probe = captured()
    assert len(probe.seqs) == len(probe.rtts_ms) == 200
    assert probe.seqs[:4] == [1, 2, 3, 4]
    assert probe.rtt_min_ms == 0.501


def test_reordering_shows_without_out_of_order_replies() -> None:
    """The capture that failed the old check (0 replies out of order) proves reordering by
    its round trips: 9 of 200 skipped the 5 ms delay on both hops, the others waited."""
    probe = captured()
    assert probe.out_of_order == 0
    assert probe.faster_than(5) == 9
    assert reorder_evidence(probe, 5) is None


def test_no_reordering_is_reported() -> None:
    probe = captured()
    # Every round trip waited (delay only): as if the floor were below the fastest reply.
    only_delay = PingProbe(probe.output, [t + 5 for t in probe.rtts_ms], sorted(probe.seqs))
    why = reorder_evidence(only_delay, 5)
    assert why is not None and "0 of 200 round trips under 5 ms" in why
    # Nothing waited (no netem at all).
    no_netem = PingProbe(probe.output, [0.4] * 200, sorted(probe.seqs))
    assert reorder_evidence(no_netem, 5) is not None
    # A delay floor of 0 (jitter == delay) leaves only out-of-order replies as evidence.
    assert reorder_evidence(probe, 0) is not None


def test_out_of_order_replies_are_evidence_enough() -> None:
    probe = parse_ping(
        "64 bytes from 10.99.0.2: icmp_seq=2 ttl=64 time=6.1 ms\n"
        "64 bytes from 10.99.0.2: icmp_seq=1 ttl=64 time=11.0 ms\n"
    )
    assert probe.out_of_order == 1
    assert reorder_evidence(probe, 5) is None
