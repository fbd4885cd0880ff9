"""Descriptors instead of paths (issue 17, item 4; docs/protocol.md 1.6): a sender hands an open
file with SCM_RIGHTS, a receiver hands an open file (an O_TMPFILE) with P2PKP_RECV_FD and names
it itself; permissions are the descriptor's."""

from __future__ import annotations

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import (
    AS_NOBODY,
    OP,
    MiB,
    Scenario,
    listing,
    next_port,
    op,
    op_result,
    parse_received,
    q,
    rate_limited,
    sha256,
    silent_addr,
    transfer_deadline,
)

RECEIVERS = ("vm2", "vm3", "vm4")


def results(out: toolout.Transcript) -> dict[str, str]:
    """The result of every call, by its text ("send-fd 1": "-1 EBADF")."""
    return {c.what: c.result for c in out.calls}


def test_descriptor_send_of_unlinked_file_three_peers(scn: Scenario, cluster: ClusterView) -> None:
    """sendmsg() with an empty payload and SCM_RIGHTS sends the file open on the descriptor,
    here one whose name is gone (opened, then unlinked): bit-exact at 3 peers, the call returns
    0 (the payload's length) and every peer is DONE."""
    tx = cluster["vm1"]
    rxs = [cluster[n] for n in RECEIVERS]
    src, digest = scn.make_file(tx, "src", 6 * MiB)
    port = next_port()
    dst = scn.path("dst")
    jobs = scn.receivers(rxs, dst, port)
    ops = ["socket", *(f"connect:{rx.ipv4}:{port}" for rx in rxs)]
    ops += ["send-fd-num:3", "getsockopt:peer_results"]
    script = " ".join(q(o) for o in ops)
    # fd 3 is the file, inherited by p2pkp-op; its only name is removed first
    out = toolout.Transcript(
        tx.run(
            f"exec 3<{q(src)} && rm {q(src)} && {OP} {script}; exec 3<&-",
            timeout=transfer_deadline(3 * 6 * MiB) + 60.0,
        ).output
    )
    assert tx.run(f"test -e {q(src)}", check=False).rc != 0, "the source still has a name"
    assert out.call("send-fd-num 3").result == "0", out
    peers = out.call("getsockopt peer_results").extra["peers"]
    assert [(p["state"], p["status"]) for p in peers] == [("DONE", "OK")] * 3, out
    for rx, job in zip(rxs, jobs, strict=True):
        res = job.wait(timeout=60.0)
        assert parse_received(res.output) == [(dst, 6 * MiB)], f"{rx.name}: {res.output}"
        assert sha256(rx, dst, 6 * MiB) == digest, f"{rx.name}: content differs"


