"""Wire fuzzer for P2PKP, wire version 2 (docs/protocol.md section 2), stdlib only.

Runs in a guest next to a receiver waiting in read() (tools/p2pkp-recv) and sends it crafted
UDP datagrams from its own sockets (and, for the spoofing phases, raw IPv4 packets with a
forged source).  Every campaign is seeded (the seed is printed first) and counts what it sends.
The exact phases predict the drop reason (and the cookies_sent / refused_size / busy_sent
counters) of every datagram; the fuzzer reads the receiver's `sock` line of /proc/net/p2pkp
after each batch (which also paces it: the next batch goes only when the receiver has counted
this one) and fails if a counter differs from the prediction.

Phases (receiver idle, i.e. in read() with no transfer accepted, unless said otherwise):
  stateless  header, length, flag and field errors, datagrams of unknown transfers, STARTs with
             a guessed cookie, STARTs with an invalid GROUP extension (drop_field) and with a
             valid one (as a START without it): exact (the validation order of p2pkp_parse(),
             2.7).  A GROUP extension is valid for the receiver's bound port and the family of
             the fuzzer's sockets (group_bad()).
  xfer       fake transfers by a legitimate fake sender: START, the cookie from START_ACK, the
             confirmed START (START_ACK with ACCEPTED), then crafted DATA (past count, wrong
             lengths, beyond the window, duplicates, wrong epoch), the transfer's id with a
             wrong cookie (drop_cookie) or from other ports (drop_peer), END with a wrong size,
             competing STARTs (BUSY); ABORT at the end.  Exact.
  random     mutations of valid datagrams (boundary values, bit flips, truncation) from many
             ports.  Exact: without the cookie nothing can be accepted, so the receiver stays
             idle and every reason follows from the datagram alone (predict_idle()).
  empty      zero-length datagrams: each must count as drop_short.
  flood      STARTs of new transfers from many source ports (cookie 0, or a guessed one):
             exact; the replies (START_ACK, BUSY) are counted for the caller.
  badmac     with --key (keyed receiver): no tag, a wrong tag, a tag under another key, a
             modified datagram: drop_auth; without --key: datagrams with a tag: drop_auth.
  baddigest  one complete transfer whose END carries a wrong SHA-256: expects DONE -EBADMSG.
  send       one complete valid transfer (--size bytes of path-like content, --id or a random
             id) with the right digest: prints its SHA-256 and the DONE status.
  stale      a confirmed transfer of --size bytes of which only the last chunk is sent, then
             silence (the receiver must abandon it after its peer timeout).
  spoof      on-path attacker (IPv4): sniffs (AF_PACKET) the real transfer to the target port,
             learns its id, cookie and source, then injects DATA/END/ABORT with them from other
             source ports (drop_peer) and, with raw IP_HDRINCL packets from the real source
             address and port, with a wrong cookie (drop_cookie).
  forge      blind forger (IPv4): from --spoof-src ADDR[:PORT] (an address no guest owns), a
             complete transfer: START, confirmed STARTs with --count guessed cookies, all DATA,
             END with the right SHA-256, ABORT.  Expects cookies_sent, drop_cookie, drop_xfer.
  churn      --count STARTs with fresh ids from --spoof-src ADDR:PORT (the accepted sender),
             half unconfirmed, half with a guessed cookie, while a real transfer runs.
  fake-receiver  a minimal v2 receiver bound to --target: stateless START_ACK with a cookie,
             ACCEPTED on the confirmed START, ACKs, and DONE(--done-status) on END.

--key HEX (32 bytes): every datagram carries the tag of section 2.4 (HMAC-SHA256 under the
key of tail || head, first 16 bytes), for a receiver with P2PKP_KEY.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import hmac
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

from p2pkp_guest.wire import (
    ACKLOG_MAX,
    CHUNK,
    CHUNK_MAX,
    CHUNK_MIN,
    DGRAM_MAX,
    DIGEST_EXT,
    F_ACCEPTED,
    F_ACKREQ,
    F_DIGEST,
    F_ECHO,
    F_GROUP,
    F_MAC,
    F_RETRANS,
    FIXED_LEN,
    GROUP_BODY,
    GROUP_EXT,
    HDR,
    HLEN,
    INDEX_MAX,
    KEY_LEN,
    MAC_LEN,
    MAGIC,
    MAX_SIZE,
    T_ABORT,
    T_ACK,
    T_BUSY,
    T_DATA,
    T_DONE,
    T_DONE_ACK,
    T_END,
    T_MAX,
    T_START,
    T_START_ACK,
    TO_RECEIVER,
    TYPE_FLAGS,
    VERSION,
    WIN,
)
from p2pkp_guest.wire import DROP_REASONS as REASONS

UDP4_MAX = 65507
ERESTARTSYS = 512  # kernel-internal, never for user space
# Other counters a phase predicts.  "start_answered" = cookies_sent + refused_size: a valid
# START with cookie 0 hands out a cookie unless its size is above the receiver's limit
# (max_file_size, the caller's RLIMIT_FSIZE), which the fuzzer does not know.
OTHERS = ("start_answered", "busy_sent", "xfers_aborted", "xfers_abandoned")
# Counters only reported.
INFO = ("cookies_sent", "refused_size", "replies_limited", "dgrams_sent", "dgrams_dropped")
U64_EDGES = (0, 1, 2, (1 << 31) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 2, (1 << 64) - 1)
U64 = (1 << 64) - 1


class FuzzError(Exception):
    """A prediction did not hold, or the receiver did not count what was sent."""


# ---- datagram builders -------------------------------------------------------------------


def header(
    type_: int,
    xid: int,
    cookie: int = 0,
    flags: int = 0,
    ts: int = 0,
    echo: int = 0,
    magic: int = MAGIC,
    version: int = VERSION,
) -> bytes:
    return HDR.pack(
        magic, version, type_, flags, xid & U64, cookie & U64, ts & 0xFFFFFFFF, echo & 0xFFFFFFFF
    )


def count_for(size: int, chunk: int = CHUNK) -> int:
    return (size + chunk - 1) // chunk


def chunk_len(size: int, index: int, chunk: int = CHUNK) -> int:
    """Payload length of chunk `index` of a `size`-byte file (0 if past the end)."""
    return max(0, min(chunk, size - chunk * index))


def start(
    xid: int,
    size: int,
    chunk: int = CHUNK,
    cookie: int = 0,
    epoch: int = 0,
    rsv: int = 0,
    flags: int = 0,
    ext: bytes = b"",
) -> bytes:
    return (
        header(T_START, xid, cookie, flags)
        + struct.pack(">QIHH", size & U64, chunk & 0xFFFFFFFF, epoch, rsv)
        + ext
    )


def data(
    xid: int, index: int, payload: bytes, cookie: int = 0, flags: int = 0, epoch: int = 0
) -> bytes:
    return (
        header(T_DATA, xid, cookie, flags)
        + struct.pack(">H", epoch)
        + (index & INDEX_MAX).to_bytes(6, "big")
        + payload
    )


def end(xid: int, size: int, digest: bytes, cookie: int = 0) -> bytes:
    return header(T_END, xid, cookie) + struct.pack(">Q", size & U64) + digest


def abort(xid: int, reason: int = errno.EINTR, cookie: int = 0) -> bytes:
    return header(T_ABORT, xid, cookie) + struct.pack(">II", reason & 0xFFFFFFFF, 0)


def done_ack(xid: int, cookie: int = 0) -> bytes:
    return header(T_DONE_ACK, xid, cookie)


def start_ack(
    xid: int, cookie: int, window: int, flags: int = 0, echo: int = 0, epoch: int = 0
) -> bytes:
    return header(T_START_ACK, xid, cookie, flags | F_ECHO, echo=echo) + struct.pack(
        ">IHHQ", window, epoch, 0, 0
    )


def ack(xid: int, cookie: int, cum: int, bitmap: bytes, echo: int, window: int = WIN) -> bytes:
    return (
        header(T_ACK, xid, cookie, F_ECHO, echo=echo)
        + struct.pack(">QHHI", cum, 0, WIN, window)
        + bitmap
    )


def done(xid: int, cookie: int, status: int, echo: int = 0) -> bytes:
    return header(T_DONE, xid, cookie, F_ECHO, echo=echo) + struct.pack(">iI", status, 0)


def body(type_: int, rng: random.Random) -> bytes:
    """A random body of the exact fixed length of `type_`."""
    return rng.randbytes(FIXED_LEN[type_])


def start_tail(flags: int) -> int:
    """Length of the START extensions announced by `flags` (p2pkp_start_tail)."""
    return (GROUP_EXT if flags & F_GROUP else 0) + (DIGEST_EXT if flags & F_DIGEST else 0)


def group_ext(family: int, port: int, addr: bytes, acklog: int = 0) -> bytes:
    """START's GROUP extension (section 2.2): family u8 (4 or 6), acklog u8, port u16, the
    address in 16 bytes (an IPv4 one in the first 4, the rest zero)."""
    return GROUP_BODY.pack(family & 0xFF, acklog & 0xFF, port & 0xFFFF, addr.ljust(16, b"\0"))


def group_bad(ext: bytes, port: int, v6: bool) -> bool:
    """Whether a receiver bound to `port` refuses this GROUP extension of a START from an
    IPv6 (v6) or IPv4 sender (drop_field): the family is not the sender's (4 or 6); an IPv4
    address outside 224.0.0.0/4, in 224.0.0.0/24 (link-local control) or with bytes 4..15
    not zero; an IPv6 address outside ff00::/8 or of scope 0, 1 or 15 (the low nibble of its
    second byte); a port other than the receiver's; acklog above ACKLOG_MAX."""
    family, acklog, gport, addr = GROUP_BODY.unpack(ext)
    if family != (6 if v6 else 4) or gport != port or acklog > ACKLOG_MAX:
        return True
    if v6:
        return addr[0] != 0xFF or addr[1] & 0x0F in (0, 1, 15)
    return addr[0] >> 4 != 0xE or addr[:3] == bytes((224, 0, 0)) or any(addr[4:])


