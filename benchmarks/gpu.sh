#!/usr/bin/env bash
# The one device call: every GPU number in a single bounded run (benchmarks/gpu.py).
#   bash benchmarks/gpu.sh [extra benchmarks/gpu.py flags]      # e.g. from the repository root
# Writes everything under $OUT (the device tool's result folder; default benchmarks/results)
# plus the full log as $OUT/gpu-run.log. gpu.py budgets itself to ~8 minutes; `timeout` is
# the hard stop under the tool's 10-minute limit: SIGTERM at 560 s (gpu.py then writes its
# summary of what it has), SIGKILL 15 s later. The summary table is the last thing printed.
set -o pipefail
export PYTHONUNBUFFERED=1
root="$(cd "$(dirname "$0")/.." && pwd)" || exit 2
out="${OUT:-$root/benchmarks/results}"
mkdir -p "$out" && out="$(cd "$out" && pwd)" || exit 2   # absolute: we cd to the repo root next
cd "$root" || exit 2
timeout -k 15 560 "${PYTHON:-python3}" benchmarks/gpu.py --out "$out" "$@" 2>&1 | tee "$out/gpu-run.log"
rc=$?
[ "$rc" -eq 124 ] && echo "gpu.sh: timed out after 560 s (see $out/gpu-run.log)"
exit "$rc"
