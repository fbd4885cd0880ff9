"""Wire fuzzer for a P2PKP receiver (docs/protocol.md section 2), stdlib only.

Runs in a guest next to a receiver waiting in read() (tools/p2pkp-recv) and sends it crafted
UDP datagrams from its own sockets.  Every campaign is seeded (the seed is printed first) and
counts the datagrams it sends.  The stateless and xfer phases predict the drop reason of every
datagram; the fuzzer reads the receiver's `sock` line of /proc/net/p2pkp after each batch
(which also paces it: the next batch goes only when the receiver has counted this one) and
fails if a counter differs from the prediction.

Phases:
  stateless  header/length/field errors (short, magic, version, type, length, START fields,
             DATA/END/ABORT of unknown transfers): exact drop-reason accounting.
  xfer       fake transfers: START, then DATA past count, wrong lengths, beyond the window,
             duplicates, forged ids, other source ports, END with a wrong size; ABORT at the
             end.  Exact accounting (receiver must be idle and its timeout > a batch).
  random     mutations of valid datagrams (boundary values, bit flips, truncation) from many
             ports; only "every datagram was counted" is checked.
  send       one complete valid transfer (--size bytes of path-like content, --id or a
             random id) with the right digest: prints the DONE status.
  empty      zero-length datagrams: each must count as drop_short.
  flood      STARTs of new transfers from many source ports; counts the replies (BUSY).
  baddigest  one complete fake transfer whose END carries a wrong SHA-256: expects DONE
             with -EBADMSG.
  spoof      waits for a real transfer's temporary file in --watch DIR (or takes --id), and
             injects DATA/END/ABORT with that id from other source ports: drop_peer.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import os
import random
import re
import select
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MAGIC = 0x5032504B
VERSION = 1
T_START, T_START_ACK, T_BUSY, T_DATA, T_ACK, T_END, T_DONE, T_DONE_ACK, T_ABORT = range(1, 10)
T_MAX = T_ABORT
BODY_LEN = {
    T_START: 24,
    T_START_ACK: 8,
    T_BUSY: 0,
    T_DATA: 8,
    T_ACK: 80,
    T_END: 40,
    T_DONE: 8,
    T_DONE_ACK: 0,
    T_ABORT: 8,
}
TO_RECEIVER = (T_START, T_DATA, T_END, T_DONE_ACK, T_ABORT)
TO_SENDER = (T_START_ACK, T_BUSY, T_ACK, T_DONE)
F_ACKREQ = 0x1
F_ECHO = 0x2
CHUNK = 1400
MAX_SIZE = 1 << 40
DGRAM_MAX = 2048
WIN = 512
HDR = struct.Struct(">IBBHQII")
REASONS = (
    "drop_short",
    "drop_magic",
    "drop_version",
    "drop_type",
    "drop_length",
    "drop_field",
    "drop_xfer",
    "drop_peer",
    "drop_window",
    "drop_dup",
)
U64_EDGES = (0, 1, 2, (1 << 31) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 2, (1 << 64) - 1)


class FuzzError(Exception):
    """A prediction did not hold, or the receiver did not count what was sent."""


# ---- datagram builders -------------------------------------------------------------------


def header(
    type_: int,
    xid: int,
    flags: int = 0,
    ts: int = 0,
    echo: int = 0,
    magic: int = MAGIC,
    version: int = VERSION,
) -> bytes:
    return HDR.pack(magic, version, type_, flags, xid, ts & 0xFFFFFFFF, echo & 0xFFFFFFFF)


def count_for(size: int) -> int:
    return (size + CHUNK - 1) // CHUNK


def chunk_len(size: int, index: int) -> int:
    """Payload length of chunk `index` of a `size`-byte file (0 if past the end)."""
    return max(0, min(CHUNK, size - CHUNK * index))


def start(xid: int, size: int, count: int | None = None, chunk: int = CHUNK, rsv: int = 0) -> bytes:
    n = count_for(size) if count is None else count
    return header(T_START, xid) + struct.pack(">QQII", size, n, chunk, rsv)


def data(xid: int, index: int, payload: bytes, flags: int = 0) -> bytes:
    return header(T_DATA, xid, flags) + struct.pack(">Q", index) + payload


def end(xid: int, size: int, digest: bytes) -> bytes:
    return header(T_END, xid) + struct.pack(">Q", size) + digest


def abort(xid: int, reason: int = errno.EINTR) -> bytes:
    return header(T_ABORT, xid) + struct.pack(">II", reason, 0)


def done_ack(xid: int) -> bytes:
    return header(T_DONE_ACK, xid)


def body(type_: int, rng: random.Random) -> bytes:
    """A random body of the exact documented length of `type_`."""
    return rng.randbytes(BODY_LEN[type_])


@dataclass
class Reply:
    type_: int
    xid: int
    status: int | None  # DONE status


def parse_reply(buf: bytes) -> Reply | None:
    if len(buf) < HDR.size:
        return None
    magic, version, type_, _flags, xid, _ts, _echo = HDR.unpack_from(buf)
    if magic != MAGIC or version != VERSION:
        return None
    status = None
    if type_ == T_DONE and len(buf) >= HDR.size + 8:
        status = struct.unpack_from(">i", buf, HDR.size)[0]
    return Reply(type_, xid, status)


# ---- stateless cases ---------------------------------------------------------------------


@dataclass
class Case:
    dgram: bytes
    reason: str | None  # the drop counter it must bump, None: not dropped
    what: str


def _rand_xid(rng: random.Random) -> int:
    return rng.choice((rng.getrandbits(64) | 1, *U64_EDGES[1:]))


def stateless_case(rng: random.Random) -> Case:
    """One datagram whose drop reason does not depend on the receiver's state (idle)."""
    kind = rng.randrange(11)
    xid = _rand_xid(rng)
    if kind == 0:
        n = rng.randrange(1, HDR.size)  # empty datagrams: phase "empty"
        return Case(rng.randbytes(n), "drop_short", f"short {n}")
    if kind == 1:
        magic = rng.choice((0, MAGIC ^ (1 << rng.randrange(32)), 0xFFFFFFFF, rng.getrandbits(32)))
        if magic == MAGIC:
            magic ^= 1
        t = rng.randrange(256)
        return Case(
            header(t, xid, magic=magic) + rng.randbytes(rng.randrange(64)), "drop_magic", "magic"
        )
    if kind == 2:
        v = rng.choice((0, 2, 0xFF, rng.randrange(256)))
        if v == VERSION:
            v = 0
        return Case(
            header(T_START, xid, version=v) + body(T_START, rng), "drop_version", f"version {v}"
        )
    if kind == 3:
        t = rng.choice((0, T_MAX + 1, 0xFF, rng.randrange(T_MAX + 1, 256)))
        return Case(header(t, xid) + rng.randbytes(rng.randrange(32)), "drop_type", f"type {t}")
    if kind == 4:
        t = rng.choice(list(BODY_LEN))
        exact = BODY_LEN[t]
        if t == T_DATA:
            n = rng.choice(
                (0, 7, 8 + CHUNK + 1, rng.randrange(8 + CHUNK + 1, DGRAM_MAX - HDR.size))
            )
            n = n if n < 8 or n > 8 + CHUNK else 7
        else:
            n = rng.choice((0, exact - 1, exact + 1, rng.randrange(200)))
            n = n if n >= 0 and n != exact else exact + 1
        return Case(header(t, xid) + rng.randbytes(n), "drop_length", f"type {t} body {n}")
    if kind == 5:
        n = rng.choice((DGRAM_MAX + 1, DGRAM_MAX + rng.randrange(1, 4000), 65000))
        t = rng.choice(list(BODY_LEN))
        return Case(header(t, xid) + rng.randbytes(n - HDR.size), "drop_length", f"oversize {n}")
    if kind == 6:
        t = rng.choice(TO_SENDER)
        return Case(header(t, xid) + body(t, rng), "drop_type", f"wrong direction {t}")
    if kind == 7:
        return _bad_start(rng, xid)
    if kind == 8:
        idx = rng.choice((0, 1, *U64_EDGES))
        plen = rng.choice((0, 1, CHUNK - 1, CHUNK))
        return Case(data(xid, idx, rng.randbytes(plen)), "drop_xfer", "data unknown id")
    if kind == 9:
        size = rng.choice(U64_EDGES)
        return Case(end(xid, size, rng.randbytes(32)), "drop_xfer", "end unknown id")
    return Case(abort(xid, rng.getrandbits(32)), "drop_xfer", "abort unknown id")


