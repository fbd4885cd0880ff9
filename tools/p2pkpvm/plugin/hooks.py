"""The pytest plugin (entry point `p2pkp`): one cluster per session, per-test dmesg and crash
checks, deadlines, the module kept current, long tests opt-in, a summary at the end.

Markers: @pytest.mark.topology("pair"|"trio"|"quad"...) (default: --topology, "quad"),
@pytest.mark.timeout_s(N) (default 300 s, enforced with SIGALRM in the main thread),
@pytest.mark.long (deselected unless --long or a -m expression names it),
@pytest.mark.expect_crash.

Options: --accel, --topology, --pin 6.1|6.12 (configs/kernel-pin.yaml), --kernel
stock|lean|debug, --attach (use the cluster of `make vm-up`
instead of booting one), --long.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from p2pkpvm.cluster.cluster import ClusterView
from p2pkpvm.cluster.remote import AttachedCluster, default_socket
from p2pkpvm.errors import HarnessError
from p2pkpvm.kernel.choice import KERNELS
from p2pkpvm.kernel.choice import select as select_kernel
from p2pkpvm.kernel.pin import load_pin
from p2pkpvm.net.topology import Topology, load_topology
from p2pkpvm.plugin.session import ClusterManager, CrashDetected, crash_message, per_test_dir
from p2pkpvm.plugin.summary import RunSummary
from p2pkpvm.scenario.scenario import Scenario

DEFAULT_TIMEOUT_S = 300.0
DEBUG_BOOT_TIMEOUT_S = 300.0  # scaled by the debug kernel's time_scale (x6: 30 min)
MANAGER_KEY = pytest.StashKey[ClusterManager]()
SUMMARY_KEY = pytest.StashKey[RunSummary]()
VIEW_KEY = pytest.StashKey[ClusterView]()
SigHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
SIGTERM_KEY = pytest.StashKey[SigHandler]()  # the SIGTERM handler before the run's
SCN_READY_KEY = pytest.StashKey[bool]()  # the health probe made the scenario directory
SCN_KEY = pytest.StashKey[Scenario]()  # the test's scenario (cleaned with the dmesg check)
CHECKED_KEY = pytest.StashKey[bool]()  # the dmesg check after the call ran


class DeadlineExceeded(HarnessError):
    """The test ran past its timeout_s deadline."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("p2pkp", "P2PKP VM harness")
    group.addoption(
        "--accel",
        choices=("kvm", "tcg"),
        default=None,
        help="force KVM or TCG (default: probe KVM, cached per host boot)",
    )
    group.addoption(
        "--topology", default="quad", help="default topology for tests without a topology marker"
    )
    group.addoption(
        "--pin",
        default=None,
        help="kernel pin of configs/kernel-pin.yaml by name, e.g. 6.12 (default: the file's "
        "default)",
    )
    group.addoption(
        "--kernel",
        default="stock",
        choices=KERNELS,
        help="kernel to boot: the pinned stock image, the lean build of `make lean-kernel` or "
        "the sanitizer build of `make kernel` (module from out/<kernel>-module: "
        "`make KERNEL=<kernel> <kernel>-module`)",
    )
    # A flag, not an option with an optional value: `pytest --attach vmtests/x.py` (as the
    # README types it) must not read the test path as the socket.
    group.addoption(
        "--attach",
        action="store_true",
        help="run on the cluster `make vm-up` keeps running instead of booting one; a "
        "rebuilt p2pkp.ko is reloaded before each test",
    )
    group.addoption(
        "--attach-socket",
        default=str(default_socket()),
        metavar="SOCKET",
        help="the socket of that cluster (default out/cluster.sock)",
    )
    group.addoption(
        "--long", action="store_true", help="also run the long campaigns (marker 'long')"
    )


