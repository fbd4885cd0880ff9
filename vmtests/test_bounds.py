"""Resource bounds under hostile input (issue 7, part 3).

A flood of fake transfers must not exhaust kernel memory or disk; a stale transfer is
abandoned and its data discarded; replies to spoofable sources are rate-limited; files above
the maximum size or the free space are refused.  Wire version 2 (docs/protocol.md 2.3): a
receiver keeps no state for a START until the sender echoes its cookie.  Memory and disk are
measured before and after and compared with generous documented bounds (bounds, not timings).
A module without one of these bounds (no such counter in /proc/net/p2pkp, no such module
parameter) fails the test that needs it.
"""

from __future__ import annotations

import re
import time

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.scenario.scenario import (
    WIRE,
    Guest,
    Scenario,
    listing,
    module_param_at,
    next_port,
    proc_sock,
    proc_total,
    q,
    sha256,
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
    """20,000 STARTs of new transfers from 200 source ports at a receiver in read() (7 in 8
    with cookie 0, 1 in 8 with a guessed cookie; every one counted as predicted): slab growth,
    MemAvailable loss and disk use stay under the documented bounds, the directory does not
    change (a START creates nothing: wire v2 keeps no state before the confirmed START, and
    read() made its file, O_TMPFILE or one hidden fallback name, before the flood), nothing is
    accepted, and the replies (START_ACK with a cookie, BUSY) to the spoofable sources are
    rate-limited."""
    vm = cluster["vm1"]
    port = next_port()
    local = f"127.0.0.1:{port}"
    vm.run("sync; echo 3 > /proc/sys/vm/drop_caches")
    m0, d0, c0 = meminfo(vm), disk_used_kib(vm, scn.dir), proc_total(vm)
    job = scn.receiver(vm, scn.path("out"), port, host="127.0.0.1", timeout_ms=2000)
    names0 = listing(vm, scn.dir)
    res = vm.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 3 --phases flood --count {FLOOD} "
        f"--socks {FLOOD_PORTS}",
        timeout=900.0,
        check=False,
    )
    assert res.rc == 0, res.output
    names1 = listing(vm, scn.dir)
    assert names1 == names0 and len(names1) <= 1, (
        f"the flood changed {scn.dir}: {names0} -> {names1}"
    )
    assert proc_sock(vm, local)["state"] == "waiting", "a START was accepted without its cookie"
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
        f"flood: {sent} STARTs in {secs:.1f}s, replies {replies} ({m[3]}); Slab {slab:+d} KiB, "
        f"MemAvailable {-avail:+d} KiB, disk {disk:+d} KiB; "
        f"cookies_sent +{c1['cookies_sent'] - c0.get('cookies_sent', 0)} "
        f"replies_limited +{c1['replies_limited'] - c0.get('replies_limited', 0)}"
    )
    job.kill()
    assert slab < SLAB_BOUND_KIB, f"Slab grew {slab} KiB under a START flood"
    assert avail < MEMAVAIL_BOUND_KIB, f"MemAvailable fell {avail} KiB under a START flood"
    assert disk < DISK_BOUND_KIB, f"disk use grew {disk} KiB under a START flood"
    bound = RL_BURST + RL_PER_SEC * (secs + 1.0)
    assert replies <= bound, f"{replies} replies to {sent} STARTs in {secs:.1f}s > {bound:.0f}"
    assert c1["replies_limited"] > c0.get("replies_limited", 0)


def test_stale_transfer_abandoned(scn: Scenario, cluster: ClusterView) -> None:
    """A confirmed transfer of which only the last chunk arrives, then silence: the receiver
    abandons it after its peer timeout (xfers_abandoned), serves the next sender (read() keeps
    waiting), the abandoned bytes do not reach the next file (its size and SHA-256 are the
    next sender's), and nothing is left in the directory but the file.  (v1 also watched a
    temporary file .out.p2pkp-ID appear and go: v2 writes an O_TMPFILE, or one hidden
    fallback name made by read() itself, so the equivalent claim is about the file's bytes.)"""
    vm = cluster["vm1"]
    port = next_port()
    out = scn.path("out")
    c0 = proc_total(vm)
    job = scn.receiver(vm, out, port, host="127.0.0.1", timeout_ms=3000)
    res = vm.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 5 --phases stale --size {20 * 1400}",
        timeout=60.0,
    )
    assert "stale id=" in res.output, res.output
    deadline = time.monotonic() + 60.0
    while proc_total(vm)["xfers_abandoned"] == c0["xfers_abandoned"]:
        assert time.monotonic() < deadline, "the silent transfer was not abandoned within 60 s"
        time.sleep(0.5)
    c1 = proc_total(vm)
    assert c1["xfers_abandoned"] - c0["xfers_abandoned"] == 1, f"{c0} -> {c1}"
    assert proc_sock(vm, f"127.0.0.1:{port}")["state"] == "waiting"
    # read() is still waiting: a valid transfer is served, and only its bytes are in the file
    res = vm.run(
        f"{WIRE} --target 127.0.0.1:{port} --seed 6 --phases send --size 4000", timeout=60.0
    )
    m = re.search(r"sha256=([0-9a-f]{64}) done_status=0$", res.output, re.MULTILINE)
    assert m, res.output
    assert job.wait(timeout=30.0).rc == 0
    assert vm.run(f"stat -c %s {q(out)}").output.strip() == "4000", "abandoned bytes kept"
    assert sha256(vm, out) == m[1]
    assert listing(vm, scn.dir) == ["out"]


def test_max_file_size_refused(scn: Scenario, cluster: ClusterView) -> None:
    """A START above the max_file_size module parameter is refused with DONE(-EFBIG) and
    counted as refused_size; nothing is created; read() keeps waiting."""
    vm = cluster["vm1"]
    with module_param_at(vm, "max_file_size", 10000):
        port = next_port()
        c0 = proc_total(vm)
        job = scn.receiver(vm, scn.path("out"), port, host="127.0.0.1")
        names = listing(vm, scn.dir)  # read() made its file (O_TMPFILE or a hidden fallback)
        res = vm.run(f"{WIRE} --target 127.0.0.1:{port} --phases send --size 20000", timeout=60.0)
        assert "done_status=-27" in res.output, f"expected DONE(-EFBIG):\n{res.output}"
        assert listing(vm, scn.dir) == names, "the refused START created something"
        assert proc_total(vm)["refused_size"] > c0.get("refused_size", 0)
        res = vm.run(f"{WIRE} --target 127.0.0.1:{port} --phases send --size 9000", timeout=60.0)
        assert "done_status=0" in res.output, res.output
        assert job.wait(timeout=30.0).rc == 0


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