def _bad_start(rng: random.Random, xid: int) -> Case:
    size = rng.choice((*U64_EDGES, MAX_SIZE + 1, MAX_SIZE, rng.randrange(1 << 20)))
    good = count_for(size)
    which = rng.randrange(3)
    if which == 0 or size > MAX_SIZE:
        chunk = rng.choice((0, 1, CHUNK - 1, CHUNK + 1, 0xFFFFFFFF))
        return Case(
            start(xid, size, good & ((1 << 64) - 1), chunk),
            "drop_field",
            f"start chunk {chunk} size {size}",
        )
    if which == 1:
        big = rng.choice((MAX_SIZE + 1, (1 << 63), (1 << 64) - 1, MAX_SIZE + CHUNK))
        return Case(
            start(xid, big, count_for(big) & ((1 << 64) - 1)), "drop_field", f"start size {big}"
        )
    bad = rng.choice((good + 1, (good - 1) % (1 << 64), (1 << 64) - 1, 1 << 63))
    return Case(start(xid, size, bad), "drop_field", f"start size {size} count {bad}")


# ---- transfer model (xfer phase) ---------------------------------------------------------


@dataclass
class FakeXfer:
    """What the receiver knows of one of our transfers, to predict its drop reasons."""

    xid: int
    size: int
    count: int = 0
    stored: set[int] = field(default_factory=set)
    cum: int = 0

    def __post_init__(self) -> None:
        self.count = count_for(self.size)

    def store(self, idx: int) -> None:
        self.stored.add(idx)
        while self.cum in self.stored:
            self.stored.discard(self.cum)
            self.cum += 1

    def is_dup(self, idx: int) -> bool:
        return idx < self.cum or any(j % WIN == idx % WIN for j in self.stored)

    def complete(self) -> bool:
        return self.cum == self.count


