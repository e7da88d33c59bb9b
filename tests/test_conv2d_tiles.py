"""The NHWC conv2d kernel's pixel tilings, each forced in turn: flattened output pixels
(TILE_W = 0) and 2-D tiles of BLOCK_P // TILE_W rows x TILE_W columns, the tiling the autotuner
may pick for big memory-bound layers on the GPU (with the strip kernel off: tests/test_conv2d_strips.py).
Under the interpreter the autotuner keeps one flattened config, so without forcing them the 2-D
tiles would run only on a GPU. Each is checked against the block-diagonal dense conv in float64
on fresh random inputs, on shapes whose rows, columns and channels do not divide the tile (edges
masked), strided, dilated, with a channel multiplier and asymmetric padding. Also the helpers the
strip kernels' tests share (force, check_switch, check_configs_on_cuda, ...)."""
import pytest
import torch

pytest.importorskip("triton")

from fused_common import DEV, needs_fused  # noqa: E402
from models.depthwise import fused  # noqa: E402
from test_fused import check, rand, ref_conv2d  # noqa: E402

pytestmark = [pytest.mark.fused, needs_fused]

#        B, C, m, H, W, (KH, KW), stride, (top, bottom, left, right), dilation
CASES = [
    pytest.param(2, 20, 1, 13, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), id="s1-odd-edges"),
    pytest.param(1, 24, 1, 17, 19, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), id="s2"),
    pytest.param(2, 8, 2, 9, 23, (3, 5), (1, 2), (0, 2, 2, 1), (2, 1), id="mult2-dil-asym"),
    pytest.param(1, 17, 1, 6, 7, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), id="k5-one-tile"),
]
#        BLOCK_P, TILE_W
TILINGS = [pytest.param(16, 0, id="flat16"), pytest.param(16, 4, id="4x4"), pytest.param(32, 8, id="4x8"),
           pytest.param(64, 8, id="8x8"), pytest.param(32, 16, id="2x16")]


class _Forced:
    """Stands in for the autotuned kernel: launches its JIT function with one fixed config; counts
    its launches and keeps each one's VEC (the strip kernels' outputs per strip; None elsewhere)."""

    def __init__(self, fn, **config):
        self.fn, self.config, self.launches, self.vecs = fn, config, 0, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches += 1
            self.vecs.append(kwargs.get("VEC"))
            return self.fn[grid](*args, **kwargs, **self.config)
        return launch


def force(monkeypatch, module, kernel: str, switch: str, **config) -> _Forced:
    """module.<kernel> (an autotuned kernel) replaced by its JIT function at `config`, with
    module.<switch> on so launches reach it; -> the stand-in, which counts its launches."""
    forced = _Forced(getattr(module, kernel).fn, **config)
    monkeypatch.setattr(module, kernel, forced)
    monkeypatch.setattr(module, switch, True)
    return forced


def check_switch(monkeypatch, module, switch: str, run, ref, order) -> None:
    """For each (value, forced kernel) in `order`: with module.<switch> = value (a kernel switch
    read per launch), run() equals `ref` (float32) and launches that kernel once: a switch flipped
    after a call is never answered from a kept Plan."""
    for value, launched in order:
        monkeypatch.setattr(module, switch, value)
        before = launched.launches
        check(run(), ref, torch.float32)
        assert launched.launches == before + 1, (switch, value)


def conv3x3(x, w):
    """fused.conv2d of x, w: 3x3, stride 1, padding 1 (-> (call, its float64 reference))."""
    return (lambda: fused.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1)),
            ref_conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1)))


def check_configs_on_cuda(kernel: str, switch: str, configs, case) -> None:
    """Every config in `configs` of the autotuned kernel triton_conv2d.<kernel> (<switch> on),
    forced in turn with its own block sizes and warps: case(i) -> (x, w, b, stride, padding) of
    CUDA tensors for the i-th config; one launch each, equal to the float64 reference."""
    from models.depthwise import triton_conv2d
    for i, cfg in enumerate(configs):
        x, w, b, stride, padding = case(i)
        forced = _Forced(getattr(triton_conv2d, kernel).fn, **cfg.kwargs, num_warps=cfg.num_warps)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(triton_conv2d, kernel, forced)
            mp.setattr(triton_conv2d, switch, True)
            out = fused.conv2d(x, w, b, stride, padding, (1, 1))
        assert forced.launches == 1, cfg
        check(out, ref_conv2d(x, w, b, stride, padding, (1, 1)), x.dtype)


