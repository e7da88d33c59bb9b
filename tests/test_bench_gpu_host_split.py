"""benchmarks/gpu_host_split.py: every part of a launch-bound fused call is found and timed.

On CPU the kept Plan's launch needs a GPU host's launch path: the test runs the split under
benchmarks/host_overhead.stub_launches() (a real CudaLauncher whose C function only counts, a
stand-in driver), in a process of its own without TRITON_INTERPRET (the kernels as
JITFunctions, as on the GPU machine). What the parts measure is the GPU run's to say."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("public fused", "public native", "fused past dispatch", "native past dispatch", "alloc", "launch",
           "launch, launcher __call__", "launch, tensor args")

SCRIPT = """
import json, torch
from benchmarks import gpu_host_split, host_overhead
from benchmarks.ops_suite import SUITE
with host_overhead.stub_launches():
    before = host_overhead._StubCompiled.launches
    rows = [gpu_host_split.split(next(s for s in SUITE if s.name == n), torch.float32, "cpu", 0.2)
            for n in gpu_host_split.SPLIT_NAMES]
    launched = host_overhead._StubCompiled.launches - before
print(json.dumps({"rows": rows, "launched": launched, "table": gpu_host_split.table(rows)}))
"""


def test_every_part_of_the_seed_and_a_batch_1_layer_is_timed():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    assert [r["shape"] for r in rows] == ["seed-c2048", "mbv2-b1-c384@14-cl"]
    for r in rows:
        assert "error" not in r, r
        assert set(r["us"]) == set(COLUMNS), r
        assert all(v > 0 for v in r["us"].values()), r
    # the Plan's launches reached the launcher (each timed sample of four launch parts and the public op)
    assert result["launched"] >= 2 * 5 * 5
    assert all(" - " not in line for line in result["table"][2:])        # every cell filled
