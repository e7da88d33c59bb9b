"""models.profiling: launch counting (per impl: O(C) vs O(K) vs a handful) and depthwise_timer."""
from __future__ import annotations

import threading

import pytest
import torch
from reference import DEV, randn

from models import profiling
from models.depthwise import depthwise_conv1d, depthwise_conv2d
from models.profiling import LaunchCount, count_launches, depthwise_timer, record_depthwise

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _conv1d_args(C, K=3, L=33, m=1):
    g = torch.Generator().manual_seed(C)
    return randn(2, C, L, gen=g), randn(C * m, 1, K, gen=g), randn(C * m, gen=g)


# ------------------------------------------------------------------ count_launches
def test_counts_top_level_aten_ops_only():
    a = torch.randn(4, 4, device=DEV)
    assert count_launches(torch.add, a, a) == LaunchCount(1, None if not torch.cuda.is_available() else 1)
    # matmul, relu, sum: three top-level ops (their internals run with the mode popped)
    lc = count_launches(lambda: (a @ a).relu().sum())
    assert lc.aten_ops == 3 and isinstance(lc, tuple) and lc._fields == ("aten_ops", "cuda_kernels")


def test_cuda_kernels_is_none_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert count_launches(lambda: torch.ones(3) * 2).cuda_kernels is None


@pytest.mark.parametrize("C", [pytest.param(4, id="C4"), pytest.param(24, id="C24")])
def test_per_group_is_o_of_channels(C):
    x, w, b = _conv1d_args(C)
    n = count_launches(depthwise_conv1d, x, w, b, padding="causal", impl="per_group").aten_ops
    assert n >= C
    x2, w2, b2 = _conv1d_args(2 * C)
    n2 = count_launches(depthwise_conv1d, x2, w2, b2, padding="causal", impl="per_group").aten_ops
    assert n2 - n >= C                                   # grows (at least) linearly with C


@pytest.mark.parametrize("K", [pytest.param(2, id="K2"), pytest.param(3, id="K3"), pytest.param(7, id="K7")])
@pytest.mark.parametrize("m", [pytest.param(1, id="m1"), pytest.param(2, id="m2")])
def test_slice_sum_is_o_of_taps_independent_of_channels(K, m):
    counts = []
    for C in (16, 512):
        x, w, b = _conv1d_args(C, K=K, m=m)
        counts.append(count_launches(depthwise_conv1d, x, w, b, padding="causal", impl="slice_sum").aten_ops)
    assert counts[0] == counts[1], counts                 # same for C=16 and C=512
    assert 2 * K <= counts[0] <= 2 * K + 10, counts       # ~2 per tap + a few


def test_slice_sum_2d_is_o_of_taps():
    x = randn(1, 64, 10, 10)
    n = count_launches(depthwise_conv2d, x, randn(64, 1, 3, 3), padding=1, impl="slice_sum").aten_ops
    assert 2 * 9 <= n <= 3 * 9 + 10
    x = randn(1, 256, 10, 10)
    assert count_launches(depthwise_conv2d, x, randn(256, 1, 3, 3), padding=1, impl="slice_sum").aten_ops == n


def test_native_is_a_handful():
    x, w, b = _conv1d_args(512)
    assert count_launches(depthwise_conv1d, x, w, b, padding=1, impl="native").aten_ops <= 3
    assert count_launches(depthwise_conv1d, x, w, b, padding="causal", impl="native").aten_ops <= 4


def test_counts_are_per_thread():
    """count_launches in one thread must not see another thread's ops (TorchDispatchMode is
    thread-local): the service counts two models concurrently."""
    x, w, b = _conv1d_args(64)
    depthwise_conv1d(x, w, b, impl="slice_sum")   # steady state: slice_sum caches its tap views
    stop, seen = threading.Event(), []

    def noise():
        while not stop.is_set():
            depthwise_conv1d(x, w, b, impl="per_group")

    t = threading.Thread(target=noise)
    t.start()
    try:
        for _ in range(3):
            seen.append(count_launches(depthwise_conv1d, x, w, b, impl="slice_sum").aten_ops)
    finally:
        stop.set()
        t.join()
    assert len(set(seen)) == 1 and seen[0] < 20, seen


@pytest.mark.gpu
@needs_cuda
def test_cuda_kernels_counted():
    x, w, b = (t.cuda() for t in _conv1d_args(256))
    depthwise_conv1d(x, w, b, impl="per_group")           # warm up (cuDNN heuristics, allocator)
    per_group = count_launches(depthwise_conv1d, x, w, b, impl="per_group").cuda_kernels
    slice_sum = count_launches(depthwise_conv1d, x, w, b, impl="slice_sum").cuda_kernels
    assert per_group >= 256 and 1 <= slice_sum <= 8


# ------------------------------------------------------------------ depthwise_timer
def test_timer_counts_public_ops_and_is_off_outside():
    x, w, b = _conv1d_args(8)
    assert record_depthwise() is record_depthwise("cpu")  # inactive: the shared no-op context
    with depthwise_timer() as t:
        depthwise_conv1d(x, w, b, impl="slice_sum")
        depthwise_conv2d(randn(1, 3, 5, 5), randn(3, 1, 3, 3), impl="native")
    assert t.calls == 2 and t.seconds > 0
    depthwise_conv1d(x, w, b, impl="slice_sum")          # after the block: not recorded
    assert t.calls == 2


def test_nested_records_do_not_double_count_and_nested_timers_both_see():
    x, w, b = _conv1d_args(8)
    with depthwise_timer() as outer:
        with record_depthwise(x.device):                  # e.g. short_conv_block around its conv
            depthwise_conv1d(x, w, b, impl="slice_sum")
            depthwise_conv1d(x, w, b, impl="native")
        with depthwise_timer() as inner:
            depthwise_conv1d(x, w, b, impl="slice_sum")
    assert outer.calls == 2 and inner.calls == 1
    assert outer.seconds >= inner.seconds > 0


def test_timer_is_per_thread():
    x, w, b = _conv1d_args(8)
    other = threading.Thread(target=lambda: [depthwise_conv1d(x, w, b, impl="slice_sum") for _ in range(5)])
    with depthwise_timer() as t:
        other.start()
        other.join()
        depthwise_conv1d(x, w, b, impl="slice_sum")
    assert t.calls == 1
    assert profiling._TIMER.get() is None
