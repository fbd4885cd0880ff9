"""The p2pkp pytest plugin's per-test deadline (timeout_s) stops a hanging test (no VM); long
tests are deselected unless asked for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HANGING = """
import time
import pytest

@pytest.mark.timeout_s(1)
def test_hangs():
    time.sleep(120)

def test_next_one_still_runs():
    assert True
"""


def test_timeout_s_fails_the_test_and_the_session_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGING)
    t0 = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_hang.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed = time.monotonic() - t0
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "no result within 1 s" in out, out
    assert "1 failed, 1 passed" in out, out
    assert elapsed < 60, f"the 1 s deadline took {elapsed:.0f} s"


LONG = """
import pytest

@pytest.mark.long
def test_campaign():
    assert True

def test_everyday():
    assert True
"""


def run_pytest(tmp_path: Path, *args: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", os.devnull,
         "--rootdir", str(tmp_path), *args, str(tmp_path / "test_long.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    return res.stdout + res.stderr


def test_long_tests_are_opt_in(tmp_path: Path) -> None:
    (tmp_path / "test_long.py").write_text(LONG)
    assert "1 passed, 1 deselected" in run_pytest(tmp_path)
    assert "1 passed, 1 deselected" in run_pytest(tmp_path, "-k", "campaign or everyday")
    assert "2 passed" in run_pytest(tmp_path, "--long")
    assert "1 passed, 1 deselected" in run_pytest(tmp_path, "-m", "long")


def test_attach_does_not_take_the_test_path_as_its_socket(tmp_path: Path) -> None:
    """`pytest --attach vmtests/x.py`, typed as the README types it: --attach is a flag (the
    socket is --attach-socket), so the path stays a test path.  With no cluster at the socket
    the run stops naming the socket."""
    (tmp_path / "test_long.py").write_text(LONG)
    sock = tmp_path / "none.sock"
    out = run_pytest(tmp_path, "--attach-socket", str(sock), "--attach")
    assert f"no running cluster at {sock}" in out, out
    assert "test_long.py (" not in out, out


TOPOLOGIES = """
import pytest

@pytest.mark.topology("pair")
def test_a_pair(cluster): pass

@pytest.mark.topology("quad")
def test_b_quad(cluster): pass

@pytest.mark.topology("scale")
def test_c_scale(cluster): pass

@pytest.mark.topology("trio")
def test_d_trio(cluster): pass

@pytest.mark.topology("quad")
def test_e_quad(cluster): pass

def test_f_no_vm(): pass

@pytest.mark.topology("jumbo")
def test_0_jumbo(cluster): pass
"""


def test_vm_tests_grouped_so_each_cluster_boots_once(tmp_path: Path) -> None:
    """Collection order: VM-less tests first, then by topology from the largest; among equal
    sizes the topology that covers others last (scale, whose guests hold receivers, covers
    no other: before quad, which then serves trio and pair without a reboot).  A topology
    that the larger ones do not cover (jumbo: pair's guests at MTU 65520) comes after the
    group it would otherwise split (quad, trio, pair), not between quad and pair."""
    (tmp_path / "test_long.py").write_text(TOPOLOGIES)
    out = run_pytest(tmp_path, "--collect-only")
    order = [line.split("::")[1] for line in out.splitlines() if "::" in line]
    assert order == [
        "test_f_no_vm",
        "test_c_scale",
        "test_b_quad",
        "test_e_quad",
        "test_d_trio",
        "test_a_pair",
        "test_0_jumbo",
    ], out


TERMINATED = """
import os
import signal
import time

import pytest

from p2pkpvm.cluster import cluster as cl


class Guests:
    def close(self):
        print("guests closed", flush=True)


@pytest.fixture
def guests():
    g = Guests()
    cl._register(g)  # as a booted Cluster registers itself: its SIGTERM handler is in force
    os.kill(os.getpid(), signal.SIGTERM)  # e.g. CI's deadline, or kill, while a fixture sets up
    time.sleep(30)
    yield g


def test_a_before():
    pass

def test_b_terminated(guests):
    pass

def test_c_after(guests):
    pass

def test_d_after():
    pass
"""


def test_sigterm_ends_the_session_after_closing_the_guests(tmp_path: Path) -> None:
    """SIGTERM (a deadline, `kill`) stops the run as Ctrl-C does: the guests are closed, no
    later test runs, pytest reports the stop and exits 128 + SIGTERM.  It used to raise
    SystemExit inside whatever was running: pytest counted that as one test's error and went
    on, and a SystemExit during fixture setup left pytest's fixture state stale, so every
    later test failed its setup with `assert not self._finalizers` (111 errors after one
    SIGTERM in a debug-kernel run)."""
    (tmp_path / "test_term.py").write_text(TERMINATED)
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", os.devnull,
         "--rootdir", str(tmp_path), str(tmp_path / "test_term.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 128 + signal.SIGTERM, out
    assert "guests closed" in out, out
    assert "SIGTERM" in out, out
    assert "_finalizers" not in out, out
    assert "1 passed" in out, out
    assert "test_c_after" not in out and "test_d_after" not in out, out
    assert time.monotonic() - t0 < 25, "the run waited out the fixture's sleep"
