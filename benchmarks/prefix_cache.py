"""What prefix caching buys chat requests that share a system prompt, in a busy continuous batch.

    python benchmarks/prefix_cache.py [--system-tokens 1024] [--question-tokens 32] [--live 8]
                                      [--every 8] [--requests 12] [--rounds 2] [--quick]
    dwserve bench prefix_cache ...   # the same, through the CLI

The served lfm2 model (models.registry: lfm2-demo, seeded, impl auto) runs a ContinuousBatch
(the engine behind /v1/generate and /v1/chat/completions, 256-token prefill chunks) in which
`--live` generations decode without end; every `--every` steps a request joins whose prompt is
one shared `--system-tokens` system prompt plus its own `--question-tokens` question, and
leaves after its first token. With the prefix cache (models/lfm2/prefix_cache.py, 256 MiB)
and without it, in `--rounds` turns alternating the order, on fresh engines: the requests'
time to first token (the first request of a cached run fills the cache), prompt tokens
restored instead of prefilled, and the live streams' gaps and tokens/s.
Writes <out>/prefix-cache-<device>[-quick].{json,md}; <out> is benchmarks/results/local/
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
from benchmarks.cli_args import check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.depthwise import use_impl  # noqa: E402
from models.lfm2 import Sequence  # noqa: E402
from models.lfm2.prefix_cache import PrefixCache  # noqa: E402
from models.registry import build_model  # noqa: E402

CACHE_BYTES = 256 << 20


def one_run(lm, cached: bool, args, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = lambda n: torch.randint(0, 256, (n,), generator=g).tolist()   # noqa: E731
    cache = PrefixCache(CACHE_BYTES) if cached else None
    length = max(args.system_tokens + args.question_tokens + 64, 2048)
    engine = lm.continuous_batch(args.live + 1, length, cuda_graph=False, prefill_chunk=256, prefix_cache=cache)
    for _ in range(args.live):   # decoding through the whole run
        engine.add(Sequence(tokens(16), max_new_tokens=length - 16))
    while len(engine.rows) < args.live:
        engine.step()
    system = tokens(args.system_tokens)
    gaps, live_tokens, ttft, restored = [], 0, [], []
    for _ in range(args.requests):
        chat = engine.add(Sequence(system + tokens(args.question_tokens), max_new_tokens=1))
        t_add = time.perf_counter()
        for _ in range(args.every):
            t0 = time.perf_counter()
            out = engine.step()
            t1 = time.perf_counter()
            gaps.append(t1 - t0)
            live_tokens += sum(1 for s, _ in out if s is not chat)
            if any(s is chat for s, _ in out):
                ttft.append(t1 - t_add)
                restored.append(chat.cached_tokens)
        if not chat.done:
            raise RuntimeError(f"a request took more than --every {args.every} steps to its first token; raise --every")
    for s in engine.rows:
        engine.cancel(s)
    return {"gaps": gaps, "live_tokens": live_tokens, "seconds": sum(gaps), "ttft": ttft, "restored": restored}


def summarize(runs: list[dict]) -> dict:
    gaps = sorted(g for r in runs for g in r["gaps"])
    ttft = sorted(t for r in runs for t in r["ttft"])
    later = sorted(t for r in runs for t in r["ttft"][1:])       # after each run's first request
    return {"requests": len(ttft), "ttft_median_ms": statistics.median(ttft) * 1e3,
            "ttft_p90_ms": timing.quantile(ttft, 0.9) * 1e3,
            "ttft_after_first_median_ms": statistics.median(later) * 1e3,
            "first_request_ttft_median_ms": statistics.median(r["ttft"][0] for r in runs) * 1e3,
            "restored_tokens_mean": statistics.mean(t for r in runs for t in r["restored"]),
            "gap_p50_ms": timing.quantile(gaps, 0.5) * 1e3, "gap_p99_ms": timing.quantile(gaps, 0.99) * 1e3,
            "live_tokens_per_s": sum(r["live_tokens"] for r in runs) / sum(r["seconds"] for r in runs)}


def write_markdown(res: dict, path: Path) -> None:
    a, env, on, off = res["args"], res["environment"], res["cached"], res["uncached"]
    prompt = a["system_tokens"] + a["question_tokens"]
    lines = [f"# Prefix caching: chat requests sharing a system prompt ({env['device_name']})", "",
             f"torch {env['torch']}, {env['torch_threads']} threads. `dwserve bench prefix_cache`: lfm2 (lfm2-demo, "
             f"impl auto), a continuous batch with {a['live']} live generations; every {a['every']} steps a "
             f"{prompt}-token request joins ({a['system_tokens']}-token shared system prompt + {a['question_tokens']}-token "
             f"question), {a['requests']} per run, {a['rounds']} rounds per setting in turns, fresh engine each run.", "",
             "| prefix cache | TTFT median | TTFT p90 | TTFT after the first request | prompt tokens restored (mean) | live gap p50 | live gap p99 | live tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in (("off", off), ("on", on)):
        lines.append(f"| {label} | {r['ttft_median_ms']:.0f} ms | {r['ttft_p90_ms']:.0f} ms | "
                     f"{r['ttft_after_first_median_ms']:.0f} ms | {r['restored_tokens_mean']:.0f} of {prompt} | "
                     f"{r['gap_p50_ms']:.0f} ms | {r['gap_p99_ms']:.0f} ms | {r['live_tokens_per_s']:.0f} |")
    lines += ["", f"With the cache, time to first token after each run's first request: "
              f"{off['ttft_after_first_median_ms'] / on['ttft_after_first_median_ms']:.1f}x shorter "
              f"({off['ttft_after_first_median_ms']:.0f} -> {on['ttft_after_first_median_ms']:.0f} ms, medians); "
              f"the first request, which fills the cache, {on['first_request_ttft_median_ms']:.0f} ms against "
              f"{off['first_request_ttft_median_ms']:.0f} ms uncached. A live gap is one step of the batch.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench prefix_cache", description=__doc__.split("\n\n")[0])
    p.add_argument("--system-tokens", type=positive(int), default=1024)
    p.add_argument("--question-tokens", type=positive(int), default=32)
    p.add_argument("--live", type=positive(int), default=8)
    p.add_argument("--every", type=positive(int), default=8)
    p.add_argument("--requests", type=positive(int), default=12)
    p.add_argument("--rounds", type=positive(int), default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--out", default=str(LOCAL), help=out_help())
    args = p.parse_args(argv)
    check_out(p, args.out)
    if args.quick:
        args.system_tokens, args.question_tokens, args.live, args.every, args.requests, args.rounds = 130, 5, 2, 3, 3, 1
    lm = build_model("lfm2").lm
    runs: dict[bool, list] = {False: [], True: []}
    with use_impl("auto"), torch.inference_mode():
        one_run(lm, True, argparse.Namespace(**{**vars(args), "requests": 2}), seed=99)   # warm-up
        for r in range(args.rounds):
            for cached in ((False, True) if r % 2 == 0 else (True, False)):
                runs[cached].append(one_run(lm, cached, args, seed=r))
    res = {"benchmark": "prefix_cache", "environment": timing.environment("cpu"),
           "args": {k: v for k, v in vars(args).items() if k != "out"},
           "uncached": summarize(runs[False]), "cached": summarize(runs[True])}
    stem = f"prefix-cache-cpu{'-quick' if args.quick else ''}"
    print(write_results(args.out, stem, res, write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
