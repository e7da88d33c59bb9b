"""`dwserve loadtest`: closed-loop before/after load on OIP v2 infer (or lfm2's /v1/generate
with `--model generate`, or /v1/chat/completions with a shared system prompt, `--model chat`),
Markdown + PNG report.

Two targets (the compose stack: per_group vs auto)     or one target, impls per request:
  dwserve loadtest --before http://127.0.0.1:8001 \\      dwserve loadtest --url http://127.0.0.1:8000 \\
                   --after http://127.0.0.1:8002               --impls per_group,auto

Each phase runs `--concurrency` workers, each sending one request at a time (closed loop), for a
fixed `--duration` after an unrecorded `--warmup`; phases alternate over `--rounds`. Nothing is
measured until every target's /v2/health/ready is 200 (`--ready-timeout`). Everything is
bounded (duration, concurrency, timeouts), and only loopback targets are accepted unless
`--allow-remote`: this is a benchmark, not a traffic generator. Writes OUT.md and OUT.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from .loadtest_report import failures, report_files, write_report
from .loadtest_targets import DIRECT, Target, check_url, scrape_launches, server_info, wait_ready

MAX_DURATION_S, MAX_CONCURRENCY, MAX_ROUNDS = 600.0, 64, 10


@dataclass
class Phase:
    target: Target
    seconds: float = 0.0       # measured window (every round's, added up)
    ok_share: float = 0.0      # successful requests, each counted for its share inside the window
    latencies: list[float] = field(default_factory=list)   # successful requests only, seconds
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "503", "error: ReadTimeout"...
    server_impl: set[str] = field(default_factory=set)     # response parameters.depthwise_impl
    launches: dict[str, float] = field(default_factory=dict)  # kind -> launches per forward

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        """Successful requests per second. Every worker is busy the whole window, so a request
        still running at its end counts for the share of it inside: the shares of one worker's
        requests add up to the window over its latency, whatever the latencies. (Whole requests
        over a window stretched to the last answer read the slower workers' last request as idle
        time: 10-20% low once a request takes a tenth of the window.)"""
        return self.ok_share / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.ok

    def pct(self, p: float) -> float:
        return float(np.percentile(self.latencies, p)) if self.latencies else float("nan")

    def ms(self, p: float) -> str:
        """Percentile p in ms for the console and the report; "-" when no request succeeded
        (printed as nan, it read like a measurement)."""
        return f"{self.pct(p) * 1e3:.1f}" if self.latencies else "-"


def system_prompt(chars: int) -> str:
    """The chat mode's system prompt, the same for every request: `chars` characters."""
    text = "You are dwserve's load-test assistant; answer in one short sentence. "
    return (text * (chars // len(text) + 1))[:chars]


def make_request(model: str, tokens: int, vocab: int, impl: str | None, seed: int,
                 new_tokens: int = 16) -> tuple[bytes, dict]:
    """One request body + headers. lfm2: JSON infer of input_ids [1, tokens]; mobilenet_v2:
    binary FP32 image; generate: /v1/generate of a tokens-long prompt and new_tokens greedy
    tokens (ignore_eos: every reply the same length, so every target does the same work);
    chat: /v1/chat/completions of a shared tokens-character system prompt (the prefix cache
    keeps it) and a question of the worker's own."""
    rng = np.random.default_rng(seed)
    params = {"depthwise_impl": impl} if impl else {}
    if model == "chat":
        messages = [{"role": "system", "content": system_prompt(tokens)},
                    {"role": "user", "content": f"Question {seed}: what does a depthwise conv cost?"}]
        body = {"messages": messages, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True, **params}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    if model == "generate":
        ids = rng.integers(0, vocab, size=tokens).tolist()
        body = {"input_ids": ids, "max_new_tokens": new_tokens, "ignore_eos": True, **params}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    if model == "lfm2":
        ids = rng.integers(0, vocab, size=tokens).tolist()
        body = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, tokens], "data": ids}],
                "parameters": params}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    raw = rng.random((1, 3, 224, 224), dtype=np.float32).astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": params}).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


