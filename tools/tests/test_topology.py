"""Topology parsing and validation (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pkpvm.errors import TopologyError
from p2pkpvm.net.topology import (
    load_topology,
    parse_topology,
    parse_topology_dict,
    topologies_dir,
    topology_dict,
    topology_of_size,
)

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


ONE = "name: t\nguests: [{name: a, ipv4: 10.0.0.1/24}]\n"


def test_mtu_defaults_to_1500() -> None:
    assert parse_topology(ONE).mtu == 1500
    assert parse_topology(GOOD).mtu == 1500


@pytest.mark.parametrize("mtu", [1280, 1500, 9000, 65520])
def test_mtu_in_range(mtu: int) -> None:
    t = parse_topology(f"{ONE}mtu: {mtu}\n")
    assert t.mtu == mtu
    assert parse_topology_dict(topology_dict(t)) == t


@pytest.mark.parametrize("value", ["1279", "65521", "0", "-1", "70000"])
def test_mtu_out_of_range(value: str) -> None:
    with pytest.raises(TopologyError) as exc:
        parse_topology(f"{ONE}mtu: {value}\n", "x.yaml")
    assert str(exc.value) == f"x.yaml: mtu: expected an integer in 1280..65520, got {value}"


@pytest.mark.parametrize("value", ['"9000"', "9000.0", "true", "[9000]", "null", "jumbo"])
def test_mtu_wrong_type(value: str) -> None:
    with pytest.raises(TopologyError, match=r"x\.yaml: mtu: expected an integer in 1280\.\.65520"):
        parse_topology(f"{ONE}mtu: {value}\n", "x.yaml")


def test_mtu_error_names_the_topology_file(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(f"{ONE}mtu: 65535\n")
    with pytest.raises(TopologyError, match=rf"^{path}: mtu: .*1280\.\.65520, got 65535$"):
        load_topology(str(path))


def test_jumbo_is_pair_at_mtu_65520_and_neither_covers_the_other() -> None:
    """Tests of one MTU never run on a cluster of another: quad (1500) serves pair, not
    jumbo, and a jumbo cluster does not serve pair."""
    jumbo, pair, quad = load_topology("jumbo"), load_topology("pair"), load_topology("quad")
    assert jumbo.mtu == 65520 and pair.mtu == 1500
    assert jumbo.guests == pair.guests and jumbo.link == pair.link
    assert not jumbo.covers(pair) and not pair.covers(jumbo) and not quad.covers(jumbo)
    assert jumbo.covers(jumbo) and quad.covers(pair)
    assert topology_of_size(2).mtu == 1500
