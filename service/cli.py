"""`dwserve` command line.

  dwserve serve [--host H] [--port P] [--model NAME[=PATH]]... [--device auto|cpu|cuda[:N]]
                [--depthwise-impl IMPL] [--max-batch-size N] [--max-queue-delay-ms F]
                [--max-queue-size N] [--max-decode-batch N] [--grpc-port P] [--api-key KEY]
                [--max-body-bytes N] ...
  dwserve bench {ops,models,serve,generate,prefill_chunks,prefix_cache,row_chunks,ptx,block_decode,host_overhead,sampling,
                prompt_scoring} [ARGS...]
                                               runs benchmarks/<name>.py main(ARGS) from the checkout
  dwserve loadtest [ARGS...]                   service.loadtest.main(ARGS)

Every serve flag is also a DWSERVE_* environment variable (service.settings.Settings), the
flag's name in capitals (--max-batch-size: DWSERVE_MAX_BATCH_SIZE, --log-level:
DWSERVE_LOG_LEVEL), except the repeatable --model, which is DWSERVE_MODELS (a comma list:
lfm2=/path,mobilenet_v2). The switches go both ways: --warmup / --no-warmup is DWSERVE_WARMUP=1 / 0,
--access-log / --no-access-log DWSERVE_ACCESS_LOG=1 / 0. One setting is environment-only: DWSERVE_KEEP_FREED_MEMORY (default 1; 0 leaves glibc's allocator as it is).
A flag given on the command line wins over the environment; an empty variable counts as unset.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from .http_protocol import idle_closing_protocol
from .logs import configure_logging
from .preflight import preflight, settings_errors, unknown_variables
from .settings import DTYPE_CHOICES, GRPC_COMPRESSION_LEVELS, IMPL_CHOICES, LOG_FORMATS, LOG_LEVELS, Settings

BENCHMARKS = ("ops", "models", "serve", "generate", "prefill_chunks", "prefix_cache", "row_chunks", "ptx",
              "block_decode", "host_overhead", "sampling", "prompt_scoring")
_REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("dwserve.cli")
CUT_ANSWERS_S = 1.0   # after SIGTERM's grace: how long requests cut by it get to send their 503s
# Flags beyond DESIGN.md's list, generated from Settings so every limit is settable.
_EXTRA = ("grpc_port", "grpc_max_concurrent_rpcs", "max_body_bytes", "max_total_body_bytes", "max_json_values", "max_elements", "max_new_tokens", "max_sequence_length", "max_image_pixels",
          "max_prompt_chars", "max_grammar_chars", "max_choices", "max_prompts", "request_timeout_s", "api_key", "launch_recount_every",
          "depthwise_sample_every", "graceful_shutdown_s", "idle_timeout_s", "head_timeout_s", "seed", "torch_threads", "cpu_row_chunk_mib",
          "prefill_chunk_tokens", "prefix_cache_mib", "response_compression_level", "response_compression_min_bytes")
# What each flag without its own help= does, for --help (README sends operators there for the limits).
_HELP = {"host": "address to listen on (0.0.0.0: every interface)", "port": "HTTP port (0: any free one)",
         "depthwise_impl": "the server's default depthwise policy; a request may pick another",
         "max_batch_size": "rows per forward (dynamic batching; 1 = off)",
         "max_queue_delay_ms": "how long a batch may wait to fill", "max_queue_size": "queued requests per model, then 503",
         "grpc_port": "OIP v2 over gRPC on this port (0: any free one; none: off)",
         "grpc_max_concurrent_rpcs": "gRPC calls (a stream counts once) run at once, then RESOURCE_EXHAUSTED", "max_body_bytes": "request body limit (413)",
         "max_total_body_bytes": "all request bodies held at once (503; none: 8x --max-body-bytes)",
         "max_json_values": "values in one JSON body, counted before parsing (413)",
         "max_elements": "elements per input tensor", "max_new_tokens": "tokens one generation may ask for",
         "max_sequence_length": "prompt + generated tokens", "max_image_pixels": "decoded image width*height",
         "max_prompt_chars": "characters of a text prompt",
         "max_grammar_chars": "characters of a structured output's schema, regex, grammar or choices", "max_choices": "OpenAI n: sequences per request",
         "max_prompts": "OpenAI completions: prompts in one request's prompt list",
         "request_timeout_s": "a request waiting longer for the model gets 503; a body not all received by then, 408",
         "api_key": "bearer token for inference routes",
         "launch_recount_every": "re-count kernel launches every N forwards",
         "depthwise_sample_every": "time the depthwise layers on every N-th forward",
         "graceful_shutdown_s": "on SIGTERM, how long in-flight requests may take (0: none)",
         "idle_timeout_s": "close a connection idle this long",
         "head_timeout_s": "a request's headers must all arrive within this (408)", "seed": "seed of the embedded default weights",
         "torch_threads": "torch intra-op threads (none: one per core)",
         "cpu_row_chunk_mib": "CPU MobileNetV2 row chunks' activation budget (0: whole batches)",
         "prefill_chunk_tokens": "prompt tokens prefilled per decode step (0: whole prompts)",
         "prefix_cache_mib": "prefix cache, one budget shared by every depthwise policy (0: off)",
         "response_compression_level": "gzip/deflate level of responses to clients that accept it (1 fastest, 9 smallest; 0: off)",
         "response_compression_min_bytes": "responses smaller than this are not compressed"}


def _with_defaults(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Each flag's help ends with its default and its environment variable (from Settings, so
    they cannot drift)."""
    for action in p._actions:
        field = Settings.model_fields.get(action.dest)
        if field is None:
            continue
        default = ",".join(field.default) if action.dest == "models" else field.default
        if default is None or isinstance(default, bool):   # switches: on/off (not 0 / 1: 1 == True)
            default = {None: "none", True: "on", False: "off"}[default]
        variable = "DWSERVE_MODELS, a comma list" if action.dest == "models" else "DWSERVE_" + action.dest.upper()
        action.help = f"{action.help or _HELP.get(action.dest, '')} (default {default}; {variable})".lstrip()
    return p


