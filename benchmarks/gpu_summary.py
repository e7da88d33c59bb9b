"""The rendering of benchmarks/gpu.py's summary (gpu_report.summarize's dict): the summary .md,
the LFM2 decoding table (also the decode step's .md) and the short table printed last, which is
what the device tool's reply shows of a run."""
from __future__ import annotations

from benchmarks import gpu_layouts
from benchmarks.gpu_decode import ORDER


def _fmt(v, spec=",.1f") -> str:
    return "-" if v is None else format(v, spec)


def decode_table(rows: list[dict]) -> list[str]:
    lines = ["| preset | batch | variant | impl | graph | gen tok/s | decode tok/s | ms/token | "
             "kernels/token | host launches/token |", "|---|---:|---|---|---|---:|---:|---:|---:|---:|"]
    rank = {v: i for i, v in enumerate(ORDER)}
    place = {}                                   # (preset, batch) in the order first measured
    for r in rows:
        place.setdefault((r["preset"], r["batch"]), len(place))
    for r in sorted(rows, key=lambda r: (place[(r["preset"], r["batch"])], rank.get(r["variant"], len(rank)))):
        lines.append(f"| {r['preset']} | {r['batch']} | {r['variant']} | {r['impl']} | {r.get('cuda_graph')} | "
                     f"{_fmt(r.get('generate_tokens_per_s'))} | {_fmt(r.get('decode_tokens_per_s'))} | "
                     f"{_fmt(r.get('ms_per_token'), '.2f')} | {_fmt(r.get('kernels_per_token'), 'd')} | "
                     f"{_fmt(r.get('host_launches_per_token'), 'd')} |" + (f" error: {r['error']}" if r.get("error") else ""))
    return lines


def write_summary_md(s: dict, path) -> None:
    env = s["environment"]
    lines = [f"# GPU run summary ({s['tag']})", "",
             f"Device **{env.get('device_name')}** (driver {env.get('gpu_driver')}), torch {env['torch']}, "
             f"triton {env['triton']}, CUDA {env.get('cuda')}; {env.get('cpu_count')} CPU cores. "
             f"Produced by `python benchmarks/gpu.py {' '.join(env.get('argv', []))}` in {s['wall_s']} s."
             + (" SMOKE run: tiny shapes, no GPU numbers." if s["smoke"] else ""), "",
             "## Steps", "", "| step | status | wall s | budget s | skipped | error |", "|---|---|---:|---:|---:|---|"]
    for name, st in s["steps"].items():
        lines.append(f"| {name} | {st['status']} | {st.get('wall_s', '-')} | {st.get('budget_s', '-')} | "
                     f"{len(st.get('skipped', []))} | {st.get('error') or ''} |")
    lines += ["", "## Acceptance", "", "| check | result | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {c['status']} | {c['detail']} |" for c in s["checks"]]
    if s.get("copy"):
        lines += ["", f"Copy ceiling: {s['copy']['gbps']:,.1f} GB/s (median of {s['copy']['reps']} copies of "
                  f"{s['copy']['bytes_per_buffer'] / 2**20:,.0f} MiB, read + write)."]
    if s.get("decode"):
        lines += ["", "## LFM2 decoding", "", *decode_table(s["decode"])]
    if s.get("layouts"):
        lines += ["", "## Fused weight layouts (speedup = channel-major / tap-major time)", "",
                  *gpu_layouts_table(s["layouts"])]
    lines += ["", "Files: " + ", ".join(s.get("files", []))]
    path.write_text("\n".join(lines) + "\n")


def gpu_layouts_table(rows: list[dict]) -> list[str]:
    return gpu_layouts.table(rows)


def final_table(s: dict, out_dir) -> str:
    """The short table printed last (the device tool returns only the tail of the output)."""
    env = s["environment"]
    out = [f"==== dwserve GPU summary [{s['tag']}] {env.get('device_name')} | driver {env.get('gpu_driver')} "
           f"| torch {env['torch']} | triton {env['triton']} | cuda {env.get('cuda')} | {s['wall_s']} s ===="]
    out += [f"step {n:14s} {st['status']:12s} {st.get('wall_s', '-'):>7} s"
            + (f"  skipped {len(st['skipped'])}" if st.get("skipped") else "")
            + (f"  ERROR {st['error'][:120]}" if st.get("error") else "") for n, st in s["steps"].items()]
    if s.get("copy"):
        out.append(f"copy ceiling {s['copy']['gbps']:,.1f} GB/s")
    out += [f"{c['status']:10s} {c['name']}: {c['detail'][:160]}" for c in s["checks"]]
    for r in s.get("decode", []):
        out.append(f"decode {r['preset']:10s} b{r['batch']:<3d} {r['variant']:12s} "
                   f"gen {_fmt(r.get('generate_tokens_per_s')):>9s} tok/s  decode {_fmt(r.get('decode_tokens_per_s')):>9s} tok/s  "
                   f"kernels/tok {_fmt(r.get('kernels_per_token'), 'd'):>6s}  host/tok {_fmt(r.get('host_launches_per_token'), 'd'):>6s}"
                   + (f"  ERROR {r['error'][:80]}" if r.get("error") else ""))
    out += [f"layouts {line}" for line in gpu_layouts_table(s.get("layouts") or [])[2:] if "geometric" in line]
    out.append(f"exit {s['exit_code']} ({s['verdict']}); results in {out_dir}")
    return "\n".join(out)
