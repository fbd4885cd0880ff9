"""The harness itself on real guests: network, module, crash detection, timeouts, teardown."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.errors import CommandTimeout, GuestDied
from p2pkpvm.net.netns import list_namespaces
from p2pkpvm.plugin.session import leftovers

pytestmark = pytest.mark.topology("quad")
PANIC_DEADLINE_S = 60.0


def test_every_guest_reaches_every_other(cluster: ClusterView) -> None:
    assert len(cluster.vms) == 4
    macs = set()
    for vm in cluster.vms:
        assert vm.run("hostname").output.strip() == vm.name
        macs.add(vm.run("cat /sys/class/net/eth0/address").output.strip())
        for peer in cluster.vms:
            if peer is vm:
                continue
            for addr in (peer.ipv4, peer.ipv6):
                assert addr
                res = vm.run(f"ping -c1 -W5 {addr}", timeout=30, check=False)
                assert res.rc == 0, f"{vm.name} cannot reach {peer.name} at {addr}:\n{res.output}"
    assert len(macs) == 4, f"guests share MAC addresses: {macs}"


def test_module_loads_and_unloads_in_every_guest(cluster: ClusterView) -> None:
    module = cluster.vms[0].module
    assert module.exists(), f"{module} is not built: run `make`"
    for vm in cluster.vms:
        vm.run("! grep -q '^p2pkp ' /proc/modules || rmmod p2pkp", timeout=60)
        vm.run(f"insmod {module}", timeout=60)
        assert vm.module_loaded("p2pkp"), f"{vm.name}: p2pkp not in /proc/modules after insmod"
        vm.run("rmmod p2pkp", timeout=60)
        assert not vm.module_loaded("p2pkp"), f"{vm.name}: p2pkp still loaded after rmmod"


def test_hanging_command_times_out_and_console_recovers(cluster: ClusterView) -> None:
    vm = cluster.vms[0]
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        vm.run("sleep 1000", timeout=3)
    elapsed = time.monotonic() - t0
    assert info.value.vm == vm.name and info.value.command == "sleep 1000"
    assert elapsed < 30, f"timeout=3 took {elapsed:.1f} s to raise"
    assert vm.run("echo still-alive").output == "still-alive\n"
    assert vm.run("pgrep -x sleep || true").output == "", "the hanging sleep survived Ctrl-C"


def test_command_failure_and_background_job(cluster: ClusterView) -> None:
    vm = cluster.vms[1]
    res = vm.run("(echo out; echo err >&2; exit 7)", check=False)
    assert (res.rc, res.output) == (7, "out\nerr\n")
    job = vm.spawn("sleep 1; echo done-job; exit 5")
    result = job.wait(timeout=60)
    assert (result.rc, result.output) == (5, "done-job\n")
    stuck = vm.spawn("sleep 1000")
    stuck.kill()
    vm.wait_for(f"! kill -0 {stuck.pid} 2>/dev/null", timeout=10)


@pytest.mark.expect_crash
def test_guest_after_panic_is_fresh(cluster: ClusterView, heal: Callable[[], ClusterView]) -> None:
    """A guest that panicked is replaced by a freshly booted one that reaches its peers."""
    vm = cluster.vms[-1]
    boot_id = vm.run("cat /proc/sys/kernel/random/boot_id").output.strip()
    with pytest.raises(GuestDied):
        vm.run("echo c > /proc/sysrq-trigger", timeout=PANIC_DEADLINE_S)
    assert not vm.alive
    fresh = heal()[vm.name]
    assert fresh.alive
    assert fresh.run("cat /proc/sys/kernel/random/boot_id").output.strip() != boot_id
    for peer in cluster.vms:
        if peer.name != fresh.name:
            fresh.run(f"ping -c1 -W5 {peer.ipv4}", timeout=30)


@pytest.mark.expect_crash
def test_panic_is_reported_as_crash(cluster: ClusterView) -> None:
    vm = cluster.vms[-1]
    t0 = time.monotonic()
    with pytest.raises(GuestDied) as info:
        vm.run("echo c > /proc/sysrq-trigger", timeout=PANIC_DEADLINE_S)
    elapsed = time.monotonic() - t0
    err = info.value
    assert elapsed < PANIC_DEADLINE_S
    assert err.vm == vm.name
    assert "sysrq" in err.crash_summary.lower(), f"no sysrq panic in the report:\n{err}"
    assert "Kernel panic" in err.console_tail, f"console tail lacks the panic:\n{err}"
    assert not vm.alive


def _read_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith(prefix):
                return line
    raise AssertionError(f"no {prefix!r} line within {timeout:.0f} s; got: {''.join(seen)!r}")


@pytest.mark.timeout_s(600)
def test_sigterm_tears_everything_down(request: pytest.FixtureRequest) -> None:
    """A separate 1-guest cluster in a child process: SIGTERM leaves no qemu, tap or netns."""
    accel = request.config.getoption("accel")
    pin = request.config.getoption("pin")  # the run's kernel pin (make vm-test PIN=...)
    argv = [sys.executable, "-m", "p2pkpvm", *(["--pin", pin] if pin else []), "up", "--vms", "1"]
    if accel:
        argv += ["--accel", accel]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, "READY", timeout=480)
        fields = dict(f.split("=", 1) for f in line.split()[1:])
        ns = fields["netns"]
        assert ns in list_namespaces()
        pids = [
            int(p)
            for p in subprocess.run(
                ["ip", "netns", "pids", ns], check=True, capture_output=True, text=True
            ).stdout.split()
        ]
        assert pids, f"no process runs in {ns}"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert rc == 128 + signal.SIGTERM, f"`up` exited {rc} on SIGTERM: {err}"
    assert leftovers(ns, pids) == [], f"left behind after SIGTERM: {leftovers(ns, pids)}"
