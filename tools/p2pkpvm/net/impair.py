"""Impair a guest's link from a test (netem in the guest) or cut it (its tap, host side).

    with impair(cluster["vm2"], loss_pct=5):            # both directions of vm2's eth0
        ...
    with impair(vm, Link(delay_ms=50, jitter_ms=20), direction="egress"):
        ...
    with link_cut(vm):                                  # tap down in the namespace
        ...

The impairment is removed when the block ends, also on failure; see p2pkpvm.net.netem for where
and how it is applied.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from p2pkpvm.errors import HarnessError
from p2pkpvm.net.netem import QUEUE_LIMIT, Direction, Link, apply_cmds, clear_cmds, script
from p2pkpvm.net.netns import ip
from p2pkpvm.vm.guest import Guest

log = logging.getLogger(__name__)


def apply(
    vm: Guest,
    link: Link,
    direction: Direction = "both",
    dev: str = "eth0",
    limit: int = QUEUE_LIMIT,
) -> None:
    """Impair vm's dev with link (replaces any earlier impairment; netem queues of `limit`
    packets); clean link = clear."""
    vm.run(script(apply_cmds(link, dev, direction, limit)), timeout=60.0)
    log.info("%s: %s impaired (%s): %s", vm.name, dev, direction, link.describe())


def clear(vm: Guest, dev: str = "eth0") -> None:
    """Remove every impairment from vm's dev; CommandFailed if one is still there after."""
    vm.run(script(clear_cmds(dev)), timeout=60.0)


@contextmanager
def impair(
    vm: Guest,
    link: Link | None = None,
    direction: Direction = "both",
    dev: str = "eth0",
    limit: int = QUEUE_LIMIT,
    **params: float,
) -> Iterator[Link]:
    """Impair vm's link for the duration of the block: `impair(vm, loss_pct=5)`.

    params are Link fields (loss_pct, delay_ms, jitter_ms, reorder_pct, duplicate_pct,
    corrupt_pct, rate_mbit, slot_ms); give either link or params.
    """
    if link is not None and params:
        raise HarnessError("impair(): give a Link or its fields, not both")
    link = link if link is not None else Link(**params)
    apply(vm, link, direction, dev, limit)
    try:
        yield link
    except BaseException:
        # The block's own failure matters more than a failing cleanup (e.g. a dead guest).
        try:
            clear(vm, dev)
        except Exception as exc:
            print(f"p2pkpvm: {vm.name}: removing the impairment failed too: {exc}", file=sys.stderr)
        raise
    clear(vm, dev)


class _Tapped(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def netns(self) -> str | None: ...

    @property
    def tap(self) -> str: ...


def set_tap(vm: _Tapped, up: bool) -> None:
    """Bring vm's host-side tap up or down (down = its cable is pulled, both directions)."""
    if vm.netns is None:
        raise HarnessError(f"{vm.name}: no network namespace, no link to cut")
    ip("-n", vm.netns, "link", "set", vm.tap, "up" if up else "down")
    log.info("%s: link (%s in %s) %s", vm.name, vm.tap, vm.netns, "up" if up else "cut")


@contextmanager
def link_cut(vm: _Tapped) -> Iterator[None]:
    """vm's link is down (tap down in the namespace) for the block, restored after."""
    set_tap(vm, up=False)
    try:
        yield
    finally:
        set_tap(vm, up=True)
