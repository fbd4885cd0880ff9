"""Command line: probe-kvm, up, shell (tmux, one pane per guest), guest, demo."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from p2pkpvm.cluster import Cluster
from p2pkpvm.demo import run_demo
from p2pkpvm.errors import HarnessError
from p2pkpvm.kvm import decide_accel
from p2pkpvm.lossbench import add_parser as add_lossbench
from p2pkpvm.pin import load_pin, project_root
from p2pkpvm.topology import Topology, load_topology, topology_of_size
from p2pkpvm.vm import guest_env, vng_path

log = logging.getLogger("p2pkpvm")


def _topology(args: argparse.Namespace) -> Topology:
    if getattr(args, "topology", None):
        return load_topology(args.topology)
    return topology_of_size(args.vms)


def cmd_probe_kvm(args: argparse.Namespace) -> int:
    vng = vng_path()
    d = decide_accel(load_pin().vmlinuz, vng, guest_env(vng), use_cache=not args.no_cache)
    print(f"accel={d.accel} source={d.source} detail={d.detail}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Boot a cluster, print READY, keep it until SIGINT/SIGTERM (or --hold 0: exit)."""
    with Cluster(_topology(args), accel=args.accel) as cluster:
        if args.module:
            cluster.load_module()
        print(
            f"READY run_id={cluster.run_id} netns={cluster.netns.name} "
            f"logdir={cluster.logdir} boot_s="
            + ",".join(f"{v.name}:{v.boot_seconds:.1f}" for v in cluster.vms),
            flush=True,
        )
        if args.hold:
            signal.pause()
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
    cluster = Cluster(topo, accel=args.accel)
    session = f"p2pkp-{cluster.run_id}"
    try:
        cluster.create_network()
        py = shlex.quote(sys.executable)
        env = f"PYTHONPATH={shlex.quote(str(project_root() / 'tools'))}"
        panes = []
        for g in topo.guests:
            topo_arg = shlex.quote(args.topology) if args.topology else f"--vms {args.vms}"
            topo_arg = f"--topology {topo_arg}" if args.topology else topo_arg
            panes.append(
                f"{env} {py} -m p2pkpvm guest {topo_arg} --name {g.name} "
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
    cluster = Cluster(topo, run_id=args.run_id, logdir=Path(args.logdir))
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
    return run_demo(accel=args.accel, size=args.size)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m p2pkpvm",
        description="P2PKP VM harness (virtme-ng guests on a private "
        "bridge in a network namespace)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log harness steps")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("probe-kvm", help="print the KVM/TCG decision")
    s.add_argument("--no-cache", action="store_true", help="probe again")
    s.set_defaults(fn=cmd_probe_kvm)

    def cluster_opts(s: argparse.ArgumentParser) -> None:
        s.add_argument("--vms", type=int, default=2, help="number of guests (default 2)")
        s.add_argument("--topology", help="topology name/file (overrides --vms)")
        s.add_argument("--accel", choices=("kvm", "tcg"), default=None)

    s = sub.add_parser("up", help="boot a cluster and hold it until SIGINT/SIGTERM")
    cluster_opts(s)
    s.add_argument("--module", action="store_true", help="insmod p2pkp.ko in every guest")
    s.add_argument("--hold", type=int, default=1, help="0: tear down right after READY")
    s.set_defaults(fn=cmd_up)

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
    add_lossbench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    if os.environ.get("P2PKP_DEBUG"):
        logging.getLogger().setLevel(logging.DEBUG)
    try:
        rc: int = args.fn(args)
    except HarnessError as exc:
        print(f"p2pkpvm {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"p2pkpvm {args.cmd}: interrupted; torn down", file=sys.stderr)
        return 130
    return rc