class _OneLineErrors(argparse.ArgumentParser):
    """A flag argparse cannot parse is one line on stderr and exit 2, as a bad setting's
    (argparse's own printed the whole 30-odd-line usage above the line that says what is wrong)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} ({self.prog} --help lists the flags)\n")


def _word(value: str) -> str:
    """A word flag's value in any case, as its DWSERVE_* variable takes it (Settings._lower_word)."""
    return value.strip().lower()


def _serve_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(prog="dwserve serve", description="Serve the models over HTTP (OIP v2 + /v1).")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--model", action="append", dest="models", metavar="NAME[=PATH]",
                   help="model to serve, repeatable; NAME alone: embedded seeded weights; "
                        "lfm2=preset:NAME: an architecture of models/lfm2/presets.py, seeded")
    # no argparse choices: "cuda:N" is valid (as DWSERVE_DEVICE); Settings checks the value
    p.add_argument("--device", metavar="auto|cpu|cuda[:N]",
                   help="where the models run; auto = cuda when CUDA is available, else cpu")
    p.add_argument("--depthwise-impl", type=_word, choices=IMPL_CHOICES)
    p.add_argument("--dtype", type=_word, choices=DTYPE_CHOICES,
                   help="model dtype; auto = bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-queue-delay-ms", type=float)
    p.add_argument("--max-queue-size", type=int)
    p.add_argument("--max-decode-batch", type=int,
                   help="/v1/generate: generations decoded together (continuous batching); 1 = one at a time")
    p.add_argument("--generation-config", type=_word, choices=("auto", "none"),
                   help="sampling defaults of the generate routes: auto = the checkpoint's generation_config.json "
                        "(temperature, top_k, top_p, min_p, repetition_penalty) for what a request leaves out, "
                        "as vLLM; none = the routes' own")
    p.add_argument("--grpc-infer-response-compression-level", type=_word, choices=GRPC_COMPRESSION_LEVELS,
                   help="compress gRPC responses (Triton's flag): low = gzip, medium and high = deflate, "
                        "each at zlib's default level, when the client accepts it; none: off")
    for name in _EXTRA:
        field = Settings.model_fields[name]
        kind = field.annotation if field.annotation in (int, float) else str
        p.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    # --x / --no-x, default None: a switch not given leaves its DWSERVE_* variable (an image's =0 can be taken back)
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="warm up (and compile) before turning ready; --no-warmup: ready at once, slow first requests")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="on CUDA, replay MobileNetV2's forward from CUDA graphs (per bucket of rows; "
                        "--no-cuda-graphs: eager; no effect on CPU)")
    p.add_argument("--log-level", type=_word, choices=LOG_LEVELS,
                   help="server and root logger level")
    p.add_argument("--log-format", type=_word, choices=LOG_FORMATS, help="text, or json: one object per line for a log pipeline")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=None,
                   help="a line per request on the dwserve.access logger")
    return _with_defaults(p)


