"""models/depthwise/triton_launch.py: past JITFunction.run, straight to the compiled launcher.

CPU tests use a real JITFunction whose `run` is replaced by a recorder returning a stand-in
CompiledKernel (itself recording its launcher calls), so they check what would reach the C
launcher: every parameter in signature order, a new entry per pointer alignment / int value,
and the fallbacks to fn[grid]. GPU tests compare the direct path with Triton's own, bit for bit.
"""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from triton.runtime.jit import JITFunction  # noqa: E402

from models.depthwise import triton_autotune, triton_launch  # noqa: E402


def body(x_ptr, n, sx, BLOCK: tl.constexpr, FLAG: tl.constexpr = 7):   # never compiled here
    pass


class FakeCompiled:
    """What JITFunction.run returns: a CompiledKernel with a launcher that records its calls."""
    function, packed_metadata = "fn-handle", ("packed",)

    def __init__(self):
        self.launches = []

    def run(self, *a):
        self.launches.append(a)


@pytest.fixture
def setup(monkeypatch):
    """A fake driver (device 0, stream 77), JIT runs recorded, TRITON_INTERPRET unset."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_launch, "_DRIVER", [(lambda: 0, lambda device: 77)])
    monkeypatch.setattr(triton_launch, "ENABLED", True)
    compiled, jit_runs = FakeCompiled(), []

    def run(self, *args, grid, warmup, **kwargs):
        jit_runs.append((grid, args, kwargs))
        return compiled
    monkeypatch.setattr(JITFunction, "run", run)
    return compiled, jit_runs


def tuned_kernel():
    """An Autotuner over `body` whose pick (BLOCK=128, 8 warps) is known without timing."""
    configs = [triton.Config({"BLOCK": 128}, num_warps=8)]
    return triton.autotune(configs=configs, key=["n"])(JITFunction(body))


@pytest.mark.parametrize("addresses", [True, False], ids=["int-pointers", "tensors"])
def test_direct_launch_passes_every_parameter_in_signature_order(setup, monkeypatch, addresses):
    """Tensors as their addresses (INT_POINTERS, the default: the launcher neither calls data_ptr()
    nor asks the driver about them) or as themselves."""
    compiled, jit_runs = setup
    monkeypatch.setattr(triton_launch, "INT_POINTERS", addresses)
    tuner, x = tuned_kernel(), torch.zeros(64)
    grid = lambda meta: (triton.cdiv(meta["n"], meta["BLOCK"]), 3)
    for _ in range(4):
        triton_autotune.launch_tuned(tuner, grid, ("k",), x, 300, sx=1)
    # first launch: autotuner (one config: no timing); second: kernel.fn[grid] keeps the binary
    assert len(jit_runs) == 2 and jit_runs[1][2]["num_warps"] == 8
    assert len(compiled.launches) == 2
    for launch in compiled.launches:
        # grid (3, 3, 1), stream, handle, metadata, no launch metadata/hooks, x n sx BLOCK FLAG
        assert launch[:9] == (3, 3, 1, 77, "fn-handle", ("packed",), None, None, None)
        assert (launch[9] == x.data_ptr() and type(launch[9]) is int) if addresses else launch[9] is x
        assert launch[10:] == (300, 1, 128, 7)


def test_a_misaligned_tensor_or_another_int_gets_its_own_binary(setup):
    compiled, jit_runs = setup
    fn = JITFunction(body)
    aligned, misaligned = torch.zeros(65)[:64], torch.zeros(65)[1:]    # 4-byte offset view
    assert aligned.data_ptr() % 16 == 0 and misaligned.data_ptr() % 16 != 0

    def go(x, n):
        triton_launch.launch(fn, (1,), x, n, 1, BLOCK=64)
    go(aligned, 16)
    go(aligned, 16)
    assert len(jit_runs) == 1 and len(compiled.launches) == 1        # second: direct
    go(misaligned, 16)
    assert len(jit_runs) == 2                                        # not the aligned entry
    go(aligned, 17)                                                  # n % 16 != 0: another binary
    assert len(jit_runs) == 3
    go(aligned, 16)
    go(misaligned, 16)
    assert len(jit_runs) == 3 and len(compiled.launches) == 3
    assert compiled.launches[-1][9] == misaligned.data_ptr()


def test_spec_tells_bool_int_and_float_apart_and_keeps_no_tensor():
    x = torch.zeros(4)
    specs = {triton_launch.spec_of((v,), {}) for v in (1, True, 1.0)}
    assert len(specs) == 3

    def leaves(v):
        return [u for w in v for u in leaves(w)] if isinstance(v, tuple) else [v]
    spec = triton_launch.spec_of((x,), {"y": x})
    assert spec is not None and not any(isinstance(v, torch.Tensor) for v in leaves(spec))
    assert triton_launch.spec_of(((1, 2),), {}) is None                  # tuples: Triton's own path


@pytest.mark.parametrize("why", ["interpreter", "hook", "flag off", "no driver", "not a JITFunction"])
def test_falls_back_to_fn_grid(setup, monkeypatch, why):
    compiled, jit_runs = setup
    fn = JITFunction(body)
    if why == "interpreter":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    elif why == "hook":
        from triton import knobs
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda metadata: None)
    elif why == "flag off":
        monkeypatch.setattr(triton_launch, "ENABLED", False)
    elif why == "no driver":
        monkeypatch.setattr(triton_launch, "_DRIVER", [None])
    else:
        class NotJIT:
            pre_run_hooks = []

            def __getitem__(self, grid):
                return lambda *a, **k: jit_runs.append((grid, a, k))
        fn = NotJIT()
    for _ in range(3):
        triton_launch.launch(fn, (2,), torch.zeros(4), 4, 1, BLOCK=64)
    assert len(jit_runs) == 3 and compiled.launches == []


def test_a_launch_that_returns_no_kernel_stays_on_the_jit_path(setup, monkeypatch):
    """benchmarks/host_overhead.py replaces JITFunction.run by a no-op returning None."""
    _, jit_runs = setup
    monkeypatch.setattr(JITFunction, "run", lambda self, *a, grid, warmup, **k: jit_runs.append(1))
    fn = JITFunction(body)
    for _ in range(3):
        triton_launch.launch(fn, (1,), torch.zeros(4), 4, 1, BLOCK=64)
    assert len(jit_runs) == 3


def test_hooks_added_later_take_the_jit_path(setup):
    compiled, jit_runs = setup
    from triton import knobs
    fn = JITFunction(body)
    args = (torch.zeros(4), 4, 1)
    triton_launch.launch(fn, (1,), *args, BLOCK=64)
    triton_launch.launch(fn, (1,), *args, BLOCK=64)
    assert (len(jit_runs), len(compiled.launches)) == (1, 1)
    hook = lambda metadata: None                                     # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        triton_launch.launch(fn, (1,), *args, BLOCK=64)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert (len(jit_runs), len(compiled.launches)) == (2, 1)


@pytest.mark.skipif(not __import__("models.depthwise.fused", fromlist=["x"]).interpreting(),
                    reason="runs the kernels in Triton's interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("direct", [pytest.param(True, id="direct-on"), pytest.param(False, id="direct-off")])
@pytest.mark.parametrize("op", ["conv1d", "conv2d"])
def test_interpreted_fused_ops_still_match_native(monkeypatch, op, direct):
    """Interpreted kernels are no JITFunctions: whatever ENABLED says, they take fn[grid]."""
    from models.depthwise import depthwise_conv1d, depthwise_conv2d
    monkeypatch.setattr(triton_launch, "ENABLED", direct)
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    if op == "conv1d":
        x, w, b = torch.randn(2, 12, 19, generator=g), torch.randn(12, 1, 3, generator=g), torch.randn(12, generator=g)
        f = lambda impl: depthwise_conv1d(x, w, b, padding=1, impl=impl)             # noqa: E731
    else:
        x, w = torch.randn(1, 8, 7, 9, generator=g), torch.randn(8, 1, 3, 3, generator=g)
        b = torch.randn(8, generator=g)
        f = lambda impl: depthwise_conv2d(x, w, b, padding=1, impl=impl)             # noqa: E731
    for _ in range(2):                                                # second call: past the tuner
        torch.testing.assert_close(f("fused"), f("native"), atol=1e-5, rtol=1e-5)


# --- CUDA: the direct path launches the same binary as Triton's own path -------------------


@pytest.mark.parametrize("env, want", [(None, True), ("", True), ("1", True), ("true", True),
                                       ("0", False), ("false", False), (" OFF ", False), ("no", False)])
def test_direct_launch_is_on_by_default_and_env_0_opts_out(env, want):
    """On by default since its CUDA tests passed on an H200 (benchmarks/results/h200-2026-12-04-2/
    gpu-tests-launch.log, 24/24); DWSERVE_TRITON_DIRECT_LAUNCH=0 (false/no/off) turns it off."""
    import os
    import subprocess
    import sys
    environ = {k: v for k, v in os.environ.items() if k != "DWSERVE_TRITON_DIRECT_LAUNCH"}
    if env is not None:
        environ["DWSERVE_TRITON_DIRECT_LAUNCH"] = env
    out = subprocess.run([sys.executable, "-c", "from models.depthwise import triton_launch; print(triton_launch.ENABLED)"],
                         env=environ, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert out == str(want)


def test_grid_helpers_equal_tritons_own():
    """cdiv / next_power_of_2 replace triton's (host-slow in Triton 3.9) in the launch grids:
    the same ints, including 0 and the powers of 2 themselves."""
    values = [*range(0, 300), 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 2**31 - 1, 2**31, 2**40 + 3]
    for n in values:
        assert triton_launch.next_power_of_2(n) == triton.next_power_of_2(n), n
        for block in (1, 2, 16, 32, 64, 128, 256, 1000):
            assert triton_launch.cdiv(n, block) == triton.cdiv(n, block), (n, block)


def test_no_host_launcher_calls_tritons_cdiv_or_next_power_of_2():
    """The kernel modules' host code uses the helpers above (a strip-kernel grid once called
    triton.cdiv three times a launch: ~6 us of a 25 us unplanned call); tl.cdiv in kernels is fine."""
    import re
    from pathlib import Path
    for path in (Path(__file__).resolve().parents[1] / "models" / "depthwise").glob("*.py"):
        assert not re.search(r"\btriton\.(cdiv|next_power_of_2)\(", path.read_text()), path.name


def test_a_full_launcher_starts_over_and_keeps_launching_directly(setup, monkeypatch):
    """Int arguments are keyed by value (lengths vary per request): past MAX_ENTRIES the
    entries are dropped and new ones made, so later calls still go direct, not all JIT."""
    compiled, jit_runs = setup
    monkeypatch.setattr(triton_launch, "MAX_ENTRIES", 4)
    fn, x = JITFunction(body), torch.zeros(64)
    for n in range(10):                    # 10 specs through a 4-entry cache
        triton_launch.launch(fn, (1,), x, n, 1, BLOCK=64)
    launcher = triton_launch._LAUNCHERS[fn]
    assert len(jit_runs) == 10 and 0 < len(launcher.entries) <= 4
    for _ in range(3):                     # the latest spec: direct, every time
        triton_launch.launch(fn, (1,), x, 9, 1, BLOCK=64)
    assert len(jit_runs) == 10 and len(compiled.launches) == 3
    assert [launch[10] for launch in compiled.launches] == [9, 9, 9]
