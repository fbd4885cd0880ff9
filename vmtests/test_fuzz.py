"""Hostile input: the wire fuzzer (tools/p2pkp_guest/p2pkp-fuzz-wire) and the syscall fuzzer
(tools/p2pkp-fuzz-sys) against the module in a guest.

Seeds: P2PKP_FUZZ_SEED (decimal) fixes the seed of every campaign; otherwise a random one is
drawn and printed in every assertion message, so a failure names the seed that reproduces it.
Counts: the fast suite sends ~10,000 datagrams and runs ~1,000 syscall sequences; the
@pytest.mark.long campaigns send >= 100,000 datagrams and run >= 10,000 sequences.
"""

from __future__ import annotations

import os
import random
import re

import pytest

from p2pkp_guest.wire import DROP_REASONS
from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import (
    SEND,
    TOOLS,
    WIRE,
    Guest,
    MiB,
    Scenario,
    listing,
    module_ko,
    next_port,
    parse_received,
    proc_total,
    q,
    rate_limited,
    sha256,
    transfer_deadline,
)

SYS = str(TOOLS / "p2pkp-fuzz-sys")
# Receiver peer timeout during the wire campaigns: fake transfers left by the random phase
# are abandoned this fast, so the valid transfer afterwards is not answered BUSY for long.
RX_TIMEOUT_MS = 3000
# Reasons the stateless and xfer phases always produce (docs/protocol.md 2.1): all of them.
EXPECTED_REASONS = DROP_REASONS


def seed() -> int:
    env = os.environ.get("P2PKP_FUZZ_SEED")
    return int(env) if env else random.randrange(1 << 31)


def wire_campaign(scn: Scenario, vm: Guest, per_phase: int, s: int) -> None:
    """Fuzz a receiver on vm's loopback, then check a valid transfer is still bit-exact."""
    port = next_port()
    out = scn.path("out")
    src_dir = f"{scn.dir}-src"
    vm.run(f"mkdir -p {q(src_dir)}")
    try:
        before = proc_total(vm)
        job = scn.receiver(vm, out, port, host="127.0.0.1", timeout_ms=RX_TIMEOUT_MS)
        cmd = (
            f"{WIRE} --target 127.0.0.1:{port} --seed {s} --count {per_phase} "
            "--phases stateless,xfer,random"
        )
        res = vm.run(cmd, timeout=60.0 + per_phase * 0.05, check=False)
        print(res.output)
        m = re.search(r"^total sent=(\d+) ", res.output, re.MULTILINE)
        assert res.rc == 0 and m and int(m[1]) >= 3 * per_phase, (
            f"{vm.name}: wire fuzzer failed (seed {s}, rc {res.rc}):\n{res.output}"
        )
        after = proc_total(vm)
        delta = {k: after[k] - before.get(k, 0) for k in after}
        missing = [r for r in EXPECTED_REASONS if delta.get(r, 0) <= 0]
        assert not missing, f"seed {s}: drop counters that did not rise: {missing}: {delta}"
        assert delta["dgrams_dropped"] >= 2 * per_phase, f"seed {s}: {delta}"
        # The receiver still serves a real sender, bit-exact.
        path = f"{src_dir}/file"
        vm.run(f"head -c {MiB} /dev/urandom > {q(path)}")
        digest = sha256(vm, path)
        sent = vm.run(
            f"{SEND} --timeout 30000 --to 127.0.0.1:{port} {q(path)}",
            timeout=transfer_deadline(MiB) + 30.0,
            check=False,
        )
        assert sent.rc == 0, f"seed {s}: valid transfer after fuzzing failed:\n{sent.output}"
        got = job.wait(timeout=60.0)
        assert got.rc == 0 and parse_received(got.output) == [(out, MiB)], got.output
        assert sha256(vm, out, MiB) == digest, f"seed {s}: received file differs"
        assert listing(vm, scn.dir) == ["out"], f"seed {s}: leftovers in {scn.dir}"
    finally:
        vm.run(f"rm -rf {q(src_dir)}")


@pytest.mark.topology("pair")
@pytest.mark.timeout_s(600)
def test_wire_fuzz(scn: Scenario, cluster: ClusterView) -> None:
    """~10,000 crafted datagrams (3 phases); counters as predicted; then a bit-exact transfer."""
    wire_campaign(scn, cluster["vm1"], 3400, seed())


@pytest.mark.long
@pytest.mark.topology("pair")
@pytest.mark.timeout_s(3600)
def test_wire_fuzz_long(scn: Scenario, cluster: ClusterView) -> None:
    """>= 100,000 crafted datagrams."""
    wire_campaign(scn, cluster["vm1"], 34000, seed())


@pytest.mark.topology("pair")
@pytest.mark.timeout_s(300)
def test_wire_empty_datagrams_counted(scn: Scenario, cluster: ClusterView) -> None:
    """Zero-length datagrams are drops of reason drop_short like any datagram shorter than
    the header."""
    vm = cluster["vm1"]
    port = next_port()
    scn.receiver(vm, scn.path("out"), port, host="127.0.0.1")
    res = vm.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 1 --phases empty --count 50",
        timeout=120.0,
        check=False,
    )
    assert res.rc == 0, res.output


