"""Markdown and LaTeX tables of a bench run, and the issue's target ratios."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from p2pkpvm.bench.model import METHOD_LABELS, BenchRun, Row, aggregate


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def parse_size(text: str) -> int:
    """A size as given on a command line: bytes, or with K, M or G (64M, 512K, 1000)."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    digits = text[:-1] if mult != 1 else text
    if not digits.isdigit() or int(digits) <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected e.g. 64M, 512K or 1000")
    return int(digits) * mult


def fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.1f} ms" if v < 1.0 else f"{v:.2f} s"


def fmt_rate(bps: float | None) -> str:
    """Bytes per second as MB/s (10^6)."""
    return "-" if bps is None else f"{bps / 1e6:.1f} MB/s"


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None
    detail: str


def _find(rows: list[Row], method: str, size: int, peers: int, cache: str) -> Row | None:
    for r in rows:
        if (r.method, r.size, r.peers, r.cache) == (method, size, peers, cache):
            return r
    return None


def _beyond_link(run: BenchRun, need_bps: float) -> str:
    """A note when a wall goal needs P2PKP to move more bytes per second than `iperf3 -u`
    could even send on this link: no sender of 1,432-byte datagrams can reach it here."""
    if run.iperf is None or need_bps <= run.iperf.sender_bps / 8:
        return ""
    return (
        f"; the goal needs {fmt_rate(need_bps)} (file bytes x peers), more than iperf3 -u "
        f"could send on this link ({fmt_rate(run.iperf.sender_bps / 8)})"
    )


def targets(run: BenchRun, cache: str = "warm") -> list[Target]:
    """The issue's targets at the largest size and the most peers of the run."""
    rows = aggregate(run)
    if not rows:
        return []
    size = max(r.size for r in rows)
    peers = max(r.peers for r in rows if r.size == size)
    where = f"{fmt_size(size)} to {peers} peers, {cache} cache"
    p = _find(rows, "p2pkp", size, peers, cache)
    out = []
    for method, limit in (("udp-rw", 0.5), ("udp-sendfile", 0.8), ("tcp-sendfile", 1.0)):
        b = _find(rows, method, size, peers, cache)
        if p is None or b is None or not p.wall_med or not b.wall_med:
            out.append(
                Target(
                    f"wall P2PKP / {_label(method)}",
                    None,
                    f"<= {limit}",
                    None,
                    f"{where}: no successful sample of both",
                )
            )
            continue
        ratio = p.wall_med / b.wall_med
        out.append(
            Target(
                f"wall P2PKP / {_label(method)}",
                ratio,
                f"<= {limit}",
                ratio <= limit,
                f"{where}: {fmt_s(p.wall_med)} vs {fmt_s(b.wall_med)}"
                + _beyond_link(run, size * peers / (limit * b.wall_med)),
            )
        )
    if p is not None and p.throughput_bps and run.iperf is not None:
        link = run.iperf.received_bps / 8
        sent = run.iperf.sender_bps / 8
        ratio = p.throughput_bps / link
        out.append(
            Target(
                "P2PKP throughput / iperf3 -u",
                ratio,
                ">= 0.7",
                ratio >= 0.7,
                f"{where}: {fmt_rate(p.throughput_bps)} (file bytes x peers) vs "
                f"{fmt_rate(link)} iperf3 -u delivered to one peer (ratio {ratio:.2f}) and "
                f"{fmt_rate(sent)} it sent (ratio {p.throughput_bps / sent:.2f})",
            )
        )
    else:
        out.append(
            Target(
                "P2PKP throughput / iperf3 -u",
                None,
                ">= 0.7",
                None,
                "no P2PKP sample or no iperf3 result",
            )
        )
    sc = [s for s in run.syscalls if (s.method, s.size, s.peers) == ("p2pkp", size, peers) and s.ok]
    if sc:
        c = sc[0].calls
        got = (c.get("socket", 0), c.get("connect", 0), c.get("write", 0))
        want = (1, peers, 1)
        out.append(
            Target(
                "P2PKP sender socket/connect/write",
                float(sum(got)),
                f"= 1/{peers}/1",
                got == want,
                f"strace -f -c: {got[0]}/{got[1]}/{got[2]}, "
                f"{sc[0].total} calls in all including process start-up",
            )
        )
    return out


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _met(t: Target) -> str:
    return "n/a" if t.met is None else ("yes" if t.met else "**no**")


