"""`python -m p2pkpvm bench-scale` (make bench-scale): the cost of a transfer against the
number of receivers (issue 13 item 3).

Boots topology `scale` (vm1 sends; 66 receivers as network namespaces in vm2..vm4), then
sends one file to N = 1, 2, 4, ... 64 receivers with every method (P2PKP by unicast and, as
`p2pkp-mcast`, to a multicast group: `p2pkp-send --group`), through the same runner as
`make bench` (warm-up round per cell, random method order per round, SHA-256 of every
received file checked).  Receivers are taken round-robin over the three receiving guests,
so N receivers load them evenly.  Per sample it keeps the wall time, the busy CPU seconds
of the sender's guest (P2PKP sends from a kworker: the process's rusage misses it) and
the packets and bytes the sender's NIC sent; the table gives per N and method the median
wall (with its interval), the sender's CPU, packets and wire bytes per file byte, and per
method the least-squares cost of one more receiver.  Results go to results/<stamp>-scale/
and, unless --no-publish or the load gate refuses, to docs/results/scaling/.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import sys
import time
from pathlib import Path

from p2pkpvm.bench.hostload import LOAD_LIMIT
from p2pkpvm.bench.main import (
    host_meta,
    parse_methods,
    progress,
    publish_gated,
    run_recorded,
    setup_logging,
)
from p2pkpvm.bench.model import METHOD_LABELS, METHODS, BenchRun, median_ci
from p2pkpvm.bench.runner import BenchConfig, BenchRunner
from p2pkpvm.bench.tables import fmt_s, fmt_size, parse_size
from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.cluster.nsguest import NamespaceGuest
from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.choice import KERNELS, select
from p2pkpvm.kernel.pin import load_pin
from p2pkpvm.net.receivers import Receiver
from p2pkpvm.net.topology import load_topology
from p2pkpvm.paths import project_root
from p2pkpvm.vm.guest import Guest

log = logging.getLogger("p2pkpvm.bench.scaling")
MiB = 1 << 20
NS = (1, 2, 4, 8, 16, 32, 64)
SCALE_METHODS = (
    "p2pkp",
    "p2pkp-mcast",
    "udp-rw",
    "udp-sendfile",
    "tcp-sendfile",
    "tcp-sendfile-par",
)


def parse_sizes(text: str) -> tuple[int, ...]:
    """--size: comma-separated sizes, each bytes or with K, M or G (64M,8M)."""
    return tuple(parse_size(x) for x in text.split(","))


def too_big(sizes: tuple[int, ...], ns: tuple[int, ...], memory: dict[str, str]) -> str:
    """Why the largest cell cannot run ("" when it can): the receivers of a guest write their
    files into its RAM (/tmp), so a guest's share of the receivers (round-robin, `spread`)
    times the size must fit in half its memory (`memory`: receiving guest -> "768M")."""
    if not memory:
        return ""
    per_guest = -(-max(ns) // len(memory))
    files = per_guest * max(sizes)
    room = min(parse_size(m) for m in memory.values()) // 2
    if files <= room:
        return ""
    return (
        f"{max(ns)} receivers of {fmt_size(max(sizes))} put {per_guest} files "
        f"({fmt_size(files)}) into a receiving guest's RAM, more than half its memory "
        f"({fmt_size(room * 2)}): at most {max(1, room // max(sizes)) * len(memory)} "
        "receivers at that size"
    )


def spread(receivers: list[Receiver]) -> list[Receiver]:
    """The receivers round-robin over their guests (r1, r23, r45, r2, ...): the first N load
    the receiving guests evenly."""
    by_guest: dict[str, list[Receiver]] = {}
    for r in receivers:
        by_guest.setdefault(r.guest, []).append(r)
    out: list[Receiver] = []
    queues = list(by_guest.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def fit_slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of value against N (None for fewer than two distinct N)."""
    xs = [float(x) for x, _ in points]
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, (_, y) in zip(xs, points, strict=True)) / sxx


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def scale_table(run: BenchRun) -> str:
    """Markdown: one row per (size, N, method) over the counted samples, then the cost of one
    more receiver per method (slope of median wall and sender CPU against N)."""
    counted = [s for s in run.samples if not s.warmup]
    keys = sorted(
        {(s.size, s.peers, s.method) for s in counted},
        key=lambda k: (k[0], k[1], METHODS.index(k[2]) if k[2] in METHODS else 99),
    )
    lines = [
        "| size | receivers | method | wall (median) | interval of the median | n "
        "| sender CPU (guest) | packets / MiB | wire bytes / file byte |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    walls: dict[tuple[int, str], list[tuple[int, float]]] = {}
    cpus: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for size, n, method in keys:
        cell = [s for s in counted if (s.size, s.peers, s.method) == (size, n, method)]
        good = [s for s in cell if s.ok]
        wall = _median([s.wall_s for s in good])
        ci = median_ci([s.wall_s for s in good])
        cpu = _median([s.sender_busy_s for s in good if s.sender_busy_s >= 0])
        pk = _median([s.counters["wire_packets"] for s in good if "wire_packets" in s.counters])
        wb = _median([s.counters["wire_bytes"] for s in good if "wire_bytes" in s.counters])
        if wall is not None:
            walls.setdefault((size, method), []).append((n, wall))
        if cpu is not None:
            cpus.setdefault((size, method), []).append((n, cpu))
        failed = len(cell) - len(good)
        lines.append(
            f"| {fmt_size(size)} | {n} | {METHOD_LABELS.get(method, method)} | {fmt_s(wall)} "
            f"| {f'{fmt_s(ci[0])}-{fmt_s(ci[1])} ({ci[2] * 100:.0f} %)' if ci else '-'} "
            f"| {len(good)}{f' ({failed} FAILED)' if failed else ''} | {fmt_s(cpu)} "
            f"| {'-' if pk is None else f'{pk / (size / MiB):.0f}'} "
            f"| {'-' if wb is None else f'{wb / size:.2f}'} |"
        )
    lines += [
        "",
        "| size | method | wall per added receiver | sender CPU per added receiver "
        "| wall at the most receivers / at 1 |",
        "|---:|---|---:|---:|---:|",
    ]
    for (size, method), pts in sorted(walls.items()):
        slope = fit_slope(pts)
        cslope = fit_slope(cpus.get((size, method), []))
        pts_sorted = sorted(pts)
        ratio = (
            pts_sorted[-1][1] / pts_sorted[0][1]
            if len(pts_sorted) > 1 and pts_sorted[0][0] == 1 and pts_sorted[0][1] > 0
            else None
        )
        lines.append(
            f"| {fmt_size(size)} | {METHOD_LABELS.get(method, method)} | {fmt_s(slope)} "
            f"| {fmt_s(cslope)} "
            f"| {'-' if ratio is None else f'x{ratio:.1f} ({pts_sorted[-1][0]} vs 1)'} |"
        )
    return "\n".join(lines) + "\n"


def scale_plot(run: BenchRun, path: Path) -> None:
    """Wall time and sender CPU against N (log-log), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counted = [s for s in run.samples if not s.warmup and s.ok]
    size = min(s.size for s in counted) if counted else 0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, what, field in (
        (axes[0], "wall time (s)", "wall_s"),
        (axes[1], "sender guest CPU (s)", "sender_busy_s"),
    ):
        for method in METHODS:
            pts = []
            for n in sorted({s.peers for s in counted}):
                vals = [
                    float(getattr(s, field))
                    for s in counted
                    if (s.method, s.peers, s.size) == (method, n, size) and getattr(s, field) >= 0
                ]
                if vals:
                    pts.append((n, statistics.median(vals)))
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    label=METHOD_LABELS[method],
                    linewidth=2.5 if method.startswith("p2pkp") else 1.2,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("receivers")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{fmt_size(size)} to N receivers ({run.meta.get('accel', '?').upper()})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(run: BenchRun) -> str:
    m = run.meta
    return (
        "# Scaling: cost against the number of receivers\n\n"
        f"Made by `{m['command']}` on {m['date']} (commit {m['commit']}), "
        f"{m.get('duration_s', '?')} s.\n\n"
        f"- Host: {m['cpu']}, {m['host_cpus']} cores; accelerator "
        f"**{str(m.get('accel', '?')).upper()}**; {m.get('qemu', 'QEMU ?')}; guest kernel "
        f"{m.get('kernel', '?')} (pin {m.get('pin', '?')}).\n"
        "- Topology `scale`: vm1 sends; receivers are network namespaces in vm2..vm4 "
        "(22 each), taken round-robin over the three guests.\n"
        f"- Sizes {', '.join(fmt_size(s) for s in m['sizes'])}; receivers "
        f"{', '.join(str(n) for n in m['peers'])}; warm page cache; {m['reps']} counted "
        f"round(s) per cell{' after a warm-up round' if m.get('warmup', True) else ''}; "
        f"method order random per round (seed {m['seed']}).\n"
        "- Wall: from the sender's start until it exits, which each method does only once "
        "every receiver has the file; every received file's SHA-256 is checked.\n"
        "- Sender CPU: busy time of the sender's guest (/proc/stat), kernel threads "
        "included. Receivers' CPU is not given: the receivers of a guest share its CPU.\n"
        "- Packets and wire bytes: what the sender's NIC sent during the sample "
        "(`/sys/class/net/eth0/statistics`), per MiB and per byte of the file.\n"
        "- Cost per added receiver: least-squares slope of the medians against N.\n"
        f"- Load gate: {m.get('load_gate', 'not checked')} (limit {LOAD_LIMIT:g} host "
        "CPUs busy with other work).\n"
    )


def write_results(run: BenchRun, outdir: Path) -> None:
    texts = {
        "raw.json": run.to_json() + "\n",
        "raw.csv": run.samples_csv(),
        "table.md": scale_table(run),
        "README.md": describe(run),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (outdir / name).write_text(text)
    if any(s.ok for s in run.samples):
        scale_plot(run, outdir / "plot.png")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m p2pkpvm bench-scale", description=__doc__)
    p.add_argument(
        "--size",
        type=parse_sizes,
        default=(8 * MiB,),
        help="file sizes, comma-separated, e.g. 8M or 64M,8M (8M)",
    )
    p.add_argument("--receivers", default=",".join(map(str, NS)), help="comma-separated N, 1..64")
    p.add_argument("--methods", default=",".join(SCALE_METHODS))
    p.add_argument("--reps", type=int, default=3, help="counted rounds per cell (3)")
    p.add_argument("--seed", type=int, help="seed of the method order")
    p.add_argument("--accel", choices=("kvm", "tcg"))
    p.add_argument("--pin", default=None)
    p.add_argument("--kernel", choices=KERNELS, default="stock")
    p.add_argument("--out", type=Path)
    p.add_argument("--no-warmup", action="store_true", help="no warm-up round per cell")
    p.add_argument(
        "--publish-dir",
        default="scaling",
        help="folder under docs/results to publish to (scaling)",
    )
    p.add_argument("--no-publish", action="store_true")
    p.add_argument("--force", action="store_true", help="publish even under host load")
    p.add_argument("--render", type=Path, metavar="DIR", help="rewrite DIR from its raw.json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    root = project_root()
    if args.render:
        write_results(BenchRun.from_json((args.render / "raw.json").read_text()), args.render)
        return 0
    ns = tuple(int(x) for x in args.receivers.split(","))
    methods = parse_methods(args.methods)
    if not all(1 <= n <= 64 for n in ns):
        raise SystemExit(f"bench-scale: receivers {ns} not all in 1..64")
    topology = load_topology("scale")
    memory = {g.name: g.memory for g in topology.guests if g.receivers}
    why = too_big(args.size, ns, memory)
    if why:
        raise SystemExit(f"bench-scale: {why}")
    kernel = select(args.kernel, load_pin(args.pin))
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    cfg = BenchConfig(
        sizes=args.size,
        peers=ns,
        caches=("warm",),
        reps=args.reps,
        methods=methods,
        strace=False,
        warmup=not args.no_warmup,
        seed=seed,
    )
    outdir = args.out or root / "results" / (time.strftime("%Y%m%d-%H%M%S") + "-scale")
    meta: dict[str, object] = {
        "mode": "scaling",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python -m p2pkpvm bench-scale", *(argv or sys.argv[1:])]),
        "sizes": list(cfg.sizes),
        "peers": list(ns),
        "caches": list(cfg.caches),
        "reps": cfg.reps,
        "methods": list(methods),
        "warmup": cfg.warmup,
        "seed": seed,
        "load_limit": LOAD_LIMIT,
        "pin": kernel.pin,
        **host_meta(kernel.module),
    }
    run = BenchRun(meta=meta)
    t0 = time.monotonic()
    progress(f"bench-scale: booting topology scale; results in {outdir}")
    try:
        # receiver bridges snoop IGMP as a switch would (IPv4 only here): group datagrams
        # reach the receivers that joined, not all 22 namespaces of a guest's one vCPU
        with Cluster(topology, accel=args.accel, kernel=kernel, snooping=True) as cluster:
            cluster.load_module()
            meta.update(accel=cluster.accel, kernel=cluster[0].run("uname -r").output.strip())
            rs: list[Guest] = [
                NamespaceGuest(cluster[r.guest], r) for r in spread(list(cluster.receivers))
            ]
            progress(
                f"bench-scale: {len(rs)} receivers up ({cluster.accel}) after "
                f"{time.monotonic() - t0:.0f} s"
            )
            runner = BenchRunner([cluster[0], *rs], cfg, progress, receiver_cpu=False)
            runner.prepare()
            run_recorded(runner, run, lambda: write_results(run, outdir), t0)
    except HarnessError as exc:
        print(f"bench-scale: {exc}", file=sys.stderr)
        if run.samples:
            write_results(run, outdir)
        return 1
    print(scale_table(run))
    dest = root / "docs" / "results" / args.publish_dir
    if not publish_gated(run, outdir, dest, args, "bench-scale"):
        return 3
    failed = sum(not s.ok for s in run.samples)
    progress(f"bench-scale: done in {time.monotonic() - t0:.0f} s, {failed} failed; {outdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
