"""The NCHW strip kernel (models/depthwise/triton_conv2d_nchw_strips.py: 4 outputs a thread along W
from aligned vector loads, the taps picked in registers), each config forced in turn, against the
block-diagonal dense conv in float64 on fresh random inputs: stride 1 and 2 along W, left padding
1 and 0 (its four column sets), other strides and dilations along H, a channel multiplier, channels
that do not fill BLOCK_C, bias or none, float32 and bfloat16. Also which launches take it (the
scope its `strip_width` checks: anything else goes to the generic NCHW kernel, and still computes the
same) and that NCHW_STRIPS off launches the generic kernel."""
import pytest
import torch

pytest.importorskip("triton")

from fused_common import DEV, needs_fused  # noqa: E402
from models.depthwise import fused  # noqa: E402
from test_conv2d_tiles import (_Forced, check_bfloat16_public_op, check_configs_on_cuda, check_switch,  # noqa: E402
                               conv3x3, force)
from test_fused import check, rand, ref_conv2d  # noqa: E402

pytestmark = [pytest.mark.fused, needs_fused]

#        B, C, m, H, W, KH, stride, (top, bottom, left, right), dilation, bias
CASES = [
    pytest.param(2, 6, 1, 9, 16, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, id="s1-pad1"),
    pytest.param(1, 5, 1, 11, 16, 3, (2, 2), (1, 1, 1, 1), (1, 1), False, id="s2-pad1"),
    pytest.param(2, 4, 2, 7, 12, 3, (1, 1), (0, 2, 0, 2), (2, 1), True, id="s1-pad0-mult2-dilH"),   # W_out 12
    pytest.param(1, 3, 1, 6, 16, 5, (2, 2), (2, 2, 0, 1), (1, 1), True, id="s2-pad0-kh5"),          # W_out 8
    pytest.param(1, 7, 1, 4, 8, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, id="one-strip-row"),
]
#        BLOCK_C, BLOCK_G
CONFIGS = [pytest.param(2, 8, id="2x8"), pytest.param(1, 16, id="1x16"), pytest.param(4, 4, id="4x4"),
           pytest.param(1, 64, id="1x64-several-rows")]


def _forced(monkeypatch, block_c, block_g):
    from models.depthwise import triton_conv2d
    return force(monkeypatch, triton_conv2d, "_dw_conv2d_nchw_strip_tuned", "NCHW_STRIPS", BLOCK_C=block_c,
                 BLOCK_G=block_g)


@pytest.mark.parametrize("block_c, block_g", CONFIGS)
@pytest.mark.parametrize("B, C, m, H, W, KH, stride, padding, dilation, bias", CASES)
def test_nchw_strip_configs_equal_the_dense_reference(monkeypatch, B, C, m, H, W, KH, stride, padding, dilation,
                                                      bias, block_c, block_g):
    forced = _forced(monkeypatch, block_c, block_g)
    gen = torch.Generator().manual_seed(hash((B, C, H, W, KH, stride, padding, block_c, block_g)) % 2**31)
    x = rand(B, C, H, W, gen=gen)
    w, b = rand(C * m, 1, KH, 3, gen=gen), (rand(C * m, gen=gen) if bias else None)
    out = fused.conv2d(x, w, b, stride, padding, dilation)
    assert forced.launches == 1
    assert out.is_contiguous() and out.device.type == DEV
    check(out, ref_conv2d(x, w, b, stride, padding, dilation), torch.float32)


def test_bfloat16_through_the_public_op_equals_the_reference(monkeypatch):
    forced = _forced(monkeypatch, 2, 8)
    gen = torch.Generator().manual_seed(12)
    x = rand(2, 8, 12, 16, dtype=torch.bfloat16, gen=gen)
    check_bfloat16_public_op(x, rand(8, 1, 3, 3, dtype=torch.bfloat16, gen=gen), rand(8, dtype=torch.bfloat16, gen=gen))
    assert forced.launches == 2


