"""The `auto` policy: pick a concrete depthwise impl from device, dtype and shape.

`choose(op, device, dtype, x_shape, weight_shape, stride, dilation) -> str` is called by
`dispatch.resolve_impl` (which caches the answer per (op, device type, dtype, shape)), so it
may take a few microseconds but must be deterministic and must only return an impl that runs
on `device`: on CPU one of slice_sum / compiled / native (never fused, never per_group).

PLACEHOLDER rule (replaced by the measured rule once benchmarks/results/ops-cpu.json exists):
native on CPU; on CUDA fused if triton imports, else native.
"""
from __future__ import annotations

import functools

import torch

OPS = ("conv1d", "conv2d", "decode")
CPU_CHOICES = ("slice_sum", "compiled", "native")


@functools.lru_cache(maxsize=1)
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install raising on import
        return False
    return True


def choose(op, device, dtype, x_shape, weight_shape, stride, dilation) -> str:
    """Return the concrete impl name `auto` resolves to for this call."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    dev_type = torch.device(device).type
    if dev_type == "cuda":
        return "fused" if _triton_available() else "native"
    return "native"
