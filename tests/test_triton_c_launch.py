"""models/depthwise/triton_c_launch.py: a launch goes to the launcher's C function with exactly the
arguments the launcher's own Python __call__ would give it.

On CPU: a real CudaLauncher of the installed Triton (3.9 here; 3.6, the H200's, in a venv of its
own: run this file there too) made without compiling anything, its C function a recorder. The
reference is that class's own __call__, run on the same launcher: what reaches `launch` through
triton_launch._Entry.launch must be the same, argument for argument. On CUDA the direct launch's
tests (test_triton_launch_gpu.py, bit-equal to Triton's own launch) run through it.
"""
from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")
nvidia = pytest.importorskip("triton.backends.nvidia.driver")

from models.depthwise import triton_c_launch, triton_launch  # noqa: E402

TRITON = ".".join(triton.__version__.split(".")[:2])
KNOWN = pytest.mark.skipif(TRITON not in triton_c_launch._LAYOUTS, reason=f"Triton {TRITON}: no known C layout")


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)


def launcher(**fields):
    """A CudaLauncher with the fields its __call__ reads (no kernel compiled), `launch` recorded;
    the fields the C call passes on made distinct, so a swap shows."""
    return triton_c_launch.stand_in(Recorder(), **{"launch_pdl": True, "arg_annotations": ("ann",),
                                                   "kernel_signature": b"sig", **fields})


@pytest.fixture
def no_driver_needed(monkeypatch):
    """3.9's __call__ reads triton.runtime.driver.active first (a CPU host has none): a stand-in."""
    config = triton.runtime.driver
    if hasattr(config, "_active"):
        monkeypatch.setattr(config, "_active", object())
    triton_c_launch._call_style.cache_clear()
    yield
    triton_c_launch._call_style.cache_clear()


def entry_for(run):
    """A triton_launch._Entry around `run`, as the direct path keeps one after a first launch."""
    e = object.__new__(triton_launch._Entry)
    e.run, e.function, e.packed = run, "fn-handle", ("packed", 3)
    e.c = triton_c_launch.layout(run, e.function, e.packed)
    return e


@KNOWN
@pytest.mark.parametrize("c_launch", [True, False], ids=["c-function", "python-call"])
def test_the_c_function_gets_what_the_launchers_own_call_gives_it(no_driver_needed, monkeypatch, c_launch):
    head, rest = (1111, 2222, 3333), (7, 0.5, None, 19)          # a Plan's addresses, then its fixed tail
    reference = launcher()
    reference(5, 6, 1, 99, "fn-handle", ("packed", 3), None, None, None, *head, *rest)   # as JITFunction.run
    run = launcher()
    e = entry_for(run)
    assert e.c is not None and e.c[0] is run.launch
    monkeypatch.setattr(triton_launch, "C_LAUNCH", c_launch)
    e.launch((5, 6, 1), 99, head, rest)
    assert run.launch.calls == reference.launch.calls and len(run.launch.calls) == 1


@KNOWN
@pytest.mark.parametrize("fields", [{"global_scratch_size": 64}, {"profile_scratch_size": 8}],
                         ids=["global-scratch", "profile-scratch"])
def test_a_kernel_with_scratch_memory_keeps_the_launchers_own_call(no_driver_needed, fields):
    """__call__ allocates scratch per launch: nothing to bypass."""
    assert triton_c_launch.layout(launcher(**fields), "fn", ()) is None


def test_unknown_launchers_and_versions_keep_the_launchers_own_call(no_driver_needed, monkeypatch):
    class Other:                     # not a CudaLauncher, though it looks like one
        __call__ = nvidia.CudaLauncher.__call__
    other = object.__new__(Other)
    other.__dict__.update(vars(launcher()))
    assert triton_c_launch.layout(other, "fn", ()) is None
    assert triton_c_launch.layout(print, "fn", ()) is None
    monkeypatch.setattr(triton, "__version__", "3.7.0")          # a layout never read here
    triton_c_launch._call_style.cache_clear()
    assert triton_c_launch.layout(launcher(), "fn", ()) is None


@KNOWN
def test_a_layout_that_does_not_match_the_version_is_refused(no_driver_needed, monkeypatch):
    """3.6's and 3.9's __call__ differ: each version's launcher is checked against its own."""
    other = next(v for v in triton_c_launch._LAYOUTS if v != TRITON)
    monkeypatch.setattr(triton, "__version__", f"{other}.0")
    triton_c_launch._call_style.cache_clear()
    assert triton_c_launch.layout(launcher(), "fn", ()) is None


@pytest.mark.skipif(TRITON != "3.9", reason="GSan instrumentation exists from Triton 3.9")
def test_gsan_instrumented_launchers_keep_their_own_call(no_driver_needed):
    assert triton_c_launch.layout(launcher(gsan_enabled=True), "fn", ()) is None
