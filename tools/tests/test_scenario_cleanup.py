"""A test's scenario is cleaned in one console round per guest: its jobs' process groups on
that guest only, then its directory; once the plugin ran that (with its dmesg check),
the fixture's teardown runs nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from p2pkpvm.scenario.scenario import Scenario
from tests.fakeguest import FakeGuest


@dataclass
class FakeJob:
    pid: int


def scenario() -> tuple[Scenario, FakeGuest, FakeGuest]:
    a, b = FakeGuest("vm1"), FakeGuest("vm2")
    s = Scenario(cast(Any, [a, b]), "test_x[16]")
    s.jobs += [(cast(Any, a), cast(Any, FakeJob(101))), (cast(Any, b), cast(Any, FakeJob(202)))]
    s.jobs.append((cast(Any, a), cast(Any, FakeJob(0))))  # never started: no pid to kill
    return s, a, b


def test_cleanup_script_kills_only_this_guests_jobs_then_removes_the_directory() -> None:
    s, a, b = scenario()
    sa, sb = s.cleanup_script(cast(Any, a)), s.cleanup_script(cast(Any, b))
    assert sa.startswith("kill -TERM -- -101 2>/dev/null; ") and "-202" not in sa
    assert sb.startswith("kill -TERM -- -202 2>/dev/null; ") and "-101" not in sb
    assert sa.endswith(f"umount -l {s.dir} 2>/dev/null; rm -rf {s.dir}")
    assert s.dir == "/tmp/p2pkp-test_x-16"


def test_teardown_after_cleaned_runs_nothing() -> None:
    s, a, b = scenario()
    s.cleaned()
    s.teardown()
    assert a.ran == [] and b.ran == [] and s.jobs == []


def test_teardown_without_plugin_cleans_every_guest() -> None:
    s, a, b = scenario()
    s.teardown()
    assert len(a.ran) == 1 and a.ran[0].startswith("kill -TERM -- -101 ")
    assert a.ran[0].endswith(f"rm -rf {s.dir}")
    assert len(b.ran) == 1 and b.ran[0].startswith("kill -TERM -- -202 ") and s.jobs == []
