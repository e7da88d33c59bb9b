"""models/depthwise/triton_launch.py on CUDA: the direct launch, and the call sites' Plans that
replay it, give Triton's own launch's outputs bit for bit (same binary), on misaligned
inputs too, and CUDA graphs capture them.

Run by benchmarks/gpu.sh first, on its own: when these pass, gpu.sh turns the direct path on
(DWSERVE_TRITON_DIRECT_LAUNCH=1) for its benchmarks. Each autotuner is cut to its first config
here, so a case compiles one variant per specialization, not six (the test is about the launch,
not the tuning), which keeps the file inside gpu.sh's 40 s.
"""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

from models.depthwise import triton_launch  # noqa: E402


@pytest.fixture(autouse=True)
def _one_config_per_autotuner(monkeypatch):
    """Every fused conv autotuner keeps its first config only: one compile per variant."""
    from models.depthwise import triton_conv1d, triton_conv2d
    for module in (triton_conv1d, triton_conv2d):
        for name, obj in vars(module).items():
            if isinstance(obj, Autotuner):
                monkeypatch.setattr(obj, "configs", obj.configs[:1])


def _cuda_ready() -> bool:
    from models.depthwise import fused
    return torch.cuda.is_available() and not fused.interpreting()


needs_cuda = pytest.mark.skipif(not _cuda_ready(), reason="needs CUDA (and TRITON_INTERPRET unset)")
KERNELS = ["conv1d-ncl", "conv1d-ncl-strips", "conv1d-blc", "short-conv", "conv2d-nchw", "conv2d-nchw-strips",
           "conv2d-nhwc", "decode"]


def _case(name, dtype, g):
    """(inputs, fn(*inputs) -> tuple of outputs incl. in-place state). Fresh random inputs."""
    from models.depthwise import depthwise_conv1d, depthwise_conv2d, fused
    r = lambda *s: torch.randn(*s, generator=g, device="cuda").to(dtype)         # noqa: E731
    if name.startswith("conv1d-ncl"):       # L 37: the generic conv1d kernel; L 40: the conv1d strip kernel
        x = r(2, 64, 40 if name.endswith("strips") else 37)
        return (x, r(64, 1, 3), r(64)), lambda x, w, b: (depthwise_conv1d(x, w, b, padding=1, impl="fused"),)
    if name == "conv1d-blc":
        return ((r(2, 37, 64).transpose(1, 2), r(64, 1, 3), r(64)),
                lambda x, w, b: (depthwise_conv1d(x, w, b, padding="causal", impl="fused"),))
    if name == "short-conv":
        return ((r(2, 37, 192), r(64, 1, 3), r(64), r(2, 64, 2)),
                lambda bcx, w, b, s: (fused.short_conv_block(bcx, w, b, s), s))
    if name.startswith("conv2d-nchw"):      # W 11: the generic NCHW kernel; W 16: the NCHW strip kernel
        x = r(2, 32, 9, 16 if name.endswith("strips") else 11)
        return (x, r(32, 1, 3, 3), r(32)), lambda x, w, b: (depthwise_conv2d(x, w, b, padding=1, impl="fused"),)
    if name == "conv2d-nhwc":
        return ((r(2, 32, 9, 11).contiguous(memory_format=torch.channels_last), r(32, 1, 3, 3), r(32)),
                lambda x, w, b: (depthwise_conv2d(x, w, b, padding=1, impl="fused"),))
    return (r(2, 64), r(2, 64, 2), r(64, 1, 3), r(64)), lambda x, s, w, b: (fused.conv1d_decode_step(x, s, w, b), s)


def _misaligned(t):
    """t's values and strides at a data_ptr one element past a 16-byte boundary."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    v = buf[1:].as_strided(t.shape, t.stride())
    v.copy_(t)
    assert v.data_ptr() % 16 != 0
    return v


def _run(fn, inputs, direct, monkeypatch):
    monkeypatch.setattr(triton_launch, "ENABLED", direct)
    inputs = [t.clone() if t.dim() == 3 and t.shape[-1] == 2 else t for t in inputs]   # states: fresh copies
    return [o.clone() for o in fn(*inputs)]


# Every kernel in both dtypes, and misaligned (a new specialization) in float32.
EQUALITY_CASES = [pytest.param(name, dtype, aligned, id=f"{name}-{str(dtype)[6:]}-{'aligned' if aligned else 'misaligned'}")
                  for name in KERNELS for dtype, aligned in ((torch.float32, True), (torch.bfloat16, True),
                                                             (torch.float32, False))]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name, dtype, aligned", EQUALITY_CASES)
def test_direct_path_equals_the_jit_path_exactly(monkeypatch, name, dtype, aligned):
    g = torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)
    inputs, fn = _case(name, dtype, g)
    if not aligned:
        inputs = tuple(_misaligned(t) for t in inputs)
    want = _run(fn, inputs, False, monkeypatch)
    jit_runs = []
    real_run = JITFunction.run
    monkeypatch.setattr(JITFunction, "run", lambda self, *a, **k: jit_runs.append(1) or real_run(self, *a, **k))
    _run(fn, inputs, True, monkeypatch)                       # keeps the binary (one JIT launch)
    n = len(jit_runs)
    got = _run(fn, inputs, True, monkeypatch)                 # direct, through the Launcher
    assert len(jit_runs) == n, "the second direct call went through JITFunction.run"
    plans = []
    real_launch = triton_launch.Plan.launch
    monkeypatch.setattr(triton_launch.Plan, "launch", lambda self, *a: plans.append(1) or real_launch(self, *a))
    replayed = _run(fn, inputs, True, monkeypatch)            # the call site's Plan
    assert len(jit_runs) == n and len(plans) == 1
    for a, b, c in zip(got, replayed, want):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32], ids=["float32"])
@pytest.mark.parametrize("name", KERNELS)
def test_direct_launches_are_captured_by_cuda_graphs(monkeypatch, name, dtype):
    g = torch.Generator(device="cuda").manual_seed(torch.seed() % 2**31)
    static, fn = _case(name, dtype, g)
    monkeypatch.setattr(triton_launch, "ENABLED", True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):              # tune, compile and keep the binary, keep a Plan
            fn(*[t.clone() for t in static])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = fn(*static)
    fresh, _ = _case(name, dtype, g)
    for s, f in zip(static, fresh):
        s.copy_(f)
    graph.replay()
    torch.cuda.synchronize()
    want = _run(fn, fresh, False, monkeypatch)
    for a, b in zip(outs, want):
        assert torch.equal(a, b)
