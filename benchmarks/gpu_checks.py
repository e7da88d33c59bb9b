"""Correctness of every depthwise impl against a float64 reference, for benchmarks/gpu.py.

Each (case, dtype, impl) runs the public op (depthwise_conv1d/2d, conv1d_decode_step,
short_conv_block) with `impl=` on fresh seeded random inputs, and is compared with a float64
reference computed from the *same* inputs upcast (F.conv1d/F.conv2d with groups=C), so
only accumulation and output rounding remain. Error = ||out - ref|| / ||ref|| (L2, float64);
a row passes when it is <= TOL[dtype] and finite, and the shape and dtype are right (NaN never
passes). Ops that update a conv state in place are checked on the state too. Before each impl
runs, blocks of its output's size are filled with NaN and freed (poison_outputs), so an
element it never writes reads NaN instead of a previous impl's answer. The cases, their inputs
and the reference are benchmarks/gpu_cases.py (its names stay importable from here).

    result = run(impls, dtypes, device, deadline)     # rows + counts; rows past deadline: skipped
    row = check(case, torch.float32, "fused", "cuda", fn=None)   # fn: a stand-in op (tests)
"""
from __future__ import annotations

import math
import time

import torch

from benchmarks.gpu_cases import CASES, SMOKE_CASES, Case, make_inputs, reference, smoke_case

__all__ = ["Case", "CASES", "SMOKE_CASES", "smoke_case", "make_inputs", "reference",
           "TOL", "DTYPES", "COST_GROUPS", "POISON_BLOCKS", "public_op", "run_impl", "rel_err", "resolved",
           "poison_outputs", "check", "run", "tally", "write_markdown"]

TOL = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 2e-3}     # relative L2 error
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Checked cheap impls first, then the Triton ones (autotune compiles per key and dtype), then
# compiled (one torch.compile per shape class): under a deadline the costly rows are left out.
COST_GROUPS = (("per_group", "slice_sum", "native"), ("fused", "auto"), ("compiled",))


def public_op(op: str):
    from models.depthwise import conv1d_decode_step, depthwise_conv1d, depthwise_conv2d, short_conv_block
    return {"conv1d": depthwise_conv1d, "conv2d": depthwise_conv2d, "decode": conv1d_decode_step,
            "short_conv": short_conv_block}[op]


