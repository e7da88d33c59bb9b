"""MobileNetV2 with torchvision's module layout and state_dict keys, depthwise convs swappable.

    model = mobilenet_v2(seed=0)                           # seeded weights, random BN stats
    model = MobileNetV2.from_file("mobilenet_v2.safetensors")   # or a .pth state_dict
    model.fold_bn()                                        # inference: BN folded into convs
    logits = model(preprocess(pil_image)[None])            # (1, 1000)

Layout (torchvision.models.mobilenet_v2, so its checkpoints load unchanged):
  features.0            Conv2dNormActivation(3, 32, stride 2): [0] conv, [1] BN, [2] ReLU6
  features.1            InvertedResidual(32 -> 16, t=1): conv.0.{0,1} dw 3x3, conv.1 pw, conv.2 BN
  features.2..17        InvertedResidual(t=6): conv.0.{0,1} pw expand, conv.1.{0,1} dw 3x3,
                        conv.2 pw project, conv.3 BN
  features.18           Conv2dNormActivation(320, 1280, k=1)
  classifier            [0] Dropout(0.2), [1] Linear(1280, num_classes)
Every module is first built as a plain nn.Conv2d and the 17 depthwise 3x3 ones are then
swapped by `models.depthwise.convert_depthwise` into DepthwiseConv2d (same parameters and
keys), so `use_impl(...)` picks their implementation per call.

Checkpoint loading, seeded init, labels and ImageNet preprocessing live in mobilenet_io.py.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import current_impl
from .row_chunks import CPU_ROW_CHUNK_BYTES, chunk_plan, conv_stage_row_bytes, run_chunked
from .mobilenet_io import preprocess  # noqa: F401 (re-exported)

# (expand ratio t, output channels c, repeats n, first stride s), torchvision's table.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `v` to a multiple of `divisor`, never more than 10% below v (torchvision's rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    """torchvision's Conv2dNormActivation: [0] conv (no bias), [1] BatchNorm2d, [2] ReLU6.
    'same'-style padding (k-1)//2, so stride 2 halves the size."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = cout


