"""How busy the host is with work that is not the bench's own: the load gate of `make bench`.

A bench under TCG measures the host's CPUs: another job on the machine (a build, other guests)
slows every method, not equally, and turns a ratio into noise.  The 1-minute load average
cannot tell that apart from the bench's own four guests, so the gate counts CPU time instead:
the host's busy time (user + nice + system of /proc/stat) minus the CPU time of this process
and its descendants (the qemu processes, the harness), per second of wall time.  Softirq and
irq time are left out of both (the guests' packets cross the host's bridge there).  Like
NIPA's load gate, a run with samples taken above the limit is not published unless forced.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from p2pkpvm.bench.model import USER_HZ, BenchParseError, Sample

LOAD_LIMIT = 0.25  # foreign CPUs (of the host's) above which a sample was taken under load


@dataclass(frozen=True)
class LoadSnapshot:
    t: float  # time.monotonic()
    busy_ticks: int  # user + nice + system of the host's 'cpu' line
    ours_ticks: int  # utime + stime of the bench process and its live descendants
    loadavg1: float


def parse_stat_busy(text: str) -> int:
    """user + nice + system of the aggregate 'cpu' line of /proc/stat."""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["cpu"] and len(words) >= 4:
            return int(words[1]) + int(words[2]) + int(words[3])
    raise BenchParseError(f"/proc/stat: no aggregate 'cpu' line in {text[:200]!r}")


def parse_pid_stat(text: str) -> tuple[int, int]:
    """(ppid, utime + stime + cutime + cstime) of a /proc/PID/stat line: the process's CPU
    time and that of its children it has reaped, so that a child that exits between two
    snapshots moves its time to its parent instead of taking it out of the sum.  The command
    name may hold spaces and parentheses: fields are counted after its last ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, cutime 16, cstime 17
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def descendants_ticks(root: int, stats: dict[int, tuple[int, int]]) -> int:
    """utime + stime of root and every process below it in `stats` (pid -> (ppid, ticks))."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def _read_stats(proc: Path) -> dict[int, tuple[int, int]]:
    stats = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stats[int(d.name)] = parse_pid_stat((d / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or a kernel thread's odd line: not ours either way
    return stats


def snapshot(root: int | None = None, proc: Path = Path("/proc")) -> LoadSnapshot:
    return LoadSnapshot(
        t=time.monotonic(),
        busy_ticks=parse_stat_busy((proc / "stat").read_text()),
        ours_ticks=descendants_ticks(os.getpid() if root is None else root, _read_stats(proc)),
        loadavg1=float((proc / "loadavg").read_text().split()[0]),
    )


def foreign_cpus(a: LoadSnapshot, b: LoadSnapshot) -> float:
    """Host CPUs busy with other work between a and b, on average (0 when nothing else ran;
    clipped at 0: the two counts are rounded to ticks separately)."""
    secs = b.t - a.t
    if secs <= 0:
        return 0.0
    other = (b.busy_ticks - a.busy_ticks) - (b.ours_ticks - a.ours_ticks)
    return max(other / USER_HZ / secs, 0.0)


def cell_loads(samples: list[Sample]) -> dict[tuple[int, int, str], float]:
    """Per cell (size, peers, cache) of the counted samples, the host CPUs busy with other
    work over the cell's samples together (weighted by their wall time): one short sample
    is a window of a few 10 ms ticks, too coarse to judge alone."""
    busy: dict[tuple[int, int, str], float] = {}
    secs: dict[tuple[int, int, str], float] = {}
    for s in samples:
        if s.warmup or s.foreign_cpu < 0:
            continue
        key = (s.size, s.peers, s.cache)
        w = max(s.wall_s, 1e-3)
        busy[key] = busy.get(key, 0.0) + s.foreign_cpu * w
        secs[key] = secs.get(key, 0.0) + w
    return {k: busy[k] / secs[k] for k in busy}


def load_verdict(samples: list[Sample], limit: float = LOAD_LIMIT) -> str:
    """'' when the run may be published, else why not: the cells whose samples ran, on
    average, while more than `limit` host CPUs did other work (and the worst of them)."""
    loads = cell_loads(samples)
    bad = {k: v for k, v in loads.items() if v > limit}
    if not bad:
        return ""
    (size, peers, cache), worst = max(bad.items(), key=lambda kv: kv[1])
    la = max(s.loadavg for s in samples if (s.size, s.peers, s.cache) == (size, peers, cache))
    return (
        f"{len(bad)} of {len(loads)} cells ran while more than {limit:g} host CPUs did other "
        f"work (worst {worst:.2f}: {size} B to {peers} peers, {cache} cache, load average "
        f"up to {la:.2f})"
    )