def fields(d: bytes) -> tuple[int, int, int, int, int, int, int, int]:
    """(magic, version, type, flags, id, cookie, ts, echo) of a datagram of >= 32 bytes."""
    magic, version, type_, flags, xid, cookie, ts, echo = HDR.unpack_from(d)
    return magic, version, type_, flags, xid, cookie, ts, echo


# ---- the MAC (section 2.4) ---------------------------------------------------------------


def tag(key: bytes, d: bytes) -> bytes:
    """Tag of datagram d (without its tag): HMAC-SHA256(key, tail || head)[:16], head = the
    header and the type's fixed body, tail = the rest."""
    t = d[5] if len(d) > 5 else 0
    fixed = HLEN + FIXED_LEN.get(t, 0)
    return hmac.new(key, d[fixed:] + d[:fixed], hashlib.sha256).digest()[:MAC_LEN]


def seal(d: bytes, key: bytes | None) -> bytes:
    """d with the MAC flag and its tag, when a key is given and d holds a header."""
    if key is None or len(d) < HLEN:
        return d
    flags = struct.unpack_from(">H", d, 6)[0] | F_MAC
    d = d[:6] + struct.pack(">H", flags) + d[8:]
    return d + tag(key, d)


def mac_ok(d: bytes, key: bytes) -> bool:
    return len(d) >= HLEN + MAC_LEN and hmac.compare_digest(tag(key, d[:-MAC_LEN]), d[-MAC_LEN:])


# ---- what an idle receiver does with a datagram (p2pkp_parse, p2pkp_rx_start/handle) ------


def parse_reason(d: bytes, key: bytes | None) -> str | None:
    """Drop reason of p2pkp_parse() for a datagram to a receiver (with or without a key),
    None when it passes.  The order is the code's: size, magic, version, type/direction, MAC
    flag vs key, fixed part, tag, flags, tail length."""
    if len(d) > DGRAM_MAX:
        return "drop_length"  # MSG_TRUNC
    if len(d) < HLEN:
        return "drop_short"
    magic, version, type_, flags, *_ = fields(d)
    if magic != MAGIC:
        return "drop_magic"
    if version != VERSION:
        return "drop_version"
    if type_ not in TO_RECEIVER:
        return "drop_type"
    if bool(flags & F_MAC) != (key is not None):
        return "drop_auth"
    fixed = HLEN + FIXED_LEN[type_]
    n = len(d) - (MAC_LEN if key is not None else 0)
    if n < fixed:
        return "drop_length"
    if key is not None and not mac_ok(d, key):
        return "drop_auth"
    if flags & ~(F_ECHO | F_MAC | TYPE_FLAGS.get(type_, 0)) & 0xFFFF:
        return "drop_field"
    t = n - fixed
    if type_ == T_DATA:
        if not 1 <= t <= CHUNK_MAX:
            return "drop_length"
    elif t != (start_tail(flags) if type_ == T_START else 0):
        return "drop_length"
    return None


def start_field_bad(d: bytes, port: int, v6: bool) -> bool:
    """START fields a receiver bound to `port` refuses (drop_field) from an IPv6 (v6) or IPv4
    sender: chunk outside 512..65000, size above 1 TiB, an invalid GROUP extension
    (group_bad(); a valid one changes nothing here, DIGEST is taken: resume, section 2.3).
    Any epoch is valid: a new transfer may begin in any epoch, and a newer one for the
    accepted transfer moves it (section 3.2)."""
    flags = struct.unpack_from(">H", d, 6)[0]
    size, chunk, _, _ = struct.unpack_from(">QIHH", d, HLEN)
    if not CHUNK_MIN <= chunk <= CHUNK_MAX or size > MAX_SIZE:
        return True
    ext = HLEN + FIXED_LEN[T_START]
    return bool(flags & F_GROUP) and group_bad(d[ext : ext + GROUP_EXT], port, v6)


@dataclass
class Outcome:
    reason: str | None  # a drop counter, or None
    counter: str | None = None  # another counter it bumps (OTHERS)


def predict_idle(d: bytes, key: bytes | None, port: int, v6: bool) -> Outcome:
    """What a receiver bound to `port`, in read() with no transfer accepted (no allow list,
    no earlier transfer with this id, no P2PKP_NO_GROUP), does with d from an IPv6 (v6) or
    IPv4 source."""
    r = parse_reason(d, key)
    if r is not None:
        return Outcome(r)
    type_ = d[5]
    if type_ == T_START:
        if start_field_bad(d, port, v6):
            return Outcome("drop_field")
        if fields(d)[5]:
            return Outcome("drop_cookie")  # a guessed cookie: 2^-64 to be right
        return Outcome(None, "start_answered")
    return Outcome("drop_xfer")  # DATA, END, DONE_ACK, ABORT of no accepted transfer


@dataclass
class Reply:
    type_: int
    xid: int
    cookie: int
    flags: int
    ts: int
    status: int | None  # DONE status
    window: int | None  # START_ACK window


def parse_reply(buf: bytes) -> Reply | None:
    if len(buf) < HLEN:
        return None
    magic, version, type_, flags, xid, cookie, ts, _echo = fields(buf)
    if magic != MAGIC or version != VERSION:
        return None
    status = window = None
    if type_ == T_DONE and len(buf) >= HLEN + 8:
        status = struct.unpack_from(">i", buf, HLEN)[0]
    if type_ == T_START_ACK and len(buf) >= HLEN + 16:
        window = struct.unpack_from(">I", buf, HLEN)[0]
    return Reply(type_, xid, cookie, flags, ts, status, window)


# ---- stateless cases ---------------------------------------------------------------------


@dataclass
class Case:
    dgram: bytes
    reason: str | None  # the drop counter it must bump, None: not dropped
    what: str
    counter: str | None = None  # another counter it bumps (OTHERS)


def _rand_xid(rng: random.Random) -> int:
    return rng.choice((rng.getrandbits(64) | 1, *U64_EDGES[1:]))


def _rand_cookie(rng: random.Random) -> int:
    """A guessed (non-zero) cookie."""
    return rng.choice((rng.getrandbits(64) | 1, *U64_EDGES[1:]))


def _valid_start_body(rng: random.Random) -> tuple[int, int]:
    size = rng.choice((0, 1, CHUNK, rng.randrange(1 << 30)))
    chunk = rng.choice((CHUNK_MIN, CHUNK, 8192, CHUNK_MAX, rng.randrange(CHUNK_MIN, CHUNK_MAX + 1)))
    return size, chunk


def _valid_group(rng: random.Random, port: int, v6: bool) -> bytes:
    """A GROUP extension a receiver bound to `port` takes from a sender of this family."""
    acklog = rng.randrange(ACKLOG_MAX + 1)
    if v6:
        # any flags nibble, a scope from link-local (2) to global (14)
        second = rng.randrange(16) << 4 | rng.randrange(2, 15)
        return group_ext(6, port, bytes((0xFF, second)) + rng.randbytes(14), acklog)
    addr = rng.choice(
        (
            bytes((224, 0, 1, 0)),  # the first address outside 224.0.0.0/24
            bytes((239, 255, 255, 255)),
            bytes((239, 1, 2, 3)),
            bytes((rng.randrange(224, 240), rng.randrange(1, 256))) + rng.randbytes(2),
        )
    )
    return group_ext(4, port, addr, acklog)