def markdown(run: BenchRun) -> str:
    rows = aggregate(run)
    lines = [
        "| size | peers | cache | method | wall (median) | interval of the median | n "
        "| sender syscalls | CPU (all guests) | throughput |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = f"{r.n_ok}" + (f" ({r.n_failed} FAILED)" if r.n_failed else "")
        spread = (
            f"{fmt_s(r.wall_lo)}-{fmt_s(r.wall_hi)} ({r.ci_level * 100:.0f} %)"
            if r.wall_lo is not None and r.ci_level is not None
            else "-"
        )
        lines.append(
            f"| {fmt_size(r.size)} | {r.peers} | {r.cache} | {_label(r.method)} "
            f"| {fmt_s(r.wall_med)} | {spread} | {n} "
            f"| {'-' if r.syscalls is None else r.syscalls} | {fmt_s(r.cpu_med)} "
            f"| {fmt_rate(r.throughput_bps)} |"
        )
    out = "\n".join(lines) + "\n"
    if run.iperf is not None:
        out += (
            f"\nLink limit (iperf3 -u, vm1 -> vm2): {fmt_rate(run.iperf.sender_bps / 8)} "
            f"sent, {run.iperf.lost_percent:.1f}% lost, "
            f"{fmt_rate(run.iperf.received_bps / 8)} delivered.\n"
        )
    for cache in ("warm", "cold"):
        ts = targets(run, cache)
        if not ts:
            continue
        out += f"\n| target ({cache} cache) | value | goal | met | detail |\n"
        out += "|---|---:|---|---|---|\n"
        for t in ts:
            out += f"| {t.name} | {_ratio(t.value)} | {t.goal} | {_met(t)} | {t.detail} |\n"
    return out


def _tex(s: str) -> str:
    return (
        s.replace("\\", "\\textbackslash{}")
        .replace("&", "\\&")
        .replace("%", "\\%")
        .replace("_", "\\_")
        .replace("#", "\\#")
    )


def latex(run: BenchRun) -> str:
    """A booktabs table in the style of the paper's results table (one row per cell)."""
    rows = aggregate(run)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\begin{tabular}{rrllrrrr}",
        "\\toprule",
        "Size & Peers & Cache & Method & Wall (med.) & Syscalls & CPU & Throughput \\\\",
        "\\midrule",
    ]
    prev: tuple[int, int, str] | None = None
    for r in rows:
        key = (r.size, r.peers, r.cache)
        if prev is not None and key != prev:
            lines.append("\\addlinespace")
        first = key != prev
        prev = key
        cells = [
            _tex(fmt_size(r.size)) if first else "",
            str(r.peers) if first else "",
            r.cache if first else "",
            _tex(_label(r.method)),
            _tex(fmt_s(r.wall_med)) + (f" ({r.n_failed} failed)" if r.n_failed else ""),
            "--" if r.syscalls is None else str(r.syscalls),
            _tex(fmt_s(r.cpu_med)),
            _tex(fmt_rate(r.throughput_bps)),
        ]
        if r.method == "p2pkp":
            cells[3] = "\\textbf{" + cells[3] + "}"
        lines.append(" & ".join(cells) + " \\\\")
    caption = "P2PKP against the baselines (median wall time until every receiver has the file)"
    if run.iperf is not None:
        caption += f"; link limit (iperf3 -u) {_tex(fmt_rate(run.iperf.received_bps / 8))}"
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{caption}.}}",
        "\\label{tab:bench}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"
