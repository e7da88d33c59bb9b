"""One `ModelRuntime` per served model: its batcher, warm-up and per-forward measurement.

The worker thread (service.batching) calls `_run_batch`, which concatenates compatible
requests along dim 0, runs ONE `ServedModel.forward` under `use_impl(impl)` and splits
the outputs back. Around that forward it keeps the before/after metrics honest:
  compute time        every forward (device-synchronised)
  depthwise time      every `depthwise_sample_every`-th forward, under depthwise_timer()
  launches/forward    count_launches on warm-up, on a new shape class (impl, rows, each
                      other dim rounded up to a power of two: lfm2's sequence length must not
                      make every new length a counted forward), and every
                      `launch_recount_every` forwards; kernel_launches_total += last count
                      and forwards_total += 1 on EVERY forward, counted or timed, so
                      launches_total / forwards_total is exactly launches per forward
                      (compute_duration's count leaves the counted forwards out).
                      A counted forward runs under the counter (2-3x slower on per_group), so
                      its time is NOT observed in compute/depthwise duration: it would bias
                      before/after towards whichever variant saw more new shapes
The model hooks (use_impl, count_launches, depthwise_timer) are injected so the service can
be unit-tested with a fake model; production uses `default_hooks()` from `models`.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Hashable, Optional

import numpy as np
import torch

from .batching import Batcher, Item
from .compute import ComputeThread
from .errors import FieldError
from .metrics import ServiceMetrics
from .settings import Settings
from .statistics import ModelStatistics

log = logging.getLogger("dwserve.runtime")


def default_hooks() -> SimpleNamespace:
    from models.depthwise import IMPLS, use_impl
    from models.profiling import count_launches, depthwise_timer

    return SimpleNamespace(use_impl=use_impl, count_launches=count_launches,
                           depthwise_timer=depthwise_timer, impls=("auto",) + tuple(IMPLS))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled_unavailable() -> Optional[str]:
    """Why the `compiled` impl cannot run on this CPU host, or None. inductor emits C++ on CPU:
    without a compiler the first forward raised InvalidCxxCompiler, a 500 for every request
    asking for it. The same probe as auto's (models/depthwise/auto.py), which then never picks it."""
    from models.depthwise import auto
    if auto._cxx_available():
        return None
    return ("needs a C++ compiler on CPU (torch.compile's inductor emits C++; none of $CXX, g++, "
            "c++, clang++ is on PATH); use slice_sum (the same math, eager), native or auto, or "
            "install g++")


@dataclass(frozen=True)
class Result:
    """One request's share of a batched forward, with the timings for Server-Timing."""
    outputs: dict[str, np.ndarray]
    queue_s: float
    compute_s: float
    batch_rows: int


