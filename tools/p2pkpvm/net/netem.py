"""Link impairment with `tc ... netem`: the link model and the guest shell commands (pure).

Where the impairment is applied (and why): *inside the guest*, on both directions of its one
interface (eth0).  Outgoing traffic gets a `root netem` qdisc on eth0; incoming traffic is
redirected from eth0's ingress qdisc to an ifb device (`ifb0`, matchall + mirred) whose root
qdisc is a second netem with the same parameters.  So an impaired guest sees the impairment on
every datagram it sends *and* receives, whoever the peer is, and a clean guest talking to it
crosses exactly one impaired hop per direction (5% loss on a receiver = 5% of the data lost on
the way in, 5% of its ACKs on the way out).  The host side of the link (the tap in the private
namespace) is not used: the host kernel of these machines has no sch_netem, the guest kernel
has it (and ifb, act_mirred, cls_matchall) as modules; the debug kernel has them built in.

An impaired ingress also turns GRO off on the interface (back on when cleared): the ifb's netem
runs after GRO, which would hand it batches of up to 64 datagrams merged (receivers have UDP
GRO, issue 14 item 5): a loss would take a whole batch, and a corruption would hit datagrams
whose checksums GRO has already verified, so they would count as valid.  Without GRO, netem
sees each datagram as it came off the wire.  (Egress netem sees what the sender's stack queues:
a UDP_SEGMENT run is one packet there, segmented after the qdisc.)

Everything here builds strings; `p2pkpvm.net.impair` runs them in a guest.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from p2pkpvm.errors import HarnessError

Direction = Literal["both", "egress", "ingress"]
DIRECTIONS: tuple[Direction, ...] = ("both", "egress", "ingress")
IFB = "ifb0"
# netem reorders by sending some packets at once while the rest wait `delay`: reordering needs a
# delay.  When a Link asks for reordering without one, this delay is used.
REORDER_DELAY_MS = 10.0
# netem's default queue is 1000 packets: at 50 ms of delay that caps a link near 28 MB/s of
# 1432-byte datagrams and drops the rest as if they were lost.  A larger queue keeps the loss
# what the Link says.
QUEUE_LIMIT = 10000
MODULES = ("sch_netem", "ifb", "act_mirred", "cls_matchall", "sch_ingress")
PCT_KEYS = ("loss_pct", "reorder_pct", "duplicate_pct", "corrupt_pct")


class NetemError(HarnessError, ValueError):
    """A link description that netem cannot apply (the message names the field)."""


@dataclass(frozen=True)
class Link:
    """One direction's impairment.  Percentages are 0..100; 0 means "not impaired that way"."""

    loss_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_pct: float = 0.0
    duplicate_pct: float = 0.0
    corrupt_pct: float = 0.0
    rate_mbit: float = 0.0
    # packets leave in bursts, one every slot_ms (netem `slot`): e.g. ACKs that an
    # aggregating or power-saving link holds back
    slot_ms: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise NetemError(f"link {f.name}: expected a number, got {value!r}")
            if value < 0:
                raise NetemError(f"link {f.name}: must be >= 0, got {value!r}")
            if f.name in PCT_KEYS and value > 100:
                raise NetemError(f"link {f.name}: a percentage must be <= 100, got {value!r}")
        if self.jitter_ms and not self.delay_ms:
            raise NetemError(
                f"link jitter_ms={self.jitter_ms:g} needs a delay_ms > 0 "
                "(netem jitter varies the delay)"
            )
        if self.jitter_ms > self.delay_ms:
            raise NetemError(
                f"link jitter_ms={self.jitter_ms:g} larger than delay_ms="
                f"{self.delay_ms:g} (delays would be clipped at 0)"
            )

    @property
    def clean(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))

    def describe(self) -> str:
        """Short text for logs and test ids, e.g. 'loss 5% delay 50ms+-20ms'."""
        return " ".join(netem_args(self)) if not self.clean else "clean"


LINK_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Link))


def link_from_mapping(data: Mapping[str, object], where: str = "link") -> Link:
    """A Link from a mapping such as a topology's `link:` section; unknown keys are errors."""
    unknown = sorted(set(data) - set(LINK_KEYS))
    if unknown:
        raise NetemError(f"{where}: unknown keys {unknown} (known: {list(LINK_KEYS)})")
    try:
        return Link(**{k: v for k, v in data.items()})  # type: ignore[arg-type]
    except NetemError as exc:
        raise NetemError(f"{where}: {exc}") from None