def serve(argv: list[str]) -> int:
    args = vars(_serve_parser().parse_args(argv))
    for line in unknown_variables(os.environ):   # a misspelt DWSERVE_* name: a warning, serve goes on
        print(line, file=sys.stderr)
    overrides = {k: v for k, v in args.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print("\n".join(settings_errors(exc, set(overrides))), file=sys.stderr)
        return 2
    errors = preflight(settings, set(overrides))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    from .app import create_app

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    interrupted = run_server(app, settings, settings.log_level)
    if _load_failed(app.state.service):
        return 1
    return 128 + signal.SIGINT if interrupted else 0   # Ctrl+C: 130, as a shell reports it


def _load_failed(service) -> bool:
    """Whether a model failed to load (said on stderr): serve's exit status is then 1."""
    if failed := service is not None and bool(service.load_error):
        print(f"dwserve serve: model loading failed: {service.load_error}", file=sys.stderr)
    return failed


def run_server(app, settings: Settings, log_level: str = "info") -> bool:
    """uvicorn with graceful shutdown: on SIGTERM/SIGINT it stops accepting, waits (bounded)
    for in-flight requests, then the app's lifespan exit drains the batchers. True when it
    ended on SIGINT (Ctrl+C).

    No uvicorn `limit_concurrency`: it counts open connections, idle ones included, and past
    it answers every request (health probes and /metrics too) with a plain-text 503, no
    Retry-After, unmetered, so a handful of idle sockets took the server down. Work is
    bounded where it is queued instead: each batcher's --max-queue-size and the generate
    scheduler answer a JSON 503 + Retry-After (metered), bodies by --max-body-bytes; idle
    connections are closed after --idle-timeout-s (uvicorn's keep-alive timeout, also armed
    when a connection opens), whether or not they sent a request. A cap on
    connections as such is the OS's file-descriptor limit or a proxy's, which can tell probes
    apart; uvicorn's cannot exempt them."""
    import uvicorn

    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                            # 0 = no wait, as the batchers, generations and gRPC take it
                            # (uvicorn's None would wait for in-flight requests without bound)
                            timeout_graceful_shutdown=settings.graceful_shutdown_s,
                            http=idle_closing_protocol(settings.head_timeout_s), timeout_keep_alive=settings.idle_timeout_s,
                            access_log=False,   # ours is service/logs.py's, with request ids and impls
                            # JSON: uvicorn's loggers propagate to the root's JSON handler
                            **({"log_config": None} if settings.log_format == "json" else {}))
    service = getattr(app.state, "service", None)

    class Server(uvicorn.Server):
        forcing = False

        def handle_exit(self, sig, frame) -> None:   # SIGTERM/SIGINT: gRPC stops taking calls too
            if service is not None:
                service.stop_accepting()
            super().handle_exit(sig, frame)
            if self.force_exit:   # a second Ctrl+C: uvicorn's force quit
                if self.forcing:  # a third: at once
                    _exit_flushed(128 + signal.SIGINT)
                self.forcing = True
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:   # no loop to cut the requests on
                    _exit_flushed(128 + signal.SIGINT)
                loop.call_soon_threadsafe(lambda: loop.create_task(self.forced_exit()))

        async def forced_exit(self) -> None:
            """uvicorn's force quit skips the lifespan's drain, so the generation scheduler and
            batchers (daemon threads) went on running torch work while the interpreter finalised,
            which ends such a thread with pthread_exit through torch's C++ frames: std::terminate,
            'terminate called without an active exception', SIGABRT. Nothing may be waited for
            here (a decode step or prefill cannot be interrupted), so the requests are cut (their
            503s get up to CUT_ANSWERS_S) and the process ends without finalising (_exit_flushed)."""
            log.warning("forced exit (Ctrl+C twice): %d request(s) cut, the drain skipped", len(self.server_state.tasks))
            for task in self.server_state.tasks:
                task.cancel(msg="forced exit")
            state, deadline = self.server_state, time.monotonic() + CUT_ANSWERS_S
            while (state.tasks or state.connections) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            _exit_flushed(128 + signal.SIGINT)

        async def shutdown(self, sockets=None) -> None:
            """uvicorn cancels the requests still running when the grace period ends, runs the
            lifespan's drain and then re-raises SIGTERM, which ends the process at once: a
            cancelled request still unwinding to its 503 (middleware._cut) got no reply at all
            when the drain was quick (--graceful-shutdown-s 0, compute idle). Their answers (and
            the sockets' flush) now get up to CUT_ANSWERS_S; nothing running is waited for."""
            await super().shutdown(sockets)
            if self.force_exit:
                # A second Ctrl+C during the drain: uvicorn's shutdown now returns at once and its
                # capture_signals re-raises both SIGINTs as KeyboardInterrupt, which races the
                # forced_exit task handle_exit scheduled (asyncio's runner cancels the lifespan:
                # a traceback, then the normal interpreter exit with torch still running in the
                # scheduler thread: 'terminate called'). The process ends here instead.
                await self.forced_exit()
            state, deadline = self.server_state, time.monotonic() + CUT_ANSWERS_S
            while (state.tasks or state.connections) and not self.force_exit and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            # Drained: a SIGTERM stop is clean, exit 0 (uvicorn re-raised it: 143, Kubernetes' Error),
            # without finalising as the signal did (a request cut at the grace period may still run
            # in the compute thread, which finalisation would wait for). SIGINT is re-raised: 130.
            if signal.SIGTERM in getattr(self, "_captured_signals", ()):
                _exit_flushed(1 if _load_failed(service) else 0)   # serve()'s status, which this exit skips

    server = Server(config)
    if service is not None:  # a model that cannot load ends the process (exit 1), not a zombie
        service.on_load_error = lambda: setattr(server, "should_exit", True)
    try:
        server.run()
    except KeyboardInterrupt:   # after the whole graceful shutdown, uvicorn re-raises a captured
        return True             # SIGINT, which asyncio's runner turns into this (a traceback at Ctrl+C)
    return False


