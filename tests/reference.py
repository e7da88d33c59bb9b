"""Independent reference for the depthwise ops (shared test helper).

The idea of the seed PR's test (candle #3531): a depthwise conv equals a dense conv
(groups=1) whose weight is block-diagonal: output channel o reads only input channel o // m.
Everything here is float64 and resolves padding by itself (not through models.depthwise.spec),
so a bug shared by spec.py and the impls cannot hide.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"

# (atol, rtol) against the float64 reference computed from the *same* low-precision inputs:
# what remains is accumulation and output rounding (bf16 keeps 8 mantissa bits).
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-5),
       torch.float16: (6e-3, 6e-3), torch.bfloat16: (4e-2, 2e-2)}


def dense_weight(weight: torch.Tensor, C: int) -> torch.Tensor:
    """(C*m, 1, *k) depthwise weight -> (C*m, C, *k) block-diagonal dense weight (float64)."""
    Cm = weight.shape[0]
    m = Cm // C
    dense = torch.zeros(Cm, C, *weight.shape[2:], dtype=torch.float64, device=weight.device)
    o = torch.arange(Cm, device=weight.device)
    dense[o, o // m] = weight[:, 0].double()
    return dense


def _per_side(padding, kernel, dilation, stride) -> list[tuple[int, int]]:
    """User padding -> [(lo, hi)] per spatial dim, written independently of spec.py."""
    n = len(kernel)
    if padding == "valid":
        return [(0, 0)] * n
    if padding == "causal":
        return [(dilation[0] * (kernel[0] - 1), 0)]
    if padding == "same":
        assert all(s == 1 for s in stride)
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return out
    if isinstance(padding, int):
        return [(padding, padding)] * n
    padding = tuple(padding)
    if len(padding) == n:
        return [(p, p) for p in padding]
    return [(padding[2 * i], padding[2 * i + 1]) for i in range(n)]


def reference_conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Depthwise conv1d/2d (by x.dim()) in float64 via F.pad + dense groups=1 conv."""
    n = x.dim() - 2
    kernel = tuple(weight.shape[2:])
    stride = (stride,) * n if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
    sides = _per_side(padding, kernel, dilation, stride)
    pad = [p for lo_hi in reversed(sides) for p in lo_hi]        # F.pad wants the last dim first
    xp = F.pad(x.double(), pad)
    b = None if bias is None else bias.double()
    conv = F.conv1d if n == 1 else F.conv2d
    return conv(xp, dense_weight(weight, x.shape[1]), b, stride, 0, dilation, groups=1)


def assert_matches(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """out has `dtype` and ref's shape and values within TOL[dtype] (scaled by ref's size)."""
    assert out.dtype == dtype, f"output dtype {out.dtype}, expected {dtype}"
    assert tuple(out.shape) == tuple(ref.shape), f"shape {tuple(out.shape)}, expected {tuple(ref.shape)}"
    atol, rtol = TOL[dtype]
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    torch.testing.assert_close(out.double().cpu(), ref.double().cpu(), atol=atol * scale, rtol=rtol)


def randn(*shape, dtype=torch.float32, gen=None, device=DEV) -> torch.Tensor:
    """Standard normal drawn in float64 on CPU from `gen`, then cast (same values every device)."""
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
