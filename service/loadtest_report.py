"""The `dwserve loadtest` report: Markdown table + PNG of latency percentiles and throughput
per target, with the machine it ran on (service/loadtest.py measures, this writes)."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .loadtest import Phase

PERCENTILES = (50, 90, 95, 99)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    load = "%.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else "n/a"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load": load}


def error_ratio(ph: Phase) -> float:
    """Non-2xx answers and failed requests over every request the window recorded."""
    total = sum(ph.statuses.values())
    return ph.errors / total if total else 0.0


def failures(phases: list[Phase], max_error_ratio: float) -> list[str]:
    """Why the run failed, one line per failing phase (empty: it passed)."""
    out = []
    for ph in phases:
        total = sum(ph.statuses.values())
        if not ph.ok:
            out.append(f"phase {ph.target.label!r}: no request succeeded ({total} sent: "
                       f"{dict(sorted(ph.statuses.items())) or 'none'}); is the server up and serving "
                       "this model and impl?")
        elif error_ratio(ph) > max_error_ratio:
            out.append(f"phase {ph.target.label!r}: error ratio {error_ratio(ph):.2%} ({ph.errors} of {total} "
                       f"requests: {dict(sorted(ph.statuses.items()))}) is above --max-error-ratio "
                       f"{max_error_ratio:g}; 503s mean a full queue (lower --concurrency or raise the "
                       "server's --max-queue-size), others are in the server log; pass a higher "
                       "--max-error-ratio to accept them")
    return out


def report_files(out: Path) -> tuple[Path, Path]:
    """(OUT.md, OUT.png) for --out OUT, a path without suffix: a dot in the name (run-0.5s, v1.2)
    stays, where with_suffix would cut it; a given .md or .png is not doubled."""
    base = out.with_suffix("") if out.suffix in (".md", ".png") else out
    return base.with_name(base.name + ".md"), base.with_name(base.name + ".png")


def write_report(phases: list[Phase], args, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    m = machine()
    base = phases[0]
    what = {"lfm2": f" ({args.tokens} tokens)", "mobilenet_v2": " (1x3x224x224)",
            "generate": f" (lfm2 /v1/generate: {args.tokens}-token prompt, {args.new_tokens} new tokens)",
            "chat": f" (lfm2 /v1/chat/completions: a shared {args.tokens}-character system prompt + a "
                    f"question per worker, {args.new_tokens} new tokens)"}
    setup = (f"model `{args.model}`" + what[args.model]
             + f", concurrency {args.concurrency}, {args.duration:g} s x {args.rounds} round(s) per target"
             f" after {args.warmup:g} s warm-up; {m['cpu']} ({m['cores']} cores, load average"
             f" {m['load']} at the end: other work on the host inflates latencies), torch {m['torch']},"
             f" Python {m['python']}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    rows = ["| target | server impl | ok | errors | req/s | p50 ms | p90 ms | p95 ms | p99 ms | "
            "launches/forward | p50 speed-up |", "|" + "---|" * 11]
    for ph in phases:
        launches = ", ".join(f"{v:g} {k}" for k, v in sorted(ph.launches.items())) or "n/a"
        rows.append(
            f"| {ph.target.label} | {', '.join(sorted(ph.server_impl)) or '?'} | {ph.ok} | {ph.errors} | "
            f"{ph.rps:.2f} | " + " | ".join(ph.ms(p) for p in PERCENTILES)
            + f" | {launches} | {f'{base.pct(50) / ph.pct(50):.2f}x' if base.ok and ph.ok else '-'} |")
    errors = [f"- {ph.target.label}: {error_ratio(ph):.2%} of requests (--max-error-ratio "
              f"{args.max_error_ratio:g}): {dict(sorted(ph.statuses.items()))}" for ph in phases if ph.errors]
    cmd = "dwserve loadtest " + " ".join(args.argv)
    text = "\n".join([
        f"# dwserve load test: {' vs '.join(p.target.label for p in phases)}", "",
        f"Setup: {setup}.", "", f"Command: `{cmd}`", "", *rows, "",
        f"Latency is client-side wall time of one {'generation' if args.model in ('generate', 'chat') else 'OIP v2 infer'} request (closed loop: each worker waits "
        "for its answer before sending the next), so req/s is the server's throughput at this "
        "concurrency. Speed-up is the first target's p50 over each target's p50.", "",
        *(["Non-2xx answers:", *errors, ""] if errors else []),
        f"![latency and throughput]({report_files(out)[1].name})", ""])
    md, png = report_files(out)
    md.write_text(text)
    plot(phases, setup, png)


def plot(phases: list[Phase], setup: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p.target.label for p in phases]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(phases)
    for i, ph in enumerate(phases):
        xs = [j + (i - (len(phases) - 1) / 2) * width for j in range(len(PERCENTILES))]
        bars = ax1.bar(xs, [ph.pct(p) * 1e3 if ph.ok else 0 for p in PERCENTILES], width, label=ph.target.label)
        ax1.bar_label(bars, labels=[f"{ph.pct(p) * 1e3:.0f}" if ph.ok else "-" for p in PERCENTILES], fontsize=7)
    ax1.set_xticks(range(len(PERCENTILES)), [f"p{p}" for p in PERCENTILES])
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("request latency percentiles")
    ax1.legend()
    bars = ax2.bar(labels, [p.rps for p in phases], color=[f"C{i}" for i in range(len(phases))])
    ax2.bar_label(bars, fmt="%.2f", fontsize=8)
    ax2.set_ylabel("requests / s")
    ax2.set_title("throughput")
    fig.suptitle("\n".join(_wrap(setup, 120)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = ""
        line = f"{line} {word}".strip()
    return lines + [line]
