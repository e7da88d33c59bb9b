"""How the fused kernels autotune: how long each config is timed, and launching past the
autotuner once it has chosen.

Triton's default is 25 ms of warm-up and 100 ms of timed repeats per config, about 0.8 s per
new key for our 6 configs (8 on big layers: big_layer_configs). The depthwise kernels run for
microseconds (launch-bound shapes) to a few hundred microseconds (memory-bound ones), so 5 + 20 ms
still means hundreds of repeats per config, and a new layer shape costs ~0.2 s of tuning: less
server warm-up, and ~50 s less of a GPU benchmark run that tunes ~80 keys.

    @triton.autotune(configs=..., key=[...], **AUTOTUNE_TIMING)
    launch_tuned(kernel, grid, key, *args, **kwargs)    # instead of kernel[grid](*args, **kwargs)

Why launch_tuned: Triton's Autotuner.run rebuilds its cache key from every argument on every
launch (a dict of all arguments filtered against a list of names, str() of every dtype):
8.6-11.3 us of Python per launch on Triton 3.6 (what launch_tuned saves, halving the host time:
benchmarks/results/host-overhead-cpu.md), next to ~6 us for the JIT launch itself.
The seed shape is launch-bound, so that is most of its time. After the autotuner's pick for a
key is known, the JIT function is called with it directly, as the autotuner's own final call does,
and past JITFunction.run too once its binary is compiled (triton_launch.Launcher: the cached
CompiledKernel's C launcher; on by default since its CUDA tests passed on an H200,
DWSERVE_TRITON_DIRECT_LAUNCH=0 turns it off; never under the interpreter or launch hooks).
"""
from __future__ import annotations

import inspect
import threading

import triton
from triton.runtime.autotuner import Autotuner

from .triton_launch import Launcher

TUNE_WARMUP_MS = 5
TUNE_REP_MS = 20


def tune_bench(kernel_call, quantiles):
    """The autotuner's timer: triton.testing.do_bench with the shorter budget."""
    return triton.testing.do_bench(kernel_call, warmup=TUNE_WARMUP_MS, rep=TUNE_REP_MS, quantiles=quantiles)


def _timing_kwargs() -> dict:
    # Triton >= 3.1 takes a timer (`do_bench`; its warmup/rep arguments are deprecated there);
    # 3.0 takes warmup/rep in ms.
    if "do_bench" in inspect.signature(triton.autotune).parameters:
        return {"do_bench": tune_bench}
    return {"warmup": TUNE_WARMUP_MS, "rep": TUNE_REP_MS}


AUTOTUNE_TIMING = _timing_kwargs()


BIG_LAYER_MIN_OUTPUTS = 1 << 22   # ~4M outputs (16 MB in float32): a memory-bound layer


def big_layer_configs(big: list, time_inner_only: list = ()):
    """An early_config_prune for triton.autotune: the configs in `big` (8 warps over long tiles,
    for memory-bound layers) are tried only on keys whose layer writes >= BIG_LAYER_MIN_OUTPUTS
    outputs (C_OUT x 4**SIZE_CLASS, within 2x of C_OUT x B x output positions), so a
    launch-bound layer tunes, and benchmarks/gpu_prewarm.py compiles, the base set only; those in
    `time_inner_only` (tiles of 1-2 channels: nothing to vectorize along channels) never on a
    launch whose X_CHANNELS_INNER is true. Triton calls it with every config, the launch's
    positional arguments by name and its keyword arguments."""
    big_ids, narrow_ids = frozenset(map(id, big)), frozenset(map(id, time_inner_only))

    def prune(configs, named_args, **kwargs):
        kept = configs
        if named_args["C_OUT"] * 4 ** named_args["SIZE_CLASS"] < BIG_LAYER_MIN_OUTPUTS:
            kept = [c for c in kept if id(c) not in big_ids]
        if kwargs.get("X_CHANNELS_INNER"):
            kept = [c for c in kept if id(c) not in narrow_ids]
        return kept or configs
    return prune


# The NHWC strip kernel's tall strips (ROWS > 1) have their own threshold: on the H200 the
# stride-1 layers of 1-4M outputs (b8 c32@112, b32 c192@28, c576@14) held at 66-73% of the copy
# ceiling with 1-row strips, each input row reaching the SMs ~3 times through L2.
TALL_STRIP_MIN_OUTPUTS = 1 << 20


def tall_strip_rows(c_out: int, size: int, sh: int) -> tuple:
    """Strip heights past 1 (ROWS) the NHWC strip tuner tries on a key (C_OUT, SIZE_CLASS, stride
    along H): 2 and 4 at stride 1 from TALL_STRIP_MIN_OUTPUTS outputs (C_OUT x 4**SIZE_CLASS, as
    big_layer_configs), 2 at stride 2 from BIG_LAYER_MIN_OUTPUTS (a stride-2 4-row strip reads 9
    input rows for 4: 182 registers at sm_90), else none."""
    outputs = c_out * 4 ** size
    if sh == 1 and outputs >= TALL_STRIP_MIN_OUTPUTS:
        return (2, 4)
    return (2,) if outputs >= BIG_LAYER_MIN_OUTPUTS else ()