def pytest_configure(config: pytest.Config) -> None:
    # The pin of this run: it travels with mgr.kernel (KernelChoice.pin) to every cluster.
    try:
        pin = load_pin(config.getoption("pin"))
    except HarnessError as exc:
        raise pytest.UsageError(f"--pin: {exc}") from exc
    mgr = ClusterManager(accel=config.getoption("accel"))
    summary = RunSummary()
    if config.getoption("attach"):
        t0 = time.monotonic()
        cluster = AttachedCluster(Path(config.getoption("attach_socket")))
        if cluster.kernel.pin and cluster.kernel.pin != pin.name and config.getoption("pin"):
            raise pytest.UsageError(
                f"--pin {pin.name}: the attached cluster runs pin {cluster.kernel.pin}"
            )
        mgr.cluster = cluster
        mgr.kernel = cluster.kernel
        mgr.attached = True
        summary.stage("attach", time.monotonic() - t0)
    elif config.getoption("kernel") != "stock":
        mgr.kernel = select_kernel(config.getoption("kernel"), pin)
        mgr.boot_timeout = DEBUG_BOOT_TIMEOUT_S  # x kernel.time_scale in Cluster
    else:
        mgr.kernel = select_kernel("stock", pin)
    config.stash[MANAGER_KEY] = mgr
    config.stash[SUMMARY_KEY] = summary
    logging.getLogger("p2pkpvm").setLevel(logging.INFO)
    if threading.current_thread() is threading.main_thread():
        config.stash[SIGTERM_KEY] = signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a CI deadline, `kill`) ends the run as Ctrl-C does: pytest stops after the
    current step, tears the session down (the guests) and exits 128 + SIGTERM.  A Cluster's
    own handler closes its guests first, then calls this one.  Without it SIGTERM raised
    SystemExit in whatever ran, which pytest counts as one test's error and goes on from."""
    pytest.exit("SIGTERM: run stopped, guests torn down", 128 + signum)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tear the session cluster down and check that nothing of it remains."""
    mgr = session.config.stash.get(MANAGER_KEY, None)
    if mgr is None:
        return
    t0 = time.monotonic()
    left = mgr.close()
    session.config.stash[SUMMARY_KEY].stage("teardown", time.monotonic() - t0)
    if left:
        print(f"\np2pkp: teardown left behind: {', '.join(left)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    mgr = config.stash.get(MANAGER_KEY, None)
    if mgr is not None:
        mgr.close()
    previous = config.stash.get(SIGTERM_KEY, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    mgr = config.stash.get(MANAGER_KEY, None)
    summary = config.stash.get(SUMMARY_KEY, None)
    if mgr is None or summary is None or not summary.used_vms:
        return
    text = summary.render(mgr)
    terminalreporter.write_sep("=", "p2pkp run summary")
    terminalreporter.write_line(text)


def _topology_name(item: pytest.Item) -> str:
    mark = item.get_closest_marker("topology")
    if mark is not None and mark.args:
        return str(mark.args[0])
    return str(item.config.getoption("topology"))


def _topology(item: pytest.Item) -> Topology:
    return load_topology(_topology_name(item))


def _uses_vms(item: pytest.Item) -> bool:
    return "cluster" in getattr(item, "fixturenames", ())


Rank = tuple[int, int, str]  # a topology's place: (-guests, topologies it covers, name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests opt-in; VM-less tests first, then grouped by topology from the largest, so
    that one cluster serves every test it covers (a 4-guest cluster serves pair and trio
    tests: a smaller topology never forces a second boot)."""
    markexpr = str(config.getoption("markexpr") or "")
    if not config.getoption("long") and "long" not in markexpr:
        keep = [i for i in items if i.get_closest_marker("long") is None]
        dropped = [i for i in items if i.get_closest_marker("long") is not None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
    names = {_topology_name(i) for i in items if _uses_vms(i)}
    tops = {name: load_topology(name) for name in names}
    # Among topologies of one size, those that cover more of the others come later: they
    # go on serving the smaller ones (scale, whose guests hold receivers, covers no other
    # topology, so it comes before quad, which then serves trio and pair).
    covers = {n: sum(t.covers(o) for m, o in tops.items() if m != n) for n, t in tops.items()}

    def rank(name: str) -> Rank:
        return (-len(tops[name].guests), covers[name], name)

    # Each topology's tests run right after those of the topology that serves it (its host:
    # the largest that covers it, itself when none does), so that one the host does not
    # cover (jumbo: a pair at another MTU) does not come between quad and pair.
    host = {
        n: max(
            (m for m, o in tops.items() if o.covers(t)),
            key=lambda m: (len(tops[m].guests), covers[m], m),
        )
        for n, t in tops.items()
    }

    def key(item: pytest.Item) -> tuple[int, int, Rank, bool, Rank]:
        if not _uses_vms(item):
            return (0, 0, (0, 0, ""), False, (0, 0, ""))
        name = _topology_name(item)
        # Tests that crash a guest on purpose go last: the guest the last one kills is never
        # booted again.
        crash = 1 if item.get_closest_marker("expect_crash") is not None else 0
        return (1, crash, rank(host[name]), name != host[name], rank(name))

    items.sort(key=key)


def pytest_runtestloop(session: pytest.Session) -> None:
    session.config.stash[SUMMARY_KEY].start_tests(
        sum(1 for i in session.items if _uses_vms(i)), len(session.items)
    )


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterView]:
    """The guests of this test's topology: booted once per session (or attached), healthy,
    running the current p2pkp.ko build when one is loaded (ClusterManager.view), dmesg
    marked."""
    mgr = request.config.stash[MANAGER_KEY]
    summary = request.config.stash[SUMMARY_KEY]
    t0 = time.monotonic()
    boots = mgr.boots + len(mgr.replacements)
    # A test with a scenario gets its directory made by the health probe, in the same
    # console round (fixture scn then only takes it).
    prelude = ""
    if "scn" in request.fixturenames:
        prelude = Scenario([], request.node.name).setup_script()
        request.node.stash[SCN_READY_KEY] = True
    view = mgr.view(_topology(request.node), load=_loads_module(request), prelude=prelude)
    if mgr.boots + len(mgr.replacements) != boots:
        summary.stage("boot", time.monotonic() - t0)
    summary.used_vms = True
    request.node.stash[VIEW_KEY] = view
    yield view
    # Crashes during teardown of the test's own fixtures are reported as a teardown error
    # (on the test's current view: heal() may have replaced guests).  When every fixture of
    # the test is the plugin's and the check after the call ran (it also cleaned the
    # scenario), nothing has touched the guests since: one console round per guest less.
    if request.node.stash.get(CHECKED_KEY, False) and _only_plugin_fixtures(request.node):
        return
    checks = mgr.collect(request.node.stash[VIEW_KEY])
    fresh = mgr.new_findings(checks)
    if fresh and request.node.get_closest_marker("expect_crash") is None:
        raise CrashDetected(crash_message(fresh))


