"""Sockets that behave like sockets (issue 17, items 1-3): non-blocking write() and read(),
poll()/epoll readiness, SO_ERROR, SO_SNDTIMEO and SO_RCVTIMEO (docs/protocol.md 1.5)."""

from __future__ import annotations

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import (
    FANOUT,
    MiB,
    Scenario,
    listing,
    next_port,
    op,
    op_lines,
    parse_received,
    proc_total,
    rate_limited,
    send,
    sha256,
    silent_addr,
    transfer_deadline,
    wait_output,
)

RECEIVERS = ("vm2", "vm3", "vm4")
# Sender egress while a call must return before the transfer ends: 8 MiB take ~4 s.
RATE_MBIT = 16
# Long enough for any transfer of these tests under TCG (the calls have their own deadline).
POLL_MS = 120000


def calls(out: toolout.Transcript, prefix: str) -> list[str]:
    """The result lines of the calls whose line starts with `prefix`."""
    return [line for line in op_lines(out) if line.startswith(prefix)]


def test_nonblocking_write_then_poll_three_peers(scn: Scenario, cluster: ClusterView) -> None:
    """O_NONBLOCK write() starts the transfer and returns EINPROGRESS at once; the same call
    again says EALREADY while it runs; poll() reports POLLOUT (no POLLERR) when every peer has
    the file; the same write() then returns its result (the length) once. Bit-exact at 3."""
    tx = cluster["vm1"]
    rxs = [cluster[n] for n in RECEIVERS]
    src, digest = scn.make_file(tx, "src", 8 * MiB)
    port = next_port()
    dst = scn.path("dst")
    jobs = scn.receivers(rxs, dst, port)
    before = proc_total(tx)
    ops = ["socket", *(f"connect:{rx.ipv4}:{port}" for rx in rxs), "nonblock:on"]
    ops += [f"write:{src}", f"write:{src}", "poll:out:0"]
    ops += [f"poll:out:{POLL_MS}", "getsockopt:error", f"write:{src}", "getsockopt:peer_results"]
    with rate_limited(tx, RATE_MBIT):
        out = op(tx, ops, timeout=transfer_deadline(3 * 8 * MiB) + 120.0)
    assert calls(out, "write ") == [
        f"write {src} = -1 EINPROGRESS",
        f"write {src} = -1 EALREADY",
        f"write {src} = {len(src)}",
    ], out
    assert calls(out, "poll ") == [
        "poll out 0 = 0 revents=none",
        f"poll out {POLL_MS} = 1 revents=OUT",
    ], out
    assert calls(out, "getsockopt error") == ["getsockopt error = 0 value=OK"], out
    peers = out.call("getsockopt peer_results").extra["peers"]
    assert [(p["state"], p["status"]) for p in peers] == [("DONE", "OK")] * 3, out
    for rx, job in zip(rxs, jobs, strict=True):
        res = job.wait(timeout=60.0)
        assert parse_received(res.output) == [(dst, 8 * MiB)], f"{rx.name}: {res.output}"
        assert sha256(rx, dst, 8 * MiB) == digest, f"{rx.name}: content differs"
    sent = proc_total(tx)["files_sent"] - before["files_sent"]
    assert sent == 1, f"{tx.name}: {sent} files sent for one non-blocking write"


