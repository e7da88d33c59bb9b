"""Shared plotting helpers for the benchmarks (headless: matplotlib's Agg backend).

    fig, axes = figure(2)                       # a row of 2 panels
    plot_series(axes[0], {"native": ([64, 128], [3.1, 4.2])}, xlabel="channels",
                ylabel="median time (us)", logx=True, logy=True)
    save(fig, "benchmarks/results/ops-cpu.png")
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # no display on servers/CI; must precede pyplot's import
import matplotlib.pyplot as plt  # noqa: E402

# One fixed colour/marker per impl so every benchmark plot reads the same way.
IMPL_STYLE = {
    "per_group": dict(color="tab:red", marker="o"),
    "slice_sum": dict(color="tab:blue", marker="s"),
    "compiled": dict(color="tab:purple", marker="^"),
    "fused": dict(color="tab:green", marker="D"),
    "native": dict(color="tab:gray", marker="v"),
    "auto": dict(color="black", marker="x", linestyle="--"),
}


def figure(ncols: int = 1, *, width: float = 6.0, height: float = 4.5):
    """A figure with `ncols` side-by-side axes; returns (fig, list_of_axes)."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def plot_series(ax, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                xlabel: str, ylabel: str, title: str | None = None,
                logx: bool = False, logy: bool = False) -> None:
    """One line per label; points with y None (not measured) are dropped."""
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if not pts:
            continue
        style = IMPL_STYLE.get(label, {})
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def save(fig, path: str | Path, *, suptitle: str | None = None) -> Path:
    """Write the figure as PNG (parent dirs created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suptitle:
        fig.suptitle(suptitle, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def channel_sweep(records: list[dict], path: str | Path, env: dict) -> Path:
    """ops.py's plot: time and launches against C for the records with shape.sweep set
    (the (1, C, 21) k=3 conv1d sweep), one line per impl, log-log; CUDA kernels on CUDA."""
    sweep = sorted((r for r in records if r["shape"]["sweep"]), key=lambda r: r["shape"]["channels"])
    impls = list(dict.fromkeys(r["impl"] for r in sweep))
    col = lambda key: {i: ([r["shape"]["channels"] for r in sweep if r["impl"] == i],
                           [r[key] for r in sweep if r["impl"] == i]) for i in impls}
    kind = "cuda_kernels" if env["device"] == "cuda" else "aten_ops"
    fig, axes = figure(2)
    plot_series(axes[0], col("median_us"), xlabel="channels C", ylabel="median us per call",
                title="time, (1,C,21) k=3", logx=True, logy=True)
    plot_series(axes[1], col(kind), xlabel="channels C", ylabel=f"{kind} per call",
                title="launches, (1,C,21) k=3", logx=True, logy=True)
    return save(fig, path, suptitle=f"depthwise conv1d channel sweep on {env['device_name']} "
                                    f"({env['device']}, torch {env['torch']})")
