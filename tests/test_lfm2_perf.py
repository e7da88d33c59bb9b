"""The lfm2-demo preset's reason to exist: the per_group depthwise path dominates it, the
`auto` path does not. Timing on shared CI cores is noisy, so this runs only when asked:

    DWSERVE_PERF=1 python -m pytest -q tests/test_lfm2_perf.py

Measures (medians of interleaved repeats) the depthwise share of a 128-token prefill and of
one decode step at batch 1 and 8 with a filled cache, under per_group and under auto.
"""
import os
import time

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("DWSERVE_PERF") != "1", reason="timing test; set DWSERVE_PERF=1")]


def measure(model, impl, fn, repeats=5):
    """(median wall seconds, median depthwise share) of fn() under use_impl(impl)."""
    from models.depthwise import use_impl
    from models.profiling import depthwise_timer
    runs = []
    with use_impl(impl), torch.inference_mode():
        fn()  # warm-up (and compile/autotune where the impl needs it)
        for _ in range(repeats):
            with depthwise_timer() as t:
                t0 = time.perf_counter()
                fn()
                wall = time.perf_counter() - t0
            runs.append((wall, t.seconds / wall))
    runs.sort()
    return runs[len(runs) // 2]


def workloads(model):
    ids = torch.randint(0, 256, (1, 128), generator=torch.Generator().manual_seed(0))
    yield "prefill128", lambda: model.next_token_logits(ids)   # what KServe `lfm2` runs
    for b in (1, 8):
        cache = model.new_cache(b, 130)
        with torch.inference_mode():
            model(torch.randint(0, 256, (b, 128)), cache=cache)
        tok = torch.randint(0, 256, (b, 1))

        def step(cache=cache, tok=tok):
            cache.length = 128            # rewind: every repeat decodes position 128 again
            cache.positions.fill_(128)
            model(tok, cache=cache)
        yield f"decode-b{b}", step


def test_demo_depthwise_share_before_and_after():
    from models.lfm2 import LFM2ForCausalLM
    model = LFM2ForCausalLM.from_preset("lfm2-demo")
    report, fails = [], []
    for name, fn in workloads(model):
        before = measure(model, "per_group", fn)
        after = measure(model, "auto", fn)
        report.append(f"{name}: per_group {before[0] * 1e3:.1f} ms ({before[1]:.0%} depthwise), "
                      f"auto {after[0] * 1e3:.1f} ms ({after[1]:.0%} depthwise)")
        fails += [f"{name}: per_group share {before[1]:.0%} < 50%"] * (before[1] < 0.5)
        fails += [f"{name}: auto share {after[1]:.0%} > 5%"] * (after[1] > 0.05)
        fails += [f"{name}: auto {after[0]:.2f} s >= 0.5 s"] * (name == "prefill128" and after[0] >= 0.5)
    print("\n".join(report))
    assert not fails, "\n".join(report + fails)
