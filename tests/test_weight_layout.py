"""Tap-major weights for the channels-inner fused kernels (models/depthwise/weight_layout.py).

The copy must hold the weight's values under the weight's shape and indexing, be made once per
weight, never be used stale (in-place updates, dtype/device moves), and reach exactly the
kernels that tile channels as the unit-stride dim; the results must stay equal to the
independent float64 reference after the weight changes.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fused_common import needs_fused
from models.depthwise import weight_layout
from models.depthwise.fused import interpreting as _interpreting
from models.depthwise.weight_layout import tap_major
from test_fused import check, rand, ref_conv1d, ref_conv2d

SHAPES = [pytest.param((24, 1, 3), id="conv1d-k3"), pytest.param((40, 1, 3, 3), id="conv2d-3x3"),
          pytest.param((12, 1, 5, 2), id="conv2d-5x2")]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_same_values_and_shape_with_channels_unit_stride(shape, dtype):
    w = torch.randn(shape).to(dtype)
    t = tap_major(w)
    assert t.shape == w.shape and t.dtype == w.dtype and t.stride(0) == 1
    assert torch.equal(t, w)
    n = w.dim()
    assert t.permute(*range(2, n), 1, 0).is_contiguous()        # memory: (*kernel, 1, C)
    assert t.data_ptr() != w.data_ptr()                          # a copy, not the weight


def test_channels_last_conv_weight_is_relaid_too():
    w = torch.randn(16, 1, 3, 3).contiguous(memory_format=torch.channels_last)   # strides (9, 1, 3, 1)
    assert w.stride(0) == 9
    t = tap_major(w)
    assert t.stride(0) == 1 and torch.equal(t, w)


def test_cached_until_the_weight_changes_in_place():
    p = nn.Parameter(torch.randn(8, 1, 3, 3))
    first = tap_major(p)
    assert tap_major(p) is first                                 # cached: no second copy
    with torch.no_grad():
        p.mul_(2)                                                # bumps the version counter
    second = tap_major(p)
    assert second is not first and torch.equal(second, p)
    conv = nn.Conv2d(8, 8, 3, groups=8)
    conv.weight = p
    conv.load_state_dict({"weight": torch.randn(8, 1, 3, 3), "bias": torch.zeros(8)})
    assert torch.equal(tap_major(p), p)                          # load_state_dict: copy_ in place


def test_module_to_dtype_is_not_served_stale():
    """module.to(dtype) swaps param.data without bumping the version: the data pointer catches it."""
    conv = nn.Conv1d(6, 6, 3, groups=6)
    w = conv.weight
    before = tap_major(w)
    conv.to(torch.float64)
    assert conv.weight is w and w.dtype == torch.float64
    after = tap_major(w)
    assert after.dtype == torch.float64 and torch.equal(after, w) and before.dtype == torch.float32


@pytest.mark.parametrize("case", ["already-tap-major", "inference-tensor", "disabled"])
def test_passed_through_uncached(case, monkeypatch):
    if case == "already-tap-major":
        w = tap_major(torch.randn(10, 1, 3))
    elif case == "inference-tensor":
        with torch.inference_mode():
            w = torch.randn(10, 1, 3)                            # no version counter: never cached
    else:
        monkeypatch.setattr(weight_layout, "ENABLED", False)
        w = torch.randn(10, 1, 3)
    assert tap_major(w) is w
    assert not hasattr(w, "_dwserve_tap_major")


# ------------------------------------------------------------------ what the kernels get

def _spy_launch_tuned(monkeypatch, module, seen: list):
    """Append to `seen` the weight the launcher hands to the kernel (then launch it)."""
    real = module.launch_tuned

    def launch_tuned(kernel, grid, key, x, weight, *args, **kwargs):
        seen.append(weight)
        return real(kernel, grid, key, x, weight, *args, **kwargs)
    monkeypatch.setattr(module, "launch_tuned", launch_tuned)


def _spy_kernel(monkeypatch, module, name, seen: list, weight_index=1):
    """The same for a kernel launched as kernel[grid](...) without launch_tuned."""
    real = getattr(module, name)

    class Wrapped:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append(args[weight_index])
                return real[grid](*args, **kwargs)
            return launch
    monkeypatch.setattr(module, name, Wrapped())


@needs_fused
@pytest.mark.fused
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv2d_kernel_gets_tap_major_weights_only_for_channels_last(layout, monkeypatch):
    from models.depthwise import fused, triton_conv2d
    seen = []
    _spy_launch_tuned(monkeypatch, triton_conv2d, seen)
    g = torch.Generator().manual_seed(1)
    x, w, b = rand(2, 24, 7, 9, gen=g), nn.Parameter(rand(24, 1, 3, 3, gen=g)), rand(24, gen=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    args = ((1, 1), (1, 1, 1, 1), (1, 1))
    out = fused.conv2d(x, w, b, *args)
    check(out, ref_conv2d(x, w.detach(), b, *args), torch.float32)
    assert seen[-1].stride(0) == (1 if layout == "channels_last" else 9)
    with torch.no_grad():
        w.mul_(-0.5)                                             # the next call must see this
    out = fused.conv2d(x, w, b, *args)
    check(out, ref_conv2d(x, w.detach(), b, *args), torch.float32)


@needs_fused
@pytest.mark.fused
@pytest.mark.parametrize("channels_inner", [False, True], ids=["bcl", "blc"])
def test_conv1d_kernel_gets_tap_major_weights_only_channels_inner(channels_inner, monkeypatch):
    from models.depthwise import fused, triton_conv1d
    seen = []
    _spy_launch_tuned(monkeypatch, triton_conv1d, seen)
    g = torch.Generator().manual_seed(2)
    x = rand(2, 33, 20, gen=g).transpose(1, 2) if channels_inner else rand(2, 20, 33, gen=g)  # (B, C=20, L=33)
    w = nn.Parameter(rand(40, 1, 3, gen=g))                      # m = 2
    out = fused.conv1d(x, w, None, 1, (2, 0), 1)
    check(out, ref_conv1d(x, w.detach(), None, 1, (2, 0), 1), torch.float32)
    assert seen[-1].stride(0) == (1 if channels_inner else 3)
    with torch.no_grad():
        w.copy_(rand(40, 1, 3, gen=g))
    out = fused.conv1d(x, w, None, 1, (2, 0), 1)
    check(out, ref_conv1d(x, w.detach(), None, 1, (2, 0), 1), torch.float32)


@needs_fused
@pytest.mark.fused
def test_short_conv_block_gets_tap_major_weights_and_follows_updates(monkeypatch):
    from models.depthwise import fused, triton_short_conv
    from models.depthwise.short_conv import short_conv_block_reference
    seen = []
    _spy_kernel(monkeypatch, triton_short_conv, "_short_conv_kernel", seen)
    g = torch.Generator().manual_seed(3)
    bcx, w, b = rand(2, 11, 3 * 24, gen=g), nn.Parameter(rand(24, 1, 3, gen=g)), rand(24, gen=g)
    for _ in range(2):
        y = fused.short_conv_block(bcx, w, b)
        ref = short_conv_block_reference(bcx.double(), w.detach().double(), b.double())
        check(y, ref, torch.float32)
        assert seen[-1].stride(0) == 1
        with torch.no_grad():
            w.mul_(3)
    # One token (a decode step, what LFM2's CUDA graph captures): the weight itself.
    state = rand(2, 24, 2, gen=g)
    ref_state = state.double().clone()
    y = fused.short_conv_block(bcx[:, :1], w, b, state)
    ref = short_conv_block_reference(bcx[:, :1].double(), w.detach().double(), b.double(), conv_state=ref_state)
    check(y, ref, torch.float32)
    check(state, ref_state, torch.float32)
    assert seen[-1] is w


def test_models_are_built_with_versioned_parameters_inside_inference_mode():
    from models.registry import build_model
    with torch.inference_mode():
        served = build_model("lfm2")
    params = list(served.lm.parameters())
    assert params and not any(p.is_inference() for p in params)


# ------------------------------------------------------------------ CUDA: both layouts, graphs

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or _interpreting(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_cuda_both_weight_layouts_match_the_reference(monkeypatch):
    """The channels-inner kernels the models run (NHWC conv2d, LFM2's block) with the tap-major
    copy (default) and with the weight as stored (weight_layout.ENABLED False, as for inference
    tensors), on the device, in the served dtype. (conv1d on a (B, L, C) view shares the
    mechanism and is covered by the interpreter tests; every autotuned variant costs compiles.)"""
    from models.depthwise import fused
    from models.depthwise.short_conv import short_conv_block_reference
    g, dtype = torch.Generator().manual_seed(4), torch.bfloat16
    x2 = rand(3, 72, 13, 11, dtype=dtype, gen=g).contiguous(memory_format=torch.channels_last)
    w2, b2 = rand(144, 1, 3, 3, dtype=dtype, gen=g), rand(144, dtype=dtype, gen=g)    # m = 2
    bcx, w1 = rand(2, 29, 3 * 96, dtype=dtype, gen=g), rand(96, 1, 3, dtype=dtype, gen=g)
    state = rand(2, 96, 2, dtype=dtype, gen=g)
    for enabled in (True, False):
        monkeypatch.setattr(weight_layout, "ENABLED", enabled)
        check(fused.conv2d(x2, w2, b2, (2, 1), (1, 1, 1, 1), (1, 1)),
              ref_conv2d(x2, w2, b2, (2, 1), (1, 1, 1, 1), (1, 1)), dtype)
        s, ref_s = state.clone(), state.double()
        check(fused.short_conv_block(bcx, w1, None, s),
              short_conv_block_reference(bcx.double(), w1.double(), conv_state=ref_s), dtype)
        check(s, ref_s, dtype)


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_captured_after_warmup_replays_the_eager_result():
    """The capture launches the variant the warm-up compiled (on the cached copy): no kernel
    is loaded while the stream captures, and a replay equals an eager call."""
    from models.depthwise import fused
    g = torch.Generator().manual_seed(5)
    x = rand(2, 64, 15, 15, gen=g).contiguous(memory_format=torch.channels_last)
    w, b = nn.Parameter(rand(64, 1, 3, 3, gen=g), requires_grad=False), rand(64, gen=g)
    call = lambda: fused.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    x.copy_(rand(2, 64, 15, 15, gen=g))
    graph.replay()
    torch.cuda.synchronize()
    check(out, ref_conv2d(x, w.detach(), b, (1, 1), (1, 1, 1, 1), (1, 1)), torch.float32)