def _bad_group(rng: random.Random, port: int, v6: bool) -> tuple[bytes, str]:
    """A GROUP extension the receiver refuses (drop_field) for one reason of group_bad(),
    and that reason."""
    ext = bytearray(_valid_group(rng, port, v6))
    why = rng.randrange(5 if v6 else 6)
    if why == 0:
        ext[0] = rng.choice((0, 1, 5, 255, 4 if v6 else 6))
        return bytes(ext), f"family {ext[0]}"
    if why == 1:
        bad = rng.choice(((port + 1) & 0xFFFF, (port - 1) & 0xFFFF, port ^ 0x8000, 0))
        ext[2:4] = (bad if bad != port else port ^ 1).to_bytes(2, "big")
        return bytes(ext), f"port {int.from_bytes(ext[2:4], 'big')} (bound {port})"
    if why == 2:
        ext[1] = rng.choice((ACKLOG_MAX + 1, 0x80, 0xFF))
        return bytes(ext), f"acklog {ext[1]}"
    if why == 3:
        # not multicast: IPv4 outside 224.0.0.0/4, IPv6 outside ff00::/8
        ext[4] = rng.choice((0, 0xFE, 0xFD, 0x20) if v6 else (0, 10, 127, 223, 240, 255))
        return bytes(ext), f"address {bytes(ext[4:20]).hex()}"
    if why == 4 and v6:
        ext[5] = ext[5] & 0xF0 | rng.choice((0, 1, 15))
        return bytes(ext), f"scope {ext[5] & 0x0F}"
    if why == 4:
        ext[4:8] = bytes((224, 0, 0, rng.choice((0, 1, 255, rng.randrange(256)))))
        return bytes(ext), f"address 224.0.0.{ext[7]}"
    i = rng.randrange(8, 20)  # an IPv4 group: bytes 4..15 of the address must be zero
    ext[i] = rng.randrange(1, 256)
    return bytes(ext), f"address byte {i - 4} set"


def _start_flags(rng: random.Random, port: int, v6: bool) -> tuple[int, bytes, str]:
    """(flags, extensions, text): a third of STARTs carry a valid GROUP extension (and
    sometimes DIGEST), which must change nothing."""
    if rng.randrange(3):
        return 0, b"", ""
    if rng.randrange(2):
        return F_GROUP, _valid_group(rng, port, v6), " group"
    return F_GROUP | F_DIGEST, _valid_group(rng, port, v6) + rng.randbytes(DIGEST_EXT), " group"


def stateless_case(rng: random.Random, port: int, v6: bool) -> Case:
    """One datagram whose fate does not depend on the receiver's state (idle) for a receiver
    bound to `port` and the fuzzer's family (v6).  Flags carry no MAC: the phase seals it
    (seal()) for a keyed receiver, which changes no reason."""
    kind = rng.randrange(15)
    xid = _rand_xid(rng)
    cookie = rng.choice((0, _rand_cookie(rng)))
    if kind == 0:
        n = rng.randrange(1, HLEN)  # empty datagrams: phase "empty"
        return Case(rng.randbytes(n), "drop_short", f"short {n}")
    if kind == 1:
        magic = rng.choice((0, MAGIC ^ (1 << rng.randrange(32)), 0xFFFFFFFF, rng.getrandbits(32)))
        if magic == MAGIC:
            magic ^= 1
        t = rng.randrange(256)
        d = header(t, xid, cookie, magic=magic) + rng.randbytes(rng.randrange(64))
        return Case(d, "drop_magic", "magic")
    if kind == 2:
        v = rng.choice((0, 1, 3, 0xFF, rng.randrange(256)))
        if v == VERSION:
            v = 1
        if v == 1 and rng.randrange(2):
            # a complete version-1 START (24-byte header, size count chunk rsv)
            d = struct.pack(">IBBHQII", MAGIC, 1, T_START, 0, xid, 0, 0) + struct.pack(
                ">QQII", 5000, 4, 1400, 0
            )
            return Case(d, "drop_version", "version 1 START")
        d = header(T_START, xid, cookie, version=v) + body(T_START, rng)
        return Case(d, "drop_version", f"version {v}")
    if kind == 3:
        t = rng.choice((0, T_MAX + 1, 0xFF, rng.randrange(T_MAX + 1, 256)))
        return Case(
            header(t, xid, cookie) + rng.randbytes(rng.randrange(32)), "drop_type", f"type {t}"
        )
    if kind == 4:
        return _bad_length(rng, xid, cookie)
    if kind == 5:
        n = rng.choice((DGRAM_MAX + 1, rng.randrange(DGRAM_MAX + 1, UDP4_MAX - MAC_LEN + 1)))
        t = rng.choice(TO_RECEIVER)
        d = header(t, xid, cookie) + rng.randbytes(n - HLEN)
        return Case(d, "drop_length", f"oversize {n}")
    if kind == 6:
        t = rng.choice((T_START_ACK, T_BUSY, T_ACK, T_DONE))
        return Case(header(t, xid, cookie) + body(t, rng), "drop_type", f"wrong direction {t}")
    if kind == 7:
        return _bad_start(rng, xid, cookie, port, v6)
    if kind == 8:
        return _bad_flags(rng, xid, cookie)
    if kind == 9:
        idx = rng.choice((0, 1, INDEX_MAX, rng.randrange(INDEX_MAX)))
        plen = rng.choice((1, CHUNK_MIN - 1, CHUNK, CHUNK_MAX, rng.randrange(1, 2000)))
        flags = rng.choice((0, F_ACKREQ, F_RETRANS, F_GROUP, F_ECHO | F_ACKREQ))
        epoch = rng.choice((0, 0, 1, 0xFFFF))
        d = data(xid, idx, rng.randbytes(plen), cookie, flags, epoch)
        return Case(d, "drop_xfer", "data unknown id")
    if kind == 10:
        size = rng.choice(U64_EDGES)
        return Case(end(xid, size, rng.randbytes(32), cookie), "drop_xfer", "end unknown id")
    if kind == 11:
        return Case(abort(xid, rng.getrandbits(32), cookie), "drop_xfer", "abort unknown id")
    if kind == 12:
        return Case(done_ack(xid, cookie), "drop_xfer", "done_ack unknown id")
    size, chunk = _valid_start_body(rng)
    flags, ext, what = _start_flags(rng, port, v6)
    if kind == 13:
        c = _rand_cookie(rng)
        d = start(xid, size, chunk, c, flags=flags, ext=ext)
        return Case(d, "drop_cookie", f"start{what} guessed cookie {c:x}")
    d = start(xid, size, chunk, flags=flags, ext=ext)
    return Case(d, None, f"start{what} cookie 0", "start_answered")


def _bad_length(rng: random.Random, xid: int, cookie: int) -> Case:
    t = rng.choice(TO_RECEIVER)
    exact = FIXED_LEN[t]
    if t == T_DATA:
        # fixed part cut short, no payload, or a payload above CHUNK_MAX
        n = rng.choice((0, 7, 8, 8 + CHUNK_MAX + 1, rng.randrange(8 + CHUNK_MAX + 1, 65400)))
    else:
        n = rng.choice((0, exact - 1, exact + 1, exact + 20, exact + 32, rng.randrange(200)))
        if n == exact or n < 0:
            n = exact + 1
    return Case(header(t, xid, cookie) + rng.randbytes(n), "drop_length", f"type {t} body {n}")


def _bad_start(rng: random.Random, xid: int, cookie: int, port: int, v6: bool) -> Case:
    """A START of valid length whose fields the receiver refuses: drop_field before the cookie
    is looked at."""
    size, chunk = _valid_start_body(rng)
    which = rng.randrange(5)
    if which == 0:
        chunk = rng.choice((0, 1, CHUNK_MIN - 1, CHUNK_MAX + 1, 0xFFFFFFFF))
        return Case(start(xid, size, chunk, cookie), "drop_field", f"start chunk {chunk}")
    if which == 1:
        big = rng.choice((MAX_SIZE + 1, 1 << 63, U64, MAX_SIZE + CHUNK))
        return Case(start(xid, big, chunk, cookie), "drop_field", f"start size {big}")
    if which == 2:
        # a bad chunk in a START of a later epoch: the epoch does not make it valid
        ep, bad = rng.choice((1, 2, 0xFFFF)), rng.choice((CHUNK_MIN - 1, CHUNK_MAX + 1))
        d = start(xid, size, bad, cookie, epoch=ep)
        return Case(d, "drop_field", f"start epoch {ep} chunk {bad}")
    grp, why = _bad_group(rng, port, v6)
    if which == 3:
        d = start(xid, size, chunk, cookie, flags=F_GROUP, ext=grp)
        return Case(d, "drop_field", f"start group {why}")
    d = start(xid, size, chunk, cookie, flags=F_GROUP | F_DIGEST, ext=grp + rng.randbytes(32))
    return Case(d, "drop_field", f"start group {why} and digest")


def _bad_flags(rng: random.Random, xid: int, cookie: int) -> Case:
    """A datagram of valid length with a flag its type does not take: drop_field (the flags
    are checked before the tail's length)."""
    t = rng.choice(TO_RECEIVER)
    allowed = F_ECHO | F_MAC | TYPE_FLAGS.get(t, 0)
    bad = [b for b in range(16) if not (1 << b) & allowed]
    flags = (1 << rng.choice(bad)) | (rng.getrandbits(16) & ~F_MAC & 0xFFFF)
    flags &= ~(F_GROUP | F_DIGEST) if t == T_START else 0xFFFF  # START: no extension length
    if not flags & ~allowed:
        flags |= 1 << 15
    if t == T_DATA:
        d = data(xid, 0, rng.randbytes(rng.randrange(1, 1500)), cookie, flags)
    elif t == T_START:
        d = start(xid, 1, CHUNK, cookie, flags=flags)
    else:
        d = header(t, xid, cookie, flags) + body(t, rng)
    return Case(d, "drop_field", f"type {t} flags {flags:#x}")


