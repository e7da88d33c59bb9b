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
    pytest.param("triton_conv2d", "_dw_conv2d_nhwc_strip_tuned", id="conv2d-nhwc-strips"),
    pytest.param("triton_conv2d", "_dw_conv2d_nhwc_strip_one_row_tuned", id="conv2d-nhwc-strips-one-row"),
    pytest.param("triton_conv2d", "_dw_conv2d_nchw_strip_tuned", id="conv2d-nchw-strips"),
    pytest.param("triton_conv1d", "_dw_conv1d_strip_tuned", id="conv1d-strips"),
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


def test_launch_tuned_tunes_once_per_key_then_launches_the_pick_directly(monkeypatch):
    """First launch of a key: through the autotuner (it times both configs, launches the faster).
    Later launches of that key: the JIT function with the picked config's kwargs, not the
    autotuner. Another key goes through the autotuner again."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction
    runs, tuner_runs = [], []
    monkeypatch.setattr(JITFunction, "run", lambda self, *a, grid, warmup, **kw: runs.append(kw))
    real_run = Autotuner.run
    monkeypatch.setattr(Autotuner, "run", lambda self, *a, **kw: tuner_runs.append(1) or real_run(self, *a, **kw))

    def body(x_ptr, n, BLOCK: "tl.constexpr"):     # noqa: F821 - never compiled here
        pass
    slow, fast = triton.Config({"BLOCK": 64}, num_warps=2), triton.Config({"BLOCK": 128}, num_warps=8)

    def timer(kernel_call, quantiles):            # `fast` wins: what a GPU timing would say
        kernel_call()
        return [2.0 if runs[-1]["BLOCK"] == 64 else 1.0] * 3
    tuner = triton.autotune(configs=[slow, fast], key=["n"], do_bench=timer)(JITFunction(body))
    grid = (1,)
    triton_autotune.launch_tuned(tuner, grid, ("k1",), "x", 7)
    assert len(tuner_runs) == 1 and runs[-1]["BLOCK"] == 128          # tuned (2 timed runs), launched fast
    n_runs = len(runs)
    for _ in range(3):
        triton_autotune.launch_tuned(tuner, grid, ("k1",), "x", 7)
    assert len(tuner_runs) == 1 and len(runs) == n_runs + 3            # bypassed the autotuner
    assert all(r["BLOCK"] == 128 and r["num_warps"] == 8 for r in runs[-3:])
    triton_autotune.launch_tuned(tuner, grid, ("k2",), "x", 9)
    assert len(tuner_runs) == 2
    # picks() keeps each tuning run's side-by-side times of the configs (us), per caller key
    mine = [p for p in triton_autotune.picks() if p["key"] in (["k1"], ["k2"])]
    assert [p["config"]["BLOCK"] for p in mine] == [128, 128]
    assert all(p["timings_us"] == {"BLOCK=64 w2 s3": 2000.0, "BLOCK=128 w8 s3": 1000.0} for p in mine), mine


def test_launch_tuned_launches_a_non_autotuner_as_given():
    seen = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *a, **k: seen.append((grid, a, k))
    triton_autotune.launch_tuned(Recorder(), (3,), ("k",), 1, 2, BLOCK=4)
    assert seen == [((3,), (1, 2), {"BLOCK": 4})]
