"""Issue 12 (hardening), the system-call side: what a local user, a firewall and a crash see.

Each test names its item of issue 12 in its docstring.  The wire side (forged transfers, the
cookie, START churn, DONE status) is in test_security.py.  docs/protocol.md sections 1, 3
and 8 describe the behaviour checked here.
"""

from __future__ import annotations

import re
import time

import pytest

from p2pkp_guest import wire
from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.impair import link_cut
from p2pkpvm.scenario.powercut import flakey_disk
from p2pkpvm.scenario.scenario import (
    AS_NOBODY,
    GUEST_PY,
    OP,
    SEND,
    Guest,
    MiB,
    Scenario,
    dir_without_o_tmpfile,
    listing,
    next_port,
    op,
    op_lines,
    op_result,
    proc_total,
    q,
    rate_limited,
    sha256,
    wait_output,
)
from p2pkpvm.scenario.toolout import Transcript
from p2pkpvm.vm.guest import Job

KEY_A = "a5" * 32
KEY_B = "5a" * 32
RATE_MAX = 1 << 40  # P2PKP_RATE_MAX, bytes/s
SIZE_64M = 64 * MiB
INFO_SIZE = 192  # sizeof(struct p2pkp_transfer_info)


def le64(v: int) -> str:
    return v.to_bytes(8, "little").hex()


def receiving(port: int) -> str:
    """Shell condition: this guest's receiver on `port` accepted a transfer and stored data."""
    return (
        f"grep -qE '^sock .*role=receiver state=receiving local=\\S+:{port} .*"
        "bytes_received=[1-9]' /proc/net/p2pkp"
    )


def sock_counter(vm: Guest, port: int, name: str) -> int:
    """Counter `name` of the receiver socket bound to `port` on vm."""
    out = vm.run("cat /proc/net/p2pkp").output
    for line in out.splitlines():
        if line.startswith("sock ") and re.search(rf" local=\S+:{port} ", line):
            m = re.search(rf" {name}=(-?\d+)", line)
            if m:
                return int(m[1])
    raise AssertionError(f"{vm.name}: no receiver on port {port} in /proc/net/p2pkp:\n{out}")


