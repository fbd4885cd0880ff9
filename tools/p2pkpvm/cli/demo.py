"""`make demo`: vm1 sends one file to vm2 and vm3 over AF_P2PKP; print sizes, sha256, syscalls."""

from __future__ import annotations

import re
import time

from p2pkpvm import paths
from p2pkpvm.cluster.cluster import Cluster
from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.choice import KernelChoice
from p2pkpvm.net.topology import load_topology
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import next_port, recv_cmd, start_receiver

SRC = "/tmp/p2pkp-demo/payload.bin"


def run_demo(accel: str | None, size: str, kernel: KernelChoice | None = None) -> int:
    """kernel: what the guests boot (default: the default pin's stock kernel)."""
    send = paths.SEND
    for tool in (paths.SEND, paths.RECV):
        if not tool.exists():
            raise HarnessError(f"{tool} is not built: run `make`")
    t0 = time.monotonic()
    print("booting 3 guests (vm1 sender, vm2 + vm3 receivers) ...", flush=True)
    with Cluster(load_topology("trio"), accel=accel, kernel=kernel) as cluster:
        cluster.load_module()
        vm1, vm2, vm3 = cluster.vms
        print(
            f"cluster up with p2pkp.ko loaded after {time.monotonic() - t0:.1f} s "
            f"({cluster.accel}); logs in {cluster.logdir}",
            flush=True,
        )
        vm1.run(f"mkdir -p /tmp/p2pkp-demo && head -c {size} /dev/urandom > {SRC}")
        jobs = []
        port = next_port()
        for vm in (vm2, vm3):
            vm.run("rm -rf /tmp/p2pkp-demo && mkdir -p /tmp/p2pkp-demo")
            jobs.append(start_receiver(vm, recv_cmd(port, SRC, host=vm.ipv4)))
        t1 = time.monotonic()
        sent = vm1.run(
            f"strace -f -c -o /tmp/p2pkp-demo/strace.txt {send} --verbose "
            f"--to {vm2.ipv4}:{port} --to {vm3.ipv4}:{port} {SRC}",
            timeout=600,
            check=False,
        )
        results = [job.wait(timeout=600) for job in jobs]
        elapsed = time.monotonic() - t1
        print(f"\n== p2pkp-send on vm1 (exit {sent.rc}, {elapsed:.1f} s wall incl. strace) ==")
        print(sent.output.rstrip())
        for vm, res in zip((vm2, vm3), results, strict=True):
            print(f"== p2pkp-recv on {vm.name} (exit {res.rc}) ==")
            for r in toolout.events(res.output, "received"):
                print(
                    f"received {r['path']} {r['size']} bytes from {r.get('from', '?')} "
                    f"in {int(r.get('duration_ns') or 0) / 1e6:.1f} ms, sha256 {r.get('sha256')}"
                )
            for e in toolout.errors(res.output):
                print(f"p2pkp-recv: {e.call} {e.arg}: {e.errno} ({e.message})")
        print("\n== size and sha256 on every guest ==")
        digests = {}
        for vm in cluster.vms:
            out = vm.run(f"stat -c %s {SRC} && sha256sum {SRC}", check=False).output.split()
            size_b = out[0] if out else "missing"
            digest = out[1] if len(out) > 1 else "missing"
            digests[vm.name] = digest
            print(f"{vm.name}: {size_b:>10} bytes  sha256 {digest}  {SRC}")
        print("\n== system calls of p2pkp-send (strace -f -c) ==")
        print(vm1.run("cat /tmp/p2pkp-demo/strace.txt").output.rstrip())
        ok = (
            sent.rc == 0
            and all(r.rc == 0 for r in results)
            and len(set(digests.values())) == 1
            and re.fullmatch(r"[0-9a-f]{64}", digests["vm1"]) is not None
        )
        print(
            f"\ndemo {'OK: both receivers hold an identical copy' if ok else 'FAILED'} "
            f"({time.monotonic() - t0:.1f} s total)"
        )
        return 0 if ok else 1
