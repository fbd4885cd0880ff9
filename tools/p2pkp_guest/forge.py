"""A forged sender: START a transfer, wait for the receiver's START_ACK, send chunks, go silent.

    python -m p2pkp_guest.forge --target HOST:PORT --id HEX --size N [--chunks K]

Waits on the receiver's state (its START_ACK for this id) instead of sleeping: the DATA that
follows is never sent to a receiver that has not accepted the transfer.  Prints
`start_ack id=HEX` and `sent chunks=K`; exits 1 naming what it waited for when no START_ACK
came within --deadline seconds.  Tests use it to leave a stale transfer in the receiver.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time

from p2pkp_guest import wire


def await_start_ack(sock: socket.socket, xid: int, deadline: float) -> bool:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        got = wire.parse(sock.recv(wire.DGRAM_MAX))
        if got == (wire.T_START_ACK, xid):
            return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="p2pkp-forge", description=__doc__)
    p.add_argument("--target", required=True, help="receiver HOST:PORT (IPv4)")
    p.add_argument("--id", required=True, type=lambda s: int(s, 16), help="transfer id, hex")
    p.add_argument("--size", required=True, type=int, help="file size announced in START")
    p.add_argument("--chunks", type=int, default=1, help="chunks sent after START_ACK")
    p.add_argument("--deadline", type=float, default=30.0, help="seconds to wait for START_ACK")
    a = p.parse_args(argv)
    host, _, port = a.target.rpartition(":")
    addr = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(addr)
    deadline = time.monotonic() + a.deadline
    # START is resent every second until answered (a datagram may be lost like any other).
    while True:
        sock.send(wire.start(a.id, a.size))
        if await_start_ack(sock, a.id, min(deadline, time.monotonic() + 1.0)):
            break
        if time.monotonic() >= deadline:
            print(
                f"forge: no START_ACK for id {a.id:016x} from {a.target} within {a.deadline:g} s",
                flush=True,
            )
            return 1
    print(f"start_ack id={a.id:016x}", flush=True)
    for i in range(a.chunks):
        n = max(0, min(wire.CHUNK_SIZE, a.size - i * wire.CHUNK_SIZE))
        sock.send(wire.data(a.id, i, bytes(n)))
    print(f"sent chunks={a.chunks}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
