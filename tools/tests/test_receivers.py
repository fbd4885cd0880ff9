"""Receivers as network namespaces inside guests (issue 13): plan, MACs, guest script (no VM)."""

from __future__ import annotations

import ipaddress
import itertools
import re

import pytest

from p2pkpvm.errors import TopologyError
from p2pkpvm.net.receivers import MAX_RECEIVERS, plan, receiver_mac, setup_script
from p2pkpvm.net.topology import load_topology, parse_topology, parse_topology_dict, topology_dict
from p2pkpvm.vm.vng import guest_mac

TWO = """
name: t
guests:
  - {name: a, ipv4: 10.99.0.1/24, ipv6: "fd00:99::1/64"}
  - {name: b, ipv4: 10.99.0.2/24, ipv6: "fd00:99::2/64", receivers: 3}
  - {name: c, ipv4: 10.99.0.3/24, receivers: 2}
"""


def test_plan_numbers_receivers_across_guests_in_order() -> None:
    t = parse_topology(TWO)
    rs = plan(t.guests, "run")
    assert [(r.name, r.guest) for r in rs] == [
        ("r1", "b"),
        ("r2", "b"),
        ("r3", "b"),
        ("r4", "c"),
        ("r5", "c"),
    ]
    assert [str(r.ipv4) for r in rs] == [f"10.99.0.{64 + k}/24" for k in range(1, 6)]
    assert str(rs[0].ipv6) == "fd00:99::41/64"
    assert rs[3].ipv6 is None  # guest c has no IPv6, nor have its receivers
    assert rs[0].netns == "p2pkp-r1"


def test_macs_distinct_across_guests_sides_and_guest_nics() -> None:
    """The trap of issue 13: identically booted guests made equal veth MACs.  Here every MAC
    the harness gives (guest NICs, both veth ends of every receiver) is distinct, and
    each is a locally administered unicast address."""
    text = "name: t\nguests:\n" + "".join(
        f"  - {{name: g{i}, ipv4: 10.99.0.{i}/24, receivers: 32}}\n" for i in range(1, 5)
    )
    t = parse_topology(text)
    rs = plan(t.guests, "20261202-1-abcd")
    assert len(rs) == MAX_RECEIVERS
    macs = [r.mac for r in rs] + [r.host_mac for r in rs]
    macs += [guest_mac("20261202-1-abcd", i) for i in range(len(t.guests))]
    assert len(set(macs)) == len(macs)
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01, mac


def test_macs_are_deterministic_and_differ_between_runs() -> None:
    assert receiver_mac("x", 1, 5, 0) == receiver_mac("x", 1, 5, 0)
    assert receiver_mac("x", 1, 5, 0) != receiver_mac("y", 1, 5, 0)
    with pytest.raises(ValueError):
        receiver_mac("x", 0, MAX_RECEIVERS + 1, 0)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, receivers: -1}]", "receivers"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, receivers: 129}]", "receivers"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, receivers: yes}]", "receivers"),
        # 10.0.0.65 is receiver r1's address
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, receivers: 1},"
            " {name: b, ipv4: 10.0.0.65/24}]",
            "guest's address",
        ),
        # a /26 has no host 64 + 1
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/26, receivers: 1}]", "no host"),
        (
            "name: t\nguests: ["
            + ", ".join(f"{{name: g{i}, ipv4: 10.0.0.{i}/24, receivers: 100}}" for i in (1, 2))
            + "]",
            f"more than {MAX_RECEIVERS}",
        ),
    ],
)
def test_bad_receivers(text: str, needle: str) -> None:
    with pytest.raises(TopologyError, match=needle):
        parse_topology(text)


def test_topology_dict_round_trip_keeps_receivers() -> None:
    t = parse_topology(TWO)
    assert parse_topology_dict(topology_dict(t)) == t
    assert "receivers" not in topology_dict(t)["guests"][0]


