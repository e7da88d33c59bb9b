"""torch 2.13's CPU convolutions crash (segfault) in float16 and miscompute some small strided,
dilated, padded shapes in bfloat16; `native` and `per_group` (which call them) run those dtypes
in float32 on CPU (native.run_conv) and must equal the float64 reference. The shapes are the ones
the property test in test_depthwise_ops.py met. Each runs in a subprocess: a crash is a failed
test with its signal, not a lost test run."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CASE = r'''
import sys, torch, torch.nn.functional as F
sys.path.insert(0, sys.argv[1])
from models.depthwise import depthwise_conv1d, depthwise_conv2d
dtype, impl, case = getattr(torch, sys.argv[2]), sys.argv[3], sys.argv[4]
g = torch.Generator().manual_seed(0)
if case == "fp16-crash-2d":        # a segfault in torch's float16 CPU conv
    x, w, kw = torch.randn(1, 1, 6, 1, generator=g), torch.randn(2, 1, 3, 1, generator=g), dict(stride=2, padding=1, dilation=(1, 2))
elif case == "bf16-wrong-2d":      # 57% off in torch's bfloat16 CPU conv
    x, w, kw = torch.randn(1, 1, 3, 1, generator=g), torch.randn(1, 1, 3, 3, generator=g), dict(stride=(1, 2), padding=2, dilation=(1, 2))
else:                              # float16 conv1d, a one-sample row padded both sides: also a segfault
    x, w, kw = torch.randn(2, 1, 1, generator=g), torch.randn(2, 1, 1, generator=g), dict(stride=2, padding=1, dilation=2)
conv, ref_conv = (depthwise_conv2d, F.conv2d) if x.dim() == 4 else (depthwise_conv1d, F.conv1d)
out = conv(x.to(dtype), w.to(dtype), impl=impl, **kw)
ref = ref_conv(x.to(dtype).double(), w.to(dtype).double(), None, groups=x.shape[1], **kw)
assert out.dtype == dtype and out.shape == ref.shape, (out.dtype, out.shape, ref.shape)
err = (out.double() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
assert err < 1e-2, err
print("ok", err)
'''


@pytest.mark.parametrize("impl", ["native", "per_group"])
@pytest.mark.parametrize("dtype, case", [("float16", "fp16-crash-2d"), ("bfloat16", "bf16-wrong-2d"),
                                         ("float16", "fp16-crash-1d")])
def test_cpu_half_convs_run_and_equal_the_reference(impl, dtype, case):
    proc = subprocess.run([sys.executable, "-c", CASE, str(REPO), dtype, impl, case], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), (proc.returncode, proc.stderr[-2000:])
