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


@triton.jit
def _elem(e: tl.constexpr, e0, e1, e2, e3):
    """Element e (0 .. 3) of a split vector."""
    if e == 0:
        return e0
    elif e == 1:
        return e1
    elif e == 2:
        return e2
    else:
        return e3


@triton.jit
def _tap4(VI: tl.constexpr, S: tl.constexpr, SW: tl.constexpr, w, e0, e1, e2, e3, o0, o1, o2, o3):
    """A strip's 4 accumulators plus one tap (weight w, [BLOCK_C, 1]) of one loaded vector: output k
    reads column k * SW + S (S = tap - left padding, relative to the strip's first input column),
    element (k * SW + S) % 4 of vector (k * SW + S) // 4; only the outputs reading vector VI add."""
    if (0 * SW + S) // 4 == VI:
        o0 += w * _elem((0 * SW + S) % 4, e0, e1, e2, e3)
    if (1 * SW + S) // 4 == VI:
        o1 += w * _elem((1 * SW + S) % 4, e0, e1, e2, e3)
    if (2 * SW + S) // 4 == VI:
        o2 += w * _elem((2 * SW + S) % 4, e0, e1, e2, e3)
    if (3 * SW + S) // 4 == VI:
        o3 += w * _elem((3 * SW + S) % 4, e0, e1, e2, e3)
    return o0, o1, o2, o3


@triton.jit
def row_taps(row_ptr, a, ok, n, w_row, sw_q, mask_o, o0, o1, o2, o3,
             K: tl.constexpr, SW: tl.constexpr, PAD: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """One input row's K taps added to a strip's 4 outputs (o0..o3, [BLOCK_C, BLOCK_G]).

    row_ptr: [BLOCK_C, BLOCK_G] pointers to the row's element 0; a: [BLOCK_G] the strip's first
    input column (its first output x SW, a multiple of 4); ok: [BLOCK_C, BLOCK_G] the row exists
    for that channel and strip; n: the row's length (a multiple of 4, so each vector is wholly
    inside it or wholly outside: one mask per vector); w_row + q * sw_q: tap q's weights
    ([BLOCK_C]). Output k reads columns a + k * SW - PAD + q: the aligned 4-element vectors
    covering them are loaded once each (zeros outside the row) and the taps picked in registers.
    """
    lane = tl.arange(0, 4)
    for vi in tl.static_range(-((PAD + 3) // 4), (3 * SW + K - 1 - PAD) // 4 + 1):
        pos = a + 4 * vi                               # [BLOCK_G] the vector's first column
        okv = ok & ((pos >= 0) & (pos < n))[None, :]
        vec = tl.load((row_ptr + pos[None, :])[:, :, None] + lane[None, None, :], mask=okv[:, :, None], other=0.0)
        e0, e1, e2, e3 = split4(vec.to(ACC_DTYPE))
        for q in tl.static_range(K):
            # (a tap no output reads from this vector adds nothing: its weight load is dead code)
            wq = tl.load(w_row + q * sw_q, mask=mask_o, other=0.0).to(ACC_DTYPE)[:, None]
            o0, o1, o2, o3 = _tap4(vi, q - PAD, SW, wq, e0, e1, e2, e3, o0, o1, o2, o3)
    return o0, o1, o2, o3
