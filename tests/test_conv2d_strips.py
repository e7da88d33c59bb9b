"""The NHWC strip kernel (models/depthwise/triton_conv2d_strips.py: 4 outputs of a row per thread,
the input columns they share loaded once), each config forced in turn, against the block-diagonal
dense conv in float64 on fresh random inputs: widths that leave a partial last strip, stride 1
and 2 (its two unrolled paths), channels that do not fill BLOCK_C, a channel multiplier,
asymmetric padding, dilation and other KH along H, bias or none, float32 and bfloat16. Also
which launches take it (3 taps along W, no W dilation, stride 1 or 2, channels-inner input) and
that the per-pixel kernel is used with STRIPS off."""
import pytest
import torch

pytest.importorskip("triton")

from fused_common import DEV, needs_fused  # noqa: E402
from models.depthwise import fused  # noqa: E402
from test_conv2d_tiles import (_Forced, check_bfloat16_public_op, check_configs_on_cuda, check_switch,  # noqa: E402
                               conv3x3)
from test_fused import check, rand, ref_conv2d  # noqa: E402

pytestmark = [pytest.mark.fused, needs_fused]

#        B, C, m, H, W, KH, stride, (top, bottom, left, right), dilation, bias
CASES = [
    pytest.param(2, 20, 1, 9, 11, 3, (1, 1), (1, 1, 1, 1), (1, 1), True, id="s1-partial-strip"),
    pytest.param(1, 24, 1, 13, 17, 3, (2, 2), (1, 1, 1, 1), (1, 1), False, id="s2-odd"),
    pytest.param(2, 8, 2, 7, 10, 3, (1, 2), (0, 2, 2, 1), (2, 1), True, id="mult2-asym-dilH"),
    pytest.param(1, 16, 1, 5, 4, 5, (2, 1), (2, 2, 0, 0), (1, 1), True, id="kh5-no-wpad-one-strip"),
    pytest.param(1, 12, 1, 3, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False, id="3x3-image"),
]
#        BLOCK_Q, BLOCK_C, ROWS (output rows a strip spans)
CONFIGS = [pytest.param(4, 16, 1, id="4x16"), pytest.param(8, 8, 1, id="8x8"), pytest.param(2, 32, 1, id="2x32"),
           pytest.param(4, 16, 2, id="4x16-rows2"), pytest.param(2, 32, 2, id="2x32-rows2"),
           pytest.param(4, 16, 4, id="4x16-rows4"), pytest.param(2, 32, 4, id="2x32-rows4")]


@pytest.mark.parametrize("block_q, block_c, rows", CONFIGS)
@pytest.mark.parametrize("B, C, m, H, W, KH, stride, padding, dilation, bias", CASES)
def test_strip_configs_equal_the_dense_reference(monkeypatch, B, C, m, H, W, KH, stride, padding, dilation,
                                                 bias, block_q, block_c, rows):
    from models.depthwise import triton_conv2d
    forced = _Forced(triton_conv2d._dw_conv2d_nhwc_strip_tuned.fn, BLOCK_Q=block_q, BLOCK_C=block_c, ROWS=rows)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_strip_tuned", forced)
    monkeypatch.setattr(triton_conv2d, "STRIPS", True)
    gen = torch.Generator().manual_seed(hash((B, C, H, W, KH, stride, block_q, block_c, rows)) % 2**31)
    x = rand(B, C, H, W, gen=gen).contiguous(memory_format=torch.channels_last)
    w, b = rand(C * m, 1, KH, 3, gen=gen), (rand(C * m, gen=gen) if bias else None)
    out = fused.conv2d(x, w, b, stride, padding, dilation)
    assert forced.launches == 1
    assert out.is_contiguous(memory_format=torch.channels_last) and out.device.type == DEV
    check(out, ref_conv2d(x, w, b, stride, padding, dilation), torch.float32)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_bfloat16_through_the_public_op_equals_the_reference(monkeypatch, rows):
    from models.depthwise import triton_conv2d
    monkeypatch.setattr(triton_conv2d, "STRIPS", True)
    forced = _Forced(triton_conv2d._dw_conv2d_nhwc_strip_tuned.fn, BLOCK_Q=4, BLOCK_C=16, ROWS=rows)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_strip_tuned", forced)
    gen = torch.Generator().manual_seed(11)
    x = rand(2, 32, 11, 14, dtype=torch.bfloat16, gen=gen).contiguous(memory_format=torch.channels_last)
    bf16 = torch.bfloat16
    check_bfloat16_public_op(x, rand(32, 1, 3, 3, dtype=bf16, gen=gen), rand(32, dtype=bf16, gen=gen))
    assert forced.launches == 2


@pytest.mark.parametrize("tap, KW, sw, dw, want", [
    (True, 3, 1, 1, True), (True, 3, 2, 1, True), (True, 3, 3, 1, False), (True, 5, 1, 1, False),
    (True, 3, 1, 2, False), (False, 3, 1, 1, False)])
