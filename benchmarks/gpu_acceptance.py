"""Issue 6's acceptance list, read off one H200 run's summary (benchmarks/gpu_report.py writes it)
and the result file names beside it. Used by tests/test_gpu_results.py on the committed files and
by benchmarks/gpu_collect.py on a run just fetched. Reads numbers, measures nothing."""
from __future__ import annotations

# What issue 6 asks to be met, by the summary's check names (benchmarks/gpu_report.py).
REQUIRED_CHECKS = (
    "correctness: every impl x dtype x case within tolerance",
    "[float32] seed (1,2048,21) k=3: fused = 1 CUDA kernel per call",
    "[float32] seed: per_group / fused >= 1000x",
    "[float32] memory-bound shapes: fused >= 80% of copy ceiling",
    "[float32] fused no slower than native on every suite shape",
    "[float32] auto within 5% of the fastest impl",
)
FILES = ("ops-h200.json", "ops-h200.md", "ops-h200.png", "models-h200.json", "models-h200.md", "models-h200.png")
DECODE = {(p, b) for p in ("lfm2-demo", "lfm2-350m") for b in (1, 16)}


def h200_failures(summary: dict, present: set[str]) -> list[str]:
    """Every acceptance item of issue 6 the summary (and the committed file names) miss."""
    env, out = summary.get("environment") or {}, []
    if "H200" not in (env.get("device_name") or "").upper():
        out.append(f"not an H200: {env.get('device_name')!r}")
    out += [f"environment lacks {k}" for k in ("gpu_driver", "torch", "triton", "cuda") if not env.get(k)]
    out += [f"missing {f}" for f in FILES if f not in present]
    checks = {c["name"]: c for c in summary.get("checks", [])}
    out += [f"{name}: {checks[name]['status'] if name in checks else 'absent'}"
            for name in REQUIRED_CHECKS if checks.get(name, {}).get("status") != "met"]
    out += [f"{c['name']}: NOT met ({c['detail']})" for c in checks.values() if c["status"] == "NOT met"
            and c["name"].startswith("decode")]
    rows = {(r["preset"], r["batch"], r["variant"]): r for r in summary.get("decode", []) if not r.get("error")}
    for preset, batch in sorted(DECODE):
        for variant in ("before", "after"):
            r = rows.get((preset, batch, variant))
            if r is None or r.get("generate_tokens_per_s") is None or r.get("kernels_per_token") is None:
                out.append(f"decode {preset} b{batch} {variant}: tokens/s or kernels per token not measured")
    return out
