"""Links with a larger MTU (issue 14 item 2): topology `jumbo` (pair's guests, `mtu: 65520`).

The harness gives the topology's MTU to the bridge and taps in the run's namespace and to
each guest's virtio-net NIC (QEMU host_mtu), and checks eth0 at boot; a test that needs a
smaller MTU lowers eth0 in the guests (net/mtu.py, link_mtu), the bridge and taps at 65520
carry any smaller frame.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.net.mtu import link_mtu, mtu_probe, parse_mtu
from p2pkpvm.net.netns import BRIDGE, ip
from p2pkpvm.vm.guest import Guest

pytestmark = [pytest.mark.topology("jumbo"), pytest.mark.timeout_s(120)]
JUMBO = 65520
IPV4_ICMP_HEADERS = 28  # IPv4 (20) + ICMP echo (8): ping -s MTU-28 fills a frame exactly


def ping_df(src: Guest, dst: Guest, payload: int) -> tuple[int, str]:
    """ping from src to dst with DF set (-M do), 3 echoes of `payload` bytes."""
    res = src.run(
        f"ping -M do -s {payload} -c 3 -i 0.2 -W 5 {dst.ipv4} 2>&1", timeout=60, check=False
    )
    return res.rc, res.output


def test_mtu_every_link_at_65520(cluster: ClusterView) -> None:
    """Both guests' eth0, the bridge and both taps in the namespace have MTU 65520, and the
    NIC's maximum is that MTU (the guest's virtio_net took host_mtu: 65521 is refused)."""
    assert cluster.topology.mtu == JUMBO
    for vm in cluster:
        assert parse_mtu(vm.run(mtu_probe("eth0")).output) == JUMBO, vm.name
        res = vm.run("ip link set dev eth0 mtu 65521 2>&1", check=False)
        assert res.rc != 0 and "maximum" in res.output, f"{vm.name}: {res.output}"
    links = json.loads(ip("-n", cluster.cluster.netns.name, "-j", "link", "show").stdout)
    mtus = {link["ifname"]: link["mtu"] for link in links}
    taps = [vm.tap for vm in cluster]
    assert {n: mtus.get(n) for n in (BRIDGE, *taps)} == dict.fromkeys((BRIDGE, *taps), JUMBO)


def test_mtu_ping_df_at_65520_and_9000(cluster: ClusterView) -> None:
    """vm1 pings vm2 with DF set and frames of exactly the MTU: at 65520, then with both
    eth0 lowered to 9000 (restored afterwards); at 9000 a payload of 9000 does not fit."""
    vm1, vm2 = cluster["vm1"], cluster["vm2"]
    rc, out = ping_df(vm1, vm2, JUMBO - IPV4_ICMP_HEADERS)
    assert rc == 0 and " 0% packet loss" in out, out
    with ExitStack() as stack:
        for vm in (vm1, vm2):
            assert stack.enter_context(link_mtu(vm, 9000)) == JUMBO
        rc, out = ping_df(vm1, vm2, 9000 - IPV4_ICMP_HEADERS)
        assert rc == 0 and " 0% packet loss" in out, out
        rc, out = ping_df(vm1, vm2, 9000)
        assert rc != 0 and "message too long, mtu=9000" in out, out
    for vm in (vm1, vm2):
        assert parse_mtu(vm.run(mtu_probe("eth0")).output) == JUMBO, vm.name