def _exit_flushed(status: int) -> None:
    """End the process now, after flushing what it wrote: the log handlers (text or JSON, to
    stdout/stderr) and the standard streams. os._exit skips interpreter finalisation, the one
    thing that cannot be made safe while a daemon thread is inside torch; nothing else is lost:
    metrics live in memory (scraped, never written out), and sockets and memory go with the
    process, as they would on SIGKILL."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def bench(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        asked = bool(argv) and argv[0] in ("-h", "--help")   # asked for: stdout, exit 0
        print(f"usage: dwserve bench {{{','.join(BENCHMARKS)}}} [ARGS...]; dwserve bench NAME --help for one's "
              "options. Results go to benchmarks/results/local/ (git-ignored); --out benchmarks/results "
              "(serve: --out-dir) replaces the committed ones", file=sys.stdout if asked else sys.stderr)
        if argv and not asked:
            print(f"dwserve bench: unknown benchmark {argv[0]!r}", file=sys.stderr)
        return 0 if asked else 2
    path = _REPO / "benchmarks" / f"{argv[0]}.py"
    if not path.is_file():
        print(f"dwserve bench: {path} not found; benchmarks run from a source checkout "
              "(git clone the repo and `pip install -e .` there)", file=sys.stderr)
        return 2
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))  # so benchmarks can `import benchmarks.timing`
    module = runpy.run_path(str(path), run_name=f"benchmarks.{argv[0]}")
    result = module["main"](argv[1:])
    return int(result or 0)


def loadtest(argv: list[str]) -> int:
    try:
        from .loadtest import main as loadtest_main
    except ImportError as exc:
        print(f"dwserve loadtest: unavailable ({exc}); install the load extra: pip install 'dwserve[load]'",
              file=sys.stderr)
        return 2
    return int(loadtest_main(argv) or 0)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"serve": serve, "bench": bench, "loadtest": loadtest}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        asked = bool(argv) and argv[0] in ("-h", "--help")   # asked for: stdout, exit 0
        print(__doc__.strip(), file=sys.stdout if asked else sys.stderr)
        if argv and not asked:   # last, where the eye lands after the usage, as `dwserve bench nope` does
            print(f"dwserve: unknown command {argv[0]!r}; expected {', '.join(list(commands)[:-1])} or "
                  f"{list(commands)[-1]}", file=sys.stderr)
        return 0 if asked else 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
