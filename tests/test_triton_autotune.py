"""The fused kernels' autotuners time configs with the short budget of
models/depthwise/triton_autotune.py, not Triton's 25 + 100 ms default."""
import pytest

triton = pytest.importorskip("triton")

from models.depthwise import triton_autotune  # noqa: E402


def test_tune_bench_times_with_the_short_budget(monkeypatch):
    seen = {}

    def fake_do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        seen.update(warmup=warmup, rep=rep, quantiles=quantiles)
        fn()
        return [1.0, 0.9, 1.1]
    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    calls = []
    assert triton_autotune.tune_bench(lambda: calls.append(1), quantiles=(0.5, 0.2, 0.8)) == [1.0, 0.9, 1.1]
    assert seen == {"warmup": 5, "rep": 20, "quantiles": (0.5, 0.2, 0.8)} and calls == [1]


@pytest.mark.parametrize("module, kernel", [
    pytest.param("triton_conv1d", "_dw_conv1d_kernel", id="conv1d"),
    pytest.param("triton_conv2d", "_dw_conv2d_nchw_kernel", id="conv2d-nchw"),
    pytest.param("triton_conv2d", "_dw_conv2d_nhwc_kernel", id="conv2d-nhwc"),
])
def test_every_autotuned_kernel_uses_it(module, kernel):
    import importlib
    from triton.runtime.autotuner import Autotuner
    tuner = getattr(importlib.import_module(f"models.depthwise.{module}"), kernel)
    assert isinstance(tuner, Autotuner)
    if "do_bench" in triton_autotune.AUTOTUNE_TIMING:
        assert tuner.do_bench is triton_autotune.tune_bench
    else:                                          # Triton 3.0: warmup/rep in ms
        assert (tuner.num_warmups, tuner.num_reps) == (5, 20)
