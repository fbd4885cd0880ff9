"""Unit tests of p2pkpvm.scenario.fairness on real captured output (no VMs).

window-vm1-pair.txt: window_script(1, 3) in a TCG guest sending 64 MiB through a 20 Mbit/s
ingress cap; proc-sender-sending.txt: /proc/net/p2pkp right after; iperf3-loopback-3s.json:
`iperf3 -c 127.0.0.1 -t 3 -i 1 -J` on the host (iperf 3.12).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pkpvm.net.netem import apply_cmds
from p2pkpvm.scenario import fairness

DATA = Path(__file__).parent / "data" / "fairness"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_peer_lines_read_the_congestion_state() -> None:
    (peer,) = fairness.peer_lines(text("proc-sender-sending.txt"))
    assert peer["state"] == "data"
    assert (peer["cc"], peer["cwnd"], peer["ssthresh"]) == ("1", "83", "75")
    assert int(peer["acked"]) == 15038864 and int(peer["pacing_Bps"]) == 3084364
    assert (peer["losses"], peer["timeouts"], peer["undos"]) == ("5", "0", "0")


def test_parse_window_rate_and_state() -> None:
    flow = fairness.parse_window("p2pkp vm1->vm2", text("window-vm1-pair.txt"))
    assert flow.bytes_per_s == pytest.approx(8634960 / 3.60122358)
    assert flow.cc["cwnd"] == "78" and flow.cc["srtt_us"] == "48923"
    assert "cwnd=78" in flow.describe() and "Mbit/s" in flow.describe()


def test_parse_window_refuses_a_finished_transfer() -> None:
    done = text("window-vm1-pair.txt").replace("state=data", "state=done")
    with pytest.raises(fairness.FairnessError, match="too small for the window"):
        fairness.parse_window("p2pkp", done)


def test_parse_window_refuses_missing_or_empty_measurements() -> None:
    with pytest.raises(fairness.FairnessError, match="no 'fair ns="):
        fairness.parse_window("p2pkp", "sleep: not found\n")
    zero = text("window-vm1-pair.txt").replace("bytes=8634960", "bytes=0")
    with pytest.raises(fairness.FairnessError, match="0 bytes"):
        fairness.parse_window("p2pkp", zero)


def test_parse_iperf_window_takes_the_intervals_inside() -> None:
    raw = text("iperf3-loopback-3s.json")
    whole = fairness.parse_iperf_window("tcp", raw, 0.0, 3.0)
    middle = fairness.parse_iperf_window("tcp", raw, 1.0, 1.0)
    assert whole.bytes_per_s > 0 and middle.bytes_per_s > 0
    assert whole.cc == {}
    # the middle second alone is one of the three
    assert middle.bytes_per_s != whole.bytes_per_s


def test_parse_iperf_window_refuses_a_short_run_and_garbage() -> None:
    raw = text("iperf3-loopback-3s.json")
    with pytest.raises(fairness.FairnessError, match="covered"):
        fairness.parse_iperf_window("tcp", raw, 3.0, 10.0)
    with pytest.raises(fairness.FairnessError, match="unreadable"):
        fairness.parse_iperf_window("tcp", "iperf3: error - unable to connect", 0.0, 3.0)


def test_shares() -> None:
    a = fairness.Flow("a", 1_000_000.0, {})
    b = fairness.Flow("b", 1_500_000.0, {})
    sh = fairness.Shares(a, b, 2_500_000.0)
    assert sh.share_a == pytest.approx(0.4) and sh.utilisation == pytest.approx(1.0)
    assert "share of the first 40.0%" in sh.describe()


def test_bottleneck_queue_reaches_netem() -> None:
    cmds = apply_cmds(fairness.bottleneck(), "eth0", "ingress", fairness.QUEUE_PKTS)
    assert any("ifb0 root netem limit 100 rate 20mbit" in c for c in cmds), cmds


def test_window_script_measures_inside_the_guest() -> None:
    s = fairness.window_script(3, 10)
    assert s.startswith("sleep 3; a0=") and "sleep 10; a1=" in s
    assert "fair ns=$((t1 - t0)) bytes=$((a1 - a0))" in s