# ---- transfer model (xfer phase) ---------------------------------------------------------


@dataclass
class FakeXfer:
    """What the receiver knows of one of our transfers, to predict its drop reasons."""

    xid: int
    size: int
    chunk: int = CHUNK
    cookie: int = 0  # the receiver's, from START_ACK
    window: int = WIN  # from the accepting START_ACK
    count: int = 0
    stored: set[int] = field(default_factory=set)
    cum: int = 0

    def __post_init__(self) -> None:
        self.count = count_for(self.size, self.chunk)

    def clen(self, idx: int) -> int:
        return chunk_len(self.size, idx, self.chunk)

    def store(self, idx: int) -> None:
        self.stored.add(idx)
        while self.cum in self.stored:
            self.stored.discard(self.cum)
            self.cum += 1

    def is_dup(self, idx: int) -> bool:
        """Below cum, or its slot of the 512-chunk ring holds a stored chunk (aliasing)."""
        return idx < self.cum or any(j % WIN == idx % WIN for j in self.stored)

    def complete(self) -> bool:
        return self.cum == self.count

    def wrong_cookie(self, rng: random.Random) -> int:
        c = rng.choice((0, _rand_cookie(rng), self.cookie ^ 1, self.cookie ^ (1 << 63)))
        return c if c != self.cookie else self.cookie ^ 2


def data_reason(x: FakeXfer, idx: int, plen: int) -> str | None:
    """Reason for DATA idx with a plen-byte payload of x, epoch 0, right cookie and source."""
    if idx >= x.count:
        return "drop_field"
    if plen != x.clen(idx):
        return "drop_field"
    if x.is_dup(idx):
        return "drop_dup"
    if idx >= x.cum + x.window:
        return "drop_window"
    return None


def xfer_case(rng: random.Random, x: FakeXfer, port: int, v6: bool) -> tuple[Case, int]:
    """A datagram for transfer x (accepted by a receiver bound to `port`, from the fuzzer's
    family: v6) and the source index it goes from (0: the accepted sender, 1: another port
    of the same address)."""
    kind = rng.randrange(17)
    c = x.cookie
    if kind == 0:
        idx = rng.choice((x.count, x.count + 1, INDEX_MAX))
        d = data(x.xid, idx, rng.randbytes(rng.randrange(1, CHUNK + 1)), c)
        return Case(d, "drop_field", f"data index {idx} >= count {x.count}"), 0
    if kind == 1:
        idx = rng.randrange(x.count)
        want = x.clen(idx)
        n = rng.choice([v for v in (1, want - 1, want + 1, x.chunk + 1, CHUNK_MAX) if v >= 1])
        if n == want:
            n = want + 1
        why = "drop_field" if n <= CHUNK_MAX else "drop_length"
        return Case(data(x.xid, idx, rng.randbytes(n), c), why, f"data {idx} len {n}"), 0
    if kind in (2, 3, 4, 5):
        lo, hi = x.cum, min(x.count, x.cum + x.window)
        if kind == 4 and x.count > x.cum + x.window:
            idx = rng.randrange(x.cum + x.window, x.count)
        elif hi > lo and kind in (2, 5):
            idx = rng.randrange(lo, hi)
        else:
            idx = rng.randrange(0, max(1, hi))
        reason = data_reason(x, idx, x.clen(idx))
        if reason is None:
            x.store(idx)
        flags = rng.choice((0, F_ACKREQ, F_RETRANS, F_ECHO))
        d = data(x.xid, idx, rng.randbytes(x.clen(idx)), c, flags)
        return Case(d, reason, f"data {idx}"), 0
    if kind == 6:
        # the transfer's id from another port: drop_peer, whatever the cookie
        t = rng.choice((T_DATA, T_END, T_ABORT, T_DONE_ACK))
        ck = rng.choice((c, x.wrong_cookie(rng)))
        d = {
            T_DATA: lambda: data(x.xid, 0, rng.randbytes(x.clen(0) or 1), ck),
            T_END: lambda: end(x.xid, x.size, rng.randbytes(32), ck),
            T_ABORT: lambda: abort(x.xid, errno.EINTR, ck),
            T_DONE_ACK: lambda: done_ack(x.xid, ck),
        }[t]()
        return Case(d, "drop_peer", f"forged type {t} other port"), 1
    if kind == 7:
        other = rng.getrandbits(64) | 1
        d = data(other, 0, rng.randbytes(x.clen(0) or 1), c)
        return Case(d, "drop_xfer", "data other id"), 0
    if kind == 8:
        bad = rng.choice((x.size + 1, x.size - 1, 0, U64))
        if bad == x.size:
            bad += 1
        d = end(x.xid, bad, rng.randbytes(32), c)
        return Case(d, "drop_field", f"end size {bad}"), 0
    if kind == 9:
        if rng.randrange(2):
            d = start(x.xid, x.size, rng.choice((CHUNK_MIN - 1, CHUNK_MAX + 1)), c)
            return Case(d, "drop_field", "start bad chunk"), 0
        # an invalid GROUP extension: refused whatever the id, cookie and source
        grp, why = _bad_group(rng, port, v6)
        xid = rng.choice((x.xid, rng.getrandbits(64) | 1))
        d = start(xid, x.size, x.chunk, c, flags=F_GROUP, ext=grp)
        return Case(d, "drop_field", f"start group {why}"), rng.randrange(2)
    if kind == 10:
        # a competing START from another port: answered BUSY, not a drop
        flags, ext, what = _start_flags(rng, port, v6)
        xid = rng.choice((x.xid, rng.getrandbits(64) | 1))
        d = start(xid, rng.randrange(1, 1 << 20), flags=flags, ext=ext)
        return Case(d, None, f"busy start{what}", "busy_sent"), 1
    if kind == 11:
        # the transfer's id and source with a wrong cookie
        t = rng.choice((T_DATA, T_END, T_ABORT, T_DONE_ACK))
        ck = x.wrong_cookie(rng)
        d = {
            T_DATA: lambda: data(x.xid, 0, rng.randbytes(x.clen(0) or 1), ck),
            T_END: lambda: end(x.xid, x.size, rng.randbytes(32), ck),
            T_ABORT: lambda: abort(x.xid, errno.EINTR, ck),
            T_DONE_ACK: lambda: done_ack(x.xid, ck),
        }[t]()
        return Case(d, "drop_cookie", f"type {t} cookie {ck:x}"), 0
    if kind == 12:
        # DATA of another epoch than the accepted one (0): stale
        ep = rng.choice((1, 2, 0xFFFF))
        idx = rng.randrange(x.count) if x.count else 0
        d = data(x.xid, idx, rng.randbytes(x.clen(idx) or 1), c, epoch=ep)
        return Case(d, "drop_xfer", f"data epoch {ep}"), 0
    if kind == 13:
        # a newer epoch for the accepted transfer must keep its size
        ep = rng.choice((1, 0xFFFF))
        bad = rng.choice((x.size + 1, max(x.size - 1, 0) if x.size else 1))
        d = start(x.xid, bad, x.chunk, c, epoch=ep)
        return Case(d, "drop_field", f"start epoch {ep} size {bad}"), 0
    if kind == 14:
        # STARTs from the accepted source: its own (START_ACK again), a new id with cookie 0
        # (a cookie is handed out), a new id or another source with a guessed cookie
        which = rng.randrange(4)
        if which == 0:
            return Case(start(x.xid, x.size, x.chunk, c), None, "start again"), 0
        if which == 1:
            flags, ext, what = _start_flags(rng, port, v6)
            d = start(rng.getrandbits(64) | 1, rng.randrange(1, 1 << 20), flags=flags, ext=ext)
            return Case(d, None, f"start{what} new id", "start_answered"), 0
        d = start(rng.getrandbits(64) | 1, rng.randrange(1, 1 << 20), cookie=_rand_cookie(rng))
        return Case(d, "drop_cookie", "start new id guessed cookie"), which - 2
    if kind == 15:
        return Case(done_ack(x.xid, c), "drop_xfer", "done_ack while receiving"), 0
    ck = _rand_cookie(rng)
    d = start(x.xid, x.size, x.chunk, ck if ck != x.cookie else ck ^ 2)
    return Case(d, "drop_cookie", "start own id wrong cookie"), rng.randrange(2)


# ---- random mutations --------------------------------------------------------------------


def template(rng: random.Random, port: int, v6: bool) -> bytes:
    xid = _rand_xid(rng)
    cookie = rng.choice((0, 0, _rand_cookie(rng)))
    size = rng.choice((*U64_EDGES, MAX_SIZE, rng.randrange(1 << 24)))
    t = rng.randrange(1, T_MAX + 1)
    if t == T_START:
        flags = rng.choice((0, 0, 0, F_GROUP, F_DIGEST, F_GROUP | F_DIGEST))
        chunk = rng.choice((CHUNK, CHUNK_MIN, CHUNK_MAX))
        ext = b""
        g = rng.randrange(3) if flags & F_GROUP else -1
        if g == 0:  # valid for this receiver
            ext = _valid_group(rng, port, v6)
        elif g == 1:  # invalid for one reason
            ext = _bad_group(rng, port, v6)[0]
        elif g == 2:  # any bytes
            ext = rng.randbytes(GROUP_EXT)
        if flags & F_DIGEST:
            ext += rng.randbytes(DIGEST_EXT)
        return start(xid, size, chunk, cookie, flags=flags, ext=ext)
    if t == T_DATA:
        return data(xid, rng.randrange(INDEX_MAX), rng.randbytes(rng.randrange(CHUNK + 1)), cookie)
    if t == T_END:
        return end(xid, size, rng.randbytes(32), cookie)
    return header(t, xid, cookie, rng.getrandbits(16)) + body(t, rng)


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


