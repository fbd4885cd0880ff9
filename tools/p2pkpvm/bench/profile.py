"""`python -m p2pkpvm bench-profile [--size B] [--method M] [--peers N] [--cache C] [--mtu M]`:
where a transfer's CPU goes.

Boots one sender and N receivers (topology `pair`, `trio` or `quad`), loads the module, and on
the sender runs `perf record -e cpu-clock -a -g` around one transfer (cpu-clock: a TCG guest
has no PMU), then prints `perf report` (flat, by symbol) of the sender.  The first receiver is
reported too when --receiver is given.  `--cache cold` drops the sender's page cache first,
as the bench does.  `--mtu` sets the links' MTU (topology `mtu`), as `bench --mtu` does;
method p2pkp-copy turns the sender's tx_zerocopy off for the profiled write, as the bench does.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from p2pkpvm.bench.model import METHODS
from p2pkpvm.bench.runner import (
    BenchConfig,
    BenchRunner,
    recv_cmd,
    send_cmd,
    src_path,
    zerocopy_cmd,
)
from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.net.mtu import DEFAULT_MTU, MAX_MTU, MIN_MTU
from p2pkpvm.net.topology import load_topology
from p2pkpvm.scenario.scenario import next_port, start_receiver

TOPOLOGY = {1: "pair", 2: "trio", 3: "quad"}
REPORT = (
    "perf report -i {data} --stdio -g none --no-children --sort dso,sym --percent-limit 0.1 "
    "2>&1 | cat"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pkpvm bench-profile", description=__doc__)
    p.add_argument("--size", type=int, default=8 << 20, help="file size in bytes")
    p.add_argument("--method", default="p2pkp", choices=METHODS)
    p.add_argument("--peers", type=int, default=1, choices=sorted(TOPOLOGY))
    p.add_argument("--cache", default="warm", choices=("warm", "cold"))
    p.add_argument("--receiver", action="store_true", help="also profile the first receiver")
    p.add_argument("--mtu", type=int, default=DEFAULT_MTU, help="MTU of the cluster's links")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if not MIN_MTU <= args.mtu <= MAX_MTU:
        p.error(f"--mtu {args.mtu}: must be {MIN_MTU}..{MAX_MTU}")
    cfg = BenchConfig(
        sizes=(args.size,), peers=(args.peers,), caches=(args.cache,), reps=1, mtu=args.mtu
    )
    topo = replace(load_topology(TOPOLOGY[args.peers]), mtu=args.mtu)
    with Cluster(topo) as cluster:
        cluster.load_module()
        runner = BenchRunner(list(cluster), cfg, print)
        runner.prepare()
        s, rs = cluster[0], list(cluster)[1:]
        port, out = next_port(), "/tmp/bench/recv-profile"
        rcmd = recv_cmd(args.method, port, out, cfg.payload)
        perf = f"perf record -q -e cpu-clock -a -g -o /tmp/bench/recv.data -- {rcmd}"
        jobs = [
            start_receiver(r, perf if args.receiver and i == 0 else rcmd) for i, r in enumerate(rs)
        ]
        runner.prepare_cache(args.size, args.cache)
        send = send_cmd(args.method, [r.ipv4 for r in rs], port, src_path(args.size), cfg.payload)
        res = s.run(
            f"{zerocopy_cmd(args.method)}"
            f"perf record -q -e cpu-clock -a -g -o /tmp/bench/send.data -- {send}; echo rc=$?",
            timeout=600,
        )
        print(res.output)
        for job in jobs:
            job.wait(timeout=120)
        print(
            f"== sender ({s.name}) {args.method} {args.size} B, {args.peers} peers, "
            f"{args.cache}, MTU {args.mtu} =="
        )
        print(s.run(REPORT.format(data="/tmp/bench/send.data"), timeout=300).output)
        if args.receiver:
            print(f"== receiver ({rs[0].name}) ==")
            print(rs[0].run(REPORT.format(data="/tmp/bench/recv.data"), timeout=300).output)
        runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
