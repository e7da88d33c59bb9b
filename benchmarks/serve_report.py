"""The serve benchmark's results as a reader sees them (benchmarks/serve.py measures them):
the acceptance checks (`acceptance`), the Markdown report with its reading of the batching
numbers (`write_markdown`) and the three-panel PNG (`write_plot`), each from the results dict
alone, so `--from-json` re-renders a committed run without a server.
"""
from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import numpy as np

from benchmarks.serve_harness import LFM2_PROMPT_TOKENS


def acceptance(res: dict) -> dict:
    out = {}
    for protocol in ("binary", "grpc"):   # REST with binary tensors; gRPC
        lat = res["scenarios"].get("latency_" + protocol)
        if lat:
            overhead = (lat["p50_s"] - lat["compute_p50_s"]) / lat["compute_p50_s"]
            out[protocol + "_b1_overhead_vs_compute"] = {"value": overhead, "target": "<= 0.15",
                                                         "pass": overhead <= 0.15}
    for suffix in ("", "_lfm2"):          # mobilenet_v2 images; lfm2 short prompts
        on, off = res["scenarios"].get("batching_on" + suffix), res["scenarios"].get("batching_off" + suffix)
        if on and off:
            speedup = on["throughput_rps"] / off["throughput_rps"]
            p99 = on["p99_s"] / off["p99_s"]
            out["batching_throughput_speedup" + suffix] = {"value": speedup, "target": ">= 1.8", "pass": speedup >= 1.8}
            out["batching_p99_ratio" + suffix] = {"value": p99, "target": "<= 1.5", "pass": p99 <= 1.5}
    return out


