"""8-wide strips in 2-byte dtypes: the conv1d and NCHW strip kernels (VEC = 8: 8 outputs a thread
from 16-byte bfloat16 / float16 vectors, each vector two 4-element halves and each strip two
4-output groups in triton_vectors.row_taps), each config forced in turn, against the
block-diagonal dense conv in float64 on fresh random inputs: the column sets each kernel's scope
allows (causal K up to 9 reaching back one vector, symmetric and right padding, stride 2 along W,
left padding 0 and 1), a channel multiplier, bias, SiLU. Also which launches get 8-wide strips
(2-byte dtypes whose rows and strides are multiples of 8; float32 and rows of 4 keep 4-wide ones)
and that WIDE_HALF off keeps 4-wide strips, never answered from a Plan kept with it on."""
import pytest
import torch

pytest.importorskip("triton")

from fused_common import DEV, needs_fused  # noqa: E402
from models.depthwise import fused  # noqa: E402
from test_conv2d_tiles import force  # noqa: E402
from test_fused import check, rand, ref_conv1d, ref_conv2d  # noqa: E402

pytestmark = [pytest.mark.fused, needs_fused]

HALVES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]
#        BLOCK_C, BLOCK_G
CONFIGS = [pytest.param(2, 4, id="2x4"), pytest.param(1, 8, id="1x8")]

#        B, C, m, L, K, (left, right), bias, activation
CONV1D = [
    pytest.param(2, 5, 1, 40, 3, (2, 0), True, None, id="causal-k3"),
    pytest.param(1, 3, 2, 48, 4, (3, 0), False, "silu", id="causal-k4-mult2-silu"),
    pytest.param(1, 4, 1, 24, 7, (6, 0), True, None, id="causal-k7"),
    pytest.param(1, 3, 1, 16, 9, (8, 0), True, "silu", id="causal-k9"),
    pytest.param(1, 4, 1, 32, 3, (1, 1), False, None, id="same-k3"),
    pytest.param(1, 3, 1, 8, 5, (0, 4), True, None, id="right-pad-only-one-strip"),
]
#        B, C, m, H, W, KH, stride, (top, bottom, left, right), bias
NCHW = [
    pytest.param(2, 5, 1, 7, 16, 3, (1, 1), (1, 1, 1, 1), True, id="s1-pad1"),
    pytest.param(1, 4, 1, 9, 32, 3, (2, 2), (1, 1, 1, 1), False, id="s2-pad1"),      # W_out 16
    pytest.param(1, 3, 2, 6, 16, 3, (1, 1), (0, 2, 0, 2), True, id="s1-pad0-mult2"),
    pytest.param(1, 3, 1, 6, 32, 5, (2, 2), (2, 2, 0, 1), True, id="s2-pad0-kh5"),    # W_out 16
    pytest.param(1, 4, 1, 4, 8, 3, (1, 1), (1, 1, 1, 1), False, id="one-strip-row"),
]


def _conv1d_forced(monkeypatch, block_c=2, block_g=4):
    from models.depthwise import triton_conv1d
    return force(monkeypatch, triton_conv1d, "_dw_conv1d_strip_tuned", "STRIPS", BLOCK_C=block_c, BLOCK_G=block_g)


def _nchw_forced(monkeypatch, block_c=2, block_g=4):
    from models.depthwise import triton_conv2d
    return force(monkeypatch, triton_conv2d, "_dw_conv2d_nchw_strip_tuned", "NCHW_STRIPS", BLOCK_C=block_c,
                 BLOCK_G=block_g)


@pytest.fixture(autouse=True)
def _wide_half_on(monkeypatch):
    from models.depthwise import triton_vectors
    monkeypatch.setattr(triton_vectors, "WIDE_HALF", True)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("block_c, block_g", CONFIGS)