def test_setup_script_for_one_guest() -> None:
    t = parse_topology(TWO)
    rs = plan(t.guests, "run")
    assert setup_script(t.guest("a"), rs) == ""  # no receivers: the guest is left alone
    script = setup_script(t.guest("b"), rs)
    lines = script.splitlines()
    assert lines[0] == "set -e"
    # the guest's addresses move from eth0 to the bridge, which keeps eth0's MAC
    assert "ip link set br0 address $(cat /sys/class/net/eth0/address)" in lines
    assert "ip addr flush dev eth0 && ip link set eth0 master br0" in lines
    assert "ip link set br0 up && ip addr add 10.99.0.2/24 dev br0" in lines
    assert "ip -6 addr add fd00:99::2/64 dev br0 nodad" in lines
    # an input backlog of 1000 packets for the guest and each of its 3 receivers
    assert "sysctl -qw net.core.netdev_max_backlog=4000" in lines
    # b's receivers only, each with its namespace, both MACs and its addresses: the guest's
    # side in one `ip -batch`, then one per namespace
    assert re.findall(r"^netns add (\S+)$", script, re.M) == ["p2pkp-r1", "p2pkp-r2", "p2pkp-r3"]
    r2 = rs[1]
    assert (
        f"link add vr2 address {r2.host_mac} type veth peer name eth0 address {r2.mac} "
        "netns p2pkp-r2"
    ) in lines
    assert "link set vr2 master br0 up" in lines
    batches = script.split("<<'EOF'\n")[1:]
    assert len(batches) == 4 and all(b.count("\nEOF\n") == 1 for b in batches)
    assert lines[lines.index("ip -n p2pkp-r2 -batch - <<'EOF'") + 1 :][:5] == [
        "link set lo up",
        "link set eth0 up",
        "addr add 10.99.0.66/24 dev eth0",
        "addr add fd00:99::42/64 dev eth0 nodad",
        "EOF",
    ]
    assert "p2pkp-r4" not in script
    # c's receivers have no IPv6 address
    assert "fd00" not in setup_script(t.guest("c"), rs).split("<<'EOF'", 1)[1]


def test_setup_script_gives_the_cluster_mtu_to_bridge_and_veths() -> None:
    """At another MTU than 1500, br0 and both ends of every veth pair get it (a bridge takes
    its smallest port's MTU otherwise); at 1500 the script is what it always was."""
    t = parse_topology(TWO)
    rs = plan(t.guests, "run")
    plain = setup_script(t.guest("b"), rs)
    assert setup_script(t.guest("b"), rs, 1500) == plain
    assert " mtu " not in plain
    lines = setup_script(t.guest("b"), rs, 9000).splitlines()
    assert (
        "ip link add br0 mtu 9000 type bridge forward_delay 0 stp_state 0 mcast_snooping 0" in lines
    )
    snoop = setup_script(t.guest("b"), rs, 9000, snooping=True).splitlines()
    assert (
        "ip link add br0 mtu 9000 type bridge forward_delay 0 stp_state 0 "
        "mcast_snooping 1 mcast_querier 1"
    ) in snoop
    r2 = rs[1]
    assert (
        f"link add vr2 address {r2.host_mac} mtu 9000 type veth peer name eth0 "
        f"address {r2.mac} mtu 9000 netns p2pkp-r2"
    ) in lines


def test_exec_prefix() -> None:
    rs = plan(parse_topology(TWO).guests, "run")
    assert rs[0].exec_prefix == "ip netns exec p2pkp-r1 "


def test_scale_topology_has_64_receivers_beside_a_sender() -> None:
    t = load_topology("scale")
    rs = plan(t.guests, "run")
    assert len(rs) >= 64
    senders = [g for g in t.guests if g.receivers == 0]
    assert senders, "a guest without receivers sends"
    nets = {ipaddress.ip_interface(str(r.ipv4)).network for r in rs}
    assert nets == {t.guests[0].ipv4.network}
    assert all(a != b for a, b in itertools.combinations([r.ipv4 for r in rs], 2))