def random_dgram(rng: random.Random, key: bytes | None, port: int, v6: bool) -> bytes:
    """A mutated datagram (for a receiver bound to `port`, from the family v6); with a key,
    mostly sealed (before or after the mutation)."""
    d = template(rng, port, v6)
    if key is None:
        return mutate(d, rng)
    how = rng.randrange(3)
    if how == 0:
        return seal(mutate(d, rng), key)
    if how == 1:
        return mutate(seal(d, key), rng)
    return mutate(d, rng)


# ---- raw IPv4 (forged sources) and AF_PACKET (sniffing) ----------------------------------


def inet_sum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s: int = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp4_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP packet for an IP_HDRINCL socket: the kernel fills the IP checksum and
    the packet id; the UDP checksum is computed here (pseudo header)."""
    s, d = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    ulen = 8 + len(payload)
    udp = struct.pack("!HHHH", src[1], dst[1], ulen, 0) + payload
    csum = 0xFFFF - inet_sum(s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, ulen) + udp)
    udp = udp[:6] + struct.pack("!H", csum or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, socket.IPPROTO_UDP, 0, s, d)
    return ip + udp


@dataclass
class Sniffed:
    xid: int
    cookie: int
    src: tuple[str, int]
    type_: int


def parse_ip4_udp(pkt: bytes) -> tuple[tuple[str, int], tuple[str, int], bytes] | None:
    """(source, destination, UDP payload) of an IPv4/UDP packet (first fragment), or None."""
    if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != socket.IPPROTO_UDP:
        return None
    ihl = (pkt[0] & 0xF) * 4
    if struct.unpack_from("!H", pkt, 6)[0] & 0x1FFF:  # not the first fragment
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", pkt, ihl)
    src = (socket.inet_ntoa(pkt[12:16]), sport)
    dst = (socket.inet_ntoa(pkt[16:20]), dport)
    return src, dst, pkt[ihl + 8 : ihl + ulen]


def sniff_match(pkt: bytes, target: tuple[str, int]) -> Sniffed | None:
    """A datagram of an accepted transfer (confirmed START, DATA, END: cookie != 0) to the
    target, in an IPv4 packet."""
    p = parse_ip4_udp(pkt)
    if p is None:
        return None
    src, dst, payload = p
    if dst[1] != target[1] or (target[0] not in ("0.0.0.0", dst[0])):
        return None
    if len(payload) < HLEN:
        return None
    magic, version, type_, flags, xid, cookie, _ts, _echo = fields(payload)
    if magic != MAGIC or version != VERSION or not cookie or flags & F_GROUP:
        return None
    if type_ not in (T_START, T_DATA, T_END):
        return None
    return Sniffed(xid, cookie, src, type_)


def sniff(target: tuple[str, int], timeout: float) -> Sniffed:
    """Learn id, cookie and source of a real transfer to target from the wire (AF_PACKET,
    every interface, incoming and outgoing: ETH_P_ALL, as only taps of every protocol see
    outgoing packets; IPv4 kept by the link-level protocol)."""
    eth_p_all, eth_p_ip = 0x0003, 0x0800
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(eth_p_all))
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FuzzError(
                    f"no datagram of an accepted transfer to {target[0]}:{target[1]} "
                    f"seen within {timeout:.0f}s"
                )
            r, _, _ = select.select([s], [], [], min(left, 1.0))
            if not r:
                continue
            pkt, addr = s.recvfrom(65535)
            if addr[1] != eth_p_ip:
                continue
            m = sniff_match(pkt, target)
            if m is not None:
                return m
    finally:
        s.close()


# ---- /proc/net/p2pkp ---------------------------------------------------------------------


def proc_line(text: str, local: str) -> list[str]:
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if (local == "total" and words[0] == "total") or (
            words[0] == "sock" and f"local={local}" in words
        ):
            return words
    raise FuzzError(f"/proc/net/p2pkp has no socket bound to {local}:\n{text}")


def proc_counters(text: str, local: str) -> dict[str, int]:
    """Counters of the receiver socket bound to `local` ("127.0.0.1:7117"), or of the
    `total` line if local is "total"."""
    return {
        k: int(v)
        for k, _, v in (w.partition("=") for w in proc_line(text, local)[1:])
        if v.lstrip("-").isdigit()
    }


def proc_words(text: str, local: str) -> dict[str, str]:
    """Every key=value of the socket's line (state, auth, allowed, counters)."""
    return {k: v for k, _, v in (w.partition("=") for w in proc_line(text, local)[1:])}


def read_proc() -> str:
    with open("/proc/net/p2pkp") as f:
        return f.read()


def read_counters(local: str) -> dict[str, int]:
    return proc_counters(read_proc(), local)


def counter_delta(now: dict[str, int], base: dict[str, int], key: str) -> int:
    if key == "start_answered":
        return sum(now.get(k, 0) - base.get(k, 0) for k in ("cookies_sent", "refused_size"))
    return now.get(key, 0) - base.get(key, 0)


# ---- the campaign ------------------------------------------------------------------------


@dataclass
class StartAck:
    cookie: int
    window: int
    accepted: bool


