"""Call-site launch plans (triton_launch.Plan, kept by triton_conv1d / triton_conv2d): a call
seen before replays the launch of the last one with its own tensors, past the op's set-up, the
autotune lookup and the Launcher's key. Checked without a GPU against what the Launcher itself
would hand the compiled kernel's launcher for the same call.

The kernels must be real triton.jit functions, which this process (TRITON_INTERPRET=1, from
conftest.py) does not have, so the checks run in a subprocess with TRITON_INTERPRET unset, a
stub driver (device 0, stream 7) and JITFunction.run replaced by a recorder that returns a
stand-in CompiledKernel whose launcher records its arguments. Autotuner caches are seeded with
the first config (nothing can be timed without a GPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import os, random, sys
os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, sys.argv[1])
import torch
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction
from benchmarks.host_overhead import _seed_autotuner_cache, _TRITON_TUNER_RUN
from models.depthwise import (depthwise_conv1d, depthwise_conv2d, fused, triton_conv1d, triton_conv2d,
                              triton_launch, triton_vectors)

LAUNCHES = []          # what reached the (stand-in) C launcher: the full argument tuple


class Compiled:
    function, packed_metadata = "handle", ("packed",)

    @staticmethod
    def run(*args):
        LAUNCHES.append(args)


JIT_RUNS = []
def jit_run(self, *args, grid, warmup, **kwargs):
    JIT_RUNS.append(args)
    return Compiled()


PLANNED = []           # one entry per Plan.launch: whether it launched
_plan_launch = triton_launch.Plan.launch
def plan_launch(self, tensors, out):
    PLANNED.append(_plan_launch(self, tensors, out))
    return PLANNED[-1]


triton_launch.Plan.launch = plan_launch
fused.interpreting = lambda: True             # CPU tensors past the fused impl's device check
JITFunction.run = jit_run
Autotuner.run = _seed_autotuner_cache
triton_launch._DRIVER[:] = [(lambda: 0, lambda device: 7)]
triton_launch.ENABLED = True
triton_launch.INT_POINTERS = False       # the launcher gets the tensors themselves (addresses: at the end)


def same_launch(a, b, x_b, out_b):
    """b is a with x (and out) swapped for x_b / out_b: every other argument identical."""
    assert len(a) == len(b) and a[:9] == b[:9], (a[:9], b[:9])
    for i, (u, v) in enumerate(zip(a[9:], b[9:])):
        if isinstance(u, torch.Tensor):
            assert isinstance(v, torch.Tensor) and u.shape == v.shape and u.stride() == v.stride() \
                and u.dtype == v.dtype, i
        else:
            assert u == v and type(u) is type(v), (i, u, v)
    assert b[9] is x_b and b[12] is out_b
    assert b[10] is a[10] and b[11] is a[11]      # the weight (or its cached tap-major copy), bias


def case_calls(rng, layout):
    """(name, plan table, make() -> a fresh x, call(x) -> out): a random conv1d (layout bcl,
    blc: a (B, L, C) transpose, misaligned: a 4-byte offset view) or conv2d (nchw, nhwc) call."""
    dt = rng.choice([torch.float32, torch.bfloat16])
    if layout in ("bcl", "blc", "misaligned"):
        B, C, L, K, m = rng.randint(1, 3), rng.choice([4, 8, 24]), rng.randint(5, 40), rng.choice([1, 3, 4]), rng.choice([1, 2])
        def make():
            if layout == "blc":
                return torch.randn(B, L, C, dtype=dt).transpose(1, 2)
            if layout == "misaligned":
                return torch.randn(B * C * L + 1, dtype=dt)[1:].view(B, C, L)
            return torch.randn(B, C, L, dtype=dt)
        w = torch.randn(C * m, 1, K, dtype=dt)
        b = torch.randn(C * m, dtype=dt) if rng.random() < 0.5 else None
        stride, dil = rng.choice([1, 2]), rng.choice([1, 2])
        pad = rng.choice(["causal", 0, 1, (2, 1)])
        if pad == "causal" and stride != 1:
            pad = 1
        call = lambda x: depthwise_conv1d(x, w, b, stride=stride, padding=pad, dilation=dil, impl="fused")
        return f"conv1d {layout} {dt} B{B} C{C} L{L} K{K} m{m} s{stride} d{dil} p{pad}", triton_conv1d._PLANS, make, call
    B, C, H, W = rng.randint(1, 3), rng.choice([4, 16]), rng.randint(5, 12), rng.randint(5, 12)
    nhwc = layout == "nhwc"
    def make():
        x = torch.randn(B, C, H, W, dtype=dt)
        return x.contiguous(memory_format=torch.channels_last) if nhwc else x
    w = torch.randn(C, 1, 3, 3, dtype=dt)
    b = torch.randn(C, dtype=dt) if rng.random() < 0.5 else None
    stride = rng.choice([1, 2])
    call = lambda x: depthwise_conv2d(x, w, b, stride=stride, padding=1, impl="fused")
    return f"conv2d {'nhwc' if nhwc else 'nchw'} {dt} B{B} C{C} {H}x{W} s{stride}", triton_conv2d._PLANS, make, call


rng = random.Random(int(sys.argv[2]))
# No inference mode: its tensors would skip the tap-major weight cache (weight_layout.py).
for i in range(15):
    name, table, make, call = case_calls(rng, ("bcl", "blc", "misaligned", "nchw", "nhwc")[i % 5])
    x1 = make()
    for _ in range(2):                    # autotuner (seeded), Launcher's first (JIT)
        call(x1)
    n_planned = len(PLANNED)
    call(x1)                              # direct through the Launcher, which returns the plan
    Autotuner.run = _TRITON_TUNER_RUN
    assert len(PLANNED) == n_planned and len(LAUNCHES) > 0, name
    n_plans, n_jit = len(table), len(JIT_RUNS)
    direct = LAUNCHES[-1]
    x2 = make()
    out = call(x2)                        # the plan: no JIT run, no new plan, same launch
    assert PLANNED[n_planned:] == [True], name
    assert len(JIT_RUNS) == n_jit and len(table) == n_plans, name
    same_launch(direct, LAUNCHES[-1], x2, out)
    assert out.shape == direct[12].shape and out.stride() == direct[12].stride(), name
    Autotuner.run = _seed_autotuner_cache
print("plans", len(triton_conv1d._PLANS), len(triton_conv2d._PLANS))


def same_stateful_launch(a, b, fresh, out_pos, inputs):
    """b repeats a with `fresh` inputs: the same non-tensor arguments, each tensor argument the
    one passed (or the same cached tap-major weight / placeholder), a new output of a's layout."""
    assert len(a) == len(b) and a[:9] == b[:9]
    for i, (u, v) in enumerate(zip(a[9:], b[9:])):
        if not isinstance(u, torch.Tensor):
            assert u == v and type(u) is type(v), (i, u, v)
        elif i == out_pos:
            assert v is not u and (u.shape, u.stride(), u.dtype) == (v.shape, v.stride(), v.dtype)
        elif any(u is t for t in inputs):                 # an input of the first call: now fresh's
            assert v is fresh[[j for j, t in enumerate(inputs) if u is t][0]], i
        else:                                             # weight (cached copy) or a placeholder
            assert v is u or (v.shape, v.stride(), v.dtype) == (u.shape, u.stride(), u.dtype), i


