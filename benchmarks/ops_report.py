"""The operator benchmark's records as reports (benchmarks/ops.py measures them): the Markdown
table with its acceptance lines (`write_markdown`, `acceptance`), the .md/.png re-rendered from a
results JSON (`render`), and the *_MEASURED rows for models/depthwise/auto.py (`auto_table`)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import plots
from benchmarks.ops_suite import IMPLS, SEED


def write_markdown(records: list[dict], path: Path, env: dict, quick: bool) -> None:
    impls = list(dict.fromkeys(r["impl"] for r in records))
    shapes = list(dict.fromkeys(r["shape"]["name"] for r in records))
    by = {(r["shape"]["name"], r["impl"]): r for r in records}
    fmt = lambda v: "-" if v is None else f"{v:,.1f}"
    lines = [f"# Depthwise operator benchmark ({env['device']}, {records[0]['dtype']})", "",
             f"Measured on **{env['device_name']}** ({env['cpu_count']} cores, "
             f"{env['torch_threads']} torch thread(s)), torch {env['torch']}, triton {env['triton']}."
             + (" These are 2-core shared-machine CPU numbers: compare ratios, not absolutes."
                if env["device"] == "cpu" else ""),
             ("Clock: CPU time of the timing thread (`--clock thread_cpu`, 1 torch thread), "
              "taken on a busy shared box where wall time measured the run queue, not the op; "
              "re-run with the default wall clock on a quiet machine for served-latency numbers."
              if records[0].get("clock") == "thread_cpu" else "Clock: wall, device-synchronised."),
             "Median us per call of interleaved samples (benchmarks/timing.py); "
             "`auto` = the impl models/depthwise/auto.py picks, timed through the same public op."
             + (" QUICK run: few shapes and repeats." if quick else ""), "",
             "| shape | dims | " + " | ".join(impls) + " | fastest | auto picks | auto/fastest |",
             "|---|---|" + "---:|" * len(impls) + "---|---|---:|"]
    for s in shapes:
        rs = [by[(s, i)] for i in impls if (s, i) in by]
        timed = {r["impl"]: r["median_us"] for r in rs if r["median_us"] is not None}
        concrete = {i: t for i, t in timed.items() if i != "auto"}
        best = min(concrete, key=concrete.get) if concrete else None
        ratio = timed["auto"] / concrete[best] if best and "auto" in timed else None
        sh = rs[0]["shape"]
        dims = f"x{tuple(sh['x'])} w{tuple(sh['weight'])} s{sh['stride']} p{sh['padding']}"
        # an impl timed on some shapes only (CUDA: compiled on the big ones) shows '-' elsewhere
        lines.append(f"| {s} | {dims} | " + " | ".join(fmt(by[(s, i)]["median_us"] if (s, i) in by else None)
                                                     for i in impls)
                     + f" | {best} | {rs[0]['auto_choice']} | {fmt(ratio) if ratio is None else f'{ratio:.3f}'} |")
    lines += device_table(records, impls, shapes)
    lines += ["", *acceptance(records)]
    lines += ["", "Launches per call (aten ops / CUDA kernels) and speedups:", "",
              "| shape | impl | median_us | p10-p90 us | repeats | aten_ops | cuda_kernels "
              "| x vs native | x vs per_group |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        spread = "-" if r["median_us"] is None else f"{r['p10_us']:,.1f}-{r['p90_us']:,.1f}"
        lines.append(f"| {r['shape']['name']} | {r['impl']} | {fmt(r['median_us'])} | {spread} | "
                     f"{r.get('repeats', '-')} | {r['aten_ops'] if r['aten_ops'] is not None else '-'} | "
                     f"{r['cuda_kernels'] if r['cuda_kernels'] is not None else '-'} | "
                     f"{fmt(r['speedup_vs_native'])} | {fmt(r['speedup_vs_per_group'])} |"
                     + (f" error: {r['error']}" if r["error"] else ""))
    path.write_text("\n".join(lines) + "\n")


def device_table(records: list[dict], impls: list[str], shapes: list[str]) -> list[str]:
    """Device us per call from CUDA graph replays (benchmarks/timing.py time_cuda_graph), and
    fused's and native's fraction of the copy ceiling by it; [] when no record has device_us
    (CPU, or results from before the column). '-' where an impl was not graph-timed."""
    if not any(r.get("device_us") is not None for r in records):
        return []
    by = {(r["shape"]["name"], r["impl"]): r for r in records}
    get = lambda s, i, k: (by.get((s, i)) or {}).get(k)                           # noqa: E731
    fmt = lambda v: "-" if v is None else f"{v:,.1f}"                             # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"                       # noqa: E731
    cols = [i for i in impls if any(get(s, i, "device_us") is not None for s in shapes)]
    out = ["", "Device time per call (CUDA graph replay): us per call of the kernels alone, without "
           "the host's launch cost; copy % = minimum bytes / device time / copy ceiling.", "",
           "| shape | " + " | ".join(cols) + " | fused copy % | native copy % |",
           "|---|" + "---:|" * (len(cols) + 2)]
    for s in shapes:
        out.append(f"| {s} | " + " | ".join(fmt(get(s, i, "device_us")) for i in cols)
                   + f" | {pct(get(s, 'fused', 'device_copy_fraction'))} | {pct(get(s, 'native', 'device_copy_fraction'))} |")
    return out


def acceptance(records: list[dict]) -> list[str]:
    """The acceptance checks of tests/test_benchmark_results.py, in words, for the report."""
    by = {}
    for r in records:
        if r["median_us"] is not None:
            by.setdefault(r["shape"]["name"], {})[r["impl"]] = r["median_us"]
    out = ["Acceptance:"]
    seed = by.get(SEED.name, {})
    if "per_group" in seed and "auto" in seed:
        out.append(f"- per_group/auto at {SEED.name}: {seed['per_group'] / seed['auto']:.0f}x (want >= 300x)")
    misses = []
    for name, t in by.items():
        rest = {i: v for i, v in t.items() if i != "auto"}
        if "auto" in t and rest:
            best = min(rest, key=rest.get)
            if t["auto"] > 1.05 * rest[best]:
                misses.append(f"{name} ({t['auto'] / rest[best]:.2f}x of {best})")
    out.append(f"- auto within 5% of the fastest impl on {len(by) - len(misses)}/{len(by)} shapes"
               + (f"; misses: {', '.join(misses)}" if misses else ""))
    return out


def render(json_path: Path) -> None:
    """Rewrite the .md and .png beside a results JSON from its records (no measuring)."""
    records = json.loads(json_path.read_text())
    env = {k: records[0].get(k) for k in ("device", "device_name", "cpu_count", "torch_threads",
                                          "torch", "triton")}
    write_markdown(records, json_path.with_suffix(".md"), env, quick="-quick" in json_path.stem)
    plots.channel_sweep(records, json_path.with_suffix(".png"), env)


def auto_table(records: list[dict]) -> str:
    """The *_MEASURED rows for models/depthwise/auto.py from benchmark records (paste them):
    every concrete impl measured for a shape (not auto; failed or skipped impls left out)."""
    by = {}
    for r in records:
        by.setdefault(r["shape"]["name"], {})[r["impl"]] = r
    lines = []
    for name, rs in by.items():
        sh = next(iter(rs.values()))["shape"]
        med = {i: round(rs[i]["median_us"], 1) for i in IMPLS
               if i != "auto" and i in rs and rs[i]["median_us"] is not None}
        if not med:
            continue
        best = min(med, key=med.get)
        lines.append(f"    ({name!r}, {sh['op']!r}, {tuple(sh['x'])}, {tuple(sh['weight'])}, "
                     f"{sh['stride']}, {bool(sh.get('channels_last'))}, dict({', '.join(f'{i}={t}' for i, t in med.items())})),"
                     f"  # -> {best}")
    return "\n".join(lines)
