"""Rate cap (P2PKP_RATE): the option round-trips and a capped transfer is paced and intact.

The cap is a timing property: the test asserts only what does not depend on the machine's
speed (the option value, bit-exact delivery, that the sender stopped for tokens: the
`rate_waits` counter) and prints the measured rate.
"""

from __future__ import annotations

import re
import time

import pytest

from p2pkpvm.cluster.cluster import ClusterView
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


def test_rate_capped_transfer(scn: Scenario, cluster: ClusterView) -> None:
    """vm1 sends 2 MiB to vm2 with --rate 1M: bit-exact, and the sender waited for tokens."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size, rate = 2 * MiB, 1_000_000
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    job = scn.receiver(rx, scn.path("dst"), port)
    waits0 = proc_total(tx)["rate_waits"]
    t0 = time.monotonic()
    tx.run(
        f"{SEND} --rate 1M --to {rx.ipv4}:{port} {q(src)}",
        timeout=transfer_deadline(size) + 2 * size / rate,
    )
    elapsed = time.monotonic() - t0
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    assert parse_received(res.output) == [(scn.path("dst"), size)], res.output
    assert sha256(rx, scn.path("dst"), size) == digest, f"{rx.name}: content differs"
    waits = proc_total(tx)["rate_waits"] - waits0
    assert waits > 0, f"{tx.name}: rate_waits did not grow: the cap never held the sender back"
    print(
        f"rate cap {rate} B/s: 2 MiB in {elapsed:.2f} s (console round-trip included) "
        f"= {size / elapsed:.0f} B/s, rate_waits={waits}"
    )
