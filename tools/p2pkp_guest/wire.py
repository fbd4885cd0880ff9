"""The P2PKP wire format for Python, defined once (docs/protocol.md section 2).

Stdlib only: guest payloads import it.  tools/tests/test_wire.py parses p2pkp.c and p2pkp.h
and fails when anything here differs from the C definitions (header layout, message types,
body lengths, flags, limits, counter names), so the copies cannot drift: when the module's
wire format changes, this file changes with it.
"""

from __future__ import annotations

import struct

MAGIC = 0x5032504B  # "P2PK"
VERSION = 1

# Message types (enum P2PKP_T_*).
TYPES = {
    "START": 1,
    "START_ACK": 2,
    "BUSY": 3,
    "DATA": 4,
    "ACK": 5,
    "END": 6,
    "DONE": 7,
    "DONE_ACK": 8,
    "ABORT": 9,
}
T_START = TYPES["START"]
T_START_ACK = TYPES["START_ACK"]
T_BUSY = TYPES["BUSY"]
T_DATA = TYPES["DATA"]
T_ACK = TYPES["ACK"]
T_END = TYPES["END"]
T_DONE = TYPES["DONE"]
T_DONE_ACK = TYPES["DONE_ACK"]
T_ABORT = TYPES["ABORT"]

# Header: magic u32, version u8, type u8, flags u16, id u64, ts u32, echo u32 (struct p2pkp_hdr).
HEADER = struct.Struct(">IBBHQII")
# Fixed body length of each type (p2pkp_body_len[]); DATA's payload follows its body.
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
START_BODY = struct.Struct(">QQII")  # size, count, chunk, reserved
DATA_BODY = struct.Struct(">Q")  # index
STATUS_BODY = struct.Struct(">iI")  # DONE / ABORT: status, reserved

FLAGS = {"ACKREQ": 0x0001, "ECHO": 0x0002}

# Limits (#define P2PKP_*).
CHUNK_SIZE = 1400  # p2pkp.h
WIN = 512
MAX_SIZE = 1 << 40
DGRAM_MAX = 2048

# /proc/net/p2pkp counters, in the module's order (p2pkp_stat_names[]); the drop reasons are
# the ones named drop_*.
STAT_NAMES = (
    "files_sent",
    "files_received",
    "files_failed",
    "bytes_sent",
    "bytes_received",
    "dgrams_sent",
    "dgrams_received",
    "dgrams_retrans",
    "dgrams_dropped",
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
    "busy_sent",
    "xfers_abandoned",
    "xfers_aborted",
    "peers_failed",
    "refused_size",
    "refused_space",
    "xfers_unconfirmed",
    "replies_limited",
    "acks_sent",
    "rate_waits",
    "gso_sends",
)
DROP_REASONS = tuple(n for n in STAT_NAMES if n.startswith("drop_"))


def header(type_: int, xid: int, flags: int = 0, ts: int = 0, echo: int = 0) -> bytes:
    return HEADER.pack(MAGIC, VERSION, type_, flags, xid, ts & 0xFFFFFFFF, echo & 0xFFFFFFFF)


def start(xid: int, size: int, chunk: int = CHUNK_SIZE) -> bytes:
    count = (size + chunk - 1) // chunk
    return header(T_START, xid) + START_BODY.pack(size, count, chunk, 0)


def data(xid: int, index: int, payload: bytes) -> bytes:
    return header(T_DATA, xid) + DATA_BODY.pack(index) + payload


def parse(buf: bytes) -> tuple[int, int] | None:
    """(type, id) of a datagram of this version, None for anything else."""
    if len(buf) < HEADER.size:
        return None
    magic, version, type_, _flags, xid, _ts, _echo = HEADER.unpack_from(buf)
    if magic != MAGIC or version != VERSION:
        return None
    return type_, xid
