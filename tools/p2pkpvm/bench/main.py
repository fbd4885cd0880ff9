"""`python -m p2pkpvm bench [--quick]` (make bench): boot the quad cluster, run the matrix,
write results/<timestamp>/ (table.md, table.tex, plot.png, raw.json, raw.csv, README.md) and
copy it to docs/results/."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from p2pkpvm.bench.hostload import LOAD_LIMIT, load_verdict
from p2pkpvm.bench.model import METHODS, BenchParseError, BenchRun
from p2pkpvm.bench.plot import plot
from p2pkpvm.bench.runner import FULL, QUICK, BenchConfig, BenchRunner
from p2pkpvm.bench.tables import fmt_size, latex, markdown
from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.errors import HarnessError, VMError
from p2pkpvm.kernel.choice import KERNELS, KernelChoice, select
from p2pkpvm.kernel.pin import load_pin
from p2pkpvm.net.mtu import DEFAULT_MTU, MAX_MTU, MIN_MTU
from p2pkpvm.net.topology import load_topology
from p2pkpvm.paths import project_root
from p2pkpvm.vm.guest import Guest
from p2pkpvm.vm.qemu import qemu_version

log = logging.getLogger("p2pkpvm.bench")
NEEDED = (
    "tools/bench/bench-udp",
    "tools/bench/bench-tcp",
    "tools/bench/bench-timeit",
    "tools/p2pkp-send",
    "tools/p2pkp-recv",
)


def progress(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


ETHTOOL_USO_ON = "ethtool -K eth0 tx-udp-segmentation on"


def uso_state(vm: Guest) -> str:
    """What the guest's virtio NIC offers for UDP segmentation ('tx-udp-segmentation: on',
    'off [fixed]' where the device or kernel lacks it)."""
    out = vm.run("ethtool -k eth0 | grep -i udp-segmentation", timeout=30, check=False).output
    return "; ".join(line.strip() for line in out.splitlines() if line.strip()) or "?"


def host_meta(module: Path) -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rev = subprocess.run(
        ["git", "-C", str(project_root()), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "host": platform.node(),
        "host_kernel": platform.release(),
        "cpu": cpu,
        "host_cpus": str(os.cpu_count()),
        "commit": rev or "?",
        "module_sha256": hashlib.sha256(module.read_bytes()).hexdigest()[:16],
        "qemu": qemu_version(),
    }


def describe(run: BenchRun) -> str:
    m = run.meta
    return (
        "# Benchmark results\n\n"
        f"Made by `{m['command']}` on {m['date']} (commit {m['commit']}).\n\n"
        f"- Host: {m['cpu']}, {m['host_cpus']} cores, host kernel {m['host_kernel']}; "
        f"load average at start {m['loadavg']}.\n"
        f"- Guests: topology `quad` (vm1 sends, vm2..vm4 receive), link MTU "
        f"{m.get('mtu', DEFAULT_MTU)}, {m['guest']}, "
        f"accelerator **{m['accel'].upper()}**"
        + (
            " (software emulation: KVM does not work on this machine, so every number is "
            "far slower than on real hardware; compare methods within this run only)"
            if m["accel"] == "tcg"
            else ""
        )
        + ".\n"
        f"- Guest kernel: {m['kernel']} (kernel pin {m.get('pin', '?')}); P2PKP module "
        f"(p2pkp.ko SHA-256 {m['module_sha256']}...) and tools from this checkout.\n"
        f"- {m.get('qemu', 'QEMU ?')}; virtio-net USO {m.get('uso', 'default')}, the sender's "
        f"NIC: `{m.get('guest_uso', '?')}`.\n"
        f"- Matrix: sizes {', '.join(fmt_size(s) for s in m['sizes'])}; peers "
        f"{', '.join(str(p) for p in m['peers'])}; page cache {', '.join(m['caches'])}; "
        f"{m['reps']} repetition(s) per cell"
        + (", after one warm-up round per cell that is not counted" if m.get("warmup") else "")
        + (
            f"; within each round the methods run in a random order (seed {m['seed']})"
            if "seed" in m
            else ""
        )
        + ". Wall is the median with a distribution-free confidence interval (order "
        "statistics of the binomial; below 6 samples the interval is min-max, and its "
        "level, e.g. 94 % for 5, is stated).\n"
        "- Wall: from the sender's start (fork in `bench-timeit`) until the sender exits, "
        "which every method does only once each receiver has the whole file (the baselines "
        "wait for a receiver's final confirmation sent after write + close; P2PKP's write() "
        "returns once every peer acknowledged). Every received file's SHA-256 is then "
        "compared with the source's; a mismatch or a receiver failure is a failed sample.\n"
        "- Sender syscalls: a separate run under `strace -f -c` (includes process start-up).\n"
        "- CPU: busy ticks (all but idle and iowait) of /proc/stat on the sender and the "
        "receivers taking part, kworkers and softirqs included (10 ms resolution).\n"
        "- Throughput: file size x peers / median wall.\n"
        "- Cold cache: the source file lives on ext4 on a loop device in the sender; "
        "`sync; echo 3 > /proc/sys/vm/drop_caches` before the run. Warm: `cat FILE` before.\n"
        f"- Datagrams: every UDP method and iperf3 carry {m.get('payload', 1400)} bytes of "
        "file (+ a 16-byte header), P2PKP's chunk on this link, so all send as many "
        "datagrams.\n"
        f"- Link limit: `iperf3 -u -b 0 -l {m.get('payload', 1400) + 16}` vm1 -> vm2.\n"
        "- Host load: before each sample the host's 1-minute load average, and during it the "
        "host CPUs busy with work that is not this bench's (host busy time minus that of "
        "the bench and its guests), are kept in raw.json; "
        + (
            f"a run with samples above {m.get('load_limit', LOAD_LIMIT):g} such CPUs is not "
            f"published unless forced. This run: {m.get('load_gate', 'not checked')}.\n"
        )
    )


def write_results(run: BenchRun, outdir: Path) -> None:
    """Every file of a results folder; the texts are made first, so that a run whose data
    cannot be rendered changes nothing."""
    texts = {
        "raw.json": run.to_json() + "\n",
        "raw.csv": run.samples_csv(),
        "table.md": markdown(run),
        "table.tex": latex(run),
        "README.md": describe(run),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (outdir / name).write_text(text)
    if run.samples:
        plot(run, outdir / "plot.png")


def publish(outdir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("raw.json", "raw.csv", "table.md", "table.tex", "README.md", "plot.png"):
        if (outdir / name).exists():
            shutil.copy2(outdir / name, dest / name)


def run_recorded(runner: BenchRunner, run: BenchRun, write: Callable[[], None], t0: float) -> None:
    """runner's matrix into run; whatever happens, the duration and the load gate's verdict
    go into run.meta, the results are written and the guests cleaned up."""
    try:
        runner.run(run.samples.append, run.syscalls.append)
    finally:
        run.meta["duration_s"] = round(time.monotonic() - t0)
        run.meta["load_gate"] = load_verdict(run.samples) or "passed"
        write()
        runner.cleanup()


def publish_gated(
    run: BenchRun, outdir: Path, dest: Path, args: argparse.Namespace, prog: str
) -> bool:
    """Copy outdir to dest unless --no-publish; False (nothing copied) when counted samples
    ran under host load and --force was not given."""
    if args.no_publish:
        return True
    busy = load_verdict(run.samples)
    if busy and not args.force:
        print(
            f"{prog}: not published to {dest}: {busy}; run again on a quiet host, or "
            f"--force to publish anyway (results stay in {outdir})",
            file=sys.stderr,
        )
        return False
    publish(outdir, dest)
    return True


def results_dir(root: Path, mtu: int | None) -> Path:
    """Where a run is published: docs/results, or docs/results/mtu-N for a run asked for at
    an MTU (the MTU matrix of `make bench-mtu`, one folder per MTU)."""
    base = root / "docs" / "results"
    return base if mtu is None else base / f"mtu-{mtu}"


def render(outdir: Path) -> int:
    """Rewrite a results folder from its raw data (after a change to the tables or plot)."""
    raw = outdir / "raw.json"
    try:
        write_results(BenchRun.from_json(raw.read_text()), outdir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"bench: cannot read {raw}: {exc}", file=sys.stderr)
        return 2
    progress(f"bench: rendered {outdir} from {raw.name}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m p2pkpvm bench", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="4 KiB, 1 MiB, 8 MiB; 1 and 3 peers; 1 repetition"
    )
    p.add_argument("--reps", type=int, help="repetitions per cell")
    p.add_argument("--sizes", help="comma-separated file sizes in bytes (overrides the mode's)")
    p.add_argument("--peers", help="comma-separated peer counts, 1..3 (overrides the mode's)")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--no-strace", action="store_true", help="skip the syscall-count runs")
    p.add_argument(
        "--no-warmup", action="store_true", help="count every round (no warm-up round per cell)"
    )
    p.add_argument(
        "--seed", type=int, help="seed of the method order within rounds (default: random)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help=f"publish even when samples ran while more than {LOAD_LIMIT:g} host CPUs did "
        "other work",
    )
    p.add_argument("--accel", choices=("kvm", "tcg"), help="force the accelerator")
    p.add_argument("--pin", default=None, help="kernel pin by name (default: the default pin)")
    p.add_argument(
        "--kernel", choices=KERNELS, default="stock", help="kernel of the pin (default stock)"
    )
    p.add_argument(
        "--uso",
        choices=("on", "off", "default"),
        default="default",
        help="virtio-net USO forced on or off (QEMU 8.2+; 6.2+ guests can use it; 'on' also "
        "turns it on in the guests, which 6.12 leaves off), default: QEMU's",
    )
    p.add_argument(
        "--mtu",
        type=int,
        help=f"MTU of the cluster's links ({MIN_MTU}..{MAX_MTU}; default {DEFAULT_MTU}); "
        "published to docs/results/mtu-N",
    )
    p.add_argument("--out", type=Path, help="results folder (default results/<timestamp>)")
    p.add_argument(
        "--no-publish",
        action="store_true",
        help="do not copy to docs/results (docs/results/mtu-N with --mtu)",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="DIR",
        help="boot nothing: rewrite DIR's tables, plot and README from its raw.json",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> BenchConfig:
    cfg = QUICK if args.quick else FULL
    if args.reps:
        cfg = replace(cfg, reps=args.reps)
    if args.methods:
        cfg = replace(cfg, methods=parse_methods(args.methods))
    if args.sizes:
        cfg = replace(cfg, sizes=tuple(int(x) for x in args.sizes.split(",")))
    if args.peers:
        peers = tuple(int(x) for x in args.peers.split(","))
        if not all(1 <= p <= 3 for p in peers):
            raise SystemExit(f"--peers {args.peers}: each must be 1..3 (topology quad)")
        cfg = replace(cfg, peers=peers)
    if args.no_strace:
        cfg = replace(cfg, strace=False)
    if args.no_warmup:
        cfg = replace(cfg, warmup=False)
    if args.mtu is not None:
        if not MIN_MTU <= args.mtu <= MAX_MTU:
            raise SystemExit(f"--mtu {args.mtu}: must be {MIN_MTU}..{MAX_MTU}")
        cfg = replace(cfg, mtu=args.mtu)
    return replace(cfg, seed=args.seed if args.seed is not None else secrets.randbelow(1 << 31))


def parse_methods(text: str) -> tuple[str, ...]:
    """--methods of bench and bench-scale: comma-separated names of METHODS."""
    methods = tuple(m.strip() for m in text.split(","))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; known: {', '.join(METHODS)}")
    return methods


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(args.verbose)
    root = project_root()
    if args.render:
        return render(args.render)
    kernel: KernelChoice = select(args.kernel, load_pin(args.pin))
    missing = [n for n in NEEDED if not (root / n).exists()]
    if not kernel.module.exists():
        missing.append(str(kernel.module))
    if missing:
        print(
            f"bench: not built: {', '.join(missing)} (run `make` and `make -C tools/bench`)",
            file=sys.stderr,
        )
        return 2
    cfg = config_from(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outdir = args.out or root / "results" / stamp
    meta: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python -m p2pkpvm bench", *(sys.argv[1:] if argv is None else argv)]),
        "sizes": list(cfg.sizes),
        "peers": list(cfg.peers),
        "caches": list(cfg.caches),
        "reps": cfg.reps,
        "methods": list(cfg.methods),
        "warmup": cfg.warmup,
        "seed": cfg.seed,
        "load_limit": LOAD_LIMIT,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split(" ")[0:3]),
        "pin": kernel.pin,
        "uso": args.uso,
        "mtu": cfg.mtu,
        "payload": cfg.payload,
        **host_meta(kernel.module),
    }
    run = BenchRun(meta=meta)
    t0 = time.monotonic()
    progress(f"bench: booting 4 guests (topology quad, MTU {cfg.mtu}); results in {outdir}")
    try:
        uso = {"on": True, "off": False}.get(args.uso)
        topo = replace(load_topology("quad"), mtu=cfg.mtu)
        with Cluster(topo, accel=args.accel, kernel=kernel, uso=uso) as cluster:
            cluster.load_module()
            if uso:
                # 6.12's virtio-net offers USO (hw_features) but leaves it off: turn it on
                for vm in cluster:
                    vm.run(ETHTOOL_USO_ON, timeout=30, check=False)
            g = cluster.topology.guests[0]
            meta.update(
                accel=cluster.accel,
                kernel=cluster[0].run("uname -r").output.strip(),
                guest=f"{g.cpus} vCPU / {g.memory} each",
                guest_uso=uso_state(cluster[0]),
                boot_s=[round(vm.boot_seconds or 0.0, 1) for vm in cluster],
            )
            progress(f"bench: {meta['qemu']}, kernel {meta['kernel']}, {meta['guest_uso']}")
            progress(f"bench: cluster up ({cluster.accel}) after {time.monotonic() - t0:.0f} s")
            runner = BenchRunner(list(cluster), cfg, progress)
            runner.prepare()
            try:
                run.iperf = runner.iperf()
                progress(
                    f"bench: iperf3 -u link limit {run.iperf.received_bps / 8e6:.1f} MB/s "
                    f"({run.iperf.lost_percent:.1f}% lost)"
                )
            except (VMError, BenchParseError) as exc:
                progress(f"bench: iperf3 -u FAILED (no link limit in this run): {exc}")
            run_recorded(runner, run, lambda: write_results(run, outdir), t0)
    except HarnessError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        if run.samples:
            write_results(run, outdir)
            print(f"bench: partial results in {outdir}", file=sys.stderr)
        return 1
    if not publish_gated(run, outdir, results_dir(root, args.mtu), args, "bench"):
        return 3
    failed = sum(not s.ok for s in run.samples) + sum(not s.ok for s in run.syscalls)
    progress(
        f"bench: done in {time.monotonic() - t0:.0f} s; {len(run.samples)} timed runs, "
        f"{failed} failed; {outdir}/table.md"
    )
    print(markdown(run))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