def run_phase(target: Target, args, vocab: int, seconds: float, phase: Phase | None) -> None:
    """`args.concurrency` closed-loop workers for `seconds`; results go to `phase` (None: warm-up)."""
    url = {"generate": f"{target.url}/v1/generate", "chat": f"{target.url}/v1/chat/completions"}.get(
        args.model, f"{target.url}/v2/models/{args.model}/infer")
    lock = threading.Lock()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def worker(i: int) -> None:
        body, headers = make_request(args.model, args.tokens, vocab, target.impl, seed=i,
                                     new_tokens=args.new_tokens)
        with httpx.Client(timeout=args.timeout, **DIRECT) as client:
            while (start := time.perf_counter()) < deadline:
                try:
                    r = client.post(url, content=body, headers=headers)
                    key, end = str(r.status_code), time.perf_counter()
                    impl = r.headers.get("x-depthwise-impl") if r.is_success else None
                except (httpx.HTTPError, ValueError) as exc:
                    key, end, impl = f"error: {type(exc).__name__}", time.perf_counter(), None
                    time.sleep(0.05)   # a dead server must not turn this into a busy loop
                if phase is None:
                    continue
                with lock:
                    phase.statuses[key] = phase.statuses.get(key, 0) + 1
                    if key.startswith("2"):
                        phase.latencies.append(end - start)
                        phase.ok_share += (min(end, deadline) - start) / max(end - start, 1e-9)
                        if impl:
                            phase.server_impl.add(str(impl))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + args.timeout + 5)
    if phase is not None:
        phase.seconds += seconds


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="dwserve loadtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--before", metavar="URL", help="server running the baseline (per_group)")
    p.add_argument("--after", metavar="URL", help="server running the optimised impl (auto)")
    p.add_argument("--url", metavar="URL", help="one server; compare --impls per request instead")
    p.add_argument("--impls", default="per_group,auto", help="one-target mode: comma list (default %(default)s)")
    p.add_argument("--model", default="lfm2", choices=("lfm2", "mobilenet_v2", "generate", "chat"),
                   help="what to load: OIP v2 infer of lfm2 or mobilenet_v2, lfm2's /v1/generate, or "
                        "/v1/chat/completions with a shared system prompt")
    p.add_argument("--tokens", type=int, default=32,
                   help="lfm2 prompt length; chat: system prompt characters (default %(default)s)")
    p.add_argument("--new-tokens", type=int, default=16, help="generate: tokens per reply (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per target per round")
    p.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds before each target's first round")
    p.add_argument("--rounds", type=int, default=1, help="alternate targets this many times")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    p.add_argument("--ready-timeout", type=float, default=300.0,
                   help="wait this long for every target's /v2/health/ready first (default %(default)s s)")
    p.add_argument("--out", default="loadtest", help="report path without suffix: writes OUT.md and OUT.png")
    p.add_argument("--allow-remote", action="store_true", help="allow non-loopback targets")
    p.add_argument("--max-error-ratio", type=float, default=0.01,
                   help="exit 1 when a target's share of failed requests (non-2xx, timeouts, refused "
                        "connections) is above this, 0..1 (default %(default)s)")
    args = p.parse_args(argv)
    args.argv = list(argv)
    if args.url and (args.before or args.after):
        p.error("give either --url (with --impls) or --before and --after, not both")
    if not args.url and not (args.before and args.after):
        p.error("give --before URL --after URL, or --url URL [--impls per_group,auto]")
    for name, lo, hi in (("duration", 0.5, MAX_DURATION_S), ("concurrency", 1, MAX_CONCURRENCY),
                         ("rounds", 1, MAX_ROUNDS), ("warmup", 0, 60), ("timeout", 1, 600), ("ready_timeout", 0, 1800), ("tokens", 1, 2048),
                         ("new_tokens", 1, 2048), ("max_error_ratio", 0.0, 1.0)):
        if not lo <= getattr(args, name) <= hi:
            p.error(f"--{name.replace('_', '-')}: expected {lo}..{hi}, got {getattr(args, name)}")
    try:
        if args.url:
            url = check_url(args.url, args.allow_remote)
            impls = [i.strip() for i in args.impls.split(",") if i.strip()]
            from .settings import IMPL_CHOICES
            if not impls or len(set(impls)) != len(impls) or not set(impls) <= set(IMPL_CHOICES):
                p.error(f"--impls: expected distinct names from {','.join(IMPL_CHOICES)}, got {args.impls!r}")
            args.targets = [Target(i, url, i) for i in impls]
        else:
            args.targets = [Target("before", check_url(args.before, args.allow_remote)),
                            Target("after", check_url(args.after, args.allow_remote))]
    except ValueError as exc:
        p.error(str(exc))
    # The report is written after the whole run: a folder that cannot take it must fail now.
    folder = Path(args.out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {args.out!r}: cannot create the folder {str(folder)!r} ({exc.strerror}); "
                "name a report path in a writable folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        p.error(f"--out {args.out!r}: the folder {str(folder)!r} is not writable; "
                "name a report path in a writable folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    vocab = {}
    served = "lfm2" if args.model in ("generate", "chat") else args.model
    wait_ready(list(dict.fromkeys(t.url for t in args.targets)), args.ready_timeout)
    for t in args.targets:
        info = server_info(t.url, served, args.timeout)
        vocab[t.url] = max(2, min(int(info.get("vocab_size", 100)), 1000))
    phases = [Phase(t) for t in args.targets]
    for r in range(args.rounds):
        order = phases if r % 2 == 0 else phases[::-1]   # alternate to cancel slow drift
        for ph in order:
            if r == 0 and args.warmup:
                run_phase(ph.target, args, vocab[ph.target.url], args.warmup, None)
            print(f"round {r + 1}/{args.rounds}: {ph.target.label} for {args.duration:g} s", file=sys.stderr)
            run_phase(ph.target, args, vocab[ph.target.url], args.duration, ph)
    for ph in phases:
        impls = ph.server_impl or {ph.target.impl or "auto"}
        # (a generation's decode steps are not counted forwards: no launch column for them)
        ph.launches = {} if args.model in ("generate", "chat") else scrape_launches(ph.target.url, served, impls)
    out = Path(args.out)
    write_report(phases, args, out)
    for ph in phases:
        print(f"{ph.target.label:>10}: {ph.ok} ok, {ph.errors} errors, {ph.rps:.2f} req/s, "
              + (f"p50 {ph.ms(50)} ms, p99 {ph.ms(99)} ms" if ph.ok else "no successful requests"))
    print("wrote {} and {}".format(*report_files(out)))
    # A CI gate on this exit status must fail on a server that answers with errors, not only on
    # one that never succeeds: the errors column alone passed a broken server.
    for line in (failed := failures(phases, args.max_error_ratio)):
        print(f"dwserve loadtest: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
