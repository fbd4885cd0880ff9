"""Bad networks (issue 4), fast suite: vm1 sends to vm2, vm3, vm4 over impaired links.

The impairment is netem inside each *receiver*, on both directions of its link (p2pkpvm.net.netem):
data to it and its ACKs cross one impaired hop each; the sender's own link is clean.  Reduced
matrix: 1 transfer of 2 MiB per link (the 20 x 8 MiB campaign and IPv6 single peer under loss
are in test_badnet_long.py; a clean IPv6 single peer is test_transfer.py's).  Each
test also checks that the impairment really happened (netem drops, duplicate datagrams seen by
the receivers, UDP checksum errors), so a silently clean link cannot pass for a bad one.
"""

from __future__ import annotations

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.impair import impair, link_cut
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.badnet import LINKS, parse_peer_lines, peer_addr, run_link_matrix
from p2pkpvm.scenario.scenario import SEND, MiB, Scenario, next_port, q, sha256

ROUNDS = 1
SIZE = 2 * MiB


# The delayed link (RTT 100 ms, jitter reordering it) costs 37 s of the suite's 30 minutes:
# in the fast suite only under --long, with the whole matrix (test_badnet_long.py).
SLOW_LINKS = {"delay50j20"}


@pytest.mark.timeout_s(900)
@pytest.mark.parametrize(
    "link",
    [pytest.param(k, marks=pytest.mark.long) if k in SLOW_LINKS else k for k in LINKS],
)
def test_badnet_multipeer(scn: Scenario, cluster: ClusterView, link: str) -> None:
    """2 MiB to 3 peers over each link of issue 4's matrix: bit-exact everywhere."""
    run_link_matrix(scn, cluster, link, ROUNDS, SIZE)


@pytest.mark.timeout_s(600)
def test_badnet_ipv6_multipeer_loss5(scn: Scenario, cluster: ClusterView) -> None:
    """IPv6, vm1 -> vm2, vm3, vm4 with 5% loss on every receiver's link: bit-exact."""
    run_link_matrix(scn, cluster, "loss5", 1, SIZE, ipv6=True)


@pytest.mark.timeout_s(600)
def test_badnet_dead_peer_link_cut(scn: Scenario, cluster: ClusterView) -> None:
    """vm4's link is cut mid-transfer: vm2 and vm3 get the file bit-exact; write fails with
    ETIMEDOUT after P2PKP_PEER_TIMEOUT (3 s) and the per-peer results name vm4; vm4 abandons
    the transfer without leaving a partial file."""
    tx = cluster["vm1"]
    good = [cluster["vm2"], cluster["vm3"]]
    dead = cluster["vm4"]
    size = 8 * MiB
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    dst = scn.path("dst")
    jobs = {rx.name: scn.receiver(rx, dst, port, timeout_ms=3000) for rx in [*good, dead]}
    addrs = {rx.name: peer_addr(rx, port, False) for rx in [*good, dead]}
    # vm4's inbound link at 8 Mbit/s: its 8 MiB need > 8 s, so the cut lands mid-transfer on
    # any accelerator, while vm2 and vm3 go at full speed (a slow peer does not hold them).
    with impair(dead, rate_mbit=8, direction="ingress"):
        cmd = (
            f"{SEND} --json --timeout 3000"
            + "".join(f" --to {a}" for a in addrs.values())
            + f" {q(src)}"
        )
        sender = scn.spawn(tx, cmd)
        dead.wait_for(
            "grep -qE '^sock .*role=receiver state=receiving.* bytes_received=[1-9]' "
            "/proc/net/p2pkp",
            timeout=120.0,
        )
        with link_cut(dead):
            res = sender.wait(timeout=300.0)
    out = res.output
    assert res.rc == 1, f"{tx.name}: p2pkp-send should fail (exit 1), exit {res.rc}:\n{out}"
    assert [(e.call, e.arg, e.errno) for e in toolout.errors(out)] == [
        ("write", src, "ETIMEDOUT")
    ], f"{tx.name}: no 'write ... ETIMEDOUT' error:\n{out}"
    peers = parse_peer_lines(out)
    failed = peers.get(addrs["vm4"])
    assert failed is not None and (failed.state, failed.errname) == ("FAILED", "ETIMEDOUT"), (
        f"{tx.name}: vm4 ({addrs['vm4']}) not reported FAILED ETIMEDOUT:\n{out}"
    )
    assert failed.acked < size, f"vm4 acked everything ({failed}): the cut was too late"
    for rx in good:
        p = peers.get(addrs[rx.name])
        assert p is not None and (p.state, p.acked) == ("DONE", size), (
            f"{rx.name} ({addrs[rx.name]}) not DONE with {size} bytes:\n{out}"
        )
        r = jobs[rx.name].wait(timeout=60.0)
        assert r.rc == 0, f"{rx.name}: p2pkp-recv exited {r.rc}:\n{r.output}"
        assert sha256(rx, dst, size) == digest, f"{rx.name}: content differs"
    # vm4's receiver abandons the silent transfer (its 3 s peer timeout), removes the partial
    # file and, as documented, its read() goes on waiting for a new transfer (the socket is
    # still there, state=waiting; the scenario's teardown kills p2pkp-recv).
    dead.wait_for(
        "grep -qE '^sock .*role=receiver state=waiting.* xfers_abandoned=1( |$)' /proc/net/p2pkp",
        timeout=60.0,
    )
    left = dead.run(f"ls -A {q(scn.dir)}").output.split()
    assert left == [], f"vm4: files left after the abandoned transfer: {left}"