def test_security_1_rate_cap_cannot_oops(scn: Scenario, cluster: ClusterView) -> None:
    """Item 1: P2PKP_RATE above P2PKP_RATE_MAX is EINVAL (U64_MAX used to be accepted, and the
    token bucket's 64-bit divide faulted); at the maximum, user nobody sends 16 MiB to a
    receiver whose link is cut for 5 s mid-transfer: no oops (the harness scans dmesg), the
    file arrives once the link is back."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size = 16 * MiB
    src, digest = scn.make_file(tx, "src", size)
    port = next_port()
    dst = scn.path("dst")
    job = scn.receiver(rx, dst, port)
    ops = [
        "socket",
        f"setsockopt-raw:300:4:{'ff' * 8}",
        f"setsockopt-raw:300:4:{le64(RATE_MAX)}",
        f"connect:{rx.ipv4}:{port}",
        "echo:go",
        f"write:{src}",
    ]
    with rate_limited(tx, 16):  # 16 MiB take > 8 s: the cut lands mid-transfer
        sender = scn.op_job(tx, ops, "go", prefix=AS_NOBODY + " ")
        rx.wait_for(receiving(port), timeout=60.0, interval=0.1)
        with link_cut(rx):
            time.sleep(5.0)  # the impairment itself: 5 s without a link
        out = sender.wait(timeout=180.0).output
    sets = [line for line in op_lines(out) if line.startswith("setsockopt-raw")]
    assert [s.split(" = ")[1] for s in sets] == ["-1 EINVAL", "0"], out
    assert op_result(out, f"write {src}") == str(len(src)), out
    assert job.wait(timeout=60.0).rc == 0
    assert sha256(rx, dst, size) == digest


@pytest.mark.topology("trio")
def test_security_3_receiver_chooses_senders(scn: Scenario, cluster: ClusterView) -> None:
    """Item 3: connect() on a bound socket allows a sender (address, any port with port 0);
    a START from anyone else is dropped and counted (drop_sender) and the denied sender times
    out; connect(AF_UNSPEC) clears the list and the denied sender is served."""
    denied, rx, allowed = cluster["vm1"], cluster["vm2"], cluster["vm3"]
    src_d, digest_d = scn.make_file(denied, "d", 30_000)
    src_a, digest_a = scn.make_file(allowed, "a", 40_000)
    port = next_port()
    dst1, dst2 = scn.path("first"), scn.path("second")
    ops = [
        "socket",
        f"bind:0.0.0.0:{port}",
        f"connect:{allowed.ipv4}:0",
        "echo:ready",
        f"read:{dst1}",
        "connect:unspec",
        "echo:open",
        f"read:{dst2}",
    ]
    recv = scn.op_job(rx, ops, "ready")
    out = op(
        denied,
        ["socket", "setsockopt:peer_timeout:1500", f"connect:{rx.ipv4}:{port}", f"write:{src_d}"],
    )
    assert op_result(out, f"write {src_d}") == "-1 ETIMEDOUT", out
    assert sock_counter(rx, port, "drop_sender") > 0
    assert sock_counter(rx, port, "files_received") == 0
    res = allowed.run(f"{SEND} --to {rx.ipv4}:{port} {q(src_a)}", timeout=60.0)
    assert res.rc == 0, res.output
    wait_output(recv, r"^open", 60.0, f"{rx.name}: receiver")
    res = denied.run(f"{SEND} --to {rx.ipv4}:{port} {q(src_d)}", timeout=60.0)
    assert res.rc == 0, res.output
    out = recv.wait(timeout=60.0).output
    assert op_result(out, f"read {dst1}") == "40000", out
    assert op_result(out, f"read {dst2}") == "30000", out
    assert sha256(rx, dst1) == digest_a and sha256(rx, dst2) == digest_d


@pytest.mark.parametrize(
    ("tx_key", "rx_key", "ok"),
    [(KEY_A, KEY_A, True), ("", KEY_A, False), (KEY_B, KEY_A, False), (KEY_A, "", False)],
    ids=["same-key", "receiver-only", "other-key", "sender-only"],
)
def test_security_4_keyed_transfer(
    scn: Scenario, cluster: ClusterView, tx_key: str, rx_key: str, ok: bool
) -> None:
    """Item 4: with the same P2PKP_KEY on both ends the file arrives and /proc says auth=1; a
    missing or different key on either end gets nothing through: the receiver drops the
    sender's STARTs (a tag it cannot check, no tag, or a wrong tag) and counts them as
    drop_auth, and the sender's peer times out."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 200_000)
    port = next_port()
    dst = scn.path("dst")
    key = [f"setsockopt-raw:300:5:{rx_key}"] if rx_key else []
    recv = scn.op_job(
        rx, ["socket", f"bind:0.0.0.0:{port}", *key, "echo:ready", f"read:{dst}"], "ready"
    )
    assert re.search(
        rf"auth={1 if rx_key else 0} ",
        rx.run(f"grep 'local=0.0.0.0:{port} ' /proc/net/p2pkp").output,
    )
    key = [f"setsockopt-raw:300:5:{tx_key}"] if tx_key else []
    out = op(
        tx,
        [
            "socket",
            *key,
            "setsockopt:peer_timeout:2000",
            f"connect:{rx.ipv4}:{port}",
            f"write:{src}",
        ],
    )
    if ok:
        assert op_result(out, f"write {src}") == str(len(src)), out
        assert op_result(recv.wait(timeout=60.0).output, f"read {dst}") == "200000"
        assert sha256(rx, dst) == digest
        return
    assert op_result(out, f"write {src}") == "-1 ETIMEDOUT", out
    assert sock_counter(rx, port, "drop_auth") > 0
    assert sock_counter(rx, port, "cookies_sent") == 0, "a START got through"
    assert sock_counter(rx, port, "files_received") == 0
    assert listing(rx, scn.dir) == []


