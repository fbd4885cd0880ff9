"""The bench's load gate on captured /proc files of the host (no guest needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from p2pkpvm.bench.hostload import (
    LOAD_LIMIT,
    LoadSnapshot,
    cell_loads,
    descendants_ticks,
    foreign_cpus,
    load_verdict,
    parse_pid_stat,
    parse_stat_busy,
    snapshot,
)
from p2pkpvm.bench.model import BenchParseError, Sample

DATA = Path(__file__).parent / "data" / "bench"


def test_pid_stat_fields_after_an_odd_command_name() -> None:
    # comm "a) (b": a parser that splits on spaces or the first ')' reads the wrong fields
    assert parse_pid_stat((DATA / "host-pid-stat-odd-name.txt").read_text()) == (21489, 0)
    # a python busy loop: utime 33, stime 1, cutime 4, cstime 2 (children it reaped)
    assert parse_pid_stat((DATA / "host-pid-stat-busy.txt").read_text()) == (21509, 40)


def test_host_busy_is_user_nice_system() -> None:
    assert parse_stat_busy((DATA / "host-proc-stat.txt").read_text()) == 64935 + 0 + 19422
    with pytest.raises(BenchParseError, match="no aggregate 'cpu' line"):
        parse_stat_busy("cpu0 1 2 3 4\n")


def test_descendants_of_the_bench_process() -> None:
    # 10 -> 11 (qemu) -> 12; 20 is someone else's
    stats = {10: (1, 5), 11: (10, 300), 12: (11, 7), 20: (1, 1000)}
    assert descendants_ticks(10, stats) == 312
    assert descendants_ticks(99, stats) == 0


def snap(t: float, busy: int, ours: int) -> LoadSnapshot:
    return LoadSnapshot(t=t, busy_ticks=busy, ours_ticks=ours, loadavg1=1.0)


def test_foreign_cpus() -> None:
    # 4 s: 600 busy ticks on the host, 200 of them ours: 400 ticks = 4 s of CPU = 1 CPU
    assert foreign_cpus(snap(0, 1000, 50), snap(4, 1600, 250)) == pytest.approx(1.0)
    assert foreign_cpus(snap(0, 1000, 50), snap(4, 1100, 250)) == 0.0  # rounding: clipped
    assert foreign_cpus(snap(3, 0, 0), snap(3, 10, 0)) == 0.0


def test_snapshot_of_this_host() -> None:
    s = snapshot()
    assert s.busy_ticks > 0 and s.ours_ticks >= 0 and s.loadavg1 >= 0


def sample(foreign: float, warmup: bool = False, wall: float = 1.0, size: int = 1 << 20) -> Sample:
    return Sample(
        method="p2pkp",
        size=size,
        peers=3,
        cache="warm",
        rep=0,
        wall_s=wall,
        cpu_s=1.0,
        sender_cpu_s=0.1,
        ok=True,
        warmup=warmup,
        loadavg=3.5,
        foreign_cpu=foreign,
    )


def test_load_verdict_judges_cells_of_counted_samples() -> None:
    quiet = [sample(0.05), sample(LOAD_LIMIT)]
    assert load_verdict(quiet) == ""
    assert load_verdict([*quiet, sample(1.7, warmup=True)]) == ""
    # one short sample's tick rounding does not condemn its cell: 0.05 s at 2 CPUs
    # against 2 s near 0
    assert cell_loads([sample(2.0, wall=0.05), sample(0.0, wall=2.0)]) == {
        (1 << 20, 3, "warm"): pytest.approx(0.1 / 2.05)
    }
    assert load_verdict([sample(2.0, wall=0.05), sample(0.0, wall=2.0)]) == ""
    busy = [replace(sample(1.2), method="udp-rw"), sample(0.9), sample(0.0, size=4096)]
    why = load_verdict([*quiet, *busy])
    assert why.startswith("1 of 2 cells ran while more than 0.25 host CPUs did other work")
    assert "1048576 B to 3 peers, warm cache, load average up to 3.50" in why
    # samples of an older raw.json have no measurement (-1): never under load
    assert load_verdict([sample(-1.0)]) == ""


def test_snapshot_of_a_captured_proc(tmp_path: Path) -> None:
    """/proc as captured: the host line, the load average, a bench process (pid 21509) with
    a child of an odd name (21489 is its parent, not ours)."""
    (tmp_path / "stat").write_text((DATA / "host-proc-stat.txt").read_text())
    (tmp_path / "loadavg").write_text((DATA / "host-loadavg.txt").read_text())
    for pid, name in ((21511, "host-pid-stat-busy.txt"), (21490, "host-pid-stat-odd-name.txt")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text((DATA / name).read_text())
    (tmp_path / "self").mkdir()  # not a pid: skipped
    s = snapshot(root=21509, proc=tmp_path)
    assert (s.busy_ticks, s.ours_ticks, s.loadavg1) == (84357, 40, 3.54)
