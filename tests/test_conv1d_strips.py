"""The conv1d strip kernel (models/depthwise/triton_conv1d_strips.py: 4 outputs a thread from
aligned vector loads of a (B, C, L) row, the taps picked in registers), each config forced in turn,
against the block-diagonal dense conv in float64 on fresh random inputs: causal K=3, 4 and 7 (one,
two and three vectors a strip, a tap reaching back past the row start), symmetric and asymmetric
padding, K=9 at the scope's edge, a channel multiplier, bias and SiLU, float32 and bfloat16. Also
which launches take it (the scope its `strip_width` checks; everything else goes to the generic
kernel and still computes the same) and that STRIPS off launches the generic kernel."""
import pytest
import torch

pytest.importorskip("triton")

from fused_common import DEV, needs_fused  # noqa: E402
from models.depthwise import fused  # noqa: E402
from test_conv2d_tiles import _Forced, check_switch, force  # noqa: E402
from test_fused import check, rand, ref_conv1d  # noqa: E402

pytestmark = [pytest.mark.fused, needs_fused]

#        B, C, m, L, K, (left, right), bias, activation
CASES = [
    pytest.param(2, 6, 1, 40, 3, (2, 0), True, None, id="causal-k3"),
    pytest.param(1, 5, 1, 36, 4, (3, 0), False, "silu", id="causal-k4-silu"),
    pytest.param(2, 3, 2, 24, 7, (6, 0), True, None, id="causal-k7-mult2"),
    pytest.param(1, 7, 1, 32, 3, (1, 1), True, None, id="same-k3"),
    pytest.param(1, 4, 1, 28, 4, (1, 2), False, None, id="same-evenK"),
    pytest.param(1, 3, 1, 20, 9, (8, 0), True, "silu", id="causal-k9"),
    pytest.param(1, 4, 1, 8, 5, (0, 4), False, None, id="right-pad-only-one-strip-row"),
]
#        BLOCK_C, BLOCK_G
CONFIGS = [pytest.param(2, 8, id="2x8"), pytest.param(1, 16, id="1x16"), pytest.param(4, 2, id="4x2"),
           pytest.param(2, 64, id="2x64-strips-past-the-row")]


def _forced(monkeypatch, block_c, block_g):
    from models.depthwise import triton_conv1d
    return force(monkeypatch, triton_conv1d, "_dw_conv1d_strip_tuned", "STRIPS", BLOCK_C=block_c, BLOCK_G=block_g)


@pytest.mark.parametrize("block_c, block_g", CONFIGS)
@pytest.mark.parametrize("B, C, m, L, K, padding, bias, activation", CASES)
def test_conv1d_strip_configs_equal_the_dense_reference(monkeypatch, B, C, m, L, K, padding, bias, activation,
                                                        block_c, block_g):
    forced = _forced(monkeypatch, block_c, block_g)
    gen = torch.Generator().manual_seed(hash((B, C, L, K, padding, block_c, block_g)) % 2**31)
    x = rand(B, C, L, gen=gen)
    w, b = rand(C * m, 1, K, gen=gen), (rand(C * m, gen=gen) if bias else None)
    out = fused.conv1d(x, w, b, 1, padding, 1, activation)
    assert forced.launches == 1 and out.device.type == DEV
    check(out, ref_conv1d(x, w, b, 1, padding, 1, activation), torch.float32)


def test_bfloat16_through_the_public_op_equals_the_reference(monkeypatch):
    from models.depthwise import depthwise_conv1d
    forced = _forced(monkeypatch, 2, 8)
    gen = torch.Generator().manual_seed(13)
    x = rand(2, 8, 64, dtype=torch.bfloat16, gen=gen)
    w, b = rand(8, 1, 4, dtype=torch.bfloat16, gen=gen), rand(8, dtype=torch.bfloat16, gen=gen)
    out = depthwise_conv1d(x, w, b, padding="causal", impl="fused")
    check(out, ref_conv1d(x, w, b, 1, (3, 0), 1), torch.bfloat16)
    assert forced.launches == 1


