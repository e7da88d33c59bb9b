"""MobileNetV2 I/O: strict checkpoint loading, seeded BN statistics, labels, preprocessing.

Checkpoints are torchvision-layout state_dicts in `.safetensors` or `.pth`/`.pt`; the latter
are read with `torch.load(weights_only=True)` only (tensors and plain containers, never
arbitrary pickled objects). Preprocessing is torchvision's ImageNet eval transform in
Pillow + torch: resize shorter side to 256 (bilinear), centre crop 224, to [0, 1], normalise
(the crop resampled from its source region alone, so the cost is bounded by the source).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# BatchNorm's step counter does not affect inference; older checkpoints lack it.
OPTIONAL_SUFFIX = ".num_batches_tracked"
# nn.DataParallel / DistributedDataParallel name every tensor of the wrapped model "module.<name>",
# and training scripts (pytorch/examples' ImageNet one among them) save that state_dict as is.
DATA_PARALLEL_PREFIX = "module."
# Where training checkpoints keep the weights beside the epoch and optimizer: pytorch/examples
# and timm "state_dict", PyTorch's save/load tutorial "model_state_dict", torchvision's
# reference scripts "model".
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


# ---- checkpoints -----------------------------------------------------------------------------
def check_weights_file(path: str | Path) -> Path:
    """ValueError unless `path` is a file with a weights suffix: what can be said without
    reading it (the CLI checks this before binding its port)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"MobileNetV2 weights: expected a .safetensors or .pth file, "
                         f"{str(path)!r} is not a file")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        raise ValueError(f"MobileNetV2 weights: expected a file ending in "
                         f"{SAFETENSORS_SUFFIXES + TORCH_SUFFIXES}, got {path.name!r}")
    return path


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors or .pth file, on CPU, by name (no pickle code execution);
    a DataParallel `module.` prefix on every name is dropped."""
    state = _read_state_dict(check_weights_file(path))
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    return state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError for non-tensor pickles, etc.
        raise _refused(path, exc) from None
    if isinstance(obj, dict) and not _is_state_dict(obj):   # a training checkpoint wrapping the weights
        inner = next((obj[k] for k in WRAPPER_KEYS if _is_state_dict(obj.get(k))), None)
        if inner is None:
            keys = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
            raise ValueError(f"{path}: a dict with keys {keys}, not all tensors, and no state_dict "
                             f"under {', '.join(map(repr, WRAPPER_KEYS))}; save model.state_dict()")
        obj = inner
    if not _is_state_dict(obj):
        raise ValueError(f"{path}: expected a state_dict (a dict of name -> tensor), got "
                         f"{type(obj).__name__}; save model.state_dict()")
    return dict(obj)


def _refused(path: Path, exc: Exception) -> ValueError:
    """torch.load(weights_only=True)'s refusal, said briefly. torch's own message opens with a
    paragraph on re-running with weights_only=False and names what the file wants run (the
    pickled global) only at its end, so a cut of its start hid the cause and ended on that advice."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    wanted = re.search(r"GLOBAL ([\w.]+)", text)
    if wanted:
        return ValueError(f"{path}: torch.load(weights_only=True) refused it: unpickling it would call "
                          f"{wanted[1]} (a pickled object or code, not only tensors), which is never run "
                          "here. Re-save only the weights, from code you trust: "
                          "torch.save(model.state_dict(), path)")
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
    reason = detail[1] if detail else text.strip().splitlines()[0] if text.strip() else ""
    return ValueError(f"{path}: torch.load(weights_only=True) refused it ({type(exc).__name__}: "
                      f"{reason[:200]}); save a plain state_dict: torch.save(model.state_dict(), path)")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                         for k, v in obj.items())


def num_classes_of(state: dict[str, torch.Tensor], source: str | Path = "state_dict") -> int:
    """The classifier's output size, from `classifier.1.weight` (num_classes, last_channel)."""
    w = state.get("classifier.1.weight")
    if w is None or w.dim() != 2:
        raise ValueError(f"{source}: expected tensor 'classifier.1.weight' of shape "
                         f"(num_classes, 1280) in a torchvision MobileNetV2 state_dict, got "
                         f"{'none' if w is None else tuple(w.shape)}")
    return int(w.shape[0])


# torchvision's and the papers' MobileNetV2 widths (timm adds 1.1, 1.2); 1.0, the usual, first.
WIDTH_MULTS = (1.0, 0.35, 0.5, 0.75, 1.1, 1.2, 1.3, 1.4)


def width_mult_of(state: dict[str, torch.Tensor], shapes_at) -> float:
    """The width multiplier whose model (`shapes_at(width_mult)`: name -> shape) has every
    tensor of `state` at its stored shape. If none has them all, of those whose stem conv fits
    the one that most tensors fit (check_state_dict then names a tensor that does not: with
    the first stem fit, 0.35 for a 0.5 checkpoint, which share a stem, it named a good one);
    ValueError if no stem fits."""
    stem = "features.0.0.weight"
    shapes = {w: shapes_at(w) for w in WIDTH_MULTS}
    fits = {w: sum(want.get(name) in (None, tuple(t.shape)) for name, t in state.items())
            for w, want in shapes.items()}
    for width_mult in shapes:
        if fits[width_mult] == len(state):
            return width_mult
    stem_fits = [w for w, want in shapes.items() if stem in state and want[stem] == tuple(state[stem].shape)]
    if stem_fits:
        return max(stem_fits, key=lambda w: fits[w])     # the first of equals: WIDTH_MULTS' order
    raise ValueError(f"no MobileNetV2 width_mult in {sorted(WIDTH_MULTS)} has this state_dict's stem conv "
                     f"'{stem}' ({tuple(state[stem].shape) if stem in state else 'missing'}); is it a "
                     "torchvision mobilenet_v2 state_dict? Or pass width_mult= to MobileNetV2.from_file")


