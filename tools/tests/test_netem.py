"""netem command building and the topology `link` sections (no guest needed)."""

from __future__ import annotations

import shlex

import pytest

from p2pkpvm.errors import TopologyError
from p2pkpvm.net.netem import (
    IFB,
    QUEUE_LIMIT,
    REORDER_DELAY_MS,
    Link,
    NetemError,
    apply_cmds,
    clear_cmds,
    link_from_mapping,
    netem_args,
    qdisc_cmd,
    script,
)
from p2pkpvm.net.topology import parse_topology
from p2pkpvm.scenario.badnet import parse_netem_drops


def test_issue4_matrix_links() -> None:
    assert netem_args(Link(loss_pct=5)) == ["loss", "5%"]
    assert netem_args(Link(duplicate_pct=5)) == ["duplicate", "5%"]
    assert netem_args(Link(corrupt_pct=1)) == ["corrupt", "1%"]
    assert netem_args(Link(delay_ms=50, jitter_ms=20)) == ["delay", "50ms", "20ms"]
    assert netem_args(Link(rate_mbit=16)) == ["rate", "16mbit"]
    assert netem_args(Link(loss_pct=0.5)) == ["loss", "0.5%"]


def test_slots_hold_packets_back_for_bursts() -> None:
    assert netem_args(Link(slot_ms=1500)) == ["slot", "1500ms", "1500ms"]
    assert netem_args(Link(rate_mbit=0.5, slot_ms=20)) == [
        "rate",
        "0.5mbit",
        "slot",
        "20ms",
        "20ms",
    ]
    with pytest.raises(NetemError, match="slot_ms"):
        Link(slot_ms=-1)


def test_reorder_gets_the_delay_it_needs() -> None:
    assert netem_args(Link(reorder_pct=25)) == [
        "delay",
        f"{REORDER_DELAY_MS:g}ms",
        "reorder",
        "25%",
    ]
    assert netem_args(Link(reorder_pct=25, delay_ms=3)) == ["delay", "3ms", "reorder", "25%"]


def test_everything_at_once_in_netem_order() -> None:
    link = Link(
        loss_pct=1,
        delay_ms=5,
        jitter_ms=1,
        reorder_pct=10,
        duplicate_pct=2,
        corrupt_pct=0.1,
        rate_mbit=100,
    )
    assert netem_args(link) == [
        "delay",
        "5ms",
        "1ms",
        "loss",
        "1%",
        "duplicate",
        "2%",
        "corrupt",
        "0.1%",
        "reorder",
        "10%",
        "rate",
        "100mbit",
    ]
    assert link.describe() == " ".join(netem_args(link))


