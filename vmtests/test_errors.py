"""Every errno of the sender and the receiver, as documented in docs/protocol.md / p2pkp.c."""

from __future__ import annotations

import re

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import (
    AS_NOBODY,
    OP,
    SEND,
    Guest,
    MiB,
    Scenario,
    listing,
    next_port,
    op,
    op_lines,
    op_result,
    parse_peer_results,
    parse_received,
    proc_total,
    q,
    rate_limited,
    send,
    sha256,
    silent_addr,
    wait_output,
)

# The module's documented errors (docs/protocol.md).
DUPLICATE_PEER = "EEXIST"
PEER_LIMIT = "ENOSPC"
PEER_FAILED = "ETIMEDOUT"
MAX_PEERS = 64
PATH_MAX = 4095
# Sender egress during the EINTR tests: 8 MiB take ~4 s, so a signal lands mid-transfer.
RATE_MBIT = 16


def test_write_without_peer_is_edestaddrreq(cluster: ClusterView, p2pkp: ClusterView) -> None:
    """write() before any connect(), and after connect(AF_UNSPEC), fails with EDESTADDRREQ."""
    vm = cluster["vm1"]
    out = op(vm, ["socket", "write:/etc/hostname", "connect:unspec", "write:/etc/hostname"])
    results = [line for line in out.splitlines() if line.startswith("write ")]
    assert results == ["write /etc/hostname = -1 EDESTADDRREQ"] * 2, out


@pytest.mark.parametrize(
    ("what", "make", "operation", "errno"),
    [
        ("relative path", "", "write:etc/hostname", "EINVAL"),
        ("empty path", "", "write-len:/etc/hostname:0", "EINVAL"),
        ("directory", "", "write:DIR", "EINVAL"),
        ("character device", "", "write:/dev/null", "EINVAL"),
        ("fifo (must not block)", "mkfifo DIR/fifo", "write:DIR/fifo", "EINVAL"),
        ("missing file", "", "write:DIR/missing", "ENOENT"),
        ("missing directory", "", "write:DIR/missing/file", "ENOENT"),
        ("path longer than P2PKP_PATH_MAX", "", f"write-long:{PATH_MAX + 1}", "ENAMETOOLONG"),
    ],
)
def test_write_bad_path(
    scn: Scenario, cluster: ClusterView, what: str, make: str, operation: str, errno: str
) -> None:
    """write() of a bad path fails with its errno before anything is sent."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    if make:
        tx.run(make.replace("DIR", scn.dir))
    operation = operation.replace("DIR", scn.dir)
    out = op(tx, ["socket", f"connect:{rx.ipv4}:{next_port()}", operation], timeout=30.0)
    write_line = [line for line in out.splitlines() if line.startswith("write")]
    assert len(write_line) == 1 and write_line[0].endswith(f"= -1 {errno}"), (
        f"{what}: expected {errno}:\n{out}"
    )


def test_nobody_cannot_send_etc_shadow(scn: Scenario, cluster: ClusterView) -> None:
    """The file is opened with the caller's credentials: nobody gets EACCES for /etc/shadow."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    # virtme-ng writes the guest's /etc/shadow (an overlay) world-readable: give it the
    # permissions of a real system first, and check nobody cannot read it by itself.
    tx.run("chown root:shadow /etc/shadow && chmod 0640 /etc/shadow")
    denied = tx.run(f"{AS_NOBODY} head -c 1 /etc/shadow", check=False)
    assert denied.rc != 0, f"{tx.name}: nobody can read /etc/shadow: test setup is wrong"
    ops = ["socket", f"connect:{rx.ipv4}:{next_port()}", "write:/etc/shadow"]
    out = op(tx, ops, prefix=AS_NOBODY + " ")
    assert op_result(out, "write /etc/shadow") == "-1 EACCES", out


