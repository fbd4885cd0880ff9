"""Batched receive (issue 14 item 5, docs/protocol.md 3.3 "Batched receives").

A receiver's UDP socket has UDP_GRO, so datagrams of one sender that arrive together come in
one receive; payloads that continue each other in the file are written with one write.  The
receiver's namespace counters say how it went: `gro_receives` (receives that returned several
datagrams), `file_writes` (writes of received data), `dgrams_received` (each datagram).  With
the module parameter rx_gro=0 every datagram comes alone and every payload is its own write,
exactly one per chunk of the file: the counters are exact, so the batching is measured, not
guessed.
"""

from __future__ import annotations

from p2pkp_guest import wire
from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.impair import impair
from p2pkpvm.net.netem import Link
from p2pkpvm.scenario.scenario import (
    Guest,
    MiB,
    Scenario,
    module_param,
    next_port,
    parse_received,
    proc_total,
    send,
    sha256,
    transfer_deadline,
)

SIZE = 32 * MiB
CHUNK = wire.chunk_for(1500)
CHUNKS = -(-SIZE // CHUNK)


def transfer(scn: Scenario, tx: Guest, rx: Guest, size: int = SIZE) -> dict[str, int]:
    """size random bytes from tx to rx, bit-exact; the receiver namespace's counter deltas."""
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    before = proc_total(rx)
    job = scn.receiver(rx, scn.path("dst"), port)
    send(tx, [(rx, port)], [src], timeout=transfer_deadline(size))
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    assert parse_received(res.output) == [(scn.path("dst"), size)], res.output
    assert sha256(rx, scn.path("dst"), size) == digest, f"{rx.name}: content differs"
    after = proc_total(rx)
    return {k: after[k] - before.get(k, 0) for k in after}


def test_gro_receives_and_writes_runs(scn: Scenario, cluster: ClusterView) -> None:
    """32 MiB from vm1 to vm2 on a clean 1500-byte link: the file arrives bit-exact, receives
    returned several datagrams (gro_receives > 0), and the file took fewer writes than half
    its chunks (one write per chunk before this change)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    d = transfer(scn, tx, rx)
    assert d["bytes_received"] == SIZE, d
    assert d["dgrams_received"] >= CHUNKS, d
    assert d["gro_receives"] > 0, f"{rx.name}: no receive returned several datagrams: {d}"
    assert d["file_writes"] < CHUNKS // 2, f"{rx.name}: {CHUNKS} chunks in writes: {d}"


def test_without_gro_one_write_per_chunk(scn: Scenario, cluster: ClusterView) -> None:
    """rx_gro=0 on vm2: no receive returns several datagrams and each of the file's chunks is
    written alone, exactly once (duplicates are not written)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    with module_param(rx, "rx_gro", False):
        d = transfer(scn, tx, rx)
    assert d["gro_receives"] == 0, d
    assert d["file_writes"] == CHUNKS, d


def test_gro_under_loss_and_reordering(scn: Scenario, cluster: ClusterView) -> None:
    """16 MiB from vm1 to vm2 with 2 % loss and 10 % reordering on vm1's egress: batches carry
    gaps and out-of-order chunks, the file still arrives bit-exact, and each chunk is written
    once: no more writes than chunks."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size = 16 * MiB
    with impair(tx, Link(loss_pct=2.0, reorder_pct=10.0), direction="egress"):
        d = transfer(scn, tx, rx, size)
    assert d["dgrams_received"] >= -(-size // CHUNK), d
    assert 0 < d["file_writes"] <= -(-size // CHUNK), d
