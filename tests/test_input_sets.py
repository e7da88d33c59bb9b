"""benchmarks/input_sets.py: device benchmarks cycle through enough distinct inputs that no
call reads what the previous calls left in L2; the CPU benchmark keeps one set."""
import torch

from benchmarks import input_sets, ops


def _inputs(shape=(4, 64, 32, 32)):
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)   # 1 MiB
    return x, torch.randn(shape[1], 1, 3, 3)


def test_cpu_keeps_one_set_and_small_inputs_never_rotate():
    inputs = _inputs()
    assert input_sets.input_sets(inputs, "cpu") == [inputs]
    small = _inputs((1, 8, 8, 8))
    assert input_sets.input_sets(small, "cpu", rotate_bytes=1 << 30) == [small]


def test_sets_cover_the_rotation_bytes_with_fresh_tensors_of_the_same_layout():
    inputs = _inputs()
    nbytes = sum(t.numel() * t.element_size() for t in inputs)
    sets = input_sets.input_sets(inputs, "cpu", rotate_bytes=10 * nbytes - 1)
    assert len(sets) == 10 and sets[0] is inputs
    ptrs = {t.data_ptr() for s in sets for t in s}
    assert len(ptrs) == 2 * len(sets)                                         # all distinct memory
    for s in sets[1:]:
        for t, ref in zip(s, inputs):
            assert t.shape == ref.shape and t.dtype == ref.dtype and t.stride() == ref.stride()
            assert not torch.equal(t, ref)
    assert sets[1][0].is_contiguous(memory_format=torch.channels_last)
    capped = input_sets.input_sets(inputs, "cpu", rotate_bytes=1 << 40)
    assert len(capped) == input_sets.ROTATE_MAX_SETS


def test_cycling_calls_take_the_sets_in_turn():
    sets = [(torch.tensor([float(i)]),) for i in range(3)]
    call = input_sets.cycling(lambda t: float(t), sets)
    assert [call() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_ops_make_call_cycles_every_impl_through_the_same_sets():
    small = ops.Shape("t", "conv2d", (2, 16, 9, 9), (3, 3), padding=1, channels_last=True)
    first = ops.make_inputs(small, torch.float32, "cpu")
    sets = [first] + [tuple(torch.randn_like(t) for t in first) for _ in range(2)]
    want = [torch.nn.functional.conv2d(x, w, padding=1, groups=16) for x, w in sets]
    for impl in ("slice_sum", "native"):
        call = ops.make_call(small, impl, torch.float32, "cpu", sets)
        for i in range(4):
            torch.testing.assert_close(call(), want[i % 3], rtol=1e-4, atol=1e-4)


def test_bench_shape_fills_every_sets_weight_caches_before_timing(monkeypatch):
    """Each set's weight is its own tensor, and slice_sum (like the fused kernels' tap-major
    copy) caches derived weights on it at its first call: those must all be built before the
    timed samples, not in the first timed pass over the sets the warm-up had not reached."""
    from benchmarks import timing
    shape = ops.Shape("t", "conv1d", (2, 32, 40), 3, padding="causal")
    sets = []

    def many_sets(inputs, device):
        with torch.inference_mode(False):                 # as input_sets makes its copies
            sets[:] = [inputs] + [tuple(torch.randn_like(t) for t in inputs) for _ in range(40)]
        return sets

    seen = {}
    real = timing.time_interleaved

    def checking(fns, **kw):
        seen["uncached"] = sum(getattr(s[1], "_dwserve_taps", None) is None for s in sets)
        return real(fns, **kw)

    monkeypatch.setattr(input_sets, "input_sets", many_sets)
    monkeypatch.setattr(timing, "time_interleaved", checking)
    with torch.inference_mode():
        recs = ops.bench_shape(shape, ["slice_sum"], torch.float32, "cpu", {}, 0.01, 2, 4)
    assert recs[0]["error"] is None and recs[0]["input_sets"] == 41
    assert seen == {"uncached": 0}


def test_warm_calls_once_then_one_cycle_within_its_cap():
    calls = []
    input_sets.warm(lambda: calls.append(1), 5)
    assert len(calls) == 5
    calls.clear()
    input_sets.warm(lambda: (calls.append(1), __import__("time").sleep(0.02)), 64, max_s=0.03)
    assert 2 <= len(calls) <= 4                        # a slow call: the first, then up to the cap
