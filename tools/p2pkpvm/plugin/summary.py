"""The summary at the end of a VM run, in the style of kunit's: accelerator, boots and
replacements, boot times, and where the time went (per stage)."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

from p2pkpvm.plugin.session import ClusterManager
from p2pkpvm.vm.qemu import qemu_version


@dataclass
class RunSummary:
    t0: float = field(default_factory=time.monotonic)
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    used_vms: bool = False
    vm_tests: int = 0
    tests: int = 0

    def stage(self, name: str, seconds: float) -> None:
        self.stages[name] += seconds

    def start_tests(self, vm_tests: int, tests: int) -> None:
        self.vm_tests, self.tests = vm_tests, tests

    def render(self, mgr: ClusterManager) -> str:
        accel = mgr.accel_used or mgr.accel or "?"
        boots = [s for _, s in mgr.boot_seconds]
        lines = [
            f"[p2pkp] accel: {accel}, kernel: {mgr.kernel.label}, {qemu_version()}"
            + (", attached cluster" if mgr.attached else ""),
            f"[p2pkp] tests: {self.tests} selected, {self.vm_tests} on guests; clusters booted: "
            f"{mgr.boots}, guests replaced: {len(mgr.replacements)}"
            + (f" ({', '.join(mgr.replacements)})" if mgr.replacements else ""),
        ]
        if boots:
            lines.append(
                f"[p2pkp] guest boot to shell: {len(boots)} boots, min {min(boots):.1f} s, "
                f"max {max(boots):.1f} s"
            )
        # Stages measured outside pytest (make vm-test: deps, build) come from the environment.
        for name in ("deps", "build"):
            env = os.environ.get(f"P2PKP_STAGE_{name.upper()}_S")
            if env:
                self.stage(name, float(env))
        wall = time.monotonic() - self.t0
        order = ("deps", "build", "attach", "boot", "unit tests", "tests", "teardown")
        parts = [f"{n} {self.stages[n]:.1f}s" for n in order if self.stages.get(n)]
        lines.append(f"[p2pkp] time per stage: {', '.join(parts)}; pytest wall {wall:.1f}s")
        return "\n".join(lines)
