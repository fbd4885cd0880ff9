"""The command line, `python -m p2pkpvm SUBCOMMAND` (or .venv/bin/p2pkpvm); make targets call it.

Every subcommand has --help.  A harness error ends it with one line on stderr (the full
report, e.g. a console tail, goes to out/last-error.txt), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2pkpvm.bench import lossbench
from p2pkpvm.bench import main as bench_main
from p2pkpvm.bench import profile as bench_profile
from p2pkpvm.bench import scaling as bench_scaling
from p2pkpvm.bench.tables import parse_size
from p2pkpvm.cli.demo import run_demo
from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.cluster.remote import ClusterServer, default_socket, shutdown
from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel import deps, kbuild
from p2pkpvm.kernel.choice import KERNELS, select
from p2pkpvm.kernel.pin import KernelPin, load_pin, load_pins
from p2pkpvm.net.topology import Topology, load_topology, topology_dict, topology_of_size
from p2pkpvm.paths import out_dir
from p2pkpvm.plugin import junit
from p2pkpvm.vm import crash
from p2pkpvm.vm.kvm import decide_accel
from p2pkpvm.vm.machine import guest_env, vng_path

log = logging.getLogger("p2pkpvm")


def _topology(args: argparse.Namespace) -> Topology:
    if getattr(args, "topology", None):
        return load_topology(args.topology)
    return topology_of_size(args.vms)


def _pin(args: argparse.Namespace) -> KernelPin:
    """The kernel pin of --pin (default: configs/kernel-pin.yaml's default)."""
    return load_pin(args.pin)


def cmd_probe_kvm(args: argparse.Namespace) -> int:
    vng = vng_path()
    d = decide_accel(_pin(args).vmlinuz, vng, guest_env(vng), use_cache=not args.no_cache)
    print(f"accel={d.accel} source={d.source} detail={d.detail}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Boot a cluster, print READY; hold it until SIGINT/SIGTERM (--hold 0: exit at once), and
    with --serve answer `pytest --attach` on a unix socket until `down`."""
    t0 = time.monotonic()
    topo = _topology(args)
    kernel = select(args.kernel, _pin(args))
    if args.append:
        kernel = dataclasses.replace(kernel, append=(*kernel.append, *args.append))
    with Cluster(topo, accel=args.accel, kernel=kernel) as cluster:
        if args.module:
            cluster.load_module()
        server = ClusterServer(cluster, args.socket, topology_dict(topo)) if args.serve else None
        print(
            f"READY run_id={cluster.run_id} netns={cluster.netns.name} "
            f"logdir={cluster.logdir} up_s={time.monotonic() - t0:.1f} boot_s="
            + ",".join(f"{v.name}:{v.boot_seconds:.1f}" for v in cluster.vms)
            + (f" socket={args.socket}" if server else ""),
            flush=True,
        )
        if server is not None:
            server.serve()
        elif args.hold:
            signal.pause()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    shutdown(args.socket)
    print(f"asked the cluster at {args.socket} to shut down")
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "p2pkpvm shell: needs an interactive terminal (stdin and stdout are not TTYs); "
            "use `python -m p2pkpvm up` or the test suite in CI",
            file=sys.stderr,
        )
        return 2
    if shutil.which("tmux") is None:
        print("p2pkpvm shell: tmux not found (run `make deps`)", file=sys.stderr)
        return 2
    topo = _topology(args)
    pin = _pin(args)
    cluster = Cluster(topo, accel=args.accel, kernel=select("stock", pin))
    session = f"p2pkp-{cluster.run_id}"
    try:
        cluster.create_network()
        py = shlex.quote(sys.executable)
        panes = []
        for g in topo.guests:
            topo_arg = shlex.quote(args.topology) if args.topology else f"--vms {args.vms}"
            topo_arg = f"--topology {topo_arg}" if args.topology else topo_arg
            panes.append(
                f"{py} -m p2pkpvm --pin {shlex.quote(pin.name)} guest {topo_arg} "
                f"--name {g.name} "
                f"--netns {cluster.netns.name} --accel {cluster.accel} "
                f"--run-id {cluster.run_id} --logdir {shlex.quote(str(cluster.logdir))}"
                + (" --no-module" if args.no_module else "")
                + "; echo; read -r -p 'guest ended; press Enter to close this pane' _"
            )
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", panes[0]],
            check=True,
        )
        for pane in panes[1:]:
            subprocess.run(["tmux", "split-window", "-t", session, pane], check=True)
            subprocess.run(["tmux", "select-layout", "-t", session, "tiled"], check=True)
        subprocess.run(["tmux", "set-option", "-t", session, "remain-on-exit", "off"], check=True)
        print(f"tmux session {session}: {len(panes)} guests booting (logs: {cluster.logdir})")
        subprocess.run(["tmux", "attach-session", "-t", session], check=False)
    finally:
        subprocess.run(
            ["tmux", "kill-session", "-t", session], check=False, stderr=subprocess.DEVNULL
        )
        cluster.close()
        print(f"torn down: namespace {cluster.netns.name} and all guests of {session}")
    return 0


def cmd_guest(args: argparse.Namespace) -> int:
    """One tmux pane: boot one guest in the coordinator's namespace and hand over its shell."""
    topo = _topology(args)
    cluster = Cluster(
        topo, run_id=args.run_id, logdir=Path(args.logdir), kernel=select("stock", _pin(args))
    )
    try:
        print(f"{args.name}: booting ({args.accel}) ...", flush=True)
        t0 = time.monotonic()
        vm = cluster.attach_guest(args.netns, args.name, args.accel)
        print(
            f"{args.name}: shell after {vm.boot_seconds:.1f} s; waiting for peers ...", flush=True
        )
        cluster.wait_reachable(timeout=600.0)
        if not args.no_module:
            cluster.load_module()
            print(f"{args.name}: p2pkp loaded", flush=True)
        print(
            f"{args.name}: ready after {time.monotonic() - t0:.1f} s (ipv4 {vm.ipv4}); "
            "exit the shell to end this guest",
            flush=True,
        )
        vm.interact()
    finally:
        cluster.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(accel=args.accel, size=args.size, kernel=select("stock", _pin(args)))


def cmd_deps(args: argparse.Namespace) -> int:
    pin = _pin(args)
    if args.action == "install":
        deps.install(pin, args.qemu)
    elif args.action == "check":
        wanted = deps.missing_packages(pin)
        if wanted:
            raise HarnessError(f"deps: missing {' '.join(wanted)}: run `{pin.make('deps')}`")
        print(f"deps: ok (kernel pin {pin.name})")
    elif args.action == "pins":
        pins = load_pins()
        for p in pins.pins:
            mark = " (default)" if p.is_default else ""
            print(f"{p.name}{mark}: {p.abi} {p.version}")
    else:
        print(deps.checkpatch(pin))
    return 0


def cmd_kernel(args: argparse.Namespace) -> int:
    pin = _pin(args)
    if args.action == "build":
        print(kbuild.build(args.flavour, args.jobs, pin).directory)
        return 0
    kb = kbuild.plan(args.flavour, pin)
    if args.action == "key":
        print(kb.key)
        return 0
    if not kb.complete():
        raise HarnessError(
            f"the {args.flavour} kernel of pin {pin.name} is not built ({kb.directory}): "
            f"run `{pin.make('kernel' if args.flavour == 'debug' else 'lean-kernel')}`"
        )
    print(kb.bzimage if args.action == "bzimage" else kb.directory)
    return 0


def cmd_junit_summary(args: argparse.Namespace) -> int:
    for path in args.files:
        print(junit.summary(path))
    return 0


def cmd_crash_scan(args: argparse.Namespace) -> int:
    """Print each kernel report found in the logs; exit 1 if any, 2 when one is unreadable."""
    found = 0
    for name in args.logs:
        try:
            if name == "-":
                text = sys.stdin.read()
            else:
                with open(name, encoding="utf-8", errors="replace", newline="") as f:
                    text = f.read()
        except OSError as exc:
            print(f"{name}: cannot read: {exc.strerror}", file=sys.stderr)
            return 2
        for report in crash.scan(text):
            found += 1
            print(f"{name}: {report.summary()}")
            if args.verbose:
                print(report.excerpt, end="\n\n")
    return 1 if found else 0


def cmd_bench(args: argparse.Namespace) -> int:
    """bench's own command line, the pin first (a --pin of the bench arguments wins)."""
    return bench_main.main(["--pin", _pin(args).name, *(x for x in args.bench_args if x != "--")])


def cmd_bench_scale(args: argparse.Namespace) -> int:
    """bench-scale's own command line, the pin first (a --pin of its arguments wins)."""
    return bench_scaling.main(
        ["--pin", _pin(args).name, *(x for x in args.scale_args if x != "--")]
    )


def cmd_lossbench(args: argparse.Namespace) -> int:
    losses = [float(x) for x in args.loss.split(",")]
    kernel = select(args.kernel, _pin(args))
    return lossbench.run_lossbench(
        args.accel, args.size, losses, args.json, kernel, fair_window=args.fair_window
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m p2pkpvm",
        description="P2PKP VM harness (virtme-ng guests on a private "
        "bridge in a network namespace)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log harness steps")
    p.add_argument(
        "--pin",
        default=None,
        help="kernel pin of configs/kernel-pin.yaml by name, e.g. 6.12 (default: the file's "
        "default); passed on as an argument to every harness process it starts",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("probe-kvm", help="print the KVM/TCG decision")
    s.add_argument("--no-cache", action="store_true", help="probe again")
    s.set_defaults(fn=cmd_probe_kvm)

    def cluster_opts(s: argparse.ArgumentParser) -> None:
        s.add_argument("--vms", type=int, default=2, help="number of guests (default 2)")
        s.add_argument("--topology", help="topology name/file (overrides --vms)")
        s.add_argument("--accel", choices=("kvm", "tcg"), default=None)

    s = sub.add_parser(
        "up", help="boot a cluster and hold it (with --serve: for pytest --attach; make vm-up)"
    )
    cluster_opts(s)
    s.add_argument(
        "--kernel", choices=KERNELS, default="stock", help="stock (default), lean, debug"
    )
    s.add_argument("--module", action="store_true", help="insmod p2pkp.ko in every guest")
    s.add_argument("--hold", type=int, default=1, help="0: tear down right after READY")
    s.add_argument(
        "--serve", action="store_true", help="serve `pytest --attach` until `down` or a signal"
    )
    s.add_argument("--socket", type=Path, default=default_socket(), help="unix socket to serve")
    s.add_argument("--append", action="append", default=[], help="add a kernel command line option")
    s.set_defaults(fn=cmd_up)

    s = sub.add_parser("down", help="shut down the cluster of `up --serve` (make vm-down)")
    s.add_argument("--socket", type=Path, default=default_socket())
    s.set_defaults(fn=cmd_down)

    s = sub.add_parser("shell", help="interactive shells, one tmux pane per guest")
    cluster_opts(s)
    s.add_argument("--no-module", action="store_true", help="do not insmod p2pkp.ko")
    s.set_defaults(fn=cmd_shell)

    s = sub.add_parser("guest", help=argparse.SUPPRESS)
    cluster_opts(s)
    s.add_argument("--name", required=True)
    s.add_argument("--netns", required=True)
    s.add_argument("--run-id", required=True)
    s.add_argument("--logdir", required=True)
    s.add_argument("--no-module", action="store_true")
    s.set_defaults(fn=cmd_guest)

    s = sub.add_parser("demo", help="send a file from vm1 to vm2 and vm3; sizes, sha256, syscalls")
    s.add_argument("--accel", choices=("kvm", "tcg"), default=None)
    s.add_argument("--size", default="8M", help="file size for head -c (default 8M)")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("bench", help="P2PKP against the baselines on 4 guests (make bench)")
    s.add_argument("bench_args", nargs=argparse.REMAINDER, help="see `bench -- --help`")
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser(
        "bench-scale", help="cost against the number of receivers, 1..64 (make bench-scale)"
    )
    s.add_argument("scale_args", nargs=argparse.REMAINDER, help="see `bench-scale -- --help`")
    s.set_defaults(fn=cmd_bench_scale)

    s = sub.add_parser("bench-profile", help="perf profile of one transfer (sender, receiver)")
    s.add_argument("profile_args", nargs=argparse.REMAINDER, help="see `bench-profile -- --help`")
    s.set_defaults(fn=lambda a: bench_profile.main([x for x in a.profile_args if x != "--"]))

    s = sub.add_parser(
        "lossbench", help="goodput and retransmission ratio of 1-to-3 transfers at 0/1/5%% loss"
    )
    s.add_argument("--accel", choices=("kvm", "tcg"), default=None)
    s.add_argument("--size", type=parse_size, default=64 << 20, help="file size (default 64M)")
    s.add_argument(
        "--fair-window",
        type=float,
        default=30.0,
        help="seconds of each fairness run on a 20 Mbit/s bottleneck (default 30; 0: none)",
    )
    s.add_argument(
        "--loss",
        default="0,1,5",
        help="comma-separated loss %% (default 0,1,5; include 0 for the ratios)",
    )
    s.add_argument("--json", type=Path, default=None, help="also write the results here")
    s.add_argument("--kernel", choices=KERNELS, default="stock", help="kernel of the pin")
    s.set_defaults(fn=cmd_lossbench)

    s = sub.add_parser(
        "deps", help="install or check the kernel pin's packages, host tools and QEMU"
    )
    s.add_argument("action", choices=("install", "check", "checkpatch", "pins"))
    s.add_argument(
        "--qemu",
        choices=tuple(deps.QEMU_CHOICES),
        default=None,
        help=f"where QEMU comes from (default {deps.DEFAULT_QEMU}): "
        + "; ".join(f"{c.name}: {c.what}" for c in deps.QEMU_CHOICES.values()),
    )
    s.set_defaults(fn=cmd_deps)

    s = sub.add_parser(
        "kernel", help="the pin's debug or lean kernel: build (cached) or print its paths"
    )
    s.add_argument("action", choices=("build", "path", "bzimage", "key"))
    s.add_argument("--flavour", default="debug", choices=tuple(kbuild.FLAVOURS))
    s.add_argument("-j", "--jobs", type=int, default=None)
    s.set_defaults(fn=cmd_kernel)

    s = sub.add_parser("junit-summary", help="one line per pytest junit file (vm-test-matrix)")
    s.add_argument("files", nargs="+", type=Path)
    s.set_defaults(fn=cmd_junit_summary)

    s = sub.add_parser("crash-scan", help="find kernel crash reports in console/dmesg logs")
    s.add_argument("logs", nargs="+", help="console or dmesg logs ('-' for stdin)")
    s.add_argument("-v", "--verbose", action="store_true", help="print the excerpts too")
    s.set_defaults(fn=cmd_crash_scan)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if os.environ.get("P2PKP_DEBUG"):
        logging.getLogger().setLevel(logging.DEBUG)
    try:
        _pin(args)  # an unknown --pin fails here, naming the pins
        rc: int = args.fn(args)
    except HarnessError as exc:
        print(f"p2pkpvm {args.cmd}: {one_line(exc)}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(
            f"p2pkpvm {args.cmd}: `{shlex.join(map(str, exc.cmd))}` failed with {exc.returncode}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"p2pkpvm {args.cmd}: interrupted; torn down", file=sys.stderr)
        return 130
    return rc


def one_line(exc: BaseException) -> str:
    """The first line of an error; the whole report is kept in out/last-error.txt."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "\n" in text:
        try:
            out_dir().mkdir(parents=True, exist_ok=True)
            (out_dir() / "last-error.txt").write_text(text + "\n")
            first += f" (full report: {out_dir() / 'last-error.txt'})"
        except OSError:
            pass
    return first
