"""Send the ICMP error a router sends when a datagram does not fit the next hop: IPv4
"fragmentation needed" (type 3 code 4) carrying a next-hop MTU, for one UDP flow.

A guest uses it to lower a sender's path MTU in the middle of a transfer, as a router with a
narrower link would (docs/protocol.md 3.1): the sender's kernel finds its connected UDP socket
by the quoted IP and UDP headers, lowers the route's MTU (a PMTU exception) and reports
EMSGSIZE on that socket.  Stdlib only (guest payload); root (a raw socket).

    python -m p2pkp_guest.icmp --flow 10.99.0.1:40000 10.99.0.2:7200 --mtu 1500

sends the error to the flow's source (10.99.0.1), quoting a datagram of the flow.  On the
receiving host, `--port 7200 --after-received N` learns the flow from the first datagram that
arrives for port 7200 (a raw socket sees a copy, as a router sees the packet) and sends the
error once this host's P2PKP sockets have received N more bytes than when it started (the
`total` line of /proc/net/p2pkp): a test starts it before a transfer, so the error arrives in
the middle whatever Python's start-up costs under emulation.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

from p2pkp_guest.wirefuzz import inet_sum

ICMP_DEST_UNREACH = 3
ICMP_FRAG_NEEDED = 4
IP_DF = 0x4000


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data: the complement of its one's-complement sum."""
    return ~inet_sum(data) & 0xFFFF


def quoted(src: str, sport: int, dst: str, dport: int, length: int) -> bytes:
    """The IPv4 header (DF set) and UDP header of a datagram of `length` bytes from src:sport
    to dst:dport, as an ICMP error quotes them."""
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        length,
        0,
        IP_DF,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + struct.pack("!HHHH", sport, dport, length - 20, 0)


def frag_needed(src: str, sport: int, dst: str, dport: int, mtu: int) -> bytes:
    """ICMP "fragmentation needed" with next-hop MTU `mtu` for a datagram of the flow larger
    than it (the ICMP message only: the kernel adds the outer IP header)."""
    body = quoted(src, sport, dst, dport, min(mtu + 1000, 65535))
    msg = struct.pack("!BBHHH", ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, mtu) + body
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def bytes_received(proc: str = "/proc/net/p2pkp") -> int:
    """bytes_received of the `total` line of /proc/net/p2pkp."""
    with open(proc) as f:
        for line in f:
            if line.startswith("total "):
                for word in line.split()[1:]:
                    k, _, v = word.partition("=")
                    if k == "bytes_received":
                        return int(v)
    raise ValueError(f"{proc}: no total line with bytes_received")


def wait_received(n: int, timeout: float, start: int) -> int:
    """Wait until bytes_received has grown by n over start; return it.  TimeoutError after
    timeout s."""
    deadline = time.monotonic() + timeout
    while (now := bytes_received()) - start < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bytes_received grew by {now - start} of {n} in {timeout:.0f} s")
        time.sleep(0.05)
    return now


def first_flow(port: int, timeout: float) -> tuple[str, int, str, int]:
    """(src, sport, dst, dport) of the first IPv4 UDP datagram that arrives for `port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
        s.settimeout(timeout)
        print(f"listening for UDP to port {port}", flush=True)
        while True:
            pkt = s.recv(65535)
            ihl = (pkt[0] & 0x0F) * 4
            sport, dport = struct.unpack_from("!HH", pkt, ihl)
            if dport == port:
                return socket.inet_ntoa(pkt[12:16]), sport, socket.inet_ntoa(pkt[16:20]), dport


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="p2pkp_guest.icmp", description=__doc__.split("\n\n")[0])
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--flow", nargs=2, metavar=("SRC:PORT", "DST:PORT"))
    who.add_argument("--port", type=int, help="the flow of the first datagram to this port")
    ap.add_argument("--mtu", type=int, required=True, help="next-hop MTU (68..65535)")
    ap.add_argument("--count", type=int, default=1, help="how many to send (default 1)")
    ap.add_argument(
        "--after-received",
        type=int,
        default=0,
        metavar="BYTES",
        help="first wait until this host's P2PKP sockets received BYTES more",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="for --after-received (s)")
    args = ap.parse_args(argv)
    if not 68 <= args.mtu <= 65535:
        ap.error(f"--mtu {args.mtu}: not in 68..65535")
    try:
        start = bytes_received() if args.after_received else 0
        if args.flow:
            (src, sport), (dst, dport) = (_hostport(f) for f in args.flow)
        else:
            src, sport, dst, dport = first_flow(args.port, args.timeout)
        if args.after_received:
            print(f"flow {src}:{sport} -> {dst}:{dport}; waiting for bytes", flush=True)
            got = wait_received(args.after_received, args.timeout, start)
            print(f"bytes_received={got}", flush=True)
    except (TimeoutError, ValueError) as e:
        print(f"p2pkp_guest.icmp: {e}", file=sys.stderr)
        return 1
    msg = frag_needed(src, sport, dst, dport, args.mtu)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        for _ in range(args.count):
            s.sendto(msg, (src, 0))
    print(f"icmp frag-needed mtu={args.mtu} to {src} for {src}:{sport} -> {dst}:{dport}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