class ModelRuntime:
    def __init__(self, served, settings: Settings, metrics: ServiceMetrics, hooks: SimpleNamespace,
                 compute: Optional[ComputeThread] = None):
        """compute: the thread every forward runs on (service.compute, shared by all models);
        None runs forwards on this model's batcher thread (unit tests with fake models)."""
        self.served, self.settings, self.metrics, self.hooks = served, settings, metrics, hooks
        self.statistics = ModelStatistics()   # Triton's statistics extension (/v2/models/{m}/stats)
        self.compute = compute
        self.name: str = served.name
        self.device = torch.device(getattr(served, "device", "cpu"))
        self.ready = False
        self._warming = False   # warm-up's forwards are running (on the compute thread, as every forward)
        self._forwards = 0
        self._launches: dict[tuple, dict[str, int]] = {}   # shape_class(...) -> {kind: count}
        self._last_count_at: dict[str, int] = {}           # impl -> forward index of last count
        self.batcher = Batcher(self.name, self._run_batch, max_batch_size=settings.max_batch_size,
                               max_delay_s=settings.max_queue_delay_ms / 1000.0,
                               max_queue_size=settings.max_queue_size,
                               execute=None if compute is None else compute.call)

    # --- request side (event loop) -----------------------------------------------------
    def check_impl(self, impl: Any) -> str:
        """A request's impl, or the server's default for None. A refusal is a FieldError: on the
        OpenAI routes `param` names depthwise_impl (its messages do not start "depthwise_impl: ")."""
        if impl is None:
            return self.settings.depthwise_impl
        if not isinstance(impl, str) or impl not in self.hooks.impls:
            raise FieldError("depthwise_impl", f"parameters.depthwise_impl: expected one of {list(self.hooks.impls)}, "
                             f"got {impl!r}"[:300])
        if impl == "fused" and self.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise FieldError("depthwise_impl", "depthwise_impl 'fused' needs a CUDA device (this server runs on "
                             f"{self.device.type}); use one of {[i for i in self.hooks.impls if i != 'fused']}")
        if impl == "compiled" and self.device.type == "cpu" and (why := compiled_unavailable()):
            raise FieldError("depthwise_impl", f"depthwise_impl 'compiled': {why}")
        return impl

    async def infer(self, inputs: dict[str, np.ndarray], impl: str, timeout: Optional[float] = None
                    ) -> Result:
        """Validated per-request arrays (leading dim = rows) -> output arrays, via the batcher."""
        rows = next(iter(inputs.values())).shape[0]
        key = ("tensor", impl, tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in inputs.items())))
        t0, ok = time.perf_counter(), False
        try:
            result = await self._await(self.batcher.submit(inputs, key, rows), timeout)
            ok = True
            return result
        finally:
            self.statistics.request_done(ok, time.perf_counter() - t0)

    async def _await(self, future, timeout: Optional[float]):
        timeout = self.settings.request_timeout_s if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            future.cancel()  # if it has not started, it never will
            raise

    # --- worker side (model thread) ----------------------------------------------------
    def on_compute(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the compute thread (where every forward runs), in the caller's context
        (the depthwise policy of use_impl is a contextvar) and inference mode. A generation's
        scheduler (service/generation.py) calls this once per decode step, so a long generation
        holds the compute thread one step at a time and other models' batches run in between."""
        ctx = contextvars.copy_context()

        def run():
            with torch.inference_mode():
                return ctx.run(fn, *args)
        return run() if self.compute is None else self.compute.call(run)

    def _run_batch(self, key: Optional[Hashable], items: list[Item]) -> list[Any]:
        now = time.perf_counter()
        waits = [now - item.enqueued for item in items]
        for wait in waits:
            self.metrics.queue_duration.labels(self.name).observe(wait)
        impl = key[1]   # ModelRuntime.infer's key: ("tensor", impl, per-row shapes)
        payloads = [item.payload for item in items]
        try:
            return self._forward_arrays(payloads, impl, waits)
        except ValueError:
            if len(items) == 1:
                raise
            # One bad request must not fail its batch-mates: retry each alone.
            results = []
            for payload, wait in zip(payloads, waits):
                try:
                    results.append(self._forward_arrays([payload], impl, [wait])[0])
                except ValueError as exc:
                    results.append(exc)
            return results

    def _forward_arrays(self, payloads: list[dict[str, np.ndarray]], impl: str, waits: list[float]) -> list[Result]:
        names = list(payloads[0])
        t_in = time.perf_counter()
        batch = {n: torch.from_numpy(np.concatenate([p[n] for p in payloads])).to(self.device) for n in names}
        t0 = time.perf_counter()
        out = self.forward(batch, impl)
        t_out = time.perf_counter()
        host = {n: t.detach().to("cpu").numpy() for n, t in out.items()}
        t1 = time.perf_counter()
        compute = t1 - t0
        rows_total = next(iter(batch.values())).shape[0]
        self.statistics.batch_done(rows_total, waits, t0 - t_in, t_out - t0, t1 - t_out)
        results, start = [], 0
        for p, wait in zip(payloads, waits):
            rows = p[names[0]].shape[0]
            results.append(Result({n: a[start:start + rows] for n, a in host.items()}, wait, compute, rows_total))
            start += rows
        return results

    @staticmethod
    def shape_class(impl: str, batch: dict[str, torch.Tensor]) -> tuple:
        """What a launch count is kept per: impl, rows, and every other dim rounded up to a
        power of two. Launches per forward depend on the layers, not on a sequence length, except
        where `auto` switches path at a size threshold; a class per doubling catches those while
        bounding counted forwards to ~log2(max length) per (impl, rows) instead of one per length."""
        def bucket(d: int) -> int:
            return 1 << max(0, int(d) - 1).bit_length()
        return (impl, tuple((n, t.shape[0], tuple(bucket(d) for d in t.shape[1:])) for n, t in sorted(batch.items())))

    def forward(self, batch: dict[str, torch.Tensor], impl: str) -> dict[str, torch.Tensor]:
        """One measured forward on the model thread (also used by warm-up: its rows are no
        batch the batcher formed, so dwserve_batch_size leaves them out while `_warming`;
        its launches and forwards count, as kernel_launches_total / forwards_total need both)."""
        self._forwards += 1
        rows = next(iter(batch.values())).shape[0]
        signature = self.shape_class(impl, batch)
        recount = (signature not in self._launches
                   or self._forwards - self._last_count_at.get(impl, 0) >= self.settings.launch_recount_every)
        # A counted forward is not timed (see the module docstring), so no depthwise sample either.
        sample = not recount and self._forwards % self.settings.depthwise_sample_every == 0
        result: dict[str, Any] = {}

        def run():
            result["out"] = self.served.forward(batch)

        with self.hooks.use_impl(impl), torch.inference_mode():
            timer_cm = self.hooks.depthwise_timer() if sample else contextlib.nullcontext()
            t0 = time.perf_counter()
            with timer_cm as timer:
                if recount:
                    counts = self.hooks.count_launches(run)
                else:
                    run()
                _sync(self.device)
            elapsed = time.perf_counter() - t0
        m, name = self.metrics, self.name
        compute = m.compute_duration.labels(name, impl)   # the series exists from the first forward
        if not recount:
            compute.observe(elapsed)
        if not self._warming:
            m.batch_size.labels(name).observe(rows)
        if sample and timer is not None:
            m.depthwise_duration.labels(name, impl).observe(timer.seconds)
        if recount:
            kinds = {"aten_ops": counts.aten_ops}
            if counts.cuda_kernels is not None:
                kinds["cuda_kernels"] = counts.cuda_kernels
            self._launches[signature] = kinds
            self._last_count_at[impl] = self._forwards
            for kind, value in kinds.items():
                m.launches_per_forward.labels(name, impl, kind).set(value)
        for kind, value in self._launches[signature].items():
            m.launches_total.labels(name, impl, kind).inc(value)
        m.forwards.labels(name, impl).inc()   # with the launches, never apart (see the docstring)
        return result["out"]

    def warmup(self) -> None:
        """Compile/warm the configured impl and measure launches before turning ready."""
        self.on_compute(self._warmup)

    def _warmup(self) -> None:
        impl = self.settings.depthwise_impl
        if self.settings.warmup:
            t0, self._warming = time.perf_counter(), True
            # Batch sizes the batcher can form: `auto` may pick `compiled` only above some
            # batch size, and torch.compile specialises on the first size it sees and turns
            # the dim dynamic on the second; two large sizes here mean no compile (seconds)
            # lands on a request later. Each size also gets its launch count measured.
            top = self.settings.max_batch_size
            sizes = {1, max(1, top // 2), max(1, top - 1), top}
            if getattr(self.served, "graphed", None) is not None:
                # Replayed from CUDA graphs (models/graphed.py): one graph per power-of-two bucket
                # of rows, each captured (autotuning its fused kernels first) on first use: all now.
                sizes |= {1 << k for k in range(top.bit_length())}
            for rows in sorted(sizes):
                inputs = {n: t.to(self.device) for n, t in self.served.warmup_inputs(rows).items()}
                self.forward(inputs, impl)
            self.forward({n: t.to(self.device) for n, t in self.served.warmup_inputs(1).items()}, impl)
            self._warming = False
            # (an LM's decode path is warmed by its GenerationScheduler: service/generation.py)
            log.info("model %s warmed up under impl %s in %.1fs", self.name, impl, time.perf_counter() - t0)
        self.ready = True

    def start(self) -> "ModelRuntime":
        self.batcher.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        self.batcher.stop(drain=True, timeout=timeout)