def test_security_6_firewall_owner_match(scn: Scenario, cluster: ClusterView) -> None:
    """Item 6: the UDP sockets work for the caller: an nftables `meta skuid` drop rule for
    user nobody stops nobody's P2PKP datagrams (counted by the rule), while root's transfer
    through the same rule passes."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 50_000)
    port = next_port()
    table = "p2pkp_owner"
    tx.run(
        f"nft add table inet {table} && "
        f"nft add chain inet {table} out '{{ type filter hook output priority 0; }}' && "
        f"nft add rule inet {table} out meta skuid nobody udp dport {port} counter drop"
    )
    try:
        job = scn.receiver(rx, scn.path("dst"), port, count=1)
        out = op(
            tx,
            ["socket", "setsockopt:peer_timeout:1500", f"connect:{rx.ipv4}:{port}", f"write:{src}"],
            prefix=AS_NOBODY + " ",
        )
        assert op_result(out, f"write {src}") == "-1 ETIMEDOUT", out
        rule = tx.run(f"nft list chain inet {table} out").output
        m = re.search(r"counter packets (\d+)", rule)
        assert m and int(m[1]) > 0, f"{tx.name}: the skuid rule matched nothing:\n{rule}"
        assert sock_counter(rx, port, "dgrams_received") == 0
        res = tx.run(f"{SEND} --to {rx.ipv4}:{port} {q(src)}", timeout=60.0)
        assert res.rc == 0, res.output
        assert job.wait(timeout=60.0).rc == 0
        assert sha256(rx, scn.path("dst")) == digest
    finally:
        tx.run(f"nft delete table inet {table}")


def test_security_6_buffers_within_sysctl_limits(scn: Scenario, cluster: ClusterView) -> None:
    """Item 6: without CAP_NET_ADMIN the UDP sockets' buffers stay within net.core.rmem_max
    and wmem_max (the kernel doubles the value, as for SO_RCVBUF); root gets the 4 MiB
    receive buffer (8 MiB as the kernel counts it)."""
    rx = cluster["vm2"]
    rmem = int(rx.run("cat /proc/sys/net/core/rmem_max").output.strip())
    wmem = int(rx.run("cat /proc/sys/net/core/wmem_max").output.strip())
    assert rmem < (4 << 20), f"{rx.name}: rmem_max {rmem} does not limit anything"
    for who, prefix in (("nobody", AS_NOBODY + " "), ("root", "")):
        port = next_port()
        job = scn.op_job(
            rx,
            ["socket", f"bind:0.0.0.0:{port}", "echo:ready", "sleep:20000"],
            "ready",
            prefix=prefix,
        )
        line = rx.run(f"grep 'local=0.0.0.0:{port} ' /proc/net/p2pkp").output
        bufs = re.search(r" rcvbuf=(\d+) sndbuf=(\d+)", line)
        assert bufs, f"{rx.name}: no rcvbuf/sndbuf in /proc/net/p2pkp:\n{line}"
        rcv, snd = int(bufs[1]), int(bufs[2])
        if who == "nobody":
            assert rcv <= 2 * rmem and snd <= 2 * wmem, line
        else:
            assert rcv == 8 << 20, line
        job.kill()


def test_security_8_no_stack_bytes(scn: Scenario, cluster: ClusterView) -> None:
    """Item 8: P2PKP_LAST_TRANSFER's peer (a sockaddr_storage) holds the IPv4 address and
    nothing else: every byte after the sockaddr_in is zero, on the receiver (filled from what
    UDP returned) and on the sender."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, _ = scn.make_file(tx, "src", 10_000)
    port = next_port()
    dst = scn.path("dst")
    recv = scn.op_job(
        rx,
        [
            "socket",
            f"bind:0.0.0.0:{port}",
            "echo:ready",
            f"read:{dst}",
            f"getsockopt-raw:300:3:{INFO_SIZE}",
        ],
        "ready",
    )
    out_tx = op(
        tx,
        [
            "socket",
            f"connect:{rx.ipv4}:{port}",
            f"write:{src}",
            f"getsockopt-raw:300:3:{INFO_SIZE}",
        ],
    )
    out_rx = Transcript(recv.wait(timeout=60.0).output)
    for vm, out in ((tx, out_tx), (rx, out_rx)):
        m = re.search(
            r"^getsockopt-raw 300:3 \d+ = 0 optlen=(\d+) data=([0-9a-f]+)$", out, re.MULTILINE
        )
        assert m and int(m[1]) == INFO_SIZE, f"{vm.name}:\n{out}"
        peer = bytes.fromhex(m[2])[:128]
        assert peer[:2] == (2).to_bytes(2, "little"), f"{vm.name}: not AF_INET: {peer.hex()}"
        assert peer[16:] == bytes(112), f"{vm.name}: bytes after sockaddr_in: {peer.hex()}"