def test_clean_link() -> None:
    assert Link().clean
    assert Link().describe() == "clean"
    assert not Link(rate_mbit=1).clean
    assert apply_cmds(Link()) == clear_cmds()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"loss_pct": -1}, "loss_pct: must be >= 0"),
        ({"loss_pct": 101}, "loss_pct: a percentage must be <= 100"),
        ({"corrupt_pct": 200}, "corrupt_pct"),
        ({"jitter_ms": 5}, "needs a delay_ms"),
        ({"delay_ms": 5, "jitter_ms": 6}, "larger than delay_ms"),
        ({"rate_mbit": True}, "expected a number"),
        ({"delay_ms": "50"}, "expected a number"),
    ],
)
def test_bad_links_name_the_field(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(NetemError, match=needle):
        Link(**kwargs)  # type: ignore[arg-type]


def test_link_from_mapping() -> None:
    assert link_from_mapping({"loss_pct": 5, "delay_ms": 1.5}) == Link(loss_pct=5, delay_ms=1.5)
    with pytest.raises(NetemError, match=r"here: unknown keys \['lossy'\]"):
        link_from_mapping({"lossy": 5}, "here")
    with pytest.raises(NetemError, match="here: link jitter_ms=1 needs a delay_ms"):
        link_from_mapping({"jitter_ms": 1}, "here")


def test_qdisc_cmd_is_one_tc_call_with_a_large_queue() -> None:
    argv = shlex.split(qdisc_cmd("eth0", Link(loss_pct=5)))
    assert argv == [
        "tc",
        "qdisc",
        "replace",
        "dev",
        "eth0",
        "root",
        "netem",
        "limit",
        str(QUEUE_LIMIT),
        "loss",
        "5%",
    ]


def test_apply_both_directions() -> None:
    cmds = apply_cmds(Link(loss_pct=5))
    assert cmds[0].startswith("modprobe -a sch_netem ifb act_mirred cls_matchall")
    assert qdisc_cmd("eth0", Link(loss_pct=5)) in cmds  # egress of the guest
    assert qdisc_cmd(IFB, Link(loss_pct=5)) in cmds  # its ingress, through ifb0
    assert any("matchall action mirred egress redirect dev ifb0" in c for c in cmds)
    # the redirect is installed before the ifb's netem is configured, after ifb0 is up
    up = next(i for i, c in enumerate(cmds) if c == f"ip link set {IFB} up")
    redirect = next(i for i, c in enumerate(cmds) if "redirect" in c)
    assert up < redirect
    # netem on the ingress sees datagrams one by one, as they came off the wire: no GRO
    assert cmds.index("ethtool -K eth0 gro off") < redirect


def test_apply_one_direction() -> None:
    egress = apply_cmds(Link(loss_pct=5), "eth1", "egress")
    assert qdisc_cmd("eth1", Link(loss_pct=5)) in egress
    assert not any(IFB in c for c in egress)
    assert not any("gro off" in c for c in egress)
    ingress = apply_cmds(Link(loss_pct=5), "eth1", "ingress")
    assert qdisc_cmd("eth1", Link(loss_pct=5)) not in ingress
    assert qdisc_cmd(IFB, Link(loss_pct=5)) in ingress
    with pytest.raises(NetemError, match="direction"):
        apply_cmds(Link(loss_pct=5), "eth0", "sideways")  # type: ignore[arg-type]


def test_clear_removes_both_and_checks() -> None:
    cmds = clear_cmds("eth0")
    joined = script(cmds)
    assert "tc qdisc del dev eth0 root" in joined
    assert "tc qdisc del dev eth0 ingress" in joined
    assert "ethtool -K eth0 gro on" in joined
    assert f"tc qdisc del dev {IFB} root" in joined
    assert cmds[-1].startswith("! tc qdisc show dev eth0")  # fails if anything is left


def test_script_stops_at_first_failure() -> None:
    assert script(["a", "b c"]) == "a && b c"


TOPO = """
name: t
link: {loss_pct: 5}
guests:
  - {name: a, ipv4: 10.0.0.1/24}
  - {name: b, ipv4: 10.0.0.2/24, link: {loss_pct: 10, delay_ms: 5}}
  - {name: c, ipv4: 10.0.0.3/24, link: {loss_pct: 0}}
"""


def test_topology_links_per_guest() -> None:
    t = parse_topology(TOPO)
    assert t.link == {"loss_pct": 5.0}
    assert t.guest("a").link == Link(loss_pct=5)
    assert t.guest("b").link == Link(loss_pct=10, delay_ms=5)
    assert t.guest("c").link.clean


def test_topology_without_links_is_clean() -> None:
    t = parse_topology("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}]")
    assert t.guest("a").link.clean


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, link: {loss: 5}}]", "unknown key 'loss'"),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, link: {reorder_pct: 101}}]",
            "reorder_pct must be <= 100",
        ),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}]\nlink: {jitter_ms: 3}",
            "needs a delay_ms",
        ),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, link: {jitter_ms: 9}}]\n"
            "link: {delay_ms: 5}",
            r"guests\[0\] \(a\): link: link jitter_ms=9 larger",
        ),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, link: {jitter_ms: 3}}]\n"
            "link: {delay_ms: 5}",
            None,
        ),
    ],
)
def test_topology_link_errors(text: str, needle: str | None) -> None:
    if needle is None:  # a guest may add jitter to the topology's delay
        assert parse_topology(text).guest("a").link == Link(delay_ms=5, jitter_ms=3)
        return
    with pytest.raises(TopologyError, match=needle):
        parse_topology(text)


# Real output of `tc -s qdisc show dev ifb0; tc -s qdisc show dev eth0` in a guest (50% loss).
TC_STATS = """\
qdisc netem 8001: root refcnt 2 limit 1000 delay 10ms  2ms loss 50%
 Sent 294 bytes 3 pkt (dropped 5, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
qdisc netem 8002: root refcnt 2 limit 1000 loss 50%
 Sent 784 bytes 8 pkt (dropped 12, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
qdisc ingress ffff: parent ffff:fff1 ----------------
 Sent 672 bytes 8 pkt (dropped 3, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
"""


def test_netem_drops_counts_only_netem() -> None:
    assert parse_netem_drops(TC_STATS) == 17
    assert parse_netem_drops("qdisc fq_codel 0: root refcnt 2\n Sent 1 bytes (dropped 9, x)") == 0
