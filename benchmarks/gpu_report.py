"""Bandwidth and acceptance for benchmarks/gpu.py: minimum bytes per ops record (against the
copy ceiling gpu_copy.py measures) and the issue's acceptance checks computed from the results
(benchmarks/gpu_summary.py renders them: the summary .md and the short table printed last).

Minimum bytes of an op call (what any implementation must move at least once):
  conv1d/conv2d   x read + weight read + bias read + output written
  decode          x_new (B, C) + conv_state (B, C, K-1) read and written back + weight + out (B, C)
in the record's dtype. Achieved bandwidth = minimum bytes / median time; its fraction of the
copy ceiling (a device-to-device copy: bytes read + bytes written over time) says how close
a call is to the memory bound. The ops suite passes no bias, so its bias term is 0.
"""
from __future__ import annotations

import json
import math
import time

from benchmarks.ops import shape_dict

ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
SEED_NAME = "seed-c2048"          # benchmarks/ops.py's SEED: (1, 2048, 21) x (2048, 1, 3)
SEED_MIN_SPEEDUP = 1000.0         # per_group / fused at the seed shape
MEMBOUND_MIN_US = 20.0            # memory-bound = taps <= MEMBOUND_MAX_TAPS and minimum bytes
MEMBOUND_MAX_TAPS = 9             # take >= 20 us at the copy ceiling: below that a call is
                                  # launch/latency-bound (a few us of launch is > 20% of it)
FUSED_MIN_COPY_FRACTION = 0.8     # fused on memory-bound shapes: >= 80% of the copy ceiling
AUTO_MAX_RATIO = 1.05             # auto within 5% of the fastest concrete impl


# ---------------------------------------------------------------- bytes and bandwidth

