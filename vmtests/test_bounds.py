"""Resource bounds under hostile input (issue 7, part 3).

A flood of fake transfers must not exhaust kernel memory or disk; a stale transfer is
abandoned and its temporary file removed; replies to spoofable sources are rate-limited;
files above the maximum size or the free space are refused.  Memory and disk are measured
before and after and compared with generous documented bounds (bounds, not timings).
A module without one of these bounds (no such counter in /proc/net/p2pkp, no such module
parameter) fails the test that needs it.
"""

from __future__ import annotations

import re

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import (
    FORGE,
    WIRE,
    Guest,
    Scenario,
    listing,
    next_port,
    proc_total,
    q,
)

FLOOD = 20000  # STARTs of new transfers in the flood test
FLOOD_PORTS = 200  # distinct source ports
# Bounds: the receiver's memory per transfer is fixed (~4 KiB of buffers + one open file);
# its UDP receive buffer is 4 MiB.  Whatever the flood, the kernel may not keep more than this.
SLAB_BOUND_KIB = 16 * 1024
MEMAVAIL_BOUND_KIB = 32 * 1024
DISK_BOUND_KIB = 1024
# Replies to sources other than the confirmed sender: docs say at most 100/s, burst 20.
RL_PER_SEC = 100
RL_BURST = 20

pytestmark = pytest.mark.topology("pair")


def meminfo(vm: Guest) -> dict[str, int]:
    out = vm.run("cat /proc/meminfo").output
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+):\s+(\d+)", out, re.MULTILINE)}


def disk_used_kib(vm: Guest, path: str) -> int:
    out = vm.run(f"df -k --output=used {q(path)} | tail -1").output.strip()
    return int(out)


def test_start_flood_bounded(scn: Scenario, cluster: ClusterView) -> None:
    """20,000 STARTs of new transfers from 200 source ports at a receiver in read():
    slab growth, MemAvailable loss and disk use stay under the documented bounds, at most one
    temporary file exists, and replies (BUSY) to the flooder are rate-limited."""
    vm = cluster["vm1"]
    port = next_port()
    vm.run("sync; echo 3 > /proc/sys/vm/drop_caches")
    m0, d0, c0 = meminfo(vm), disk_used_kib(vm, scn.dir), proc_total(vm)
    job = scn.receiver(vm, scn.path("out"), port, host="127.0.0.1", timeout_ms=2000)
    res = vm.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 3 --phases flood --count {FLOOD} "
        f"--socks {FLOOD_PORTS}",
        timeout=900.0,
        check=False,
    )
    assert res.rc == 0, res.output
    tmp = [n for n in listing(vm, scn.dir) if ".p2pkp-" in n]
    assert len(tmp) <= 1, f"more than one temporary file during a flood: {tmp}"
    vm.run("sync; echo 3 > /proc/sys/vm/drop_caches")
    m1, d1, c1 = meminfo(vm), disk_used_kib(vm, scn.dir), proc_total(vm)
    slab = m1["Slab"] - m0["Slab"]
    avail = m0["MemAvailable"] - m1["MemAvailable"]
    disk = d1 - d0
    m = re.search(r"phase=flood sent=(\d+) .*secs=([\d.]+).* replies: (.*)$", res.output, re.M)
    assert m, res.output
    sent, secs = int(m[1]), float(m[2])
    replies = sum(int(v) for v in re.findall(r"\d+=(\d+)", m[3]))
    print(
        f"flood: {sent} STARTs in {secs:.1f}s, replies {replies}; Slab {slab:+d} KiB, "
        f"MemAvailable {-avail:+d} KiB, disk {disk:+d} KiB; "
        f"busy_sent +{c1['busy_sent'] - c0['busy_sent']}"
    )
    job.kill()
    assert slab < SLAB_BOUND_KIB, f"Slab grew {slab} KiB under a START flood"
    assert avail < MEMAVAIL_BOUND_KIB, f"MemAvailable fell {avail} KiB under a START flood"
    assert disk < DISK_BOUND_KIB, f"disk use grew {disk} KiB under a START flood"
    assert "replies_limited" in c1, (
        f"module has no reply rate limit (no replies_limited counter): {replies} replies to "
        f"{sent} spoofable STARTs"
    )
    bound = RL_BURST + RL_PER_SEC * (secs + 1.0)
    assert replies <= bound, f"{replies} replies to {sent} STARTs in {secs:.1f}s > {bound:.0f}"
    assert c1["replies_limited"] > c0.get("replies_limited", 0)


