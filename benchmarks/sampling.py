"""Host time of one decode step's sampling: the rows one by one as before, and together as now.

    python benchmarks/sampling.py [--budget-s 2] [--out DIR]
    dwserve bench sampling ...   # the same, through the CLI

A continuous batch samples each row with its own generator (models/lfm2/continuous.py). It used
to make one sample_next call per sampled row on (1, V) logits; it now samples the step's rows in
one models.lfm2.sampling.sample_batch call. Timed here per step (N rows), interleaved
(benchmarks.timing, medians), on CPU, at lfm2-demo's vocabulary (264) and LFM2's (65536), for 1
and 16 rows, under LFM2's recommended sampling (temperature 0.3, min_p 0.15) and a nucleus one
(temperature 0.7, top_p 0.9):
  greedy        argmax of the step's logits (what a greedy step pays)
  before        row by row, drawing with torch.multinomial (one random number per token) and
                top_p over the whole sorted row: what it was
  inverse_cdf   row by row with the draw of now (sampling.draw: one random number per row),
                top_p still sorted
  now           the rows together (sample_batch; top_p among sampling.NUCLEUS_CANDIDATES first)
Writes <out>/sampling-cpu.{json,md}; <out> is benchmarks/results/local/ (git-ignored) unless
given; the committed files take `--out benchmarks/results`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import timing  # noqa: E402
from benchmarks.cli_args import check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.lfm2 import sampling  # noqa: E402

VOCABS = {"lfm2-demo": 264, "lfm2": 65536}
ROWS = (1, 16)
SETTINGS = {"recommended": dict(temperature=0.3, min_p=0.15), "nucleus": dict(temperature=0.7, top_p=0.9)}


def _multinomial(probs: torch.Tensor, generator=None) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _row_by_row(logits: torch.Tensor, gens: list, settings: dict, draw, nucleus) -> torch.Tensor:
    """One step's sampling one row at a time, as the continuous batch did, with these draw and nucleus."""
    saved = sampling.draw, sampling.nucleus
    sampling.draw, sampling.nucleus = draw, nucleus
    try:
        return torch.stack([sampling.sample_next(logits[i:i + 1], settings["temperature"], None,
                                                 settings.get("top_p"), g, settings.get("min_p"))[0]
                            for i, g in enumerate(gens)])
    finally:
        sampling.draw, sampling.nucleus = saved


def _together(logits: torch.Tensor, gens: list, settings: dict) -> torch.Tensor:
    """One step's sampling as the continuous batch does it now: the rows in one call."""
    n = len(gens)
    return sampling.sample_batch(logits, [settings["temperature"]] * n, [None] * n, [settings.get("top_p")] * n,
                                 [settings.get("min_p")] * n, gens)


def measure(budget_s: float, vocabs=tuple(VOCABS)) -> list[dict]:
    records = []
    for vocab_name, vocab in ((n, VOCABS[n]) for n in vocabs):
        for rows in ROWS:
            logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(rows)) * 4   # (N, V)
            gens = [torch.Generator().manual_seed(i) for i in range(rows)]
            for setting, values in SETTINGS.items():
                fns = {"greedy": lambda: logits.argmax(-1),
                       "before": lambda: _row_by_row(logits, gens, values, _multinomial, sampling.sorted_nucleus),
                       "inverse_cdf": lambda: _row_by_row(logits, gens, values, sampling.draw,
                                                          sampling.sorted_nucleus),
                       "now": lambda: _together(logits, gens, values)}
                with torch.inference_mode():
                    stats = timing.time_interleaved(fns, device="cpu", budget_s=budget_s, min_repeats=10,
                                                    max_repeats=500)
                for path, t in stats.items():
                    records.append({"vocab": vocab_name, "vocab_size": vocab, "rows": rows, "sampling": setting,
                                    "path": path, "median_us": round(t.median_us, 1), "timing": t.as_dict()})
    return records


def write_markdown(result: dict, path: Path) -> None:
    env, by = result["environment"], {}
    for r in result["records"]:
        by.setdefault((r["vocab"], r["vocab_size"], r["rows"], r["sampling"]), {})[r["path"]] = r["median_us"]
    lines = [f"# Sampling one decode step ({env['device_name']})", "",
             f"torch {env['torch']}, {env['torch_threads']} torch threads (benchmarks/sampling.py): microseconds "
             "per step of N sampled rows, medians of interleaved samples. before: row by row, "
             "torch.multinomial's draw and top_p over the whole sorted row; inverse_cdf: row by row with "
             "the draw of now, top_p still sorted; now: the rows in one sample_batch call, top_p among the "
             f"{result['nucleus_candidates']} most likely tokens first.", "",
             "| vocabulary | rows | sampling | greedy us | before us | inverse_cdf us | now us | before / now |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for (name, vocab, rows, setting), d in by.items():
        lines.append(f"| {name} ({vocab}) | {rows} | {setting} | {d['greedy']:.0f} | {d['before']:.0f} | "
                     f"{d['inverse_cdf']:.0f} | {d['now']:.0f} | {d['before'] / d['now']:.2f}x |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench sampling", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=positive(float), default=2.0, help="seconds of timing per case (3 paths)")
    p.add_argument("--vocabs", nargs="+", choices=tuple(VOCABS), default=tuple(VOCABS),
                   help="vocabulary sizes to time (lfm2-demo: 264, lfm2: 65536)")
    p.add_argument("--out", type=Path, default=LOCAL, help=out_help())
    args = p.parse_args(argv)
    check_out(p, args.out)
    result = {"environment": timing.environment("cpu"), "nucleus_candidates": sampling.NUCLEUS_CANDIDATES,
              "records": measure(args.budget_s, args.vocabs)}
    print(write_results(args.out, "sampling-cpu", result, write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
