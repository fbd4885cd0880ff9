"""The vm-up server and the --attach client over a real unix socket, with fake guests."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.cluster.remote import AttachedCluster, ClusterServer, request, shutdown
from p2pkpvm.errors import CommandFailed, GuestDied, HarnessError
from p2pkpvm.kernel.choice import KernelChoice
from p2pkpvm.net.topology import load_topology, topology_dict
from p2pkpvm.vm.console import CommandResult


class FakeVM:
    def __init__(self, name: str, ipv4: str) -> None:
        self.name, self.ipv4, self.tap = name, ipv4, "tap0"
        self.ipv6: str | None = None
        self.alive, self.boot_seconds = True, 12.5
        self.dead_reason: str | None = None
        self.seen: list[tuple[str, float]] = []

    def _run(self, cmd: str, timeout: float, check: bool) -> CommandResult:
        self.seen.append((cmd, timeout))
        if cmd == "panic":
            self.alive, self.dead_reason = False, "guest died"
            raise GuestDied(self.name, cmd, "qemu exited", "Kernel panic - not syncing")
        return CommandResult(3 if cmd == "false" else 0, f"out of {cmd}\n")

    def kernel_log(self) -> str:
        return "[ 1.0] hello\n"


class FakeCluster:
    def __init__(self, logdir: Path, vms: list[FakeVM]) -> None:
        self.run_id, self.accel, self.logdir, self.vms = "r1", "tcg", logdir, vms
        self.netns = SimpleNamespace(name="p2pkp-1-abc")
        self.kernel = KernelChoice(
            "debug", Path("/k/bzImage"), Path("/m/p2pkp.ko"), 6.0, ("x=1",), True
        )

    def __getitem__(self, name: str) -> FakeVM:
        return next(v for v in self.vms if v.name == name)

    def replace(self, name: str) -> FakeVM:
        new = FakeVM(name, self[name].ipv4)
        self.vms[[v.name for v in self.vms].index(name)] = new
        return new


@pytest.fixture
def served(tmp_path: Path) -> Any:
    topo = load_topology("pair")
    vms = [FakeVM(g.name, str(g.ipv4.ip)) for g in topo.guests]
    cluster = cast(Cluster, FakeCluster(tmp_path, vms))
    sock = tmp_path / "c.sock"
    server = ClusterServer(cluster, sock, topology_dict(topo))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield sock, vms
    shutdown(sock)
    thread.join(timeout=10)
    assert not thread.is_alive() and not sock.exists()


def test_attach_runs_commands_in_the_served_guests(served: Any) -> None:
    sock, vms = served
    c = AttachedCluster(sock)
    assert [v.name for v in c.vms] == ["vm1", "vm2"] and c.accel == "tcg"
    assert c.kernel.module == Path("/m/p2pkp.ko") and c.kernel.time_scale == 6.0
    assert c.topology.covers(load_topology("pair")) and c.netns.name == "p2pkp-1-abc"
    vm2 = c["vm2"]
    assert vm2.module == Path("/m/p2pkp.ko") and vm2.ipv4 == "10.99.0.2"
    assert vm2.run("echo hi", timeout=10).output == "out of echo hi\n"
    assert vms[1].seen == [("echo hi", 60.0)]  # the deadline scaled once, by the client
    with pytest.raises(CommandFailed):
        vm2.run("false")
    assert vm2.kernel_log() == "[ 1.0] hello\n"


def test_a_dead_guest_is_reported_and_replaced(served: Any) -> None:
    sock, _ = served
    c = AttachedCluster(sock)
    vm1 = c["vm1"]
    with pytest.raises(GuestDied, match="qemu exited"):
        vm1.run("panic", timeout=5)
    assert not vm1.alive and vm1.dead_reason == "guest died"
    assert c.replace("vm1").alive


def test_no_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"no running cluster .*`make vm-up"):
        request(tmp_path / "none.sock", {"op": "info"}, 5.0)
