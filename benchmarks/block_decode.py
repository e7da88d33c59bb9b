"""The slice_sum short-conv block at decode, timed where it runs: inside the model.

    python benchmarks/block_decode.py [--tokens 48] [--rounds 6] [--out DIR]
    dwserve bench block_decode ...   # the same, through the CLI

For lfm2-demo (K=3) and lfm3-demo (K=7), greedy generation from a 128-token prompt under
`slice_sum`, with every one-token `short_conv_block` call timed in place (right after its
in_proj matmul, so each of its small ATen ops pays its dispatch with cold caches). Two
variants, alternated round by round in one run: `window` (the one-token path: one multiply
and one sum over the (B, K, C) window) and `tap_loop` (short_conv.ONE_TOKEN_WINDOW off: the
K multiply-adds prefill uses). Beside them: the same block called alone in a loop (`warm`),
and its ATen ops per call. CPU only (the timer reads no device). Medians over all calls.
Writes <out>/block-decode-cpu.{json,md}; <out> is benchmarks/results/local/ (git-ignored)
unless given; the committed files take `--out benchmarks/results`.
"""
from __future__ import annotations

import argparse
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
from models import profiling  # noqa: E402
from models.allocator import keep_freed_memory  # noqa: E402
from models.depthwise import short_conv, use_impl  # noqa: E402
from models.lfm2 import layers  # noqa: E402

PRESETS = ("lfm2-demo", "lfm3-demo")
VARIANTS = {"window": True, "tap_loop": False}     # -> short_conv.ONE_TOKEN_WINDOW


def _in_model_calls(lm, prompt: torch.Tensor, tokens: int, sink: list[float]) -> None:
    """Generate `tokens` tokens; append each one-token block call's seconds to sink."""
    block = layers.short_conv_block

    def timed(bcx, *args, **kwargs):
        t0 = time.perf_counter()
        y = block(bcx, *args, **kwargs)
        if bcx.shape[1] == 1:
            sink.append(time.perf_counter() - t0)
        return y

    layers.short_conv_block = timed
    try:
        lm.generate(prompt, max_new_tokens=tokens)      # no stop tokens: exactly `tokens` steps
    finally:
        layers.short_conv_block = block


def _warm_block(lm, budget_s: float) -> tuple[float, int]:
    """(median us, aten ops) of one one-token block call of the model's first conv layer, alone."""
    conv = next(m for m in lm.modules() if isinstance(m, layers.ShortConv))
    C, K = conv.conv.weight.shape[0], conv.conv.weight.shape[-1]
    bcx, state = torch.randn(1, 1, 3 * C), torch.randn(1, C, K - 1)
    call = lambda: short_conv.short_conv_block(bcx, conv.conv.weight, conv.conv.bias,  # noqa: E731
                                               conv_state=state, impl="slice_sum")
    call()
    ops = profiling.count_launches(call).aten_ops
    return timing.time_fn(call, budget_s=budget_s).median_us, ops


def run(tokens: int, rounds: int) -> list[dict]:
    try:
        return _run(tokens, rounds)
    finally:
        short_conv.ONE_TOKEN_WINDOW = True      # as shipped, whatever happened


def _run(tokens: int, rounds: int) -> list[dict]:
    from models.registry import build_model
    rows = []
    for preset in PRESETS:
        lm = build_model("lfm2", f"preset:{preset}", device="cpu", seed=0).lm
        prompt = torch.randint(0, 250, (1, 128), generator=torch.Generator().manual_seed(0))
        calls = {v: [] for v in VARIANTS}
        with torch.inference_mode(), use_impl("slice_sum"):
            for variant, flag in VARIANTS.items():     # warm-up: one short generation each
                short_conv.ONE_TOKEN_WINDOW = flag
                _in_model_calls(lm, prompt, 4, [])
            for _ in range(rounds):
                for variant, flag in VARIANTS.items():
                    short_conv.ONE_TOKEN_WINDOW = flag
                    _in_model_calls(lm, prompt, tokens, calls[variant])
            for variant, flag in VARIANTS.items():
                short_conv.ONE_TOKEN_WINDOW = flag
                warm_us, ops = _warm_block(lm, budget_s=0.5)
                t = timing.summarize(calls[variant])
                rows.append({"preset": preset, "K": lm.config.conv_L_cache, "variant": variant,
                             "in_model_us": round(t.median_us, 2), "in_model_p10_us": round(t.p10_us, 2),
                             "in_model_p90_us": round(t.p90_us, 2), "calls": t.repeats,
                             "warm_us": round(warm_us, 2), "aten_ops": ops})
        print(" ".join(f"{r['preset']} {r['variant']}: {r['in_model_us']} us in model, {r['warm_us']} warm, "
                       f"{r['aten_ops']} ops;" for r in rows if r["preset"] == preset), flush=True)
    return rows


def write_markdown(result: dict, path: Path) -> None:
    env, rows = result["environment"], result["rows"]
    by = {(r["preset"], r["variant"]): r for r in rows}
    lines = [f"# The slice_sum short-conv block at decode ({env['cpu']})", "",
             f"torch {env['torch']}, {env['torch_threads']} threads, CPU vendor {env['cpu_vendor']} "
             f"({env['cpu_capability']}). Command: "
             f"`{' '.join(['python benchmarks/block_decode.py', *result['settings']['argv']])}`.", "",
             "Per one-token `short_conv_block` call under slice_sum, medians: in the model (timed in "
             "place during greedy generation, variants alternated round by round) and warm (the same "
             "call alone in a loop). `window`: one multiply and one sum over the (B, K, C) window; "
             "`tap_loop`: the K multiply-adds prefill uses.", "",
             "| preset | K | variant | in model us (p10-p90) | warm us | aten ops | in model / warm |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['K']} | {r['variant']} | {r['in_model_us']:.1f} "
                     f"({r['in_model_p10_us']:.1f}-{r['in_model_p90_us']:.1f}) | {r['warm_us']:.1f} | "
                     f"{r['aten_ops']} | {r['in_model_us'] / r['warm_us']:.1f}x |")
    lines.append("")
    for preset in PRESETS:
        w, t = by[(preset, "window")], by[(preset, "tap_loop")]
        lines.append(f"- {preset}: window / tap_loop in the model = {w['in_model_us'] / t['in_model_us']:.2f}")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench block_decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=positive(int), default=48, help="tokens generated per round and variant")
    p.add_argument("--rounds", type=positive(int), default=6)
    p.add_argument("--out", default=str(LOCAL), help=out_help())
    args = p.parse_args(argv)
    check_out(p, args.out)
    keep_freed_memory()
    env = timing.environment("cpu")
    rows = run(args.tokens, args.rounds)
    result = {"environment": env, "rows": rows,
              "settings": {"argv": timing.recorded_argv(sys.argv[1:] if argv is None else argv),
                           "tokens": args.tokens, "rounds": args.rounds}}
    md = write_results(args.out, "block-decode-cpu", result, write_markdown)
    print(f"wrote {md.with_suffix('')}.json, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
