"""Where and in what dtype a model is built: device and dtype arguments checked before any I/O.

One place for the service (models.registry, --device / --dtype) and from_pretrained, so a bad
value is a ValueError naming the choices, not an assertion deep inside torch after a
checkpoint has been read.
"""
from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FLOAT_DTYPES = {**DTYPES, "float64": torch.float64}   # also for references and tests


def parse_device(device, *, default: str = "cpu") -> torch.device:
    """device: None (-> `default`), "auto" (CUDA if present), "cpu", "cuda[:N]" or a torch.device."""
    if device is None:
        device = default
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda[:N]' or 'auto', got {str(device)!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available here; use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"expected cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def parse_dtype(dtype, choices: dict[str, torch.dtype] = DTYPES) -> torch.dtype:
    """dtype: None (-> float32), a name in `choices` or one of their torch.dtypes."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype in choices:
        return choices[dtype]
    if isinstance(dtype, torch.dtype) and dtype in choices.values():
        return dtype
    raise ValueError(f"dtype must be one of {sorted(choices)}, got {dtype!r}")
