"""pytest integration: one cluster per session, per-test dmesg + crash checks, deadlines.

Markers: @pytest.mark.topology("pair"|"trio"|"quad"...) (default: --topology, "quad"),
@pytest.mark.timeout_s(N) (default 300 s, enforced with SIGALRM in the main thread).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

from p2pkp_scenario import Scenario
from p2pkpvm.cluster import ClusterView, default_module
from p2pkpvm.kernels import KERNELS, MODULE_ENV
from p2pkpvm.kernels import select as select_kernel
from p2pkpvm.session import ClusterManager, CrashDetected, crash_message, per_test_dir
from p2pkpvm.topology import Topology, load_topology

DEFAULT_TIMEOUT_S = 300.0
DEBUG_BOOT_TIMEOUT_S = 300.0  # scaled by the debug kernel's time_scale (x6: 30 min)
MANAGER_KEY = pytest.StashKey[ClusterManager]()
VIEW_KEY = pytest.StashKey[ClusterView]()


class DeadlineExceeded(Exception):
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
        "--kernel",
        default="stock",
        choices=KERNELS,
        help="kernel to boot: the pinned stock image, or the sanitizer build of `make kernel` "
        "(module from out/debug-module: `make KERNEL=debug debug-module`)",
    )


def pytest_configure(config: pytest.Config) -> None:
    mgr = ClusterManager(accel=config.getoption("accel"))
    if config.getoption("kernel") != "stock":
        mgr.kernel = select_kernel(config.getoption("kernel"))
        mgr.boot_timeout = DEBUG_BOOT_TIMEOUT_S  # x kernel.time_scale in Cluster
        # Helpers that only know a path (p2pkp_scenario.module_ko) read it when called.
        os.environ[MODULE_ENV] = str(mgr.kernel.module)
    config.stash[MANAGER_KEY] = mgr
    config.addinivalue_line(
        "markers",
        "expect_crash: the test crashes a guest on purpose; "
        "crash signatures do not fail it (the guest is still replaced)",
    )
    logging.getLogger("p2pkpvm").setLevel(logging.INFO)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Tear the session cluster down and check that nothing of it remains."""
    mgr = session.config.stash.get(MANAGER_KEY, None)
    if mgr is None:
        return
    left = mgr.close()
    if left:
        print(f"\np2pkp: teardown left behind: {', '.join(left)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    mgr = config.stash.get(MANAGER_KEY, None)
    if mgr is not None:
        mgr.close()


def _topology_name(item: pytest.Item) -> str:
    mark = item.get_closest_marker("topology")
    if mark is not None and mark.args:
        return str(mark.args[0])
    return str(item.config.getoption("topology"))


def _topology(item: pytest.Item) -> Topology:
    return load_topology(_topology_name(item))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests without VMs first, then by decreasing topology size (big cluster covers small)."""
    sizes: dict[str, int] = {}

    def key(item: pytest.Item) -> int:
        if "cluster" not in getattr(item, "fixturenames", ()):
            return 0
        name = _topology_name(item)
        if name not in sizes:
            sizes[name] = len(load_topology(name).guests)
        return -sizes[name] + 100  # after the VM-less tests

    items.sort(key=key)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterView]:
    """The guests of this test's topology: booted once per session, healthy, dmesg marked."""
    mgr = request.config.stash[MANAGER_KEY]
    view = mgr.view(_topology(request.node))
    mgr.mark(view)
    request.node.stash[VIEW_KEY] = view
    yield view
    # Crashes during teardown of the test's own fixtures are reported as a teardown error.
    checks = mgr.collect(view)
    fresh = mgr.new_findings(checks)
    if fresh and request.node.get_closest_marker("expect_crash") is None:
        raise CrashDetected(crash_message(fresh))


@pytest.fixture(scope="module", autouse=True)
def kmemleak(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test module (kernels with kmemleak): scan, and fail on any leak record."""
    yield
    fresh = request.config.stash[MANAGER_KEY].kmemleak_check()
    if fresh:
        raise CrashDetected("kmemleak after this module:\n" + crash_message(fresh))


@pytest.fixture
def p2pkp(cluster: ClusterView) -> ClusterView:
    """Make sure p2pkp.ko is loaded in every guest of the test's topology."""
    module = default_module()
    if not module.exists():
        pytest.fail(f"{module} is not built: run `make` first")
    for vm in cluster.vms:
        vm.run(f"grep -q '^p2pkp ' /proc/modules || insmod {module}", timeout=60)
    return cluster


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise DeadlineExceeded("test exceeded its deadline (timeout_s)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    mark = item.get_closest_marker("timeout_s")
    timeout = float(mark.args[0]) if mark is not None and mark.args else DEFAULT_TIMEOUT_S
    kernel = item.config.stash[MANAGER_KEY].kernel
    if kernel is not None:
        timeout *= kernel.time_scale
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        try:
            return (yield)
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(f"{item.nodeid}: no result within {timeout:.0f} s") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _check_guests(item)


def _check_guests(item: pytest.Item) -> None:
    """Save each guest's dmesg for this test; fail the test on a crash signature."""
    view = item.stash.get(VIEW_KEY, None)
    if view is None:
        return
    mgr = item.config.stash[MANAGER_KEY]
    checks = mgr.collect(view)
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
    s.setup()
    yield s
    s.teardown()