def test_nobody_cannot_store_into_root(scn: Scenario, cluster: ClusterView) -> None:
    """read() stores with the caller's credentials: nobody cannot create a file in /root."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 10_000)
    # The guest's /root is the host's, read-only (9p): EROFS would hide EACCES.  Give the
    # guest a writable /root like a real system's (root-owned, 0700) for this test.
    rx.run("mount -t tmpfs -o mode=0700,uid=0,gid=0,size=16m p2pkp-root /root")
    try:
        port = next_port()
        dst = f"/root/p2pkp-nobody-{port}"
        ops = ["socket", f"bind:0.0.0.0:{port}", "echo:bound", f"read:{dst}"]
        job = scn.op_job(rx, ops, "bound", prefix=AS_NOBODY + " ")
        res = job.wait(timeout=30.0)
        assert op_result(res.output, f"read {dst}") == "-1 EACCES", res.output
        assert rx.run("ls -A /root").output.split() == [], f"{rx.name}: /root not empty"
        # Control: root stores there with the same tools, so the denial is about the caller.
        receiver = scn.receiver(rx, dst, port)
        send(tx, [(rx, port)], [src], timeout=60.0)
        assert receiver.wait(timeout=60.0).rc == 0
        assert sha256(rx, dst) == digest
    finally:
        rx.run("umount /root")


def receiving(vm: Guest, port: int) -> str:
    """A shell condition: vm's receiver on `port` has accepted a transfer and stored data."""
    return (
        f"grep -qE '^sock .*role=receiver state=receiving local=\\S+:{port} .*"
        "bytes_received=[1-9]' /proc/net/p2pkp"
    )


def test_sender_eintr_transfer_goes_on(scn: Scenario, cluster: ClusterView) -> None:
    """A signal (handler without SA_RESTART) makes write() return EINTR, but the transfer goes
    on: the receiver gets the file, and write() repeated with the same path returns the result
    of that same transfer instead of sending it again (docs/protocol.md section 1)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "big", 8 * MiB)
    port = next_port()
    dst = scn.path("dst")
    job = scn.receiver(rx, dst, port, count=1)
    before = proc_total(tx)
    with rate_limited(tx, RATE_MBIT):
        # alarm:0 installs the SIGALRM handler (no SA_RESTART) without arming a timer.
        ops = [
            "pid",
            "socket",
            f"connect:{rx.ipv4}:{port}",
            "alarm:0",
            "echo:go",
            f"write:{src}",
            f"write:{src}",
        ]
        sender = scn.op_job(tx, ops, "go")
        pid = int(op_result(sender.output(), "pid"))
        rx.wait_for(receiving(rx, port), timeout=60.0, interval=0.1)
        tx.run(f"kill -ALRM {pid}")
        out = sender.wait(timeout=120.0).output
    writes = [line for line in op_lines(out) if line.startswith("write ")]
    assert writes == [f"write {src} = -1 EINTR", f"write {src} = {len(src)}"], out
    res = job.wait(timeout=60.0)
    assert parse_received(res.output) == [(dst, 8 * MiB)], res.output
    assert sha256(rx, dst, 8 * MiB) == digest
    after = proc_total(tx)
    assert after["files_sent"] - before["files_sent"] == 1, (
        f"{tx.name}: the repeated write sent the file again: {before} -> {after}"
    )


def test_sender_close_mid_transfer_aborts(scn: Scenario, cluster: ClusterView) -> None:
    """close() during a transfer cancels it: ABORT to the receiver, which keeps nothing and
    goes on receiving (its next file is the first it stores)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, _ = scn.make_file(tx, "big", 8 * MiB)
    small, small_digest = scn.make_file(tx, "small", 5000)
    port = next_port()
    inbox = scn.path("in")
    rx.run(f"mkdir {inbox}")
    job = scn.receiver(rx, inbox, port, count=1, timeout_ms=60000)
    with rate_limited(tx, RATE_MBIT):
        ops = ["pid", "socket", f"connect:{rx.ipv4}:{port}", "alarm:0", "echo:go", f"write:{src}"]
        sender = scn.op_job(tx, [*ops, "close"], "go")
        pid = int(op_result(sender.output(), "pid"))
        rx.wait_for(receiving(rx, port), timeout=60.0, interval=0.1)
        tx.run(f"kill -ALRM {pid}")
        out = sender.wait(timeout=60.0).output
    assert op_result(out, f"write {src}") == "-1 EINTR", out
    rx.wait_for(
        "grep -qE '^sock .*role=receiver state=waiting.* xfers_aborted=1( |$)' /proc/net/p2pkp",
        timeout=30.0,
    )
    assert listing(rx, inbox) == [], f"{rx.name}: left behind in {inbox}"
    send(tx, [(rx, port)], [small], timeout=60.0)
    res = job.wait(timeout=60.0)
    assert parse_received(res.output) == [(f"{inbox}/file-0001", 5000)], res.output
    assert sha256(rx, f"{inbox}/file-0001") == small_digest
    assert listing(rx, inbox) == ["file-0001"]