# The decode step and LFM2's short-conv block (fixed-config kernels, through triton_launch.launch).
from models.depthwise import fused as F, triton_decode, triton_short_conv
for i in range(6):
    B, C, K, dt = rng.randint(1, 4), rng.choice([8, 64]), rng.choice([2, 3, 4]), rng.choice([torch.float32, torch.bfloat16])
    w, b = torch.randn(C, 1, K, dtype=dt), (torch.randn(C, dtype=dt) if i % 2 else None)
    if i < 3:
        make = lambda: (torch.randn(B, C, dtype=dt), torch.randn(B, C, K - 1, dtype=dt))
        call = lambda x, s: F.conv1d_decode_step(x, s, w, b)
        table, out_pos = triton_decode._PLANS, 4
    else:
        L = rng.choice([1, 5, 19])
        make = lambda: (torch.randn(B, L, 3 * C, dtype=dt), torch.randn(B, C, K - 1, dtype=dt),
                        torch.rand(B, L) > 0.3)
        call = lambda bcx, s, m: F.short_conv_block(bcx, w, b, s, m)
        table, out_pos = triton_short_conv._PLANS, 5
    first = make()
    call(*first)                          # the Launcher's first (JIT)
    n_planned = len(PLANNED)
    call(*first)                          # direct through the Launcher, which returns the plan
    assert len(PLANNED) == n_planned, i
    n_plans, n_jit, direct = len(table), len(JIT_RUNS), LAUNCHES[-1]
    fresh = make()
    call(*fresh)                          # the plan
    assert PLANNED[n_planned:] == [True], i
    assert len(JIT_RUNS) == n_jit and len(table) == n_plans, i
    inputs = [t.view(torch.uint8) if t.dtype == torch.bool else t for t in first]
    fresh_as_passed = [t.view(torch.uint8) if t.dtype == torch.bool else t for t in fresh]
    same_stateful_launch(direct, LAUNCHES[-1], fresh_as_passed, out_pos, inputs)
