"""Link MTU of a cluster (topology `mtu:`): its bounds, the guest-side check, and a
temporary MTU for a test.

The cluster gives the topology's MTU to the bridge and every tap in its namespace
(net/netns.py), to each guest's virtio-net NIC (QEMU's host_mtu, vm/vng.py) and to the
bridge and veth pairs of receivers inside a guest (net/receivers.py); after boot it reads
each guest's eth0 MTU back (mtu_probe, mtu_mismatch) and fails the boot with MtuMismatch
when the guest did not take it.

    with link_mtu(vm, 9000):          # eth0 at 9000 for the block, as it was after
        ...
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from p2pkpvm.errors import HarnessError
from p2pkpvm.vm.guest import Guest
from p2pkpvm.vm.vng import ETH_MTU

log = logging.getLogger(__name__)

DEFAULT_MTU = ETH_MTU  # a topology without `mtu:` (what guests always had)
MIN_MTU = 1280  # IPv6's minimum link MTU: every guest has an IPv6 address or may get one
# A tap's maximum is 65535 minus its Ethernet header (65521); 65520 as loopback's default.
MAX_MTU = 65520
_PROBE_RE = re.compile(r"^@mtu (\S+) (\d+)\s*$", re.MULTILINE)


def mtu_probe(dev: str = "eth0") -> str:
    """Shell (builtins only: no exec, ~0.2 s each under TCG) that prints `@mtu DEV N`; to
    be appended to a longer command with &&."""
    return f'read -r m < /sys/class/net/{dev}/mtu && echo "@mtu {dev} $m"'


def parse_mtu(output: str, dev: str = "eth0") -> int | None:
    """The last MTU of dev that mtu_probe() printed into output, None when there is none."""
    found = [int(m[2]) for m in _PROBE_RE.finditer(output) if m[1] == dev]
    return found[-1] if found else None


def mtu_mismatch(output: str, expected: int, dev: str = "eth0") -> str:
    """'' when mtu_probe()'s output says dev has `expected`, else why not (for MtuMismatch,
    which names the VM and the command)."""
    actual = parse_mtu(output, dev)
    if actual is None:
        return (
            f"could not read the MTU of {dev} (expected {expected}); output:\n"
            f"{output.strip()[-500:] or '(none)'}"
        )
    if actual == expected:
        return ""
    return (
        f"{dev} has MTU {actual}, the topology asks for {expected}: the guest did not take "
        f"QEMU's host_mtu={expected} (see the kernel log for virtio_net)"
        if expected != DEFAULT_MTU
        else f"{dev} has MTU {actual}, expected {expected}"
    )


def set_mtu(vm: Guest, mtu: int, dev: str = "eth0") -> int:
    """Set dev's MTU on vm (one console round); return the MTU it had before.  CommandFailed
    (naming the VM and the command) when the guest refuses, e.g. above the NIC's maximum,
    which is the topology's MTU."""
    cmd = f"{mtu_probe(dev)} && ip link set dev {dev} mtu {mtu} && {mtu_probe(dev)}"
    out = vm.run(cmd, timeout=20.0).output
    found = [int(m[2]) for m in _PROBE_RE.finditer(out) if m[1] == dev]
    if len(found) != 2 or found[1] != mtu:
        raise HarnessError(f"[{vm.name}] {dev}: setting MTU {mtu} failed:\n{out.strip()}")
    log.info("%s: %s MTU %d (was %d)", vm.name, dev, mtu, found[0])
    return found[0]


@contextmanager
def link_mtu(vm: Guest, mtu: int, dev: str = "eth0") -> Iterator[int]:
    """dev at `mtu` on vm for the block, its earlier MTU restored after (also on failure);
    yields the earlier MTU."""
    before = set_mtu(vm, mtu, dev)
    try:
        yield before
    except BaseException:
        # The block's own failure matters more than a failing restore (e.g. a dead guest).
        try:
            set_mtu(vm, before, dev)
        except Exception as exc:
            print(f"p2pkpvm: {vm.name}: restoring {dev}'s MTU failed too: {exc}", file=sys.stderr)
        raise
    set_mtu(vm, before, dev)