def xfer_case(rng: random.Random, x: FakeXfer) -> tuple[Case, int]:
    """A datagram for transfer x and the source index (0: the STARTing socket) it goes from."""
    kind = rng.randrange(10)
    if kind == 0:
        idx = rng.choice((x.count, x.count + 1, *U64_EDGES[5:]))
        return Case(
            data(x.xid, idx, rng.randbytes(rng.randrange(CHUNK + 1))),
            "drop_field",
            f"data index {idx} >= count {x.count}",
        ), 0
    if kind == 1:
        idx = rng.randrange(x.count)
        want = chunk_len(x.size, idx)
        n = rng.choice(
            [v for v in (0, 1, want - 1, want + 1, CHUNK) if 0 <= v <= CHUNK and v != want] or [0]
        )
        if n == want:
            n = want - 1 if want > 0 else 1
        return Case(
            data(x.xid, idx, rng.randbytes(n)), "drop_length", f"data {idx} len {n} != {want}"
        ), 0
    if kind in (2, 3, 4):
        lo, hi = x.cum, min(x.count, x.cum + WIN)
        if kind == 4 and x.count > x.cum + WIN:
            idx = rng.randrange(x.cum + WIN, x.count)
        elif hi > lo and kind == 2:
            idx = rng.randrange(lo, hi)
        else:
            idx = rng.randrange(0, max(1, hi))
        reason = _data_reason(x, idx)
        if reason is None:
            x.store(idx)
        return Case(
            data(x.xid, idx, rng.randbytes(chunk_len(x.size, idx)), rng.choice((0, F_ACKREQ))),
            reason,
            f"data {idx}",
        ), 0
    if kind == 5:
        t = rng.choice((T_DATA, T_END, T_ABORT))
        b = {
            T_DATA: struct.pack(">Q", 0) + rng.randbytes(chunk_len(x.size, 0)),
            T_END: struct.pack(">Q", x.size) + rng.randbytes(32),
            T_ABORT: struct.pack(">II", errno.EINTR, 0),
        }[t]
        return Case(header(t, x.xid) + b, "drop_peer", f"forged type {t} other port"), 1
    if kind == 6:
        other = rng.getrandbits(64) | 1
        return Case(
            data(other, 0, rng.randbytes(chunk_len(x.size, 0))), "drop_xfer", "data other id"
        ), 0
    if kind == 7:
        bad = rng.choice((x.size + 1, x.size - 1, 0, (1 << 64) - 1))
        if bad == x.size:
            bad += 1
        return Case(
            end(x.xid, bad & ((1 << 64) - 1), rng.randbytes(32)), "drop_field", f"end size {bad}"
        ), 0
    if kind == 8:
        return Case(start(x.xid, x.size, chunk=CHUNK + 1), "drop_field", "start bad chunk"), 0
    # a competing valid START from another port: answered BUSY, not a drop
    return Case(start(rng.getrandbits(64) | 1, rng.randrange(1, 1 << 20)), None, "busy start"), 1