def check_state_dict(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                     source: str = "state_dict") -> None:
    """Every expected tensor present with its exact shape, nothing unexpected, all floating
    (num_batches_tracked may be absent). Raises ValueError naming the first bad tensor."""
    for name, want in expected.items():
        got = state.get(name)
        if got is None:
            if name.endswith(OPTIONAL_SUFFIX):
                continue
            raise ValueError(f"{source}: missing tensor {name!r} (expected shape {tuple(want.shape)}); "
                             "is this a torchvision mobilenet_v2 state_dict with the same width_mult?")
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{source}: tensor {name!r} has shape "
                             f"{tuple(getattr(got, 'shape', ()))}, expected {tuple(want.shape)}")
        if want.is_floating_point() and not got.is_floating_point():
            raise ValueError(f"{source}: tensor {name!r} has dtype {got.dtype}, expected a float dtype")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected in "
                         "all); expected exactly the keys of torchvision's mobilenet_v2 state_dict")


@torch.no_grad()
def randomize_bn(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm parameters and statistics (gamma in [0.5, 1.5], beta, mean ~
    N(0, 0.1), var in [0.5, 2]) so that folding them is a real test, with gamma/sqrt(var) near 1
    so activations stay O(1) through the 52 conv layers."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)


def read_labels(path: str | Path | None, num_classes: int) -> list[str]:
    """Class names from a text file, one per line (blank lines kept as-is except a trailing
    newline); `class_<i>` when path is None. The count must equal num_classes."""
    if path is None:
        return [f"class_{i}" for i in range(num_classes)]
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels: expected a text file with one class name per line, "
                         f"{str(path)!r} is not a file")
    try:   # utf-8-sig: Windows editors (Notepad) start UTF-8 files with a BOM, else class 0's name had it
        labels = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:   # its own message names neither the file nor what to do
        raise ValueError(f"labels: {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save it as UTF-8, one class name per line") from None
    while labels and not labels[-1].strip():
        labels.pop()
    if len(labels) != num_classes:
        raise ValueError(f"labels: {path} has {len(labels)} lines, expected one per class "
                         f"({num_classes})")
    return [s.strip() for s in labels]


# ---- preprocessing ---------------------------------------------------------------------------
# Integer modes with samples wider than 8 bits: 16-bit grayscale PNG and TIFF open as I;16
# (I in older Pillow; I is also 32-bit TIFF, read here as 16-bit, the usual content).
# convert("RGB") clips their values to 0..255, so a 16-bit picture reached the model white.
WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image):
    """PIL image of any mode -> 8-bit RGB, with 16-bit samples scaled (v * 255 / 65535, rounded)
    rather than clipped. Mode F (32-bit float) has no fixed range to scale from: ValueError."""
    from PIL import Image
    if image.mode in WIDE_INT_MODES:
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)       # (H, W); I;16B is big-endian
        eight = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight).convert("RGB")
    if image.mode == "F":
        raise ValueError("expected 8- or 16-bit integer pixels; 32-bit float pixels (mode F) have no "
                         "fixed range to map to colours: save the image as 8- or 16-bit")
    return image.convert("RGB")


def preprocess(image, *, resize: int = RESIZE, crop: int = CROP) -> torch.Tensor:
    """PIL image -> (3, crop, crop) float32, ImageNet-normalised (torchvision's eval transform:
    Resize(256) on the shorter side, bilinear; CenterCrop(224); ToTensor; Normalize).

    The resize and the crop are one step: only the crop's window is resampled, from the
    source region it covers (Pillow's `resize(box=...)`, the same bilinear filter, scale and
    sample centres as resizing the whole image; its support reaches past the box into the
    image as the full resize's does). Resizing the whole image first would cost the resized
    image's size, which the source's size does not bound: a 100000x1 sliver becomes
    25.6M x 256 (18 GiB of RGB) before the crop. Here the work is the crop's pixels times the
    filter support, at most the source's pixels. Pixels equal the resize-then-crop ones to
    1/255 (the rounding of Pillow's 8-bit output; tests/test_mobilenet_preprocess.py)."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        raise ValueError(f"preprocess expects a PIL.Image.Image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"preprocess expects a non-empty image, got {image.width}x{image.height}")
    img = to_rgb(image)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(resize * long / short)                   # torchvision truncates, as here
    rw, rh = (resize, new_long) if w <= h else (new_long, resize)      # the resized size
    left, top = int(round((rw - crop) / 2.0)), int(round((rh - crop) / 2.0))   # crop, resized coords
    sx, sy = w / rw, h / rh                                  # source pixels per resized pixel
    box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)   # the crop, source coords
    img = img.resize((crop, crop), Image.BILINEAR, box=box)
    # numpy, not torch: this runs on the server's request threads, and a torch op this size
    # would start an OpenMP team there (see service/compute.py for why that costs).
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)  # (3, crop, crop) in [0, 1]
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(np.ascontiguousarray((x - mean) / std))
