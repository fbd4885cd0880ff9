"""Session bookkeeping without VMs: crash findings per test, log dirs, leftovers, ns names."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from p2pkpvm.errors import CommandTimeout
from p2pkpvm.kernel.choice import KernelChoice
from p2pkpvm.net.netns import NS_PREFIX, unique_ns_name
from p2pkpvm.plugin.session import (
    ClusterManager,
    DmesgCheck,
    crash_message,
    leftovers,
    per_test_dir,
)
from p2pkpvm.vm import crash

PANIC = """[   20.1] sysrq: Trigger a crash
[   20.1] Kernel panic - not syncing: sysrq triggered crash
[   20.1] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2
[   20.1] Call Trace:
[   20.1]  <TASK>
[   20.1]  dump_stack_lvl+0x44/0x5c
[   20.1]  panic+0x118/0x2ed
[   20.1]  sysrq_handle_crash+0x16/0x20
[   20.1]  </TASK>
"""


def test_findings_reported_once_per_test() -> None:
    mgr = ClusterManager()
    findings = crash.scan(PANIC)
    assert findings, "the crash scanner found nothing in a real panic"
    check = DmesgCheck("vm2", PANIC, findings, died=True)
    fresh = mgr.new_findings([check])
    assert [c.vm for c in fresh] == ["vm2"]
    assert mgr.new_findings([check]) == []  # teardown sees the same text: nothing new
    msg = crash_message(fresh)
    assert "[vm2]" in msg and "guest died" in msg and "sysrq" in msg.lower()


def test_clean_dmesg_has_no_findings() -> None:
    text = "[    1.0] p2pkp: loaded, family 12, wire version 1\n[    1.1] hello\n"
    assert crash.scan(text) == []


def test_per_test_dir_is_a_safe_name(tmp_path: Path) -> None:
    d = per_test_dir(tmp_path, "vmtests/test_x.py::test_y[a/b c]")
    assert d.parent == tmp_path / "tests" and "/" not in d.name and " " not in d.name


def test_leftovers_reports_live_processes() -> None:
    assert leftovers("p2pkp-does-not-exist", [os.getpid()]) == [f"process {os.getpid()}"]
    assert leftovers("p2pkp-does-not-exist", []) == []


def test_unique_ns_names() -> None:
    names = {unique_ns_name() for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(NS_PREFIX) for n in names)


DATA = Path(__file__).parent / "data" / "crash"


@dataclass
class _Out:
    output: str


class _FakeVM:
    """Answers the kmemleak scan with a captured record; all scans must overlap in time."""

    def __init__(self, name: str, text: str, barrier: threading.Barrier | None, alive: bool = True):
        self.name, self.text, self.barrier, self.alive = name, text, barrier, alive

    def run(self, cmd: str, timeout: float = 30.0) -> _Out:
        assert "kmemleak" in cmd
        if self.barrier is not None:
            self.barrier.wait(timeout=5)  # BrokenBarrierError if the scans ran one by one
        if self.text == "timeout":
            raise CommandTimeout(self.name, cmd, "timed out", "")
        return _Out(self.text)


def test_kmemleak_scans_run_at_once_and_report_leaks() -> None:
    """kmemleak takes ~15 s per debug guest; the guests are scanned in parallel."""
    record = (DATA / "debug-kmemleak-record.log").read_text()
    barrier = threading.Barrier(3)
    vms = [
        _FakeVM("vm1", "", barrier),
        _FakeVM("vm2", record, barrier),
        _FakeVM("vm3", "timeout", barrier),  # logged, not a finding
        _FakeVM("vm4", record, None, alive=False),  # dead guests are not scanned
    ]
    mgr = ClusterManager()
    mgr.kernel = KernelChoice("debug", Path("bzImage"), Path("p2pkp.ko"), kmemleak=True)
    mgr.cluster = cast(Any, type("C", (), {"vms": vms})())
    found = mgr.kmemleak_check()
    assert [c.vm for c in found] == ["vm2"]
    assert found[0].findings[0].kind == "kmemleak"
    mgr.kernel = KernelChoice("stock", Path("vmlinuz"), Path("p2pkp.ko"))
    assert mgr.kmemleak_check() == []  # stock kernels have no kmemleak: no scan
