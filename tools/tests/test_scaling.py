"""bench-scale without guests: receiver order, namespaced guests, the table and the plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pkpvm.bench.model import BenchRun, Sample
from p2pkpvm.bench.scaling import (
    describe,
    fit_slope,
    parse_args,
    scale_table,
    spread,
    too_big,
    write_results,
)
from p2pkpvm.cluster.nsguest import NamespaceGuest
from p2pkpvm.net.receivers import plan
from p2pkpvm.net.topology import load_topology
from p2pkpvm.vm.guest import Guest
from tests.fakeguest import FakeGuest

MiB = 1 << 20


def test_spread_takes_receivers_round_robin_over_guests() -> None:
    rs = spread(plan(load_topology("scale").guests, "run"))
    assert [r.name for r in rs[:4]] == ["r1", "r23", "r45", "r2"]
    assert sorted(r.name for r in rs) == sorted(f"r{k}" for k in range(1, 67))
    # any first N load the three guests within one receiver of each other
    for n in (1, 2, 4, 16, 64):
        counts = [sum(r.guest == g for r in rs[:n]) for g in ("vm2", "vm3", "vm4")]
        assert max(counts) - min(counts) <= 1, (n, counts)


@dataclass
class FakeVM(FakeGuest):
    name: str = "vm3"
    ipv4: str = "10.99.0.3"


def test_namespace_guest_runs_inside_the_receivers_namespace() -> None:
    r = next(x for x in plan(load_topology("scale").guests, "run") if x.name == "r23")
    vm = FakeVM()
    g: Guest = NamespaceGuest(vm, r)  # type: ignore[arg-type]
    assert (g.name, g.ipv4, g.ipv6) == ("r23", "10.99.0.87", "fd00:99::57")
    g.run("head -1 /proc/stat; p2pkp-recv --out '/tmp/a b'; echo rc=$?")
    assert vm.ran == [
        "ip netns exec p2pkp-r23 sh -c 'head -1 /proc/stat; p2pkp-recv --out '\"'\"'/tmp/a b'"
        "\"'\"'; echo rc=$?'"
    ]
    with pytest.raises(ValueError, match="r1 lives in vm2, not vm3"):
        NamespaceGuest(vm, plan(load_topology("scale").guests, "run")[0])  # type: ignore[arg-type]


def test_fit_slope() -> None:
    assert fit_slope([(1, 2.0), (2, 3.0), (4, 5.0)]) == pytest.approx(1.0)
    assert fit_slope([(4, 1.0)]) is None and fit_slope([]) is None


def sample(method: str, n: int, wall: float, cpu: float, warmup: bool = False) -> Sample:
    return Sample(
        method=method,
        size=8 * MiB,
        peers=n,
        cache="warm",
        rep=-1 if warmup else 0,
        wall_s=wall,
        cpu_s=cpu,
        sender_cpu_s=0.01,
        ok=True,
        warmup=warmup,
        counters={"wire_packets": 6000 * n, "wire_bytes": 8 * MiB * n + 300000 * n},
        sender_busy_s=cpu,
    )


def run_of() -> BenchRun:
    samples = [sample("p2pkp", n, 1.0 + 0.5 * n, 0.4 * n) for n in (1, 2, 4)]
    samples += [sample("tcp-sendfile", n, 1.0 * n, 0.2 * n) for n in (1, 2, 4)]
    samples.append(sample("p2pkp", 4, 99.0, 99.0, warmup=True))
    return BenchRun(meta={"accel": "tcg"}, samples=samples)


def test_scale_table_rows_and_cost_per_receiver() -> None:
    md = scale_table(run_of())
    assert "| 8 MiB | 4 | P2PKP | 3.00 s | 3.00 s-3.00 s (0 %) | 1 | 1.60 s | 3000 | 4.14 |" in md
    assert "| 8 MiB | P2PKP | 500.0 ms | 400.0 ms | x2.0 (4 vs 1) |" in md
    assert "| 8 MiB | TCP sendfile | 1.00 s | 200.0 ms | x4.0 (4 vs 1) |" in md
    assert "99" not in md, "the warm-up round is not counted"


def described_run() -> BenchRun:
    """run_of() with the meta that describe() reads."""
    run = run_of()
    run.meta.update(
        command="python -m p2pkpvm bench-scale",
        date="today",
        commit="abc",
        cpu="cpu",
        host_cpus="2",
        sizes=[8 * MiB],
        peers=[1, 2, 4],
        reps=1,
        seed=3,
    )
    return run


def test_results_folder(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = described_run()
    write_results(run, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["README.md", "plot.png", "raw.csv", "raw.json", "table.md"]
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert "taken round-robin over the three guests" in (tmp_path / "README.md").read_text()


def test_sizes_warmup_and_publish_folder_options() -> None:
    """The 64 MiB cells (issue 13: 64 MiB at 1 and 64 receivers) run as their own
    invocation: sizes with units, no warm-up round, their own folder under docs/results."""
    a = parse_args(["--size", "64M,8M", "--receivers", "1,64", "--no-warmup"])
    assert a.size == (64 * MiB, 8 * MiB) and a.no_warmup and a.publish_dir == "scaling"
    d = parse_args([])
    assert d.size == (8 * MiB,) and not d.no_warmup
    assert parse_args(["--publish-dir", "scaling-64MiB"]).publish_dir == "scaling-64MiB"
    with pytest.raises(SystemExit):
        parse_args(["--size", "8X"])


def test_readme_says_whether_there_was_a_warm_up_round() -> None:
    run = described_run()
    assert "per cell after a warm-up round;" in describe(run)
    run.meta["warmup"] = False
    assert "1 counted round(s) per cell; method order" in describe(run)


def test_cells_that_do_not_fit_the_receiving_guests_are_refused() -> None:
    """64 MiB to 64 receivers (22 files of 64 MiB in a 768M guest's RAM) failed after
    minutes with a broken TCP connection: it is refused before booting, naming the limit."""
    mem = {"vm2": "768M", "vm3": "768M", "vm4": "768M"}
    assert too_big((8 * MiB,), (1, 64), mem) == ""
    assert too_big((64 * MiB,), (1, 3), mem) == ""
    why = too_big((64 * MiB, 8 * MiB), (1, 64), mem)
    assert "22 files (1408 MiB)" in why and "(768 MiB)" in why, why
    assert "at most 18 receivers at that size" in why, why
    assert too_big((64 * MiB,), (64,), {}) == ""
