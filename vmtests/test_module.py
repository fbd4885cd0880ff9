"""Module lifecycle: rmmod while in use, load/unload cycles, /proc/net/p2pkp, the family."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from p2pkp_scenario import MODULE, SEND, Guest, Scenario, next_port, op, op_result, q

FAMILY_PARAM = "/sys/module/p2pkp/parameters/family"
# A family number no Debian 6.1 module or built-in claims (NETBEUI was never implemented).
OTHER_FAMILY = 13


@pytest.fixture
def scn(request: pytest.FixtureRequest, cluster: Any, p2pkp: Any) -> Iterator[Scenario]:
    s = Scenario(cluster.vms, request.node.name)
    s.setup()
    yield s
    s.teardown()
    # Leave the module as the next test expects it: loaded with its defaults.
    for vm in cluster.vms:
        vm.run(f"grep -q '^p2pkp ' /proc/modules || insmod {MODULE}")


def loaded(vm: Guest) -> bool:
    return vm.run("grep -q '^p2pkp ' /proc/modules", check=False).rc == 0


def test_rmmod_refused_while_socket_open(scn: Scenario, cluster: Any) -> None:
    """An open socket pins the module (owner THIS_MODULE): rmmod fails, and works after close."""
    vm = cluster["vm1"]
    job = scn.op_job(vm, ["socket", "echo:open", "sleep:600000"], "open")
    res = vm.run("rmmod p2pkp 2>&1", check=False)
    assert res.rc != 0, f"{vm.name}: rmmod succeeded with a socket open:\n{res.output}"
    assert "in use" in res.output, res.output
    assert loaded(vm)
    job.kill()
    vm.wait_for("rmmod p2pkp", timeout=30.0)
    assert not loaded(vm)


def test_load_unload_ten_times(scn: Scenario, cluster: Any) -> None:
    """insmod/socket/rmmod 10 times in a row, with no kernel warning on the way."""
    vm = cluster["vm1"]
    vm.run("rmmod p2pkp")
    before = vm.run("dmesg | grep -cE 'WARNING|BUG|Oops|refcount' || true").output.strip()
    for i in range(10):
        vm.run(f"insmod {MODULE}")
        out = op(vm, ["socket", "close"])
        assert re.search(r"^socket = \d+$", out, re.MULTILINE), f"cycle {i}: {out}"
        vm.run("rmmod p2pkp")
        assert not loaded(vm), f"cycle {i}: still loaded after rmmod"
    after = vm.run("dmesg | grep -cE 'WARNING|BUG|Oops|refcount' || true").output.strip()
    assert before == after, vm.run("dmesg | tail -50").output


def proc_net(vm: Guest) -> str:
    return vm.run("cat /proc/net/p2pkp").output


def counters(text: str) -> dict[str, int]:
    """'name value' or 'name: value' pairs of /proc/net/p2pkp's counter section."""
    found: dict[str, int] = {}
    for m in re.finditer(r"^\s*([a-z_]+)\s*[:=]?\s+(\d+)\s*$", text, re.MULTILINE):
        found[m[1]] = int(m[2])
    return found


def test_proc_net_lists_sockets_and_counters(scn: Scenario, cluster: Any) -> None:
    """/proc/net/p2pkp shows a bound socket; file and byte counters grow with a transfer."""
    tx, rx = cluster["vm1"], cluster["vm2"]
    src, _ = scn.make_file(tx, "src", 50_000)
    port = next_port()
    before_rx, before_tx = counters(proc_net(rx)), counters(proc_net(tx))
    job = scn.receiver(rx, scn.path("dst"), port)
    listing = proc_net(rx)
    assert f":{port}" in listing, f"{rx.name}: bound port {port} not listed:\n{listing}"
    tx.run(f"{SEND} --to {rx.ipv4}:{port} {q(src)}", timeout=60.0)
    assert job.wait(timeout=60.0).rc == 0
    after_rx, after_tx = counters(proc_net(rx)), counters(proc_net(tx))
    grown_rx = {k for k in after_rx if after_rx[k] > before_rx.get(k, 0)}
    grown_tx = {k for k in after_tx if after_tx[k] > before_tx.get(k, 0)}
    assert grown_rx, f"{rx.name}: no counter changed:\n{proc_net(rx)}"
    assert grown_tx, f"{tx.name}: no counter changed:\n{proc_net(tx)}"
    assert any("bytes" in k for k in grown_rx), f"{rx.name}: {after_rx}"
    assert any("files" in k for k in grown_tx), f"{tx.name}: {after_tx}"


def test_family_param_readable(scn: Scenario, cluster: Any) -> None:
    """The family is in /sys/module/p2pkp/parameters/family; family=N moves it and tools follow."""
    vm = cluster["vm1"]
    family = int(vm.run(f"cat {FAMILY_PARAM}").output.strip())
    assert 0 < family < 46, family
    out = op(vm, [f"socket:dgram:0:{family}"])
    assert re.search(r"^socket = \d+$", out, re.MULTILINE), out
    vm.run("rmmod p2pkp")
    vm.run(f"insmod {MODULE} family={OTHER_FAMILY}")
    assert vm.run(f"cat {FAMILY_PARAM}").output.strip() == str(OTHER_FAMILY)
    out = op(vm, [f"socket:dgram:0:{family}", f"socket:dgram:0:{OTHER_FAMILY}", "socket"])
    assert op_result(out, "socket").startswith("-1 EAFNOSUPPORT"), out
    fds = re.findall(r"^socket = (\d+)$", out, re.MULTILINE)
    assert len(fds) == 2, f"family {OTHER_FAMILY} (explicit and from sysfs) should work:\n{out}"
    vm.run("rmmod p2pkp")
    res = vm.run(f"insmod {MODULE} family=2 2>&1", check=False)
    assert res.rc != 0, f"family=2 (AF_INET, taken) was accepted:\n{res.output}"
