"""Cluster topologies (configs/topologies/NAME.yaml): parsing and validation."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from p2pkpvm.errors import TopologyError
from p2pkpvm.net.mtu import DEFAULT_MTU, MAX_MTU, MIN_MTU
from p2pkpvm.net.netem import LINK_KEYS, Link, NetemError, link_from_mapping
from p2pkpvm.net.receivers import MAX_RECEIVERS, ReceiverPlanError, plan
from p2pkpvm.paths import project_root

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
MEMORY_RE = re.compile(r"^(\d+)([MG])$")
MAX_GUESTS = 8


@dataclass(frozen=True)
class GuestSpec:
    name: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface | None = None
    cpus: int = 1
    memory: str = "512M"
    # This guest's link (both directions, netem in the guest, applied at boot): the
    # topology's `link` updated with the guest's own `link` keys.
    link: Link = field(default_factory=Link)
    # Receivers as network namespaces inside this guest (net/receivers.py), 0: none.
    receivers: int = 0


@dataclass(frozen=True)
class Topology:
    name: str
    guests: tuple[GuestSpec, ...]
    link: dict[str, float] = field(default_factory=dict)
    # MTU of every link of the cluster: the bridge and taps in its namespace, each guest's
    # NIC (QEMU host_mtu) and the receivers' bridge and veth pairs inside guests (net/mtu.py)
    mtu: int = DEFAULT_MTU

    def guest(self, name: str) -> GuestSpec:
        for g in self.guests:
            if g.name == name:
                return g
        raise KeyError(f"topology {self.name!r} has no guest {name!r}")

    def covers(self, other: Topology) -> bool:
        """True when a cluster booted for self can serve tests written for other."""
        mine = {g.name: g for g in self.guests}
        return (
            self.link == other.link
            and self.mtu == other.mtu
            and all(mine.get(g.name) == g for g in other.guests)
        )


def topologies_dir() -> Path:
    return project_root() / "configs" / "topologies"


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TopologyError(f"{where}: expected an integer in {lo}..{hi}, got {value!r}")
    return value


def _memory(value: Any, where: str) -> str:
    m = MEMORY_RE.match(str(value))
    if not m:
        raise TopologyError(f"{where}: memory must look like 512M or 1G, got {value!r}")
    mib = int(m.group(1)) * (1024 if m.group(2) == "G" else 1)
    if not 128 <= mib <= 4096:
        raise TopologyError(f"{where}: memory {value!r} outside 128M..4G")
    return str(value)


def _guest(data: Any, where: str, link: dict[str, float]) -> GuestSpec:
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: each guest must be a mapping")
    unknown = set(data) - {"name", "ipv4", "ipv6", "cpus", "memory", "link", "receivers"}
    if unknown:
        raise TopologyError(f"{where}: unknown keys {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TopologyError(f"{where}: name must match {NAME_RE.pattern}, got {name!r}")
    where = f"{where} ({name})"
    try:
        ipv4 = ipaddress.IPv4Interface(str(data.get("ipv4")))
    except ValueError as exc:
        raise TopologyError(f"{where}: bad ipv4 {data.get('ipv4')!r}: {exc}") from exc
    if "/" not in str(data.get("ipv4")) or not ipv4.network.is_private:
        raise TopologyError(
            f"{where}: ipv4 must be a private address with prefix, "
            f"e.g. 10.99.0.1/24, got {data.get('ipv4')!r}"
        )
    ipv6 = None
    if data.get("ipv6") is not None:
        try:
            ipv6 = ipaddress.IPv6Interface(str(data["ipv6"]))
        except ValueError as exc:
            raise TopologyError(f"{where}: bad ipv6 {data['ipv6']!r}: {exc}") from exc
        if ipv6.ip not in ipaddress.IPv6Network("fc00::/7"):
            raise TopologyError(f"{where}: ipv6 must be a ULA (fd00::/8), got {data['ipv6']!r}")
    own = _link(data.get("link"), where)
    try:
        effective = link_from_mapping({**link, **own}, f"{where}: link")
    except NetemError as exc:
        raise TopologyError(str(exc)) from None
    return GuestSpec(
        name=name,
        ipv4=ipv4,
        ipv6=ipv6,
        cpus=_int(data.get("cpus", 1), f"{where}: cpus", 1, 8),
        memory=_memory(data.get("memory", "512M"), f"{where}: memory"),
        link=effective,
        receivers=_int(data.get("receivers", 0), f"{where}: receivers", 0, MAX_RECEIVERS),
    )


def parse_topology(text: str, where: str = "topology") -> Topology:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{where}: not valid YAML: {exc}") from exc
    return parse_topology_dict(data, where)


def topology_dict(t: Topology) -> dict[str, Any]:
    """The mapping parse_topology_dict() reads back into t (each guest's link is explicit)."""
    return {
        "name": t.name,
        "link": dict(t.link),
        "mtu": t.mtu,
        "guests": [
            {
                "name": g.name,
                "ipv4": str(g.ipv4),
                **({"ipv6": str(g.ipv6)} if g.ipv6 is not None else {}),
                "cpus": g.cpus,
                "memory": g.memory,
                "link": asdict(g.link),
                **({"receivers": g.receivers} if g.receivers else {}),
            }
            for g in t.guests
        ],
    }


def parse_topology_dict(data: Any, where: str = "topology") -> Topology:
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: expected a mapping at top level")
    unknown = set(data) - {"name", "guests", "link", "mtu"}
    if unknown:
        raise TopologyError(f"{where}: unknown keys {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise TopologyError(f"{where}: 'name' must match {NAME_RE.pattern}, got {name!r}")
    raw = data.get("guests")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_GUESTS:
        raise TopologyError(f"{where}: 'guests' must be a list of 1..{MAX_GUESTS} guests")
    link = _link(data.get("link"), where)
    mtu = _int(data.get("mtu", DEFAULT_MTU), f"{where}: mtu", MIN_MTU, MAX_MTU)
    guests = tuple(_guest(g, f"{where}: guests[{i}]", link) for i, g in enumerate(raw))
    _check_unique(guests, where)
    try:
        plan(guests, "check")
    except ReceiverPlanError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    return Topology(name=name, guests=guests, link=link, mtu=mtu)


def _check_unique(guests: tuple[GuestSpec, ...], where: str) -> None:
    names = [g.name for g in guests]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TopologyError(f"{where}: duplicate guest names {sorted(dup)}")
    addrs = [g.ipv4.ip for g in guests]
    if len(set(addrs)) != len(addrs):
        raise TopologyError(f"{where}: duplicate ipv4 addresses")
    nets = {g.ipv4.network for g in guests}
    if len(nets) != 1:
        raise TopologyError(
            f"{where}: all guests must share one ipv4 subnet, got {sorted(str(n) for n in nets)}"
        )
    v6 = [g.ipv6.ip for g in guests if g.ipv6 is not None]
    if len(set(v6)) != len(v6):
        raise TopologyError(f"{where}: duplicate ipv6 addresses")


def _link(data: Any, where: str) -> dict[str, float]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: 'link' must be a mapping")
    out: dict[str, float] = {}
    for key, value in data.items():
        if key not in LINK_KEYS:
            raise TopologyError(f"{where}: link: unknown key {key!r} (known: {LINK_KEYS})")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise TopologyError(f"{where}: link: {key} must be a number >= 0, got {value!r}")
        if key.endswith("_pct") and value > 100:
            raise TopologyError(f"{where}: link: {key} must be <= 100, got {value!r}")
        out[key] = float(value)
    return out  # combinations (jitter needs delay...) are checked per guest, merged


def load_topology(name_or_path: str) -> Topology:
    """Load configs/topologies/NAME.yaml, or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = topologies_dir() / f"{name_or_path}.yaml"
    try:
        text = path.read_text()
    except OSError as exc:
        known = sorted(p.stem for p in topologies_dir().glob("*.yaml"))
        raise TopologyError(
            f"cannot read topology {path}: {exc.strerror} (known topologies: {known})"
        ) from exc
    return parse_topology(text, str(path))


def topology_of_size(n: int) -> Topology:
    """The first n guests of the largest stock topology (for `--vms N`)."""
    base = load_topology("quad") if n <= 4 else load_topology("octet")
    if not 1 <= n <= len(base.guests):
        raise TopologyError(f"--vms {n}: must be in 1..{len(base.guests)}")
    if n == len(base.guests):
        return base
    return Topology(
        name=f"{base.name}-{n}", guests=base.guests[:n], link=dict(base.link), mtu=base.mtu
    )
