#!/usr/bin/env bash
# The one device call: the CUDA-only tests, then every GPU number in a single bounded run.
#   bash benchmarks/gpu.sh [extra benchmarks/gpu.py flags]      # e.g. from the repository root
# Writes everything into benchmarks/results/local (git-ignored, as gpu.py's --out; the committed
# files are copied by hand, docs/GPU_RUN.md). On the device $OUT is set (the tool's result folder,
# which gives back at most 8 files): the run writes into a scratch folder and packs it into
# $OUT/gpu-results.tar.gz, with copies of gpu-summary-*.md and the logs beside it to read at
# once; packed after the tests and again at exit, so a late kill still returns the tests.
#   gpu-tests-launch.{log,xml}      the direct launch path's CUDA tests (tests/test_triton_launch_gpu.py:
#                                   bit-equal to Triton's launch, misaligned, graph capture); <= 45 s.
#                                   When they fail, again without the launch path's untimed parts
#                                   (tensors, not addresses, to Triton's launcher, through its Python
#                                   call: DWSERVE_TRITON_INT_POINTERS=0 DWSERVE_TRITON_C_LAUNCH=0;
#                                   gpu-tests-launch-tensors.*, <= 45 s); passing, everything below runs
#                                   that way, else with DWSERVE_TRITON_DIRECT_LAUNCH=0 (Triton's own
#                                   launch; the default is on)
#   gpu-tests.log + gpu-tests.xml   pytest -m gpu on the files that need only torch/triton/
#                                   transformers (graph decoding, launch counting, one launch
#                                   per fused call, LFM2 against transformers on CUDA, both fused
#                                   weight layouts and a graph captured over one, continuous
#                                   batching replayed as graphs against eager, LFM3's sliding
#                                   window and LFM2-MoE's all-experts routing in a graph, graph-
#                                   replay timing, the NHWC strip and 2-D tile configs); <= 90 s
#   cache-warm.{log,json}           beside the tests, in the background: Triton's and torch.compile's
#                                   disk caches filled with what gpu.py compiles (gpu_cache_warm.py:
#                                   the prewarm step's kernel variants on 8 threads, the `compiled`
#                                   calls on 4 processes; <= 125 s), so gpu.py loads them
#   gpu-run.log + gpu.py's files    gpu.py budgets itself to 400 s of steps; `timeout` is the hard
#                                   stop: SIGTERM at 440 s (gpu.py then writes its summary of what
#                                   it has), SIGKILL 10 s later
# max(50 + 95, 125) + 450 s stays under the device tool's 600 s per call. When the tests took longer
# (the second launch-test run), gpu.py gets what is left of GPU_SH_LIMIT_S (585 s): its timeout and
# step budgets (--budget-scale) shrink to fit. gpu.py's summary table prints last; the exit status is
# gpu.py's, or 4 added when the CUDA tests failed.
set -o pipefail
export PYTHONUNBUFFERED=1
root="$(cd "$(dirname "$0")/.." && pwd)" || exit 2
dest="${OUT:-}"
if [ -n "$dest" ]; then
    mkdir -p "$dest" && dest="$(cd "$dest" && pwd)" || exit 2
    out="$(mktemp -d "${TMPDIR:-/tmp}/dwserve-gpu.XXXXXX")" || exit 2
else
    out="$root/benchmarks/results/local"
fi
mkdir -p "$out" && out="$(cd "$out" && pwd)" || exit 2   # absolute: we cd to the repo root next
cd "$root" || exit 2
py="${PYTHON:-python3}"

# $OUT's few files: one archive of the whole folder, and the three files to read first beside it.
pack() {
    [ -n "$dest" ] || return 0
    tar -czf "$dest/gpu-results.tar.gz.part" -C "$out" . && mv -f "$dest/gpu-results.tar.gz.part" "$dest/gpu-results.tar.gz"
    for f in "$out"/gpu-summary-*.md "$out/gpu-run.log" "$out/gpu-tests.log" "$out"/gpu-tests-launch*.log; do
        [ -f "$f" ] && cp -f "$f" "$dest/"
    done
    return 0
}
trap pack EXIT

# Background, while the tests below leave most cores idle; waited for before gpu.py starts.
timeout -k 5 120 "$py" benchmarks/gpu_cache_warm.py --budget-s 90 --out "$out" > "$out/cache-warm.log" 2>&1 &
warm_pid=$!

