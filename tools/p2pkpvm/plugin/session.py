"""One cluster per pytest session: reuse, health checks, replacement, per-test dmesg."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from p2pkpvm.cluster.cluster import Cluster, ClusterView, run_parallel
from p2pkpvm.errors import CommandTimeout, GuestDied, HarnessError
from p2pkpvm.kernel.choice import KernelChoice, stock
from p2pkpvm.net.netns import list_namespaces
from p2pkpvm.net.topology import Topology
from p2pkpvm.vm import crash
from p2pkpvm.vm.machine import VM
from p2pkpvm.vm.module import ensure_module

log = logging.getLogger(__name__)


@dataclass
class DmesgCheck:
    """What one guest's kernel log said during one test."""

    vm: str
    text: str
    findings: list[crash.CrashReport]
    died: bool


@dataclass
class ClusterManager:
    accel: str | None = None
    boot_timeout: float = 420.0
    cluster: Cluster | None = None
    boots: int = 0
    replacements: list[str] = field(default_factory=list)
    boot_seconds: list[tuple[str, float]] = field(default_factory=list)  # (guest, s)
    _reported: dict[str, int] = field(default_factory=dict)
    _crashed: set[str] = field(default_factory=set)
    boot_error: str | None = None
    kernel: KernelChoice = field(default_factory=stock)
    attached: bool = False  # the cluster belongs to a `vm-up` process: never closed here
    accel_used: str = ""  # what the clusters of this session ran on (kvm or tcg)

    def _new_cluster(self, topology: Topology) -> Cluster:
        return Cluster(
            topology, accel=self.accel, kernel=self.kernel, boot_timeout=self.boot_timeout
        )

    def view(self, topology: Topology, load: bool = False, prelude: str = "") -> ClusterView:
        """A healthy cluster covering topology (booting or rebooting when needed), each of
        its guests running the current p2pkp.ko build (loaded first when `load`), its dmesg
        marked and `prelude` (shell: the test's own setup) run: one console round per
        healthy guest."""
        if self.attached and self.cluster is not None:
            if not self.cluster.topology.covers(topology):
                raise HarnessError(
                    f"the attached cluster ({self.cluster.topology.name}, "
                    f"{len(self.cluster.vms)} guests) does not cover topology "
                    f"{topology.name}: start `make vm-up` with more guests"
                )
        elif self.cluster is not None and not self.cluster.topology.covers(topology):
            log.info(
                "topology %s not covered by %s: rebooting",
                topology.name,
                self.cluster.topology.name,
            )
            self.close()
        if self.boot_error is not None:
            raise HarnessError(
                f"not retrying: the cluster failed earlier in this session: {self.boot_error}"
            )
        if self.cluster is None:
            if self.attached:
                raise HarnessError("the attached cluster was closed")
            cluster = self._new_cluster(topology)
            try:
                cluster.start()
            except HarnessError as exc:
                self.boot_error = f"{topology.name}: {exc}"
                raise
            self.cluster = cluster
            self.boots += 1
            self.boot_seconds += [(vm.name, vm.boot_seconds or 0.0) for vm in cluster.vms]
        self.accel_used = self.cluster.accel
        view = ClusterView(self.cluster, topology)
        # Probe every guest at once; replace (boot) the ones that need it, one after another.
        whys = run_parallel(
            lambda vm: self._why_replace(vm, load, prelude), "health check", view.vms
        )
        replaced = []
        for vm, why in zip(view.vms, whys, strict=True):
            if why:
                log.warning("%s %s: replacing it", vm.name, why)
                self._replace(vm.name)
                replaced.append(vm.name)
        view = ClusterView(self.cluster, topology)
        fresh = [vm for vm in view.vms if vm.name in replaced]
        if fresh:
            run_parallel(lambda vm: self._prepare(vm, load, prelude), "insmod, dmesg mark", fresh)
        for vm in view.vms:
            self._reported[vm.name] = 0
        return view

    @staticmethod
    def _prepare(vm: VM, load: bool, prelude: str) -> None:
        """A fresh dmesg mark (what the module's (re)load logs belongs to the test), the
        prelude, then the current p2pkp.ko build (loaded when `load`)."""
        before = vm.mark_dmesg_script() + (f" && {prelude}" if prelude else "")
        ensure_module(vm, load=load, before=before)

    def _why_replace(self, vm: VM, load: bool, prelude: str) -> str:
        """Why vm must be replaced before the next test ("" when it is healthy, and then
        prepared: see _prepare)."""
        if not vm.alive and vm.dead_reason is not None:
            self._crashed.discard(vm.name)  # replaced, whatever killed it
            return f"is dead ({vm.dead_reason})"
        if vm.name in self._crashed:
            self._crashed.discard(vm.name)
            return "had a kernel crash signature"
        if vm.alive:
            try:
                # The probe is useful work: a rebuilt p2pkp.ko is reloaded where one is loaded
                # (the fast loop of `vm-up` + --attach), loaded when the test needs it, and
                # the dmesg marked, in one console round.
                try:
                    self._prepare(vm, load, prelude)
                except CommandTimeout:
                    # the console recovered (a previous test left a command running)
                    self._prepare(vm, load, prelude)
                return ""
            except GuestDied:
                pass
        return f"is dead ({vm.dead_reason})"

    def _replace(self, name: str) -> None:
        assert self.cluster is not None
        self.replacements.append(name)
        try:
            vm = self.cluster.replace(name)
            self.boot_seconds.append((vm.name, vm.boot_seconds or 0.0))
        except HarnessError as exc:
            self.boot_error = f"replacing {name}: {exc}"
            raise

    def collect(
        self, view: ClusterView, before: Mapping[str, str] | None = None
    ) -> list[DmesgCheck]:
        """Each guest's kernel log since mark() and the crash signatures in it; before[name]
        (shell, e.g. a test's cleanup) runs first on that guest, in the same console round."""

        def check(vm: VM) -> DmesgCheck:
            died = not vm.alive
            text = ""
            if not died:
                try:
                    text = vm.dmesg_since_mark((before or {}).get(vm.name, ""))
                except (GuestDied, CommandTimeout):
                    died = True
            if died:
                text = vm.kernel_log()  # host-side copy of the console, survives the guest
            return DmesgCheck(vm.name, text, crash.scan(text), died)

        return run_parallel(check, "dmesg check", view.vms)

    def new_findings(self, checks: list[DmesgCheck]) -> list[DmesgCheck]:
        """Checks with findings not reported yet for this test (call vs teardown)."""
        fresh = []
        for c in checks:
            seen = self._reported.get(c.vm, 0)
            if len(c.findings) > seen:
                fresh.append(DmesgCheck(c.vm, c.text, c.findings[seen:], c.died))
                self._reported[c.vm] = len(c.findings)
                self._crashed.add(c.vm)
        return fresh

    def kmemleak_check(self) -> list[DmesgCheck]:
        """Scan kmemleak in every live guest, all at once (kernels with kmemleak only);
        return the guests with leak records. Records are cleared after reading, so each is
        reported once."""
        if self.cluster is None or not self.kernel.kmemleak:
            return []
        vms = [vm for vm in self.cluster.vms if vm.alive]
        texts = run_parallel(kmemleak_scan, "kmemleak scan", vms)
        out = []
        for vm, text in zip(vms, texts, strict=True):
            findings = [f for f in crash.scan(text) if f.kind == "kmemleak"]
            if findings:
                out.append(DmesgCheck(vm.name, text, findings, False))
        return out

    def close(self) -> list[str]:
        """Tear the cluster down; return what of it is still there (should be nothing)."""
        if self.cluster is None:
            return []
        cluster, self.cluster = self.cluster, None
        if self.attached:
            return []  # the `vm-up` process owns it
        ns = cluster.netns.name
        pids = cluster.netns.pids() if cluster.netns.created else []
        cluster.close()
        return leftovers(ns, pids)