def test_peer_never_completes(scn: Scenario, cluster: ClusterView) -> None:
    """A silent peer fails with ETIMEDOUT after the peer timeout; the others get the file."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 100_000)
    port = next_port()
    job = scn.receiver(rx, scn.path("dst"), port)
    silent = silent_addr(tx)
    ops = [
        "socket",
        "setsockopt:peer_timeout:1000",
        f"connect:{rx.ipv4}:{port}",
        f"connect:{silent}:{port}",
        f"write:{src}",
        "getsockopt:peer_results",
    ]
    out = op(tx, ops, timeout=60.0)
    assert op_result(out, f"write {src}") == f"-1 {PEER_FAILED}", out
    peers = parse_peer_results(out)
    assert [(p.addr, p.state, p.status) for p in peers] == [
        (f"{rx.ipv4}:{port}", "DONE", "OK"),
        (f"{silent}:{port}", "FAILED", PEER_FAILED),
    ], out
    assert peers[0].bytes_acked == 100_000, out
    res = job.wait(timeout=60.0)
    assert res.rc == 0, res.output
    assert sha256(rx, scn.path("dst")) == digest


def test_send_tool_reports_failed_peer(scn: Scenario, cluster: ClusterView) -> None:
    """p2pkp-send exits 1 with the errno name and the per-peer results of a failed write."""
    tx = cluster["vm1"]
    src, _ = scn.make_file(tx, "src", 3000)
    silent = silent_addr(tx)
    res = tx.run(f"{SEND} --timeout 500 --to {silent}:7117 {q(src)} 2>&1", check=False)
    assert res.rc == 1, res.output
    assert f"p2pkp-send: write {src}: {PEER_FAILED} (Connection timed out)" in res.output
    assert f"peer {silent}:7117: FAILED {PEER_FAILED}" in res.output, res.output


def test_bind_errors(cluster: ClusterView, p2pkp: ClusterView) -> None:
    """bind() fails as UDP's: EADDRINUSE for a taken port, EINVAL twice or with a short address."""
    vm = cluster["vm2"]
    port = next_port()
    ops = [
        "socket",
        f"bind:0.0.0.0:{port}",
        "socket",
        f"bind:0.0.0.0:{port}",
        "use:1",
        f"bind:0.0.0.0:{next_port()}",
        "socket",
        "bind-raw:0200",
        f"bind:{silent_addr(vm)}:{port}",
    ]
    out = op(vm, ops)
    binds = [line.split(" = ")[1] for line in out.splitlines() if line.startswith("bind")]
    assert binds == ["0", "-1 EADDRINUSE", "-1 EINVAL", "-1 EINVAL", "-1 EADDRNOTAVAIL"], out


def test_connect_duplicate_limit_and_unspec(cluster: ClusterView, p2pkp: ClusterView) -> None:
    """A duplicate peer and peer 65 get documented errors; connect(AF_UNSPEC) clears the list."""
    vm, peer = cluster["vm1"], cluster["vm2"]
    port = next_port()
    ops = [
        "socket",
        f"connect:{peer.ipv4}:{port}",
        f"connect:{peer.ipv4}:{port}",
        "connect:unspec",
        "write:/etc/hostname",
        f"connect:{peer.ipv4}:{port}",
        "close",
        "socket",
    ]
    ops += [f"connect:{peer.ipv4}:{10000 + i}" for i in range(MAX_PEERS + 1)]
    out = op(vm, ops)
    lines = [line for line in out.splitlines() if " = " in line]
    assert lines[1:6] == [
        f"connect {peer.ipv4}:{port} = 0",
        f"connect {peer.ipv4}:{port} = -1 {DUPLICATE_PEER}",
        "connect unspec = 0",
        "write /etc/hostname = -1 EDESTADDRREQ",
        f"connect {peer.ipv4}:{port} = 0",
    ], out
    limit = [line.split(" = ")[1] for line in lines[8:]]
    assert limit == ["0"] * MAX_PEERS + [f"-1 {PEER_LIMIT}"], out


