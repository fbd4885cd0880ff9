"""Rate cap (P2PKP_RATE): the option round-trips and a capped transfer is paced and intact.

The cap is a timing property: the test asserts what a slow machine cannot fake, a lower bound
on the transfer time (the cap is an upper bound on the rate; slowness only lengthens the
time), bit-exact delivery and that the sender stopped for tokens (`rate_waits`).
"""

from __future__ import annotations

import re

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import (
    SEND,
    MiB,
    Scenario,
    next_port,
    op,
    parse_received,
    proc_total,
    q,
    sha256,
    transfer_deadline,
)

pytestmark = pytest.mark.topology("pair")


def test_rate_option_roundtrip(cluster: ClusterView, p2pkp: ClusterView) -> None:
    """P2PKP_RATE defaults to 0 (no cap), reads back what was set; a short optlen is EINVAL."""
    cases = [
        ("socket", r"\d+"),
        ("getsockopt:rate", r"0 value=0"),
        ("setsockopt:rate:1500000", r"0"),
        ("getsockopt:rate", r"0 value=1500000"),
        ("setsockopt-raw:300:4:00000000", r"-1 EINVAL"),  # optlen 4 < 8
        ("getsockopt-raw:300:4:4", r"-1 EINVAL"),
    ]
    out = op(cluster["vm1"], [c for c, _ in cases])
    lines = [line for line in out.splitlines() if " = " in line]
    assert len(lines) == len(cases), out
    for (call, want), line in zip(cases, lines, strict=True):
        got = line.split(" = ", 1)[1]
        assert re.fullmatch(want, got), f"{call}: expected {want}, got {line}\n{out}"


# The token bucket may start full: at most BURST_S seconds' worth of bytes leave unpaced
# (the module's burst is rate/64; this bound leaves room for a larger one).
BURST_S = 0.125


def test_rate_capped_transfer(scn: Scenario, cluster: ClusterView) -> None:
    """vm1 sends 2 MiB to vm2 with --rate 1M: it takes at least (size - burst) / rate, the
    file is bit-exact, and the sender waited for tokens."""
    size, rate = 2 * MiB, 1_000_000
    secs, waits = capped_send(scn, cluster, size, rate)
    floor_s = size / rate - BURST_S
    assert secs >= floor_s, (
        f"vm1: {size} bytes at a cap of {rate} B/s took {secs * 1000:.0f} ms (kernel, START "
        f"to end) < {floor_s:.2f} s: the cap did not hold"
    )
    assert waits > 0, "vm1: rate_waits did not grow: the cap never held the sender back"
    print(
        f"rate cap {rate} B/s: 2 MiB in {secs:.2f} s (kernel) = {size / secs:.0f} B/s, "
        f"rate_waits={waits}"
    )


ACCURACY = 0.05  # issue 15: the cap within 5 % over a 10 s transfer
# At 1 Mbit/s the bucket holds two chunks: runs of half of it keep the rate within 2.5 %; runs
# of the whole bucket lost the lateness of every wake-up (measured -3.1 %, TCG).
ACCURACY_1MBIT = 0.025


def capped_send(scn: Scenario, cluster: ClusterView, size: int, rate: int) -> tuple[float, int]:
    """vm1 -> vm2, size bytes at a cap of rate B/s, bit-exact: (the kernel's transfer time in
    s, rate_waits meanwhile)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, f"src-{rate}", size)
    port = next_port()
    dst = scn.path(f"dst-{rate}")
    job = scn.receiver(rx, dst, port)
    waits0 = proc_total(tx)["rate_waits"]
    out = tx.run(
        f"{SEND} --json --rate {rate} --to {rx.ipv4}:{port} {q(src)}",
        timeout=transfer_deadline(size) + 2 * size / rate,
    ).output
    (sent,) = toolout.sent(out)
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    assert parse_received(res.output) == [(dst, size)], res.output
    assert sha256(rx, dst, size) == digest, f"{rx.name}: content differs"
    return sent.ms / 1000, proc_total(tx)["rate_waits"] - waits0


def test_rate_accurate_at_1mbit(scn: Scenario, cluster: ClusterView) -> None:
    """A cap of 1 Mbit/s (125,000 B/s) on a 10 s transfer: the rate (file bytes over the
    kernel's START-to-end time) is within 2.5 % of the cap (the issue asks 5 %), both ways."""
    rate = 125_000
    size = 10 * rate
    secs, waits = capped_send(scn, cluster, size, rate)
    got = size / secs
    print(f"cap {rate} B/s: {size} bytes in {secs:.3f} s = {got:.0f} B/s, rate_waits={waits}")
    assert abs(got / rate - 1) <= ACCURACY_1MBIT, (
        f"cap {rate} B/s, measured {got:.0f} B/s ({got / rate - 1:+.1%}): not within "
        f"{ACCURACY_1MBIT:.1%}"
    )


def test_rate_1gbit_never_holds_below_it(scn: Scenario, cluster: ClusterView) -> None:
    """A cap of 1 Gbit/s (125 MB/s), above what a TCG guest sends: the transfer never goes
    faster than the cap, and whenever the cap held the sender back (rate_waits > 0) it still
    reached 95 % of it: the cap costs nothing where the link is slower."""
    rate = 125_000_000
    size = 32 * MiB
    secs, waits = capped_send(scn, cluster, size, rate)
    got = size / secs
    print(f"cap {rate} B/s: {size} bytes in {secs:.3f} s = {got:.0f} B/s, rate_waits={waits}")
    assert got <= rate * (1 + ACCURACY), f"{got:.0f} B/s is above the cap of {rate} B/s"
    assert waits == 0 or got >= rate * (1 - ACCURACY), (
        f"the cap held the sender back {waits} times at {got:.0f} B/s, below 95 % of {rate}"
    )