def _data_reason(x: FakeXfer, idx: int) -> str | None:
    if idx >= x.count:
        return "drop_field"
    if x.is_dup(idx):
        return "drop_dup"
    if idx >= x.cum + WIN:
        return "drop_window"
    return None


# ---- random mutations --------------------------------------------------------------------


def template(rng: random.Random) -> bytes:
    xid = _rand_xid(rng)
    size = rng.choice((*U64_EDGES, MAX_SIZE, rng.randrange(1 << 24)))
    t = rng.randrange(1, T_MAX + 1)
    if t == T_START:
        return start(xid, size, count_for(size) % (1 << 64))
    if t == T_DATA:
        return data(xid, rng.choice(U64_EDGES), rng.randbytes(rng.randrange(CHUNK + 1)))
    if t == T_END:
        return end(xid, size, rng.randbytes(32))
    return header(t, xid, rng.getrandbits(16)) + body(t, rng)


def mutate(buf: bytes, rng: random.Random) -> bytes:
    b = bytearray(buf)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and len(b) >= 8:
            i = rng.randrange(len(b) - 7)
            b[i : i + 8] = rng.choice(U64_EDGES).to_bytes(8, "big")
        elif op == 2 and b:
            del b[rng.randrange(len(b)) :]
        elif op == 3:
            b += rng.randbytes(rng.randrange(64))
        elif b:
            i = rng.randrange(len(b))
            b[i] = rng.choice((0, 0xFF, 0x7F, 0x80))
    return bytes(b)


# ---- /proc/net/p2pkp ---------------------------------------------------------------------


def proc_counters(text: str, local: str) -> dict[str, int]:
    """Counters of the receiver socket bound to `local` ("127.0.0.1:7117"), or of the
    `total` line if local is "total"."""
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if (local == "total" and words[0] == "total") or (
            words[0] == "sock" and f"local={local}" in words
        ):
            return {
                k: int(v)
                for k, _, v in (w.partition("=") for w in words[1:])
                if v.lstrip("-").isdigit()
            }
    raise FuzzError(f"/proc/net/p2pkp has no socket bound to {local}:\n{text}")


def read_counters(local: str) -> dict[str, int]:
    with open("/proc/net/p2pkp") as f:
        return proc_counters(f.read(), local)


# ---- the campaign ------------------------------------------------------------------------