# From the moment rx's socket on port argv[2] has stored the file (files_received=1 in
# /proc/net/p2pkp), SIGALRM to pid argv[1] every 10 ms until it exits or is a zombie: the
# first lands within the 1 s linger.  Prints "watching" once it runs, so the test can start
# the sender after that.
_SIGNAL_AFTER_COMMIT = """
import os, re, signal, sys, time
pid, port = int(sys.argv[1]), sys.argv[2]
stored = re.compile(r"^sock .* local=\\S+:" + port + r" .* files_received=1 ", re.M)
print("watching", flush=True)
deadline = time.monotonic() + 600
while not stored.search(open("/proc/net/p2pkp").read()):
    if time.monotonic() > deadline:
        sys.exit("the file was never stored")
    time.sleep(0.002)
sent = 0
try:
    while open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        os.kill(pid, signal.SIGALRM)
        sent += 1
        time.sleep(0.01)
except (FileNotFoundError, ProcessLookupError):
    pass
print(f"signals sent: {sent}", flush=True)
"""


def test_security_9_signal_after_commit_returns_size(scn: Scenario, cluster: ClusterView) -> None:
    """Item 9: a signal (handler without SA_RESTART) that lands after the file got its name,
    while read() lingers for the sender's DONE_ACK (dropped here by nftables), makes read()
    return the size, not EINTR."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 100_000)
    port = next_port()
    dst = scn.path("dst")
    table = "p2pkp_doneack"
    # DONE_ACK is type 8: byte 5 of the UDP payload, bit 64 + 40 of the transport header.
    tx.run(
        f"nft add table inet {table} && "
        f"nft add chain inet {table} out '{{ type filter hook output priority 0; }}' && "
        f"nft add rule inet {table} out udp dport {port} @th,104,8 8 counter drop"
    )
    try:
        recv = scn.op_job(
            rx,
            [
                "pid",
                "socket",
                f"bind:0.0.0.0:{port}",
                "alarm:0",
                "echo:ready",
                f"read:{dst}",
                "alarms",
            ],
            "ready",
        )
        pid = int(op_result(recv.output(), "pid"))
        # The signaller runs and watches before the sender starts: on the debug kernel its
        # start-up (seconds) outlasted the transfer and the 1 s linger, and no signal landed.
        signaller = scn.spawn(rx, f"{GUEST_PY} -c {q(_SIGNAL_AFTER_COMMIT)} {pid} {port}")
        wait_output(signaller, r"^watching$", timeout=120.0, what="the signaller")
        res = tx.run(f"{SEND} --to {rx.ipv4}:{port} {q(src)}", timeout=60.0)
        assert res.rc == 0, res.output
        out = recv.wait(timeout=60.0).output
    finally:
        tx.run(f"nft delete table inet {table}")
    assert op_result(out, f"read {dst}") == "100000", out
    alarms = int(op_result(out, "alarms"))
    assert alarms >= 1, f"no signal landed during read():\n{out}\n{signaller.output()}"
    assert sha256(rx, dst) == digest


def _sender_job(scn: Scenario, tx: Guest, rx: Guest, port: int, src: str, extra: list[str]) -> Job:
    ops = [
        "pid",
        "socket",
        f"connect:{rx.ipv4}:{port}",
        *extra,
        "echo:go",
        f"write:{src}",
        "alarms",
    ]
    return scn.op_job(tx, ops, "go")


def test_security_10_stop_does_not_wait_for_transfer(scn: Scenario, cluster: ClusterView) -> None:
    """Item 10: SIGSTOP takes effect at once during a 64 MiB write() (the process shows state
    T while the transfer goes on: the receiver keeps storing data), and after SIGCONT the
    write completes bit-exact."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", SIZE_64M)
    port = next_port()
    dst = scn.path("dst")
    job = scn.receiver(rx, dst, port)
    with rate_limited(tx, 96):  # > 5 s for 64 MiB on any accelerator
        sender = _sender_job(scn, tx, rx, port, src, [])
        pid = int(op_result(sender.output(), "pid"))
        rx.wait_for(receiving(port), timeout=60.0, interval=0.1)
        tx.run(f"kill -STOP {pid}")
        tx.wait_for(f"grep -q '^State:.*T' /proc/{pid}/status", timeout=5.0, interval=0.1)
        first = sock_counter(rx, port, "bytes_received")
        # the transfer goes on while the sender is stopped
        rx.wait_for(
            f"test \"$(grep -oE 'local=[^ ]+:{port} .*' /proc/net/p2pkp | "
            f"grep -oE 'bytes_received=[0-9]+' | cut -d= -f2)\" -gt {first}",
            timeout=30.0,
            interval=0.2,
        )
        tx.run(f"kill -CONT {pid}")
        out = sender.wait(timeout=300.0).output
    assert op_result(out, f"write {src}") == str(len(src)), out
    assert job.wait(timeout=60.0).rc == 0
    assert sha256(rx, dst, SIZE_64M) == digest