print("stateful plans", len(triton_decode._PLANS), len(triton_short_conv._PLANS))

# A misaligned x never replays an aligned call's plan (another binary): a plan of its own.
w = torch.randn(8, 1, 3)
aligned, misaligned = torch.randn(1, 8, 33)[..., :32], torch.randn(8 * 32 + 1)[1:].view(1, 8, 32)
for x in (aligned, aligned, aligned, misaligned, misaligned, misaligned):
    depthwise_conv1d(x, w, padding=1, impl="fused")
before = len(triton_conv1d._PLANS)
depthwise_conv1d(misaligned, w, padding=1, impl="fused")
assert LAUNCHES[-1][9] is misaligned and len(triton_conv1d._PLANS) == before

# weight_layout.as_stored() (the layouts benchmark's other half): a Plan made with the tap-major
# weight copy is not replayed with the weight as stored, which has other strides.
from models.depthwise import weight_layout
w2 = torch.randn(16, 1, 3, 3)
x2 = torch.randn(1, 16, 8, 8).contiguous(memory_format=torch.channels_last)
for _ in range(4):
    depthwise_conv2d(x2, w2, padding=1, impl="fused")
tap_launch = LAUNCHES[-1]
with weight_layout.as_stored():
    for _ in range(4):
        depthwise_conv2d(x2, w2, padding=1, impl="fused")
stored_launch = LAUNCHES[-1]
assert tap_launch[10] is not w2 and tap_launch[10].stride(0) == 1, "the tap-major copy"
assert stored_launch[10] is w2, "as stored: the weight itself"
scalars = lambda a: [u for u in a[13:] if not isinstance(u, torch.Tensor)]
assert scalars(stored_launch) != scalars(tap_launch), "the weight strides passed differ"
for _ in range(2):                        # and back: the tap-major plan again
    depthwise_conv2d(x2, w2, padding=1, impl="fused")
assert LAUNCHES[-1][10] is tap_launch[10] and scalars(LAUNCHES[-1]) == scalars(tap_launch)

# The public ops' call-cache op (fused._PlannedConv) replays the module's Plan itself, past
# dw_conv1d / dw_conv2d, with the launch the module's Plan makes; a switch it keys on (the strip
# kernel) or a misaligned x takes the module's path again.
module_calls = []
for mod, fn_name in ((triton_conv1d, "dw_conv1d"), (triton_conv2d, "dw_conv2d")):
    real = getattr(mod, fn_name)
    setattr(mod, fn_name, lambda *a, real=real, **k: (module_calls.append(real.__name__), real(*a, **k))[1])
x3, w3 = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last), torch.randn(16, 1, 3, 3)
x1d, w1d = torch.randn(2, 8, 20), torch.randn(8, 1, 3)
for call in (lambda x: depthwise_conv2d(x, w3, padding=1, impl="fused"),
             lambda x: depthwise_conv1d(x, w1d, padding="causal", impl="fused")):
    x = x3 if len(module_calls) == 0 else x1d
    for _ in range(4):
        call(x)
    n_module, before = len(module_calls), LAUNCHES[-1]
    fresh = torch.randn_like(x)           # same shape, strides (randn_like keeps the layout), alignment
    out = call(fresh)
    assert len(module_calls) == n_module, "the repeat went through the module"
    same_launch(before, LAUNCHES[-1], fresh, out)
