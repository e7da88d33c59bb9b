"""benchmarks/gpu.sh on the device: $OUT gives back at most 8 files, and a run writes ~20.

gpu.sh writes into a scratch folder and packs it into $OUT/gpu-results.tar.gz, with the summary
and the two logs beside it. Run here with a stand-in python (PYTHON=...) that writes as many
files as gpu.py does, so the packing itself is what is checked, not the benchmarks."""
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICE_FILE_LIMIT = 8   # the device tool's files back from $OUT

# Stands in for python3: `-m pytest ... --junitxml X`, `benchmarks/gpu_cache_warm.py --out D` and
# `benchmarks/gpu.py --out D` write what the real ones write (names as gpu.py's docstring lists
# them); the direct launch tests exit with $FAKE_LAUNCH_RC, or $FAKE_LAUNCH_TENSORS_RC when run with
# DWSERVE_TRITON_INT_POINTERS=0 DWSERVE_TRITON_C_LAUNCH=0, the other tests after $FAKE_TESTS_S seconds; gpu.py exits with
# $FAKE_GPU_RC and prints its arguments and launch switches.
FAKE_PYTHON = r'''#!/usr/bin/env bash
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --junitxml) echo '<testsuite/>' > "${args[$((i + 1))]}"
                    if [[ "${args[*]}" == *test_triton_launch_gpu.py* ]]; then
                        launch_rc="${FAKE_LAUNCH_RC:-0}"
                        [ "${DWSERVE_TRITON_INT_POINTERS:-1}${DWSERVE_TRITON_C_LAUNCH:-1}" = 00 ] && launch_rc="${FAKE_LAUNCH_TENSORS_RC:-0}"
                        [ "$launch_rc" = 0 ] && echo "24 passed" || echo "1 failed, 23 passed"
                        exit "$launch_rc"
                    fi
                    sleep "${FAKE_TESTS_S:-0}"; echo "12 passed"; exit 0 ;;
        --out) out="${args[$((i + 1))]}" ;;
    esac
done
[ -n "$out" ] || { echo "fake python: no --out" >&2; exit 9; }
if [[ "${args[*]}" == *gpu_cache_warm.py* ]]; then
    echo "{}" > "$out/cache-warm.json"; echo "cache-warm: Triton 600/600, torch.compile 65/65"; exit 0
fi
for name in correctness-h200.json correctness-h200.md copy-h200.json \
            ops-h200.json ops-h200.md ops-h200.png ops-h200-bfloat16.json ops-h200-bfloat16.md \
            ops-h200-bfloat16.png models-h200.json models-h200.md models-h200.png decode-h200.json \
            decode-h200.md layouts-h200.json layouts-h200.md gpu-summary-h200.json; do
    echo "$name" > "$out/$name"
done
[ "${FAKE_GPU_SUMMARY:-1}" = 1 ] && echo "summary" > "$out/gpu-summary-h200.md"
echo "direct launch: ${DWSERVE_TRITON_DIRECT_LAUNCH:-unset}, int pointers: ${DWSERVE_TRITON_INT_POINTERS:-unset}, c launch: ${DWSERVE_TRITON_C_LAUNCH:-unset}"
echo "gpu.py args: ${args[*]}"
echo "summary table"
exit "${FAKE_GPU_RC:-0}"
'''


def _run(tmp_path, **env):
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "OUT"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "OUT": str(out), "PYTHON": str(fake), "TMPDIR": str(scratch), **env})
    return proc, out


def _packed(out):
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        return {Path(n).name for n in tar.getnames() if n not in (".", "./")}


def test_a_device_run_comes_back_as_one_archive_and_three_files_to_read(tmp_path):
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    back = sorted(p.name for p in out.iterdir())
    assert back == ["gpu-results.tar.gz", "gpu-run.log", "gpu-summary-h200.md", "gpu-tests-launch.log",
                    "gpu-tests.log"]
    assert len(back) <= DEVICE_FILE_LIMIT
    packed = _packed(out)
    assert {"ops-h200-bfloat16.png", "layouts-h200.md", "gpu-summary-h200.json", "gpu-tests.xml",
            "gpu-tests-launch.xml", "gpu-run.log", "gpu-tests.log", "cache-warm.json",
            "cache-warm.log"} <= packed and len(packed) == 25
    run_log = (out / "gpu-run.log").read_text()
    assert "summary table" in run_log and "direct launch: 1, int pointers: unset, c launch: unset" in run_log
    assert "--budget-scale" not in run_log                            # the tests were quick: gpu.py's own budgets


def test_the_benchmarks_take_tritons_launch_path_when_the_direct_launch_tests_fail(tmp_path):
    """The direct launch is on by default: its tests failing twice (addresses, then tensors to the
    launcher) turns it off for the benchmarks."""
    proc, out = _run(tmp_path, FAKE_LAUNCH_RC="1", FAKE_LAUNCH_TENSORS_RC="1")
    assert proc.returncode == 4 + 0, proc.stdout + proc.stderr       # the CUDA tests failed: + 4
    assert "direct launch: 0" in (out / "gpu-run.log").read_text()
    assert {"gpu-tests-launch.log", "gpu-tests-launch-tensors.log"} <= {p.name for p in out.iterdir()}


def test_the_direct_launch_stays_on_without_its_untimed_parts_when_only_they_fail(tmp_path):
    """Tensors (not addresses) to the launcher, through its Python call: the path as first measured."""
    proc, out = _run(tmp_path, FAKE_LAUNCH_RC="1", FAKE_LAUNCH_TENSORS_RC="0")
    assert proc.returncode == 4 + 0, proc.stdout + proc.stderr       # a CUDA test failed all the same
    assert "direct launch: 1, int pointers: 0, c launch: 0" in (out / "gpu-run.log").read_text()
    assert "gpu-tests-launch-tensors.xml" in _packed(out)


def test_gpu_py_gets_what_is_left_of_the_call_when_the_tests_ran_long(tmp_path):
    """Tests that took 3 s of a 300 s call leave gpu.py 300 - 3 - 10 = 287 s: its step budgets
    (400 s with 40 s to spare under the timeout) scaled by (287 - 40) / 400."""
    proc, out = _run(tmp_path, GPU_SH_LIMIT_S="300", FAKE_TESTS_S="3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = next(line for line in (out / "gpu-run.log").read_text().splitlines() if line.startswith("gpu.py args:"))
    scale = float(args.split("--budget-scale ")[1].split()[0])
    assert 0.6 < scale < 0.625, args                   # 287 or 286 s left: 0.6175 or 0.615
    assert "gpu.py gets" in proc.stdout


@pytest.mark.parametrize("rc", [2, 3])
def test_the_exit_status_survives_the_packing_and_a_partial_run_is_still_packed(tmp_path, rc):
    proc, out = _run(tmp_path, FAKE_GPU_RC=str(rc), FAKE_GPU_SUMMARY="0")
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu-results.tar.gz", "gpu-run.log", "gpu-tests-launch.log",
                                                     "gpu-tests.log"]
    assert "decode-h200.json" in _packed(out)

