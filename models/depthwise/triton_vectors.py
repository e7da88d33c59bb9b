"""Triton helpers the strip kernels share: V-element vectors (V = 4 or 8) split into columns in
registers and strides stated to the compiler as multiples of V (what lets a strip's loads be
aligned vectors).

A strip kernel loads [BLOCK_C, BLOCK_G, V] tiles whose last dim is one thread's V neighbouring
elements: V = 4 in float32 (16 bytes), V = 8 in bfloat16 / float16 (16 bytes; 4 would be 8).
`split4` / `split8` give their columns, `join4` / `join8` make columns one such tile for a vector
store. No shuffles: the reshape and split stay within a thread's registers (no shared memory in
the compiled kernels: benchmarks/results/ptx-sm90-triton3.6.0.md).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .triton_launch import env_switch

# 8-wide strips (16-byte vectors) for 2-byte dtypes where a launch's rows split into them (the
# launchers' `strip_width`): where 4-wide strips load 8 bytes a thread, half the load instructions
# for the same bytes. An untimed lead, on so the next GPU run times it; DWSERVE_WIDE_HALF_STRIPS=0
# at import (or WIDE_HALF = False: read per launch, plans keyed on it) keeps 4-wide strips.
WIDE_HALF = env_switch("DWSERVE_WIDE_HALF_STRIPS")


@triton.jit
def mult(s, V: tl.constexpr):
    """s, known to the compiler as a multiple of V (the caller's launcher checked it is one)."""
    return (s // V) * V


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
def split8(v):
    """[BLOCK_C, BLOCK_G, 8] -> its 8 columns (the inverse of join8)."""
    even, odd = tl.split(tl.reshape(v, [v.shape[0], v.shape[1], 2, 2, 2]))   # element 4i + 2j + k: k = 0, 1
    e04, e26 = tl.split(even)
    e15, e37 = tl.split(odd)
    e0, e4 = tl.split(e04)
    e2, e6 = tl.split(e26)
    e1, e5 = tl.split(e15)
    e3, e7 = tl.split(e37)
    return e0, e1, e2, e3, e4, e5, e6, e7


@triton.jit
def join8(c0, c1, c2, c3, c4, c5, c6, c7):
    """8 columns [BLOCK_C, BLOCK_G] -> [BLOCK_C, BLOCK_G, 8], column k at element k."""
    even = tl.join(tl.join(c0, c4), tl.join(c2, c6))
    odd = tl.join(tl.join(c1, c5), tl.join(c3, c7))
    return tl.reshape(tl.join(even, odd), [c0.shape[0], c0.shape[1], 8])


@triton.jit
def join_strip(o0, o1, o2, o3, o4, o5, o6, o7, V: tl.constexpr):
    """A strip's V accumulators (row_taps') as one [BLOCK_C, BLOCK_G, V] tile, output k at element k."""
    if V == 4:
        return join4(o0, o1, o2, o3)
    else:
        return join8(o0, o1, o2, o3, o4, o5, o6, o7)


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
def row_taps(row_ptr, a, ok, n, w_row, sw_q, mask_o, o0, o1, o2, o3, o4, o5, o6, o7,
             K: tl.constexpr, SW: tl.constexpr, PAD: tl.constexpr, ACC_DTYPE: tl.constexpr, V: tl.constexpr):
    """One input row's K taps added to a strip's V outputs (o0..o7, [BLOCK_C, BLOCK_G]; at V = 4
    o4..o7 are returned as given).

    row_ptr: [BLOCK_C, BLOCK_G] pointers to the row's element 0; a: [BLOCK_G] the strip's first
    input column (its first output x SW, a multiple of V); ok: [BLOCK_C, BLOCK_G] the row exists
    for that channel and strip; n: the row's length (a multiple of V, so each vector is wholly
    inside it or wholly outside: one mask per vector); w_row + q * sw_q: tap q's weights
    ([BLOCK_C]). Output k reads columns a + k * SW - PAD + q: the aligned V-element vectors
    covering them are loaded once each (zeros outside the row) and the taps picked in registers.
    At V = 8 a vector is two 4-element halves (4-vectors 2 vi and 2 vi + 1) and the strip two
    4-output groups (outputs 4..7 read 4 * SW columns past outputs 0..3), so _tap4 serves both.
    """
    lane = tl.arange(0, V)
    for vi in tl.static_range(-((PAD + V - 1) // V), ((V - 1) * SW + K - 1 - PAD) // V + 1):
        pos = a + V * vi                               # [BLOCK_G] the vector's first column
        okv = ok & ((pos >= 0) & (pos < n))[None, :]
        vec = tl.load((row_ptr + pos[None, :])[:, :, None] + lane[None, None, :], mask=okv[:, :, None], other=0.0)
        if V == 4:
            e0, e1, e2, e3 = split4(vec.to(ACC_DTYPE))
        else:
            e0, e1, e2, e3, e4, e5, e6, e7 = split8(vec.to(ACC_DTYPE))
        for q in tl.static_range(K):
            # (a tap no output reads from this vector adds nothing: its weight load is dead code)
            wq = tl.load(w_row + q * sw_q, mask=mask_o, other=0.0).to(ACC_DTYPE)[:, None]
            if V == 4:
                o0, o1, o2, o3 = _tap4(vi, q - PAD, SW, wq, e0, e1, e2, e3, o0, o1, o2, o3)
            else:
                o0, o1, o2, o3 = _tap4(2 * vi, q - PAD, SW, wq, e0, e1, e2, e3, o0, o1, o2, o3)
                o0, o1, o2, o3 = _tap4(2 * vi + 1, q - PAD, SW, wq, e4, e5, e6, e7, o0, o1, o2, o3)
                o4, o5, o6, o7 = _tap4(2 * vi, q - PAD + 4 * SW, SW, wq, e0, e1, e2, e3, o4, o5, o6, o7)
                o4, o5, o6, o7 = _tap4(2 * vi + 1, q - PAD + 4 * SW, SW, wq, e4, e5, e6, e7, o4, o5, o6, o7)
    return o0, o1, o2, o3, o4, o5, o6, o7