def test_descriptor_permissions_are_the_descriptors(scn: Scenario, cluster: ClusterView) -> None:
    """nobody cannot write() a root-only file by its path (EACCES), but can send it through a
    descriptor root opened and handed down, as with sendfile(): the descriptor's permissions,
    not the caller's, decide (and an O_PATH descriptor or one not open for reading is refused:
    EBADF)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "secret", 1 * MiB)
    tx.run(f"chmod 0600 {q(src)} && chown root:root {q(src)}")
    port = next_port()
    dst = scn.path("dst")
    job = scn.receiver(rx, dst, port)
    ops = ["socket", f"connect:{rx.ipv4}:{port}", f"write:{src}", "send-fd-num:3"]
    out = toolout.Transcript(
        tx.run(
            f"exec 3<{q(src)} && {AS_NOBODY} {OP} " + " ".join(q(o) for o in ops),
            timeout=transfer_deadline(1 * MiB) + 60.0,
        ).output
    )
    assert out.call(f"write {src}").result == "-1 EACCES", out
    assert out.call("send-fd-num 3").result == "0", out
    got = job.wait(timeout=60.0)
    assert parse_received(got.output) == [(dst, 1 * MiB)], got.output
    assert sha256(rx, dst, 1 * MiB) == digest
    refused = op(
        tx,
        [
            "socket",
            f"connect:{silent_addr(tx)}:{next_port()}",
            f"open:path:{src}",
            "send-fd",
            f"open:w:{src}",
            "send-fd",
        ],
    )
    assert [c.result for c in refused.calls if c.op == "send-fd"] == ["-1 EBADF"] * 2, refused


def test_descriptor_call_errors(scn: Scenario, cluster: ClusterView) -> None:
    """Every documented errno of 1.6, without a transfer: SCM_RIGHTS with two descriptors, a
    payload, a directory, a bad number; P2PKP_RECV_FD with a read-only, an O_APPEND, a
    directory or a sysctl descriptor; read("") with no descriptor set;
    getsockopt(P2PKP_RECV_FD)."""
    vm = cluster["vm1"]
    f, _ = scn.make_file(vm, "f", 4096)
    sender = op(
        vm,
        [
            "socket",
            f"connect:{silent_addr(vm)}:{next_port()}",
            f"open:r:{f}",
            "send-fd:2",
            "send-fd-payload:/x",
            "send-fd-num:999",
            f"open:dir:{scn.dir}",
            "send-fd",
        ],
    )
    r = results(sender)
    assert not r[f"open r {f}"].startswith("-1") and not r[f"open dir {scn.dir}"].startswith("-1")
    assert [r["send-fd 2"], r["send-fd-payload /x"], r["send-fd-num 999"], r["send-fd 1"]] == [
        "-1 EINVAL",
        "-1 EINVAL",
        "-1 EBADF",
        "-1 EINVAL",
    ], sender
    port = next_port()
    receiver = op(
        vm,
        [
            "socket",
            f"bind:127.0.0.1:{port}",
            "read:",
            f"open:r:{f}",
            "setsockopt:recv_fd:file",
            f"open:rw+append:{f}",
            "setsockopt:recv_fd:file",
            f"open:dir:{scn.dir}",
            "setsockopt:recv_fd:file",
            # a sysctl: writing it has effects (and would be checked against the engine)
            "open:rw:/proc/sys/vm/swappiness",
            "setsockopt:recv_fd:file",
            "getsockopt:recv_fd",
            f"open:rw:{f}",
            "setsockopt:recv_fd:file",
            "getsockopt:recv_fd",
            "setsockopt:recv_fd:-1",
            "getsockopt:recv_fd",
            "read:",
        ],
    )
    setf = [c.result for c in receiver.calls if c.what == "setsockopt recv_fd file"]
    assert setf == ["-1 EBADF", "-1 EPERM", "-1 EBADF", "-1 EINVAL", "0"], receiver
    got = [c.extra.get("value") for c in receiver.calls if c.what == "getsockopt recv_fd"]
    assert got == [0, 1, 0], receiver
    reads = [c.result for c in receiver.calls if c.op == "read"]
    assert reads == ["-1 EINVAL", "-1 EINVAL"], receiver


def test_tmpfile_receive_then_linkat(scn: Scenario, cluster: ClusterView) -> None:
    """A receiver opens an O_TMPFILE, hands it with P2PKP_RECV_FD and read("") (first
    non-blocking: EAGAIN, then blocking): no name appears in the directory during the
    transfer, read() returns the size, the descriptor holds the verified file and the receiver
    names it itself with linkat(); the option is taken by the read (one file per setsockopt)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 4 * MiB)
    inbox = scn.path("inbox")
    rx.run(f"mkdir {q(inbox)}")
    final = f"{inbox}/named-by-me"
    port = next_port()
    ops = [
        "socket",
        f"bind:0.0.0.0:{port}",
        f"open:tmpfile:{inbox}",
        "setsockopt:recv_fd:file",
        "recv-dontwait:",
        "getsockopt:recv_fd",
        "echo:armed",
        "read:",
        "fstat-file",
        f"link-file:{final}",
        "read:",
    ]
    recv = scn.op_job(rx, ops, "armed")
    with rate_limited(tx, 16):
        sender = scn.spawn(tx, f"{OP} socket connect:{rx.ipv4}:{port} write:{q(src)}")
        # while data arrives, the directory stays empty: the file has no name
        rx.wait_for(f"grep -q 'state=receiving local=0.0.0.0:{port}' /proc/net/p2pkp", 60.0)
        assert listing(rx, inbox) == []
        assert sender.wait(timeout=transfer_deadline(4 * MiB) + 60.0).rc == 0
    out = recv.wait(timeout=60.0).output
    assert op_result(out, "recv-dontwait ") == "-1 EAGAIN", out
    assert out.call("getsockopt recv_fd").extra["value"] == 0, out
    reads = [c.result for c in out.calls if c.op == "read"]
    # the second read("") has no descriptor any more: EINVAL
    assert reads == [str(4 * MiB), "-1 EINVAL"], out
    assert out.call("fstat-file").extra["size"] == str(4 * MiB), out
    assert op_result(out, f"link-file {final}") == "0", out
    assert listing(rx, inbox) == ["named-by-me"]
    assert sha256(rx, final, 4 * MiB) == digest