def _num(value: float) -> str:
    return f"{value:g}"


def netem_args(link: Link) -> list[str]:
    """The netem parameters for link (without `tc qdisc ... netem`)."""
    args: list[str] = []
    delay = link.delay_ms
    if link.reorder_pct and not delay:
        delay = REORDER_DELAY_MS
    if delay:
        args += ["delay", f"{_num(delay)}ms"]
        if link.jitter_ms:
            args.append(f"{_num(link.jitter_ms)}ms")
    if link.loss_pct:
        args += ["loss", f"{_num(link.loss_pct)}%"]
    if link.duplicate_pct:
        args += ["duplicate", f"{_num(link.duplicate_pct)}%"]
    if link.corrupt_pct:
        args += ["corrupt", f"{_num(link.corrupt_pct)}%"]
    if link.reorder_pct:
        # 25% reorder: a quarter of the packets go at once, the rest wait `delay`.
        args += ["reorder", f"{_num(link.reorder_pct)}%"]
    if link.rate_mbit:
        args += ["rate", f"{_num(link.rate_mbit)}mbit"]
    if link.slot_ms:
        args += ["slot", f"{_num(link.slot_ms)}ms", f"{_num(link.slot_ms)}ms"]
    return args


def qdisc_cmd(dev: str, link: Link, limit: int = QUEUE_LIMIT) -> str:
    """`tc qdisc replace` putting netem(link) at the root of dev (a queue of `limit`
    packets)."""
    argv = [
        "tc",
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "netem",
        "limit",
        str(limit),
        *netem_args(link),
    ]
    return shlex.join(argv)


def apply_cmds(
    link: Link, dev: str = "eth0", direction: Direction = "both", limit: int = QUEUE_LIMIT
) -> list[str]:
    """Guest shell commands impairing dev's traffic in `direction` with link (netem queues
    of `limit` packets).

    Idempotent: applying again replaces the previous impairment (clear first when the direction
    changes).  Each command fails (non-zero) when tc or ip does.
    """
    if direction not in DIRECTIONS:
        raise NetemError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if link.clean:
        return clear_cmds(dev)
    d = shlex.quote(dev)
    # Built in on the debug kernel, whose guests have no modules.builtin for modprobe to
    # consult: a module really missing shows as tc's "Specified qdisc kind is unknown".
    cmds = [f"modprobe -a {' '.join(MODULES)} 2>/dev/null || true"]
    if direction in ("both", "egress"):
        cmds.append(qdisc_cmd(dev, link, limit))
    if direction in ("both", "ingress"):
        cmds += [
            # Loading ifb creates ifb0 and ifb1; create it when the module was already there
            # and someone deleted it.
            f"{{ ip link show {IFB} >/dev/null 2>&1 || ip link add {IFB} type ifb; }}",
            f"ip link set {IFB} up",
            f"ethtool -K {d} gro off",
            f"tc qdisc replace dev {d} handle ffff: ingress",
            f"tc filter replace dev {d} parent ffff: pref 1 matchall "
            f"action mirred egress redirect dev {IFB}",
            qdisc_cmd(IFB, link, limit),
        ]
    return cmds


def clear_cmds(dev: str = "eth0") -> list[str]:
    """Guest shell commands removing every impairment apply_cmds() may have added.

    Each one succeeds when there was nothing to remove; the last one fails when a netem or
    ingress qdisc is still there.
    """
    d = shlex.quote(dev)
    return [
        f"ethtool -K {d} gro on",
        f"{{ tc qdisc show dev {d} | grep -q '^qdisc netem ' && "
        f"tc qdisc del dev {d} root; true; }}",
        f"{{ tc qdisc show dev {d} | grep -q 'qdisc ingress' && "
        f"tc qdisc del dev {d} ingress; true; }}",
        f"{{ ip link show {IFB} >/dev/null 2>&1 && tc qdisc del dev {IFB} root 2>/dev/null; "
        "true; }",
        f"! tc qdisc show dev {d} | grep -E 'netem|ingress'",
    ]


def script(cmds: list[str]) -> str:
    """One shell line running cmds in order and stopping at the first failure."""
    return " && ".join(cmds)
