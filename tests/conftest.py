"""Test-session setup shared by every test file.

Without CUDA the fused Triton kernels can only run under Triton's interpreter, and
`triton.jit` reads TRITON_INTERPRET when a kernel is *defined*, so it has to be set
before anything imports `models.depthwise`. That is why it is done here, at import.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run on 2-core CI machines: keep torch from oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))