def cpu_model() -> str | None:
    """The CPU's name (Linux), so results from different boxes are told apart."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.1f}"


def _batching_reading(what: str, on: dict, off: dict) -> str:
    rows = on.get("batch_rows_mean") or 1.0
    per_row = on["compute_p50_s"] / rows
    return (f"{what}: batching on ran forwards of ~{rows:.1f} rows at a compute p50 of "
            f"{_ms(on['compute_p50_s'])} ms, i.e. ~{per_row * 1e3:.1f} ms per row, against "
            f"{_ms(off['compute_p50_s'])} ms for one row with batching off. Both servers are compute-bound "
            f"at {on['clients']} clients, so the throughput gain of batching is bounded by how much "
            f"cheaper a row is in a batched forward: here {off['compute_p50_s'] / per_row:.2f}x "
            f"(measured gain {on['throughput_rps'] / off['throughput_rps']:.2f}x).")


def write_markdown(res: dict, path: Path) -> None:
    lines = [f"# Serving benchmark ({res['device']})", "",
             f"{res['timestamp']}, torch {res['torch']}, {res['cpu_count']} CPU cores"
             f"{' (' + res['cpu_model'] + ')' if res.get('cpu_model') else ''}, server torch threads "
             f"{res['torch_threads'] or 'default'}, batching_on max_batch_size {res['max_batch_size']}, "
             f"{res['duration_s']} s per scenario after {res['warmup_s']} s warm-up, load average "
             f"{res['loadavg_start'][0]:.1f} at start and {res['loadavg_end'][0]:.1f} at the end. "
             "Latency is client-side (loopback, keep-alive); compute is the server's forward time "
             "(Server-Timing).", "",
             "| scenario | clients | requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | compute p50 ms | queue p50 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in res["scenarios"].items():
        lines.append(f"| {name} | {s['clients']} | {s['requests']} | {s['throughput_rps']:.2f} | {_ms(s['p50_s'])} | "
                     f"{_ms(s['p95_s'])} | {_ms(s['p99_s'])} | {_ms(s['compute_p50_s'])} | {_ms(s['queue_p50_s'])} |")
    side = (res["scenarios"].get("latency_binary") or {}).get("server_side")
    if side and side["overhead_vs_compute"] is not None:
        lines += ["", f"Server side of latency_binary, from /metrics (means): {_ms(side['request_mean_s'])} ms per "
                  f"request in the server, {_ms(side['compute_mean_s'])} ms of it the forward: overhead "
                  f"{side['overhead_vs_compute']:.1%} of compute without any client time in it."]
    protocols = [(name, res["scenarios"][key]) for name, key in
                 (("REST binary", "latency_binary"), ("gRPC", "latency_grpc"), ("REST JSON", "latency_json"))
                 if key in res["scenarios"]]
    if len(protocols) > 1:
        lines += ["", "One client, one 224x224 image per request, end-to-end p50 over the forward's p50: " +
                  ", ".join(f"{name} +{_ms(s['p50_s'] - s['compute_p50_s'])} ms "
                            f"({(s['p50_s'] - s['compute_p50_s']) / s['compute_p50_s']:.0%})"
                            for name, s in protocols) + "."]
    lines += ["", "## per_group vs auto, as /metrics shows it", "",
              "| model | impl | forwards | compute mean ms | depthwise mean ms | depthwise share | launches/forward (aten_ops) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for key, v in res["impls"].items():
        model, impl = key.split("/")
        share = "-" if v["depthwise_share"] is None else f"{v['depthwise_share']:.0%}"
        lines.append(f"| {model} | {impl} | {v['forwards']:.0f} | {_ms(v['compute_mean_s'])} | "
                     f"{_ms(v['depthwise_mean_s'])} | {share} | {v['launches_per_forward'].get('aten_ops', '-')} |")
    sc = res["scenarios"]
    if sc.get("batching_on") and sc.get("batching_off"):
        lines += ["", "## Reading it", "",
                  _batching_reading("mobilenet_v2 (one 224x224 image per request)", sc["batching_on"],
                                    sc["batching_off"]) +
                  " A batched row is cheaper because the late stages (small maps, big weights) read "
                  "each weight once for the whole batch, while the early stages run in cache-sized "
                  "row chunks (models/row_chunks.py): over the whole batch their activations spill "
                  "to DRAM and a batch-8 row was only 1.44x cheaper than a row alone in the committed "
                  "benchmarks/results/row-chunks-cpu.md (an AMD EPYC run)."]
        if sc.get("batching_on_lfm2") and sc.get("batching_off_lfm2"):
            lines += ["", _batching_reading(f"lfm2 ({LFM2_PROMPT_TOKENS}-token prompt per request)",
                                            sc["batching_on_lfm2"], sc["batching_off_lfm2"]) +
                      " A short prompt's forward is mostly reading the weights; a batch reads them once "
                      "for all its rows."]
        for suffix in ("", "_lfm2"):
            on, off = sc.get("batching_on" + suffix), sc.get("batching_off" + suffix)
            if on and off and on.get("round_rps") and off.get("round_rps"):
                per_round = ", ".join(f"{a / b:.2f}x" for a, b in zip(on["round_rps"], off["round_rps"]))
                lines += ["", f"batching_on{suffix} and batching_off{suffix} were measured in "
                          f"{len(on['round_rps'])} turns of {res['duration_s'] / len(on['round_rps']):.0f} s "
                          f"each (the table pools them); throughput ratio per turn: {per_round}."]
        lines += ["", "Clients are threads of the benchmark process on the same machine, one keep-alive "
                  "connection each through benchmarks/http_load.py (a raw-socket client: less client "
                  "time in the end-to-end latency than http.client or httpx), so their CPU still "
                  "competes with the server's."]
    lines += ["", "## Acceptance", "", "| check | value | target | pass |", "|---|---:|---|---|"]
    for name, a in res["acceptance"].items():
        lines.append(f"| {name} | {a['value']:.3f} | {a['target']} | {'yes' if a['pass'] else 'NO'} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = list(res["scenarios"])
    x = np.arange(len(names))
    for i, q in enumerate(("p50_s", "p95_s", "p99_s")):
        axes[0].bar(x + (i - 1) * 0.27, [res["scenarios"][n][q] * 1e3 for n in names], 0.27, label=q[:3])
    axes[0].set_xticks(x, names, rotation=20, ha="right")
    axes[0].set_ylabel("latency (ms)")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("client latency")
    axes[1].bar(names, [res["scenarios"][n]["throughput_rps"] for n in names], color="tab:green")
    axes[1].set_ylabel("requests / s")
    axes[1].tick_params(axis="x", rotation=20)
    axes[1].set_title("throughput")
    keys = list(res["impls"])
    comp = [(res["impls"][k]["compute_mean_s"] or 0) * 1e3 for k in keys]
    dw = [(res["impls"][k]["depthwise_mean_s"] or 0) * 1e3 for k in keys]
    axes[2].bar(keys, comp, label="compute mean", color="tab:gray")
    axes[2].bar(keys, dw, label="of which depthwise", color="tab:red")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("ms per forward")
    axes[2].tick_params(axis="x", rotation=20)
    axes[2].legend()
    axes[2].set_title("per_group vs auto (/metrics)")
    fig.suptitle(f"dwserve serving benchmark, {res['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
