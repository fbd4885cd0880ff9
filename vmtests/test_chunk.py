"""Chunk size from the path MTU (issue 14 item 1, docs/protocol.md 3.1 and 3.4).

On topology `jumbo` (links at 65520; a test lowers both guests' eth0 for a smaller MTU), the
sender picks each peer's chunk from its route's MTU, so DATA datagrams fill the link and are
never fragmented; when the path MTU drops in the middle of a transfer (a route with a smaller
MTU, or an ICMP "fragmentation needed" from a router), the peer goes on in a new epoch with a
smaller chunk and the file arrives intact.  The sender's p2pkp-op holds its socket open after
the write, so its /proc/net/p2pkp `peer` line (chunk, epoch, state) can be read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from p2pkp_guest import wire
from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.mtu import link_mtu
from p2pkpvm.scenario.scenario import (
    GUEST_PY,
    Guest,
    MiB,
    OpJob,
    Scenario,
    next_port,
    op,
    proc_total,
    sha256,
    transfer_deadline,
    wait_output,
)
from p2pkpvm.vm.guest import Job

pytestmark = [pytest.mark.topology("jumbo"), pytest.mark.timeout_s(900)]
JUMBO = 65520
SIZE = 64 * MiB


def proc_peers(vm: Guest) -> list[dict[str, str]]:
    """Every `peer` line of vm's /proc/net/p2pkp as key=value pairs."""
    out = vm.run("cat /proc/net/p2pkp", timeout=30.0).output
    return [
        dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
        for line in out.splitlines()
        if line.startswith("peer ")
    ]


def peer_line(vm: Guest, addr: str) -> dict[str, str]:
    """The `peer` line of the sender socket whose peer is addr ("10.99.0.2:7201")."""
    lines = [p for p in proc_peers(vm) if p.get("addr") == addr]
    assert len(lines) == 1, f"{vm.name}: {len(lines)} peer lines for {addr}: {proc_peers(vm)}"
    return lines[0]


@contextmanager
def mtu_everywhere(vms: list[Guest], mtu: int) -> Iterator[None]:
    """Both guests' eth0 at mtu for the block (the topology's 65520 afterwards)."""
    with ExitStack() as stack:
        if mtu != JUMBO:
            for vm in vms:
                stack.enter_context(link_mtu(vm, mtu))
        yield


def sender_job(scn: Scenario, tx: Guest, peer: str, src: str, opts: tuple[str, ...] = ()) -> OpJob:
    """p2pkp-op on tx: a socket with opts, one peer, write(src), then 'sent' and a long sleep
    that keeps the socket (and its /proc peer line) until the test kills it."""
    ops = ["socket", *opts, f"connect:{peer}", f"write:{src}", "echo:sent", "sleep:600000"]
    return scn.op_job(tx, ops, "socket")


def wait_sent(job: OpJob, tx: Guest, rx: Guest, src: str, size: int) -> None:
    """Wait for the write to end; it must have returned the path's length (every peer done).
    On failure the message has both guests' /proc/net/p2pkp."""
    wait_output(job.job, r"\bsent\b", transfer_deadline(size), f"{tx.name}: write({src})")
    calls = [c for c in job.output().calls if c.line.startswith("write ")]
    if not (calls and calls[-1].line.endswith(f"= {len(src)}")):
        procs = "".join(
            f"\n{vm.name} /proc/net/p2pkp:\n{vm.run('cat /proc/net/p2pkp').output}"
            for vm in (tx, rx)
        )
        raise AssertionError(f"{tx.name}:\n{job.output()}{procs}")


def finish(
    scn: Scenario,
    sender: OpJob,
    job: Job,
    tx: Guest,
    rx: Guest,
    addr: str,
    src: str,
    digest: str,
    size: int = SIZE,
) -> dict[str, str]:
    """The write of `size` bytes ends well and the file arrives bit-exact as dst; the
    sender's peer line for addr (read before the sender's socket is closed)."""
    wait_sent(sender, tx, rx, src, size)
    peer = peer_line(tx, addr)
    sender.kill()
    res = job.wait(timeout=transfer_deadline(size))
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    assert sha256(rx, scn.path("dst"), size) == digest, f"{rx.name}: content differs"
    return peer