def test_read_eintr_leaves_nothing(scn: Scenario, cluster: ClusterView) -> None:
    """A signal interrupts a waiting read() with EINTR and nothing is created."""
    rx = cluster["vm2"]
    port = next_port()
    dst = scn.path("dst")
    out = op(rx, ["socket", f"bind:0.0.0.0:{port}", "alarm:500", f"read:{dst}"], timeout=30.0)
    assert op_result(out, f"read {dst}") == "-1 EINTR", out
    assert listing(rx, scn.dir) == []


def test_read_eintr_mid_transfer_goes_on(scn: Scenario, cluster: ClusterView) -> None:
    """A signal during a transfer makes read() return EINTR but the transfer goes on: nothing
    shows under the final name until it is verified, read() repeated with the same path
    returns the size, the file is bit-exact and the sender succeeds."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "big", 8 * MiB)
    port = next_port()
    dst = scn.path("dst")
    ops = ["pid", "socket", f"bind:0.0.0.0:{port}", "alarm:0", "echo:bound", f"read:{dst}"]
    job = scn.op_job(rx, [*ops, f"read:{dst}"], "bound")
    pid = int(op_result(job.output(), "pid"))
    with rate_limited(tx, RATE_MBIT):
        sender = scn.spawn(tx, f"{OP} socket connect:{rx.ipv4}:{port} " + q("write:" + src))
        rx.wait_for(receiving(rx, port), timeout=60.0, interval=0.1)
        partial = listing(rx, scn.dir)
        rx.run(f"kill -ALRM {pid}")
        sent = sender.wait(timeout=120.0)
    out = job.wait(timeout=60.0).output
    reads = [line for line in op_lines(out) if line.startswith("read ")]
    assert reads == [f"read {dst} = -1 EINTR", f"read {dst} = {8 * MiB}"], out
    assert op_result(sent.output, f"write {src}") == str(len(src)), sent.output
    assert partial == [], f"{rx.name}: visible mid-transfer: {partial}"
    assert sha256(rx, dst, 8 * MiB) == digest


def test_read_close_mid_transfer_leaves_nothing(scn: Scenario, cluster: ClusterView) -> None:
    """close() of the receiver during a transfer: ABORT fails the sender's peer with
    ECONNRESET, and nothing is left in the directory (the file never had a name)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, _ = scn.make_file(tx, "big", 8 * MiB)
    port = next_port()
    inbox = scn.path("in")
    dst = f"{inbox}/dst"
    rx.run(f"mkdir {inbox}")
    ops = ["pid", "socket", f"bind:0.0.0.0:{port}", "alarm:0", "echo:bound", f"read:{dst}"]
    job = scn.op_job(rx, [*ops, "close", "echo:closed", "sleep:30000"], "bound")
    pid = int(op_result(job.output(), "pid"))
    with rate_limited(tx, RATE_MBIT):
        sender = scn.spawn(
            tx,
            f"{OP} socket setsockopt:peer_timeout:5000 connect:{rx.ipv4}:{port} "
            + q("write:" + src),
        )
        rx.wait_for(receiving(rx, port), timeout=60.0, interval=0.1)
        rx.run(f"kill -ALRM {pid}")
        wait_output(job, r"^closed", 60.0, f"{rx.name}: p2pkp-op close")
        sent = sender.wait(timeout=120.0)
    assert op_result(job.output(), f"read {dst}") == "-1 EINTR", job.output()
    # The receiver's ABORT fails the sender's peer with ECONNRESET (docs/protocol.md 1.2).
    assert op_result(sent.output, f"write {src}") == "-1 ECONNRESET", (
        f"{tx.name}: the sender did not see the receiver's abort:\n{sent.output}"
    )
    assert listing(rx, inbox) == [], f"{rx.name}: left behind in {inbox}"


