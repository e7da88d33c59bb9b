"""Markdown and PNG for benchmarks/models.py results (kept apart so models.py stays short)."""
from __future__ import annotations

from pathlib import Path

from benchmarks import plots


def _fmt_ms(us) -> str:
    return "-" if us is None else f"{us / 1e3:,.2f}"


def _fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write_markdown(result: dict, path: Path) -> None:
    env, recs, acc = result["environment"], result["records"], result["acceptance"]
    s = result["settings"]
    lines = [f"# Model benchmark ({env['device']}, {s.get('dtype', 'float32')})", "",
             f"Measured on **{env['device_name']}** ({env['cpu_count']} cores, "
             f"{env['torch_threads']} torch threads), torch {env['torch']}, triton {env['triton']}; "
             f"LFM2 preset `{s['lfm2_preset']}`"
             + (f", LFM3 preset `{s['lfm3_preset']}` (K=7)" if s.get("lfm3_preset") else "")
             + ", MobileNetV2 BN-folded (as served)."
             + (" CPU numbers from a shared 2-core machine: compare ratios, not absolutes."
                if env["device"] == "cpu" else "")
             + (" QUICK run (smoke test): few cases and repeats." if result["quick"] else "")
             + (f" Run with {env['torch_threads']} torch thread(s) on {env['cpu_count']} cores: on a "
                "machine shared with other jobs, OpenMP threads that spin against other processes "
                "make every latency erratic (tens of x on small ops)."
                if env["device"] == "cpu" and env["torch_threads"] < (env["cpu_count"] or 0) else ""),
             "", f"Command: `python benchmarks/models.py {' '.join(s.get('argv', []))}` "
             f"({s['wall_s']} s).",
             "",
             "Latency: median of interleaved samples (benchmarks/timing.py). dw share: depthwise "
             "seconds / forward seconds under models.profiling.depthwise_timer (device-synchronised), "
             f"median of {s['share_runs']} separate forwards. aten ops / CUDA kernels: one forward "
             "under count_launches.", "", "## Acceptance (LFM2: per_group share >= 50%, auto <= 5%)", ""]
    for kind, a in acc.items():
        for case, sh in a["shares"].items():
            lines.append(f"- {case}: per_group {_fmt_pct(sh['per_group'])}, auto {_fmt_pct(sh['auto'])}")
        lines.append(f"- **{kind}: {'met' if a['met'] else 'NOT met'}**")
    lines += ["", "## Per case and impl", "",
              "| case | impl | median ms | p10-p90 ms | repeats | aten ops | CUDA kernels "
              "| dw share | dw ms | x vs per_group | x vs native |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in recs:
        spread = "-" if r["median_us"] is None else f"{_fmt_ms(r['p10_us'])}-{_fmt_ms(r['p90_us'])}"
        x = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {r['case']} | {r['impl']} | {_fmt_ms(r['median_us'])} | {spread} | "
                     f"{r.get('repeats', '-')} | {r['aten_ops'] if r['aten_ops'] is not None else '-'} | "
                     f"{r['cuda_kernels'] if r['cuda_kernels'] is not None else '-'} | "
                     f"{_fmt_pct(r['dw_share'])} | {_fmt_ms(r.get('dw_us'))} | "
                     f"{x(r['speedup_vs_per_group'])} | {x(r['speedup_vs_native'])} |"
                     + (f" error: {r['error']}" if r["error"] else ""))
    path.write_text("\n".join(lines) + "\n")


def _bars(ax, recs: list[dict], key: str, scale: float, ylabel: str, title: str, logy: bool) -> None:
    """Grouped bars: one group per case, one bar per impl (fixed colours from plots.IMPL_STYLE)."""
    cases = list(dict.fromkeys(r["case"] for r in recs))
    impls = list(dict.fromkeys(r["impl"] for r in recs))
    by = {(r["case"], r["impl"]): r.get(key) for r in recs}
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        xs = [i + (j - (len(impls) - 1) / 2) * width for i in range(len(cases))]
        ys = [(by.get((c, impl)) or 0) * scale for c in cases]
        ax.bar(xs, ys, width, label=impl, color=plots.IMPL_STYLE.get(impl, {}).get("color"))
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases, rotation=30, ha="right", fontsize="small")
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")


def write_plot(result: dict, path: Path) -> None:
    env, recs = result["environment"], result["records"]
    fig, axes = plots.figure(2, width=7.0, height=5.0)
    _bars(axes[0], recs, "median_us", 1e-3, "median ms per forward (log)", "latency", True)
    _bars(axes[1], recs, "dw_share", 100.0, "% of forward time in depthwise ops",
          "depthwise share", False)
    axes[1].axhline(50, color="tab:red", linestyle=":", linewidth=1)
    axes[1].axhline(5, color="black", linestyle=":", linewidth=1)
    plots.save(fig, path, suptitle=f"models per depthwise impl on {env['device_name']} "
                                   f"({env['device']}, {env['torch_threads']} threads, torch {env['torch']})")
