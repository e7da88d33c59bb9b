"""What chunked prefill buys the live generations when long prompts join a continuous batch.

    python benchmarks/prefill_chunks.py [--chunks 0,128,256,512] [--long-tokens 1536] [--live 15]
                                        [--every 40] [--cycles 4] [--rounds 2] [--quick]
    dwserve bench prefill_chunks ...   # the same, through the CLI

The served lfm2 model (models.registry: lfm2-demo, seeded, impl auto) runs a ContinuousBatch
(models/lfm2/continuous.py, the engine behind /v1/generate) of 16 rows: `--live` short
generations (16-token prompts) decode without end, and every `--every` steps one
`--long-tokens` prompt joins (and leaves after its first token). Each step's wall time is a
gap between two tokens of every live stream. Per prefill chunk size (0 = whole prompts, as
without chunking), in `--rounds` turns alternating the order: the live streams' gap between
tokens p50 / p99 / max, their tokens/s, and the long prompt's time to first token.
Writes <out>/prefill-chunks-<device>[-quick].{json,md}; <out> is benchmarks/results/local/
(git-ignored) unless given; the committed files take `--out benchmarks/results`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import timing  # noqa: E402
from benchmarks.cli_args import check_out, int_list, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.depthwise import use_impl  # noqa: E402
from models.lfm2 import Sequence  # noqa: E402
from models.registry import build_model  # noqa: E402


def one_run(lm, chunk: int, args) -> dict:
    """A fresh engine: live streams joined, then `cycles` long prompts `every` steps apart."""
    engine = lm.continuous_batch(args.live + 1, 2048, cuda_graph=False, prefill_chunk=chunk or None)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.live):
        engine.add(Sequence(torch.randint(0, 256, (16,), generator=g).tolist(), max_new_tokens=1800))
    while len(engine.rows) < args.live:                  # every live stream decoding
        engine.step()
    gaps, live_tokens, ttft = [], 0, []
    for _ in range(args.cycles):
        long = engine.add(Sequence(torch.randint(0, 256, (args.long_tokens,), generator=g).tolist(),
                                   max_new_tokens=1))
        t_add = time.perf_counter()
        for _ in range(args.every):
            t0 = time.perf_counter()
            out = engine.step()
            t1 = time.perf_counter()
            gaps.append(t1 - t0)
            live_tokens += sum(1 for s, _ in out if s is not long)
            if any(s is long for s, _ in out):
                ttft.append(t1 - t_add)
    for s in engine.rows:
        engine.cancel(s)
    return {"gaps": gaps, "live_tokens": live_tokens, "seconds": sum(gaps), "ttft": ttft}


def summarize(runs: list[dict]) -> dict:
    gaps = sorted(g for r in runs for g in r["gaps"])
    return {"steps": len(gaps), "gap_p50_ms": timing.quantile(gaps, 0.5) * 1e3,
            "gap_p99_ms": timing.quantile(gaps, 0.99) * 1e3, "gap_max_ms": gaps[-1] * 1e3,
            "live_tokens_per_s": sum(r["live_tokens"] for r in runs) / sum(r["seconds"] for r in runs),
            "long_ttft_median_ms": statistics.median(t for r in runs for t in r["ttft"]) * 1e3,
            "long_prompts": sum(len(r["ttft"]) for r in runs)}


def write_markdown(res: dict, path: Path) -> None:
    a, env = res["args"], res["environment"]
    lines = [f"# Chunked prefill: live streams while long prompts join ({env['device_name']})", "",
             f"torch {env['torch']}, {env['torch_threads']} threads. `dwserve bench prefill_chunks`: lfm2 "
             f"(lfm2-demo, impl auto), a continuous batch with {a['live']} live generations; every {a['every']} "
             f"steps a {a['long_tokens']}-token prompt joins. {a['rounds']} rounds x {a['cycles']} long prompts "
             "per chunk size, in turns.", "",
             "| prefill chunk | live gap p50 | live gap p99 | live gap max | live tokens/s | long prompt TTFT (median) |",
             "|---|---|---|---|---|---|"]
    for chunk, r in res["chunks"].items():
        label = "whole prompt" if chunk == "0" else f"{chunk} tokens"
        lines.append(f"| {label} | {r['gap_p50_ms']:.0f} ms | {r['gap_p99_ms']:.0f} ms | {r['gap_max_ms']:.0f} ms | "
                     f"{r['live_tokens_per_s']:.0f} | {r['long_ttft_median_ms']:.0f} ms |")
    lines += ["", "A gap is one step of the batch: the time between two tokens of every live stream. "
              "Without chunking a joining prompt's whole prefill is one gap; chunked, it is spread over "
              "steps that each also decode the live streams.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench prefill_chunks", description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int_list(0), default=[0, 128, 256, 512], help="prefill chunk sizes, 0 = whole prompt")
    p.add_argument("--long-tokens", type=positive(int), default=1536)
    p.add_argument("--live", type=positive(int), default=15)
    p.add_argument("--every", type=positive(int), default=40)
    p.add_argument("--cycles", type=positive(int), default=4)
    p.add_argument("--rounds", type=positive(int), default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", default=str(LOCAL), help=out_help())
    args = p.parse_args(argv)
    if args.quick:
        args.long_tokens, args.live, args.every, args.cycles, args.rounds = 40, 3, 4, 2, 1
    check_out(p, args.out)
    chunks = args.chunks
    lm = build_model("lfm2").lm
    runs: dict[int, list] = {c: [] for c in chunks}
    with use_impl("auto"), torch.inference_mode():
        one_run(lm, chunks[0], argparse.Namespace(**{**vars(args), "cycles": 1}))   # warm-up
        for r in range(args.rounds):
            for c in (chunks if r % 2 == 0 else chunks[::-1]):
                runs[c].append(one_run(lm, c, args))
    res = {"benchmark": "prefill_chunks", "environment": timing.environment("cpu"),
           "args": {**{k: v for k, v in vars(args).items() if k != "out"},
                    "chunks": ",".join(map(str, chunks))},      # as typed, the committed files' form
           "chunks": {str(c): summarize(rs) for c, rs in runs.items()}}
    stem = f"prefill-chunks-cpu{'-quick' if args.quick else ''}"
    print(write_results(args.out, stem, res, write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