def test_security_10_freezer_does_not_wait_for_transfer(
    scn: Scenario, cluster: ClusterView
) -> None:
    """Item 10: the cgroup v2 freezer freezes a process in a 64 MiB write() at once (what
    suspend needs); thawed, the write completes bit-exact."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", SIZE_64M)
    port = next_port()
    dst = scn.path("dst")
    cg = "/sys/fs/cgroup/p2pkp-freeze"
    tx.run("grep -q cgroup2 /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup")
    tx.run(f"mkdir -p {cg}")
    job = scn.receiver(rx, dst, port)
    try:
        with rate_limited(tx, 96):
            sender = _sender_job(scn, tx, rx, port, src, [])
            pid = int(op_result(sender.output(), "pid"))
            tx.run(f"echo {pid} > {cg}/cgroup.procs")
            rx.wait_for(receiving(port), timeout=60.0, interval=0.1)
            tx.run(f"echo 1 > {cg}/cgroup.freeze")
            tx.wait_for(f"grep -q '^frozen 1' {cg}/cgroup.events", timeout=5.0, interval=0.1)
            tx.run(f"echo 0 > {cg}/cgroup.freeze")
            out = sender.wait(timeout=300.0).output
    finally:
        tx.run(
            f"echo 0 > {cg}/cgroup.freeze; for p in $(cat {cg}/cgroup.procs); do "
            f"echo $p > /sys/fs/cgroup/cgroup.procs; done; rmdir {cg}",
            check=False,
        )
    assert op_result(out, f"write {src}") == str(len(src)), out
    assert job.wait(timeout=60.0).rc == 0
    assert sha256(rx, dst, SIZE_64M) == digest


def test_security_10_sa_restart_signals_do_not_abort(scn: Scenario, cluster: ClusterView) -> None:
    """Item 10: a handler with SA_RESTART firing every 20 ms (like SIGCHLD in a busy program)
    on both ends does not abort a 64 MiB transfer: write() returns the length, read() the
    size, and both processes handled signals meanwhile."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", SIZE_64M)
    port = next_port()
    dst = scn.path("dst")
    recv = scn.op_job(
        rx,
        [
            "socket",
            f"bind:0.0.0.0:{port}",
            "alarm-restart:20",
            "echo:ready",
            f"read:{dst}",
            "alarms",
        ],
        "ready",
    )
    sender = _sender_job(scn, tx, rx, port, src, ["alarm-restart:20"])
    out_tx = sender.wait(timeout=300.0).output
    out_rx = recv.wait(timeout=60.0).output
    assert op_result(out_tx, f"write {src}") == str(len(src)), out_tx
    assert op_result(out_rx, f"read {dst}") == str(SIZE_64M), out_rx
    assert int(op_result(out_tx, "alarms")) > 0 and int(op_result(out_rx, "alarms")) > 0
    assert sha256(rx, dst, SIZE_64M) == digest