@dataclass
class Campaign:
    target: tuple[str, int]
    local: str
    seed: int
    sources: list[str]
    key: bytes | None = None
    batch: int = 128
    sync_timeout: float = 30.0
    nsocks: int = 16
    socks: list[socket.socket] = field(default_factory=list)
    raw: socket.socket | None = None
    sent: int = 0
    expected: Counter[str] = field(default_factory=Counter)
    replies: Counter[int] = field(default_factory=Counter)
    done_status: dict[int, int] = field(default_factory=dict)
    start_acks: dict[int, StartAck] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    exact: bool = True
    # concurrent: another transfer runs, so dgrams_received cannot pace us and only the
    # counters this phase predicts are compared (after they settle)
    concurrent: bool = False

    @property
    def port(self) -> int:
        """The receiver's bound port (where the datagrams go)."""
        return self.target[1]

    @property
    def v6(self) -> bool:
        """Whether the fuzzer's sockets (the senders the receiver sees) are IPv6."""
        return ":" in self.target[0]

    def open(self) -> None:
        fam = socket.AF_INET6 if self.v6 else socket.AF_INET
        for i in range(self.nsocks):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((self.sources[i % len(self.sources)], 0))
            s.setblocking(False)
            self.socks.append(s)
        self.rebase()

    def rebase(self) -> None:
        """Counters from now on: a phase that waited (sniffing) starts its accounting here."""
        if self.local != "-":
            self.base = read_counters(self.local)
            self.sent = 0
            self.pending = 0
            self.expected.clear()

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks.clear()
        if self.raw is not None:
            self.raw.close()
            self.raw = None

    def seal(self, d: bytes) -> bytes:
        return seal(d, self.key)

    def receiver_words(self) -> dict[str, str]:
        return proc_words(read_proc(), self.local)

    def drain(self) -> None:
        for s in self.socks:
            while True:
                try:
                    buf = s.recv(4096)
                except BlockingIOError:
                    break
                r = parse_reply(buf)
                if r is None:
                    continue
                self.replies[r.type_] += 1
                if r.type_ == T_DONE and r.status is not None:
                    self.done_status[r.xid] = r.status
                if r.type_ == T_START_ACK and r.window is not None:
                    prev = self.start_acks.get(r.xid)
                    acc = bool(r.flags & F_ACCEPTED)
                    if prev is None or acc or not prev.accepted:
                        self.start_acks[r.xid] = StartAck(r.cookie, r.window, acc)

    def _account(self, reason: str | None, counter: str | None) -> None:
        self.sent += 1
        self.pending += 1
        if reason is not None:
            self.expected[reason] += 1
        if counter is not None:
            self.expected[counter] += 1
        if self.pending >= self.batch:
            self.sync()

    def send(
        self, dgram: bytes, src: int = 0, reason: str | None = None, counter: str | None = None
    ) -> None:
        s = self.socks[src % len(self.socks)]
        deadline = time.monotonic() + self.sync_timeout
        while True:
            try:
                s.sendto(dgram, self.target)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FuzzError(f"socket not writable for {self.sync_timeout:.0f}s") from None
                select.select([], [s], [], 1.0)
        self._account(reason, counter)

    def send_raw(
        self,
        dgram: bytes,
        src: tuple[str, int],
        reason: str | None = None,
        counter: str | None = None,
    ) -> None:
        """dgram as a UDP datagram from the forged source src (raw IPv4, IP_HDRINCL)."""
        if ":" in self.target[0] or ":" in src[0]:
            raise FuzzError("forged sources: IPv4 only")
        if self.raw is None:
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        pkt = udp4_packet(src, self.target, dgram)
        deadline = time.monotonic() + self.sync_timeout
        while True:
            try:
                self.raw.sendto(pkt, (self.target[0], 0))
                break
            except (BlockingIOError, OSError) as exc:
                if isinstance(exc, BlockingIOError) or exc.errno == errno.ENOBUFS:
                    if time.monotonic() > deadline:
                        raise FuzzError(f"raw send blocked for {self.sync_timeout:.0f}s") from exc
                    select.select([], [self.raw], [], 0.05)
                    continue
                raise
        self._account(reason, counter)

    def sync(self) -> None:
        """Wait until the receiver has counted every datagram sent so far (concurrent: until
        the counters this phase predicts have risen by what it sent so far; no counters:
        only pace)."""
        if self.local == "-":
            self.drain()
            time.sleep(0.01)
            self.pending = 0
            return
        if self.concurrent:
            if not self.settle()[1]:
                # not counted as predicted (e.g. the transfer ended): no longer exact, and
                # no point in waiting per batch
                print(f"counters stopped following the prediction after {self.sent}", flush=True)
                self.exact = False
                self.local = "-"
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

    def settle(self) -> tuple[dict[str, int], bool]:
        """Concurrent phases: wait until the predicted counters have risen by the predicted
        total (or the deadline); their deltas, and whether they got there."""
        deadline = time.monotonic() + self.sync_timeout
        keys = [k for k, v in self.expected.items() if v]
        want = sum(self.expected[k] for k in keys)
        while True:
            self.drain()
            now = read_counters(self.local)
            got = {k: counter_delta(now, self.base, k) for k in (*REASONS, *OTHERS, *INFO)}
            if sum(got[k] for k in keys) >= want:
                return got, True
            if time.monotonic() > deadline:
                return got, False
            time.sleep(0.01)

    def wait_for(
        self,
        cond: Callable[[], bool],
        what: str,
        timeout: float = 10.0,
        resend: bytes | None = None,
        src: int = 0,
        counter: str | None = None,
    ) -> None:
        """Wait until cond() holds; `resend` goes again every 0.25 s, like a sender's
        retransmission (a START_ACK to a source not yet accepted is rate-limited by the
        receiver: 100/s shared with BUSY and DONE of refusals)."""
        deadline = time.monotonic() + timeout
        again = time.monotonic() + 0.25
        self.drain()
        while not cond():
            if resend is not None and time.monotonic() > again:
                self.send(resend, src, None, counter)
                again = time.monotonic() + 0.25
            if time.monotonic() > deadline:
                raise FuzzError(f"{what}: nothing within {timeout:.0f}s (seed {self.seed})")
            select.select(self.socks, [], [], 0.05)
            self.drain()

    def handshake(self, x: FakeXfer, src: int = 0, timeout: float = 10.0) -> None:
        """START with cookie 0, the cookie from START_ACK, the confirmed START until START_ACK
        with ACCEPTED (section 2.3).  Fills x.cookie and x.window."""
        first = self.seal(start(x.xid, x.size, x.chunk))
        self.send(first, src, None, "start_answered")
        self.wait_for(
            lambda: x.xid in self.start_acks,
            f"START_ACK (cookie) for id {x.xid:016x}",
            timeout,
            resend=first,
            src=src,
            counter="start_answered",
        )
        x.cookie = self.start_acks[x.xid].cookie
        confirmed = self.seal(start(x.xid, x.size, x.chunk, x.cookie))
        self.send(confirmed, src)
        self.wait_for(
            lambda: self.start_acks[x.xid].accepted,
            f"START_ACK with ACCEPTED for id {x.xid:016x}",
            timeout,
            resend=confirmed,
            src=src,
        )
        x.window = self.start_acks[x.xid].window

    def check(self) -> dict[str, int]:
        """Delta of every predicted counter; FuzzError if an exact phase's prediction failed."""
        if self.concurrent:
            if self.local == "-":
                return {}
            try:
                delta = self.settle()[0]
            except FuzzError:
                if self.exact:
                    raise
                return {}  # the receiver returned (its transfer ended)
            keys = [k for k, v in self.expected.items() if v]
        else:
            self.sync()
            if self.local == "-":
                return {}
            try:
                now = read_counters(self.local)
            except FuzzError:
                if self.exact:
                    raise
                return {}  # the receiver returned and closed since sync() (as sync() allows)
            delta = {k: counter_delta(now, self.base, k) for k in (*REASONS, *OTHERS, *INFO)}
            keys = [*REASONS, *OTHERS]
        if self.exact:
            wrong = [
                f"{r}: expected {self.expected[r]}, counted {delta[r]}"
                for r in keys
                if delta[r] != self.expected[r]
            ]
            if wrong:
                raise FuzzError(
                    f"counters differ from the prediction (seed {self.seed}): " + "; ".join(wrong)
                )
        return delta


# ---- phases ------------------------------------------------------------------------------


def phase_stateless(c: Campaign, rng: random.Random, n: int) -> None:
    for _ in range(n):
        case = stateless_case(rng, c.port, c.v6)
        c.send(c.seal(case.dgram), rng.randrange(len(c.socks)), case.reason, case.counter)


def phase_xfer(c: Campaign, rng: random.Random, n: int) -> None:
    left = n
    while left > 0:
        # the first transfer is larger than the window: DATA beyond it is drop_window
        if left == n:
            chunk = CHUNK
            size = 2000 * CHUNK - rng.randrange(CHUNK)
        else:
            chunk = rng.choice((CHUNK_MIN, CHUNK, CHUNK, 4096, 9000, CHUNK_MAX))
            size = rng.choice((1, chunk, chunk + 1, 40 * chunk, rng.randrange(1, 2000 * chunk)))
        x = FakeXfer(rng.getrandbits(64) | 1, size, chunk)
        before = c.sent
        c.handshake(x)
        per = max(0, min(left - 2, rng.randrange(50, 600)))
        for i in range(per):
            if i % 32 == 31 and x.count:
                # keep the transfer alive (its peer timeout): a valid DATA, stored or a dup
                idx = rng.randrange(min(x.count, x.cum + x.window))
                reason = data_reason(x, idx, x.clen(idx))
                if reason is None:
                    x.store(idx)
                c.send(c.seal(data(x.xid, idx, rng.randbytes(x.clen(idx)), x.cookie)), 0, reason)
            case, src = xfer_case(rng, x, c.port, c.v6)
            c.send(
                c.seal(case.dgram),
                src if src == 0 else rng.randrange(1, len(c.socks)),
                case.reason,
                case.counter,
            )
        c.send(c.seal(abort(x.xid, errno.EINTR, x.cookie)), 0, None, "xfers_aborted")
        c.sync()
        left -= c.sent - before


def phase_empty(c: Campaign, rng: random.Random, n: int) -> None:
    for _ in range(n):
        c.send(b"", rng.randrange(len(c.socks)), "drop_short")


def phase_random(c: Campaign, rng: random.Random, n: int) -> None:
    for _ in range(n):
        d = random_dgram(rng, c.key, c.port, c.v6)
        o = predict_idle(d, c.key, c.port, c.v6)
        c.send(d, rng.randrange(len(c.socks)), o.reason, o.counter)


def phase_flood(c: Campaign, rng: random.Random, n: int) -> None:
    for _ in range(n):
        guess = rng.randrange(8) == 0
        ck = _rand_cookie(rng) if guess else 0
        d = c.seal(start(rng.getrandbits(64) | 1, rng.randrange(1, 1 << 30), cookie=ck))
        src = rng.randrange(len(c.socks))
        if guess:
            c.send(d, src, "drop_cookie")
        else:
            c.send(d, src, None, "start_answered")


def phase_badmac(c: Campaign, rng: random.Random, n: int) -> None:
    """drop_auth cases: a keyed receiver (--key) gets no tag, a wrong tag, a tag under another
    key, a datagram changed after sealing; an unkeyed one gets datagrams with a tag."""
    if c.local != "-":
        auth = c.receiver_words().get("auth")
        if auth is not None and auth != ("1" if c.key else "0"):
            raise FuzzError(f"receiver has auth={auth}, but --key {'given' if c.key else 'not'}")
    for _ in range(n):
        size, chunk = _valid_start_body(rng)
        xid = _rand_xid(rng)
        base = rng.choice(
            (
                start(xid, size, chunk),
                data(xid, rng.randrange(1 << 20), rng.randbytes(rng.randrange(1, 1500))),
                end(xid, size, rng.randbytes(32)),
                abort(xid),
                done_ack(xid),
            )
        )
        if c.key is None:
            other = rng.randbytes(KEY_LEN)
            d = seal(base, other) if rng.randrange(2) else seal(base, other)[:-MAC_LEN] + bytes(16)
            c.send(d, rng.randrange(len(c.socks)), "drop_auth")
            continue
        how = rng.randrange(4)
        if how == 0:
            d = base  # no MAC flag, no tag
        elif how == 1:
            d = seal(base, c.key)[:-MAC_LEN] + rng.randbytes(MAC_LEN)
        elif how == 2:
            d = seal(base, rng.randbytes(KEY_LEN))
        else:
            s = bytearray(seal(base, c.key))
            i = rng.randrange(8, len(s))  # id, cookie, ts, echo, body, tail or the tag
            s[i] ^= 1 << rng.randrange(8)
            d = bytes(s)
        c.send(d, rng.randrange(len(c.socks)), "drop_auth")


