"""The fused impl's per-call checks: where they run and what decides them. The public conv ops
check devices and dtypes once per call signature (dispatch's call cache holds fused.cached_op's
op); CUDA tensors are checked against the mode the kernel module was defined in, not the
environment at the call."""
from __future__ import annotations

import pytest
import torch

from fused_common import needs_fused
from models.depthwise import fused
from test_fused import _run_isolated, check, rand, ref_conv1d, ref_conv2d

pytestmark = pytest.mark.fused


@needs_fused
def test_the_public_ops_check_fused_devices_once_per_call_signature(monkeypatch):
    """dispatch's call cache keeps fused.cached_op's op, checked once: a repeated call (same
    shapes, dtypes, devices, arguments) skips fused._kernels, a new signature checks again,
    and every result still equals the dense reference on fresh random inputs."""
    from models.depthwise import depthwise_conv1d, depthwise_conv2d
    from models.depthwise.dispatch import clear_caches
    checks = []
    real = fused._kernels
    monkeypatch.setattr(fused, "_kernels", lambda name, *t, **kw: checks.append(name) or real(name, *t, **kw))
    clear_caches()
    gen = torch.Generator().manual_seed(11)
    for L in (19, 19, 19, 23, 23):
        x, w, b = rand(2, 6, L, gen=gen), rand(6, 1, 3, gen=gen), rand(6, gen=gen)
        check(depthwise_conv1d(x, w, b, padding=1, impl="fused"), ref_conv1d(x, w, b, 1, (1, 1), 1), torch.float32)
    assert checks == ["triton_conv1d"] * 2, checks
    for _ in range(3):
        x, w = rand(1, 4, 9, 9, gen=gen), rand(4, 1, 3, 3, gen=gen)
        check(depthwise_conv2d(x, w, padding=1, impl="fused"), ref_conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1)),
              torch.float32)
    assert checks == ["triton_conv1d"] * 2 + ["triton_conv2d"], checks


MODE_SCRIPT = """
    import os, torch
    from models.depthwise import fused

    class CudaLike:          # the attributes fused's check reads, as a CUDA tensor has them
        is_cuda, dtype, shape, device = True, torch.float32, (1, 4, 8), torch.device("cuda")

        def numel(self):
            return 32

    def verdict(*tensors):
        try:
            fused._kernels("triton_conv1d", *tensors)
        except RuntimeError as e:
            return ("refused" if "CPU tensors only" in str(e) else "cpu-error" if str(e) == fused.CPU_ERROR
                    else f"other: {{e}}")
        return "ok"

    interp = {interp}
    if interp:
        os.environ["TRITON_INTERPRET"] = "1"
    first = verdict(torch.randn(1, 4, 8)) if interp else verdict(CudaLike())   # imports the kernels
    os.environ["TRITON_INTERPRET"] = "0" if interp else "1"                    # flipped afterwards
    print(first, verdict(CudaLike()), verdict(torch.randn(1, 4, 8), CudaLike()))
"""


@pytest.mark.parametrize("interp, want", [pytest.param(True, "ok refused cpu-error", id="imported-interpreted"),
                                          pytest.param(False, "ok ok ok", id="imported-compiled")])
def test_cuda_tensors_are_checked_against_the_kernels_mode_not_the_environment_now(interp, want):
    """A CUDA tensor may run unless the kernel module was defined under TRITON_INTERPRET=1
    (its kernels then run on host memory only): the mode at import decides, not the environment
    at the call, so the hot path reads no environment variable. CPU tensors (tests only) ask the
    environment at the call: after the flip they pass in the compiled case and are refused in
    the interpreted one (mixed devices never get here: spec.py refuses them first)."""
    pytest.importorskip("triton")
    proc = _run_isolated(MODE_SCRIPT.format(interp=interp))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == want.split(), proc.stdout