@pytest.mark.parametrize(
    ("mtu", "ipv6"),
    [(1500, False), (9000, False), (JUMBO, False), (9000, True)],
    ids=["1500", "9000", "65520", "9000-ipv6"],
)
def test_chunk_follows_path_mtu(scn: Scenario, cluster: ClusterView, mtu: int, ipv6: bool) -> None:
    """64 MiB from vm1 to vm2 with both links at `mtu`: the file arrives bit-exact, the peer's
    chunk is what the MTU allows (1432 at 1500, 8932 at 9000, 8912 for IPv6, 65000 at 65520),
    in epoch 0, and no datagram was fragmented (the guests' IP reassembly counters stay)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    with mtu_everywhere([tx, rx], mtu):
        src, digest = scn.make_file(tx, "src", SIZE)
        port = next_port()
        host, addr = ("::", f"[{rx.ipv6}]:{port}") if ipv6 else ("0.0.0.0", f"{rx.ipv4}:{port}")
        frags = "nstat -az IpReasmReqds Ip6ReasmReqds | awk '/Reasm/ {s += $2} END {print s}'"
        before = int(rx.run(frags).output.split()[-1])
        job = scn.receiver(rx, scn.path("dst"), port, host=host)
        sender = sender_job(scn, tx, addr, src)
        peer = finish(scn, sender, job, tx, rx, addr, src, digest)
        want = wire.chunk_for(mtu, ipv6=ipv6)
        assert (peer["state"], peer["chunk"], peer["epoch"]) == ("done", str(want), "0"), peer
        after = int(rx.run(frags).output.split()[-1])
        assert after == before, f"{rx.name}: {after - before} fragments reassembled"


def test_chunk_cap_option(scn: Scenario, cluster: ClusterView) -> None:
    """P2PKP_CHUNK caps the chunk (1000 on a 65520 link); values outside 512..65000 other than
    0 are EINVAL, and the cap is readable back."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    ops = ["socket", "setsockopt:chunk:511", "setsockopt:chunk:65001", "setsockopt:chunk:1000"]
    out = op(tx, [*ops, "getsockopt-raw:300:8:4"])
    assert out.call("setsockopt chunk 511").result == "-1 EINVAL", out
    assert out.call("setsockopt chunk 65001").result == "-1 EINVAL", out
    assert out.call("setsockopt chunk 1000").result == "0", out
    got = out.call("getsockopt-raw 300:8 4")
    assert (got.result, got.extra.get("data")) == ("0", "e8030000"), out  # 1000, host order
    size = 3 * MiB + 17
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    addr = f"{rx.ipv4}:{port}"
    job = scn.receiver(rx, scn.path("dst"), port)
    sender = sender_job(scn, tx, addr, src, ("setsockopt:chunk:1000",))
    wait_sent(sender, tx, rx, src, size)
    peer = peer_line(tx, addr)
    sender.kill()
    assert job.wait(timeout=120.0).rc == 0
    assert sha256(rx, scn.path("dst")) == digest
    assert (peer["state"], peer["chunk"]) == ("done", "1000"), peer