def phase_baddigest(c: Campaign, rng: random.Random, n: int) -> None:
    c.exact = False
    size = rng.randrange(1, 20 * CHUNK)
    x = FakeXfer(rng.getrandbits(64) | 1, size)
    c.handshake(x)
    for i in range(x.count):
        c.send(c.seal(data(x.xid, i, rng.randbytes(x.clen(i)), x.cookie)), 0)
    bad = c.seal(end(x.xid, size, bytes(32), x.cookie))
    c.send(bad, 0)
    c.wait_for(lambda: x.xid in c.done_status, f"DONE for id {x.xid:016x}", resend=bad)
    status = c.done_status.get(x.xid)
    print(f"baddigest id={x.xid:016x} size={size} done_status={status}")
    if status != -errno.EBADMSG:
        raise FuzzError(
            f"DONE status {status}, expected {-errno.EBADMSG} (EBADMSG) (seed {c.seed})"
        )
    c.send(c.seal(done_ack(x.xid, x.cookie)), 0)


PATHISH = (
    b"../../../../etc/passwd\0",
    b"/etc/shadow\0",
    b"/proc/sys/kernel/modprobe\0",
    b"/tmp/p2pkp-evil\0",
    b"%s%n%x\0",
    b"\0/root/.ssh/authorized_keys",
)


