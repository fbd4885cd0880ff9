"""Link MTU (topology `mtu:`): the guest-side check's parser and error text, a temporary
MTU on a guest, and what the namespace's bridge and taps are told (no VM, no root)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

import pytest

from p2pkpvm.errors import CommandFailed, HarnessError, MtuMismatch
from p2pkpvm.net import netns
from p2pkpvm.net.mtu import link_mtu, mtu_mismatch, mtu_probe, parse_mtu, set_mtu
from p2pkpvm.vm.guest import Guest
from tests.fakeguest import FakeGuest, FakeResult


def test_probe_uses_builtins_and_parses() -> None:
    probe = mtu_probe("eth0")
    assert probe == 'read -r m < /sys/class/net/eth0/mtu && echo "@mtu eth0 $m"'
    out = subprocess.run(
        ["bash", "-c", probe.replace("/sys/class/net/eth0/mtu", "/dev/stdin")],
        input="65520\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert parse_mtu(out) == 65520


def test_parse_mtu() -> None:
    assert parse_mtu("ip: noise\n@mtu eth0 1500\r\n") == 1500
    assert parse_mtu("@mtu br0 9000\n@mtu eth0 65520\n", "br0") == 9000
    assert parse_mtu("@mtu eth0 1500\n@mtu eth0 9000\n") == 9000  # the latest
    assert parse_mtu("@mtu eth1 1500\n") is None
    assert parse_mtu("") is None
    assert parse_mtu("@mtu eth0 \n") is None


def test_mtu_mismatch_text() -> None:
    assert mtu_mismatch("@mtu eth0 65520\n", 65520) == ""
    assert mtu_mismatch("@mtu eth0 1500\n", 1500) == ""
    assert mtu_mismatch("@mtu eth0 1500\n", 65520) == (
        "eth0 has MTU 1500, the topology asks for 65520: the guest did not take QEMU's "
        "host_mtu=65520 (see the kernel log for virtio_net)"
    )
    assert mtu_mismatch("@mtu eth0 9000\n", 1500) == "eth0 has MTU 9000, expected 1500"
    assert mtu_mismatch("sh: /sys/class/net/eth0/mtu: No such file", 9000) == (
        "could not read the MTU of eth0 (expected 9000); output:\n"
        "sh: /sys/class/net/eth0/mtu: No such file"
    )


def test_mismatch_error_names_vm_command_and_tail() -> None:
    """The boot check's error reads like the harness's other guest errors."""
    cmd = "ip link set eth0 up && " + mtu_probe()
    exc = MtuMismatch("vm2", cmd, mtu_mismatch("@mtu eth0 1500\n", 65520), "virtio_net ...")
    text = str(exc)
    assert text.startswith("[vm2] eth0 has MTU 1500, the topology asks for 65520")
    assert f"command: {cmd!r}" in text
    assert "console tail:\n    virtio_net ..." in text
    assert isinstance(exc, HarnessError) and exc.vm == "vm2"


@dataclass
class MtuGuest(FakeGuest):
    """A guest whose eth0 has an MTU and a maximum (the NIC's: host_mtu)."""

    mtu: int = 65520
    max_mtu: int = 65520

    def run(self, cmd: str, timeout: float = 30.0, check: bool = True) -> FakeResult:
        self.ran.append(cmd)
        out = f"@mtu eth0 {self.mtu}\n"
        m = re.search(r"ip link set dev eth0 mtu (\d+)", cmd)
        if m:
            if not 68 <= int(m[1]) <= self.max_mtu:
                raise CommandFailed(
                    self.name, cmd, 2, "Error: mtu greater than device maximum.", ""
                )
            self.mtu = int(m[1])
            out += f"@mtu eth0 {self.mtu}\n"
        return FakeResult(output=out)

    def wait_for(self, cmd: str, timeout: float, interval: float = 0.5) -> FakeResult:
        return self.run(cmd)


def test_set_mtu_one_round_returns_the_earlier_mtu() -> None:
    vm = MtuGuest()
    g: Guest = vm  # type: ignore[assignment]
    assert set_mtu(g, 9000) == 65520 and vm.mtu == 9000
    assert len(vm.ran) == 1
    with pytest.raises(CommandFailed, match=r"\[vm1\] command failed"):
        set_mtu(g, 65521)
    assert vm.mtu == 9000


def test_link_mtu_restores_also_on_failure() -> None:
    vm = MtuGuest()
    g: Guest = vm  # type: ignore[assignment]
    with link_mtu(g, 9000) as before:
        assert before == 65520 and vm.mtu == 9000
    assert vm.mtu == 65520
    with pytest.raises(AssertionError, match="boom"), link_mtu(g, 1500):
        assert vm.mtu == 1500
        raise AssertionError("boom")
    assert vm.mtu == 65520


def _commands(monkeypatch: pytest.MonkeyPatch, mtu: int | None) -> list[list[str]]:
    """The `ip` commands Netns.create(2[, mtu]) runs (nothing is run)."""
    ran: list[list[str]] = []

    def fake_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        ran.append(list(args))
        return subprocess.CompletedProcess(["ip", *args], 0, "", "")

    monkeypatch.setattr(netns, "ip", fake_ip)
    monkeypatch.setattr(netns, "require_root", lambda what: None)
    ns = netns.Netns(name="p2pkp-test")
    if mtu is None:
        ns.create(2)
    else:
        ns.create(2, mtu=mtu)
    return [c[2:] if c[:2] == ["-n", "p2pkp-test"] else c for c in ran]


def test_netns_at_1500_is_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    before = [
        ["netns", "list"],
        ["netns", "add", "p2pkp-test"],
        ["link", "set", "lo", "up"],
        ["link", "add", "br0", "type", "bridge"],
        ["link", "set", "br0", "up"],
        ["tuntap", "add", "dev", "tap0", "mode", "tap"],
        ["link", "set", "tap0", "master", "br0"],
        ["link", "set", "tap0", "up"],
        ["tuntap", "add", "dev", "tap1", "mode", "tap"],
        ["link", "set", "tap1", "master", "br0"],
        ["link", "set", "tap1", "up"],
    ]
    assert _commands(monkeypatch, None) == before
    assert _commands(monkeypatch, 1500) == before


def test_netns_bridge_and_every_tap_get_the_mtu(monkeypatch: pytest.MonkeyPatch) -> None:
    cmds = _commands(monkeypatch, 65520)
    assert ["link", "add", "br0", "mtu", "65520", "type", "bridge"] in cmds
    for tap in ("tap0", "tap1"):
        i = cmds.index(["link", "set", tap, "mtu", "65520"])
        # before it joins the bridge, which keeps the MTU it was told
        assert cmds[i + 1] == ["link", "set", tap, "master", "br0"]


def test_orphaned_namespaces_are_those_of_dead_runs() -> None:
    """Only the harness's names (p2pkp-PID-HEX) whose PID is gone; a live run's namespace, a
    foreign name and an odd one are kept."""
    names = ["p2pkp-31565-93163f", "p2pkp-1-abcdef", "p2pkp-test", "other-5-aa", "p2pkp-7-a-b"]
    assert netns.orphaned(names, alive=lambda pid: pid == 1) == ["p2pkp-31565-93163f"]