def tall_strip_configs(tall: list):
    """An early_config_prune for the NHWC strip kernel: the configs in `tall` (ROWS > 1) are tried
    only where tall_strip_rows admits their ROWS (SH: a constexpr keyword of the launch)."""
    ids = frozenset(map(id, tall))

    def prune(configs, named_args, **kwargs):
        rows = tall_strip_rows(named_args["C_OUT"], named_args["SIZE_CLASS"], kwargs.get("SH", 1))
        return [c for c in configs if id(c) not in ids or c.kwargs.get("ROWS", 1) in rows] or configs
    return prune


def size_class(n: int) -> int:
    """The autotune key's size bucket for a launch writing n output positions per channel
    (B * L_out, or B * H_out * W_out): one bucket per factor of 4. The best tile of a layer at
    batch 1 (launch-bound: small tiles, many programs) and at batch 32 of 112x112 pixels
    (memory-bound: enough bytes in flight per thread) differ, so they tune apart; a server's
    batches of 1-8 rows of one layer meet two or three buckets, each tuned once, never per request.
    Kernels take it as an int argument named in their key and left unspecialised
    (do_not_specialize), so it adds autotune keys but no compiled variants."""
    return max(int(n), 1).bit_length() // 2


_PICKED: dict = {}            # (autotuner, caller's key) -> Launcher of kernel.fn with the pick's kwargs
_TIMINGS: dict = {}           # (autotuner, caller's key) -> {config label: median us} of the tuning run
_TUNING = threading.Lock()    # the Autotuner keeps per-call state (nargs, best_config) on itself


def launch_tuned(kernel, grid, key: tuple, *args, **kwargs):
    """kernel[grid](*args, **kwargs) without the autotuner's per-launch overhead; -> a
    triton_launch.Plan that repeats this launch with other tensors, or None.

    The first launch per `key` goes through the autotuner (which tunes on the first call of its
    own key, then launches) and keeps what it picked; later launches call kernel.fn with those
    config kwargs directly, through a triton_launch.Launcher (the compiled binary's launcher once
    kernel.fn has returned it for this call's argument specialization), which returns the Plan
    when that launch went direct. `key` must determine the autotuner's key: hold every argument
    named in its `key` list and the dtype of every tensor argument. A kernel that is not an
    Autotuner (a stand-in that records launches, say) is launched as given."""
    if not isinstance(kernel, Autotuner):
        kernel[grid](*args, **kwargs)
        return None
    launcher = _PICKED.get((kernel, key))
    if launcher is None:
        with _TUNING:
            before = getattr(kernel, "configs_timings", None)
            kernel[grid](*args, **kwargs)
            _PICKED[(kernel, key)] = Launcher(kernel.fn, kernel.best_config.all_kwargs())
            timings = getattr(kernel, "configs_timings", None)
            if timings and timings is not before:        # this launch tuned: every config's time, kept
                _TIMINGS[(kernel, key)] = {config_label(c): _median_us(t) for c, t in timings.items()}
        return None
    return launcher.planned(grid, args, kwargs)


def config_label(config) -> str:
    """A triton.Config as the ptx report names it: its block sizes, then warps (w) and stages (s)."""
    return " ".join(f"{k}={v}" for k, v in config.kwargs.items()) + f" w{config.num_warps} s{config.num_stages}"


def _median_us(timing) -> float:
    """The autotuner's time for a config (ms, or [median, p20, p80] ms from our quantiles) in us."""
    ms = timing[0] if isinstance(timing, (list, tuple)) else timing
    return round(float(ms) * 1000.0, 3)


def picks() -> list[dict]:
    """Every choice the autotuners made through launch_tuned so far: the kernel, the key (as
    launch_tuned's caller built it: channels, size class, taps, strides, ..., dtypes), the
    config kwargs (block sizes, num_warps, ...) and, where that launch tuned, every config's
    median time (us): the tuner's own side-by-side timing of the tiles. Benchmarks record it, so
    which tile each layer got on the device, and by how much, outlives the machine."""
    plain = (int, float, bool, str, type(None))
    return [{"kernel": getattr(kernel.fn, "__name__", str(kernel.fn)),
             "key": [k if isinstance(k, plain) else str(k) for k in key],
             "config": {k: v if isinstance(v, plain) else str(v) for k, v in launcher.options.items()},
             "timings_us": _TIMINGS.get((kernel, key))}
            for (kernel, key), launcher in list(_PICKED.items())]
