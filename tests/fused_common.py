"""Shared by the fused-kernel tests: where they run and their dtype tolerances."""
import pytest
import torch

from models.depthwise import fused

RUNNABLE = fused.available()
needs_fused = pytest.mark.skipif(not RUNNABLE, reason="needs CUDA or TRITON_INTERPRET=1 with triton")
DEV = "cuda" if torch.cuda.is_available() and not fused.interpreting() else "cpu"
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5),
       torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}   # (atol, rtol)
DTYPES = [pytest.param(d, id=str(d).split(".")[1]) for d in TOL]