# An object is reported once it is unreferenced in a scan and older than 5 s: scan twice,
# 5 s apart (kmemleak's minimum age), then read and clear.  No file (stock): nothing.
KMEMLEAK_SCAN = (
    "f=/sys/kernel/debug/kmemleak; "
    "[ -e $f ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null; "
    "if [ -e $f ]; then echo scan > $f && sleep 5 && echo scan > $f && cat $f "
    "&& echo clear > $f; fi"
)


def kmemleak_scan(vm: VM) -> str:
    """The kmemleak records of one guest ("" when the scan could not run: it is logged)."""
    try:
        return vm.run(KMEMLEAK_SCAN, timeout=60).output
    except (GuestDied, CommandTimeout) as exc:
        log.warning("%s: kmemleak scan failed: %s", vm.name, exc)
        return ""


def leftovers(ns: str, pids: list[int]) -> list[str]:
    """What remains of a run whose namespace was `ns` and processes `pids`."""
    left = [f"network namespace {ns}"] if ns in list_namespaces() else []
    left += [f"process {pid}" for pid in pids if Path(f"/proc/{pid}").exists()]
    return left


def crash_message(checks: list[DmesgCheck]) -> str:
    parts = []
    for c in checks:
        state = "guest died" if c.died else "guest alive"
        parts.append(
            f"[{c.vm}] kernel crash signature(s) ({state}):\n" + crash.summarize(c.findings)
        )
    return "\n\n".join(parts)


def per_test_dir(logdir: Path, nodeid: str) -> Path:
    return logdir / "tests" / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[:150]


class CrashDetected(HarnessError):
    """A kernel crash signature appeared in a guest during a test."""
