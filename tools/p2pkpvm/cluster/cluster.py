"""A cluster of guests from a topology: namespace + bridge + taps, parallel boot, teardown.

Teardown runs on exit, exception, SIGINT, SIGTERM and at interpreter exit; it is idempotent
and leaves no qemu, tap, bridge or namespace of the run behind.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from p2pkpvm.errors import HarnessError, MtuMismatch
from p2pkpvm.kernel.choice import KernelChoice, check_vermagic, stock
from p2pkpvm.net.impair import apply as apply_link
from p2pkpvm.net.mtu import mtu_mismatch, mtu_probe
from p2pkpvm.net.netns import Netns, sweep_orphans
from p2pkpvm.net.receivers import Receiver, plan, setup_script
from p2pkpvm.net.topology import GuestSpec, Topology
from p2pkpvm.paths import GUEST_SHELL, out_dir, project_root
from p2pkpvm.vm.kvm import decide_accel
from p2pkpvm.vm.machine import VM, guest_env, vng_path
from p2pkpvm.vm.module import ensure_module
from p2pkpvm.vm.qemu import uso_device_options
from p2pkpvm.vm.vng import DEFAULT_APPEND, NicSpec, VngSpec, guest_mac

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"


class Cluster:
    """Guests of `topology` on one bridge in a private network namespace."""

    def __init__(
        self,
        topology: Topology,
        accel: str | None = None,
        kernel: KernelChoice | None = None,
        logdir: Path | None = None,
        boot_timeout: float = 420.0,
        run_id: str | None = None,
        uso: bool | None = None,
        snooping: bool = False,
    ) -> None:
        """kernel: what the guests boot and the module built for it (default: the default
        pin's stock kernel and its p2pkp.ko); its time_scale multiplies every deadline
        (boot, reachability, guest commands).  uso: virtio-net USO forced on or off (QEMU
        8.2+), None: QEMU's default.  snooping: the receiver bridges snoop IGMP/MLD
        (net/receivers.py setup_script)."""
        self.topology = topology
        self.snooping = snooping
        self.run_id = run_id or new_run_id()
        self.logdir = logdir or out_dir() / self.run_id
        self.kernel = kernel or stock()
        self.boot_timeout = boot_timeout
        self.uso = uso
        self._nic_options = ""
        self.time_scale = self.kernel.time_scale
        self._accel_forced = accel
        self.accel = ""
        self.netns = Netns()
        self.vms: list[VM] = []
        # receivers as namespaces inside guests (topology `receivers:`), r1 first
        self.receivers: list[Receiver] = plan(topology.guests, self.run_id)
        self._closed = False
        self._lock = threading.Lock()

    # ---- access -------------------------------------------------------------------------
    def __getitem__(self, key: int | str) -> VM:
        return guest_named(self.vms, key, "cluster")

    def __iter__(self) -> Iterator[VM]:
        return iter(self.vms)

    def __len__(self) -> int:
        return len(self.vms)

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self, load_module: bool = False) -> None:
        """Create the network, boot all guests in parallel, address them, check reachability."""
        try:
            self.create_network()
            self.vms = [self._make_vm(i, g) for i, g in enumerate(self.topology.guests)]
            t0 = time.monotonic()
            self._parallel(lambda vm: self._boot(vm), "boot")
            self.wait_reachable(timeout=120.0)
            self.apply_links()
            log.info(
                "cluster %s (%d guests, %s) up and connected in %.1f s; logs in %s",
                self.topology.name,
                len(self.vms),
                self.accel,
                time.monotonic() - t0,
                self.logdir,
            )
            if load_module:
                self.load_module()
        except BaseException:
            self.close()
            raise

    def create_network(self) -> None:
        """Decide the accelerator and create namespace, bridge and one tap per guest."""
        _register(self)
        self.logdir.mkdir(parents=True, exist_ok=True)
        vng = vng_path()
        self.accel = decide_accel(
            self.kernel.image, vng, guest_env(vng), forced=self._accel_forced
        ).accel
        self._nic_options = uso_device_options(self.uso)
        sweep_orphans()  # namespaces of killed runs (their qemu too)
        self.netns.create(len(self.topology.guests), mtu=self.topology.mtu)

    def attach_guest(self, netns: str, name: str, accel: str) -> VM:
        """Boot one guest of the topology in an existing namespace (made by another process)
        and wait until it reaches its peers. This process does not own the namespace."""
        _register(self)
        self.netns = Netns(name=netns)
        self.accel = accel
        index = [g.name for g in self.topology.guests].index(name)
        vm = self._make_vm(index, self.topology.guests[index])
        self.vms = [vm]
        self._boot(vm)
        self.apply_links([vm])
        return vm

    def _make_vm(self, index: int, g: GuestSpec) -> VM:
        spec = VngSpec(
            kernel=self.kernel.image,
            name=g.name,
            accel=self.accel,
            cpus=g.cpus,
            memory=g.memory,
            cwd=project_root(),
            shell=GUEST_SHELL,
            nics=(
                NicSpec(
                    tap=f"tap{index}",
                    mac=guest_mac(self.run_id, index),
                    device_options=self._nic_options,
                    mtu=self.topology.mtu,
                ),
            ),
            append=(*DEFAULT_APPEND, *self.kernel.append),
        )
        return VM(
            spec,
            self.logdir,
            netns=self.netns.name,
            ipv4=str(g.ipv4.ip),
            ipv6=str(g.ipv6.ip) if g.ipv6 else None,
            kernel=self.kernel,
        )

    def _boot(self, vm: VM) -> None:
        vm.start(self.boot_timeout * self.time_scale)
        with (self.logdir / "boot-times.log").open("a") as f:
            f.write(
                f"{time.strftime('%H:%M:%S')} {vm.name} shell after {vm.boot_seconds:.1f} s "
                f"({self.accel})\n"
            )
        g = self.topology.guest(vm.name)
        mac = vm.spec.nics[0].mac
        # Without udev (VngSpec.udev) nothing loads the NIC's driver: load it (a no-op when
        # built in or loaded).  With udev, udev may rename the NIC (enp0sN) despite
        # net.ifnames=0: find it by MAC, call it eth0.
        vm.run("modprobe -q virtio_net || test -d /sys/module/virtio_net", timeout=60)
        found = vm.wait_for(f"grep -l '^{mac}$' /sys/class/net/*/address", timeout=60)
        dev = found.output.split("/")[-2] if "/" in found.output else "eth0"
        if dev != "eth0":
            vm.run(f"ip link set {dev} down && ip link set {dev} name eth0", timeout=30)
        if self.kernel.verify_module:
            release = vm.run("uname -r", timeout=10).output.strip()
            check_vermagic(self.kernel.module, release, f"{vm.name} ({self.kernel.image})")
        cmd = f"ip link set lo up && ip link set eth0 up && ip addr add {g.ipv4} dev eth0"
        if g.ipv6 is not None:
            cmd += f" && ip -6 addr add {g.ipv6} dev eth0 nodad"
        # the NIC's MTU (QEMU's host_mtu), read back in the same console round
        cmd += f" && {mtu_probe('eth0')}"
        res = vm.run(cmd, timeout=30)
        wrong = mtu_mismatch(res.output, self.topology.mtu, "eth0")
        if wrong:
            raise MtuMismatch(vm.name, cmd, wrong, vm.full_tail())
        script = setup_script(g, self.receivers, self.topology.mtu, self.snooping)
        if script:
            # a file in the run's log folder (the guest sees the host's tree): kept for the
            # report, and no console line of kilobytes
            path = self.logdir / f"{vm.name}.receivers.sh"
            path.write_text(script)
            mine = sum(r.guest == vm.name for r in self.receivers)
            vm.run(f"sh {shlex.quote(str(path))}", timeout=30 + 2 * mine)

    def _parallel(
        self, fn: Callable[[VM], Any], what: str, vms: list[VM] | None = None
    ) -> list[Any]:
        return run_parallel(fn, what, self.vms if vms is None else vms)

    def wait_reachable(self, timeout: float, vms: list[VM] | None = None) -> None:
        """Every guest pings every other and its own receivers (IPv4, and IPv6 where
        configured) before timeout (x time_scale)."""
        t = int(timeout * self.time_scale)

        def check(vm: VM) -> None:
            others = [g for g in self.topology.guests if g.name != vm.name]
            peers = [str(g.ipv4.ip) for g in others]
            if vm.ipv6:
                peers += [str(g.ipv6.ip) for g in others if g.ipv6]
            # Its own receivers: the guests' pings prove the outer bridge up to each guest's
            # br0, these its bridge, veth pairs and namespaces (also after a replacement).
            # Every guest pinging every receiver cost 4 x 132 ping processes and about 70 s
            # of boot (scale, TCG).
            mine = [r for r in self.receivers if r.guest == vm.name]
            peers += [str(r.ipv4.ip) for r in mine]
            if vm.ipv6:
                peers += [str(r.ipv6.ip) for r in mine if r.ipv6]
            script = (
                f"for a in {' '.join(peers)}; do until ping -c1 -W1 -q $a >/dev/null "
                "2>&1; do sleep 0.2; done; done"
            )
            vm.run(
                f"timeout {t} sh -c {shlex.quote(script)} || "
                f"{{ echo 'not all peers answered within {t} s'; ip -br addr; false; }}",
                timeout=timeout + 15,
            )

        self._parallel(check, "reachability check", vms)

    def apply_links(self, vms: list[VM] | None = None) -> None:
        """Impair each guest's link as its topology says (after reachability: boot-time pings
        stay fast).  Guests with a clean link are left alone."""
        todo = [
            vm
            for vm in (self.vms if vms is None else vms)
            if not self.topology.guest(vm.name).link.clean
        ]
        if todo:
            self._parallel(
                lambda vm: apply_link(vm, self.topology.guest(vm.name).link),
                "link impairment",
                todo,
            )

    def load_module(self) -> None:
        """Every guest runs the current build of its kernel's p2pkp.ko (loaded or reloaded)."""
        self._parallel(ensure_module, "insmod")

    def replace(self, name: str) -> VM:
        """Kill guest `name` (if still running) and boot a fresh one on the same tap."""
        old = self[name]
        index = self.vms.index(old)
        old.kill()
        vm = self._make_vm(index, self.topology.guests[index])
        self.vms[index] = vm
        self._boot(vm)
        self.wait_reachable(timeout=120.0, vms=[vm])
        self.apply_links([vm])
        log.info("%s replaced (boot %.1f s)", name, vm.boot_seconds or -1)
        return vm

    def close(self) -> None:
        """Kill every guest, delete taps, bridge and namespace. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        errors: list[str] = []

        def kill(vm: VM) -> None:
            try:
                vm.kill()
            except Exception as exc:
                errors.append(f"{vm.name}: {exc}")

        with ThreadPoolExecutor(max_workers=max(len(self.vms), 1)) as pool:
            list(pool.map(kill, self.vms))
        try:
            self.netns.destroy()
        except Exception as exc:
            errors.append(f"netns {self.netns.name}: {exc}")
        _unregister(self)
        if errors:
            raise HarnessError("teardown incomplete: " + "; ".join(errors))


# ---- process-wide teardown on signals and exit -------------------------------------------
_live: list[Cluster] = []
_installed = False
_previous: dict[int, Any] = {}


G = TypeVar("G")
T = TypeVar("T")


def run_parallel(fn: Callable[[G], T], what: str, vms: Sequence[G]) -> list[T]:
    """fn on every guest in threads; results in vms' order; raise HarnessError listing every
    failure."""
    with ThreadPoolExecutor(max_workers=max(len(vms), 1)) as pool:
        futures = [(vm, pool.submit(fn, vm)) for vm in vms]
        errors = []
        results = []
        for vm, fut in futures:
            try:
                results.append(fut.result())
            except Exception as exc:
                errors.append((vm, exc))
    if len(errors) == 1:
        raise errors[0][1]
    if errors:
        raise HarnessError(
            f"{what} failed on {len(errors)} guests:\n" + "\n".join(f"{exc}" for _vm, exc in errors)
        )
    return results


def _register(cluster: Cluster) -> None:
    global _installed
    _live.append(cluster)
    if _installed:
        return
    _installed = True
    atexit.register(close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            _previous[sig] = signal.signal(sig, _on_signal)


def _unregister(cluster: Cluster) -> None:
    if cluster in _live:
        _live.remove(cluster)


def close_all() -> None:
    for cluster in list(_live):
        try:
            cluster.close()
        except HarnessError as exc:
            print(f"p2pkpvm: {exc}", file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    close_all()
    prev = _previous.get(signum)
    if callable(prev):
        prev(signum, frame)
    elif signum == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        sys.exit(128 + signum)


def guest_named(vms: list[VM], key: int | str, where: str) -> VM:
    """vms[key] for an index, else the guest called key."""
    if isinstance(key, int):
        return vms[key]
    for vm in vms:
        if vm.name == key:
            return vm
    raise KeyError(f"{where} has no guest {key!r} (guests: {[v.name for v in vms]})")


class ClusterView:
    """The guests of one topology inside a (possibly larger) booted cluster."""

    def __init__(self, cluster: Cluster, topology: Topology) -> None:
        self.cluster = cluster
        self.topology = topology
        self.vms: list[VM] = [cluster[g.name] for g in topology.guests]
        names = {g.name for g in topology.guests}
        self.receivers: list[Receiver] = [r for r in cluster.receivers if r.guest in names]

    def receiver(self, name: str) -> tuple[VM, Receiver]:
        """Receiver `name` (r1, r2, ...) and the guest it lives in."""
        for r in self.receivers:
            if r.name == name:
                return self[r.guest], r
        known = ", ".join(r.name for r in self.receivers) or "none"
        raise KeyError(f"topology {self.topology.name} has no receiver {name!r} ({known})")

    def __getitem__(self, key: int | str) -> VM:
        return guest_named(self.vms, key, f"topology {self.topology.name}")

    def __iter__(self) -> Iterator[VM]:
        return iter(self.vms)

    def __len__(self) -> int:
        return len(self.vms)

    @property
    def logdir(self) -> Path:
        return self.cluster.logdir