@pytest.mark.parametrize("x_shape, weight_hw, stride, padding, dilation, why", [
    ((1, 4, 8, 14), (3, 3), 1, 1, 1, "W_out 14: not whole strips"),
    ((1, 4, 8, 16), (3, 3), 3, 1, 1, "stride 3 along W"),
    ((1, 4, 8, 16), (3, 5), 1, 2, 1, "5 taps along W"),
    ((1, 4, 8, 16), (3, 3), 1, 2, 1, "left padding 2"),
    ((1, 4, 8, 16), (3, 3), 1, 1, 2, "dilation 2 along W"),
    ((1, 4, 8, 18), (3, 3), 1, 0, 1, "W 18: rows not 4-aligned (W_out 16)"),
])
def test_layers_outside_its_scope_take_the_generic_kernel(monkeypatch, x_shape, weight_hw, stride, padding,
                                                          dilation, why):
    from models.depthwise import depthwise_conv2d
    forced = _forced(monkeypatch, 2, 8)
    gen = torch.Generator().manual_seed(3)
    x, w = rand(*x_shape, gen=gen), rand(x_shape[1], 1, *weight_hw, gen=gen)
    out = depthwise_conv2d(x, w, stride=stride, padding=padding, dilation=dilation, impl="fused")
    assert forced.launches == 0, why
    s, p, d = (stride, stride), (padding,) * 4, (dilation, dilation)
    check(out, ref_conv2d(x, w, None, s, p, d), torch.float32)


@pytest.mark.parametrize("x_slice, padding, why", [
    ((19, 1, 17), (1, 1, 1, 1), "W 16 (W_out 16), but the row stride is 19"),
    ((20, 0, 18), (1, 1, 0, 0), "row stride 20, but W 18 (W_out 16): a vector would straddle the row's end"),
])
def test_sliced_inputs_whose_rows_are_not_whole_vectors_take_the_generic_kernel(monkeypatch, x_slice, padding, why):
    forced = _forced(monkeypatch, 2, 8)
    gen = torch.Generator().manual_seed(4)
    width, start, stop = x_slice
    x = rand(1, 4, 8, width, gen=gen)[..., start:stop]
    w = rand(4, 1, 3, 3, gen=gen)
    out = fused.conv2d(x, w, None, (1, 1), padding, (1, 1))
    assert forced.launches == 0, why
    check(out, ref_conv2d(x, w, None, (1, 1), padding, (1, 1)), torch.float32)


def test_nchw_strips_off_launches_the_generic_kernel(monkeypatch):
    from models.depthwise import triton_conv2d
    strips = _forced(monkeypatch, 2, 8)
    generic = _Forced(triton_conv2d._dw_conv2d_nchw_kernel.fn, BLOCK_C=4, BLOCK_P=64)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nchw_kernel", generic)
    gen = torch.Generator().manual_seed(6)
    call, ref = conv3x3(rand(1, 4, 6, 8, gen=gen), rand(4, 1, 3, 3, gen=gen))
    check_switch(monkeypatch, triton_conv2d, "NCHW_STRIPS", call, ref, ((True, strips), (False, generic), (True, strips)))


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="needs CUDA: the autotune configs as compiled for the GPU")
def test_the_nchw_strip_configs_as_tuned_on_the_gpu_equal_the_reference():
    """Every config with its own block sizes and warps, one of float32 / bfloat16 x stride 1 / 2 x
    left padding 1 / 0 in turn (one compile a config: gpu.sh's test window is shared), on a layer
    whose channels do not fill the blocks."""
    from models.depthwise import triton_conv2d
    combos = [(torch.float32, 1, 1), (torch.bfloat16, 2, 1), (torch.float32, 2, 0), (torch.bfloat16, 1, 0)]

    def case(i):
        dtype, stride, left = combos[i % 4]
        g = torch.Generator(device="cuda").manual_seed(8)
        shapes = ((3, 37, 29, 64), (37, 1, 3, 3), (37,))
        x, w, b = (torch.randn(*s, generator=g, device="cuda", dtype=dtype) for s in shapes)
        right = (2 if stride == 1 else 1) - left                  # W_out 64 / stride: whole strips
        return x, w, b, (stride, stride), (1, 1, left, right)
    check_configs_on_cuda("_dw_conv2d_nchw_strip_tuned", "NCHW_STRIPS", triton_conv2d._NCHW_STRIP_CONFIGS, case)
