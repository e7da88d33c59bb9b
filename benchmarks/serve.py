"""Serving benchmark (`dwserve bench serve`): what the HTTP layer, batching and the depthwise
impl cost end to end, on a live loopback server.

Scenarios (mobilenet_v2 unless noted; each bounded by --duration seconds after a warm-up):
  latency_binary / latency_json   1 client, batch 1: client p50/p95/p99 vs server compute
                                  (Server-Timing), i.e. the protocol + queue overhead
  latency_grpc                    the same over OIP v2 gRPC (benchmarks/grpc_load.py)
  batching_on / batching_off      --clients concurrent clients, batch-1 requests, against a
                                  server with --max-batch-size (8) and one with 1, measured
                                  in --rounds turns (so drift of the box hits both alike)
  batching_{on,off}_lfm2          the same for lfm2 with a 16-token prompt per request
  impl_<name>                     per_group vs auto for mobilenet_v2 and lfm2 (per-request
                                  `parameters.depthwise_impl`), then read back from /metrics:
                                  compute mean, depthwise share, launches per forward
Writes <out-dir>/serve-<tag>.json, .md and .png; <out-dir> is benchmarks/results/local/
(git-ignored) unless given; the committed files take `--out-dir benchmarks/results`. Starts
its own servers (two processes: batching on / off) unless --url is given (then batching_off
needs --url-batch1).
The servers, requests and /metrics readings are benchmarks/serve_harness.py; the acceptance
checks, Markdown and plot are benchmarks/serve_report.py; this file runs the scenarios (CLI).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:            # `python benchmarks/serve.py` puts benchmarks/ first
    sys.path.insert(0, str(REPO))

from benchmarks.grpc_load import grpc_infer_request, run_grpc_load  # noqa: E402
from benchmarks.http_load import run_interleaved, run_load  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from benchmarks.cli_args import at_least, check_device, check_out, device_arg, positive  # noqa: E402
from benchmarks.serve_harness import (IMAGE_SHAPE, LFM2_PROMPT_TOKENS, free_port,  # noqa: E402
                                      impl_view, infer_request, scrape, server, server_side)
from benchmarks.serve_report import acceptance, cpu_model, write_markdown, write_plot  # noqa: E402


# --- main ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="target a live server (both models) instead of starting one")
    p.add_argument("--url-batch1", help="with --url: a server with --max-batch-size 1 for batching_off")
    p.add_argument("--grpc-target", help="with --url: its gRPC HOST:PORT (--grpc-port) for latency_grpc")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--duration", type=positive(float), default=20.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=at_least(float, 0), default=4.0, help="unmeasured seconds before each scenario")
    p.add_argument("--clients", type=positive(int), default=16)
    p.add_argument("--rounds", type=positive(int), default=4,
                   help="batching on/off are measured in this many turns of duration/rounds s each")
    p.add_argument("--max-batch-size", type=positive(int), default=8, help="the batching_on server's limit (service default 8)")
    p.add_argument("--torch-threads", type=positive(int), default=None,
                   help="server torch threads (default: torch's); 1 keeps a shared 2-core box stable")
    p.add_argument("--impl-requests", type=positive(int), default=8, help="at most this many requests per impl scenario")
    p.add_argument("--impl-budget", type=positive(float), default=25.0, help="and at most this many seconds (>= 2 requests)")
    p.add_argument("--out-dir", type=Path, default=LOCAL, help=out_help("--out-dir"))
    p.add_argument("--tag", help="file suffix (default: the device)")
    p.add_argument("--from-json", type=Path, help="only re-render .md and .png from a results JSON")
    args = p.parse_args(argv)
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        write_markdown(res, args.from_json.with_suffix(".md"))
        write_plot(res, args.from_json.with_suffix(".png"))
        return 0
    if not args.url:
        check_device(p, args.device)
    check_out(p, args.out_dir, "--out-dir")
    import torch

    rng = np.random.default_rng(0)
    image = rng.standard_normal(IMAGE_SHAPE).astype(np.float32)
    res = {"device": args.device, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "cpu_model": cpu_model(),
           "torch_threads": args.torch_threads, "max_batch_size": args.max_batch_size, "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup, "scenarios": {}, "impls": {}}
    t0 = time.time()
    res["loadavg_start"] = os.getloadavg()  # the CI box is shared: say how busy it was

    # lfm2 requests: one 16-token prompt each (ids below the byte vocabulary of every preset)
    prompt = rng.integers(0, 256, size=(1, LFM2_PROMPT_TOKENS)).astype(np.int64)

    def batching(url: str, url_b1: str | None):
        """batching on vs off, in turns (http_load.run_interleaved) when both servers are up."""
        sc = res["scenarios"]
        for suffix, req in (("", infer_request("mobilenet_v2", image, True)),
                            ("_lfm2", infer_request("lfm2", prompt, True))):
            print(f"{args.clients} clients: batching on{' vs off' if url_b1 else ''}{suffix}", flush=True)
            if url_b1 is None:
                sc["batching_on" + suffix] = run_load(url, req, args.clients, args.duration, args.warmup)
                continue
            both = run_interleaved({"on": url, "off": url_b1}, req, args.clients, args.duration,
                                   args.warmup, args.rounds)
            sc["batching_on" + suffix], sc["batching_off" + suffix] = both["on"], both["off"]

    def measure(url: str, url_batch1: str | None, grpc_target: str | None):
        sc = res["scenarios"]
        print("latency (1 client, batch 1): binary, json, grpc", flush=True)
        before = scrape(url)
        sc["latency_binary"] = run_load(url, infer_request("mobilenet_v2", image, True), 1, args.duration, args.warmup)
        sc["latency_binary"]["server_side"] = server_side(before, scrape(url), "mobilenet_v2", "auto")
        sc["latency_json"] = run_load(url, infer_request("mobilenet_v2", image, False), 1, args.duration, args.warmup)
        if grpc_target:
            sc["latency_grpc"] = run_grpc_load(grpc_target, grpc_infer_request("mobilenet_v2", image), 1,
                                               args.duration, args.warmup)
        batching(url, url_batch1)
        vocab = httpx.get(url + "/v2/models/lfm2").json()["outputs"][0]["shape"][-1]
        inputs = {"mobilenet_v2": image, "lfm2": rng.integers(0, min(vocab, 256), size=(1, 64)).astype(np.int64)}
        for model, arr in inputs.items():
            for impl in ("per_group", "auto"):
                print(f"impl {model}/{impl}", flush=True)
                req = infer_request(model, arr, True, impl)
                # identity, as run_load's requests: the server's codec and model, not gzip
                with httpx.Client(base_url=url, timeout=300, headers={"Accept-Encoding": "identity"}) as c:
                    c.post(req[0], content=req[1], headers=req[2])  # warm: compile, first-shape launch count
                    before = scrape(url)
                    t_end, n = time.perf_counter() + args.impl_budget, 0
                    while n < args.impl_requests and (n < 2 or time.perf_counter() < t_end):
                        c.post(req[0], content=req[1], headers=req[2]).raise_for_status()
                        n += 1
                after = scrape(url)
                res["impls"][f"{model}/{impl}"] = impl_view(before, after, model, impl)

    if args.url:
        measure(args.url, args.url_batch1, args.grpc_target)
    else:
        # Both servers up at once, so batching on and off are measured in turns; the batch-1
        # server idles (no spinning threads) while the other is measured.
        grpc_port = free_port()
        with server(["lfm2", "mobilenet_v2"], 1, args.device, torch_threads=args.torch_threads) as url_b1, \
                server(["lfm2", "mobilenet_v2"], args.max_batch_size, args.device, ["--grpc-port", str(grpc_port)],
                       torch_threads=args.torch_threads) as url:
            measure(url, url_b1, f"127.0.0.1:{grpc_port}")
    res["scenarios"] = {k: res["scenarios"][k] for k in
                        ("latency_binary", "latency_json", "latency_grpc", "batching_on", "batching_off",
                         "batching_on_lfm2", "batching_off_lfm2") if k in res["scenarios"]}
    res["acceptance"] = acceptance(res)
    res["wall_s"] = time.time() - t0
    res["loadavg_end"] = os.getloadavg()
    md = write_results(args.out_dir, f"serve-{args.tag or args.device}", res, write_markdown, write_plot)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
