"""Unit tests of the bench result model, parsers (on real captured output) and table writers."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from p2pkp_guest.wirefuzz import group_bad, group_ext
from p2pkpvm.bench.main import config_from, parse_args, parse_methods, results_dir
from p2pkpvm.bench.model import (
    DEFAULT_METHODS,
    METHOD_LABELS,
    METHODS,
    BenchParseError,
    BenchRun,
    Iperf,
    Sample,
    SyscallSample,
    aggregate,
    cpu_seconds,
    median_ci,
    parse_cpu_lines,
    parse_iperf,
    parse_sha256,
    parse_timeit,
    parse_total_delta,
    parse_udp_counters,
    parse_wire,
)
from p2pkpvm.bench.runner import BenchConfig, recv_cmd, send_cmd, timed_plan, zerocopy_cmd
from p2pkpvm.bench.scaling import SCALE_METHODS
from p2pkpvm.bench.tables import fmt_s, fmt_size, latex, markdown, targets
from p2pkpvm.scenario.scenario import mcast_group

DATA = Path(__file__).parent / "data" / "bench"
MiB = 1 << 20


def sample(
    method: str,
    wall: float,
    ok: bool = True,
    rep: int = 0,
    cache: str = "warm",
    size: int = 64 * MiB,
    peers: int = 3,
) -> Sample:
    return Sample(
        method=method,
        size=size,
        peers=peers,
        cache=cache,
        rep=rep,
        wall_s=wall,
        cpu_s=wall / 2,
        sender_cpu_s=0.1,
        ok=ok,
        error="" if ok else "bad digest",
    )


def run_of(samples: list[Sample]) -> BenchRun:
    return BenchRun(
        meta={"accel": "tcg", "kernel": "6.1.0-56-amd64"},
        samples=samples,
        syscalls=[
            SyscallSample("p2pkp", 64 * MiB, 3, 40, {"socket": 1, "connect": 3, "write": 1}, True)
        ],
        iperf=Iperf(sender_bps=800e6, lost_percent=50.0),
    )


def test_sender_capture_parses() -> None:
    text = (DATA / "host-sender-gso-2peers.txt").read_text()
    t = parse_timeit(text)
    assert (t.wall_ns, t.rc, t.utime_us, t.stime_us) == (8493338, 0, 1442, 0)
    assert len(parse_cpu_lines(text)) == 2
    # user 6 + nice 1 + system 1 ticks between the two lines
    assert cpu_seconds(text, "capture") == pytest.approx(0.08)
    assert parse_sha256(text, "capture").startswith("003e0e1f")


def test_timeit_missing_names_where() -> None:
    with pytest.raises(BenchParseError, match="vm1: send"):
        parse_timeit("bench-udp: sendto 10.99.0.2: Connection refused\n", "vm1: send")


def test_cpu_needs_two_lines() -> None:
    with pytest.raises(BenchParseError, match="two /proc/stat"):
        cpu_seconds("cpu  1 2 3 4 5 6 7 8 0 0\n", "vm2")


def test_iperf_capture() -> None:
    ip = parse_iperf((DATA / "host-iperf-udp.txt").read_text())
    assert ip.sender_bps == pytest.approx(1121526988.1351016)
    assert ip.received_bps == pytest.approx(ip.sender_bps * (1 - 0.7407128712871287))


def test_aggregate_median_spread_and_failures() -> None:
    run = run_of(
        [sample("p2pkp", w, rep=i) for i, w in enumerate((3.0, 1.0, 2.0))]
        + [sample("p2pkp", 0.01, ok=False, rep=3)]
    )
    (row,) = aggregate(run)
    assert (row.wall_med, row.wall_min, row.wall_max) == (2.0, 1.0, 3.0)
    assert (row.n_ok, row.n_failed, row.syscalls) == (3, 1, 40)
    assert row.throughput_bps == pytest.approx(64 * MiB * 3 / 2.0)


def test_failed_only_cell_has_no_time() -> None:
    (row,) = aggregate(run_of([sample("udp-rw", 0.001, ok=False)]))
    assert row.wall_med is None and row.throughput_bps is None
    assert "0 (1 FAILED)" in markdown(run_of([sample("udp-rw", 0.001, ok=False)]))


def test_targets() -> None:
    run = run_of(
        [
            sample("p2pkp", 2.0),
            sample("udp-rw", 5.0),
            sample("udp-sendfile", 2.0),
            sample("tcp-sendfile", 1.0),
        ]
    )
    t = {x.name: x for x in targets(run)}
    assert t["wall P2PKP / UDP read/sendto"].value == pytest.approx(0.4)
    assert t["wall P2PKP / UDP read/sendto"].met is True
    assert t["wall P2PKP / UDP sendfile/datagram"].met is False
    assert t["wall P2PKP / TCP sendfile"].value == pytest.approx(2.0)
    # 64 MiB x 3 / 2 s = 100.7 MB/s against 400e6 bit/s received = 50 MB/s
    assert t["P2PKP throughput / iperf3 -u"].value == pytest.approx(64 * MiB * 3 / 2 / 50e6)
    assert t["P2PKP sender socket/connect/write"].met is True
    # iperf3 sent 100 MB/s; P2PKP at 0.5 x 5 s would need 64 MiB x 3 / 2.5 s = 80.5 MB/s
    assert "more than iperf3" not in t["wall P2PKP / UDP read/sendto"].detail
    # ... and at 1.0 x 1 s TCP, 201.3 MB/s: beyond what the link let iperf3 send
    assert t["wall P2PKP / TCP sendfile"].detail.endswith(
        "; the goal needs 201.3 MB/s (file bytes x peers), more than iperf3 -u could send on "
        "this link (100.0 MB/s)"
    )


def test_markdown_rows() -> None:
    md = markdown(run_of([sample("p2pkp", 2.0), sample("tcp-sendfile", 0.5)]))
    lines = md.splitlines()
    assert lines[2] == (
        "| 64 MiB | 3 | warm | P2PKP | 2.00 s | 2.00 s-2.00 s (0 %) | 1 | 40 | 1.00 s "
        "| 100.7 MB/s |"
    )
    assert lines[3].startswith("| 64 MiB | 3 | warm | TCP sendfile | 500.0 ms |")
    assert "50.0% lost, 50.0 MB/s delivered" in md
    # the iperf3 ratio against what it delivered and what it sent
    assert (
        "vs 50.0 MB/s iperf3 -u delivered to one peer (ratio 2.01) and 100.0 MB/s it sent "
        "(ratio 1.01) |" in md
    )
    assert "| wall P2PKP / TCP sendfile | 4.00 | <= 1.0 | **no** |" in md


def test_total_delta_of_the_p2pkp_counters() -> None:
    text = (
        "total files_sent=3 dgrams_sent=100 drop_dup=0\n"
        "timeit wall_ns=1 rc=0 utime_us=0 stime_us=0\n"
        "total files_sent=4 dgrams_sent=850 drop_dup=0\n"
    )
    assert parse_total_delta(text) == {"files_sent": 1, "dgrams_sent": 750}
    assert parse_total_delta("total files_sent=3\n") == {}


def test_median_interval_from_order_statistics() -> None:
    assert median_ci([]) is None
    assert median_ci([2.0]) == (2.0, 2.0, 0.0)
    # 5 samples: no interval reaches 95 %; min-max covers the median with 1 - 2/32
    assert median_ci([5.0, 1.0, 4.0, 2.0, 3.0]) == (1.0, 5.0, 0.9375)
    assert median_ci([float(x) for x in range(6)]) == (0.0, 5.0, 1 - 2 / 64)
    # 10 samples: x(2)..x(9), 1 - 2 (1 + 10) / 1024
    lo, hi, level = median_ci([float(x) for x in range(10, 0, -1)]) or (0, 0, 0)
    assert (lo, hi) == (2.0, 9.0) and level == pytest.approx(1 - 22 / 1024)


def test_warmup_rounds_are_kept_but_not_counted() -> None:
    warm = replace(sample("p2pkp", 9.0, rep=-1), warmup=True)
    run = run_of([warm, sample("p2pkp", 2.0), sample("p2pkp", 3.0, rep=1)])
    (row,) = aggregate(run)
    assert (row.n_ok, row.wall_max) == (2, 3.0)
    assert BenchRun.from_json(run.to_json()).samples[0].warmup is True


def test_plan_warms_up_each_cell_and_shuffles_every_round() -> None:
    cfg = BenchConfig(sizes=(1, 2), peers=(1, 3), caches=("warm",), reps=5, seed=7)
    assert cfg.methods == DEFAULT_METHODS and set(DEFAULT_METHODS) < set(METHODS)
    plan = timed_plan(cfg)
    cells = {(s, p, c) for s, p, c, _, _ in plan}
    assert len(plan) == len(cells) * 6 * len(cfg.methods)
    rounds: dict[tuple[int, int, str, int], list[str]] = {}
    for s, p, c, rep, m in plan:
        rounds.setdefault((s, p, c, rep), []).append(m)
    assert all(sorted(r) == sorted(cfg.methods) for r in rounds.values())
    for cell in cells:  # the warm-up round comes first in its cell
        reps = [rep for s, p, c, rep, _ in plan if (s, p, c) == cell]
        assert reps[0] == -1 and reps.count(-1) == len(cfg.methods)
    firsts = {r[0] for r in rounds.values()}
    assert len(firsts) > 1, f"one method always first: {firsts}"
    assert timed_plan(cfg) == plan, "the seed fixes the order"
    assert timed_plan(replace(cfg, seed=8)) != plan
    assert all(rep >= 0 for *_, rep, _ in timed_plan(replace(cfg, warmup=False)))


def test_udp_counters_from_the_sender_capture() -> None:
    text = (DATA / "host-sender-gso-2peers.txt").read_text()
    assert parse_udp_counters(text) == {"datagrams": 215, "timeouts": 0}
    assert parse_wire(text) == {}
    tcp = (DATA / "host-sender-tcp-concurrent-2peers.txt").read_text()
    # the host's eth0 counters around a loopback transfer: the same before and after
    assert parse_wire(tcp) == {"wire_packets": 0, "wire_bytes": 0}
    assert parse_timeit(tcp).rc == 0 and cpu_seconds(tcp, "tcp") == pytest.approx(0.2)
    moved = tcp.replace("tx_packets=8470 tx_bytes=687588\n", "tx_packets=8570 tx_bytes=837588\n")
    moved = moved.replace("wire tx_packets=8570", "wire tx_packets=8470", 1)
    moved = moved.replace("tx_bytes=837588", "tx_bytes=687588", 1)
    assert parse_wire(moved) == {"wire_packets": 100, "wire_bytes": 150000}
    assert parse_udp_counters("bench-udp: peer 10.99.0.2 stalled\n") == {}


def test_latex_structure_and_escapes() -> None:
    tex = latex(run_of([sample("p2pkp", 2.0), sample("udp-rw", 4.0, cache="cold")]))
    assert tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\addlinespace" in tex
    assert "\\textbf{P2PKP}" in tex
    assert "UDP read/sendto" in tex
    assert "_" not in tex.replace("\\_", "")
    body = [line for line in tex.splitlines() if line.endswith("\\\\")]
    assert all(line.count("&") == 7 for line in body)


def test_json_roundtrip() -> None:
    run = run_of([sample("p2pkp", 2.0), sample("udp-gso", 0.3, ok=False)])
    back = BenchRun.from_json(run.to_json())
    assert back == run
    assert run.samples_csv().splitlines()[0].startswith("method,size,peers,cache,rep,wall_s")


def test_formatting() -> None:
    assert (
        fmt_size(4096) == "4 KiB" and fmt_size(64 * MiB) == "64 MiB" and fmt_size(1000) == "1000 B"
    )
    assert fmt_s(0.0123) == "12.3 ms" and fmt_s(12.345) == "12.35 s" and fmt_s(None) == "-"


def test_commands() -> None:
    assert send_cmd("udp-gso", ["10.99.0.2", "10.99.0.3"], 7601, "/f", 1432).endswith(
        "bench-udp send --mode gso --payload 1432 --to 10.99.0.2:7601 --to 10.99.0.3:7601 /f"
    )
    assert "bench-udp recv --listen 7601 --out /o --payload 8932 " in recv_cmd(
        "udp-rw", 7601, "/o", 8932
    )
    assert "p2pkp-recv --json --listen 0.0.0.0:7601 --out /o --count 1" in recv_cmd(
        "p2pkp", 7601, "/o", 1432
    )
    assert send_cmd("tcp-sendfile-par", ["10.99.0.2", "10.99.0.3"], 7601, "/f", 1432).endswith(
        "bench-tcp send --concurrent --to 10.99.0.2:7601 --to 10.99.0.3:7601 /f"
    )
    assert "bench-tcp recv --listen 7601 --out /o" in recv_cmd("tcp-sendfile-par", 7601, "/o", 1)
    with pytest.raises(ValueError, match="unknown method"):
        send_cmd("ftp", ["10.99.0.2"], 1, "/f", 1432)


def test_p2pkp_copy_is_p2pkp_with_zerocopy_off() -> None:
    """p2pkp-copy runs P2PKP's own commands with the sender's tx_zerocopy at 0; the other
    P2PKP methods set it back to 1 (it is read at each write()), the baselines leave it."""
    param = "/sys/module/p2pkp/parameters/tx_zerocopy"
    assert zerocopy_cmd("p2pkp-copy") == f"echo 0 > {param}; "
    assert zerocopy_cmd("p2pkp") == zerocopy_cmd("p2pkp-key") == f"echo 1 > {param}; "
    assert zerocopy_cmd("udp-gso") == zerocopy_cmd("tcp-sendfile") == ""
    to = ["10.99.0.2"]
    assert send_cmd("p2pkp-copy", to, 1, "/f", 1432) == send_cmd("p2pkp", to, 1, "/f", 1432)
    assert recv_cmd("p2pkp-copy", 1, "/o", 1432) == recv_cmd("p2pkp", 1, "/o", 1432)


def test_p2pkp_mcast_is_p2pkp_to_a_group_of_its_port() -> None:
    """p2pkp-mcast: p2pkp-send --group with a group of the transfer's port (every peer has that
    port, as P2PKP_GROUP requires), the receivers and tx_zerocopy as for p2pkp; not in the
    default methods of make bench, in those of make bench-scale."""
    to = ["10.99.0.2", "10.99.0.3"]
    cmd = send_cmd("p2pkp-mcast", to, 7601, "/f", 1432)
    assert cmd.endswith(
        "p2pkp-send --group 239.99.29.177 --to 10.99.0.2:7601 --to 10.99.0.3:7601 /f"
    )
    assert send_cmd("p2pkp-mcast", to, 7602, "/f", 1432) != cmd, "a group per transfer"
    assert recv_cmd("p2pkp-mcast", 7601, "/o", 1432) == recv_cmd("p2pkp", 7601, "/o", 1432)
    assert zerocopy_cmd("p2pkp-mcast") == zerocopy_cmd("p2pkp")
    assert "p2pkp-mcast" in METHODS and "p2pkp-mcast" not in DEFAULT_METHODS
    assert parse_methods(",".join(SCALE_METHODS)) == SCALE_METHODS
    assert "p2pkp-mcast" in SCALE_METHODS and "p2pkp-mcast" in METHOD_LABELS


def test_mcast_group_of_every_port_is_one_receivers_take() -> None:
    """scenario.mcast_group (the bench's and test_multicast's groups): for every port a group
    that P2PKP_GROUP and the receivers accept (the wire model's rules), one per port."""
    for v6 in (False, True):
        groups = set()
        for port in (1, 255, 256, 7117, 10000, 59999, 65535):
            g = ipaddress.ip_address(mcast_group(port, ipv6=v6))
            assert g.version == (6 if v6 else 4) and g.is_multicast, g
            assert not group_bad(group_ext(g.version, port, g.packed), port, v6), g
            groups.add(g)
        assert len(groups) == 7


def test_payload_is_p2pkp_chunk_at_the_mtu() -> None:
    """The UDP baselines and iperf3 send as many datagrams as P2PKP on the bench's links."""
    cfg = BenchConfig(sizes=(1,), peers=(1,), caches=("warm",), reps=1)
    assert cfg.mtu == 1500 and cfg.payload == 1432
    assert replace(cfg, mtu=9000).payload == 8932
    assert replace(cfg, mtu=65520).payload == 65000


def test_mtu_option(tmp_path: Path) -> None:
    """--mtu sets the config's MTU (and so the payload) and publishes to docs/results/mtu-N;
    without it, docs/results as always."""
    cfg = config_from(parse_args(["--quick", "--mtu", "9000"]))
    assert cfg.mtu == 9000 and cfg.payload == 8932
    assert config_from(parse_args(["--quick"])).mtu == 1500
    with pytest.raises(SystemExit, match=r"1280\.\.65520"):
        config_from(parse_args(["--mtu", "70000"]))
    assert results_dir(tmp_path, None) == tmp_path / "docs" / "results"
    assert results_dir(tmp_path, 65520) == tmp_path / "docs" / "results" / "mtu-65520"


def test_plot_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from p2pkpvm.bench.plot import plot

    run = run_of([sample("p2pkp", 2.0, size=s) for s in (4096, MiB, 64 * MiB)])
    plot(run, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_rewrites_a_results_folder_from_raw_json(tmp_path: Path) -> None:
    from p2pkpvm.bench.main import main

    run = run_of([sample("p2pkp", 2.0), sample("tcp-sendfile", 0.5)])
    # the meta of a real run (docs/results/raw.json of 2026-11-25)
    run.meta.update(
        {
            "caches": ["cold", "warm"],
            "command": "make bench",
            "commit": "29fa2c6",
            "cpu": "Intel(R) Xeon(R) Processor",
            "date": "2026-11-25 21:41:52 UTC",
            "guest": "1 vCPU / 512M each",
            "host": "h",
            "host_cpus": "2",
            "host_kernel": "6.18.44-fc-v769",
            "loadavg": "0.45 1.13 2.19",
            "methods": ["p2pkp", "tcp-sendfile"],
            "module_sha256": "d7835a48d7ffbe5d",
            "peers": [3],
            "reps": 1,
            "sizes": [64 * MiB],
        }
    )
    (tmp_path / "raw.json").write_text(run.to_json())
    assert main(["--render", str(tmp_path)]) == 0
    assert (tmp_path / "table.md").read_text() == markdown(run)
    assert (tmp_path / "table.tex").read_text() == latex(run)
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "raw.csv").exists() and (tmp_path / "README.md").exists()


def test_render_names_an_unreadable_raw_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from p2pkpvm.bench.main import main

    # raw data without the meta that README.md needs
    (tmp_path / "raw.json").write_text(run_of([sample("p2pkp", 2.0)]).to_json())
    assert main(["--render", str(tmp_path)]) == 2
    assert f"cannot read {tmp_path}/raw.json" in capsys.readouterr().err
    assert not (tmp_path / "table.md").exists()
