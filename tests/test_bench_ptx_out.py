"""`dwserve bench ptx --out DIR`: a folder that cannot be created or written is a usage error
(exit 2) before any kernel is compiled, as every other benchmark's --out (cli_args.check_out);
it was found only at the end, when write_results failed after compiling every case.

Runs in a subprocess: importing benchmarks/ptx.py unsets TRITON_INTERPRET (it compiles real
kernels), which in this process would turn the fused impl off for every later test."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[1]

# run_case is replaced so that compiling any case ends the process with a message, not exit 2.
PROBE = """
import sys
from benchmarks import ptx
ptx.run_case = lambda case: sys.exit("compiled " + case.name)
ptx.main(["--out", sys.argv[1]])
"""


def test_uncreatable_out_is_a_usage_error_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(blocker / "results")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2 and "compiled" not in proc.stderr, proc.stderr[-2000:]
    assert "dwserve bench ptx: error: --out" in err and "writable folder" in err, err
