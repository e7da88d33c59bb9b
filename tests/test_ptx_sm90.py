"""The fused kernels compile for the H200 (sm_90) with no GPU, without spills, and the
channels-inner layouts use 16-byte global accesses (benchmarks/ptx.py, benchmarks/triton_aot.py).

The compile runs in a subprocess: this process runs Triton's interpreter (TRITON_INTERPRET=1,
tests/conftest.py), under which the kernels are interpreted functions with nothing to compile.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
from benchmarks import triton_aot  # noqa: E402  (no side effects: compiles nothing on import)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """benchmarks/ptx.py --check over every case, with the kernels compiled for real (~30 s)."""
    out = tmp_path_factory.mktemp("ptx")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ptx.py"), "--check", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    files = sorted(out.glob("ptx-sm90-triton*.json"))
    assert files, f"no report written (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(files[0].read_text())
    result["returncode"], result["stdout"] = proc.returncode, proc.stdout
    assert (out / files[0].name.replace(".json", ".md")).is_file()
    return result


def _case(report, name):
    return next(c for c in report["cases"] if c["name"] == name)


def test_every_config_of_every_kernel_compiles_for_sm90_without_spills(report):
    assert report["returncode"] == 0, report["stdout"][-3000:]
    assert report["target"] == "sm_90"
    kernels = {c["kernel"] for c in report["cases"]}
    assert kernels == {"_dw_conv1d_kernel", "_dw_conv2d_nchw_kernel", "_dw_conv2d_nhwc_kernel",
                       "_dw_conv2d_nhwc_strip_tuned", "_dw_conv2d_nchw_strip_tuned", "_dw_conv1d_strip_tuned",
                       "_dw_decode_kernel", "_short_conv_kernel"}
    for case in report["cases"]:
        assert case["problems"] == [], case["name"]
        # Autotuned kernels: one compile per GPU config (the interpreter's single config is not it).
        assert len(case["configs"]) >= (6 if "conv1d_kernel" in case["kernel"] or "conv2d" in case["kernel"] else 1)
        for c in case["configs"]:
            assert c["regs"] > 0 and c["local"] == 0 and 0 < c["warps_per_sm"] <= 64, (case["name"], c)


@pytest.mark.parametrize("name", ["lfm2-prefill-1x512x1024-blc-bf16", "mbv2-8x96@112-s2-nhwc-f32",
                                  "mbv2-8x144@56-nhwc-f16", "mbv2-32x384@14-nhwc-bf16",
                                  "mbv2-8x144@56-nhwc-f32-strips", "mbv2-8x96@112-s2-nhwc-f32-strips",
                                  "short-conv-1x512x1024-k3-bf16"])
def test_channels_inner_layouts_use_16_byte_loads_and_stores(report, name):
    """Every config the autotuner tries on the launch (its early_config_prune keeps it: `tuned`)."""
    case = _case(report, name)
    assert case["vector"]
    for c in case["configs"]:
        if c["tuned"]:
            assert triton_aot.widest(c["loads"]) == 16 and triton_aot.widest(c["stores"]) == 16, (name, c)


def test_the_narrow_conv1d_tiles_are_pruned_where_channels_are_inner(report):
    """The 1-2 channel conv1d tiles (for long unit-stride time rows) never run on a (B, L, C) view,
    where they load 2 bytes at a time: the prune drops them there (and on small layers)."""
    blc = _case(report, "lfm2-prefill-1x512x1024-blc-bf16")["configs"]
    narrow = [c for c in blc if c["blocks"]["BLOCK_C"] <= 2]
    assert len(narrow) == 3 and not any(c["tuned"] for c in narrow)
    assert all(triton_aot.widest(c["loads"]) < 16 for c in narrow)     # what the prune spares it


def test_the_strip_kernel_loads_each_shared_input_column_once(report):
    """Per input row, a thread of the strip kernel loads the input columns its 4 outputs span once:
    6 at stride 1, 9 at stride 2, times the 16-byte vectors it holds per column tile (v: float32,
    4 channels a vector), over the 3 input rows of a 1-row strip, 3 + (ROWS - 1) x stride of a taller
    one (ROWS=2: 4 / 5, its rows share 2 / 1 of them; ROWS=4: 6 / 9); the rest are the 9 taps' weights
    and the bias, loaded once whatever ROWS. The per-pixel kernel's 9 loads per output would be
    36 v at stride 1. In bf16, only 8- and 16-byte accesses."""
    for name, columns, stride in (("mbv2-8x144@56-nhwc-f32-strips", 6, 1), ("mbv2-8x96@112-s2-nhwc-f32-strips", 9, 2)):
        rows_seen = set()
        for c in _case(report, name)["configs"]:
            v = c["blocks"]["BLOCK_Q"] * c["blocks"]["BLOCK_C"] // (32 * c["num_warps"] * 4)
            rows = c["blocks"].get("ROWS", 1)
            rows_in = 3 + (rows - 1) * stride
            loads16 = int({int(b): n for b, n in c["loads"].items()}.get(16, 0))
            assert rows_in * columns * v <= loads16 <= rows_in * columns * v + 10, (name, c)
            rows_seen.add(rows)
        assert rows_seen == {1, 2, 4}, name
    for c in _case(report, "mbv2-32x384@14-nhwc-bf16-strips")["configs"]:
        assert {int(b) for b in c["loads"]} <= {2, 8, 16} and {int(b) for b in c["stores"]} <= {8, 16}, c


def test_the_nchw_strip_kernel_loads_its_rows_as_aligned_vectors(report):
    """Per tap row, a thread of the NCHW strip kernel loads the 3 aligned 16-byte vectors covering
    the columns its strip reads (stride 1 and 2 alike; v strips a thread, float32) and nothing
    else of x; its other loads are the 9 taps' weights and the bias (for each channel it holds). The
    generic kernel it replaces issues 34 4-byte loads a strip (mbv2-8x96@112-nchw-f32). No
    shared memory: the taps are picked in registers."""
    generic = _case(report, "mbv2-8x96@112-nchw-f32")["configs"]
    assert all(c["loads"].get("4", 0) >= 22 for c in generic), generic
    for name, bias in (("mbv2-8x144@56-nchw-f32-strips", 1), ("mbv2-8x96@112-s2-nchw-f32-strips", 0)):
        for c in _case(report, name)["configs"]:
            v = c["blocks"]["BLOCK_C"] * c["blocks"]["BLOCK_G"] // (32 * c["num_warps"])     # strips a thread
            # (a thread holding 4 channels may load their bias as one 16-byte vector)
            assert 3 * 3 * v <= c["loads"]["16"] <= 3 * 3 * v + bias and c["stores"] == {"16": v}, (name, c)
            others = sum(n for b, n in c["loads"].items() if b != "16")     # weights, bias (per channel held)
            assert 9 <= others <= (9 + bias) * v and c["smem"] == 0, (name, c)


def test_the_conv1d_strip_kernel_loads_a_strips_inputs_as_aligned_vectors(report):
    """A strip's inputs (4 outputs, K taps) come from the 16-byte vectors covering them: 2 at K=4
    causal, 3 at K=7 (v strips a thread, float32); its only 4-byte loads are the K taps' weights,
    loaded once per channel the thread holds whatever the vectors. The generic kernel on the K=4 row: 11 loads a strip."""
    generic = _case(report, "shortconv-1x4096x4096-k4-f32")["configs"]
    assert all(sum(c["loads"].values()) >= 11 * c["blocks"]["BLOCK_C"] * c["blocks"]["BLOCK_L"] // (128 * c["num_warps"])
               for c in generic), generic
    for name, vectors, K in (("shortconv-1x4096x4096-k4-f32-strips", 2, 4), ("lfm3-8x2048x512-k7-f32-strips", 3, 7)):
        for c in _case(report, name)["configs"]:
            v = c["blocks"]["BLOCK_C"] * c["blocks"]["BLOCK_G"] // (32 * c["num_warps"])     # strips a thread
            # (the K taps' weights once per channel a thread holds: 1 or 2 of its v strips' channels)
            assert c["loads"]["16"] == vectors * v and c["stores"] == {"16": v}, (name, c)
            assert set(c["loads"]) == {"4", "16"} and K <= c["loads"]["4"] <= K * v, (name, c)
            assert c["smem"] == 0 and c["local"] == 0, (name, c)


def test_time_unit_stride_conv1d_loads_its_aligned_taps_16_bytes_at_a_time(report):
    """(B, C, L) with L unit-stride, causal K=3: the taps are shifted -2, -1, 0 and the shift is a
    compile-time constant (PAD_LEFT constexpr), so the unshifted tap is provably 16-byte aligned
    and loads 4 floats per instruction (a runtime pad had every tap at 4 bytes: 60 loads a thread, now 40)."""
    case = _case(report, "conv1d-8x1024x4096-k3-f32")
    for c in case["configs"]:
        per_thread = c["blocks"]["BLOCK_C"] * c["blocks"]["BLOCK_L"] // (32 * c["num_warps"])   # floats a tap
        assert c["loads"].get("16", 0) * 4 >= per_thread, c        # one whole tap, 4 floats a load


def test_launchers_pass_tap_major_weights_to_the_channels_inner_kernels(report):
    """The served NHWC case loads each tap's weights for many channels at once; the same launch
    with the weight as stored needs a load per channel per tap (72 2-byte loads per thread)."""
    served = _case(report, "mbv2-32x384@14-nhwc-bf16")
    stored = _case(report, "mbv2-32x384@14-nhwc-bf16-channel-major-weight")
    count = lambda c: sum(c["loads"].values())
    pairs = list(zip(served["configs"], stored["configs"]))
    assert [a["config"] for a, _ in pairs] == [b["config"] for _, b in pairs]
    assert all(count(a) <= count(b) for a, b in pairs)
    assert sum(count(a) for a, _ in pairs) < 0.6 * sum(count(b) for _, b in pairs)
    assert max(int(k) for a, _ in pairs for k in a["loads"]) == 16


def test_short_conv_block_reads_the_state_by_rows_not_tiles(report):
    """LFM2's fused block: the conv state (time unit-stride) is added as K-1 channel rows in the
    first time-tile only. Loaded as a full tile per tap it put the accumulator in a time-major
    layout: 99 2-byte loads and 144 registers per thread, 12 warps per SM."""
    (c,) = _case(report, "short-conv-1x512x1024-k3-bf16")["configs"]
    assert c["loads"].get("2", 0) <= 32 and c["warps_per_sm"] >= 24, c


def test_unit_stride_time_layout_is_reported_scalar(report):
    """The seed shape (B, C, L) with L=21: shifted taps, nothing 16-byte aligned to prove; the
    analysis must tell this apart from the vector cases (else it would pass anything)."""
    case = _case(report, "seed-1x2048x21-k3-f32")
    assert not case["vector"]
    assert all(triton_aot.widest(c["loads"]) == 4 for c in case["configs"])


@pytest.mark.parametrize("ptx, loads, stores", [
    pytest.param("ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];", {16: 1}, {}, id="v4-b32"),
    pytest.param("@%p3 ld.global.nc.L1::evict_last.v2.b16 { %rs1, %rs2 }, [ %rd3 + 0 ];\n"
                 "@%p1 ld.global.b16 { %rs9 }, [ %rd2 + 0 ];", {4: 1, 2: 1}, {}, id="predicated-hints"),
    pytest.param("@%p2 st.global.v4.b32 [ %rd7 + 0 ], { %r5, %r6, %r7, %r8 };\nst.global.b8 [ %rd1 ], %rs1;\n"
                 "ld.shared.v4.b32 {%r1,%r2,%r3,%r4}, [%r9];", {}, {16: 1, 1: 1}, id="stores-not-shared"),
])
def test_access_widths_parses_ptx(ptx, loads, stores):
    got_loads, got_stores = triton_aot.access_widths(ptx)
    assert dict(got_loads) == loads and dict(got_stores) == stores


@pytest.mark.parametrize("regs, warps, smem, expected", [
    pytest.param(64, 4, 0, 32, id="64-regs: 8 blocks"),
    pytest.param(255, 4, 0, 8, id="255-regs: rounded to 256, 2 blocks"),
    pytest.param(32, 4, 0, 64, id="warp-limit"),
    pytest.param(32, 1, 0, 32, id="block-limit"),
    pytest.param(32, 4, 100 * 1024, 8, id="smem: 2 blocks"),
])
def test_warps_per_sm_follows_sm90_limits(regs, warps, smem, expected):
    assert triton_aot.warps_per_sm(regs, warps, smem) == expected


def test_problems_flags_spills_and_narrow_accesses():
    good = {"config": "a", "local": 0, "loads": {16: 2, 2: 9}, "stores": {16: 1}}
    spill = dict(good, config="b", local=32)
    narrow = dict(good, config="c", loads={4: 9}, stores={4: 1})
    assert triton_aot.problems([good], vector=True) == []
    assert triton_aot.problems([narrow], vector=False) == []
    found = triton_aot.problems([good, spill, narrow], vector=True)
    assert len(found) == 2 and "b: 32 B local" in found[0] and "c: widest load 4 B" in found[1]


def test_committed_report_is_from_the_device_triton_and_covers_every_case(report):
    """benchmarks/results/ptx-sm90-triton3.6.0.json: what the H200 machines' Triton makes of the
    current cases (regenerate with Triton 3.6.0 installed when a kernel or a case changes)."""
    committed = json.loads((REPO / "benchmarks" / "results" / "ptx-sm90-triton3.6.0.json").read_text())
    assert committed["environment"]["triton"] == "3.6.0" and committed["target"] == "sm_90"
    assert [c["name"] for c in committed["cases"]] == [c["name"] for c in report["cases"]]
    for case in committed["cases"]:
        assert case["problems"] == [] and case["configs"], case["name"]
        fresh = _case(report, case["name"])
        assert [c["config"] for c in case["configs"]] == [c["config"] for c in fresh["configs"]], case["name"]
