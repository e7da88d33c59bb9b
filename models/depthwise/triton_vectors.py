"""Triton helpers the strip kernels share: 4-element vectors split into columns in registers and
strides stated to the compiler as multiples of 4 (what lets a strip's loads be aligned vectors).

A strip kernel loads [BLOCK_C, BLOCK_G, 4] tiles whose last dim is one thread's 4 neighbouring
elements (16 bytes in float32); `split4` gives their columns, `join4` makes 4 columns one such
tile for a vector store. No shuffles: the reshape and split stay within a thread's registers (no
shared memory in the compiled kernels: benchmarks/results/ptx-sm90-triton3.6.0.md).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def mult4(s):
    """s, known to the compiler as a multiple of 4 (the caller's launcher checked it is one)."""
    return (s // 4) * 4


@triton.jit
def split4(v):
    """[BLOCK_C, BLOCK_G, 4] -> its 4 columns, each [BLOCK_C, BLOCK_G]."""
    e02, e13 = tl.split(tl.reshape(v, [v.shape[0], v.shape[1], 2, 2]))    # elements (0, 2) and (1, 3)
    e0, e2 = tl.split(e02)
    e1, e3 = tl.split(e13)
    return e0, e1, e2, e3


@triton.jit
def join4(c0, c1, c2, c3):
    """4 columns [BLOCK_C, BLOCK_G] -> [BLOCK_C, BLOCK_G, 4], column k at element k."""
    return tl.reshape(tl.join(tl.join(c0, c2), tl.join(c1, c3)), [c0.shape[0], c0.shape[1], 4])
