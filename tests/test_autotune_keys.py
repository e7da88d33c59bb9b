"""The fused kernels' autotune keys (models/depthwise/triton_autotune.py): launch_tuned's key
tuple must determine the key Triton's Autotuner computes (else a launch would reuse a config
picked for another key), and a layer at batch 1 and at batch 32 must tune apart (a launch-bound
and a memory-bound problem want different tiles) while the size class adds no compiled variant."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_common import needs_fused
from models.depthwise import depthwise_conv1d, depthwise_conv2d

pytestmark = needs_fused
REPO = Path(__file__).resolve().parents[1]


def _record(monkeypatch, module, seen: list):
    """Spy on `module.launch_tuned`: (our key, the Autotuner's key values) per launch."""
    real = module.launch_tuned

    def launch_tuned(kernel, grid, key, *args, **kwargs):
        values = {**dict(zip(kernel.fn.arg_names, args)), **kwargs}
        seen.append((key, tuple(values[name] for name in kernel.keys)))
        real(kernel, grid, key, *args, **kwargs)

    monkeypatch.setattr(module, "launch_tuned", launch_tuned)


def test_size_class_is_one_bucket_per_factor_of_four():
    from models.depthwise.triton_autotune import size_class
    assert [size_class(n) for n in (0, 1, 3, 4, 15, 16, 63, 64)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert size_class(32 * 112 * 112) - size_class(14 * 14) == 5        # batch-32 stem vs a late layer


_CHECK_COMPILED_KERNELS = """
from models.depthwise import triton_conv1d, triton_conv2d
for kernel in (triton_conv1d._dw_conv1d_kernel, triton_conv1d._dw_conv1d_strip_tuned, triton_conv2d._dw_conv2d_nchw_kernel,
               triton_conv2d._dw_conv2d_nhwc_kernel, triton_conv2d._dw_conv2d_nhwc_strip_tuned,
               triton_conv2d._dw_conv2d_nhwc_strip_one_row_tuned, triton_conv2d._dw_conv2d_nchw_strip_tuned):
    assert "SIZE_CLASS" in kernel.keys and set(kernel.keys) <= set(kernel.fn.arg_names), kernel.keys
    param = next(p for p in kernel.fn.params if p.name == "SIZE_CLASS")
    assert param.do_not_specialize, "a specialised size class would compile a variant per bucket"
print("ok")
"""


def test_every_autotuned_kernel_keys_on_its_size_class_unspecialised():
    """As compiled for a GPU (not the interpreter, whose functions keep no parameter flags):
    in a subprocess, as TRITON_INTERPRET is read when the kernels are defined."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", _CHECK_COMPILED_KERNELS], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.parametrize("channels_last", [pytest.param(False, id="nchw"), pytest.param(True, id="nhwc")])
def test_conv2d_keys_follow_the_batch_size_class(monkeypatch, channels_last):
    from models.depthwise import triton_conv2d
    seen: list = []
    _record(monkeypatch, triton_conv2d, seen)
    w = torch.randn(8, 1, 3, 3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for batch in (1, 1, 2, 32):
        x = torch.randn(batch, 8, 6, 6).to(memory_format=fmt)
        want = torch.nn.functional.conv2d(x, w, padding=1, groups=8)
        torch.testing.assert_close(depthwise_conv2d(x, w, padding=1, impl="fused"), want)
    ours, theirs = zip(*seen)
    assert len(set(zip(ours, theirs))) == len(set(ours)), "one of our keys maps to two Autotuner keys"
    assert theirs[0] == theirs[1] and theirs[0] != theirs[3]     # batch 1 twice: one key; batch 32 apart


def test_conv1d_keys_follow_the_size_class_of_batch_times_length(monkeypatch):
    from models.depthwise import triton_conv1d
    seen: list = []
    _record(monkeypatch, triton_conv1d, seen)
    w = torch.randn(16, 1, 3)
    for batch, length in ((1, 21), (1, 30), (4, 600)):
        x = torch.randn(batch, 16, length)
        want = torch.nn.functional.conv1d(x, w, padding=2, groups=16)[..., :length]
        torch.testing.assert_close(depthwise_conv1d(x, w, padding="causal", impl="fused"), want)
    ours, theirs = zip(*seen)
    assert len(set(zip(ours, theirs))) == len(set(ours))
    assert theirs[0] == theirs[1] and theirs[0] != theirs[2]     # 21 and 30 positions: one bucket