@pytest.fixture
def heal(request: pytest.FixtureRequest, cluster: ClusterView) -> Callable[[], ClusterView]:
    """heal() replaces the test's dead guests now (not before the next test) and returns the
    healthy view, whose dmesg is marked afresh."""

    def again() -> ClusterView:
        mgr = request.config.stash[MANAGER_KEY]
        view = mgr.view(_topology(request.node), load=_loads_module(request))
        request.node.stash[VIEW_KEY] = view
        return view

    return again


@pytest.fixture(scope="module", autouse=True)
def kmemleak(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test module (kernels with kmemleak): scan, and fail on any leak record."""
    yield
    fresh = request.config.stash[MANAGER_KEY].kmemleak_check()
    if fresh:
        raise CrashDetected("kmemleak after this module:\n" + crash_message(fresh))


def _loads_module(request: pytest.FixtureRequest) -> bool:
    """Whether the test asked for the module (fixture p2pkp, also through scn)."""
    return "p2pkp" in request.fixturenames


@pytest.fixture
def p2pkp(cluster: ClusterView) -> ClusterView:
    """The current build of the module loaded in every guest of the test's topology (the
    cluster fixture loads it with its health probe, in the same console round)."""
    return cluster


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise DeadlineExceeded("test exceeded its deadline (timeout_s)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    mark = item.get_closest_marker("timeout_s")
    timeout = float(mark.args[0]) if mark is not None and mark.args else DEFAULT_TIMEOUT_S
    mgr = item.config.stash.get(MANAGER_KEY, None)
    if mgr is not None:
        timeout *= mgr.kernel.time_scale
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.monotonic()
    try:
        try:
            return (yield)
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(f"{item.nodeid}: no result within {timeout:.0f} s") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        summary = item.config.stash.get(SUMMARY_KEY, None)
        if summary is not None:
            on_vms = _uses_vms(item) or "vmtests" in item.path.parts
            summary.stage("tests" if on_vms else "unit tests", time.monotonic() - t0)
        _check_guests(item)


def _only_plugin_fixtures(item: pytest.Item) -> bool:
    """Whether every fixture item uses is defined by a plugin (this one, pytest's), none by
    a test module (those may touch the guests in their teardown)."""
    info: Any = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return all(d.baseid == "" for defs in info.name2fixturedefs.values() for d in defs)


def _check_guests(item: pytest.Item) -> None:
    """Save each guest's dmesg for this test; fail the test on a crash signature.  The
    test's scenario is cleaned first in the same console round (its jobs killed, its
    directory removed), so that what killing them does to the kernel is the test's."""
    view = item.stash.get(VIEW_KEY, None)
    if view is None:
        return
    mgr = item.config.stash[MANAGER_KEY]
    s = item.stash.get(SCN_KEY, None)
    before: dict[str, str] = {}
    if s is not None and not s.done:
        targets = s.cleanup_guests()
        # only on the very guests the jobs ran on (heal() may have replaced one since: the
        # scenario's own teardown then reports that guest)
        current = {vm.name: vm for vm in view.vms}
        if all(current.get(vm.name) is vm for vm in targets):
            before = {vm.name: s.cleanup_script(vm) for vm in targets}
    checks = mgr.collect(view, before)
    if s is not None and before:
        s.cleaned()
    item.stash[CHECKED_KEY] = True
    outdir = per_test_dir(view.logdir, item.nodeid)
    outdir.mkdir(parents=True, exist_ok=True)
    for c in checks:
        (outdir / f"{c.vm}.dmesg").write_text(c.text)
        if c.text.strip():
            item.add_report_section("call", f"dmesg {c.vm}", c.text[-4000:])
    item.user_properties.append(("logdir", str(outdir)))
    fresh = mgr.new_findings(checks)
    if fresh and item.get_closest_marker("expect_crash") is None:
        raise CrashDetected(crash_message(fresh))


@pytest.fixture
def scn(
    request: pytest.FixtureRequest, cluster: ClusterView, p2pkp: ClusterView
) -> Iterator[Scenario]:
    """A per-test directory on every guest; the test's background jobs killed afterwards."""
    s = Scenario(cluster.vms, request.node.name)
    if not request.node.stash.get(SCN_READY_KEY, False):
        s.setup()
    request.node.stash[SCN_KEY] = s
    yield s
    s.teardown()