def test_which_launches_take_the_strip_kernel(monkeypatch, tap, KW, sw, dw, want):
    from models.depthwise import triton_conv2d
    monkeypatch.setattr(triton_conv2d, "STRIPS", True)
    assert triton_conv2d.strips_apply(tap, KW, sw, dw) is want
    monkeypatch.setattr(triton_conv2d, "STRIPS", False)
    assert triton_conv2d.strips_apply(tap, KW, sw, dw) is False


def test_strips_off_launches_the_per_pixel_kernel_and_a_switch_is_not_replayed_stale(monkeypatch):
    """STRIPS is read per launch and keys the call-site plans: turning it off after a call made
    with it on launches the per-pixel kernel, not the strip kernel's kept plan."""
    from models.depthwise import triton_conv2d
    strips = _Forced(triton_conv2d._dw_conv2d_nhwc_strip_tuned.fn, BLOCK_Q=4, BLOCK_C=16)
    pixels = _Forced(triton_conv2d._dw_conv2d_nhwc_kernel.fn, BLOCK_P=16, BLOCK_C=16, TILE_W=0)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_strip_tuned", strips)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_kernel", pixels)
    gen = torch.Generator().manual_seed(5)
    x = rand(1, 16, 6, 9, gen=gen).contiguous(memory_format=torch.channels_last)
    check_switch(monkeypatch, triton_conv2d, "STRIPS", *conv3x3(x, rand(16, 1, 3, 3, gen=gen)),
                 ((True, strips), (False, pixels)))


def test_two_row_strips_off_launches_the_one_row_tuner(monkeypatch):
    """TWO_ROW_STRIPS (read per launch) picks which tuner of the strip kernel launches: the one
    with the two-row configs (on, the default) or the one-row set; both equal the reference."""
    from models.depthwise import triton_conv2d
    two = _Forced(triton_conv2d._dw_conv2d_nhwc_strip_tuned.fn, BLOCK_Q=4, BLOCK_C=16, ROWS=2)
    one = _Forced(triton_conv2d._dw_conv2d_nhwc_strip_one_row_tuned.fn, BLOCK_Q=4, BLOCK_C=16, ROWS=1)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_strip_tuned", two)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_strip_one_row_tuned", one)
    monkeypatch.setattr(triton_conv2d, "STRIPS", True)
    gen = torch.Generator().manual_seed(9)
    x = rand(2, 16, 7, 10, gen=gen).contiguous(memory_format=torch.channels_last)
    check_switch(monkeypatch, triton_conv2d, "TWO_ROW_STRIPS", *conv3x3(x, rand(16, 1, 3, 3, gen=gen)),
                 ((True, two), (False, one), (True, two)))


def test_strip_programs_cover_every_strip_once():
    from models.depthwise.triton_conv2d_strips import strip_programs
    assert strip_programs({"BLOCK_Q": 8}, 56, 56) == 56 * 14 // 8
    assert strip_programs({"BLOCK_Q": 8}, 7, 7) == 2           # 7 rows x 2 strips = 14 -> 2 programs
    assert strip_programs({"BLOCK_Q": 4}, 1, 1) == 1
    assert strip_programs({"BLOCK_Q": 8, "ROWS": 2}, 56, 56) == 28 * 14 // 8   # two-row strips: half the rows
    assert strip_programs({"BLOCK_Q": 4, "ROWS": 2}, 7, 7) == 2    # 4 strip rows (the last one row) x 2 = 8
    assert strip_programs({"BLOCK_Q": 8, "ROWS": 4}, 56, 56) == 25   # four-row strips: 14 x 14 = 196
    assert strip_programs({"BLOCK_Q": 4, "ROWS": 4}, 7, 7) == 1    # 2 strip rows (the last three rows) x 2 = 4


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="needs CUDA: the autotune configs as compiled for the GPU")
def test_the_strip_configs_as_tuned_on_the_gpu_equal_the_reference():
    """Every strip config (1-, 2- and 4-row), with its own block sizes and warps, in one of float32 /
    bfloat16 x stride 1 / 2 in turn (one compile a config: gpu.sh's test window is shared), on a
    layer whose width leaves a partial strip, whose odd height leaves a tall strip partly out, and
    whose channels do not fill the blocks."""
    from models.depthwise import triton_conv2d
    combos = [(torch.float32, 1), (torch.bfloat16, 2), (torch.float32, 2), (torch.bfloat16, 1)]

    def case(i):
        dtype, stride = combos[i % 4]
        g = torch.Generator(device="cuda").manual_seed(7)
        shapes = ((3, 72, 29, 31), (72, 1, 3, 3), (72,))
        x, w, b = (torch.randn(*s, generator=g, device="cuda", dtype=dtype) for s in shapes)
        return x.contiguous(memory_format=torch.channels_last), w, b, (stride, stride), (1, 1, 1, 1)
    configs = triton_conv2d._STRIP_CONFIGS + triton_conv2d._STRIP_BIG
    check_configs_on_cuda("_dw_conv2d_nhwc_strip_tuned", "STRIPS", configs, case)
