"""Triton's classification extension, for REST and gRPC alike.

An output requested with `parameters.classification = k` (tritonclient's
`InferRequestedOutput(name, class_count=k)`) comes back not as the model's tensor but as
BYTES of shape [batch, k]: per row the k highest values, highest first, each the string
"<value>:<index>" or, when the model has a (non-empty) label for that class, "<value>:<index>:<label>"
(value printed as C++'s std::to_string prints a float, six decimals). A k above the number of
classes returns them all, as Triton does. Pure numpy: no FastAPI, no torch.
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple, Optional

import numpy as np


class OutputRequest(NamedTuple):
    """One requested output: its name, binary on the wire (REST), and k when classified."""
    name: str
    binary: bool = False
    classes: Optional[int] = None


def class_count(name: str, params: dict[str, Any]) -> Optional[int]:
    """The `classification` parameter of output `name`, checked: None or an int >= 1."""
    k = params.get("classification")
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"output {name!r}: parameters.classification must be an integer >= 1 "
                         f"(how many top classes to return), got {k!r}")
    return k


def top_classes(scores: np.ndarray, k: int, labels: Optional[list[str]] = None) -> np.ndarray:
    """scores (B, N) -> (B, min(k, N)) object array of bytes "<value>:<index>[:<label>]",
    highest first; equal values in index order."""
    if scores.ndim != 2:
        raise ValueError(f"classification needs a (batch, classes) output, got shape {list(scores.shape)}")
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]                 # (B, k)
    out = np.empty(order.shape, dtype=object)
    for b, row in enumerate(order):
        for j, i in enumerate(row):
            text = f"{float(scores[b, i]):f}:{int(i)}"
            # Triton adds ":<label>" only for a non-empty label (a blank line of the labels file)
            out[b, j] = (f"{text}:{labels[i]}" if labels is not None and labels[i] else text).encode()
    return out


def serialize_bytes(arr: np.ndarray) -> bytes:
    """A BYTES tensor on the wire (binary extension, gRPC raw contents): each element as a
    4-byte little-endian length and its bytes, row-major."""
    return b"".join(struct.pack("<I", len(x)) + x for x in arr.reshape(-1))
