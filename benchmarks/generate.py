"""Generation serving benchmark (`dwserve bench generate`): continuous batching vs one
generation at a time, end to end through /v1/generate on live loopback servers.

Three lfm2 servers run side by side: `continuous` (--max-decode-batch, default 16, depthwise
`auto`), `serial` (--max-decode-batch 1, how /v1/generate ran before continuous batching) and
`continuous-per_group` (continuous, the per_group depthwise baseline). Each
client sends the same greedy request (a --prompt-tokens prompt, --new-tokens tokens) back
to back; the servers are loaded in turns (--rounds, the order reversed every other round)
so drift of the box hits both alike. Reported per server: requests/s, generated tokens/s,
latency p50/p99, and from the /metrics delta: mean time to first token, mean time per
output token, mean generations per decode step.
Writes <out>/generate-<tag>.{json,md,png}; <out> is benchmarks/results/local/ (git-ignored)
unless given; the committed files take `--out benchmarks/results`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:            # `python benchmarks/generate.py` puts benchmarks/ first
    sys.path.insert(0, str(REPO))

from benchmarks.cli_args import at_least, check_device, check_out, device_arg, positive  # noqa: E402
from benchmarks.http_load import run_interleaved  # noqa: E402
from benchmarks.serve_harness import scrape, server  # noqa: E402
from benchmarks.timing import cpu_model  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402


def generate_request(prompt_tokens: int, new_tokens: int):
    """-> (path, body, headers): greedy, fixed prompt ids (bytes of a text), no stop string,
    and past the end-of-sequence token (ignore_eos), so every reply has new_tokens tokens."""
    ids = [ord(c) for c in ("depthwise convolutions serve well " * 8)[:prompt_tokens]]
    body = {"input_ids": ids, "max_new_tokens": new_tokens, "temperature": 0.0, "ignore_eos": True}
    return "/v1/generate", json.dumps(body).encode(), {"Content-Type": "application/json"}


def _hist_mean(before: dict, after: dict, name: str, **labels) -> float | None:
    key = tuple(sorted(labels.items()))
    total = after.get((name + "_sum", key), 0.0) - before.get((name + "_sum", key), 0.0)
    count = after.get((name + "_count", key), 0.0) - before.get((name + "_count", key), 0.0)
    return total / count if count else None


def server_view(before: dict, after: dict, impl: str) -> dict:
    """Means over the run from the /metrics delta (warm-up requests excluded by the delta)."""
    tokens = (after.get(("dwserve_generated_tokens_total", (("impl", impl), ("model", "lfm2"))), 0.0)
              - before.get(("dwserve_generated_tokens_total", (("impl", impl), ("model", "lfm2"))), 0.0))
    return {"generated_tokens": tokens,
            "ttft_mean_s": _hist_mean(before, after, "dwserve_time_to_first_token_seconds", impl=impl, model="lfm2"),
            "tpot_mean_s": _hist_mean(before, after, "dwserve_time_per_output_token_seconds", impl=impl, model="lfm2"),
            "decode_batch_mean": _hist_mean(before, after, "dwserve_decode_batch_size", model="lfm2")}


def write_markdown(res: dict, path: Path) -> None:
    a = res["args"]
    lines = [f"# Generation serving: continuous batching and the depthwise path ({res['device']})", "",
             f"{res['machine']}, torch {res['torch']}, {res['date']}. `dwserve bench generate`: "
             f"lfm2 ({a['model']}), {a['clients']} clients, each a greedy request of a {a['prompt_tokens']}-token "
             f"prompt and {a['new_tokens']} new tokens, back to back; {a['rounds']} rounds in turns, "
             f"{a['duration']:.0f} s measured per server.", "",
             "| server | max_decode_batch | depthwise impl | requests/s | tokens/s | p50 | p99 | mean TTFT | mean time/token | generations per step |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    def ms(s):
        return f"{s * 1e3:.0f} ms" if s is not None else "-"

    for name, r in res["servers"].items():
        per_step = f"{r['decode_batch_mean']:.1f}" if r["decode_batch_mean"] is not None else "-"
        lines.append(f"| {name} | {r['max_decode_batch']} | {r.get('impl', 'auto')} | {r['throughput_rps']:.2f} | {r['tokens_per_s']:.0f} | "
                     f"{ms(r['p50_s'])} | {ms(r['p99_s'])} | {ms(r['ttft_mean_s'])} | {ms(r['tpot_mean_s'])} | "
                     f"{per_step} |")
    def reading(s: dict) -> str:
        ttft = f", mean time to first token {s['ttft_ratio']:.2f}x" if s["ttft_ratio"] is not None else ""
        return (f"**{s['throughput_ratio']:.2f}x** the tokens/s (per round: "
                f"{', '.join(f'{x:.2f}x' for x in s['round_ratios'])}), p50 latency {s['p50_ratio']:.2f}x{ttft}")

    s = res["summary"]
    lines += ["", f"Continuous batching against one generation at a time (both `auto`): {reading(s)}."]
    if "depthwise" in s:
        lines += ["", f"The depthwise path under continuous batching, `auto` against the `per_group` "
                      f"baseline: {reading(s['depthwise'])}."]
    lines += ["", f"![generation serving]({path.stem}.png)", ""]
    path.write_text("\n".join(lines))


def write_plot(res: dict, path: Path) -> None:
    """Tokens/s, latency percentiles and time to first token, one bar per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["servers"])
    srv = res["servers"]
    labels = [f"{n}\n(batch {srv[n]['max_decode_batch']}, {srv[n].get('impl', 'auto')})" for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    colors = ["tab:green", "tab:gray", "tab:red", "tab:orange"][:len(names)]
    axes[0].bar(labels, [srv[n]["tokens_per_s"] for n in names], color=colors)
    axes[0].set_ylabel("generated tokens / s")
    dw = res["summary"].get("depthwise")
    axes[0].set_title(f"throughput: batching {res['summary']['throughput_ratio']:.1f}x"
                      + (f", auto vs per_group {dw['throughput_ratio']:.1f}x" if dw else ""), fontsize=10)
    for i, q in enumerate(("p50_s", "p99_s")):
        axes[1].bar([j + (i - 0.5) * 0.38 for j in range(len(names))], [srv[n][q] for n in names], 0.38, label=q[:3])
    axes[1].set_xticks(range(len(names)), labels)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    axes[1].set_ylabel("request latency (s)")
    axes[1].legend()
    axes[1].set_title("latency per request")
    axes[2].bar(labels, [(srv[n]["ttft_mean_s"] or 0) * 1e3 for n in names], color="tab:blue")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("ms")
    axes[2].set_title("mean time to first token")
    a = res["args"]
    fig.suptitle(f"/v1/generate, {a['clients']} clients, {a['prompt_tokens']}-token prompt + {a['new_tokens']} "
                 f"tokens: continuous batching and the depthwise path ({res['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ratios(a: dict, b: dict) -> dict:
    """Server a against server b: tokens/s (pooled and per round), p50 latency, mean TTFT."""
    return {"throughput_ratio": a["tokens_per_s"] / b["tokens_per_s"],
            "round_ratios": [x / y for x, y in zip(a["round_rps"], b["round_rps"])],
            "p50_ratio": a["p50_s"] / b["p50_s"],
            "ttft_ratio": (a["ttft_mean_s"] / b["ttft_mean_s"]) if a["ttft_mean_s"] and b["ttft_mean_s"] else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lfm2", help="lfm2 or lfm2=PATH")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--clients", type=positive(int), default=16)
    p.add_argument("--max-decode-batch", type=positive(int), default=16)
    p.add_argument("--prompt-tokens", type=positive(int), default=16)
    p.add_argument("--new-tokens", type=positive(int), default=32)
    p.add_argument("--duration", type=positive(float), default=40.0, help="measured seconds per server (all rounds)")
    p.add_argument("--warmup", type=at_least(float, 0), default=5.0)
    p.add_argument("--rounds", type=positive(int), default=2)
    p.add_argument("--torch-threads", type=positive(int), default=None)
    p.add_argument("--out", default=str(LOCAL), help=out_help())
    p.add_argument("--tag", default=None, help="file tag (default: the device)")
    args = p.parse_args(argv)
    check_device(p, args.device)
    check_out(p, args.out)

    import torch

    request = generate_request(args.prompt_tokens, args.new_tokens)
    # name -> (max_decode_batch, depthwise impl): the batching A/B under auto, and the
    # depthwise before/after under continuous batching.
    setups = {"continuous": (args.max_decode_batch, "auto"), "serial": (1, "auto"),
              "continuous-per_group": (args.max_decode_batch, "per_group")}
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(server(
                    [args.model], 8, args.device, ["--max-decode-batch", str(size), "--depthwise-impl", impl],
                    torch_threads=args.torch_threads))
                for name, (size, impl) in setups.items()}
        sample = {n: httpx.post(u + request[0], content=request[1], headers=request[2], timeout=300).json()
                  for n, u in urls.items()}
        if len({tuple(x["token_ids"]) for x in sample.values()}) > 1:
            print("note: the servers' greedy tokens differ (float rounding of batched matmuls)")
        before = {n: scrape(u) for n, u in urls.items()}
        stats = run_interleaved(urls, request, args.clients, args.duration, args.warmup, args.rounds)
        after = {n: scrape(u) for n, u in urls.items()}
    servers = {}
    for name, (size, impl) in setups.items():
        st = stats[name]
        n_tokens = sample[name]["usage"]["completion_tokens"]
        servers[name] = {**st, "max_decode_batch": size, "impl": impl, "completion_tokens": n_tokens,
                         "tokens_per_s": st["throughput_rps"] * n_tokens,
                         **server_view(before[name], after[name], impl)}
    summary = {**ratios(servers["continuous"], servers["serial"]),
               "depthwise": ratios(servers["continuous"], servers["continuous-per_group"])}
    res = {"benchmark": "generate", "device": args.device, "torch": torch.__version__,
           "machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
           "args": {k: v for k, v in vars(args).items() if k != "out"},   # no machine paths in results
           "servers": servers, "summary": summary}
    md = write_results(args.out, f"generate-{args.tag or args.device}", res, write_markdown, write_plot)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
