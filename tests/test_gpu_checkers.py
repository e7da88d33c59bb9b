"""benchmarks/gpu.py's checkers, fed deliberately wrong impls (each kind of wrong must fail)
and synthetic CUDA records (their CUDA branches never run on a CPU machine). The smoke run of
the script itself is tests/test_bench_gpu.py."""
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import gpu_checks, gpu_report, gpu_summary  # noqa: E402

# ---------------------------------------------------------------- the checker flags wrong impls

def _shifted(op):
    """A wrong impl: the right answer rolled by one position along the last dim."""
    def fn(*args, **kwargs):
        return gpu_checks.public_op(op)(*args, **kwargs).roll(1, dims=-1)
    return fn


@pytest.mark.parametrize("dtype", [pytest.param(d, id=n) for n, d in gpu_checks.DTYPES.items()])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in gpu_checks.SMOKE_CASES[::3]])
def test_planted_wrong_impl_fails(case, dtype):
    right = gpu_checks.check(case, dtype, "slice_sum", "cpu")
    wrong = gpu_checks.check(case, dtype, "slice_sum", "cpu", fn=_shifted(case.op))
    assert right["passed"] and right["rel_err"] <= right["tol"]
    assert not wrong["passed"] and wrong["reason"] == "tolerance" and wrong["rel_err"] > 0.1


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize("kind", ["nan", "shape", "dtype", "raises", "tiny-error-fp32", "state-not-updated"])
def test_checker_flags_each_kind_of_wrong(kind):
    case = gpu_checks.SMOKE_CASES[0] if kind != "state-not-updated" else next(
        c for c in gpu_checks.SMOKE_CASES if c.op == "decode")
    op = gpu_checks.public_op(case.op)
    wrong = {
        "nan": lambda *a, **k: op(*a, **k) * float("nan"),
        "shape": lambda *a, **k: op(*a, **k)[..., :-1],
        "dtype": lambda *a, **k: op(*a, **k).double(),
        "raises": _boom,
        "tiny-error-fp32": lambda *a, **k: op(*a, **k) * (1 + 1e-3),        # 1e-3 > fp32's 1e-5
        "state-not-updated": lambda x, state, *a, **k: op(x, state.clone(), *a, **k),
    }[kind]
    row = gpu_checks.check(case, torch.float32, "native", "cpu", fn=wrong)
    assert row["passed"] is False
    expect = {"nan": "non-finite output", "raises": "error", "tiny-error-fp32": "tolerance",
              "state-not-updated": "tolerance"}
    if kind in expect:
        assert row["reason"] == expect[kind]
    else:
        assert row["reason"].startswith(kind)
    if kind == "state-not-updated":
        assert row["rel_err"] < 1e-6 and row["state_rel_err"] > 0.1   # output right, state wrong


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in gpu_checks.SMOKE_CASES[:3]])
def test_an_output_left_half_unwritten_never_passes(case):
    """A kernel that skips a tile: its launcher's torch.empty output keeps whatever the memory
    held. After a correct impl of the same case has run (its freed output is the block most
    likely to be handed out next), the row must still fail: poison_outputs leaves NaN there."""
    op = gpu_checks.public_op(case.op)

    def half_written(*args, **kwargs):
        full = op(*args, **kwargs)
        out = torch.empty_like(full)                                   # as a launcher allocates
        out[..., : full.shape[-1] // 2] = full[..., : full.shape[-1] // 2]
        return out
    assert gpu_checks.check(case, torch.float32, "native", "cpu")["passed"]
    row = gpu_checks.check(case, torch.float32, "native", "cpu", fn=half_written)
    assert row["passed"] is False and row["reason"] in ("non-finite output", "tolerance")


def test_poison_outputs_frees_nan_blocks_of_the_output_size(monkeypatch):
    made = []
    real_full = torch.full
    monkeypatch.setattr(torch, "full", lambda *a, **k: made.append(real_full(*a, **k)) or made[-1])
    gpu_checks.poison_outputs((2, 3, 5), torch.bfloat16, "cpu")
    assert len(made) == gpu_checks.POISON_BLOCKS
    assert all(t.shape == (2, 3, 5) and t.dtype == torch.bfloat16 and t.isnan().all() for t in made)


def test_failures_are_tallied_and_deadline_skips():
    rows = []
    res = gpu_checks.run(["native"], ["float32"], "cpu", deadline=0.0, cases=gpu_checks.SMOKE_CASES[:2], rows=rows)
    assert res["checked"] == 0 and res["skipped"] == 2 and all(r["skipped"] for r in rows)
    bad = gpu_checks.check(gpu_checks.SMOKE_CASES[0], torch.float32, "native", "cpu",
                           fn=lambda *a, **k: gpu_checks.public_op("conv1d")(*a, **k) + 1)
    res = gpu_checks.tally([bad], ["native"], ["float32"], gpu_checks.SMOKE_CASES[:1])
    assert res["failed"] and res["failed"][0].startswith("native/float32/") and res["passed"] == 0


# ---------------------------------------------------------------- CUDA-only branches, fed by hand

def _rec(name, impl, us, *, x=(1, 2048, 21), k=3, op="conv1d", kernels=1, stride=1, padding=0, dtype="float32"):
    w = [x[1], 1, *((k,) if isinstance(k, int) else k)]
    return {"shape": {"name": name, "op": op, "x": list(x), "weight": w, "stride": stride, "padding": padding,
                      "dilation": 1}, "impl": impl, "median_us": us, "cuda_kernels": kernels, "device": "cuda",
            "dtype": dtype}


def test_min_bytes_and_output_sizes():
    seed = _rec("seed-c2048", "fused", 10.0)
    assert gpu_report.min_bytes(seed) == 4 * (2048 * 21 + 2048 * 3 + 2048 * 19)      # x + w + valid out
    s2 = _rec("s2", "fused", 1.0, op="conv2d", x=(32, 96, 112, 112), k=(3, 3), stride=2, padding=1, dtype="bfloat16")
    assert gpu_report.out_numel(s2["shape"]) == 32 * 96 * 56 * 56
    dec = _rec("dec", "fused", 1.0, op="decode", x=(16, 2048))
    assert gpu_report.min_bytes(dec) == 4 * (16 * 2048 + 2 * 16 * 2048 * 2 + 2048 * 3 + 16 * 2048)
    causal = _rec("c", "fused", 1.0, x=(8, 1024, 512), padding="causal")
    assert gpu_report.out_numel(causal["shape"]) == 8 * 1024 * 512


def test_ops_checks_on_synthetic_cuda_records():
    big = dict(x=(32, 96, 112, 112), k=(3, 3), op="conv2d", stride=2, padding=1)
    recs = [_rec("seed-c2048", "per_group", 20_000.0, kernels=4097), _rec("seed-c2048", "fused", 10.0),
            _rec("seed-c2048", "native", 12.0, kernels=1), _rec("seed-c2048", "auto", 10.2),
            _rec("big", "fused", 55.0, **big), _rec("big", "native", 50.0, **big), _rec("big", "auto", 56.0, **big)]
    gpu_report.add_bandwidth(recs, ceiling_gbps=4000.0)
    checks = {c["name"].split("] ", 1)[1]: c for c in gpu_report.ops_checks("float32", recs, n_suite=2)}
    assert checks[gpu_report.SEED_KERNELS]["status"] == "met"
    assert checks[gpu_report.SEED_SPEEDUP]["status"] == "met" and checks[gpu_report.SEED_SPEEDUP]["speedup"] == 2000.0
    mb = checks[gpu_report.MEMBOUND]                   # 'big' moves 193 MB: 48 us at 4 TB/s
    assert list(mb["fractions"]) == ["big"] and mb["status"] == "met"
    assert checks[gpu_report.FUSED_NATIVE]["status"] == "NOT met" and "big 1.10x" in checks[gpu_report.FUSED_NATIVE]["detail"]
    assert checks[gpu_report.AUTO_BEST]["status"] == "NOT met" and "big" in checks[gpu_report.AUTO_BEST]["detail"]
    incomplete = gpu_report.ops_checks("float32", recs[:4], n_suite=59)
    assert {c["status"] for c in incomplete if gpu_report.AUTO_BEST in c["name"]} == {"incomplete"}


def test_fused_is_slower_only_where_the_medians_notches_are_apart():
    """A higher median whose 95% interval (median +- 1.57 IQR / sqrt(n)) clears native's is
    slower; inside it, level (named, not a miss); records without quartiles: medians."""
    def pair(name, fused, native, n=40):      # (median, q25, q75) each, n samples
        recs = [_rec(name, "fused", fused[0]), _rec(name, "native", native[0])]
        for r, (_, q25, q75) in zip(recs, (fused, native)):
            r.update(q25_us=q25, q75_us=q75, repeats=n)
        return recs
    apart = pair("apart", (22.7, 22.0, 23.9), (20.8, 20.2, 21.8))      # notches +-0.47, +-0.40 us
    noisy = pair("noisy", (43.3, 35.0, 52.0), (35.5, 27.0, 44.0))      # +-4.2 each: 1.22x, level
    near = pair("near", (32.7, 31.4, 33.7), (31.3, 30.1, 32.0), n=8)  # +-1.3, +-1.1
    ahead = pair("ahead", (30.0, 29.0, 31.0), (31.0, 30.0, 32.0))
    checks = lambda recs, n: {c["name"].split("] ", 1)[1]: c for c in gpu_report.ops_checks(   # noqa: E731
        "float32", recs, n_suite=n)}[gpu_report.FUSED_NATIVE]
    check = checks(apart + noisy + near + ahead, 4)
    assert check["status"] == "NOT met" and "slower: apart 1.09x" in check["detail"], check
    assert check["level"] == ["noisy", "near"] and "noisy 1.220x" in check["detail"] and "ahead" not in check["detail"]
    check = checks(noisy + near + ahead, 3)
    assert check["status"] == "met" and check["level"] == ["noisy", "near"], check
    assert checks(pair("near", (32.7, 31.4, 33.7), (31.3, 30.1, 32.0), n=400), 1)["status"] == "NOT met"   # more samples


def test_auto_is_judged_by_the_time_of_the_impl_it_picks():
    """auto runs its pick's code path: the check reads the pick's time beside the others (auto's
    own series, noise on the same calls, is kept as `own`); without auto_choice, auto's own."""
    def rows(name, auto_us, pick, fused=10.0, native=12.0):
        rs = [_rec(name, "fused", fused), _rec(name, "native", native), _rec(name, "auto", auto_us)]
        rs[-1]["auto_choice"] = pick
        return rs
    recs = rows("noisy", 13.0, "fused") + rows("wrong", 10.1, "native") + rows("close", 10.0, "native", native=10.4)
    check = {c["name"].split("] ", 1)[1]: c for c in gpu_report.ops_checks("float32", recs, n_suite=3)}[gpu_report.AUTO_BEST]
    assert check["status"] == "NOT met" and check["ratios"] == {"noisy": (1.0, "fused"), "wrong": (1.2, "fused"),
                                                                 "close": (1.04, "fused")}
    assert "wrong 1.20x of fused" in check["detail"] and "noisy" not in check["detail"]
    assert check["own"] == {"noisy": 1.3, "wrong": 1.01, "close": 1.0}
    good = rows("noisy", 13.0, "fused") + rows("close", 10.0, "native", native=10.4)
    check = {c["name"].split("] ", 1)[1]: c for c in gpu_report.ops_checks("float32", good, n_suite=2)}[gpu_report.AUTO_BEST]
    assert check["status"] == "met"


def test_memory_bound_check_is_never_met_with_a_memory_bound_shape_unmeasured():
    """A memory-bound shape whose fused time is missing (fused failed there, or the budget cut
    the shape) leaves the check incomplete; it was 'met' on the shapes that happened to run."""
    big = dict(x=(32, 96, 112, 112), k=(3, 3), op="conv2d", stride=2, padding=1)
    big2 = dict(x=(32, 144, 56, 56), k=(3, 3), op="conv2d", stride=1, padding=1)
    ok = [_rec("big", "fused", 50.0, **big), _rec("big", "native", 60.0, **big)]
    failed = [_rec("big2", "fused", None, **big2), _rec("big2", "native", 40.0, **big2)]
    gpu_report.add_bandwidth(ok + failed, ceiling_gbps=4000.0)
    mb = [c for c in gpu_report.ops_checks("float32", ok + failed, n_suite=2) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "incomplete" and mb[0]["missing"] == ["big2"] and "big2" in mb[0]["detail"]
    # the suite says which shapes are memory-bound, measured or not (a budget cut leaves no record)
    suite = [r["shape"] for r in ok + failed[1:]] + [{**_rec("tiny", "fused", 1.0)["shape"]}]
    mb = [c for c in gpu_report.ops_checks("float32", ok, 0, suite, 4000.0) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "incomplete" and mb[0]["missing"] == ["big2"]
    mb = [c for c in gpu_report.ops_checks("float32", ok, 0, suite[:2], 4000.0) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "met" and list(mb[0]["fractions"]) == ["big"]
    no_copy = [dict(r) for r in ok]
    gpu_report.add_bandwidth(no_copy, ceiling_gbps=None)                   # the copy step failed
    mb = [c for c in gpu_report.ops_checks("float32", no_copy, 0, suite, None) if gpu_report.MEMBOUND in c["name"]]
    assert mb[0]["status"] == "n/a" and "no copy ceiling" in mb[0]["detail"]      # never met without one
    # which shapes count: <= 9 taps and >= 20 us at the ceiling (a K=31 or 7x7 shape never does)
    from benchmarks import ops
    names = {s.name for s in ops.SUITE if gpu_report.is_membound(ops.shape_dict(s), "float32", 4000.0)}
    assert "shortconv-long-1x4096x4096" in names and "mbv2-b32-c96@112-s2" in names
    assert not names & {"conformer-k31-8x256x512", "convnext-7x7-1x96@56", "lfm3-1.7b-prefill-8x512", ops.SEED.name}


def test_decode_checks_on_synthetic_rows():
    rows = [dict(preset="p", batch=1, variant="before", kernels_per_token=30_000, error=None),
            dict(preset="p", batch=1, variant="after-eager", kernels_per_token=60, error=None),
            dict(preset="p", batch=1, variant="after", kernels_per_token=60, cuda_graph=True,
                 host_launches_per_token=1, error=None)]
    assert [c["status"] for c in gpu_report.decode_checks(rows)] == ["met", "met"]
    rows[2]["host_launches_per_token"] = 61
    assert gpu_report.decode_checks(rows)[1]["status"] == "NOT met"
    rows.append(dict(preset="p", batch=1, variant="served", kernels_per_token=60, cuda_graph=True,
                     host_launches_per_token=1, error=None))
    served = gpu_report.decode_checks(rows)[2]
    assert "served continuous batch graph" in served["name"] and served["status"] == "met"


def test_compiled_only_on_big_float32_shapes_on_cuda():
    from benchmarks import gpu_steps, ops
    run = SimpleNamespace(cfg={"ops_impls": list(ops.IMPLS)}, device="cuda")
    by = {s.name: s for s in ops.SUITE}
    assert "compiled" not in gpu_steps._ops_impls(run, ops.SEED, "float32")
    assert "compiled" in gpu_steps._ops_impls(run, by["shortconv-long-1x4096x4096"], "float32")
    assert "compiled" not in gpu_steps._ops_impls(run, by["shortconv-long-1x4096x4096"], "bfloat16")


def test_decode_table_lists_variants_before_to_served_whatever_order_they_ran_in():
    """On CUDA the graph rows are measured first (a budget cut falls on the slow per_group rows);
    the table still reads before -> after-eager -> after -> served per preset and batch."""
    from benchmarks import gpu_decode, gpu_report
    measured = [v.name for v in gpu_decode.variants("cuda")]
    assert measured[:2] == ["after", "served"] and sorted(measured) == sorted(gpu_decode.ORDER)
    rows = [dict(preset=p, batch=b, variant=v, impl="auto", error=None) for p, b in (("x", 1), ("x", 16))
            for v in measured]
    table = gpu_summary.decode_table(rows)[2:]
    assert [line.split(" | ")[2] for line in table] == list(gpu_decode.ORDER) * 2
    assert [line.split(" | ")[1] for line in table] == ["1"] * 4 + ["16"] * 4


def test_per_group_only_on_its_listed_shapes_on_cuda_and_everywhere_in_the_smoke():
    from benchmarks import gpu_config, gpu_steps, ops
    full, smoke = gpu_config.settings("cuda", False), gpu_config.settings("cpu", True)
    by = {s.name: s for s in ops.SUITE}
    run = SimpleNamespace(cfg=full, device="cuda")
    assert "per_group" in gpu_steps._ops_impls(run, ops.SEED, "float32")            # issue 6's 1000x
    assert "per_group" not in gpu_steps._ops_impls(run, by["sweep-c64"], "float32")
    assert [n for n in gpu_config.PER_GROUP_SHAPES_CUDA if n in by] == list(gpu_config.PER_GROUP_SHAPES_CUDA)
    assert "per_group" in gpu_steps._ops_impls(SimpleNamespace(cfg=smoke, device="cpu"), by["sweep-c64"], "float32")
    assert "per_group" in gpu_steps._ops_impls(SimpleNamespace(cfg=full, device="cpu"), by["sweep-c64"], "float32")


def test_cuda_ops_order_puts_the_seed_then_every_memory_bound_shape_first():
    """A budget cuts the ops steps' tail: the copy-ceiling check cannot be met with a memory-bound
    shape unmeasured, so those come right after the seed (the second run cut the NCHW ones)."""
    from benchmarks import gpu_config, gpu_report, ops
    order = gpu_config.settings("cuda", False)["ops_shapes"]
    assert order[0] is ops.SEED and sorted(s.name for s in order) == sorted(s.name for s in ops.SUITE)
    membound = [gpu_report.is_membound(ops.shape_dict(s), "float32", gpu_config.NOMINAL_CEILING_GBPS) for s in order]
    n = sum(membound)
    assert n == 7 and membound[1:1 + n] == [True] * n
    assert {s.name for s in order[1:1 + n]} >= {"mbv2-b32-c32@112", "mbv2-b32-c32@112-cl", "shortconv-long-1x4096x4096"}


def test_decode_measures_every_batchs_graph_rows_before_any_per_group_row(monkeypatch):
    """Variant-major on CUDA, across presets: a budget cut falls on the last slow rows, never on a
    preset's or batch's "after" (issue 6 needs before and after at batch 1 and 16 for both presets)."""
    import math

    from benchmarks import gpu_decode
    from models.lfm2 import LFM2ForCausalLM
    order = []
    monkeypatch.setattr(LFM2ForCausalLM, "from_preset", classmethod(lambda cls, preset, **kw: preset))
    monkeypatch.setattr(gpu_decode, "measure", lambda model, preset, batch, v, *a: (
        order.append((preset, batch, v.name)), {"error": "stub"})[1])
    gpu_decode.run(["p", "q"], [1, 16], 4, 3, "cuda", None, math.inf, 1.0, [], [], log=lambda *a: None)
    assert order == [(p, b, v) for v in ("after", "served", "before", "after-eager") for p in "pq" for b in (1, 16)]