def check_bfloat16_public_op(x, w, b) -> None:
    """depthwise_conv2d(impl="fused") in bfloat16, 3x3 padding 1 at stride 1 and 2, against the reference."""
    from models.depthwise import depthwise_conv2d
    for stride in (1, 2):
        out = depthwise_conv2d(x, w, b, stride=stride, padding=1, impl="fused")
        check(out, ref_conv2d(x, w, b, (stride, stride), (1, 1, 1, 1), (1, 1)), torch.bfloat16)


@pytest.mark.parametrize("block_p, tile_w", TILINGS)
@pytest.mark.parametrize("B, C, m, H, W, k, stride, padding, dilation", CASES)
def test_nhwc_tilings_equal_the_dense_reference(monkeypatch, B, C, m, H, W, k, stride, padding, dilation,
                                               block_p, tile_w):
    from models.depthwise import triton_conv2d
    kernel = triton_conv2d._dw_conv2d_nhwc_kernel
    forced = _Forced(kernel.fn, BLOCK_P=block_p, BLOCK_C=16, TILE_W=tile_w)
    monkeypatch.setattr(triton_conv2d, "_dw_conv2d_nhwc_kernel", forced)
    monkeypatch.setattr(triton_conv2d, "STRIPS", False)        # 3x3 layers would take the strip kernel
    gen = torch.Generator().manual_seed(hash((B, C, H, W, block_p, tile_w)) % 2**31)
    x = rand(B, C, H, W, gen=gen).contiguous(memory_format=torch.channels_last)
    w, b = rand(C * m, 1, *k, gen=gen), rand(C * m, gen=gen)
    out = fused.conv2d(x, w, b, stride, padding, dilation)
    assert forced.launches == 1
    assert out.is_contiguous(memory_format=torch.channels_last) and out.device.type == DEV
    check(out, ref_conv2d(x, w, b, stride, padding, dilation), torch.float32)


def test_programs_cover_every_output_pixel_once():
    """The grid's dim 0 for a 2-D tiling: tile rows x tile columns, rounded up; flattened: pixels
    over BLOCK_P; the NCHW kernel's configs (no TILE_W) flattened."""
    from models.depthwise.triton_conv2d import _pixel_programs
    assert _pixel_programs({"BLOCK_P": 64, "TILE_W": 8}, 56 * 56, 56, 56) == 7 * 7
    assert _pixel_programs({"BLOCK_P": 64, "TILE_W": 8}, 13 * 11, 13, 11) == 2 * 2
    assert _pixel_programs({"BLOCK_P": 32, "TILE_W": 16}, 9 * 40, 9, 40) == 5 * 3
    assert _pixel_programs({"BLOCK_P": 64, "TILE_W": 0}, 13 * 11, 13, 11) == 3
    assert _pixel_programs({"BLOCK_P": 128}, 1000, 10, 100) == 8


@pytest.mark.gpu
@pytest.mark.skipif(DEV != "cuda", reason="needs CUDA: the autotune configs as compiled for the GPU")
def test_the_2d_tile_configs_as_tuned_on_the_gpu_equal_the_reference():
    """Each 2-D tile config of the big-layer set, with its own block sizes and warps, on a
    stride-2 layer whose rows and columns do not divide the tile, against the dense float64
    conv: the autotuner may pick one on the big layers, where no correctness step looks."""
    from models.depthwise import triton_conv2d
    tiled = [c for c in triton_conv2d._NHWC_BIG if c.kwargs["TILE_W"]]
    assert tiled
    for cfg in tiled:
        kernel = triton_conv2d._dw_conv2d_nhwc_kernel
        forced = _Forced(kernel.fn, **cfg.kwargs, num_warps=cfg.num_warps)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(triton_conv2d, "_dw_conv2d_nhwc_kernel", forced)
            mp.setattr(triton_conv2d, "STRIPS", False)
            g = torch.Generator(device="cuda").manual_seed(7)
            x = torch.randn(3, 72, 61, 67, generator=g, device="cuda").contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(72, 1, 3, 3, generator=g, device="cuda"), torch.randn(72, generator=g, device="cuda")
            out = fused.conv2d(x, w, b, (2, 2), (1, 1, 1, 1), (1, 1))
        assert forced.launches == 1
        check(out, ref_conv2d(x, w, b, (2, 2), (1, 1, 1, 1), (1, 1)), torch.float32)