n_module = len(module_calls)
triton_conv2d.STRIPS = not triton_conv2d.STRIPS
depthwise_conv2d(x3, w3, padding=1, impl="fused")
triton_conv2d.STRIPS = not triton_conv2d.STRIPS
assert len(module_calls) == n_module + 1, "a switched kernel must not replay the other's Plan"
n_plans = len(triton_conv2d._PLANS)
triton_conv2d.TWO_ROW_STRIPS = not triton_conv2d.TWO_ROW_STRIPS    # the strip kernel's other tuner
depthwise_conv2d(x3, w3, padding=1, impl="fused")
assert len(module_calls) == n_module + 2, "a switched tuner must not replay the other's Plan"
for _ in range(3):         # (its first launches go through the autotuner, then JITFunction.run)
    depthwise_conv2d(x3, w3, padding=1, impl="fused")
triton_conv2d.TWO_ROW_STRIPS = not triton_conv2d.TWO_ROW_STRIPS
assert len(triton_conv2d._PLANS) == n_plans + 1, "the other tuner's launch keeps a Plan of its own"
n_module = len(module_calls)
triton_vectors.WIDE_HALF = not triton_vectors.WIDE_HALF       # 8- or 4-wide strips in 2-byte dtypes
depthwise_conv2d(x3, w3, padding=1, impl="fused")
depthwise_conv1d(x1d, w1d, padding="causal", impl="fused")
triton_vectors.WIDE_HALF = not triton_vectors.WIDE_HALF
assert len(module_calls) == n_module + 2, "a switched strip width must not replay the other's Plan"
n_module = len(module_calls)
misaligned1d = torch.randn(2 * 8 * 20 + 1)[1:].view(2, 8, 20)
depthwise_conv1d(misaligned1d, w1d, padding="causal", impl="fused")
assert len(module_calls) == n_module + 1, "a misaligned x must not replay an aligned Plan"

# INT_POINTERS (on by default): a Plan's launch hands the launcher each tensor's address, every
# other argument as with the tensors themselves; the output's is the new output's.
def as_addresses(launch):
    return tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in launch)


bcx, s_state, wsc = torch.randn(2, 5, 3 * 8), torch.randn(2, 8, 2), torch.randn(8, 1, 3)
for call, out_pos in ((lambda: depthwise_conv1d(x1d, w1d, padding="causal", impl="fused"), 12),
                      (lambda: depthwise_conv2d(x3, w3, padding=1, impl="fused"), 12),
                      (lambda: F.short_conv_block(bcx, wsc, None, s_state, None), 14)):
    for _ in range(3):
        call()
    with_tensors = LAUNCHES[-1]
    triton_launch.INT_POINTERS = True
    n_planned = len(PLANNED)
    out = call()
    triton_launch.INT_POINTERS = False
    got, want = LAUNCHES[-1], as_addresses(with_tensors)
    assert PLANNED[n_planned:] == [True] and not any(isinstance(a, torch.Tensor) for a in got)
    assert got[out_pos] == out.data_ptr() and got[:out_pos] + got[out_pos + 1:] == want[:out_pos] + want[out_pos + 1:]

# A launch hook set later: plans and Launcher step aside, Triton's own path runs.
from triton import knobs
n_launch, n_jit = len(LAUNCHES), len(JIT_RUNS)
knobs.runtime.launch_enter_hook = lambda metadata: None
depthwise_conv1d(aligned, w, padding=1, impl="fused")
knobs.runtime.launch_enter_hook = None
assert len(LAUNCHES) == n_launch and len(JIT_RUNS) == n_jit + 1

# Off (DWSERVE_TRITON_DIRECT_LAUNCH=0): no plan is looked up or replayed.
triton_launch.ENABLED = False
depthwise_conv1d(aligned, w, padding=1, impl="fused")
assert len(LAUNCHES) == n_launch and len(JIT_RUNS) == n_jit + 2
print("ok")
'''


@pytest.mark.parametrize("seed", [0, 1])
def test_a_plan_replays_the_launchers_own_launch_with_the_new_tensors(seed):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO), str(seed)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-3000:] + proc.stderr[-5000:]
    plans = [int(n) for n in proc.stdout.split("plans", 1)[1].split()[:2]]
    assert sum(plans) >= 12, proc.stdout          # the random cases kept plans (a few may share one)
