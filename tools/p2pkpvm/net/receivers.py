"""Many receivers without many guests (issue 13): network namespaces inside a guest.

A guest whose topology entry says `receivers: N` gets N network namespaces, each one a
receiver host on the cluster's subnet.  Inside the guest, eth0 becomes a port of bridge br0
(which takes over eth0's MAC and the guest's addresses), and every receiver namespace hangs
on br0 by a veth pair.  So every receiver is reachable from every guest, its own included,
as if it were a host on the outer bridge.

Receivers are numbered r1, r2, ... across the whole topology, in guest order.  Receiver k
gets host number RECEIVER_HOST_BASE + k on the guests' IPv4 subnet (and on their IPv6 /64),
and MACs derived from the run, the guest and k.  Identically booted TCG guests draw the same
"random" numbers, so veth pairs left to pick their own MACs got equal ones in every guest and
the outer bridge delivered frames to the wrong guest.  Nothing here is random.

This module only computes: the plan (names, addresses, MACs) and the guest's shell script.
The cluster runs the script on the guest at boot; the namespaces go with the guest (there is
nothing to remove on the host).
"""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from p2pkpvm.errors import TopologyError
from p2pkpvm.net.mtu import DEFAULT_MTU

RECEIVER_HOST_BASE = 64  # receiver k is host RECEIVER_HOST_BASE + k of the subnet
MAX_RECEIVERS = 128  # in one topology (a /24 has room for 64 + 128 < 255)
BRIDGE = "br0"
NETNS_PREFIX = "p2pkp-"  # receiver r17 lives in netns p2pkp-r17 of its guest


class GuestLike(Protocol):
    """What the plan needs of a topology guest (net.topology.GuestSpec)."""

    @property
    def name(self) -> str: ...

    @property
    def ipv4(self) -> ipaddress.IPv4Interface: ...

    @property
    def ipv6(self) -> ipaddress.IPv6Interface | None: ...

    @property
    def receivers(self) -> int: ...


@dataclass(frozen=True)
class Receiver:
    """Receiver `name` (r1, r2, ...): a network namespace in guest `guest`."""

    name: str
    guest: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface | None
    mac: str  # of the veth end inside the namespace (its eth0)
    host_mac: str  # of the veth end on the guest's bridge

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def bridge_port(self) -> str:
        """The guest-side end of its veth pair (on br0): traffic towards the receiver leaves
        the guest's bridge here (netem on it impairs what the receiver gets)."""
        return f"v{self.name}"

    @property
    def exec_prefix(self) -> str:
        """What runs a command line inside this receiver's namespace when put before it."""
        return f"ip netns exec {shlex.quote(self.netns)} "


class ReceiverPlanError(TopologyError):
    """The topology's receivers do not fit its subnet or collide with a guest."""


def receiver_mac(run_id: str, guest_index: int, number: int, side: int) -> str:
    """A locally administered unicast MAC for receiver `number`'s veth end `side` (0: in the
    namespace, 1: on the bridge), distinct per (run, guest, receiver, side)."""
    if not 0 <= guest_index <= 255 or not 1 <= number <= MAX_RECEIVERS or side not in (0, 1):
        raise ValueError(f"receiver_mac({guest_index}, {number}, {side}): out of range")
    digest = hashlib.sha256(f"{run_id}/{guest_index}".encode()).digest()
    # 0x06 (locally administered, unicast) differs from guest_mac()'s 0x02: no overlap.
    octets = [0x06, digest[0], digest[1], guest_index, side, number]
    return ":".join(f"{o:02x}" for o in octets)


def plan(guests: Sequence[GuestLike], run_id: str) -> list[Receiver]:
    """Every receiver of the topology, r1 first (in guest order)."""
    out: list[Receiver] = []
    taken = {g.ipv4.ip for g in guests}
    for gi, g in enumerate(guests):
        for _ in range(g.receivers):
            k = len(out) + 1
            if k > MAX_RECEIVERS:
                raise ReceiverPlanError(f"more than {MAX_RECEIVERS} receivers in one topology")
            host = RECEIVER_HOST_BASE + k
            net4 = g.ipv4.network
            if host >= net4.num_addresses - 1:
                raise ReceiverPlanError(f"receiver r{k}: no host {host} in {net4}")
            ip4 = net4.network_address + host
            if ip4 in taken:
                raise ReceiverPlanError(f"receiver r{k}: {ip4} is a guest's address")
            ip6 = None
            if g.ipv6 is not None:
                ip6 = ipaddress.IPv6Interface(
                    f"{g.ipv6.network.network_address + host}/{g.ipv6.network.prefixlen}"
                )
            out.append(
                Receiver(
                    name=f"r{k}",
                    guest=g.name,
                    ipv4=ipaddress.IPv4Interface(f"{ip4}/{net4.prefixlen}"),
                    ipv6=ip6,
                    mac=receiver_mac(run_id, gi, k, 0),
                    host_mac=receiver_mac(run_id, gi, k, 1),
                )
            )
    return out


