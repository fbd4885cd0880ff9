"""Topology parsing and validation (no VM)."""

from __future__ import annotations

import pytest

from p2pkpvm.errors import TopologyError
from p2pkpvm.net.topology import load_topology, parse_topology, topologies_dir, topology_of_size

GOOD = """
name: t
guests:
  - {name: a, ipv4: 10.99.0.1/24, ipv6: "fd00:99::1/64", cpus: 1, memory: 512M}
  - {name: b, ipv4: 10.99.0.2/24}
link: {delay_ms: 5, loss_pct: 1.5}
"""


def test_good() -> None:
    t = parse_topology(GOOD)
    assert [g.name for g in t.guests] == ["a", "b"]
    assert str(t.guests[0].ipv4) == "10.99.0.1/24"
    assert t.guests[1].ipv6 is None and t.guests[1].memory == "512M"
    assert t.link == {"delay_ms": 5.0, "loss_pct": 1.5}


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[]", "mapping"),
        ("name: t\nguests: []", "1..8"),
        ("name: T\nguests: [{name: a, ipv4: 10.0.0.1/24}]", "name"),
        ("name: t\nguests: [{name: a, ipv4: 8.8.8.8/24}]", "private"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1}]", "prefix"),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}, {name: a, ipv4: 10.0.0.2/24}]",
            "duplicate guest",
        ),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}, {name: b, ipv4: 10.0.0.1/24}]",
            "duplicate ipv4",
        ),
        (
            "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}, {name: b, ipv4: 10.0.1.2/24}]",
            "one ipv4 subnet",
        ),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, ipv6: '2001:db8::1/64'}]", "ULA"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, cpus: 0}]", "cpus"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, memory: 12}]", "memory"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24, mac: x}]", "unknown keys"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}]\nlink: {loss_pct: 120}", "loss_pct"),
        ("name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}]\nlink: {bogus: 1}", "unknown key"),
        ("name: t\nguests: [\n", "YAML"),
    ],
)
def test_bad(text: str, needle: str) -> None:
    with pytest.raises(TopologyError, match=needle):
        parse_topology(text, "x.yaml")


def test_stock_topologies_load_and_cover() -> None:
    names = sorted(p.stem for p in topologies_dir().glob("*.yaml"))
    assert {"pair", "trio", "quad"} <= set(names)
    loaded = {n: load_topology(n) for n in names}
    assert len(loaded["pair"].guests) == 2 and len(loaded["quad"].guests) == 4
    assert loaded["quad"].covers(loaded["pair"]) and loaded["quad"].covers(loaded["trio"])
    assert not loaded["pair"].covers(loaded["quad"])


def test_unknown_topology_names_known_ones() -> None:
    with pytest.raises(TopologyError, match="known topologies"):
        load_topology("nosuch")


def test_of_size() -> None:
    assert [g.name for g in topology_of_size(3).guests] == ["vm1", "vm2", "vm3"]
    with pytest.raises(TopologyError):
        topology_of_size(0)