def test_stale_transfer_abandoned(scn: Scenario, cluster: ClusterView) -> None:
    """A START whose sender then goes silent: the receiver abandons it after its peer timeout,
    removes the temporary file and serves the next sender (read() keeps waiting)."""
    vm = cluster["vm1"]
    port = next_port()
    c0 = proc_total(vm)
    job = scn.receiver(vm, scn.path("out"), port, host="127.0.0.1", timeout_ms=3000)
    # a forged START, DATA of the first chunk once the receiver has accepted the transfer
    # (its START_ACK), then silence: a stale transfer
    vm.run(
        f"{FORGE} --target 127.0.0.1:{port} --id 5ca1ab1e --size {10 * 1400} --chunks 1",
        timeout=60.0,
    )
    vm.wait_for(f"ls -A {q(scn.dir)} | grep -q p2pkp-", timeout=30.0)
    vm.wait_for(f"! ls -A {q(scn.dir)} | grep -q p2pkp-", timeout=60.0)
    c1 = proc_total(vm)
    gone = sum(c1.get(k, 0) - c0.get(k, 0) for k in ("xfers_abandoned", "xfers_unconfirmed"))
    assert gone >= 1, f"abandon not counted: {c0} -> {c1}"
    # read() is still waiting: a valid transfer is served
    res = vm.run(f"{WIRE} --target 127.0.0.1:{port} --phases send --size 4000", timeout=60.0)
    assert "done_status=0" in res.output, res.output
    assert job.wait(timeout=30.0).rc == 0


def test_max_file_size_refused(scn: Scenario, cluster: ClusterView) -> None:
    """A START above the max_file_size module parameter is refused with DONE(-EFBIG) and
    counted as refused_size; nothing is created; read() keeps waiting."""
    vm = cluster["vm1"]
    param = "/sys/module/p2pkp/parameters/max_file_size"
    assert vm.run(f"test -w {param}", check=False).rc == 0, f"module has no writable {param}"
    old = vm.run(f"cat {param}").output.strip()
    vm.run(f"echo 10000 > {param}")
    try:
        port = next_port()
        c0 = proc_total(vm)
        job = scn.receiver(vm, scn.path("out"), port, host="127.0.0.1")
        res = vm.run(f"{WIRE} --target 127.0.0.1:{port} --phases send --size 20000", timeout=60.0)
        assert "done_status=-27" in res.output, f"expected DONE(-EFBIG):\n{res.output}"
        assert listing(vm, scn.dir) == []
        assert proc_total(vm)["refused_size"] > c0.get("refused_size", 0)
        res = vm.run(f"{WIRE} --target 127.0.0.1:{port} --phases send --size 9000", timeout=60.0)
        assert "done_status=0" in res.output, res.output
        assert job.wait(timeout=30.0).rc == 0
    finally:
        vm.run(f"echo {old} > {param}")


def test_free_space_refused(scn: Scenario, cluster: ClusterView) -> None:
    """A START larger than the free space of the destination file system is refused with
    DONE(-ENOSPC) before anything is written; counted as refused_space."""
    vm = cluster["vm1"]
    c0 = proc_total(vm)
    assert "refused_space" in c0, "module has no free-space check (no refused_space counter)"
    small = scn.path("small")
    vm.run(f"mkdir {small} && mount -t tmpfs -o size=1m p2pkp-small {small}")
    try:
        port = next_port()
        job = scn.receiver(vm, f"{small}/out", port, host="127.0.0.1")
        res = vm.run(
            f"{WIRE} --target 127.0.0.1:{port} --phases send --size {4 << 20}", timeout=60.0
        )
        assert "done_status=-28" in res.output, f"expected DONE(-ENOSPC):\n{res.output}"
        assert listing(vm, small) == []
        assert proc_total(vm)["refused_space"] > c0["refused_space"]
        job.kill()
    finally:
        vm.run(f"umount {small}")