# The direct launch path (models/depthwise/triton_launch.py) is on by default since its CUDA tests
# passed on an H200 (h200-2026-12-04-2): they run first, on every run, and when they do not pass
# the benchmarks below run with it off (Triton's own launch path), as the message says.
# launch_tests NAME: the direct launch's CUDA tests into $out/NAME.{log,xml}; passed when they ran and passed.
launch_tests() {
    timeout -k 5 45 "$py" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" --junitxml "$out/$1.xml" \
        tests/test_triton_launch_gpu.py 2>&1 | tee "$out/$1.log"
    local rc=$?
    [ "$rc" -eq 0 ] && grep -q " passed" "$out/$1.log" && return 0
    echo "gpu.sh: $1 did not pass (exit $rc, or none ran)"
    return 1
}
launch_rc=0
if launch_tests gpu-tests-launch; then
    export DWSERVE_TRITON_DIRECT_LAUNCH=1
    echo "gpu.sh: direct launch tests passed: benchmarks run with DWSERVE_TRITON_DIRECT_LAUNCH=1"
else
    launch_rc=4                 # a failed CUDA test, whatever the second run says
    if DWSERVE_TRITON_INT_POINTERS=0 DWSERVE_TRITON_C_LAUNCH=0 launch_tests gpu-tests-launch-tensors; then
        export DWSERVE_TRITON_DIRECT_LAUNCH=1 DWSERVE_TRITON_INT_POINTERS=0 DWSERVE_TRITON_C_LAUNCH=0
        echo "gpu.sh: direct launch tests passed with tensors to the launcher's Python call: benchmarks run with" \
             "DWSERVE_TRITON_DIRECT_LAUNCH=1 DWSERVE_TRITON_INT_POINTERS=0 DWSERVE_TRITON_C_LAUNCH=0"
    else
        export DWSERVE_TRITON_DIRECT_LAUNCH=0
        echo "gpu.sh: direct launch tests did not pass: benchmarks run with Triton's own launch path"
    fi
fi

timeout -k 5 90 "$py" -m pytest -q -m gpu -p no:cacheprovider -o addopts="" --junitxml "$out/gpu-tests.xml" \
    tests/test_decoding.py tests/test_profiling.py tests/test_fused.py tests/test_lfm2.py tests/test_weight_layout.py \
    tests/test_continuous_graphs.py tests/test_lfm3.py tests/test_lfm2_moe.py tests/test_device_time.py tests/test_conv2d_tiles.py \
    tests/test_graphed.py tests/test_auto_graphed.py tests/test_conv2d_strips.py tests/test_conv2d_nchw_strips.py \
    tests/test_conv1d_strips.py \
    2>&1 | tee "$out/gpu-tests.log"
tests_rc=$?
[ "$launch_rc" -ne 0 ] && [ "$tests_rc" -eq 0 ] && tests_rc=$launch_rc
echo "gpu.sh: CUDA tests exit $tests_rc (log: $out/gpu-tests.log, gpu-tests-launch.log)"
wait "$warm_pid"; tail -n 3 "$out/cache-warm.log"
pack

# gpu.py's share of the call: 440 s, or what is left of GPU_SH_LIMIT_S when the tests ran long,
# its step budgets scaled to match (they total 400 s, 40 s under the timeout).
gpu_s=$(( ${GPU_SH_LIMIT_S:-585} - SECONDS - 10 ))
[ "$gpu_s" -gt 440 ] && gpu_s=440
[ "$gpu_s" -lt 60 ] && gpu_s=60
scale=()
if [ "$gpu_s" -lt 440 ]; then
    scale=(--budget-scale "$(awk -v s="$gpu_s" 'BEGIN { printf "%.3f", (s - 40) / 400 }')")
    echo "gpu.sh: the tests took ${SECONDS} s: gpu.py gets ${gpu_s} s (${scale[*]})"
fi
timeout -k 10 "$gpu_s" "$py" benchmarks/gpu.py --out "$out" "${scale[@]}" "$@" 2>&1 | tee "$out/gpu-run.log"
rc=$?
[ "$rc" -eq 124 ] && echo "gpu.sh: timed out after $gpu_s s (see $out/gpu-run.log)"
[ "$tests_rc" -ne 0 ] && echo "gpu.sh: the CUDA tests failed or timed out (exit $tests_rc): see $out/gpu-tests.log"
if [ "$tests_rc" -ne 0 ] && [ "$rc" -lt 4 ]; then rc=$((rc + 4)); fi
exit "$rc"