@pytest.mark.topology("pair")
@pytest.mark.timeout_s(300)
def test_wire_bad_digest_leaves_nothing(scn: Scenario, cluster: ClusterView) -> None:
    """A complete fake transfer with a wrong SHA-256: read fails EBADMSG, nothing on disk."""
    vm = cluster["vm1"]
    s = seed()
    port = next_port()
    out = scn.path("out")
    job = scn.receiver(vm, out, port, host="127.0.0.1")
    res = vm.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed {s} --phases baddigest",
        timeout=120.0,
        check=False,
    )
    assert res.rc == 0, f"seed {s}: {res.output}"
    got = job.wait(timeout=60.0)
    errs = [(e.call, e.errno) for e in toolout.errors(got.output)]
    assert got.rc == 1 and errs == [("read", "EBADMSG")], got.output
    assert listing(vm, scn.dir) == [], f"seed {s}: files left after EBADMSG"


@pytest.mark.topology("pair")
@pytest.mark.timeout_s(600)
def test_wire_spoofed_id_of_real_transfer(scn: Scenario, cluster: ClusterView) -> None:
    """DATA/END/ABORT carrying the id of a real transfer in flight, from other source ports
    (on the receiver's guest and on the real sender's guest): counted as drop_peer, the real
    transfer completes bit-exact."""
    rx, tx = cluster["vm1"], cluster["vm2"]
    s = seed()
    size = 8 * MiB
    port = next_port()
    src, digest = scn.make_file(tx, "src", size)
    out = scn.path("out")
    before = proc_total(rx)
    job = scn.receiver(rx, out, port, timeout_ms=30000)
    # ~17 s for 8 MiB: time to start the fuzzer and spoof.  Slower kernels (debug: Python
    # starts in seconds there) get a slower link, or the transfer ends before the fuzzer runs.
    with rate_limited(tx, 4 / tx.time_scale):
        sender = scn.spawn(tx, f"{SEND} --timeout 30000 --to {rx.ipv4}:{port} {q(src)}")
        res = rx.run(
            f"{WIRE} --target {rx.ipv4}:{port} --local 0.0.0.0:{port} --seed {s} "
            f"--phases spoof --watch {q(scn.dir)} --count 3000",
            timeout=120.0,
            check=False,
        )
        assert res.rc == 0, f"seed {s}: {res.output}"
        m = re.search(r"spoofing transfer id ([0-9a-f]{16})", res.output)
        assert m, res.output
        # the same id from the real sender's own address, another port
        res2 = tx.run(
            f"{WIRE} --target {rx.ipv4}:{port} --local - --seed {s} --phases spoof "
            f"--id {m[1]} --count 1000",
            timeout=120.0,
            check=False,
        )
        assert res2.rc == 0, f"seed {s}: {res2.output}"
        assert sender.wait(timeout=transfer_deadline(size)).rc == 0, sender.output()
    got = job.wait(timeout=60.0)
    assert got.rc == 0, got.output
    assert sha256(rx, out, size) == digest, f"seed {s}: spoofing corrupted the transfer"
    delta = proc_total(rx)["drop_peer"] - before.get("drop_peer", 0)
    assert delta > 0, f"seed {s}: no drop_peer counted"
    print(f"drop_peer +{delta}")


def sys_campaign(vm: Guest, sequences: int, s: int, peers: str) -> None:
    """Run the syscall fuzzer while rmmod is tried in a loop; the module unloads at the end."""
    counter = "/tmp/p2pkp-fuzz-unloads"
    vm.run(f"echo 0 > {counter}")
    rmmod = vm.spawn(
        f"n=0; while :; do if rmmod p2pkp 2>/dev/null; then n=$((n+1)); echo $n > {counter}; "
        f"insmod {module_ko(vm)}; fi; sleep 0.02; done"
    )
    try:
        res = vm.run(
            f"{SYS} --seed {s} --sequences {sequences} --threads 3 --peers {peers}",
            timeout=120.0 + sequences * 0.5,
            check=False,
        )
    finally:
        rmmod.kill()
    m = re.search(r"^(\d+)\s*$", vm.run(f"cat {counter}").output, re.MULTILINE)
    unloads = int(m[1]) if m else -1
    print(res.output[-3000:])
    print(f"module unloaded and reloaded {unloads} times during the campaign")
    assert res.rc == 0 and f"sequences={sequences}" in res.output, (
        f"{vm.name}: syscall fuzzer failed (seed {s}, rc {res.rc}):\n{res.output[-3000:]}"
    )
    vm.run(f"grep -q '^p2pkp ' /proc/modules || insmod {module_ko(vm)}")
    vm.wait_for("rmmod p2pkp", timeout=30.0)
    vm.run(f"insmod {module_ko(vm)}")


@pytest.mark.topology("pair")
@pytest.mark.timeout_s(900)
def test_syscall_fuzz(cluster: ClusterView, p2pkp: ClusterView) -> None:
    """~1,000 random syscall sequences on P2PKP sockets, threads, signals, rmmod in a loop."""
    vm = cluster["vm1"]
    sys_campaign(vm, 1000, seed(), f"127.0.0.1,::1,{cluster['vm2'].ipv4},{vm.ipv4}")


@pytest.mark.long
@pytest.mark.topology("pair")
@pytest.mark.timeout_s(7200)
def test_syscall_fuzz_long(cluster: ClusterView, p2pkp: ClusterView) -> None:
    """>= 10,000 random syscall sequences."""
    vm = cluster["vm1"]
    sys_campaign(vm, 10000, seed(), f"127.0.0.1,::1,{cluster['vm2'].ipv4},{vm.ipv4}")
