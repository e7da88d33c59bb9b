"""The copy ceiling for benchmarks/gpu.py: how fast the device moves bytes at all, a
device-to-device copy (bytes read + bytes written over time). gpu_report.add_bandwidth gives
each ops record its fraction of it, which is what the memory-bound acceptance check reads.
"""
from __future__ import annotations

import statistics
import time

import torch


def copy_ceiling(device: str, nbytes: int, reps: int) -> dict:
    """Median time of dst.copy_(src) for two `nbytes` buffers (CUDA events on CUDA, the
    wall clock on CPU); bandwidth = 2 * nbytes (read + write) / time."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(7)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)                                      # warm-up: pages, clocks
    times = []
    if device == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(reps)]
        torch.cuda.synchronize()
        for start, end in events:
            start.record()
            dst.copy_(src)
            end.record()
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) / 1e3 for s, e in events]
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    ok = bool(torch.equal(dst[:1024], src[:1024]))
    del src, dst
    if device == "cuda":
        torch.cuda.empty_cache()
    med = statistics.median(times)
    return {"bytes_per_buffer": nbytes, "reps": reps, "median_s": med, "min_s": min(times),
            "gbps": round(2 * nbytes / med / 1e9, 2), "gbps_best": round(2 * nbytes / min(times) / 1e9, 2),
            "clock": "cuda_events" if device == "cuda" else "wall", "copy_ok": ok}