def test_security_11_late_receiver_is_reached(scn: Scenario, cluster: ClusterView) -> None:
    """Item 11: ICMP port unreachable is a hint: a receiver started 3 s after the sender
    (whose STARTs meanwhile draw ICMP errors, counted as icmp_errors) still gets the file."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 100_000)
    port = next_port()
    dst = scn.path("dst")
    before = proc_total(tx)
    # The peer timeout outlasts the 3 s and the start of the receiver however slow the guest
    # kernel is (debug: x6); only the ICMP errors are the subject here.
    patience = f"setsockopt:peer_timeout:{int(60000 * tx.time_scale)}"
    sender = _sender_job(scn, tx, rx, port, src, [patience])
    time.sleep(3.0)  # the scenario itself: the receiver starts 3 s late
    job = scn.receiver(rx, dst, port)
    out = sender.wait(timeout=60.0).output
    assert op_result(out, f"write {src}") == str(len(src)), out
    assert job.wait(timeout=60.0).rc == 0
    assert sha256(rx, dst) == digest
    after = proc_total(tx)
    assert after["icmp_errors"] > before["icmp_errors"], (before, after)


def test_security_12_fallback_without_o_tmpfile(scn: Scenario, cluster: ClusterView) -> None:
    """Item 12 (and 1.4): on a file system without O_TMPFILE (a FUSE mirror, see
    dir_without_o_tmpfile), the file lives under a hidden `.p2pkp-<hex>` name during the
    transfer, never under its final name; a receiver killed mid-transfer leaves nothing
    behind."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, digest = scn.make_file(tx, "src", 8 * MiB)
    with dir_without_o_tmpfile(rx, f"{scn.dir}-nottmp") as inbox:
        for keep in (False, True):
            port = next_port()
            dst = f"{inbox}/dst"
            ops = ["pid", "socket", f"bind:0.0.0.0:{port}", "echo:ready", f"read:{dst}"]
            recv = scn.op_job(rx, ops, "ready")
            pid = int(op_result(recv.output(), "pid"))
            with rate_limited(tx, 32):
                sender = scn.spawn(
                    tx,
                    f"{OP} socket setsockopt:peer_timeout:3000 connect:{rx.ipv4}:{port} "
                    + q("write:" + src),
                )
                rx.wait_for(receiving(port), timeout=60.0, interval=0.1)
                names = listing(rx, inbox)
                assert len(names) == 1 and re.fullmatch(r"\.p2pkp-[0-9a-f]{16}", names[0]), names
                if not keep:
                    rx.run(f"kill -9 {pid}")
                    sender.wait(timeout=60.0)
                    rx.wait_for(f'test -z "$(ls -A {q(inbox)})"', timeout=30.0)
                    continue
                sender.wait(timeout=120.0)
            out = recv.wait(timeout=60.0).output
            assert op_result(out, f"read {dst}") == str(8 * MiB), out
            assert listing(rx, inbox) == ["dst"]
            assert sha256(rx, dst, 8 * MiB) == digest