@dataclass
class Campaign:
    target: tuple[str, int]
    local: str
    seed: int
    sources: list[str]
    batch: int = 128
    sync_timeout: float = 30.0
    nsocks: int = 16
    socks: list[socket.socket] = field(default_factory=list)
    sent: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    replies: Counter[int] = field(default_factory=Counter)
    done_status: dict[int, int] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    exact: bool = True

    def open(self) -> None:
        fam = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
        for i in range(self.nsocks):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((self.sources[i % len(self.sources)], 0))
            s.setblocking(False)
            self.socks.append(s)
        if self.local != "-":
            self.base = read_counters(self.local)

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()

    def drain(self) -> None:
        for s in self.socks:
            while True:
                try:
                    buf = s.recv(4096)
                except BlockingIOError:
                    break
                r = parse_reply(buf)
                if r is not None:
                    self.replies[r.type_] += 1
                    if r.type_ == T_DONE and r.status is not None:
                        self.done_status[r.xid] = r.status

    def send(self, dgram: bytes, src: int = 0, reason: str | None = None) -> None:
        s = self.socks[src % len(self.socks)]
        while True:
            try:
                s.sendto(dgram, self.target)
                break
            except BlockingIOError:
                select.select([], [s], [], 1.0)
        self.sent += 1
        self.pending += 1
        if reason is not None:
            self.expected[reason] += 1
        if self.pending >= self.batch:
            self.sync()

    def sync(self) -> None:
        """Wait until the receiver has counted every datagram sent so far."""
        if self.local == "-":  # receiver elsewhere: no counters, just pace
            self.drain()
            time.sleep(0.01)
            self.pending = 0
            return
        deadline = time.monotonic() + self.sync_timeout
        want = self.base.get("dgrams_received", 0) + self.sent
        while True:
            self.drain()
            try:
                now = read_counters(self.local)
            except FuzzError:
                if self.exact:
                    raise
                # the receiver returned (e.g. after a failed or finished transfer)
                self.local = "-"
                self.pending = 0
                return
            if now.get("dgrams_received", 0) >= want:
                break
            if time.monotonic() > deadline:
                got = now.get("dgrams_received", 0) - self.base.get("dgrams_received", 0)
                raise FuzzError(
                    f"receiver {self.local} counted {got} of {self.sent} datagrams within "
                    f"{self.sync_timeout:.0f}s (seed {self.seed}): not in read(), or datagrams "
                    f"lost in its UDP buffer"
                )
            time.sleep(0.005)
        self.pending = 0

    def wait_reply(
        self,
        type_: int,
        want: int,
        xid: int | None = None,
        timeout: float = 10.0,
        resend: bytes | None = None,
    ) -> None:
        """Wait until `want` replies of `type_` arrived in total (DONE: or one for xid).
        `resend` goes again every 0.25 s, like a sender's retransmission: a START_ACK to a
        source not yet confirmed is rate-limited by the receiver (100/s shared with BUSY)."""
        deadline = time.monotonic() + timeout
        again = time.monotonic() + 0.25
        self.drain()
        while self.replies[type_] < want:
            if resend is not None and time.monotonic() > again:
                self.send(resend, 0)
                again = time.monotonic() + 0.25
            if xid is not None and xid in self.done_status:
                return
            if time.monotonic() > deadline:
                raise FuzzError(
                    f"no reply of type {type_} within {timeout:.0f}s (seed {self.seed})"
                )
            select.select(self.socks, [], [], 0.05)
            self.drain()

    def check(self) -> dict[str, int]:
        """Delta of every drop counter; FuzzError if an exact phase's prediction failed."""
        self.sync()
        if self.local == "-":
            return {}
        try:
            now = read_counters(self.local)
        except FuzzError:
            if self.exact:
                raise
            return {}  # the receiver returned and closed since sync() (as sync() allows)
        delta = {
            k: now.get(k, 0) - self.base.get(k, 0)
            for k in (*REASONS, "dgrams_dropped", "busy_sent", "xfers_aborted")
        }
        if self.exact:
            wrong = [
                f"{r}: expected {self.expected[r]}, counted {delta[r]}"
                for r in REASONS
                if delta[r] != self.expected[r]
            ]
            if wrong:
                raise FuzzError(
                    f"drop counters differ from the prediction (seed {self.seed}): "
                    + "; ".join(wrong)
                )
        return delta


def phase_stateless(c: Campaign, rng: random.Random, n: int) -> None:
    for _ in range(n):
        case = stateless_case(rng)
        c.send(case.dgram, rng.randrange(len(c.socks)), case.reason)


