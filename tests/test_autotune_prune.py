"""triton_autotune.big_layer_configs: the 8-warp long-tile (and two-row strip) configs of the conv kernels are tuned
(and prewarmed) only on big layers; launch-bound ones keep the base set. The real kernels'
wiring is checked in a subprocess (their configs exist only with TRITON_INTERPRET unset)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from models.depthwise import triton_autotune  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_big_configs_only_for_layers_over_the_threshold():
    base, big = [object() for _ in range(3)], [object(), object()]
    prune = triton_autotune.big_layer_configs(big)
    limit = triton_autotune.BIG_LAYER_MIN_OUTPUTS
    small = prune(base + big, {"C_OUT": 2048, "SIZE_CLASS": 2}, BLOCK=1)          # the seed: 2048 x 16
    large = prune(base + big, {"C_OUT": limit // 4 ** 6, "SIZE_CLASS": 6})        # exactly the threshold
    assert small == base and large == base + big
    assert prune(big, {"C_OUT": 1, "SIZE_CLASS": 0}) == big                         # never empty


def test_tall_strips_have_their_own_threshold_and_four_rows_only_at_stride_1():
    rows, tall = triton_autotune.tall_strip_rows, triton_autotune.TALL_STRIP_MIN_OUTPUTS
    big = triton_autotune.BIG_LAYER_MIN_OUTPUTS
    assert tall < big
    assert rows(tall // 4 ** 5, 5, 1) == (2, 4) and rows(tall // 4 ** 5 - 1, 5, 1) == ()
    assert rows(tall // 4 ** 5, 5, 2) == () and rows(big // 4 ** 6, 6, 2) == (2,)
    one, two, four = ({"ROWS": r} for r in (1, 2, 4))
    configs = [type("C", (), {"kwargs": k})() for k in (one, two, four)]
    prune = triton_autotune.tall_strip_configs(configs[1:])
    assert prune(configs, {"C_OUT": tall, "SIZE_CLASS": 0}, SH=1) == configs
    assert prune(configs, {"C_OUT": big, "SIZE_CLASS": 0}, SH=2) == configs[:2]
    assert prune(configs, {"C_OUT": 8, "SIZE_CLASS": 0}, SH=1) == configs[:1]
    assert prune(configs[1:], {"C_OUT": 8, "SIZE_CLASS": 0}, SH=1) == configs[1:]     # never empty


def test_time_inner_only_configs_are_dropped_on_channels_inner_launches():
    base, big, narrow = [object()], [object()], [object()]
    prune = triton_autotune.big_layer_configs(big + narrow, narrow)
    huge = {"C_OUT": triton_autotune.BIG_LAYER_MIN_OUTPUTS, "SIZE_CLASS": 1}
    assert prune(base + big + narrow, huge, X_CHANNELS_INNER=False) == base + big + narrow
    assert prune(base + big + narrow, huge, X_CHANNELS_INNER=True) == base + big
    assert prune(base + big + narrow, {"C_OUT": 8, "SIZE_CLASS": 1}, X_CHANNELS_INNER=False) == base
    assert prune(narrow, huge, X_CHANNELS_INNER=True) == narrow                      # never empty


SCRIPT = r"""
import json, os, sys
os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, sys.argv[1])
from models.depthwise import triton_conv1d, triton_conv2d
out = {}
for name, kernel, big in [("conv1d", triton_conv1d._dw_conv1d_kernel, triton_conv1d._BIG),
                          ("nhwc", triton_conv2d._dw_conv2d_nhwc_kernel, triton_conv2d._NHWC_BIG),
                          ("strips", triton_conv2d._dw_conv2d_nhwc_strip_tuned, triton_conv2d._STRIP_BIG)]:
    n = lambda c_out, size: len(kernel.early_config_prune(kernel.configs, {"C_OUT": c_out, "SIZE_CLASS": size}))
    out[name] = [len(kernel.configs), len(big), n(2048, 2), n(4096, 6)]
one_row = triton_conv2d._dw_conv2d_nhwc_strip_one_row_tuned.configs
out["strips_one_row"] = [len(one_row), sorted({c.kwargs["ROWS"] for c in one_row})]
strips = triton_conv2d._dw_conv2d_nhwc_strip_tuned
rows = lambda c_out, size, sh: sorted({c.kwargs["ROWS"] for c in strips.early_config_prune(
    strips.configs, {"C_OUT": c_out, "SIZE_CLASS": size}, SH=sh)})
out["strip_rows"] = [rows(32, 8, 1), rows(32, 8, 2), rows(96, 9, 2), rows(960, 5, 1)]
print(json.dumps(out))
"""


def test_the_conv_kernels_prune_their_big_configs_on_small_layers():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got_one_row, got_rows = got.pop("strips_one_row"), got.pop("strip_rows")
    # conv1d: 11 configs, 5 of them big; NHWC conv2d: 10, 4 big (2 of them 2-D pixel tiles); the
    # strip kernel: 15, the 4 two-row and 2 four-row strips tall. A seed-sized layer (2048 x 16
    # outputs) tunes the base set, a layer of 4096 x 4**6 all (stride 1).
    assert got == {"conv1d": [11, 5, 6, 11], "nhwc": [10, 4, 6, 10], "strips": [15, 6, 9, 15]}, got
    assert got_one_row == [9, [1]], got_one_row      # TWO_ROW_STRIPS off: the 1-row configs only
    # b8 c32@112 (32 x 4**8 = 2**21 outputs): 2- and 4-row strips at stride 1, none at stride 2;
    # b32 c96@112-s2 (96 x 4**9): 2-row only (stride 2); b32 c960@7 (960 x 4**5 < 2**20): none.
    assert got_rows == [[1, 2, 4], [1], [1, 2], [1]], got_rows
