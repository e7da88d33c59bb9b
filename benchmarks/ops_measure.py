"""Timing one shape of the operator benchmark (benchmarks/ops.py): its inputs (`make_inputs`),
a call through the public op per impl (`make_call`), the impl `auto` picks (`auto_choice`), and
`bench_shape`, which times every impl interleaved and returns one record per impl."""
from __future__ import annotations

import time

import torch

from benchmarks import input_sets, timing
from benchmarks.ops_suite import IMPLS, Shape, shape_dict


def make_inputs(shape: Shape, dtype: torch.dtype, device: str) -> tuple:
    """Random (x, weight) for `shape`; for decode (x_new (B, C), conv_state (B, C, K-1), weight)."""
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode(False):   # weights as a model holds them: not inference tensors
        w = torch.randn(shape.weight, generator=g).to(device, dtype)
    if shape.op == "decode":
        x_new = torch.randn(shape.x, generator=g).to(device, dtype)                  # (B, C)
        state = torch.randn(*shape.x, shape.k - 1, generator=g).to(device, dtype)   # (B, C, K-1)
        return x_new, state, w
    x = torch.randn(shape.x, generator=g).to(device, dtype)
    if shape.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, w


def make_call(shape: Shape, impl: str, dtype: torch.dtype, device: str, inputs: tuple | list | None = None):
    """A zero-arg closure running `shape` through the public op with `impl`. Pass the same
    `inputs` to every impl of a shape: identical fns then touch identical memory, so their
    times differ only by noise (separate tensors measured up to ~5% apart on big shapes).
    `inputs` may be a list of input sets (benchmarks/input_sets.py): calls cycle through them."""
    from models.depthwise import conv1d_decode_step, depthwise_conv1d, depthwise_conv2d
    sets = inputs if isinstance(inputs, list) else [inputs or make_inputs(shape, dtype, device)]
    if shape.op == "decode":                      # (x_new, state, w): state shifted in place
        return input_sets.cycling(lambda x_new, state, w: conv1d_decode_step(x_new, state, w, impl=impl), sets)
    op = depthwise_conv1d if shape.op == "conv1d" else depthwise_conv2d
    return input_sets.cycling(lambda x, w: op(x, w, stride=shape.stride, padding=shape.padding, impl=impl), sets)


def auto_choice(shape: Shape, dtype: torch.dtype, device: str) -> str:
    """The concrete impl `auto` picks for this shape (as dispatch asks auto.choose)."""
    from models.depthwise import auto
    x_shape = (*shape.x, 1) if shape.op == "decode" else shape.x      # decode: (B, C, 1)
    return auto.choose(shape.op, torch.device(device), dtype, x_shape, shape.weight,
                       shape.stride, 1, channels_last=shape.channels_last)


def impls_for(device: str, requested: list[str] | None) -> list[str]:
    """The impls to run: fused only on CUDA (on CPU it needs the Triton interpreter)."""
    names = requested or [i for i in IMPLS if i != "fused" or device == "cuda"]
    bad = [n for n in names if n not in IMPLS]
    if bad:
        raise ValueError(f"--impls must be a comma list of {IMPLS}, got unknown {bad}")
    return names


def bench_shape(shape: Shape, impls: list[str], dtype: torch.dtype, device: str, env: dict,
                budget_s: float, min_repeats: int, max_repeats: int,
                max_fn_s: float | None = None, clock: str = "wall") -> list[dict]:
    """Records for one shape: interleaved timings, launch counts, speedups."""
    from models.profiling import count_launches
    fns, errors, t0 = {}, {}, time.perf_counter()
    inputs = input_sets.input_sets(make_inputs(shape, dtype, device), device)   # CUDA: several
    for impl in impls:
        try:
            fn = make_call(shape, impl, dtype, device, inputs)
            input_sets.warm(fn, len(inputs))                  # compile / fail early; every set once
            fns[impl] = fn
        except Exception as exc:                              # record, don't abort the suite
            errors[impl] = f"{type(exc).__name__}: {exc}"[:300]
    # CUDA: samples of >= 1 ms, so the two device syncs around a sample (~10-20 us) stay ~1%.
    sample = {"min_sample_s": 1e-3} if torch.device(device).type == "cuda" else {}
    phase_s, t1 = {"warm": time.perf_counter() - t0}, time.perf_counter()   # where a shape's seconds go
    stats = timing.time_interleaved(fns, device=device, budget_s=budget_s,
                                    min_repeats=min_repeats, max_repeats=max_repeats,
                                    max_fn_s=max_fn_s, clock=clock, **sample) if fns else {}
    phase_s["time"], t1 = time.perf_counter() - t1, time.perf_counter()
    device_us = _device_times(fns, len(inputs)) if torch.device(device).type == "cuda" else {}
    phase_s["device"], t1 = time.perf_counter() - t1, time.perf_counter()
    choice = auto_choice(shape, dtype, device)
    base = {"shape": shape_dict(shape), "dtype": str(dtype).removeprefix("torch."), **env, "clock": clock, "auto_choice": choice,
            "input_sets": len(inputs)}
    med = {n: s.median_us for n, s in stats.items()}
    records = []
    for impl in impls:
        rec = {**base, "impl": impl, "median_us": None, "aten_ops": None, "cuda_kernels": None,
               "speedup_vs_native": None, "speedup_vs_per_group": None, "error": errors.get(impl),
               # device time (CUDA graph replay), its copy fraction filled by gpu_report.add_bandwidth
               "device_us": device_us.get(impl), "device_copy_fraction": None}
        if impl in stats:
            rec.update(stats[impl].as_dict())
            lc = count_launches(fns[impl])
            rec["aten_ops"], rec["cuda_kernels"] = lc.aten_ops, lc.cuda_kernels
            for ref in ("native", "per_group"):
                if ref in med:
                    rec[f"speedup_vs_{ref}"] = round(med[ref] / med[impl], 3)
        records.append(rec)
    phase_s["count"] = time.perf_counter() - t1               # count_launches: a profiler session an impl
    for rec in records:
        rec["phase_s"] = {k: round(v, 3) for k, v in phase_s.items()}
    return records


GRAPH_INNER = 20     # calls per captured graph; at least one per input set (the replays rotate)


def _device_times(fns: dict, n_sets: int) -> dict[str, float]:
    """{impl: device us per call} from CUDA graph replays (timing.time_cuda_graph), after the
    wall-clock timing. Wall samples of back-to-back eager calls time the host on a slow one
    (20-120 us a call); these time the kernels. per_group is left out (thousands of launches
    per call: a baseline, and pointless to capture); an impl that cannot be captured (it syncs
    or reads the host) gets no entry: "not graph-timed", None in its record."""
    out = {}
    for impl, fn in fns.items():
        if impl == "per_group":
            continue
        try:
            out[impl] = round(timing.time_cuda_graph(fn, inner=max(GRAPH_INNER, n_sets)).median_us, 3)
        except Exception as exc:                      # GraphTimingError, or a replay that failed
            print(f"  {impl}: not graph-timed ({str(exc)[:120]})", flush=True)
    return out