# net.core.netdev_max_backlog's default: a host's input backlog, in packets
BACKLOG_PER_HOST = 1000


def setup_script(
    guest: GuestLike, receivers: Sequence[Receiver], mtu: int = DEFAULT_MTU, snooping: bool = False
) -> str:
    """The guest's shell commands (one `set -e` script) that make br0 and its receivers.

    Runs after the guest has its addresses on eth0: they move to br0 (eth0 keeps carrying
    the frames), so the guest's own address does not change.  mtu: the cluster's (topology
    `mtu:`), given to br0 and both ends of every veth pair; at DEFAULT_MTU (what they get anyway)
    the script says nothing of it.  snooping: IGMP/MLD snooping with br0 as querier, as a
    switch would do (bench-scale: group datagrams reach only the receivers that joined, not
    every namespace of the guest's one vCPU); off (flooding) by default: with it, MLD
    snooping left some namespaces unreachable by IPv6 on 6.12 guests (neighbour
    solicitations go only to ports that reported their solicited-node group)."""
    mine = [r for r in receivers if r.guest == guest.name]
    if not mine:
        return ""
    # A bridge takes the smallest MTU of its ports unless told one: both br0 and the veth
    # ends need it.
    m = f" mtu {mtu}" if mtu != DEFAULT_MTU else ""
    lines = [
        "set -e",
        # snooping: flooded, every one of a guest's 22 namespaces took each group datagram
        # on the guest's one vCPU (8 MiB to one receiver by multicast: 2.55 s, 1.2 s with it)
        f"ip link add {BRIDGE}{m} type bridge forward_delay 0 stp_state 0"
        + (" mcast_snooping 1 mcast_querier 1" if snooping else " mcast_snooping 0"),
        f"ip link set {BRIDGE} address $(cat /sys/class/net/eth0/address)",
        # no IPv6 DAD or autoconf on the bridge: addresses are static, as on eth0
        f"sysctl -qw net.ipv6.conf.{BRIDGE}.accept_ra=0 net.ipv6.conf.{BRIDGE}.autoconf=0",
        f"ip addr flush dev eth0 && ip link set eth0 master {BRIDGE}",
        f"ip link set {BRIDGE} up && ip addr add {guest.ipv4} dev {BRIDGE}",
        # each namespace stands for a host, which has an input backlog of its own (1000
        # packets by default); here they share the guest's one, and a burst to the group
        # is queued there once per namespace: 8 namespaces dropped 2,485 of 8 MiB's
        # group datagrams on a clean link
        f"sysctl -qw net.core.netdev_max_backlog={BACKLOG_PER_HOST * (len(mine) + 1)}",
    ]
    if guest.ipv6 is not None:
        lines.append(f"ip -6 addr add {guest.ipv6} dev {BRIDGE} nodad")
    # One `ip -batch` for the guest's side and one per namespace (each stops at its first
    # failing line and exits non-zero): an exec costs ~0.2 s under TCG, and 22 receivers
    # one command each took 43 s.
    lines.append("ip -batch - <<'EOF'")
    for r in mine:
        lines += [
            f"netns add {r.netns}",
            f"link add {r.bridge_port} address {r.host_mac}{m} type veth "
            f"peer name eth0 address {r.mac}{m} netns {r.netns}",
            f"link set {r.bridge_port} master {BRIDGE} up",
        ]
    lines.append("EOF")
    for r in mine:
        lines += [
            f"ip -n {r.netns} -batch - <<'EOF'",
            "link set lo up",
            "link set eth0 up",
            f"addr add {r.ipv4} dev eth0",
        ]
        if r.ipv6 is not None:
            lines.append(f"addr add {r.ipv6} dev eth0 nodad")
        lines.append("EOF")
    return "\n".join(lines) + "\n"