def test_descriptor_receive_replaces_old_content_and_loses_nothing(
    scn: Scenario, cluster: ClusterView
) -> None:
    """Into a named file's descriptor: a file with old content ends as exactly the received
    file (emptied at acceptance, not merely overwritten); a receiver killed mid-transfer leaves
    that descriptor's file empty, never partial."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    small, small_digest = scn.make_file(tx, "small", 100 * 1000)
    big, _ = scn.make_file(tx, "big", 8 * MiB)
    target = scn.path("target")
    rx.run(f"head -c 3000000 /dev/urandom > {q(target)}")
    port = next_port()
    ops = ["socket", f"bind:0.0.0.0:{port}", f"open:rw:{target}", "setsockopt:recv_fd:file"]
    recv = scn.op_job(rx, [*ops, "echo:ready", "read:"], "ready")
    out = op(tx, ["socket", f"connect:{rx.ipv4}:{port}", f"write:{small}"], timeout=120.0)
    assert op_result(out, f"write {small}") == str(len(small)), out
    got = recv.wait(timeout=60.0).output
    assert [c.result for c in got.calls if c.op == "read"] == [str(100 * 1000)], got
    assert sha256(rx, target) == small_digest, "old content left after the received file"
    # killed half-way: nothing partial stays in the file
    port = next_port()
    ops = ["pid", "socket", f"bind:0.0.0.0:{port}", f"open:rw:{target}", "setsockopt:recv_fd:file"]
    recv = scn.op_job(rx, [*ops, "echo:ready", "read:"], "ready")
    pid = int(op_result(recv.output(), "pid"))
    with rate_limited(tx, 16):
        sender = scn.spawn(
            tx, f"{OP} socket setsockopt:peer_timeout:3000 connect:{rx.ipv4}:{port} write:{q(big)}"
        )
        rx.wait_for(f"grep -q 'state=receiving local=0.0.0.0:{port}' /proc/net/p2pkp", 60.0)
        rx.wait_for(f"test $(stat -c %s {q(target)}) -gt 0", 60.0, interval=0.1)
        rx.run(f"kill -9 {pid}")
        sender.wait(timeout=120.0)
    rx.wait_for(f"test $(stat -c %s {q(target)}) -eq 0", 30.0)


def test_descriptor_read_timeout_gives_the_descriptor_back(
    scn: Scenario, cluster: ClusterView
) -> None:
    """A blocking read("") whose SO_RCVTIMEO expires before any transfer is accepted is
    disarmed as if it had not begun: EAGAIN, the descriptor is set again
    (getsockopt(P2PKP_RECV_FD) 1), and the next read("") receives into it."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 300 * 1000)
    inbox = scn.path("inbox")
    rx.run(f"mkdir {q(inbox)}")
    final = f"{inbox}/got"
    port = next_port()
    ops = [
        "socket",
        f"bind:0.0.0.0:{port}",
        f"open:tmpfile:{inbox}",
        "setsockopt:recv_fd:file",
        "setsockopt:rcvtimeo:300",
        "read:",
        "getsockopt:recv_fd",
        "setsockopt:rcvtimeo:0",
        "echo:ready",
        "read:",
        f"link-file:{final}",
    ]
    recv = scn.op_job(rx, ops, "ready")
    out = op(tx, ["socket", f"connect:{rx.ipv4}:{port}", f"write:{src}"], timeout=120.0)
    assert op_result(out, f"write {src}") == str(len(src)), out
    got = recv.wait(timeout=60.0).output
    assert [c.result for c in got.calls if c.op == "read"] == ["-1 EAGAIN", str(300 * 1000)], got
    assert got.call("getsockopt recv_fd").extra["value"] == 1, got
    assert sha256(rx, final) == digest