def test_nonblocking_read_then_poll_in(scn: Scenario, cluster: ClusterView) -> None:
    """An O_NONBLOCK read() arms the destination and returns EAGAIN; it says EAGAIN again
    while nothing is complete; POLLIN when the file is in place under its final name; the
    same read() then returns the size (and recv(MSG_DONTWAIT) on a blocking socket arms the
    next one the same way)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 3 * MiB)
    port = next_port()
    dst, dst2 = scn.path("dst"), scn.path("dst2")
    ops = ["socket", f"bind:0.0.0.0:{port}", "nonblock:on", f"read:{dst}", f"read:{dst}"]
    ops += ["poll:in:0", "echo:armed", f"poll:in:{POLL_MS}", f"read:{dst}", "nonblock:off"]
    ops += [f"recv-dontwait:{dst2}", "echo:armed2", f"poll:in:{POLL_MS}", f"recv-dontwait:{dst2}"]
    job = scn.op_job(rx, ops, "armed")
    send(tx, [(rx, port)], [src], timeout=transfer_deadline(3 * MiB))
    wait_output(job.job, '"arg":"armed2"', 60.0, f"{rx.name}: second non-blocking read")
    send(tx, [(rx, port)], [src], timeout=transfer_deadline(3 * MiB))
    out = job.wait(timeout=transfer_deadline(3 * MiB) + 60.0).output
    size = 3 * MiB
    assert calls(out, "read ") == [
        f"read {dst} = -1 EAGAIN",
        f"read {dst} = -1 EAGAIN",
        f"read {dst} = {size}",
    ], out
    assert calls(out, "recv-dontwait ") == [
        f"recv-dontwait {dst2} = -1 EAGAIN",
        f"recv-dontwait {dst2} = {size}",
    ], out
    assert calls(out, "poll ") == [
        "poll in 0 = 0 revents=none",
        f"poll in {POLL_MS} = 1 revents=IN",
        f"poll in {POLL_MS} = 1 revents=IN",
    ], out
    assert sha256(rx, dst, size) == digest and sha256(rx, dst2, size) == digest
    assert listing(rx, scn.dir) == sorted(["dst", "dst2"]), f"{rx.name}: left in {scn.dir}"


def test_epoll_eight_receivers_at_once(scn: Scenario, cluster: ClusterView) -> None:
    """One thread, eight non-blocking receiver sockets in one edge-triggered epoll set: one
    write() to all eight makes every socket report readiness, and each read() then returns
    the size; every file is bit-exact."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    n = 8
    size = 1 * MiB
    src, digest = scn.make_file(tx, "src", size)
    base = next_port()
    for _ in range(n - 1):
        next_port()
    dsts = [scn.path(f"dst{i}") for i in range(n)]
    ops = []
    for i in range(n):
        ops += [
            "socket",
            f"bind:0.0.0.0:{base + i}",
            "nonblock:on",
            f"read:{dsts[i]}",
            "epoll-add:et",
        ]
    ops += ["echo:armed", f"epoll-wait:{n}:{POLL_MS}"]
    ops += [x for i in range(n) for x in (f"use:{i + 1}", f"read:{dsts[i]}")]
    job = scn.op_job(rx, ops, "armed")
    send(tx, [(rx, base + i) for i in range(n)], [src], timeout=transfer_deadline(n * size))
    out = job.wait(timeout=120.0).output
    wait = out.call(f"epoll-wait {n} {POLL_MS}")
    assert wait.ret == n, out
    ready = [e.split(":") for e in str(wait.extra["events"]).split(",")]
    assert sorted(int(k) for k, _ in ready) == list(range(1, n + 1)), out
    assert all("IN" in ev.split("|") and "ERR" not in ev.split("|") for _, ev in ready), out
    reads = calls(out, "read ")
    assert reads[n:] == [f"read {d} = {size}" for d in dsts], out
    for d in dsts:
        assert sha256(rx, d, size) == digest, f"{rx.name}: {d} differs"


def test_failed_peer_is_pollerr_and_so_error(scn: Scenario, cluster: ClusterView) -> None:
    """send(MSG_DONTWAIT) to a peer that never answers and a live one: POLLOUT|POLLERR when it
    is over, SO_ERROR says ETIMEDOUT once (then OK), the peer results name the failed peer,
    the live one has the file, and the same call returns the documented result."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 256 * 1024)
    port = next_port()
    dst = scn.path("dst")
    job = scn.receiver(rx, dst, port)
    ops = ["socket", f"connect:{silent_addr(tx, 201)}:{port}", f"connect:{rx.ipv4}:{port}"]
    ops += ["setsockopt:peer_timeout:1500", f"send-dontwait:{src}", f"poll:out:{POLL_MS}"]
    ops += ["getsockopt:error", "getsockopt:error", "getsockopt:peer_results"]
    ops += ["poll:out:0", f"send-dontwait:{src}", "poll:out:0"]
    out = op(tx, ops, timeout=180.0)
    assert calls(out, "send-dontwait ") == [
        f"send-dontwait {src} = -1 EINPROGRESS",
        f"send-dontwait {src} = -1 ETIMEDOUT",
    ], out
    assert calls(out, "poll ") == [
        f"poll out {POLL_MS} = 1 revents=OUT|ERR",
        "poll out 0 = 1 revents=OUT|ERR",
        "poll out 0 = 1 revents=OUT",
    ], out
    assert calls(out, "getsockopt error") == [
        "getsockopt error = 0 value=ETIMEDOUT",
        "getsockopt error = 0 value=OK",
    ], out
    peers = out.call("getsockopt peer_results").extra["peers"]
    assert [(p["state"], p["status"]) for p in peers] == [
        ("FAILED", "ETIMEDOUT"),
        ("DONE", "OK"),
    ], out
    res = job.wait(timeout=60.0)
    assert parse_received(res.output) == [(dst, 256 * 1024)], res.output
    assert sha256(rx, dst, 256 * 1024) == digest


def test_rcvtimeo_expires_and_disarms(scn: Scenario, cluster: ClusterView) -> None:
    """SO_RCVTIMEO bounds a read() that waits for a sender: EAGAIN after the timeout, nothing
    on disk, and the read is disarmed: a sender that comes afterwards, while the socket stays
    open with no read(), gets no START_ACK (its peer times out) and no file appears."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, _ = scn.make_file(tx, "src", 100 * 1024)
    port = next_port()
    dst = scn.path("dst")
    ops = ["socket", f"bind:0.0.0.0:{port}", "setsockopt:rcvtimeo:700", "clock", f"read:{dst}"]
    ops += ["clock", "echo:timedout", "sleep:600000"]
    job = scn.op_job(rx, ops, "timedout")
    first = job.output()
    assert calls(first, "read ") == [f"read {dst} = -1 EAGAIN"], first
    t0, t1 = (c.ret for c in first.calls if c.op == "clock")
    assert t1 - t0 >= 600, f"{rx.name}: read returned after {t1 - t0} ms, before SO_RCVTIMEO"
    res = send(tx, [(rx, port)], [src], timeout=60.0, timeout_ms=1500, check=False, verbose=True)
    peer = toolout.peers(res.output).get(f"{rx.ipv4}:{port}")
    assert res.rc == 1 and peer is not None, f"{tx.name}: {res.output}"
    assert (peer.state, peer.errname, peer.acked) == ("FAILED", "ETIMEDOUT", 0), res.output
    assert listing(rx, scn.dir) == [], f"{rx.name}: a timed-out read left {listing(rx, scn.dir)}"
    job.kill()