def phase_xfer(c: Campaign, rng: random.Random, n: int) -> None:
    left = n
    while left > 0:
        sizes = (1, CHUNK, CHUNK + 1, 40 * CHUNK, rng.randrange(1, 2000 * CHUNK))
        # the first transfer is larger than the window: DATA beyond it is drop_window
        size = 2000 * CHUNK - rng.randrange(CHUNK) if left == n else rng.choice(sizes)
        x = FakeXfer(rng.getrandbits(64) | 1, size)
        want = c.replies[T_START_ACK] + 1
        c.send(start(x.xid, x.size), 0)
        c.wait_reply(T_START_ACK, want, resend=start(x.xid, x.size))
        per = min(left - 2, rng.randrange(50, 600))
        for i in range(max(0, per)):
            if i % 64 == 63:  # keep the transfer alive: same START again -> START_ACK
                c.send(start(x.xid, x.size), 0)
            case, src = xfer_case(rng, x)
            c.send(case.dgram, src if src == 0 else rng.randrange(1, len(c.socks)), case.reason)
        c.send(abort(x.xid), 0)
        c.sync()
        left -= max(0, per) + 2 + max(0, per) // 64


def phase_empty(c: Campaign, rng: random.Random, n: int) -> None:
    for _ in range(n):
        c.send(b"", rng.randrange(len(c.socks)), "drop_short")


def phase_random(c: Campaign, rng: random.Random, n: int) -> None:
    c.exact = False
    for _ in range(n):
        c.send(mutate(template(rng), rng), rng.randrange(len(c.socks)))


def phase_flood(c: Campaign, rng: random.Random, n: int) -> None:
    c.exact = False
    for _ in range(n):
        c.send(
            start(rng.getrandbits(64) | 1, rng.randrange(1, 1 << 30)), rng.randrange(len(c.socks))
        )


def phase_baddigest(c: Campaign, rng: random.Random, n: int) -> None:
    c.exact = False
    size = rng.randrange(1, 20 * CHUNK)
    x = FakeXfer(rng.getrandbits(64) | 1, size)
    want = c.replies[T_START_ACK] + 1
    c.send(start(x.xid, size), 0)
    c.wait_reply(T_START_ACK, want, resend=start(x.xid, size))
    for i in range(x.count):
        c.send(data(x.xid, i, rng.randbytes(chunk_len(size, i))), 0)
    c.send(end(x.xid, size, bytes(32)), 0)
    c.wait_reply(T_DONE, c.replies[T_DONE] + 1, x.xid)
    status = c.done_status.get(x.xid)
    print(f"baddigest id={x.xid:016x} size={size} done_status={status}")
    if status != -errno.EBADMSG:
        raise FuzzError(
            f"DONE status {status}, expected {-errno.EBADMSG} (EBADMSG) (seed {c.seed})"
        )
    c.send(done_ack(x.xid), 0)


PATHISH = (
    b"../../../../etc/passwd\0",
    b"/etc/shadow\0",
    b"/proc/sys/kernel/modprobe\0",
    b"/tmp/p2pkp-evil\0",
    b"%s%n%x\0",
    b"\0/root/.ssh/authorized_keys",
)


