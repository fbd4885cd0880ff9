"""The P2PKP wire format for Python, defined once (docs/protocol.md section 2, version 2).

Stdlib only: guest payloads import it (the wire fuzzer takes every constant from here).
tools/tests/test_wire.py parses p2pkp.c and p2pkp.h and fails when anything here differs from
the C definitions (header layout, message types, fixed body lengths, flags and which type
takes which, limits, counter names), so the copies cannot drift: when the module's wire
format changes, this file changes with it.
"""

from __future__ import annotations

import struct

MAGIC = 0x5032504B  # "P2PK"
VERSION = 2

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
T_MAX = T_ABORT
TO_RECEIVER = (T_START, T_DATA, T_END, T_DONE_ACK, T_ABORT)  # P2PKP_S2R
TO_SENDER = (T_START_ACK, T_BUSY, T_ACK, T_DONE, T_ABORT)  # P2PKP_R2S

# Header: magic u32, version u8, type u8, flags u16, id u64, cookie u64, ts u32, echo u32
# (struct p2pkp_hdr).
HEADER = struct.Struct(">IBBHQQII")
HDR = HEADER
HLEN = HEADER.size
# Fixed body length of each type (p2pkp_fixed_len[]); a tail follows (DATA payload, START
# extensions), then the tag with MAC.
FIXED_LEN = {
    T_START: 16,
    T_START_ACK: 16,
    T_BUSY: 0,
    T_DATA: 8,
    T_ACK: 80,
    T_END: 40,
    T_DONE: 8,
    T_DONE_ACK: 0,
    T_ABORT: 8,
}
START_BODY = struct.Struct(">QIHH")  # size, chunk, epoch, reserved
START_ACK_BODY = struct.Struct(">IHHQ")  # window, epoch, reserved, base
ACK_BODY = struct.Struct(">QHHI64s")  # cum, epoch, nbits, window, bitmap
STATUS_BODY = struct.Struct(">iI")  # DONE / ABORT: status, reserved
GROUP_EXT = 20  # struct p2pkp_group
# START's GROUP extension: family u8 (4 or 6), acklog u8, port u16, address 16 bytes (IPv4 in
# the first 4, the other 12 zero); acklog at most ACKLOG_MAX (64 members).
GROUP_BODY = struct.Struct(">BBH16s")
ACKLOG_MAX = 6
DIGEST_EXT = 32

FLAGS = {
    "ACKREQ": 0x0001,
    "ECHO": 0x0002,
    "MAC": 0x0004,
    "ACCEPTED": 0x0008,
    "GROUP": 0x0010,
    "DIGEST": 0x0020,
    "RETRANS": 0x0040,
}
F_ACKREQ = FLAGS["ACKREQ"]
F_ECHO = FLAGS["ECHO"]
F_MAC = FLAGS["MAC"]
F_ACCEPTED = FLAGS["ACCEPTED"]
F_GROUP = FLAGS["GROUP"]
F_DIGEST = FLAGS["DIGEST"]
F_RETRANS = FLAGS["RETRANS"]
# Flags a type may carry besides ECHO and MAC (p2pkp_type_flags[]).
TYPE_FLAGS = {
    T_START: F_GROUP | F_DIGEST,
    T_START_ACK: F_ACCEPTED,
    T_DATA: F_ACKREQ | F_GROUP | F_RETRANS,
}

# Limits (#define P2PKP_*).
CHUNK_SIZE = 1400  # p2pkp.h: the kernel's sender when it does not know the route
CHUNK = CHUNK_SIZE
CHUNK_MIN = 512
CHUNK_MAX = 65000
MAX_SIZE = 1 << 40
WIN = 512
MAC_LEN = 16
KEY_LEN = 32  # P2PKP_KEY_SIZE
DGRAM_MAX = HLEN + FIXED_LEN[T_DATA] + CHUNK_MAX + MAC_LEN  # longer is MSG_TRUNC


def chunk_for(mtu: int, ipv6: bool = False, key: bool = False) -> int:
    """The chunk the kernel's sender picks for a path of this MTU (p2pkp_path_chunk,
    docs/protocol.md 3.4): the MTU less the IP, UDP and DATA headers and the tag, within
    CHUNK_MIN..CHUNK_MAX; 0 when a CHUNK_MIN chunk does not fit (the sender then sends
    CHUNK_MIN-byte chunks in IPv4 fragments)."""
    room = mtu - (40 if ipv6 else 20) - 8 - HLEN - FIXED_LEN[T_DATA] - (MAC_LEN if key else 0)
    return 0 if room < CHUNK_MIN else min(room, CHUNK_MAX)


INDEX_MAX = (1 << 48) - 1

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
    "drop_auth",
    "drop_length",
    "drop_field",
    "drop_sender",
    "drop_xfer",
    "drop_peer",
    "drop_cookie",
    "drop_window",
    "drop_dup",
    "busy_sent",
    "cookies_sent",
    "xfers_abandoned",
    "xfers_aborted",
    "peers_failed",
    "refused_size",
    "refused_space",
    "replies_limited",
    "acks_sent",
    "rate_waits",
    "gso_sends",
    "icmp_errors",
    "epochs",
    "gro_receives",
    "file_writes",
    "zc_sends",
    "cc_losses",
    "cc_timeouts",
    "cc_undos",
    "pace_waits",
    "resumed",
    "group_sent",
    "group_repairs",
    "peers_dropped",
    "group_joined",
    "refused_group",
)
DROP_REASONS = tuple(n for n in STAT_NAMES if n.startswith("drop_"))
