"""How long the fused kernels' autotuner times each config.

Triton's default is 25 ms of warm-up and 100 ms of timed repeats per config, about 0.8 s per
new key for our 6 configs. The depthwise kernels run for microseconds (launch-bound shapes) to
a few hundred microseconds (memory-bound ones), so 5 + 20 ms still means hundreds of repeats
per config, and a new layer shape costs ~0.2 s of tuning: less server warm-up, and ~50 s less
of a GPU benchmark run that tunes ~80 keys.

    @triton.autotune(configs=..., key=[...], **AUTOTUNE_TIMING)
"""
from __future__ import annotations

import inspect

import triton

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