def test_sndtimeo_returns_eagain_transfer_goes_on(scn: Scenario, cluster: ClusterView) -> None:
    """SO_SNDTIMEO bounds a blocking write(): EAGAIN when it expires, the transfer goes on
    (sent once), POLLOUT at its end, and the same write() returns its result."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size = 8 * MiB
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    dst = scn.path("dst")
    job = scn.receiver(rx, dst, port)
    before = proc_total(tx)
    ops = ["socket", f"connect:{rx.ipv4}:{port}", "setsockopt:sndtimeo:500", f"write:{src}"]
    ops += [f"poll:out:{POLL_MS}", f"write:{src}"]
    with rate_limited(tx, RATE_MBIT):
        out = op(tx, ops, timeout=transfer_deadline(size) + 120.0)
    assert calls(out, "write ") == [f"write {src} = -1 EAGAIN", f"write {src} = {len(src)}"], out
    assert calls(out, "poll ") == [f"poll out {POLL_MS} = 1 revents=OUT"], out
    res = job.wait(timeout=60.0)
    assert parse_received(res.output) == [(dst, size)], res.output
    assert sha256(rx, dst, size) == digest
    sent = proc_total(tx)["files_sent"] - before["files_sent"]
    assert sent == 1, f"{tx.name}: {sent} files sent for one write"


def test_fanout_three_jobs_from_one_thread(scn: Scenario, cluster: ClusterView) -> None:
    """p2pkp-fanout (one thread, one epoll set) sends three files to three different pairs of
    receivers at once: all three sockets are sending at the same time, every job ends DONE
    at both of its peers, and every copy is bit-exact."""
    tx = cluster["vm1"]
    vm2, vm3, vm4 = (cluster[n] for n in RECEIVERS)
    size = 2 * MiB
    ports = [next_port() for _ in range(3)]
    groups = [(vm2, vm3), (vm3, vm4), (vm2, vm4)]
    srcs = [scn.make_file(tx, f"src{i}", size) for i in range(3)]
    jobs = []
    for i, group in enumerate(groups):
        jobs += [(rx, scn.receiver(rx, scn.path(f"dst{i}"), ports[i])) for rx in group]
    spec = [
        f"{src}=" + ",".join(f"{rx.ipv4}:{ports[i]}" for rx in group)
        for i, ((src, _), group) in enumerate(zip(srcs, groups, strict=True))
    ]
    with rate_limited(tx, RATE_MBIT):
        fan = scn.spawn(tx, f"{FANOUT} --json " + " ".join(spec))
        tx.wait_for(
            "test $(grep -c '^sock .*role=sender state=sending' /proc/net/p2pkp) -eq 3",
            timeout=60.0,
            interval=0.1,
        )
        res = fan.wait(timeout=transfer_deadline(6 * size) + 60.0)
    assert res.rc == 0, f"{tx.name}: p2pkp-fanout exited {res.rc}:\n{res.output}"
    files = {f.file: f for f in toolout.sent(res.output)}
    assert sorted(files) == sorted(src for src, _ in srcs), res.output
    for i, ((src, _), group) in enumerate(zip(srcs, groups, strict=True)):
        done = {a: (p.state, p.acked) for a, p in files[src].results.items()}
        assert done == {f"{rx.ipv4}:{ports[i]}": ("DONE", size) for rx in group}, res.output
    summary = toolout.events(res.output, "fanout")
    assert [(e["jobs"], e["failed"]) for e in summary] == [(3, 0)], res.output
    for rx, job in jobs:
        out = job.wait(timeout=60.0).output
        ((path, got),) = parse_received(out)
        i = int(path[-1])
        assert got == size and sha256(rx, path, size) == srcs[i][1], f"{rx.name}: {path}"
