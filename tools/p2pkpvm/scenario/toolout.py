"""The one reader of the P2PKP tools' machine-readable output (`--json`: one object a line).

p2pkp-send and p2pkp-recv print events ({"event": "sent"|"peer"|"listening"|"received"|
"error", ...}); p2pkp-op prints one object per call ({"op", "arg", "ret", "errno", ...}).
Lines that are not JSON objects (a shell's "Killed", strace's own lines) are skipped; a line
that starts like an object but does not parse is an error naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from p2pkpvm.errors import HarnessError


class ToolOutputError(HarnessError):
    """Tool output that does not have the documented --json form."""


def records(text: str, where: str = "tool output") -> list[dict[str, Any]]:
    """Every JSON object line of text, in order."""
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ToolOutputError(f"{where}:{n}: not a JSON object: {line!r} ({exc})") from None
        if not isinstance(obj, dict):
            raise ToolOutputError(f"{where}:{n}: not a JSON object: {line!r}")
        out.append(obj)
    return out


def events(text: str, kind: str, where: str = "tool output") -> list[dict[str, Any]]:
    """The p2pkp-send/p2pkp-recv events of one kind ("sent", "peer", "received", ...)."""
    return [r for r in records(text, where) if r.get("event") == kind]


# ---- p2pkp-send / p2pkp-recv ------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One peer's result of a write (p2pkp-send --json "peer" event)."""

    file: str
    addr: str
    state: str  # DONE, FAILED, IDLE
    errname: str  # "" or the errno name
    acked: int
    dgrams: int
    retrans: int


@dataclass(frozen=True)
class Sent:
    """One file p2pkp-send wrote ("sent" event) and its peers' results."""

    file: str
    size: int
    peers: int
    ms: float  # the kernel's START-to-verified-end time
    results: dict[str, Peer] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolError:
    call: str
    arg: str
    errno: str
    message: str


def peers(text: str) -> dict[str, Peer]:
    """Every peer result by address (the last one when several files were sent)."""
    return {p.addr: p for p in (_peer(r) for r in events(text, "peer", "p2pkp-send"))}


def sent(text: str) -> list[Sent]:
    """The files p2pkp-send --json wrote, with their peers' results."""
    files = []
    all_peers = [_peer(r) for r in events(text, "peer", "p2pkp-send")]
    for r in events(text, "sent", "p2pkp-send"):
        ns = r.get("duration_ns")
        files.append(
            Sent(
                str(r["file"]),
                int(r["size"] if r["size"] is not None else -1),
                int(r["peers"]),
                float(ns) / 1e6 if ns is not None else float("nan"),
                {p.addr: p for p in all_peers if p.file == r["file"]},
            )
        )
    return files


def _peer(r: dict[str, Any]) -> Peer:
    return Peer(
        str(r["file"]),
        str(r["addr"]),
        str(r["state"]),
        str(r["error"] or ""),
        int(r["bytes_acked"]),
        int(r["datagrams_sent"]),
        int(r["retransmitted"]),
    )


def errors(text: str) -> list[ToolError]:
    """The failed calls a tool reported ("error" events)."""
    return [
        ToolError(str(r["call"]), str(r["arg"] or ""), str(r["errno"]), str(r["message"]))
        for r in events(text, "error")
    ]


def received(text: str) -> list[tuple[str, int]]:
    """(path, size) of every file p2pkp-recv --json received, in order."""
    return [(str(r["path"]), int(r["size"])) for r in events(text, "received", "p2pkp-recv")]


def received_ms(text: str) -> list[float]:
    """The kernel's time (START to verified end, ms) of every file p2pkp-recv --json
    received, in order (NaN where the event has no duration_ns)."""
    out = []
    for r in events(text, "received", "p2pkp-recv"):
        ns = r.get("duration_ns")
        out.append(float(ns) / 1e6 if ns is not None else float("nan"))
    return out


def listening(text: str) -> str | None:
    """The address p2pkp-recv --json bound ("listening" event), or None (not yet)."""
    found = events(text, "listening", "p2pkp-recv")
    return str(found[0]["addr"]) if found else None


# ---- p2pkp-op -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCall:
    """One call of p2pkp-op --json."""

    op: str
    arg: str | None
    ret: int
    errno: str | None
    extra: dict[str, Any]

    @property
    def what(self) -> str:
        return self.op if self.arg is None else f"{self.op} {self.arg}"

    @property
    def result(self) -> str:
        """ "0", "3", "-1 EACCES"."""
        return f"-1 {self.errno}" if self.ret < 0 else str(self.ret)

    @property
    def line(self) -> str:
        """The call as one text line: 'NAME ARGS = RET k=v...' (echo: its text)."""
        if self.op == "echo":
            return self.arg or ""
        text = f"{self.what} = {self.result}"
        for k, v in self.extra.items():
            if k != "peers":
                text += f" {k}={v}"
        for i, p in enumerate(self.extra.get("peers", [])):
            text += f"\n  peer[{i}] " + " ".join(f"{k}={v}" for k, v in p.items())
        return text


def op_calls(text: str) -> list[OpCall]:
    """The calls in p2pkp-op --json output; a Transcript (already read: as a str it is the
    rendering, not the JSON) gives its own calls."""
    if isinstance(text, Transcript):
        return list(text.calls)
    out = []
    for r in records(text, "p2pkp-op"):
        if "op" not in r:
            continue
        extra = {k: v for k, v in r.items() if k not in ("op", "arg", "ret", "errno")}
        out.append(OpCall(str(r["op"]), r["arg"], int(r["ret"]), r["errno"], extra))
    return out


class Transcript(str):
    """p2pkp-op --json output read into calls; as a str, one text line per call."""

    calls: list[OpCall]
    raw: str  # what p2pkp-op printed

    def __new__(cls, raw: str) -> Transcript:
        if isinstance(raw, Transcript):
            return raw  # already read: its text is the rendering, not the JSON
        calls = op_calls(raw)
        self = super().__new__(cls, "".join(c.line + "\n" for c in calls))
        self.calls = calls
        self.raw = raw
        return self

    def call(self, what: str) -> OpCall:
        """The first call named `what` ("write /etc/shadow", "socket")."""
        for c in self.calls:
            if c.what == what:
                return c
        raise AssertionError(f"p2pkp-op output has no call {what!r}:\n{self.raw}")
