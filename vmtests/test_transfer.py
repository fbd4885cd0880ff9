"""Single-peer transfers: sizes around the datagram payload, several files, two senders."""

from __future__ import annotations

import re

import pytest

from p2pkp_guest import wire
from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import (
    SEND,
    MiB,
    Scenario,
    listing,
    next_port,
    op,
    op_result,
    parse_received,
    send,
    sha256,
    transfer_deadline,
)

# the chunk of a 1500-byte IPv4 link (docs/protocol.md 3.4): sizes around one datagram
CHUNK = wire.chunk_for(1500)


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        1 * MiB,
        pytest.param(64 * MiB, marks=pytest.mark.timeout_s(900), id="64MiB"),
    ],
)
def test_single_peer_sizes(scn: Scenario, cluster: ClusterView, size: int) -> None:
    """vm1 sends one file of `size` bytes to vm2: same sha256, nothing else in the directory."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    job = scn.receiver(rx, scn.path("dst"), port)
    send(tx, [(rx, port)], [src], timeout=transfer_deadline(size))
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    assert parse_received(res.output) == [(scn.path("dst"), size)], res.output
    assert sha256(rx, scn.path("dst"), size) == digest, f"{rx.name}: content differs"
    assert listing(rx, scn.dir) == ["dst"], f"{rx.name}: leftovers besides the file"


def test_several_files_one_socket(scn: Scenario, cluster: ClusterView) -> None:
    """One p2pkp-send (one socket) with 4 files: they arrive in order, each intact."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    sizes = [3 * CHUNK, 0, 100_000, 1]
    files = [scn.make_file(tx, f"src{i}", n) for i, n in enumerate(sizes)]
    port = next_port()
    rx.run(f"mkdir -p {scn.path('in')}")
    job = scn.receiver(rx, scn.path("in"), port, count=len(files))
    send(tx, [(rx, port)], [p for p, _ in files], timeout=120.0)
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    names = [scn.path(f"in/file-{i:04d}") for i in range(1, len(files) + 1)]
    assert parse_received(res.output) == list(zip(names, sizes, strict=True)), res.output
    for name, (_, digest) in zip(names, files, strict=True):
        assert sha256(rx, name) == digest, f"{rx.name}: {name} differs"


def test_two_senders_one_receiver(scn: Scenario, cluster: ClusterView) -> None:
    """vm1 and vm3 send at once to one socket on vm2: both files arrive, one per read()."""
    a, rx, b = cluster["vm1"], cluster["vm2"], cluster["vm3"]
    size = 2 * MiB
    src_a, dig_a = scn.make_file(a, "from-a", size)
    src_b, dig_b = scn.make_file(b, "from-b", size + 7)
    port = next_port()
    rx.run(f"mkdir -p {scn.path('in')}")
    job = scn.receiver(rx, scn.path("in"), port, count=2)
    cmd = "{} --to {}:{} {}"
    ja = scn.spawn(a, cmd.format(SEND, rx.ipv4, port, src_a))
    jb = scn.spawn(b, cmd.format(SEND, rx.ipv4, port, src_b))
    for vm, j in ((a, ja), (b, jb)):
        r = j.wait(timeout=transfer_deadline(2 * size))
        assert r.rc == 0, f"{vm.name}: p2pkp-send exited {r.rc}:\n{r.output}"
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    got = parse_received(res.output)
    assert sorted(n for _, n in got) == [size, size + 7], res.output
    digests = {sha256(rx, path) for path, _ in got}
    assert digests == {dig_a, dig_b}, f"{rx.name}: received files differ from the sent ones"


def test_empty_file_read_returns_zero(scn: Scenario, cluster: ClusterView) -> None:
    """read() of a 0-byte file returns 0 and leaves an empty file under the final name."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, _ = scn.make_file(tx, "empty", 0)
    port = next_port()
    dst = scn.path("dst")
    job = scn.op_job(
        rx, ["socket", f"bind:0.0.0.0:{port}", f"read:{dst}"], f"bind 0.0.0.0:{port} = 0"
    )
    out = op(tx, ["socket", f"connect:{rx.ipv4}:{port}", f"write:{src}"])
    assert op_result(out, f"write {src}") == str(len(src)), out
    res = job.wait(timeout=60.0)
    assert op_result(res.output, f"read {dst}") == "0", res.output
    assert rx.run(f"stat -c %s {dst}").output.strip() == "0"


def test_single_peer_ipv6(scn: Scenario, cluster: ClusterView) -> None:
    """vm1 sends to vm2 over IPv6 (sockaddr_in6 for connect and bind): same sha256."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    assert rx.ipv6, f"{rx.name} has no IPv6 address in this topology"
    src, digest = scn.make_file(tx, "src", 100_000)
    port = next_port()
    job = scn.receiver(rx, scn.path("dst"), port, host="::")
    tx.run(f"{SEND} --to [{rx.ipv6}]:{port} {src}", timeout=120.0)
    res = job.wait(timeout=60.0)
    assert res.rc == 0, f"{rx.name}: p2pkp-recv exited {res.rc}:\n{res.output}"
    assert sha256(rx, scn.path("dst")) == digest, f"{rx.name}: content differs"


def test_recvmsg_names_the_sender(scn: Scenario, cluster: ClusterView) -> None:
    """recvmsg() returns the size and fills msg_name with the sender's address."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 5000)
    port = next_port()
    dst = scn.path("dst")
    ops = ["socket", f"bind:0.0.0.0:{port}", f"recvmsg:{dst}", "getsockopt:last_transfer"]
    job = scn.op_job(rx, ops, f"bind 0.0.0.0:{port} = 0")
    send(tx, [(rx, port)], [src], timeout=60.0)
    out = job.wait(timeout=60.0).output
    call = out.call(f"recvmsg {dst}")
    sender = str(call.extra.get("from", ""))
    assert (call.ret, call.extra.get("namelen")) == (5000, 16), f"{rx.name}: recvmsg:\n{out}"
    assert sender.startswith(f"{tx.ipv4}:"), f"{rx.name}: recvmsg said:\n{out}"
    info = re.search(
        r"^getsockopt last_transfer = 0 peer=(\S+) .*size=5000 .*status=OK "
        r"digest=([0-9a-f]{64})$",
        out,
        re.M,
    )
    assert info and info[1] == sender, f"{rx.name}: last_transfer said:\n{out}"
    assert info[2] == digest, "P2PKP_LAST_TRANSFER digest is not the file's SHA-256"
    assert sha256(rx, dst) == digest


def test_send_relative_names_made_absolute(scn: Scenario, cluster: ClusterView) -> None:
    """p2pkp-send turns a relative FILE into an absolute path (getcwd) before write()."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    _, digest = scn.make_file(tx, "rel.bin", 3000)
    port = next_port()
    job = scn.receiver(rx, scn.path("dst"), port)
    # A subshell: the console shell's own directory must not change (it is removed later).
    tx.run(f"(cd {scn.dir} && {SEND} --to {rx.ipv4}:{port} ./rel.bin)", timeout=60.0)
    assert job.wait(timeout=60.0).rc == 0
    assert sha256(rx, scn.path("dst")) == digest