def _drop_mid_transfer(scn: Scenario, cluster: ClusterView, how: str) -> None:
    """64 MiB from vm1 to vm2 at MTU 9000, paced so that it lasts ~11 s; once a quarter of it
    has arrived, the path MTU drops to 1500 (`how`: route or icmp).  The file arrives
    bit-exact; the peer ends in epoch >= 1 with the 1500-byte chunk; both ends count the new
    epoch."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    quarter = SIZE // 4
    with mtu_everywhere([tx, rx], 9000), ExitStack() as stack:
        src, digest = scn.make_file(tx, "src", SIZE)
        port = next_port()
        addr = f"{rx.ipv4}:{port}"
        before_tx, before_rx = proc_total(tx), proc_total(rx)
        job = scn.receiver(rx, scn.path("dst"), port)
        stack.callback(tx.run, "ip route flush cache", check=False)
        if how == "icmp":
            # as a router would: learns the flow from its first datagram, and sends the
            # error once a quarter of the file arrived (started first: Python is slow here)
            icmp = scn.spawn(
                rx,
                f"{GUEST_PY} -m p2pkp_guest.icmp --port {port} --mtu 1500 "
                f"--after-received {quarter}",
            )
            wait_output(icmp, r"^listening", 120.0, f"{rx.name}: the ICMP tool")
        ops = ("setsockopt:rate:6000000", f"connect:{addr}", f"write:{src}", "echo:sent")
        sender = scn.op_job(tx, ["socket", *ops, "sleep:600000"], "socket")
        if how == "route":
            tx.wait_for(
                f"until [ $(awk '/^total/ {{for (i = 2; i <= NF; i++) if ($i ~ "
                f'/^bytes_sent=/) {{sub(/.*=/, "", $i); print $i}}}}\' /proc/net/p2pkp) -ge '
                f"{before_tx['bytes_sent'] + quarter} ]; do sleep 0.2; done",
                timeout=120.0,
            )
            stack.callback(tx.run, f"ip route del {rx.ipv4}/32 dev eth0", check=False)
            tx.run(f"ip route replace {rx.ipv4}/32 dev eth0 mtu lock 1500")
        else:
            wait_output(icmp, r"^icmp frag-needed", 120.0, f"{rx.name}: the ICMP")
            # the sender's kernel took it: the route to the peer has a PMTU exception
            route = tx.run(f"ip route get {rx.ipv4}").output
            assert "mtu 1500" in route, f"{tx.name}: the ICMP did not lower the path MTU:\n{route}"
        # the drop came while DATA was still going
        assert peer_line(tx, addr)["state"] == "data", peer_line(tx, addr)
        peer = finish(scn, sender, job, tx, rx, addr, src, digest)
        assert peer["state"] == "done" and peer["chunk"] == str(wire.chunk_for(1500)), peer
        assert int(peer["epoch"]) >= 1, peer
        after_tx, after_rx = proc_total(tx), proc_total(rx)
        assert after_tx["epochs"] - before_tx["epochs"] >= 1, (before_tx, after_tx)
        assert after_rx["epochs"] - before_rx["epochs"] >= 1, (before_rx, after_rx)


def test_path_mtu_drop_route_mid_transfer(scn: Scenario, cluster: ClusterView) -> None:
    """The route to the peer gets MTU 1500 (locked) while 64 MiB go at 9000: new epoch."""
    _drop_mid_transfer(scn, cluster, "route")


def test_path_mtu_drop_icmp_mid_transfer(scn: Scenario, cluster: ClusterView) -> None:
    """An ICMP "fragmentation needed, next hop 1500" for the flow arrives while 64 MiB go at
    9000 (sent from the receiver's guest, as a router would): new epoch, file intact."""
    _drop_mid_transfer(scn, cluster, "icmp")


def test_path_mtu_drop_receiver_starts_over(scn: Scenario, cluster: ClusterView) -> None:
    """The path MTU drops while the sender's link is cut for longer than the receiver's
    timeout (2 s): the sender enters the new epoch, its STARTs are lost, the receiver
    abandons the transfer.  When the link comes back, the receiver accepts the new epoch's
    START as a new transfer from base 0; the sender takes that base (below what it had
    acknowledged) and sends the whole file again: it arrives bit-exact, and the write does
    not hang on START_ACKs it refuses (as it did with a lower bound on base)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size = 16 * MiB
    with mtu_everywhere([tx, rx], 9000), ExitStack() as stack:
        src, digest = scn.make_file(tx, "src", size)
        port = next_port()
        addr = f"{rx.ipv4}:{port}"
        before_tx, before_rx = proc_total(tx), proc_total(rx)
        job = scn.receiver(rx, scn.path("dst"), port, timeout_ms=2000)
        stack.callback(tx.run, "ip route flush cache", check=False)
        ops = ("setsockopt:rate:3000000", f"connect:{addr}", f"write:{src}", "echo:sent")
        sender = scn.op_job(tx, ["socket", *ops, "sleep:600000"], "socket")
        tx.wait_for(
            f"until [ $(awk '/^total/ {{for (i = 2; i <= NF; i++) if ($i ~ "
            f'/^bytes_sent=/) {{sub(/.*=/, "", $i); print $i}}}}\' /proc/net/p2pkp) -ge '
            f"{before_tx['bytes_sent'] + size // 4} ]; do sleep 0.2; done",
            timeout=120.0,
        )
        # cut vm1's egress, then narrow the route: the next send starts the new epoch
        stack.callback(tx.run, "tc qdisc del dev eth0 root", check=False)
        tx.run("tc qdisc replace dev eth0 root netem loss 100%")
        stack.callback(tx.run, f"ip route del {rx.ipv4}/32 dev eth0", check=False)
        tx.run(f"ip route replace {rx.ipv4}/32 dev eth0 mtu lock 1500")
        rx.wait_for(
            "awk '/^total/ {for (i = 2; i <= NF; i++) if ($i ~ /^xfers_abandoned=/) "
            f'{{sub(/.*=/, "", $i); exit !($i > {before_rx["xfers_abandoned"]})}}}}\' '
            "/proc/net/p2pkp",
            timeout=60.0,
        )
        assert peer_line(tx, addr)["state"] == "data", peer_line(tx, addr)
        tx.run("tc qdisc del dev eth0 root")
        peer = finish(scn, sender, job, tx, rx, addr, src, digest, size)
        assert peer["state"] == "done" and peer["chunk"] == str(wire.chunk_for(1500)), peer
        after_rx = proc_total(rx)
        assert after_rx["files_received"] - before_rx["files_received"] == 1, after_rx
