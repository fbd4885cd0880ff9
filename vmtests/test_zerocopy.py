"""Zero-copy sends (issue 14 item 3, docs/protocol.md 3.3 "Zero-copy sends").

A sender reads each block of new data once into an area whose pages the skbs of every peer
reference (MSG_ZEROCOPY with the module's ubuf_info): an extra peer costs a header, not a copy
of the file.  It does so where a run carries enough datagrams: chunks of some pages (a 9000-byte
link here: topology `jumbo`, both guests' eth0 lowered to 9000), not 1432-byte ones, which copy.
The sender's namespace counter `zc_sends` counts the sends made so; with the module parameter
tx_zerocopy=0 every send copies.  The peers are three receivers on vm2 (three sockets, so three
peer sockets on the sender).  An area outlives its socket while skbs hold it (here: a netem
delay queue), and rmmod waits for the last one instead of leaving the stack a completion into
freed module text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net import netem
from p2pkpvm.net.mtu import link_mtu
from p2pkpvm.scenario.scenario import (
    RECV,
    SEND,
    Guest,
    MiB,
    Scenario,
    module_ko,
    module_param,
    next_port,
    parse_received,
    proc_total,
    q,
    sha256,
    start_receiver,
    transfer_deadline,
)
from p2pkpvm.vm.guest import Job

pytestmark = [pytest.mark.topology("jumbo"), pytest.mark.timeout_s(900)]
KEY = "5a" * 32


@contextmanager
def links_at(cluster: ClusterView, mtu: int) -> Iterator[tuple[Guest, Guest]]:
    """vm1 and vm2 with eth0 at mtu for the block (the topology's 65520 after)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    with ExitStack() as stack:
        for vm in (tx, rx):
            stack.enter_context(link_mtu(vm, mtu))
        yield tx, rx


def receivers(scn: Scenario, rx: Guest, peers: int, key: str) -> list[tuple[int, Job]]:
    """`peers` p2pkp-recv on rx, each on its own port into its own file dst-PORT (with the key
    file key); their ports and jobs."""
    jobs = []
    for _ in range(peers):
        port = next_port()
        opt = f" --key-file {q(key)}" if key else ""
        out = q(scn.path(f"dst-{port}"))
        cmd = f"{RECV} --json --listen 0.0.0.0:{port} --out {out} --count 1{opt}"
        job = start_receiver(rx, cmd)
        scn.jobs.append((rx, job))
        jobs.append((port, job))
    return jobs


def fan_out(
    scn: Scenario, tx: Guest, rx: Guest, size: int, peers: int = 3, key: bool = False
) -> int:
    """size random bytes from tx to `peers` receivers on rx, bit-exact in every one; returns
    how many sends of the sender's namespace were zero-copy (zc_sends) meanwhile."""
    src, digest = scn.make_file(tx, "src", size)
    kf = ""
    if key:
        kf = scn.path("key")
        for vm in (tx, rx):
            vm.run(f"mkdir -p {q(scn.dir)} && echo {KEY} > {q(kf)}")
    jobs = receivers(scn, rx, peers, kf)
    before = proc_total(tx)["zc_sends"]
    to = " ".join(f"--to {rx.ipv4}:{port}" for port, _ in jobs)
    opt = f" --key-file {q(kf)}" if kf else ""
    res = tx.run(f"{SEND}{opt} {to} {q(src)}", timeout=transfer_deadline(size, peers))
    assert res.rc == 0, f"{tx.name}: p2pkp-send exited {res.rc}:\n{res.output}"
    for port, job in jobs:
        dst = scn.path(f"dst-{port}")
        out = job.wait(timeout=60.0)
        assert out.rc == 0, f"{rx.name}: p2pkp-recv :{port} exited {out.rc}:\n{out.output}"
        assert parse_received(out.output) == [(dst, size)], out.output
        assert sha256(rx, dst, size) == digest, f"{rx.name}: {dst} differs"
    return proc_total(tx)["zc_sends"] - before


def test_zerocopy_to_three_peers(scn: Scenario, cluster: ClusterView) -> None:
    """At MTU 9000, 32 MiB from vm1 to three receivers: bit-exact in all three, and the sender
    sent by page reference (zc_sends > 0)."""
    with links_at(cluster, 9000) as (tx, rx):
        zc = fan_out(scn, tx, rx, 32 * MiB)
    assert zc > 0, "no send was zero-copy"


def test_zerocopy_with_key(scn: Scenario, cluster: ClusterView) -> None:
    """With P2PKP_KEY the tags are written next to the headers in the area and sent by
    reference as well: 8 MiB to two peers at MTU 9000, bit-exact, zero-copy sends counted."""
    with links_at(cluster, 9000) as (tx, rx):
        zc = fan_out(scn, tx, rx, 8 * MiB, peers=2, key=True)
    assert zc > 0, "no send was zero-copy"


def test_zerocopy_off_copies(scn: Scenario, cluster: ClusterView) -> None:
    """tx_zerocopy=0: the same transfer at MTU 9000 copies (zc_sends does not move) and is
    bit-exact."""
    with links_at(cluster, 9000) as (tx, rx), module_param(tx, "tx_zerocopy", False):
        zc = fan_out(scn, tx, rx, 8 * MiB, peers=2)
    assert zc == 0, f"{zc} zero-copy sends with tx_zerocopy=0"


def test_small_chunks_copy(scn: Scenario, cluster: ClusterView) -> None:
    """At MTU 1500 (1432-byte chunks) a zero-copy run would carry 6 to 8 datagrams instead of
    32: the sender copies (zc_sends does not move), bit-exact."""
    with links_at(cluster, 1500) as (tx, rx):
        zc = fan_out(scn, tx, rx, 8 * MiB, peers=2)
    assert zc == 0, f"{zc} zero-copy sends of 1432-byte chunks"


def test_rmmod_waits_for_skbs_in_flight(scn: Scenario, cluster: ClusterView) -> None:
    """At MTU 9000 vm1 sends through a 2 s netem delay and is killed mid-transfer: its socket
    closes while skbs in the delay queue still reference zero-copy areas.  rmmod right after
    must succeed (it waits for them), with no oops, and the module loads again."""
    with links_at(cluster, 9000) as (tx, rx):
        src, _ = scn.make_file(tx, "src", 16 * MiB)
        ((port, _job),) = receivers(scn, rx, 1, "")
        tx.run(netem.script(netem.apply_cmds(netem.Link(delay_ms=2000), "eth0", "egress")))
        try:
            before = proc_total(tx)["zc_sends"]
            job = tx.spawn(f"{SEND} --to {rx.ipv4}:{port} {q(src)}")
            zc_now = (
                "awk '/^total /{for(i=2;i<=NF;i++) if ($i ~ /^zc_sends=/) print substr($i,10)}'"
            )
            tx.wait_for(f"test $({zc_now} /proc/net/p2pkp) -gt {before}", timeout=60.0)
            job.kill("KILL")
            res = tx.run(
                "for i in $(seq 200); do pidof p2pkp-send >/dev/null || break; sleep 0.05; done; "
                # the socket's module reference goes a grace period after close
                "for i in $(seq 100); do rmmod p2pkp 2>/dev/null && break; sleep 0.1; done; "
                "if grep -q '^p2pkp ' /proc/modules; then echo still-loaded; "
                "else echo unloaded; fi",
                timeout=120.0,
            )
            assert "unloaded" in res.output, f"{tx.name}: rmmod failed:\n{res.output}"
        finally:
            tx.run(netem.script(netem.clear_cmds("eth0")))
            tx.run(f"grep -q '^p2pkp ' /proc/modules || insmod {module_ko(tx)}")
    assert "p2pkp" in tx.run("cat /proc/modules").output