class InvertedResidual(nn.Module):
    """1x1 expand (t > 1) -> 3x3 depthwise (stride s) -> 1x1 project (linear), + x when the
    shape is kept (stride 1 and cin == cout)."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(cin * expand_ratio))
        self.stride = stride
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel_size=1))
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),   # depthwise 3x3
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_res_connect else y


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        # bool is an int to Python but not a class count; a non-number failed deep in nn.Linear / '>'.
        if isinstance(num_classes, bool) or not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if (isinstance(width_mult, bool) or not isinstance(width_mult, (int, float))
                or not 0 < width_mult < float("inf")):
            raise ValueError(f"width_mult must be a finite number > 0 (e.g. 1.0, 0.5), got {width_mult!r}")
        self.num_classes, self.width_mult = num_classes, width_mult
        cin = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, cin, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNReLU(cin, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self.bn_folded = False
        # CPU eval forwards run the feature stages in cache-sized row chunks (row_chunks.py);
        # None runs every stage over the whole batch.
        self.row_chunk_bytes: int | None = CPU_ROW_CHUNK_BYTES
        self._chunk_plans: dict[tuple, list[tuple[int, int, int]]] = {}
        self.labels = [f"class_{i}" for i in range(num_classes)]
        self.reset_parameters()
        from .depthwise import convert_depthwise
        self.num_depthwise = convert_depthwise(self)   # 17 at any width

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torchvision's init: convs kaiming-normal (fan_out), BN (1, 0), linear N(0, 0.01)."""
        for m in self.modules():
            w = getattr(m, "weight", None)
            if isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()
            elif isinstance(m, nn.Linear):
                w.copy_(torch.randn(w.shape, generator=generator) * 0.01)
                m.bias.zero_()
            elif isinstance(w, torch.Tensor) and w.dim() == 4:           # conv or DepthwiseConv2d
                fan_out = w.shape[0] * w[0, 0].numel()   # cout * kh * kw (groups ignored, as torch)
                w.copy_(torch.randn(w.shape, generator=generator) * (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) any memory format, H, W >= 32 -> logits (B, num_classes)."""
        self._check_input(x)
        x = self._features(x)                                  # (B, 1280, H/32, W/32)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)             # (B, 1280)
        return self.classifier(x)

    def _check_input(self, x) -> None:
        """x must be a (B, 3, H, W) batch in the model's dtype (autocast aside) and device: an
        unbatched (3, H, W) image was an IndexError in the row chunking (nn.Conv2d would take it
        unbatched and the head then mix its rows), a wrong dtype or channel count a RuntimeError
        from deep inside the first conv."""
        w = self.features[0][0].weight
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != w.shape[1]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a batched (B, {w.shape[1]}, H, W) image tensor, got {got} "
                             "(add a batch dim with x.unsqueeze(0) for one image)")
        if x.device != w.device or (x.dtype != w.dtype and not _autocast_matches(x, w)):
            raise ValueError(f"x must have the model's dtype and device ({w.dtype} on {w.device}), got "
                             f"{x.dtype} on {x.device}; convert with x.to(model's device, dtype)")

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """self.features(x); batched CPU inference goes in cache-sized row chunks (why and the
        numbers: row_chunks.py). Training keeps whole batches: BatchNorm needs batch stats.
        So does the per_group baseline: its cost is ~2C launches per call, which chunks would
        multiply, and a before/after comparison should not handicap the before."""
        if (self.training or self.row_chunk_bytes is None or x.shape[0] <= 1   # 0 rows: nothing to chunk
                or x.device.type != "cpu" or current_impl() == "per_group"):
            return self.features(x)
        key = (x.shape[0], x.shape[2], x.shape[3], x.element_size(), self.row_chunk_bytes)
        plan = self._chunk_plans.get(key)
        if plan is None:                      # ~0.3 ms to work out, so once per batch shape
            row_bytes = conv_stage_row_bytes(self.features, x.shape[2], x.shape[3], x.element_size())
            plan = self._chunk_plans[key] = chunk_plan(row_bytes, x.shape[0], self.row_chunk_bytes)
        return run_chunked(self.features, x, plan)

    # ---- inference transforms ---------------------------------------------------------------
    @torch.no_grad()
    def fold_bn(self) -> "MobileNetV2":
        """Fold every BatchNorm2d into the conv before it and replace the BN by Identity.

        conv(x) * g + b' with g = gamma / sqrt(var + eps), b' = beta + (bias - mean) * g, so
        the conv's weight is scaled per output channel and it gains a bias. Uses the running
        statistics, so it is an eval-mode transform: the model is put in eval() and stays
        equal to the unfolded eval model (to float tolerance). Idempotent."""
        self.eval()
        for seq in self.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            names = list(seq._modules)
            for prev, cur in zip(names, names[1:]):
                bn, conv = seq._modules[cur], seq._modules[prev]
                if isinstance(bn, nn.BatchNorm2d):
                    fold_bn_into_conv(conv, bn)
                    seq._modules[cur] = nn.Identity()
        self.bn_folded = True
        return self

    def to_channels_last(self) -> "MobileNetV2":
        """Store conv weights channels_last (NHWC); feed inputs as x.to(memory_format=...)."""
        return self.to(memory_format=torch.channels_last)

    # ---- construction from a checkpoint (mobilenet_io.py) --------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, *, width_mult: float | None = None, device=None, dtype=None
                  ) -> "MobileNetV2":
        """A torchvision-layout state_dict from .safetensors or .pth (weights_only), strict:
        num_classes is read from classifier.1.weight, width_mult (unless given) found among
        torchvision's published multipliers by the tensors' shapes; every other tensor must
        match by name and shape (the first mismatch raises ValueError naming the tensor)."""
        from .mobilenet_io import load_state_dict_file, num_classes_of, width_mult_of
        state = load_state_dict_file(path)
        num_classes = num_classes_of(state, path)
        if width_mult is None:
            width_mult = width_mult_of(state, lambda w: cls._shapes(num_classes, w))
        model = cls(num_classes=num_classes, width_mult=width_mult)
        model.load_checked(state, source=str(path))
        return model.to(device=device, dtype=dtype).eval()

    @classmethod
    def _shapes(cls, num_classes: int, width_mult: float) -> dict[str, tuple[int, ...]]:
        """The state_dict's shapes at this width, from a model built on the meta device (free)."""
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in cls(num_classes, width_mult).state_dict().items()}

    def load_checked(self, state: dict[str, torch.Tensor], source: str = "state_dict") -> None:
        """Copy `state` into the model after checking names and shapes (see mobilenet_io)."""
        from .mobilenet_io import check_state_dict
        if self.bn_folded:
            raise ValueError("load weights before fold_bn(): the folded model has no BN tensors")
        check_state_dict(self.state_dict(), state, source)
        self.load_state_dict(state, strict=False)   # strictness done above (num_batches_tracked optional)


_AUTOCAST_CASTS = (torch.float32, torch.float16, torch.bfloat16)   # never float64 (nor ints)


def _autocast_matches(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether autocast, on for x's device, casts x and the weight to one dtype: both must be
    dtypes it casts (float64 stays float64, a RuntimeError in the first conv). Asked only when
    dtypes differ: a device autocast does not know (meta: shape inference) is a RuntimeError
    from torch, so no autocast."""
    if x.dtype not in _AUTOCAST_CASTS or w.dtype not in _AUTOCAST_CASTS:
        return False
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:
        return False


def fold_bn_into_conv(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """In place: conv <- BN(conv) in eval mode; the math in float64, stored in conv's dtype."""
    w = conv.weight
    if w.dim() != 4 or w.shape[0] != bn.num_features:
        raise ValueError(f"cannot fold BatchNorm2d({bn.num_features}) into a conv with weight "
                         f"{tuple(w.shape)}; expected (out={bn.num_features}, in/groups, kh, kw)")
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)     # (Cout,)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new_w = (w.double() * scale[:, None, None, None]).to(w.dtype)
    new_b = (bn.bias.double() + (bias - bn.running_mean.double()) * scale).to(w.dtype)
    conv.weight = nn.Parameter(new_w.contiguous(memory_format=_format_of(w)), requires_grad=False)
    conv.bias = nn.Parameter(new_b, requires_grad=False)


def _format_of(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and not t.is_contiguous() and \
        t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, *, seed: int | None = 0,
                 labels: str | Path | None = None) -> MobileNetV2:
    """The embedded default: torchvision's init from `seed`, then BN statistics and affine
    parameters randomised (so fold_bn is tested against non-trivial BN); eval mode.
    seed=None keeps torchvision's plain init (BN = identity). `labels`: optional file, one
    class name per line (else class_<i>), stored as model.labels."""
    from .mobilenet_io import randomize_bn, read_labels
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        model.reset_parameters(g)
        randomize_bn(model, g)
    model.labels = read_labels(labels, num_classes)
    return model.eval()