def phase_send(c: Campaign, rng: random.Random, n: int, xid: int | None, size: int) -> None:
    """A complete, valid transfer of `size` bytes filled with path-like bytes, as a forged
    sender choosing its own id: prints the DONE status the receiver answers."""
    c.exact = False
    x = FakeXfer(xid if xid is not None else rng.getrandbits(64) | 1, size)
    content = b"".join(rng.choice(PATHISH) for _ in range(size // 8 + 1))[:size]
    want = c.replies[T_START_ACK] + 1
    deadline = time.monotonic() + 30.0
    # like a real sender: START every 0.5 s (BUSY means another transfer holds the receiver)
    while c.replies[T_START_ACK] < want and x.xid not in c.done_status:
        if time.monotonic() > deadline:
            raise FuzzError(f"no START_ACK/DONE for id {x.xid:016x} within 30s")
        c.send(start(x.xid, size), 0)
        end_wait = time.monotonic() + 0.5
        while time.monotonic() < end_wait and c.replies[T_START_ACK] < want:
            select.select(c.socks, [], [], 0.05)
            c.drain()
            if x.xid in c.done_status:
                break
    if x.xid not in c.done_status:
        for i in range(x.count):
            c.send(data(x.xid, i, content[i * CHUNK : i * CHUNK + chunk_len(size, i)]), 0)
        c.send(end(x.xid, size, hashlib.sha256(content).digest()), 0)
        c.wait_reply(T_DONE, c.replies[T_DONE] + 1, x.xid)
    status = c.done_status.get(x.xid)
    print(f"send id={x.xid:016x} size={size} done_status={status}", flush=True)
    c.send(done_ack(x.xid), 0)


TMP_RX = re.compile(r"^\..+\.p2pkp-([0-9a-f]{16})$")


def phase_spoof(c: Campaign, rng: random.Random, n: int, watch: str, xid: int | None) -> None:
    c.exact = False
    deadline = time.monotonic() + 60.0
    while xid is None:
        for name in os.listdir(watch):
            m = TMP_RX.match(name)
            if m:
                xid = int(m[1], 16)
        if xid is None:
            if time.monotonic() > deadline:
                raise FuzzError(f"no temporary file .*.p2pkp-ID in {watch} within 60s")
            time.sleep(0.01)
    print(f"spoofing transfer id {xid:016x}")
    for i in range(n):
        t = rng.choice((T_DATA, T_DATA, T_DATA, T_END, T_ABORT))
        if t == T_DATA:
            d = data(xid, rng.randrange(64), rng.randbytes(CHUNK), F_ACKREQ)
        elif t == T_END:
            d = end(xid, rng.randrange(1 << 30), rng.randbytes(32))
        else:
            d = abort(xid)
        c.send(d, i)


PHASES: dict[str, Callable[[Campaign, random.Random, int], None]] = {
    "stateless": phase_stateless,
    "xfer": phase_xfer,
    "random": phase_random,
    "empty": phase_empty,
    "flood": phase_flood,
    "baddigest": phase_baddigest,
}


def split_hostport(s: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[(.+)\]:(\d+)|([^:]+):(\d+)", s)
    if not m:
        raise argparse.ArgumentTypeError(f"{s!r}: expected ADDR:PORT or [ADDR6]:PORT")
    return (m[1], int(m[2])) if m[1] else (m[3], int(m[4]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="p2pkp-fuzz-wire",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--target", required=True, type=split_hostport, help="receiver ADDR:PORT")
    ap.add_argument("--local", help="the receiver's local= in /proc/net/p2pkp (default: target)")
    ap.add_argument(
        "--phases",
        default="stateless,xfer,random",
        help="comma-separated: " + ",".join([*PHASES, "spoof", "send"]),
    )
    ap.add_argument("--count", type=int, default=10000, help="datagrams per phase")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--sources", default="", help="comma-separated local source addresses")
    ap.add_argument("--socks", type=int, default=16, help="source sockets (ports)")
    ap.add_argument("--watch", help="spoof: destination directory of the real transfer")
    ap.add_argument("--id", type=lambda v: int(v, 16), help="spoof: the transfer id (hex)")
    ap.add_argument("--size", type=int, default=5000, help="send: file size")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"seed={seed}", flush=True)
    host, port = a.target
    local = a.local or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    sources = [s for s in a.sources.split(",") if s] or ["::" if ":" in host else "0.0.0.0"]
    total = 0
    ok = True
    for name in a.phases.split(","):
        rng = random.Random(f"{seed}-{name}")
        c = Campaign((host, port), local, seed, sources, nsocks=a.socks)
        c.open()
        t0 = time.monotonic()
        try:
            if name == "spoof":
                if not a.watch and a.id is None:
                    raise FuzzError("--phases spoof needs --watch DIR or --id HEX")
                phase_spoof(c, rng, a.count, a.watch or "", a.id)
            elif name == "send":
                phase_send(c, rng, a.count, a.id, a.size)
            elif name in PHASES:
                PHASES[name](c, rng, a.count)
            else:
                raise FuzzError(f"unknown phase {name!r}")
            delta = c.check()
        except FuzzError as exc:
            print(f"FAIL phase={name} sent={c.sent}: {exc}", flush=True)
            ok = False
            total += c.sent
            c.close()
            break
        finally:
            c.close()
        total += c.sent
        drops = " ".join(f"{k}={v}" for k, v in delta.items() if v)
        replies = " ".join(f"{k}={v}" for k, v in sorted(c.replies.items()))
        print(
            f"phase={name} sent={c.sent} exact={int(c.exact)} secs={time.monotonic() - t0:.1f}"
            f" {drops} replies: {replies or 'none'}",
            flush=True,
        )
    print(f"total sent={total} seed={seed} {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
