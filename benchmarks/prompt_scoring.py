"""Scoring a batch of prompts (OpenAI completions' echo + logprobs, an evaluation harness's
loglikelihood batch): one forward per prompt, as before, and the prompts left-padded together.

    python benchmarks/prompt_scoring.py [--budget-s 3] [--out DIR]
    dwserve bench prompt_scoring ...   # the same, through the CLI

On the seeded lfm2-demo model (CPU, the served depthwise policy `auto`), per request of P
prompts whose lengths are drawn in [L/2, L] (a harness's contexts differ in length):
  per_prompt   models.lfm2.scoring.prompt_logprobs once per prompt (what the route did)
  together     models.lfm2.scoring.prompts_logprobs: left-padded forwards of at most
               scoring.BATCH_TOKENS padded tokens each (what the route does)
Milliseconds per request, medians of interleaved samples (benchmarks.timing). Writes
<out>/prompt-scoring-cpu.{json,md}; <out> is benchmarks/results/local/ (git-ignored) unless
given; the committed files take `--out benchmarks/results`.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import timing  # noqa: E402
from benchmarks.cli_args import at_least, check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.depthwise import use_impl  # noqa: E402
from models.lfm2.scoring import BATCH_TOKENS, prompt_logprobs, prompts_logprobs  # noqa: E402

PROMPTS = (8, 32)
LENGTHS = (32, 128, 512)


def measure(budget_s: float, prompts=PROMPTS, lengths=LENGTHS) -> list[dict]:
    from models.registry import build_model
    lm = build_model("lfm2", None, device="cpu", seed=0).lm
    rng = random.Random(0)
    records = []
    for p in prompts:
        for length in lengths:
            batch = [[rng.randrange(256) for _ in range(rng.randint(length // 2, length))] for _ in range(p)]
            fns = {"per_prompt": lambda: [prompt_logprobs(lm, ids, 1) for ids in batch],
                   "together": lambda: prompts_logprobs(lm, batch, 1)}
            with use_impl("auto"), torch.inference_mode():
                stats = timing.time_interleaved(fns, device="cpu", budget_s=budget_s, min_repeats=3, max_repeats=50)
            for path, t in stats.items():
                records.append({"prompts": p, "max_length": length, "tokens": sum(map(len, batch)), "path": path,
                                "median_ms": round(t.median_us / 1000, 2), "timing": t.as_dict()})
    return records


def write_markdown(result: dict, path: Path) -> None:
    env, by = result["environment"], {}
    for r in result["records"]:
        by.setdefault((r["prompts"], r["max_length"], r["tokens"]), {})[r["path"]] = r["median_ms"]
    lines = [f"# Scoring a batch of prompts ({env['device_name']})", "",
             f"torch {env['torch']}, {env['torch_threads']} torch threads (benchmarks/prompt_scoring.py): lfm2-demo, "
             "milliseconds per request of P prompts of L/2..L tokens, each token's log-probability and the "
             "most likely one (echo + logprobs 1), medians of interleaved samples. per_prompt: one forward per "
             f"prompt (before); together: the prompts left-padded into shared forwards of at most "
             f"{result['batch_tokens']} padded tokens (now).", "",
             "| prompts | length | tokens | per_prompt ms | together ms | per_prompt / together |",
             "|---:|---:|---:|---:|---:|---:|"]
    for (p, length, tokens), d in by.items():
        lines.append(f"| {p} | {length // 2}-{length} | {tokens} | {d['per_prompt']:.1f} | {d['together']:.1f} | "
                     f"{d['per_prompt'] / d['together']:.2f}x |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench prompt_scoring", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=positive(float), default=3.0, help="seconds of timing per case (2 paths)")
    p.add_argument("--prompts", type=positive(int), nargs="+", default=list(PROMPTS), help="prompts per request")
    p.add_argument("--lengths", type=at_least(int, 2), nargs="+", default=list(LENGTHS), help="longest prompt, tokens")
    p.add_argument("--out", type=Path, default=LOCAL, help=out_help())
    args = p.parse_args(argv)
    check_out(p, args.out)
    result = {"environment": timing.environment("cpu"), "batch_tokens": BATCH_TOKENS, "records": measure(args.budget_s, args.prompts, args.lengths)}
    print(write_results(args.out, "prompt-scoring-cpu", result, write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
