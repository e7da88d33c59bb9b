"""Shared timing harness for the benchmarks (ops.py, models.py, serve.py).

Why interleaved: on a shared machine the speed of the box drifts (other processes, turbo,
thermal). Timing impl A for 2 s and then impl B for 2 s puts that drift into the A/B ratio.
`time_interleaved` instead round-robins over the impls of one shape, one sample each per
round (starting position rotated every round), so every ratio is taken side by side under
the same conditions, and reports medians (robust to the preemption spikes of a busy box).
The order within a round is shuffled (seeded) every round: an op right after a cache-hungry
one (e.g. native's conv) runs slower, and a fixed rotation gives some impls that
predecessor more often than others (measured: a 5-10% bias between two identical fns).

Sample = `inner` back-to-back calls between two device synchronisations, divided by
`inner`; `inner` is chosen from the warm-up so that a sample of the fastest fn lasts
>= `min_sample_s` (a 10 us op is timed in blocks of ~10 calls, so timer overhead is < 1%),
and is the same for every fn of a shape except baselines >= 10x slower, whose samples are
sized to >= `min_sample_s` on their own (see time_interleaved).
Repeats are adaptive: each fn gets an equal share of `budget_s`, clamped to
[min_repeats, max_repeats] samples, so a 30 ms per_group call gets a handful of samples
while a 10 us native call gets hundreds, and the time per shape stays bounded.

    from benchmarks.timing import time_interleaved, time_fn, environment
    stats = time_interleaved({"native": f1, "slice_sum": f2}, device="cpu", budget_s=1.0)
    stats["native"].median_us, stats["native"].p10_us, stats["native"].repeats
"""
from __future__ import annotations

import dataclasses
import gc
import math
import os
import platform
import random
import time
from collections.abc import Callable, Mapping

import torch


SLOW_CALL_S = 0.25     # a call this slow gets one warm-up call and may get only 3 samples


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-call time statistics in microseconds, over `repeats` samples of `inner` calls each."""
    median_us: float
    p10_us: float
    p90_us: float
    q25_us: float
    q75_us: float
    min_us: float
    repeats: int
    inner: int

    @property
    def iqr_us(self) -> float:
        return self.q75_us - self.q25_us

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["iqr_us"] = self.iqr_us
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of an already sorted, non-empty list."""
    if not sorted_values:
        raise ValueError("quantile needs at least one value")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_s: list[float], inner: int = 1) -> Timing:
    """Per-call statistics from per-call sample times in seconds."""
    s = sorted(x * 1e6 for x in samples_s)
    return Timing(median_us=quantile(s, 0.5), p10_us=quantile(s, 0.1), p90_us=quantile(s, 0.9),
                  q25_us=quantile(s, 0.25), q75_us=quantile(s, 0.75), min_us=s[0],
                  repeats=len(s), inner=inner)


def clock_fn(clock: str, device: torch.device | str = "cpu") -> Callable[[], float]:
    """"wall": time.perf_counter (device-synchronised samples; what a caller waits).
    "thread_cpu": CPU seconds of the calling thread (time.thread_time), CPU device only: time
    spent descheduled is not counted, so on a busy shared box it measures the op, not the
    queue. Meaningful with torch.set_num_threads(1), since other threads' work is not seen."""
    if clock == "wall":
        return time.perf_counter
    if clock == "thread_cpu":
        if torch.device(device).type != "cpu":
            raise ValueError(f"clock 'thread_cpu' measures CPU work only; use clock='wall' on {device}")
        return time.thread_time
    raise ValueError(f"clock must be 'wall' or 'thread_cpu', got {clock!r}")


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A no-arg function that waits for all queued work on `device` (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "cpu":
        return lambda: None
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device}")


