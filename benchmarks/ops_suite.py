"""The operator benchmark's suite (benchmarks/ops.py): the impls, the dtypes, the named shapes
(`SUITE`, `SEED`, `QUICK_NAMES`) and a shape as every record holds it (`shape_dict`).
Also the shapes benchmarks/gpu.py times on the device (gpu_config.py orders them)."""
from __future__ import annotations

import dataclasses

import torch

IMPLS = ("per_group", "slice_sum", "compiled", "fused", "native", "auto")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark case. x is (B, C, L) / (B, C, H, W); for op "decode" (B, C) new columns
    with a (B, C, K-1) conv state. k is K (1d) or (KH, KW) (2d); weight is (C, 1, *k)."""
    name: str
    op: str                      # "conv1d" | "conv2d" | "decode"
    x: tuple[int, ...]
    k: int | tuple[int, int]
    stride: int = 1
    padding: int | str = 0
    sweep: bool = False          # part of the channel sweep plotted against C
    channels_last: bool = False  # conv2d x in torch.channels_last memory (NHWC), as served

    @property
    def channels(self) -> int:
        return self.x[1]

    @property
    def weight(self) -> tuple[int, ...]:
        return (self.channels, 1, *((self.k,) if isinstance(self.k, int) else self.k))


def _mobilenet(batch: int, channels_last: bool = False) -> list[Shape]:
    """MobileNetV2's depthwise 3x3 layers (padding 1) at their real input sizes; `-cl` names
    the channels_last (NHWC) layout the served model runs in."""
    layers = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1),
              (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]
    return [Shape(f"mbv2-b{batch}-c{c}@{hw}" + (f"-s{s}" if s > 1 else "") + ("-cl" if channels_last else ""),
                  "conv2d", (batch, c, hw, hw), (3, 3), stride=s, padding=1, channels_last=channels_last)
            for c, hw, s in layers]


SEED = Shape("seed-c2048", "conv1d", (1, 2048, 21), 3, sweep=True)   # the report's microbench
SUITE: tuple[Shape, ...] = (
    SEED,
    *(Shape(f"sweep-c{c}", "conv1d", (1, c, 21), 3, sweep=True)
      for c in (64, 128, 256, 512, 1024, 4096)),              # C=2048 is the seed shape
    Shape("lfm2-350m-prefill-1x128", "conv1d", (1, 1024, 128), 3, padding="causal"),
    Shape("lfm2-350m-prefill-8x512", "conv1d", (8, 1024, 512), 3, padding="causal"),
    Shape("lfm2-2.6b-short-1x19", "conv1d", (1, 2048, 19), 3, padding="causal"),
    Shape("lfm3-1.7b-prefill-1x128", "conv1d", (1, 2048, 128), 7, padding="causal"),   # LFM3: K=7
    Shape("lfm3-1.7b-prefill-8x512", "conv1d", (8, 2048, 512), 7, padding="causal"),
    Shape("decode-16x2048", "decode", (16, 2048), 3),
    Shape("decode-16x2048-k7", "decode", (16, 2048), 7),
    Shape("shortconv-long-1x4096x4096", "conv1d", (1, 4096, 4096), 4, padding="causal"),
    Shape("conformer-k31-8x256x512", "conv1d", (8, 256, 512), 31, padding="same"),
    *_mobilenet(1), *_mobilenet(32),
    *_mobilenet(1, channels_last=True), *_mobilenet(8, channels_last=True), *_mobilenet(32, channels_last=True),
    Shape("convnext-7x7-1x96@56", "conv2d", (1, 96, 56, 56), (7, 7), padding=3),
)
QUICK_NAMES = ("seed-c2048", "sweep-c64", "decode-16x2048", "mbv2-b1-c192@28")


def shape_dict(shape: Shape) -> dict:
    """A shape as its records hold it (`shape` in every record)."""
    return {"name": shape.name, "op": shape.op, "x": list(shape.x), "weight": list(shape.weight),
            "stride": shape.stride, "padding": shape.padding, "dilation": 1, "channels": shape.channels,
            "k": shape.k if isinstance(shape.k, int) else list(shape.k), "sweep": shape.sweep,
            "channels_last": shape.channels_last}