def test_receiver_and_option_errors(scn: Scenario, cluster: ClusterView) -> None:
    """read() needs bind() and an absolute file path; roles exclude each other; timeout range."""
    vm, peer = cluster["vm2"], cluster["vm1"]
    port = next_port()
    ops = [
        "socket",
        f"read:{scn.path('x')}",  # not bound
        f"bind:0.0.0.0:{port}",
        "read:relative",
        f"read:{scn.dir}/",  # a directory, not a file name
        f"connect:{peer.ipv4}:{port}",  # a receiver: an allowed sender, not a peer
        f"connect:{peer.ipv4}:{port}",  # ... once
        f"connect:{peer.ipv4}:0",  # any port of that address
        "socket",
        f"connect:{peer.ipv4}:{port}",
        f"bind:0.0.0.0:{next_port()}",  # a sender cannot bind
        f"connect:{peer.ipv4}:0",  # port 0
        "setsockopt:peer_timeout:99",
        "setsockopt:peer_timeout:3600001",
        "setsockopt:peer_timeout:100",
        "getsockopt:peer_timeout",
    ]
    out = op(vm, ops)
    lines = [line for line in out.splitlines() if " = " in line]
    assert all(re.fullmatch(r"socket = \d+", line) for line in (lines[0], lines[8])), out
    got = [line.split(" = ", 1)[1] for i, line in enumerate(lines) if i not in (0, 8)]
    assert got == [
        "-1 EDESTADDRREQ",
        "0",
        "-1 EINVAL",
        "-1 EINVAL",
        "0",
        "-1 EEXIST",
        "0",
        "0",
        "-1 EISCONN",
        "-1 EINVAL",
        "-1 EINVAL",
        "-1 EINVAL",
        "0",
        "0 value=100",
    ], out


def test_socket_call_errors(scn: Scenario, cluster: ClusterView) -> None:
    """The rest of docs/protocol.md's errno table, one call each, on a single guest."""
    vm, peer = cluster["vm1"], cluster["vm2"]
    port = next_port()
    subdir = scn.path("sub")
    vm.run(f"mkdir {subdir}")
    long_path = "/" + "x" * 4096
    cases = [
        ("socket:stream", "-1 ESOCKTNOSUPPORT"),
        ("socket:dgram:1", "-1 EPROTONOSUPPORT"),
        ("socket", None),
        # AF_UNIX (1) address, then an AF_INET one shorter than sockaddr_in.
        ("connect-raw:01002f746d70", "-1 EAFNOSUPPORT"),
        ("connect-raw:02001bcd", "-1 EINVAL"),
        (f"connect:{peer.ipv4}:{port}", "0"),
        ("write:/etc/hostname/x", "-1 ENOTDIR"),
        ("listen", "-1 EOPNOTSUPP"),
        ("accept", "-1 EOPNOTSUPP"),
        ("shutdown:rdwr", "-1 EOPNOTSUPP"),
        ("setsockopt-raw:6:1:00000000", "-1 ENOPROTOOPT"),  # level SOL_TCP
        ("setsockopt-raw:300:99:00000000", "-1 ENOPROTOOPT"),  # unknown option
        ("setsockopt-raw:300:1:0000", "-1 EINVAL"),  # optlen < 4
        ("getsockopt-raw:300:3:8", "-1 EINVAL"),  # short P2PKP_LAST_TRANSFER buffer
        # P2PKP_RATE above P2PKP_RATE_MAX (2^40 + 1, little endian); at the maximum: fine
        ("setsockopt-raw:300:4:0100000000010000", "-1 EINVAL"),
        ("setsockopt-raw:300:4:0000000000010000", "0"),
        ("setsockopt-raw:300:5:" + "00" * 16, "-1 EINVAL"),  # P2PKP_KEY of 16 bytes
        ("setsockopt-raw:300:5:" + "ab" * 32, "0"),  # a 32-byte key
        ("getsockopt-raw:300:5:32", "-1 EPERM"),  # never readable
        ("setsockopt-raw:300:5:", "0"),  # optlen 0: no key
        ("setsockopt-raw:300:6:00", "-1 EINVAL"),  # P2PKP_FSYNC optlen < 4
        ("getsockopt-raw:300:6:4", "0 optlen=4 data=01000000"),  # P2PKP_FSYNC is 1
        ("socket", None),
        (f"bind:0.0.0.0:{port}", "0"),
        (f"read:{subdir}", "-1 EISDIR"),  # the final name is a directory
        (f"read:{scn.path('missing/dst')}", "-1 ENOENT"),  # parent missing
        (f"read:{subdir}/..", "-1 EINVAL"),
        (f"read:{long_path}", "-1 ENAMETOOLONG"),
    ]
    out = op(vm, [c for c, _ in cases])
    lines = [line for line in out.splitlines() if " = " in line]
    assert len(lines) == len(cases), out
    for (call, want), line in zip(cases, lines, strict=True):
        got = line.split(" = ", 1)[1]
        if want is None:
            assert re.fullmatch(r"\d+", got), f"{call}: {line}\n{out}"
        else:
            assert got == want, f"{call}: expected {want}, got {line}\n{out}"