def _sample(fn: Callable[[], object], inner: int, sync: Callable[[], None],
            clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call over `inner` back-to-back calls, device-synchronised at both ends."""
    sync()
    t0 = clock()
    for _ in range(inner):
        fn()
    sync()
    return (clock() - t0) / inner


def _warm_up(fn: Callable[[], object], warmup: int, sync: Callable[[], None],
             clock: Callable[[], float]) -> float:
    """Call fn at least `warmup` times (more, up to 20 calls or 50 ms, when it is fast) and
    return the fastest call after the first (the first may compile or allocate)."""
    times, total = [], 0.0
    while len(times) < warmup or (len(times) < 20 and total < 0.05):
        times.append(_sample(fn, 1, sync, clock))
        total += times[-1]
        if total > SLOW_CALL_S:                      # seconds-long calls: one warm-up is plenty
            break
    return min(times[1:] or times)


def time_interleaved(fns: Mapping[str, Callable[[], object]], *, device: torch.device | str = "cpu",
                     warmup: int = 2, min_repeats: int = 5, max_repeats: int = 200,
                     budget_s: float = 2.0, min_sample_s: float = 1e-4,
                     max_fn_s: float | None = None, clock: str = "wall") -> dict[str, Timing]:
    """Time every fn round-robin (one sample each per round) and return {name: Timing}.

    warmup: minimum untimed calls per fn before timing (fast fns get more, see _warm_up);
    the fastest warm-up call estimates the per-call cost used to size `inner` and repeats.
    Total time is about budget_s plus min_repeats samples of the slowest fn (3 samples when
    min_repeats of them would exceed 2 * budget_s: a 2 s per_group decode call is not
    worth 5, and its median is only ever compared to fns 1000x faster). max_fn_s caps the
    timed seconds of any one fn (at least 1 sample).
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one function, got an empty mapping")
    if warmup < 1 or min_repeats < 1 or max_repeats < min_repeats or budget_s <= 0:
        raise ValueError("expected warmup >= 1, 1 <= min_repeats <= max_repeats and budget_s > 0, "
                         f"got warmup={warmup}, min_repeats={min_repeats}, "
                         f"max_repeats={max_repeats}, budget_s={budget_s}")
    sync, clock = synchronizer(device), clock_fn(clock, device)
    names = list(fns)
    inner, target, samples = {}, {}, {n: [] for n in names}
    est = {n: _warm_up(fns[n], warmup, sync, clock) for n in names}   # warm up, per-call cost
    # One `inner` for the whole shape, sized by the fastest fn: a sample of 2 calls is twice as
    # likely to be hit by a preemption as a sample of 1, so fns timed with different `inner`
    # get differently skewed medians on a busy machine. A fn whose `shared` calls would take
    # over 10 ms (a baseline >= 10x off the fastest) gets its own inner: still a sample of
    # >= min_sample_s (a 100 us call among 5 us ones was timed one call per sample, two device
    # syncs around 100 us), one call when it alone lasts that long.
    shared = max(1, min(1000, math.ceil(min_sample_s / max(min(est.values()), 1e-9))))
    for n in names:
        own = max(1, math.ceil(min_sample_s / max(est[n], 1e-9)))
        inner[n] = shared if est[n] * shared <= 0.01 else own
        per_sample = max(est[n] * inner[n], 1e-9)
        share = budget_s / len(names)
        floor = min_repeats if per_sample * min_repeats <= 2 * budget_s else min(min_repeats, 3)
        target[n] = max(floor, min(max_repeats, int(share / per_sample)))
        if max_fn_s is not None:                     # hard cap for pathological baselines
            target[n] = max(1, min(target[n], int(max_fn_s / per_sample)))
    gc_was_enabled = gc.isenabled()
    gc.disable()                                     # no collector pauses inside samples
    try:
        order, rng = list(names), random.Random(0)
        for _ in range(max(target.values())):
            rng.shuffle(order)                       # fresh order every round, see module doc
            for n in order:
                if len(samples[n]) < target[n]:
                    samples[n].append(_sample(fns[n], inner[n], sync, clock))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {n: summarize(samples[n], inner[n]) for n in names}


def with_switch(module, name: str, value, fn: Callable[[], object]) -> Callable[[], object]:
    """fn() with module.<name> set to value during the call, restored after: variants of one
    call (a launch path, a kernel choice) to time side by side."""
    def run():
        saved = getattr(module, name)
        setattr(module, name, value)
        try:
            return fn()
        finally:
            setattr(module, name, saved)
    return run


def time_fn(fn: Callable[[], object], *, device: torch.device | str = "cpu", **kwargs) -> Timing:
    """Time one function (same options as time_interleaved)."""
    return time_interleaved({"fn": fn}, device=device, **kwargs)["fn"]


class GraphTimingError(RuntimeError):
    """time_cuda_graph could not time a fn (no CUDA, or the fn cannot be captured: it syncs
    or reads the device from the host). Callers record "not graph-timed" (None)."""


GRAPH_SLOW_CALL_S = 2e-3   # a call this slow (eager, wall) is graph-timed 2 calls x 5 replays


def time_cuda_graph(fn: Callable[[], object], *, inner: int = 20, repeats: int = 15,
                    warmup: int = 2) -> Timing:
    """Device time per call of fn on CUDA: `inner` calls captured in one CUDA graph, `repeats`
    replays each timed by a pair of CUDA events; per call = elapsed / inner (median etc.).

    Why: an eager call costs the host 20-120 us on a slow VM, so wall-clock samples of small
    kernels time the host. A replay launches every captured kernel from the device, so the
    events see kernel time plus the gaps between kernels. A cycling fn (input_sets.cycling)
    takes the next input set at each captured call: pass inner >= its number of sets and the
    replays read memory, not L2. fn is warmed eagerly first (Triton autotunes and compiles
    outside the capture) on a side stream, as torch.cuda.graph's docs do. A fn that syncs or
    reads the host (per_group's loops, .item()) fails capture: GraphTimingError, never a crash.
    Cost: warm-up + capture (inner eager calls) + repeats replays; ~10-50 ms on small shapes."""
    if not torch.cuda.is_available():
        raise GraphTimingError("time_cuda_graph needs CUDA (torch.cuda.is_available() is False); "
                               "off CUDA record device time as None")
    if inner < 1 or repeats < 1 or warmup < 1:
        raise ValueError(f"expected inner, repeats, warmup >= 1, got {inner}, {repeats}, {warmup}")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(side):                # warm: compile, autotune, allocator, cuDNN
            per_call = []
            for _ in range(warmup):
                side.synchronize()
                t0 = time.perf_counter()
                fn()
                side.synchronize()
                per_call.append(time.perf_counter() - t0)
        torch.cuda.current_stream().wait_stream(side)
    except Exception as exc:
        raise GraphTimingError(f"eager warm-up failed: {type(exc).__name__}: {exc}"[:300]) from exc
    if min(per_call) > GRAPH_SLOW_CALL_S:            # slow baselines: a few calls are plenty
        inner, repeats = min(inner, 2), min(repeats, 5)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(inner):
                fn()
    except Exception as exc:                         # e.g. "operation not permitted when capturing"
        torch.cuda.synchronize()
        raise GraphTimingError(f"CUDA graph capture failed (fn syncs or reads the host?): "
                               f"{type(exc).__name__}: {exc}"[:300]) from exc
    graph.replay()                                   # warm replay: first-launch upload
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(repeats)]
    if hasattr(torch.cuda, "_sleep"):                # keep the device busy while the host queues
        torch.cuda._sleep(1_000_000)                 # ~0.5 ms spin: the first start event waits
    for start, end in events:                        # replays queued back to back, one sync: the
        start.record()                               # host's launch cost hides behind the device's
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    samples = [s.elapsed_time(e) * 1e-3 / inner for s, e in events]      # ms -> s, per call
    del graph
    return summarize(samples, inner)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device: torch.device | str = "cpu") -> dict:
    """What the numbers were measured on: device name, CPU, core/thread counts, versions."""
    device = torch.device(device)
    try:
        import triton
        triton_version = triton.__version__
    except Exception:                                # not installed, or a broken install
        triton_version = None
    from models.depthwise.auto import cpu_vendor

    env = {"device": device.type, "cpu": cpu_model(), "cpu_vendor": cpu_vendor(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "triton": triton_version, "python": platform.python_version(),
           "gpu": None, "cuda": torch.version.cuda}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env["device_name"] = env["gpu"] if device.type == "cuda" else env["cpu"]
    return env


def recorded_argv(argv: list[str]) -> list[str]:
    """A benchmark's command line as its results record it: without `--out DIR` (a path of the
    machine that ran it, meaningless beside the committed files)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            out.append(a)
    return out