@pytest.mark.parametrize("B, C, m, L, K, padding, bias, activation", CONV1D)
def test_conv1d_8_wide_strips_equal_the_dense_reference(monkeypatch, B, C, m, L, K, padding, bias, activation,
                                                        block_c, block_g, dtype):
    forced = _conv1d_forced(monkeypatch, block_c, block_g)
    gen = torch.Generator().manual_seed(hash((B, C, L, K, padding, block_c, block_g, str(dtype))) % 2**31)
    x = rand(B, C, L, dtype=dtype, gen=gen)
    w, b = rand(C * m, 1, K, dtype=dtype, gen=gen), (rand(C * m, dtype=dtype, gen=gen) if bias else None)
    out = fused.conv1d(x, w, b, 1, padding, 1, activation)
    assert forced.vecs == [8] and out.device.type == DEV
    check(out, ref_conv1d(x, w, b, 1, padding, 1, activation), dtype)


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("block_c, block_g", CONFIGS)
@pytest.mark.parametrize("B, C, m, H, W, KH, stride, padding, bias", NCHW)
def test_nchw_8_wide_strips_equal_the_dense_reference(monkeypatch, B, C, m, H, W, KH, stride, padding, bias,
                                                      block_c, block_g, dtype):
    forced = _nchw_forced(monkeypatch, block_c, block_g)
    gen = torch.Generator().manual_seed(hash((B, C, H, W, KH, stride, padding, block_c, block_g, str(dtype))) % 2**31)
    x = rand(B, C, H, W, dtype=dtype, gen=gen)
    w, b = rand(C * m, 1, KH, 3, dtype=dtype, gen=gen), (rand(C * m, dtype=dtype, gen=gen) if bias else None)
    out = fused.conv2d(x, w, b, stride, padding, (1, 1))
    assert forced.vecs == [8] and out.is_contiguous() and out.device.type == DEV
    check(out, ref_conv2d(x, w, b, stride, padding, (1, 1)), dtype)


@pytest.mark.parametrize("dtype, row, L, want, why", [
    (torch.float32, 40, 40, 4, "float32: a 4-element vector is 16 bytes already"),
    (torch.bfloat16, 36, 36, 4, "L 36: rows of whole 4-vectors, not 8"),
    (torch.bfloat16, 44, 40, 4, "L 40 sliced from rows of 44: channel stride a multiple of 4, not 8"),
    (torch.float16, 48, 48, 8, "float16, L 48"),
])
def test_which_conv1d_launches_get_8_wide_strips(monkeypatch, dtype, row, L, want, why):
    forced = _conv1d_forced(monkeypatch)
    gen = torch.Generator().manual_seed(21)
    x = rand(2, 4, row, dtype=dtype, gen=gen)[..., :L]
    w = rand(4, 1, 3, dtype=dtype, gen=gen)
    out = fused.conv1d(x, w, None, 1, (2, 0), 1)
    assert forced.vecs == [want], why
    check(out, ref_conv1d(x, w, None, 1, (2, 0), 1), dtype)


@pytest.mark.parametrize("dtype, W, stride, want, why", [
    (torch.float32, 32, 1, 4, "float32"),
    (torch.bfloat16, 28, 1, 4, "W 28: MobileNetV2's 28x28 rows are whole 4-vectors, not 8"),
    (torch.bfloat16, 24, 2, 4, "W_out 12"),
    (torch.float16, 16, 2, 8, "W 16, W_out 8"),
])
def test_which_nchw_launches_get_8_wide_strips(monkeypatch, dtype, W, stride, want, why):
    forced = _nchw_forced(monkeypatch)
    gen = torch.Generator().manual_seed(22)
    x, w = rand(1, 3, 6, W, dtype=dtype, gen=gen), rand(3, 1, 3, 3, dtype=dtype, gen=gen)
    out = fused.conv2d(x, w, None, (stride, stride), (1, 1, 1, 1), (1, 1))
    assert forced.vecs == [want], why
    check(out, ref_conv2d(x, w, None, (stride, stride), (1, 1, 1, 1), (1, 1)), dtype)


def test_wide_half_off_keeps_4_wide_strips_and_no_plan_crosses_the_switch(monkeypatch):
    from models.depthwise import triton_vectors
    conv1d, nchw = _conv1d_forced(monkeypatch), _nchw_forced(monkeypatch)
    gen = torch.Generator().manual_seed(23)
    x1, w1 = rand(1, 4, 32, dtype=torch.bfloat16, gen=gen), rand(4, 1, 4, dtype=torch.bfloat16, gen=gen)
    x2, w2 = rand(1, 4, 5, 16, dtype=torch.bfloat16, gen=gen), rand(4, 1, 3, 3, dtype=torch.bfloat16, gen=gen)
    ref1, ref2 = ref_conv1d(x1, w1, None, 1, (3, 0), 1), ref_conv2d(x2, w2, None, (1, 1), (1, 1, 1, 1), (1, 1))
    for wide in (True, False, True):
        monkeypatch.setattr(triton_vectors, "WIDE_HALF", wide)
        check(fused.conv1d(x1, w1, None, 1, (3, 0), 1), ref1, torch.bfloat16)
        check(fused.conv2d(x2, w2, None, (1, 1), (1, 1, 1, 1), (1, 1)), ref2, torch.bfloat16)
    assert conv1d.vecs == nchw.vecs == [8, 4, 8]
