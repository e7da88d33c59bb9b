"""The cases benchmarks/gpu.py's correctness step checks (gpu_checks.py runs them): `Case`,
`CASES` at GPU sizes and `SMOKE_CASES` small enough for Triton's interpreter, their seeded
inputs (`make_inputs`), and `reference`: the float64 answer written from the definitions
(F.conv1d/F.conv2d with groups=C on the same inputs upcast)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Case:
    """x: (B, C, L) / (B, C, H, W); decode: x_new (B, C); short_conv: bcx (B, L, 3C).
    layout: "contiguous", "channels_last" (conv2d NHWC) or "channels_inner" (conv1d x as the
    (B, C, L) view of a (B, L, C) tensor, as LFM2 hands it over)."""
    name: str
    op: str                        # conv1d | conv2d | decode | short_conv
    x: tuple
    weight: tuple
    stride: int = 1
    padding: int | str = 0
    dilation: int = 1
    bias: bool = False
    layout: str = "contiguous"
    state: bool = False            # short_conv: start from a conv state (decode always has one)
    mask: bool = False             # short_conv: row 1 left-padded
    activation: str | None = None  # decode only


# GPU sizes: odd, and several tiles of the largest blocks the kernels use (conv1d BLOCK_C <= 64,
# BLOCK_L <= 256; conv2d BLOCK_P <= 512, NHWC BLOCK_C <= 128; decode BLOCK_C <= 256; short conv
# 32 x 64), so tile edges are exercised. conv1d cases that differ only in padding or length
# share C, K, stride and dilation: one Triton autotune key (compile + tune) per dtype.
CASES: tuple[Case, ...] = (
    Case("conv1d-causal", "conv1d", (2, 75, 301), (75, 1, 4), padding="causal", bias=True),
    Case("conv1d-same-evenK", "conv1d", (3, 75, 263), (75, 1, 4), padding="same", bias=True),
    Case("conv1d-valid-odd", "conv1d", (1, 75, 13), (75, 1, 4)),
    Case("conv1d-stride2", "conv1d", (2, 75, 517), (75, 1, 4), stride=2, padding=1, bias=True),
    Case("conv1d-dilation2", "conv1d", (2, 75, 300), (75, 1, 4), dilation=2, padding="causal"),
    Case("conv1d-mult2", "conv1d", (2, 37, 301), (74, 1, 4), padding="same", bias=True),
    Case("conv1d-causal-blc-view", "conv1d", (2, 75, 301), (75, 1, 4), padding="causal", layout="channels_inner"),
    # L 300: whole 4-wide strips (the conv1d strip kernel; L 301 above takes the generic one)
    Case("conv1d-causal-strips", "conv1d", (2, 75, 300), (75, 1, 4), padding="causal", bias=True),
    Case("conv1d-causal-k7-strips", "conv1d", (2, 75, 300), (75, 1, 7), padding="causal"),
    Case("conv2d-nchw-s1", "conv2d", (2, 131, 29, 31), (131, 1, 3, 3), padding=1, bias=True),
    Case("conv2d-nchw-s2", "conv2d", (2, 131, 29, 31), (131, 1, 3, 3), stride=2, padding=1),
    # W 64: whole 4-wide strips (the NCHW strip kernel; W 31 above takes the generic one); 4 x 131
    # strips a row block, more than the widest tile (BLOCK_C 8 x BLOCK_G 128 strips) covers
    Case("conv2d-nchw-strips-s1", "conv2d", (2, 131, 29, 64), (131, 1, 3, 3), padding=1, bias=True),
    Case("conv2d-nchw-strips-s2", "conv2d", (2, 131, 29, 64), (131, 1, 3, 3), stride=2, padding=1),
    Case("conv2d-nhwc-s1", "conv2d", (2, 131, 29, 31), (131, 1, 3, 3), padding=1, bias=True, layout="channels_last"),
    Case("conv2d-nhwc-s2", "conv2d", (2, 131, 29, 31), (131, 1, 3, 3), stride=2, padding=1, layout="channels_last"),
    Case("decode-step", "decode", (3, 300), (300, 1, 4), bias=True),
    Case("decode-step-silu", "decode", (3, 300), (300, 1, 4), activation="silu"),
    Case("short-conv-prefill", "short_conv", (2, 37, 225), (75, 1, 3)),
    Case("short-conv-state-mask", "short_conv", (2, 37, 225), (75, 1, 3), bias=True, state=True, mask=True),
    # LFM3's K=7 block and decode step: 6 state columns, more taps than a time-tile's halo of 3
    Case("short-conv-k7-state-mask", "short_conv", (2, 37, 225), (75, 1, 7), bias=True, state=True, mask=True),
    Case("decode-step-k7", "decode", (3, 300), (300, 1, 7), bias=True),
)


def smoke_case(c: Case) -> Case:
    """The same case, small enough for Triton's interpreter (~70 ms per program on 2 cores):
    a few programs of its single small config (conv1d keeps 2 L tiles of 32)."""
    K = c.weight[-1]
    if c.op == "conv2d":       # W a multiple of 4 kept so (W 8): the NCHW strip cases still take that kernel
        return dataclasses.replace(c, x=(1, 9, 7, 8 if c.x[3] % 4 == 0 else 9), weight=(9, 1, *c.weight[2:]))
    if c.op == "decode":
        return dataclasses.replace(c, x=(2, 24), weight=(24, 1, K))
    if c.op == "short_conv":
        return dataclasses.replace(c, x=(2, 11, 60), weight=(20, 1, K))
    B, C, L = c.x
    small = 13 if C % 2 else 12
    return dataclasses.replace(c, x=(min(B, 2), small, min(L, 53 if L % 2 else 52)),
                               weight=(small * (c.weight[0] // C), 1, K))


SMOKE_CASES = tuple(smoke_case(c) for c in CASES)


def make_inputs(case: Case, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    """Seeded standard-normal inputs drawn in float64 on CPU, then cast (same values on every
    device). Keys: x, weight, bias (or None), state (or None), mask (or None)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    with torch.inference_mode(False):   # the weight as a model holds it (fused: tap-major, cached)
        weight = rnd(*case.weight)
    inp = {"weight": weight, "bias": rnd(case.weight[0]) if case.bias else None, "state": None, "mask": None}
    K = case.weight[-1]
    if case.layout == "channels_inner":
        B, C, L = case.x
        inp["x"] = rnd(B, L, C).transpose(1, 2)                  # (B, C, L) view, C unit-stride
    else:
        inp["x"] = rnd(*case.x)
    if case.layout == "channels_last":
        inp["x"] = inp["x"].contiguous(memory_format=torch.channels_last)
    if case.op == "decode":
        inp["state"] = rnd(case.x[0], case.x[1], K - 1)          # (B, C, K-1)
    if case.op == "short_conv":
        B, L, C3 = case.x
        if case.state:
            inp["state"] = rnd(B, C3 // 3, K - 1)                # (B, C, K-1)
        if case.mask:
            inp["mask"] = torch.ones(B, L, dtype=torch.long, device=device)
            inp["mask"][1, : L // 3] = 0                         # row 1: left padding
    return inp


def _ref_conv(x64, w64, b64, case: Case):
    groups = x64.shape[1]
    conv = F.conv1d if case.op == "conv1d" else F.conv2d
    pad = case.padding
    if pad == "causal":                                          # left pad dilation*(K-1)
        x64, pad = F.pad(x64, (case.dilation * (case.weight[-1] - 1), 0)), 0
    return conv(x64, w64, b64, case.stride, pad, case.dilation, groups)


def reference(case: Case, inp: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(out, new conv state or None) in float64, written from the definitions."""
    d = lambda t: None if t is None else t.double()
    x, w, b, state = d(inp["x"]), d(inp["weight"]), d(inp["bias"]), d(inp["state"])
    C, K = w.shape[0], w.shape[-1]
    if case.op in ("conv1d", "conv2d"):
        return _ref_conv(x, w, b, case), None
    if case.op == "decode":
        window = torch.cat([state, x[:, :, None]], dim=-1)      # (B, C, K)
        out = F.conv1d(window, w, b, groups=C)[:, :, 0]          # (B, C)
        return (F.silu(out) if case.activation == "silu" else out), window[:, :, 1:]
    bb, c, xx = x.chunk(3, dim=-1)                               # short conv: each (B, L, C)
    bx = bb * xx
    if inp["mask"] is not None:
        bx = bx * (inp["mask"][:, :, None] != 0)
    bx = bx.transpose(1, 2)                                      # (B, C, L)
    if state is None:
        state = bx.new_zeros(bx.shape[0], C, K - 1)
    ext = torch.cat([state, bx], dim=-1)                         # (B, C, K-1+L)
    y = F.conv1d(ext, w, b, groups=C)                            # (B, C, L)
    return (c * y.transpose(1, 2)), (ext[:, :, ext.shape[-1] - (K - 1):] if inp["state"] is not None else None)