@pytest.mark.parametrize("fsync", [1])
def test_security_12_file_survives_power_cut(
    scn: Scenario, cluster: ClusterView, fsync: int
) -> None:
    """Item 12: with P2PKP_FSYNC (the default) a file that read() returned survives a power
    cut of the receiving machine, simulated as xfstests does: ext4 on dm-flakey, all writes
    dropped right after read() returns, then the file system remounted (journal replay)."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    size = 4 * MiB
    src, digest = scn.make_file(tx, "src", size)
    with flakey_disk(rx, scn.dir, "flakey") as disk:
        mnt = disk.mnt
        port = next_port()
        dst = f"{mnt}/dst"
        recv = scn.op_job(
            rx,
            [
                "socket",
                f"bind:0.0.0.0:{port}",
                f"setsockopt-raw:300:6:{fsync:02x}000000",
                "echo:ready",
                f"read:{dst}",
                "echo:stored",
            ],
            "ready",
        )
        res = tx.run(f"{SEND} --to {rx.ipv4}:{port} {q(src)}", timeout=60.0)
        assert res.rc == 0, res.output
        wait_output(recv, r"^stored", 60.0, f"{rx.name}: receiver")
        # The power cut: as soon as read() returned, every write is dropped.
        disk.cut()
        disk.remount()
        assert op_result(recv.wait(timeout=30.0).output, f"read {dst}") == str(size)
        assert listing(rx, mnt) == ["dst", "lost+found"], listing(rx, mnt)
        assert sha256(rx, dst, size) == digest


def test_security_13_proc_read_in_pieces_while_sockets_churn(
    scn: Scenario, cluster: ClusterView
) -> None:
    """Item 13: /proc/net/p2pkp is a seq_file over an RCU list: read 64 bytes at a time (many
    read() calls, each a new walk) while sockets are made and closed, every line is whole, the
    header comes first and the total line last, and the 64 x 64 peer lines all show."""
    vm, peer = cluster["vm1"], cluster["vm2"]
    peers = [f"connect:{peer.ipv4}:{9000 + i}" for i in range(64)]
    holders = []
    for _ in range(4):
        ops = ["socket", *peers] * 16
        # held until killed below: a holder that exited mid-listing (a 60 s sleep did, on the
        # debug kernel) closes its sockets, and a socket closed before the reader reaches it
        # is rightly not shown
        holders.append(scn.op_job(vm, [*ops, "echo:held", "sleep:3600000"], "held"))
    # 64 sockets x 64 peers must exist before a missing line can mean a skipped one
    failed = [c.line for job in holders for c in job.output().calls if c.op != "echo" and c.ret < 0]
    assert not failed, f"{len(failed)} calls of the holders failed, first: {failed[:3]}"
    churn = scn.spawn(vm, f"while :; do {OP} socket bind:127.0.0.1:0 close >/dev/null; done")
    for _ in range(3):
        out = vm.run("dd if=/proc/net/p2pkp bs=64 2>/dev/null", timeout=60.0).output
        lines = [line for line in out.splitlines() if line]
        assert lines[0].startswith("p2pkp version=2 "), lines[:2]
        assert lines[-1].startswith("total ") and sum(x.startswith("total ") for x in lines) == 1
        # a whole sock line ends with the last counter, a whole peer line with its last
        # field (docs/protocol.md 5)
        whole = rf"sock inode=\d+ .* {wire.STAT_NAMES[-1]}=\d+|peer inode=\d+ .* group=[01]"
        for line in lines[1:-1]:
            assert re.fullmatch(whole, line), line
        sock_words = [line.split() for line in lines if line.startswith("sock ")]
        socks = [w[1] for w in sock_words]
        assert len(socks) == len(set(socks)), "a socket was shown twice"
        alive = vm.run(" && ".join(f"kill -0 {job.pid}" for job in holders), check=False)
        assert alive.rc == 0, "a holder exited during the listing: the count below means nothing"
        shown = [(w[1], next(x for x in w if x.startswith("peers="))) for w in sock_words]
        assert sum(line.startswith("peer ") for line in lines) >= 64 * 64, (
            f"{len(socks)} sockets shown, the 64 holders' have peers=64: {shown}"
        )
    churn.kill()
    for job in holders:
        job.kill()


# Reads /proc/net/p2pkp 64 bytes at a time up to the end of the total line, makes a socket, reads
# again: what a reader gets after the total line (it must be nothing: end of file).
_AFTER_TOTAL = """
import os, socket, sys
fd = os.open("/proc/net/p2pkp", os.O_RDONLY)
buf = b""
while not (buf.endswith(b"\\n") and buf.split(b"\\n")[-2].startswith(b"total ")):
    chunk = os.read(fd, 64)
    if not chunk:
        sys.exit("end of file before the total line: " + repr(buf[-300:]))
    buf += chunk
s = socket.socket(int(sys.argv[1]), socket.SOCK_DGRAM, 0)
print("after-total=" + repr(os.read(fd, 4096)))
"""


def test_security_13_nothing_after_the_total_line(scn: Scenario, cluster: ClusterView) -> None:
    """Item 13: the total line ends the listing: a socket made after a reader has read the total
    line, before its next read(), is not shown after it (the reader gets end of file).  This is
    the race the churn test above hit in CI, made deterministic."""
    vm = cluster["vm1"]
    family = vm.run("cat /sys/module/p2pkp/parameters/family").output.strip()
    out = vm.run(f"{GUEST_PY} -c {q(_AFTER_TOTAL)} {family}", timeout=60.0).output
    assert "after-total=b''" in out, out
