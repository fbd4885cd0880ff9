"""The one reader of the tools' --json output: real output of the built tools where the host
can produce it (no module loaded: the socket calls fail), the documented events otherwise."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from p2pkpvm import paths
from p2pkpvm.scenario import toolout
from p2pkpvm.scenario.scenario import (
    op_lines,
    op_result,
    parse_peer_results,
    parse_received,
)

SEND_JSON = """\
{"event":"sent","file":"/tmp/src","size":2097152,"peers":2,"duration_ns":1222348000}
{"event":"peer","file":"/tmp/src","addr":"10.99.0.2:7200","state":"DONE","error":null,\
"bytes_acked":2097152,"datagrams_sent":1731,"retransmitted":230}
{"event":"peer","file":"/tmp/src","addr":"[fd00:99::4]:7200","state":"FAILED",\
"error":"ETIMEDOUT","bytes_acked":1400,"datagrams_sent":90,"retransmitted":3}
"""


def tool(*argv: object) -> str:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=30, check=False
    ).stdout


def test_sent_and_peers() -> None:
    (f,) = toolout.sent(SEND_JSON)
    assert (f.file, f.size, f.peers, f.ms) == ("/tmp/src", 2097152, 2, 1222.348)
    assert f.results["10.99.0.2:7200"] == toolout.Peer(
        "/tmp/src", "10.99.0.2:7200", "DONE", "", 2097152, 1731, 230
    )
    failed = toolout.peers(SEND_JSON)["[fd00:99::4]:7200"]
    assert (failed.state, failed.errname, failed.acked) == ("FAILED", "ETIMEDOUT", 1400)


def test_broken_json_names_the_line() -> None:
    with pytest.raises(toolout.ToolOutputError, match=r"p2pkp-send:2: not a JSON object"):
        toolout.sent('{"event":"sent"}\n{"event": oops\n')


def test_non_json_lines_are_skipped() -> None:
    assert toolout.received('Killed\n{"event":"received","path":"/x","size":3}\n') == [("/x", 3)]


@pytest.mark.skipif(not paths.OP.exists(), reason="tools not built (make tools)")
def test_real_p2pkp_op_output_reads_as_calls() -> None:
    out = tool(paths.OP, "--json", "echo:ready", "pid", "socket", "connect:10.0.0.2:7", "close")
    t = toolout.Transcript(out)
    assert [c.op for c in t.calls] == ["echo", "pid", "socket", "connect", "close"]
    assert t.calls[0].line == "ready"
    assert int(t.call("pid").result) > 0
    # no module on the host: the family is not supported; the other calls get EBADF
    assert op_result(out, "socket") == "-1 EAFNOSUPPORT"
    assert t.call("connect 10.0.0.2:7").result == "-1 EBADF"
    assert "connect 10.0.0.2:7 = -1 EBADF\n" in t
    # read again (a helper given a Transcript): the same calls, not a re-parse of the text
    assert toolout.Transcript(t).calls == t.calls and op_result(t, "socket") == "-1 EAFNOSUPPORT"
    # op_lines of a Transcript (what OpJob.wait().output is) are its calls' lines, as of the
    # raw JSON: it used to re-parse the rendering as JSON and find nothing
    assert op_lines(t) == op_lines(out) == [c.line for c in t.calls if c.op != "echo"]
    assert "connect 10.0.0.2:7 = -1 EBADF" in op_lines(t)


def test_peer_results_of_p2pkp_op() -> None:
    out = (
        '{"op":"getsockopt","arg":"peer_results","ret":0,"errno":null,"peers":['
        '{"addr":"10.99.0.2:7200","state":"DONE","status":"OK","bytes_acked":5,'
        '"datagrams_sent":1,"datagrams_retransmitted":0}]}\n'
    )
    (p,) = parse_peer_results(out)
    assert (p.addr, p.state, p.status, p.bytes_acked) == ("10.99.0.2:7200", "DONE", "OK", 5)


@pytest.mark.skipif(not paths.RECV.exists(), reason="tools not built (make tools)")
def test_real_receiver_error_event(tmp_path: object) -> None:
    out = tool(paths.RECV, "--json", "--listen", "127.0.0.1:9", "--out", "/tmp/x")
    (e,) = toolout.errors(out)
    assert (e.call, e.errno) == ("socket", "EAFNOSUPPORT")
    assert toolout.listening(out) is None and parse_received(out) == []


@pytest.mark.skipif(not paths.OP.exists(), reason="tools not built (make tools)")
def test_p2pkp_op_readiness_calls_on_a_host_udp_socket() -> None:
    """The calls of issue 17's tests (nonblock, poll, epoll, SO_ERROR, timeouts, clock) on a
    real socket of the host: an AF_INET UDP socket (family 2), which is writable at once."""
    out = tool(
        paths.OP,
        "--json",
        "socket:dgram:0:2",
        "poll:out:0",
        "poll:in:0",
        "nonblock:on",
        "recv-dontwait:/x",
        "setsockopt:rcvtimeo:50",
        "setsockopt:sndtimeo:50",
        "epoll-add:et",
        "epoll-wait:1:1000",
        "getsockopt:error",
        "clock",
    )
    lines = op_lines(out)
    assert lines[1:10] == [
        "poll out 0 = 1 revents=OUT",
        "poll in 0 = 0 revents=none",
        "nonblock on = 0",
        "recv-dontwait /x = -1 EAGAIN",
        "setsockopt rcvtimeo 50 = 0",
        "setsockopt sndtimeo 50 = 0",
        "epoll-add et = 0",
        "epoll-wait 1 1000 = 1 events=1:OUT",
        "getsockopt error = 0 value=OK",
    ], out
    assert int(op_result(out, "clock")) > 0


def test_p2pkp_op_descriptor_calls_on_the_host(tmp_path: Path) -> None:
    """The descriptor calls of issue 17's item 4 where the host can run them: an O_TMPFILE
    named with link-file, fstat-file, and send-fd on a UDP socket of the host (which refuses
    SCM_RIGHTS: the call's line, not P2PKP's semantics)."""
    name = tmp_path / "named"
    out = tool(
        paths.OP,
        "--json",
        "socket:dgram:0:2",
        f"open:tmpfile:{tmp_path}",
        "fstat-file",
        f"link-file:{name}",
        "send-fd-num:999",
        "close-file",
        f"open:r+w:{tmp_path}/missing",
    )
    lines = op_lines(out)
    assert lines[2:4] == ["fstat-file = 0 size=0", f"link-file {name} = 0"], out
    assert lines[4].startswith("send-fd-num 999 = -1 "), out
    assert lines[5:] == ["close-file = 0", f"open r+w {tmp_path}/missing = -1 ENOENT"], out
    assert name.is_file()


@pytest.mark.skipif(not paths.FANOUT.exists(), reason="tools not built (make tools)")
@pytest.mark.parametrize(
    "spec", ["relative=10.0.0.2", "/abs/file", "/abs/file=", "/abs/file=10.0.0.300"]
)
def test_p2pkp_fanout_refuses_bad_jobs(spec: str) -> None:
    res = subprocess.run(
        [str(paths.FANOUT), spec], capture_output=True, text=True, timeout=30, check=False
    )
    assert res.returncode == 2, (spec, res.stdout, res.stderr)
    assert res.stderr.startswith("p2pkp-fanout: "), res.stderr