@pytest.mark.parametrize("L, K, stride, padding, dilation, why", [
    (21, 3, 1, (2, 0), 1, "L 21: not whole strips (the seed's sweep)"),
    (40, 3, 2, (1, 1), 1, "stride 2"),
    (40, 3, 1, (4, 0), 2, "dilation 2"),
    (40, 10, 1, (9, 0), 1, "K 10: past the unrolled scope"),
    (40, 3, 1, (9, 1), 1, "left padding 9 (L_out 48)"),
    (40, 4, 1, (1, 1), 1, "L_out 39: not whole strips"),
])
def test_launches_outside_its_scope_take_the_generic_kernel(monkeypatch, L, K, stride, padding, dilation, why):
    forced = _forced(monkeypatch, 2, 8)
    gen = torch.Generator().manual_seed(2)
    x, w = rand(1, 4, L, gen=gen), rand(4, 1, K, gen=gen)
    out = fused.conv1d(x, w, None, stride, padding, dilation)
    assert forced.launches == 0, why
    check(out, ref_conv1d(x, w, None, stride, padding, dilation), torch.float32)


def test_channels_inner_views_and_misaligned_strides_take_the_generic_kernel(monkeypatch):
    """LFM2's (B, L, C) views vectorise along C in the generic kernel; a (B, C, L) slice whose
    channel stride is not a multiple of 4 cannot keep a strip's vectors aligned."""
    forced = _forced(monkeypatch, 2, 8)
    gen = torch.Generator().manual_seed(3)
    w = rand(8, 1, 3, gen=gen)
    for x in (rand(2, 40, 8, gen=gen).transpose(1, 2), rand(2, 8, 43, gen=gen)[..., 1:41]):
        out = fused.conv1d(x, w, None, 1, (2, 0), 1)
        check(out, ref_conv1d(x, w, None, 1, (2, 0), 1), torch.float32)
    assert forced.launches == 0


def test_strips_off_launches_the_generic_kernel(monkeypatch):
    from models.depthwise import triton_conv1d
    strips = _forced(monkeypatch, 2, 8)
    generic = _Forced(triton_conv1d._dw_conv1d_kernel.fn, BLOCK_C=4, BLOCK_L=32)
    monkeypatch.setattr(triton_conv1d, "_dw_conv1d_kernel", generic)
    gen = torch.Generator().manual_seed(6)
    x, w = rand(1, 4, 16, gen=gen), rand(4, 1, 3, gen=gen)
    check_switch(monkeypatch, triton_conv1d, "STRIPS", lambda: fused.conv1d(x, w, None, 1, (2, 0), 1),
                 ref_conv1d(x, w, None, 1, (2, 0), 1), ((True, strips), (False, generic), (True, strips)))


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="needs CUDA: the autotune configs as compiled for the GPU")
def test_the_conv1d_strip_configs_as_tuned_on_the_gpu_equal_the_reference():
    """Every config with its own block sizes and warps, one of float32 / bfloat16 x causal K=4 /
    K=7 in turn (one compile a config: gpu.sh's test window is shared), on a layer whose channels
    and strips do not fill the blocks: 4-wide strips in float32, 8-wide in bfloat16 (L 1104)."""
    from models.depthwise import triton_conv1d
    combos = [(torch.float32, 4), (torch.bfloat16, 7), (torch.float32, 7), (torch.bfloat16, 4)]
    for i, cfg in enumerate(triton_conv1d._STRIP_CONFIGS):
        dtype, K = combos[i % 4]
        forced = _Forced(triton_conv1d._dw_conv1d_strip_tuned.fn, **cfg.kwargs, num_warps=cfg.num_warps)
        g = torch.Generator(device="cuda").manual_seed(9)
        L = 1104 if dtype == torch.bfloat16 else 1100
        x, w, b = (torch.randn(*s, generator=g, device="cuda", dtype=dtype) for s in ((3, 37, L), (37, 1, K), (37,)))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(triton_conv1d, "_dw_conv1d_strip_tuned", forced)
            mp.setattr(triton_conv1d, "STRIPS", True)
            out = fused.conv1d(x, w, b, 1, (K - 1, 0), 1, "silu")
        assert forced.vecs == [8 if dtype == torch.bfloat16 else 4], cfg
        check(out, ref_conv1d(x, w, b, 1, (K - 1, 0), 1, "silu"), dtype)
