"""Host allocator tuning for CPU inference, shared by the server and the benchmarks.

A forward frees and re-allocates the same activation sizes every call. glibc serves
allocations above its (dynamic) mmap threshold with fresh mmap'd pages and returns them on
free, so each forward page-faults its big activations in again (one fault per 4 KiB, each
zeroing a page). Which side of the threshold a size lands on changes as the process runs,
so ms-scale timings of the *same* code flip between modes up to ~2x apart. Keeping freed
memory in the heap is what jemalloc/tcmalloc give CPU servers; this gets it from glibc.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 32 << 20                 # glibc's upper bound for the threshold
TRIM_THRESHOLD_BYTES = 1 << 30                  # never give heap tops back below 1 GiB


def keep_freed_memory() -> bool:
    """Serve allocations up to 32 MiB from glibc's heap and never trim it, so the tensor a
    call frees is reused by the next call. Returns whether it took effect (glibc only);
    elsewhere (musl, macOS) it does nothing and returns False."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