def out_numel(sh: dict) -> int:
    """Output elements of an ops-record shape dict {op, x, weight, stride, padding, dilation}."""
    x, w = sh["x"], sh["weight"]
    if sh["op"] == "decode":
        return x[0] * w[0]                                  # (B, C*m): one new column
    s, p, d = sh["stride"], sh["padding"], sh.get("dilation", 1)
    pads = [p] * (len(x) - 2) if not isinstance(p, (list, tuple)) else list(p)
    out = []
    for n, k, pad in zip(x[2:], w[2:], pads):
        if pad in ("causal", "same"):                       # both keep the length (stride 1)
            out.append(n)
        else:
            pad = 0 if pad == "valid" else int(pad)
            out.append((n + 2 * pad - d * (k - 1) - 1) // s + 1)
    return x[0] * w[0] * math.prod(out)


def min_bytes(rec: dict) -> int:
    """Minimum bytes one call moves (module docstring), in the record's dtype."""
    sh = rec["shape"]
    x, w = math.prod(sh["x"]), math.prod(sh["weight"])
    bias = sh["weight"][0] if rec.get("bias") else 0
    extra = 2 * sh["x"][0] * sh["x"][1] * (sh["weight"][-1] - 1) if sh["op"] == "decode" else 0
    return ITEMSIZE[rec["dtype"]] * (x + w + bias + out_numel(sh) + extra)


def _sig(v: float) -> float:
    return float(f"{v:.4g}")                                         # 4 significant digits


def add_bandwidth(records: list[dict], ceiling_gbps: float | None) -> None:
    """Add min_bytes, achieved_gbps, copy_ceiling_gbps, copy_fraction (wall median) and
    device_copy_fraction (device_us, None where not graph-timed) to every record."""
    for r in records:
        r["min_bytes"] = min_bytes(r)
        t = r.get("median_us")
        gbps = r["min_bytes"] / (t * 1e3) if t else None               # bytes/us/1e3 = GB/s
        r["achieved_gbps"] = None if gbps is None else _sig(gbps)
        r["copy_ceiling_gbps"] = ceiling_gbps
        r["copy_fraction"] = _sig(gbps / ceiling_gbps) if gbps is not None and ceiling_gbps else None
        d = r.get("device_us")                                          # CUDA graph replay, per call
        r["device_copy_fraction"] = _sig(r["min_bytes"] / (d * 1e3) / ceiling_gbps) if d and ceiling_gbps else None


# ---------------------------------------------------------------- acceptance

def check_item(name: str, status: str, detail: str, **data) -> dict:
    return {"name": name, "status": status, "detail": detail, **data}


def _by_shape(records: list[dict]) -> dict:
    by: dict = {}
    for r in records:
        if r.get("median_us") is not None:
            by.setdefault(r["shape"]["name"], {})[r["impl"]] = r
    return by


def is_membound(shape: dict, dtype: str, ceiling_gbps: float | None) -> bool:
    """A shape (an ops record's shape dict) is memory-bound in `dtype` when it has at most
    MEMBOUND_MAX_TAPS taps and its minimum bytes take >= MEMBOUND_MIN_US at the copy ceiling.
    Decided from the shape alone, so a shape that was not measured (budget cut, fused failed)
    is still known to be one: the check then cannot be met."""
    taps = math.prod(shape["weight"][2:])
    return (bool(ceiling_gbps) and taps <= MEMBOUND_MAX_TAPS
            and min_bytes({"shape": shape, "dtype": dtype}) / (ceiling_gbps * 1e3) >= MEMBOUND_MIN_US)


def _complete(misses: list, n_measured: int, n_suite: int) -> str:
    if misses:
        return "NOT met"
    return "met" if n_measured >= n_suite else "incomplete"


SEED_KERNELS = "seed (1,2048,21) k=3: fused = 1 CUDA kernel per call"
SEED_SPEEDUP = f"seed: per_group / fused >= {SEED_MIN_SPEEDUP:.0f}x"
MEMBOUND = f"memory-bound shapes: fused >= {FUSED_MIN_COPY_FRACTION:.0%} of copy ceiling"
FUSED_NATIVE = "fused no slower than native on every suite shape"
FUSED_NATIVE_DEVICE = "fused no slower than native (device time, graph replay)"   # not in issue 6's list
AUTO_BEST = f"auto within {AUTO_MAX_RATIO - 1:.0%} of the fastest impl"


def ops_checks(dtype: str, records: list[dict], n_suite: int, suite: list[dict] | None = None,
               ceiling_gbps: float | None = None) -> list[dict]:
    """The operator checks for one dtype's ops records (n_suite: shapes the suite has; suite:
    their shape dicts, from which the memory-bound set is known whether measured or not;
    ceiling_gbps: the copy ceiling, else the records'). Off CUDA the fused checks are n/a:
    fused runs in Triton's interpreter there."""
    by, tag = _by_shape(records), f"[{dtype}] "
    if suite is not None:
        n_suite = len(suite)
    if not records or any(r["device"] != "cuda" for r in records):
        return [check_item(tag + w, "n/a", "off CUDA: fused runs in Triton's interpreter")
                for w in (SEED_KERNELS, SEED_SPEEDUP, MEMBOUND, FUSED_NATIVE, FUSED_NATIVE_DEVICE)] \
            + [_auto_check(tag, by, n_suite)]
    out = []
    seed = by.get(SEED_NAME, {})
    fused, pg = seed.get("fused"), seed.get("per_group")
    k = None if fused is None else fused.get("cuda_kernels")
    out.append(check_item(tag + SEED_KERNELS, "n/a" if k is None else "met" if k == 1 else "NOT met",
                          "not measured" if k is None else f"{k} kernel(s)", kernels=k))
    x = None if fused is None or pg is None else pg["median_us"] / fused["median_us"]
    out.append(check_item(tag + SEED_SPEEDUP, "n/a" if x is None else "met" if x >= SEED_MIN_SPEEDUP else "NOT met",
                          "not measured" if x is None else f"{x:,.0f}x", speedup=x and round(x, 1)))
    if ceiling_gbps is None:
        ceiling_gbps = next((r["copy_ceiling_gbps"] for r in records if r.get("copy_ceiling_gbps")), None)
    shapes = {sh["name"]: sh for sh in (suite if suite is not None else [r["shape"] for r in records])}
    expected = [n for n, sh in shapes.items() if is_membound(sh, dtype, ceiling_gbps)]
    # Device time (graph replay) when the records have it: the check is about the kernel, and
    # a slow host's wall clock measures its own launch cost. A fused record without it (not
    # graph-timed) falls back to its wall fraction, named in the detail.
    device = any(r.get("device_us") is not None for r in records)
    fused = {n: by[n]["fused"] for n in expected if "fused" in by.get(n, {})}
    on_wall = [n for n, r in fused.items() if device and r.get("device_copy_fraction") is None]
    fr = {n: r["copy_fraction"] if not device or n in on_wall else r["device_copy_fraction"]
          for n, r in fused.items()}
    low = [f"{n} {f:.0%}" for n, f in fr.items() if f < FUSED_MIN_COPY_FRACTION]
    missing = [n for n in expected if n not in fr]                  # skipped, or fused failed there
    status = "n/a" if not expected else "NOT met" if low else "incomplete" if missing else "met"
    out.append(check_item(tag + MEMBOUND, status,
                          ("no copy ceiling measured" if not ceiling_gbps else
                           f"{len(fr) - len(low)}/{len(expected)} memory-bound shapes (>= {MEMBOUND_MIN_US:.0f} us "
                           f"at the ceiling)") + ("; device time, graph replay" if device else "; wall clock")
                          + (f" (wall: {', '.join(on_wall)})" if on_wall else "")
                          + (f"; below: {', '.join(low)}" if low else "")
                          + (f"; not measured: {', '.join(missing)}" if missing else ""),
                          fractions=fr, missing=missing))
    both = {n: (t["fused"], t["native"]) for n, t in by.items() if "fused" in t and "native" in t}
    pairs = {n: f["median_us"] / nat["median_us"] for n, (f, nat) in both.items()}
    verdicts = {n: _slower(f, nat) for n, (f, nat) in both.items()}
    slow = [f"{n} {pairs[n]:.2f}x" for n, v in verdicts.items() if v is True]
    level = [n for n, v in verdicts.items() if v is None]
    out.append(check_item(tag + FUSED_NATIVE, _complete(slow, len(pairs), n_suite) if pairs else "n/a",
                          f"{len(pairs) - len(slow)}/{len(pairs)} measured shapes (suite {n_suite})"
                          + (f"; slower: {', '.join(slow)}" if slow else "")
                          + (f"; level (native's median lower, within the medians' 95% notches): "
                             f"{', '.join(f'{n} {pairs[n]:.3f}x' for n in level)}" if level else ""),
                          ratios=pairs, level=level))
    return out + [_fused_native_device(tag, by), _auto_check(tag, by, n_suite)]


def _slower(fused: dict, native: dict) -> bool | None:
    """Is fused slower than native on one shape (eager wall)? True: its median is higher by more
    than the two medians' uncertainty, their 95% intervals median +- 1.57 IQR / sqrt(samples)
    apart (McGill, Tukey and Larsen's box-plot notches); None: a higher median inside those
    intervals, a difference the run cannot tell from its noise ("level", named in the detail);
    False: fused's median is no higher. Records without quartiles count by their medians.
    (The second H200 run: the seed's 1.09x was slower by this, the sweep's 1.02-1.04x level.)"""
    if fused["median_us"] <= native["median_us"]:
        return False
    if any(r.get(k) is None for r in (fused, native) for k in ("q25_us", "q75_us", "repeats")):
        return True
    notch = lambda r: 1.57 * (r["q75_us"] - r["q25_us"]) / math.sqrt(r["repeats"])     # noqa: E731
    return True if fused["median_us"] - notch(fused) > native["median_us"] + notch(native) else None


def _fused_native_device(tag: str, by: dict) -> dict:
    """fused / native by device time (graph replay) on the shapes where both were graph-timed."""
    pairs = {n: round(t["fused"]["device_us"] / t["native"]["device_us"], 4) for n, t in by.items()
             if "fused" in t and "native" in t and t["fused"].get("device_us") and t["native"].get("device_us")}
    slow = [f"{n} {v:.2f}x" for n, v in pairs.items() if v > 1.0]
    return check_item(tag + FUSED_NATIVE_DEVICE, ("NOT met" if slow else "met") if pairs else "n/a",
                      f"{len(pairs) - len(slow)}/{len(pairs)} shapes graph-timed for both"
                      + (f"; slower: {', '.join(slow)}" if slow else ""), ratios=pairs)


def _auto_check(tag: str, by: dict, n_suite: int) -> dict:
    """auto against the fastest concrete impl, per shape, by the time of the impl auto picks
    (the records' auto_choice) as measured beside the others in the same interleaved run: auto
    runs that impl's code path (dispatch caches the pick under the call's key), so a second
    timing series of it measures the same calls again and adds only noise (the first H200 run:
    auto's own median at 0.75x-1.43x of its pick's on the same rows). auto's own timing is kept in
    the record (`own`) and used where a record has no auto_choice."""
    ratios, own = {}, {}
    for n, t in by.items():
        rest = {i: r["median_us"] for i, r in t.items() if i != "auto"}
        if "auto" not in t or not rest:
            continue
        best = min(rest, key=rest.get)
        pick = t["auto"].get("auto_choice")
        timed = rest[pick] if pick in rest else t["auto"]["median_us"]
        ratios[n] = (round(timed / rest[best], 4), best)
        own[n] = round(t["auto"]["median_us"] / rest[best], 4)
    miss = [f"{n} {v:.2f}x of {b}" for n, (v, b) in ratios.items() if v > AUTO_MAX_RATIO]
    return check_item(tag + AUTO_BEST, _complete(miss, len(ratios), n_suite) if ratios else "n/a",
                      f"{len(ratios) - len(miss)}/{len(ratios)} measured shapes (suite {n_suite}), by the "
                      "picked impl's time" + (f"; misses: {', '.join(miss)}" if miss else ""),
                      ratios=ratios, own=own)


def decode_checks(rows: list[dict]) -> list[dict]:
    """Kernels per generated token before -> after, and one host launch per graph token."""
    out, by = [], {}
    for r in rows:
        if r.get("error") is None:
            by.setdefault((r["preset"], r["batch"]), {})[r["variant"]] = r
    for (preset, batch), v in by.items():
        before, after = v.get("before"), v.get("after-eager") or v.get("after")
        if before and after and before.get("kernels_per_token") is not None:
            b, a = before["kernels_per_token"], after["kernels_per_token"]
            out.append(check_item(f"decode {preset} b{batch}: CUDA kernels per token before -> after",
                              "met" if a is not None and a < b else "NOT met", f"{b} -> {a}"))
        for name, what in (("after", "graph"), ("served", "served continuous batch graph")):
            g = v.get(name)
            if g and g.get("cuda_graph"):
                h = g.get("host_launches_per_token")
                out.append(check_item(f"decode {preset} b{batch}: {what} = 1 host launch per token",
                                  "met" if h == 1 else ("n/a" if h is None else "NOT met"), f"{h}"))
    return out


def summarize(run, steps: dict, interrupted: bool) -> dict:
    """gpu.py's summary of a run (its Run: results so far) and its steps: the acceptance checks,
    the exit code (1 correctness failed, 2 a step crashed or the run was interrupted, 3 both)."""
    checks = []
    c = run.correctness
    if c is not None:
        checks.append(check_item(
            "correctness: every impl x dtype x case within tolerance",
            "NOT met" if c["failed"] else ("incomplete" if c["skipped"] else "met"),
            f"{c['passed']}/{c['checked']} passed, {c['skipped']} skipped"
            + (f"; failed: {'; '.join(c['failed'][:6])}" if c["failed"] else "")))
    suite = [shape_dict(s) for s in run.cfg["ops_shapes"]]
    for dtype, recs in run.ops.items():
        checks += ops_checks(dtype, recs, len(suite), suite, run.copy["gbps"] if run.copy else None)
    checks += decode_checks(run.decode)
    for kind, a in ((run.models or {}).get("acceptance") or {}).items():
        if not a["shares"]:                              # no case of that kind was run
            continue
        checks.append(check_item(f"[models] LFM2 {kind}: per_group dw share >= 50%, auto <= 5%",
                                 "met" if a["met"] else "NOT met", json.dumps(a["shares"])))
    failed = bool(c and c["failed"])
    crashed = interrupted or any(s["status"] in ("error", "interrupted") for s in steps.values())
    code = (1 if failed else 0) | (2 if crashed else 0)
    verdict = ", ".join(v for v, on in (("correctness FAILED", failed), ("step error/interrupted", crashed)) if on)
    return {"tag": run.tag, "smoke": run.smoke, "environment": run.env,
            "wall_s": round(time.perf_counter() - run.t0, 1), "steps": steps, "checks": checks, "copy": run.copy,
            "decode": run.decode, "layouts": getattr(run, "layouts", None), "prewarm": run.prewarm,
            "files": run.files, "exit_code": code,
            "verdict": verdict or "ok"}   # no --out: a path of the device, not of the results
