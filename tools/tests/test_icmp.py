"""The ICMP "fragmentation needed" a guest sends to lower a sender's path MTU: its layout,
checksums and the quoted flow, decoded independently of the builder."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from p2pkp_guest import icmp


def test_checksum_known_value() -> None:
    """RFC 1071's example words sum to 0xddf2; the checksum is its complement."""
    assert icmp.checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2) & 0xFFFF
    assert icmp.checksum(b"\x01") == (~0x0100) & 0xFFFF  # odd length: padded with a zero


def test_frag_needed_layout() -> None:
    msg = icmp.frag_needed("10.99.0.1", 40000, "10.99.0.2", 7200, 1500)
    typ, code, _csum, unused, mtu = struct.unpack_from("!BBHHH", msg)
    assert (typ, code, unused, mtu) == (3, 4, 0, 1500)
    assert icmp.checksum(msg) == 0, "a message with its checksum sums to zero"
    ip = msg[8:28]
    assert icmp.checksum(ip) == 0, "the quoted IP header has a valid checksum"
    ver_ihl, _tos, length, _id, frag, _ttl, proto, _c, src, dst = struct.unpack("!BBHHHBBH4s4s", ip)
    assert (ver_ihl, proto, frag & 0x4000) == (0x45, socket.IPPROTO_UDP, 0x4000)
    assert length > 1500, "the quoted datagram did not fit the next hop"
    assert (socket.inet_ntoa(src), socket.inet_ntoa(dst)) == ("10.99.0.1", "10.99.0.2")
    sport, dport, ulen, _ = struct.unpack_from("!HHHH", msg, 28)
    assert (sport, dport, ulen) == (40000, 7200, length - 20)
    assert len(msg) == 8 + 20 + 8


def test_bytes_received_reads_the_total_line(tmp_path: Path) -> None:
    """--after-received polls the `total` line's bytes_received (captured /proc layout)."""
    proc = tmp_path / "p2pkp"
    proc.write_text(
        "p2pkp version=2 family=12 sha256=lib\n"
        "sock inode=1 role=receiver state=waiting local=0.0.0.0:7117 bytes_received=5\n"
        "total files_sent=0 files_received=1 bytes_sent=0 bytes_received=16777216 epochs=0\n"
    )
    assert icmp.bytes_received(str(proc)) == 16777216
    proc.write_text("p2pkp version=2\n")
    with pytest.raises(ValueError, match="no total line"):
        icmp.bytes_received(str(proc))
