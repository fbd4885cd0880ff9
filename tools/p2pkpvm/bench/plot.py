"""PNG plot of a bench run: median wall time vs file size per method (the interval of the
median as error bars)."""

from __future__ import annotations

from pathlib import Path

from p2pkpvm.bench.model import METHOD_LABELS, METHODS, BenchRun, aggregate


def plot(run: BenchRun, path: Path, cache: str = "warm") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in aggregate(run) if r.cache == cache and r.wall_med is not None]
    peer_counts = sorted({r.peers for r in rows}) or [1]
    fig, axes = plt.subplots(
        1, len(peer_counts), figsize=(5 * len(peer_counts), 4), squeeze=False, sharey=True
    )
    for ax, peers in zip(axes[0], peer_counts, strict=True):
        for method in METHODS:
            pts = sorted(
                (r.size, r.wall_med, r.wall_lo, r.wall_hi)
                for r in rows
                if r.method == method
                and r.peers == peers
                and r.wall_med is not None
                and r.wall_lo is not None
                and r.wall_hi is not None
            )
            if not pts:
                continue
            xs = [p[0] / 1024 for p in pts]
            ys = [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                marker="o",
                capsize=3,
                label=METHOD_LABELS.get(method, method),
                linewidth=2.5 if method == "p2pkp" else 1.2,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("file size (KiB)")
        ax.set_title(f"{peers} peer{'s' if peers > 1 else ''}, {cache} cache")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("wall time until all receivers have the file (s)")
    axes[0][-1].legend(fontsize=8)
    accel = run.meta.get("accel", "?")
    fig.suptitle(f"P2PKP vs baselines ({accel}, {run.meta.get('kernel', '?')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