def path_content(rng: random.Random, size: int) -> bytes:
    return b"".join(rng.choice(PATHISH) for _ in range(size // 8 + 1))[:size]


def phase_send(c: Campaign, rng: random.Random, n: int, xid: int | None, size: int) -> None:
    """A complete, valid transfer of `size` bytes filled with path-like bytes, as a sender
    choosing its own id: prints the DONE status the receiver answers (a refusal, DONE(-EFBIG)
    or DONE(-ENOSPC), may come instead of a START_ACK)."""
    c.exact = False
    x = FakeXfer(xid if xid is not None else rng.getrandbits(64) | 1, size)
    content = path_content(rng, size)
    digest = hashlib.sha256(content).digest()
    # like a real sender: START again and again (BUSY: another transfer holds the receiver)
    first = c.seal(start(x.xid, size))
    c.send(first, 0)
    c.wait_for(
        lambda: x.xid in c.start_acks or x.xid in c.done_status,
        f"START_ACK or DONE for id {x.xid:016x}",
        30.0,
        resend=first,
    )
    if x.xid not in c.done_status:
        x.cookie = c.start_acks[x.xid].cookie
        confirmed = c.seal(start(x.xid, size, CHUNK, x.cookie))
        c.send(confirmed, 0)
        c.wait_for(
            lambda: c.start_acks[x.xid].accepted or x.xid in c.done_status,
            f"START_ACK with ACCEPTED for id {x.xid:016x}",
            resend=confirmed,
        )
    if x.xid not in c.done_status:
        for i in range(x.count):
            c.send(c.seal(data(x.xid, i, content[i * CHUNK : i * CHUNK + x.clen(i)], x.cookie)))
        fin = c.seal(end(x.xid, size, digest, x.cookie))
        c.send(fin, 0)
        c.wait_for(lambda: x.xid in c.done_status, f"DONE for id {x.xid:016x}", 30.0, fin)
    status = c.done_status.get(x.xid)
    print(
        f"send id={x.xid:016x} size={size} sha256={digest.hex()} done_status={status}",
        flush=True,
    )
    c.send(c.seal(done_ack(x.xid, x.cookie)), 0)


def phase_stale(c: Campaign, rng: random.Random, n: int, size: int) -> None:
    """A confirmed transfer of which only the last chunk arrives (at the highest offset of the
    receiver's file), then silence: the receiver must abandon it (xfers_abandoned) and must
    not let its bytes reach the next file."""
    c.exact = False
    x = FakeXfer(rng.getrandbits(64) | 1, size)
    c.handshake(x)
    last = x.count - 1
    c.send(c.seal(data(x.xid, last, b"\xaa" * x.clen(last), x.cookie, F_ACKREQ)), 0)
    c.sync()
    print(f"stale id={x.xid:016x} size={size} sent chunk {last} of {x.count}", flush=True)


def _inject(c: Campaign, rng: random.Random, t: int, xid: int, cookie: int) -> bytes:
    if t == T_DATA:
        return c.seal(data(xid, rng.randrange(64), rng.randbytes(CHUNK), cookie, F_ACKREQ))
    if t == T_END:
        return c.seal(end(xid, rng.randrange(1 << 30), rng.randbytes(32), cookie))
    return c.seal(abort(xid, errno.EINTR, cookie))


def phase_spoof(c: Campaign, rng: random.Random, n: int, xid: int | None) -> None:
    """On-path attacker: learn the real transfer's id, cookie and source by sniffing, then
    inject with them from other ports (drop_peer) and with a wrong cookie from the real
    source (raw IPv4, drop_cookie).  Exact when the receiver's counters are local and the
    transfer is still in progress when the injection has been counted."""
    c.concurrent = True
    print("sniffing", flush=True)  # a test may start the transfer now
    seen = sniff(c.target, 60.0)
    if xid is not None and xid != seen.xid:
        raise FuzzError(f"sniffed id {seen.xid:016x}, expected {xid:016x}")
    print(
        f"spoofing transfer id {seen.xid:016x} cookie {seen.cookie:016x} "
        f"from {seen.src[0]}:{seen.src[1]}",
        flush=True,
    )
    c.rebase()
    states = [c.receiver_words().get("state")] if c.local != "-" else []
    peer = cookie = 0
    for i in range(n):
        t = rng.choice((T_DATA, T_DATA, T_DATA, T_END, T_ABORT))
        if i % 2 == 0:
            c.send(_inject(c, rng, t, seen.xid, seen.cookie), i // 2, "drop_peer")
            peer += 1
        else:
            bad = seen.cookie ^ (1 << rng.randrange(64))
            c.send_raw(_inject(c, rng, t, seen.xid, bad), seen.src, "drop_cookie")
            cookie += 1
    print(f"expect drop_peer={peer} drop_cookie={cookie}", flush=True)
    if c.local != "-":
        try:
            delta = c.settle()[0]
            states.append(c.receiver_words().get("state"))
        except FuzzError:
            delta = {"drop_peer": -1, "drop_cookie": -1}  # the receiver returned
            states.append("gone")
        if states != ["receiving", "receiving"]:
            c.exact = False  # the transfer was not in progress throughout: not exact
            print(f"receiver state before/after: {states}: not exact", flush=True)
        print(f"counted drop_peer={delta['drop_peer']} drop_cookie={delta['drop_cookie']}")


def _spoof_src(a: argparse.Namespace, need_port: bool) -> tuple[str, int]:
    if not a.spoof_src:
        raise FuzzError("this phase needs --spoof-src ADDR" + (":PORT" if need_port else "[:PORT]"))
    m = re.fullmatch(r"(\d+\.\d+\.\d+\.\d+)(?::(\d+))?", a.spoof_src)
    if not m or (need_port and not m[2]):
        raise FuzzError(
            f"--spoof-src {a.spoof_src!r}: expected IPv4 ADDR"
            + (":PORT" if need_port else "[:PORT]")
        )
    return m[1], int(m[2]) if m[2] else random.Random(a.spoof_src).randrange(20000, 60000)


def phase_forge(c: Campaign, rng: random.Random, n: int, src: tuple[str, int], size: int) -> None:
    """A blind forger from src (which never sees a reply): START (cookie 0), n confirmed
    STARTs with guessed cookies, all DATA and the END with the right SHA-256 (with a guessed
    cookie), ABORT.  Nothing may be accepted."""
    xid = rng.getrandbits(64) | 1
    content = path_content(rng, size)
    digest = hashlib.sha256(content).digest()
    x = FakeXfer(xid, size)
    c.send_raw(c.seal(start(xid, size)), src, None, "start_answered")
    guesses = [*U64_EDGES[1:], xid, *(rng.getrandbits(64) | 1 for _ in range(n))][:n]
    for g in guesses:
        c.send_raw(c.seal(start(xid, size, CHUNK, g)), src, "drop_cookie")
    g = guesses[-1] if guesses else 1
    for i in range(x.count):
        d = data(xid, i, content[i * CHUNK : i * CHUNK + x.clen(i)], g)
        c.send_raw(c.seal(d), src, "drop_xfer")
    c.send_raw(c.seal(end(xid, size, digest, g)), src, "drop_xfer")
    c.send_raw(c.seal(abort(xid, errno.EINTR, g)), src, "drop_xfer")
    print(
        f"forge id={xid:016x} from {src[0]}:{src[1]} size={size} sha256={digest.hex()} "
        f"expect start_answered=1 drop_cookie={len(guesses)} drop_xfer={x.count + 2}",
        flush=True,
    )


def phase_churn(c: Campaign, rng: random.Random, n: int, src: tuple[str, int]) -> None:
    """n STARTs with fresh ids from src (the accepted sender's address and port, while its
    transfer runs): even ones unconfirmed (cookie 0: a cookie is computed and sent to src),
    odd ones with a guessed cookie (drop_cookie)."""
    c.concurrent = True
    unconfirmed = guessed = 0
    t0 = time.monotonic()
    for i in range(n):
        xid = rng.getrandbits(64) | 1
        size = rng.randrange(1, 1 << 30)
        if i % 2 == 0:
            c.send_raw(c.seal(start(xid, size)), src, None, "start_answered")
            unconfirmed += 1
        else:
            c.send_raw(c.seal(start(xid, size, CHUNK, _rand_cookie(rng))), src, "drop_cookie")
            guessed += 1
    print(
        f"churn from {src[0]}:{src[1]} starts={n} secs={time.monotonic() - t0:.1f} "
        f"expect start_answered={unconfirmed} drop_cookie={guessed}",
        flush=True,
    )


# ---- a fake receiver (to test a real sender) ---------------------------------------------


@dataclass
class FakeRx:
    xid: int
    cookie: int
    size: int = 0
    chunk: int = CHUNK
    count: int = 0
    accepted: bool = False
    got: set[int] = field(default_factory=set)
    cum: int = 0
    unacked: int = 0
    status_sent: bool = False

    def ack_body(self) -> tuple[int, bytes]:
        while self.cum in self.got:
            self.cum += 1
        bm = bytearray(WIN // 8)
        for i in range(1, WIN):
            if self.cum + i in self.got:
                bm[i // 8] |= 1 << (i % 8)
        return self.cum, bytes(bm)


def fake_receiver(
    bind: tuple[str, int], key: bytes | None, status: int, timeout: float, rng: random.Random
) -> int:
    """Serve one transfer as a minimal receiver of wire version 2: a stateless START_ACK with
    a cookie for a START with cookie 0, START_ACK with ACCEPTED for the confirmed START, ACKs
    (on ACKREQ, every 16 chunks, at the end), DONE(status) for END, until DONE_ACK.  Returns 0
    when the sender acknowledged the DONE."""
    fam = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(bind)
    print(f"fake-receiver listening {bind[0]}:{bind[1]} done_status={status}", flush=True)
    xfers: dict[int, FakeRx] = {}
    stats: Counter[str] = Counter()
    deadline = time.monotonic() + timeout

    def reply(d: bytes, to: tuple[str, int]) -> None:
        s.sendto(seal(d, key), to)
        stats[f"sent_{d[5]}"] += 1

    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
            if not r:
                continue
            buf, peer = s.recvfrom(70000)
            reason = parse_reason(buf, key)
            if reason is not None:
                stats[reason] += 1
                continue
            n = len(buf) - (MAC_LEN if key is not None else 0)
            _m, _v, type_, flags, xid, cookie, ts, _e = fields(buf)
            x = xfers.get(xid)
            if type_ == T_START:
                size, chunk, _ep, _r = struct.unpack_from(">QIHH", buf, HLEN)
                if x is None:
                    x = xfers[xid] = FakeRx(xid, rng.getrandbits(64) | 1)
                if cookie == 0:
                    reply(start_ack(xid, x.cookie, WIN, echo=ts), peer)
                elif cookie == x.cookie:
                    x.accepted, x.size, x.chunk = True, size, chunk
                    x.count = count_for(size, chunk)
                    reply(start_ack(xid, x.cookie, WIN, F_ACCEPTED, echo=ts), peer)
                else:
                    stats["drop_cookie"] += 1
                continue
            if x is None or cookie != x.cookie or not x.accepted:
                stats["drop_xfer"] += 1
                continue
            if type_ == T_DATA:
                idx = int.from_bytes(buf[HLEN + 2 : HLEN + 8], "big")
                plen = n - HLEN - 8
                if idx < x.count and plen == chunk_len(x.size, idx, x.chunk):
                    x.got.add(idx)
                x.unacked += 1
                cum, bm = x.ack_body()
                if flags & F_ACKREQ or x.unacked >= 16 or cum == x.count:
                    reply(ack(xid, x.cookie, cum, bm, ts), peer)
                    x.unacked = 0
            elif type_ == T_END:
                cum, bm = x.ack_body()
                if cum < x.count:
                    reply(ack(xid, x.cookie, cum, bm, ts), peer)
                else:
                    reply(done(xid, x.cookie, status, ts), peer)
                    x.status_sent = True
            elif type_ == T_DONE_ACK and x.status_sent:
                print(
                    f"fake-receiver id={xid:016x} size={x.size} chunks={len(x.got)} "
                    f"done_status={status} done_ack=1 {dict(stats)}",
                    flush=True,
                )
                return 0
            elif type_ == T_ABORT:
                reason_errno = struct.unpack_from(">I", buf, HLEN)[0]
                print(f"fake-receiver id={xid:016x} abort={reason_errno}", flush=True)
                return 1
    finally:
        s.close()
    print(f"fake-receiver: no DONE_ACK within {timeout:.0f}s {dict(stats)}", flush=True)
    return 1


# ---- main --------------------------------------------------------------------------------


PHASES: dict[str, Callable[[Campaign, random.Random, int], None]] = {
    "stateless": phase_stateless,
    "xfer": phase_xfer,
    "random": phase_random,
    "empty": phase_empty,
    "flood": phase_flood,
    "badmac": phase_badmac,
    "baddigest": phase_baddigest,
}
OTHER_PHASES = ("send", "stale", "spoof", "forge", "churn", "fake-receiver")


def split_hostport(s: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[(.+)\]:(\d+)|([^:]+):(\d+)", s)
    if not m:
        raise argparse.ArgumentTypeError(f"{s!r}: expected ADDR:PORT or [ADDR6]:PORT")
    return (m[1], int(m[2])) if m[1] else (m[3], int(m[4]))


def parse_key(s: str) -> bytes:
    try:
        k = bytes.fromhex(s)
    except ValueError:
        raise argparse.ArgumentTypeError("--key: not hex") from None
    if len(k) != KEY_LEN:
        raise argparse.ArgumentTypeError(f"--key: {len(k)} bytes, expected {KEY_LEN}")
    return k


def run_phase(name: str, c: Campaign, rng: random.Random, a: argparse.Namespace) -> None:
    if name == "spoof":
        phase_spoof(c, rng, a.count, a.id)
    elif name == "send":
        phase_send(c, rng, a.count, a.id, a.size)
    elif name == "stale":
        phase_stale(c, rng, a.count, a.size)
    elif name == "forge":
        phase_forge(c, rng, a.count, _spoof_src(a, False), a.size)
    elif name == "churn":
        phase_churn(c, rng, a.count, _spoof_src(a, True))
    elif name in PHASES:
        PHASES[name](c, rng, a.count)
    else:
        raise FuzzError(f"unknown phase {name!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="p2pkp-fuzz-wire",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--target",
        required=True,
        type=split_hostport,
        help="receiver ADDR:PORT (fake-receiver: where to listen)",
    )
    ap.add_argument(
        "--local", help="the receiver's local= in /proc/net/p2pkp (default: target; - : none)"
    )
    ap.add_argument(
        "--phases",
        default="stateless,xfer,random",
        help="comma-separated: " + ",".join([*PHASES, *OTHER_PHASES]),
    )
    ap.add_argument("--count", type=int, default=10000, help="datagrams (or guesses) per phase")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--sources", default="", help="comma-separated local source addresses")
    ap.add_argument("--socks", type=int, default=16, help="source sockets (ports)")
    ap.add_argument("--id", type=lambda v: int(v, 16), help="send: the transfer id (hex)")
    ap.add_argument("--size", type=int, default=5000, help="send, stale, forge: file size")
    ap.add_argument("--key", type=parse_key, help="P2PKP_KEY of the receiver, 64 hex digits")
    ap.add_argument(
        "--spoof-src", help="forge: ADDR[:PORT] no guest owns; churn: the sender's ADDR:PORT"
    )
    ap.add_argument("--done-status", type=int, default=0, help="fake-receiver: DONE status for END")
    ap.add_argument("--timeout", type=float, default=120.0, help="fake-receiver: seconds")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"seed={seed}", flush=True)
    host, port = a.target
    if a.phases == "fake-receiver":
        return fake_receiver(
            (host, port), a.key, a.done_status, a.timeout, random.Random(f"{seed}-fake")
        )
    local = a.local or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    sources = [s for s in a.sources.split(",") if s] or ["::" if ":" in host else "0.0.0.0"]
    total = 0
    ok = True
    for name in a.phases.split(","):
        rng = random.Random(f"{seed}-{name}")
        c = Campaign((host, port), local, seed, sources, a.key, nsocks=a.socks)
        t0 = time.monotonic()
        delta: dict[str, int] = {}
        try:
            c.open()
            run_phase(name, c, rng, a)
            delta = c.check()
        except (FuzzError, OSError) as exc:
            print(f"FAIL phase={name} sent={c.sent}: {exc}", flush=True)
            ok = False
            total += c.sent
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
