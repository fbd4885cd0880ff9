"""Background jobs and scenario cleanup: the real shell the harness sends to a guest, run by
a local bash the way the guest's console runs it (one command = one console round)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from p2pkpvm.errors import CommandFailed
from p2pkpvm.scenario.scenario import Scenario
from p2pkpvm.vm.console import CommandResult
from p2pkpvm.vm.machine import GuestOps, parse_wait


class LocalGuest(GuestOps):
    """A GuestOps whose console is a local bash; counts console rounds."""

    def __init__(self, monitor: bool = False) -> None:
        super().__init__()
        self.monitor = monitor  # job control on, as a console with a controlling tty has
        self.name = "local"
        self.ipv4 = "127.0.0.1"
        self.ipv6 = None
        self.time_scale = 1.0
        self.kernel = None
        self.rounds: list[str] = []

    def _run(self, cmd: str, timeout: float, check: bool) -> CommandResult:
        self.rounds.append(cmd)
        # as Console.run: a brace group with stdin from /dev/null, stderr with stdout
        p = subprocess.run(
            ["bash", "-c", ("set -m\n" if self.monitor else "") + f"{{ {cmd}\n}} </dev/null 2>&1"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and p.returncode != 0:
            raise CommandFailed(self.name, cmd, p.returncode, p.stdout, "")
        return CommandResult(rc=p.returncode, output=p.stdout)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("monitor", [False, True], ids=["no-job-control", "job-control"])
def test_spawn_is_one_round_and_wait_returns_rc_and_output(monitor: bool) -> None:
    g = LocalGuest(monitor)
    job = g.spawn("echo hello; echo @rc 9; exit 3")
    assert job.pid > 0 and len(g.rounds) == 1
    res = job.wait(timeout=10.0)
    # the job's own "@rc" line is output, not the exit code
    assert res.rc == 3 and res.output == "hello\n@rc 9\n"
    assert job.output() == "hello\n@rc 9\n"


def test_wait_polls_until_the_job_ends() -> None:
    g = LocalGuest()
    job = g.spawn("sleep 0.5; echo done")
    g.rounds.clear()
    t0 = time.monotonic()
    res = job.wait(timeout=10.0)
    assert res.rc == 0 and res.output == "done\n"
    assert time.monotonic() - t0 >= 0.3 and len(g.rounds) >= 2  # polled, then got it


def test_parse_wait_needs_the_exit_code() -> None:
    assert parse_wait("vm1", "x", "noise\n@rc 0\nout\n") == CommandResult(0, "out\n")
    with pytest.raises(CommandFailed, match="no exit code"):
        parse_wait("vm1", "x", "cat: /tmp/x.rc: No such file or directory\n")


@pytest.mark.parametrize("monitor", [False, True], ids=["no-job-control", "job-control"])
def test_teardown_kills_every_job_in_one_round(monitor: bool) -> None:
    g = LocalGuest(monitor)
    # on the host, its directory (/tmp/p2pkp-NAME) is a plain one: umount -l fails, quietly
    scn = Scenario([g], f"test_jobs_teardown_{g._job_prefix.rsplit('-', 1)[1]}")
    subprocess.run(["mkdir", "-p", scn.dir], check=True)
    jobs = [scn.spawn(g, "sleep 60") for _ in range(3)]
    # each pid is its job's own session (what teardown kills), whichever way it was found
    assert [os.getsid(j.pid) for j in jobs] == [j.pid for j in jobs]
    g.rounds.clear()
    scn.teardown()
    assert len(g.rounds) == 1
    deadline = time.monotonic() + 10.0
    while any(group_alive(job.pid) for job in jobs):  # SIGTERM reached every group
        assert time.monotonic() < deadline, [j.pid for j in jobs if group_alive(j.pid)]
        time.sleep(0.05)
    assert subprocess.run(["test", "-e", scn.dir]).returncode == 1
