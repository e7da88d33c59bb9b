"""Host time of one fused call, without a GPU: what a launch-bound shape costs besides the kernel.

    python benchmarks/host_overhead.py [--budget-s 6] [--out DIR]
    dwserve bench host_overhead ...   # the same, through the CLI

The seed shape (1, 2048, 21) is launch-bound on a GPU: its fused call costs what the host
spends on it (validation, dispatch, launcher, Triton's launch path) plus a few microseconds of
kernel. That host part is measured here on CPU tensors, through the public op, with Triton's
JIT launch replaced by a no-op (`JITFunction.run`; its own cost, binder + C launcher, is not
counted) and each autotuner's choice seeded as if tuned (no GPU to tune on). The launch paths
of the autotuned kernels, timed interleaved (benchmarks.timing, medians), three paths:
  autotuner      every launch through Triton's Autotuner.run (it rebuilds its key each time)
  launch_tuned   models/depthwise/triton_autotune.launch_tuned: past the autotuner once it picked
  direct         launch_tuned with models/depthwise/triton_launch on (DWSERVE_TRITON_DIRECT_LAUNCH=1):
                 past JITFunction.run too, to the compiled kernel's launcher. Here that launcher
                 is a CudaLauncher whose C function does nothing, and the driver a stub (device 0,
                 stream 0), so what is timed is the direct path's own work (its cache key, the
                 argument list), not the C function's.
  planned        direct, with the call site's Plan (triton_launch.PLANS): a call seen before
                 replays its last launch with the new tensors, past the op's set-up, the autotune
                 lookup and the Launcher's key, to the launcher's C function (triton_launch.C_LAUNCH)
  planned_pycall planned through the launcher's Python __call__ (C_LAUNCH off), as Triton calls it
The direct columns hand the launcher each tensor's address (triton_launch.INT_POINTERS): reading
them is counted here; what that spares the real C launcher (a data_ptr() call and a driver check,
cuPointerGetAttribute, per pointer) is not: benchmarks/gpu_launch.py times both on a GPU.
Writes <out>/host-overhead-cpu.{json,md}; <out> is benchmarks/results/local/ (git-ignored)
unless given; the committed files take `--out benchmarks/results`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)    # real triton.jit kernels (read when they are imported)

import torch  # noqa: E402

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from benchmarks import timing  # noqa: E402
from benchmarks.cli_args import check_out, positive  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.depthwise import (conv1d_decode_step, depthwise_conv1d, depthwise_conv2d, fused,  # noqa: E402
                              short_conv_block, triton_autotune)
from models.depthwise import triton_conv1d, triton_conv2d, triton_decode, triton_launch, triton_short_conv  # noqa: E402
from models.depthwise import triton_c_launch  # noqa: E402
from triton.runtime import driver  # noqa: E402  (the DriverConfig: triton.runtime.driver.active)

BF16 = torch.bfloat16


def _cases() -> dict:
    """name -> a zero-arg fused call through the public op (CPU tensors of real shapes)."""
    seed = torch.randn(1, 2048, 21), torch.randn(2048, 1, 3)
    nhwc = torch.randn(1, 384, 14, 14, dtype=BF16).contiguous(memory_format=torch.channels_last)
    nhwc_w = torch.randn(384, 1, 3, 3, dtype=BF16)
    blc, blc_w = torch.randn(1, 128, 1024, dtype=BF16).transpose(1, 2), torch.randn(1024, 1, 3, dtype=BF16)
    bcx, state = torch.randn(1, 128, 3 * 1024, dtype=BF16), torch.randn(1, 1024, 2, dtype=BF16)
    x_new, dstate = torch.randn(16, 2048, dtype=BF16), torch.randn(16, 2048, 2, dtype=BF16)
    dw = torch.randn(2048, 1, 3, dtype=BF16)
    return {
        "seed-1x2048x21-f32": lambda: depthwise_conv1d(*seed, padding=1, impl="fused"),
        "mbv2-b1-c384@14-nhwc-bf16": lambda: depthwise_conv2d(nhwc, nhwc_w, padding=1, impl="fused"),
        "lfm2-1x128x1024-blc-bf16": lambda: depthwise_conv1d(blc, blc_w, padding="causal", impl="fused"),
        # LFM2's fused block (a 128-token prefill chunk with its state) and the decode step:
        # fixed-config kernels, so the first two columns are the same path (Triton's JIT launch)
        "lfm2-block-1x128x1024-bf16": lambda: short_conv_block(bcx, blc_w, conv_state=state, impl="fused"),
        "decode-16x2048-bf16": lambda: conv1d_decode_step(x_new, dstate, dw, impl="fused"),
    }


def _seed_autotuner_cache(self, *args, **kwargs):
    """Autotuner.run with its cache pre-filled (first config) for this call's key, so it never
    tunes (no GPU). Used for the first call of each case only: the timed calls run Triton's own
    Autotuner.run, which would try to tune (and fail) if this key were not exactly its own."""
    all_args = {**dict(zip(self.arg_names, args)), **kwargs}
    key = [all_args[k] for k in self.keys if k in all_args]
    key += [str(v.dtype) for k, v in all_args.items() if k in self.arg_names and hasattr(v, "dtype")]
    self.cache.setdefault(tuple(key), self.configs[0])
    return _TRITON_TUNER_RUN(self, *args, **kwargs)


_TRITON_TUNER_RUN = Autotuner.run


def through_autotuner(kernel, grid, key, *args, **kwargs):
    kernel[grid](*args, **kwargs)


class _StubCompiled:
    """What JITFunction.run returns here in place of a CompiledKernel: its launcher is a real
    CudaLauncher (its Python __call__, which triton_launch.C_LAUNCH goes past) whose C function
    only counts (a real one converts ~20 arguments in C and calls cuLaunchKernel: not measured)."""
    function, packed_metadata, launches = 0, None, 0

    def __init__(self):
        self.run = triton_c_launch.stand_in(self._count)

    @classmethod
    def _count(cls, *args):
        cls.launches += 1


_STUB = _StubCompiled()
PATHS = ("autotuner", "launch_tuned", "direct", "planned", "planned_pycall")


@contextlib.contextmanager
def stub_launches():
    """Fused calls on CPU tensors as on a GPU host, less the GPU: the device check passed, each
    autotuner's first config taken as tuned, JITFunction.run returning _STUB (whose launcher's C
    function only counts), the driver a stand-in (device 0, stream 0); restored on exit. Also
    what tests/test_bench_gpu_host_split.py runs benchmarks/gpu_host_split.py under."""
    saved = (fused.interpreting, JITFunction.run, triton_launch.ENABLED, triton_launch.PLANS, list(triton_launch._DRIVER),
             triton_launch.C_LAUNCH, getattr(driver, "_active", None))
    driver._active = object()                         # what 3.9's CudaLauncher.__call__ reads first
    fused.interpreting = lambda: True                 # let CPU tensors through fused's device check
    JITFunction.run = lambda self, *a, grid, warmup, **k: _STUB   # the launch itself: not measured
    Autotuner.run = _seed_autotuner_cache
    triton_launch._DRIVER[:] = [(lambda: 0, lambda device: 0)]    # no CUDA driver on this host
    try:
        yield
    finally:
        (fused.interpreting, JITFunction.run, triton_launch.ENABLED, triton_launch.PLANS, triton_launch._DRIVER[:],
         triton_launch.C_LAUNCH, driver._active) = saved
        Autotuner.run = _TRITON_TUNER_RUN
        triton_conv1d.launch_tuned = triton_conv2d.launch_tuned = triton_autotune.launch_tuned


def measure(budget_s: float) -> list[dict]:
    fns = {}
    for name, call in _cases().items():
        for path in PATHS:
            launcher = through_autotuner if path == "autotuner" else triton_autotune.launch_tuned

            def fn(call=call, launcher=launcher, direct=path not in ("autotuner", "launch_tuned"),
                   planned=path.startswith("planned"), c_launch=path != "planned_pycall"):
                triton_conv1d.launch_tuned = triton_conv2d.launch_tuned = launcher
                triton_launch.ENABLED, triton_launch.PLANS, triton_launch.C_LAUNCH = direct, planned, c_launch
                return call()
            fns[f"{name} {path}"] = fn
    with stub_launches(), torch.inference_mode():
        for fn in fns.values():
            fn()                                     # seeds every autotuner key once
        Autotuner.run = _TRITON_TUNER_RUN            # then time Triton's own Autotuner.run
        stats = timing.time_interleaved(fns, device="cpu", budget_s=budget_s, min_repeats=20, max_repeats=2000)
        if _StubCompiled.launches < len(_cases()) * 20:      # the direct path fell back to fn[grid]
            raise RuntimeError(f"the direct path reached the launcher {_StubCompiled.launches} times: "
                               "it ran through JITFunction.run, so its column would be mislabelled")
        if sum(len(m._PLANS) for m in (triton_conv1d, triton_conv2d, triton_decode, triton_short_conv)) < len(_cases()):
            raise RuntimeError("a case kept no launch Plan: its `planned` column would time the Launcher")
    records = []
    for label, t in stats.items():
        name, path = label.rsplit(" ", 1)
        records.append({"case": name, "path": path, "median_us": round(t.median_us, 2), "timing": t.as_dict()})
    return records


def write_markdown(result: dict, path: Path) -> None:
    env, by = result["environment"], {}
    for r in result["records"]:
        by.setdefault(r["case"], {})[r["path"]] = r["median_us"]
    lines = [f"# Host time of one fused call ({env['device_name']}, no GPU)", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['torch_threads']} torch threads. Public op, "
             "fused impl, Triton's JIT launch replaced by a no-op and autotuner caches seeded "
             "(benchmarks/host_overhead.py): microseconds of host work per call besides the launch "
             "itself, medians of interleaved samples. `direct` adds the direct launch path "
             "(DWSERVE_TRITON_DIRECT_LAUNCH=1) to a real CudaLauncher whose C function does nothing: what "
             "it costs on top of our dispatch, in place of JITFunction.run (stubbed out of the other two "
             "columns, so they under-count a real launch by its cost; the C function itself is in none of "
             "them). `planned`: the same with the call site's Plan, what a repeated call costs; it calls the "
             "launcher's C function directly (triton_launch.C_LAUNCH), `planned, launcher __call__` through "
             "the launcher's Python __call__ as Triton does. The direct columns pass the launcher the tensors' "
             "addresses (triton_launch.INT_POINTERS): reading them counts here, what it spares the real "
             "C function (a data_ptr() call and a cuPointerGetAttribute per pointer) does not.", "",
             "| case | through Autotuner.run us | launch_tuned us | direct us | planned us | "
             "planned, launcher __call__ us | saved by launch_tuned us |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for case, d in by.items():
        direct, planned, pycall = (f"{d[p]:.1f}" if p in d else "-" for p in ("direct", "planned", "planned_pycall"))
        lines.append(f"| {case} | {d['autotuner']:.1f} | {d['launch_tuned']:.1f} | {direct} | {planned} | {pycall} | "
                     f"{d['autotuner'] - d['launch_tuned']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench host_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=positive(float), default=6.0)
    p.add_argument("--out", type=Path, default=LOCAL, help=out_help())
    args = p.parse_args(argv)
    check_out(p, args.out)
    result = {"environment": timing.environment("cpu"), "records": measure(args.budget_s)}
    print(write_results(args.out, "host-overhead-cpu", result, write_markdown).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