def run_impl(case: Case, inp: dict, impl: str, fn=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Call the op (or the stand-in `fn`, same signature) with impl=impl; state on a copy."""
    fn = fn or public_op(case.op)
    state = None if inp["state"] is None else inp["state"].clone()
    if case.op in ("conv1d", "conv2d"):
        out = fn(inp["x"], inp["weight"], inp["bias"], stride=case.stride, padding=case.padding,
                 dilation=case.dilation, impl=impl)
    elif case.op == "decode":
        out = fn(inp["x"], state, inp["weight"], inp["bias"], activation=case.activation, impl=impl)
    else:
        out = fn(inp["x"], inp["weight"], inp["bias"], conv_state=state, mask=inp["mask"], impl=impl)
    return out, state


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN when out has a non-finite value."""
    o = out.detach().double().cpu()
    if not torch.isfinite(o).all():
        return math.nan
    r = ref.detach().double().cpu()
    return float(torch.linalg.vector_norm(o - r) / max(float(torch.linalg.vector_norm(r)), 1e-300))


def resolved(case: Case, dtype: torch.dtype, device: str) -> str:
    """The concrete impl `auto` picks for the case (as dispatch asks models.depthwise.auto)."""
    from models.depthwise import auto
    if case.op == "short_conv":
        B, L, C3 = case.x
        return auto.choose("conv1d", torch.device(device), dtype, (B, C3 // 3, L), case.weight, 1, 1)
    x = (*case.x, 1) if case.op == "decode" else case.x
    return auto.choose("decode" if case.op == "decode" else case.op, torch.device(device), dtype, x,
                       case.weight, case.stride, case.dilation, channels_last=case.layout == "channels_last")


POISON_BLOCKS = 4   # NaN blocks of the output's size freed before each impl runs


def poison_outputs(shape, dtype: torch.dtype, device) -> None:
    """Leave NaN in the memory the impl's output is likely to get. Freed blocks go back to the
    allocator (CUDA's caching allocator, malloc on CPU), which hands the most recently freed
    block of a size out first: without this, an impl's output could land on the previous impl's
    freed, correct output, and elements a kernel never wrote would pass."""
    blocks = [torch.full(shape, math.nan, dtype=dtype, device=device) for _ in range(POISON_BLOCKS)]
    del blocks


def _evaluate(case, dtype_name, impl, inp, fn) -> dict:
    row = {"rel_err": None, "state_rel_err": None, "error": None, "reason": None}
    try:
        with torch.inference_mode():
            ref, ref_state = reference(case, inp)        # first: an impl that writes x can't hide
            poison_outputs(ref.shape, DTYPES[dtype_name], inp["weight"].device)
            out, state = run_impl(case, inp, impl, fn)
    except Exception as exc:                                     # a crash is a failure, recorded
        row.update(error=f"{type(exc).__name__}: {exc}"[:300], reason="error")
        return row
    if tuple(out.shape) != tuple(ref.shape):
        row["reason"] = f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    elif out.dtype != DTYPES[dtype_name]:
        row["reason"] = f"dtype {out.dtype}"
    else:
        row["rel_err"] = rel_err(out, ref)
        if ref_state is not None:
            row["state_rel_err"] = rel_err(state, ref_state)
        errs = [e for e in (row["rel_err"], row["state_rel_err"]) if e is not None]
        if any(math.isnan(e) for e in errs):
            row["reason"] = "non-finite output"
        elif max(errs) > TOL[dtype_name]:
            row["reason"] = "tolerance"
    return row


def check(case: Case, dtype: torch.dtype, impl: str, device: str, *, fn=None, seed: int = 0) -> dict:
    """One row: {case, op, dtype, impl, auto_choice, rel_err, state_rel_err, tol, passed, reason,
    error, ...}. fn replaces the public op (to prove this checker flags a wrong impl)."""
    name = str(dtype).removeprefix("torch.")
    inp = make_inputs(case, dtype, device, seed)
    row = {"case": case.name, "op": case.op, "dtype": name, "impl": impl, "tol": TOL[name],
           "auto_choice": resolved(case, dtype, device) if impl == "auto" else None,
           **_evaluate(case, name, impl, inp, fn)}
    # cuDNN/cuBLAS may run float32 as TF32 (10-bit mantissa) by default: say whether that is why.
    tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    if row["reason"] == "tolerance" and name == "float32" and device == "cuda" and tf32:
        flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            row["rel_err_no_tf32"] = _evaluate(case, name, impl, inp, fn)["rel_err"]
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    row["passed"] = row["reason"] is None
    return row


def run(impls: list[str], dtypes: list[str], device: str, deadline: float = math.inf,
        cases: tuple[Case, ...] = CASES, rows: list | None = None) -> dict:
    """Every case x dtype x impl, cheap impls first (rows appended to `rows` as they finish, so
    a caller keeps them when interrupted); rows not started by `deadline` (time.perf_counter)
    are listed as skipped, not failed."""
    rows = [] if rows is None else rows
    order = [(impl, d, c) for group in COST_GROUPS for d in dtypes for c in cases
             for impl in group if impl in impls]
    order += [(i, d, c) for i in impls if not any(i in g for g in COST_GROUPS) for d in dtypes for c in cases]
    for seed, (impl, d, case) in enumerate(order):
        if time.perf_counter() > deadline:
            rows.append({"case": case.name, "op": case.op, "dtype": d, "impl": impl, "skipped": True,
                         "passed": None})
            continue
        rows.append(check(case, DTYPES[d], impl, device, seed=seed))
    return tally(rows, impls, dtypes, cases)


def tally(rows: list[dict], impls, dtypes, cases) -> dict:
    """The result record: what was claimed (impls x dtypes x cases), the rows, the counts;
    claimed rows never run (deadline, interruption) count as skipped."""
    done = [r for r in rows if not r.get("skipped")]
    return {"impls": list(impls), "dtypes": list(dtypes), "cases": [c.name for c in cases],
            "tolerances": {d: TOL[d] for d in dtypes}, "rows": rows, "checked": len(done),
            "passed": sum(r["passed"] for r in done),
            "skipped": len(impls) * len(dtypes) * len(cases) - len(done),
            "failed": [f"{r['impl']}/{r['dtype']}/{r['case']}: {r['reason']}"
                       + (f" ({r['error']})" if r["error"] else "") for r in done if not r["passed"]]}


def write_markdown(result: dict, path, env: dict) -> None:
    """One table per dtype: case x impl relative errors, failures marked."""
    by = {(r["case"], r["dtype"], r["impl"]): r for r in result["rows"]}
    impls = result["impls"]
    lines = [f"# Depthwise correctness ({env['device']}: {env['device_name']})", "",
             f"Relative L2 error against a float64 reference (F.conv1d/F.conv2d, groups=C, on the same inputs "
             f"upcast); tolerances {result['tolerances']}; NaN never passes. "
             f"{result['passed']}/{result['checked']} passed, {result['skipped']} skipped (time budget).", ""]
    for d in result["dtypes"]:
        lines += [f"## {d}", "", "| case | " + " | ".join(impls) + " |", "|---|" + "---:|" * len(impls)]
        for c in result["cases"]:
            cells = []
            for i in impls:
                r = by.get((c, d, i))
                if r is None or r.get("skipped"):
                    cells.append("skipped")
                    continue
                e = max([v for v in (r["rel_err"], r["state_rel_err"]) if v is not None], default=None)
                cell = "-" if e is None else f"{e:.1e}"
                cells.append(cell if r["passed"] else f"**FAIL** {cell} ({r['reason']})")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
    if result["failed"]:
        lines += ["## Failures", "", *[f"- {f}" for f in result["failed"]]]
    path.write_text("\n".join(lines) + "\n")
