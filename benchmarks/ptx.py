"""The fused kernels as an H200 would get them: compiled for sm_90 here, with no GPU.

    python benchmarks/ptx.py [--cases a,b] [--check] [--out DIR]
    dwserve bench ptx ...   # the same, through the CLI

For each case (a real shape, dtype and layout of the ops suite or the models) the kernel's
launcher is called on CPU tensors, its launch recorded, and every autotune config compiled
(those its early_config_prune drops for that launch marked "pruned here")
for sm_90 by the installed Triton (benchmarks/triton_aot.py). Reported per config:
registers, local memory (spills), shared memory, resident warps per SM (occupancy from
registers/smem/blocks), and the global loads/stores of one thread by bytes per instruction.
Weights are what the launchers pass: tap-major copies for the channels-inner kernels
(models/depthwise/weight_layout.py), with one case of the weight as stored for contrast.

Why: the memory-bound shapes can only approach the copy ceiling with 16-byte accesses and
enough warps in flight, and a kernel that fails to compile for sm_90 would cost a GPU run.
Both are properties of the compiled code, so they are checked here, in CI, on every Triton;
speed is measured on the device (benchmarks/gpu.py).

--check exits 1 unless every config compiles without spills and every case marked `vector`
(channels the unit-stride dim) issues 16-byte global loads and stores.
Writes <out>/ptx-sm90-triton<version>.{json,md} (with --cases: prints only); <out> is
benchmarks/results/local/ (git-ignored) unless given; the committed files take
`--out benchmarks/results`. The committed one is from Triton 3.6.0, the version on the lent
H200 machines.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# The kernels must be real `triton.jit` functions, not the interpreter's: TRITON_INTERPRET is
# read when the kernel modules are imported (below), so it is cleared before that.
os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402

_REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO / "benchmarks"]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import timing, triton_aot  # noqa: E402
from benchmarks.cli_args import check_out  # noqa: E402
from benchmarks.results_files import LOCAL, out_help, write_results  # noqa: E402
from models.depthwise import (triton_conv1d, triton_conv2d, triton_decode,  # noqa: E402
                              triton_short_conv, weight_layout)

BF16, F16, F32 = torch.bfloat16, torch.float16, torch.float32


def _nhwc(b, c, h, w, dtype):
    return torch.empty(b, c, h, w, dtype=dtype).to(memory_format=torch.channels_last)


def _strips(on: bool, call):
    """call() with the NHWC strip kernel on or off (triton_conv2d.STRIPS): 3x3 channels-inner
    layers go to the strip kernel when on, to the per-pixel kernel when off."""
    return timing.with_switch(triton_conv2d, "STRIPS", on, call)


def _conv1d_strips(on: bool, call):
    """call() with the conv1d strip kernel on or off (triton_conv1d.STRIPS): the (B, C, L) launches
    it covers go to it when on, to the generic conv1d kernel when off."""
    return timing.with_switch(triton_conv1d, "STRIPS", on, call)


def _nchw_strips(on: bool, call):
    """call() with the NCHW strip kernel on or off (triton_conv2d.NCHW_STRIPS): the NCHW 3x3 layers
    it covers go to it when on, to the generic NCHW kernel when off."""
    return timing.with_switch(triton_conv2d, "NCHW_STRIPS", on, call)


@dataclass(frozen=True)
class Case:
    name: str
    module: object
    kernel: str                 # the kernel's name in `module`
    call: Callable[[], object]  # calls the public launcher on CPU tensors of the case
    vector: bool                # channels are the unit-stride dim: 16-byte accesses expected
    note: str


# (B, C, L) with L unit-stride cannot use 16-byte loads for every tap: tap k reads the row
# shifted by k elements, so at most one tap in four (fp32) is 16-byte aligned.
CASES = [
    Case("seed-1x2048x21-k3-f32", triton_conv1d, "_dw_conv1d_kernel",
         lambda: triton_conv1d.dw_conv1d(torch.empty(1, 2048, 21), torch.empty(2048, 1, 3), None, 1, (2, 0), 1),
         False, "the PR's seed shape; (B, C, L), L unit-stride; launch-bound"),
    Case("conv1d-8x1024x4096-k3-f32", triton_conv1d, "_dw_conv1d_kernel",
         _conv1d_strips(False, lambda: triton_conv1d.dw_conv1d(torch.empty(8, 1024, 4096), torch.empty(1024, 1, 3),
                                                               None, 1, (2, 0), 1)),
         False, "memory-bound (B, C, L): shifted taps, L unit-stride; the generic kernel (conv1d strips off)"),
    Case("shortconv-1x4096x4096-k4-f32", triton_conv1d, "_dw_conv1d_kernel",
         _conv1d_strips(False, lambda: triton_conv1d.dw_conv1d(torch.empty(1, 4096, 4096), torch.empty(4096, 1, 4),
                                                               None, 1, (3, 0), 1)),
         False, "the memory-bound K=4 suite row in the generic kernel: taps shifted -3 .. 0"),
    # The conv1d strip kernel (triton_conv1d_strips: 4 outputs a thread from aligned vectors), on
    # by default for the (B, C, L) launches it covers.
    Case("shortconv-1x4096x4096-k4-f32-strips", triton_conv1d, "_dw_conv1d_strip_tuned",
         _conv1d_strips(True, lambda: triton_conv1d.dw_conv1d(torch.empty(1, 4096, 4096), torch.empty(4096, 1, 4),
                                                              None, 1, (3, 0), 1)),
         True, "the conv1d strip kernel, K=4 causal: 2 vectors for 4 outputs"),
    Case("lfm3-8x2048x512-k7-f32-strips", triton_conv1d, "_dw_conv1d_strip_tuned",
         _conv1d_strips(True, lambda: triton_conv1d.dw_conv1d(torch.empty(8, 2048, 512), torch.empty(2048, 1, 7),
                                                              None, 1, (6, 0), 1)),
         True, "the conv1d strip kernel, K=7 causal (LFM3): 3 vectors for 4 outputs"),
    Case("shortconv-1x4096x4096-k4-bf16-strips", triton_conv1d, "_dw_conv1d_strip_tuned",
         _conv1d_strips(True, lambda: triton_conv1d.dw_conv1d(torch.empty(1, 4096, 4096, dtype=BF16),
                                                              torch.empty(4096, 1, 4, dtype=BF16), None, 1, (3, 0), 1)),
         True, "the conv1d strip kernel in bf16, K=4 causal: 8 outputs a thread from 16-byte vectors (VEC 8)"),
    Case("lfm2-prefill-1x512x1024-blc-bf16", triton_conv1d, "_dw_conv1d_kernel",
         lambda: triton_conv1d.dw_conv1d(torch.empty(1, 512, 1024, dtype=BF16).transpose(1, 2),
                                         torch.empty(1024, 1, 3, dtype=BF16), None, 1, (2, 0), 1, "silu"),
         True, "LFM2's (B, L, C) view: channels unit-stride"),
    Case("mbv2-8x96@112-nchw-f32", triton_conv2d, "_dw_conv2d_nchw_kernel",
         _nchw_strips(False, lambda: triton_conv2d.dw_conv2d(torch.empty(8, 96, 112, 112), torch.empty(96, 1, 3, 3),
                                                             torch.empty(96), (1, 1), (1, 1, 1, 1), (1, 1))),
         False, "NCHW: W unit-stride, shifted taps; the generic kernel (NCHW strips off)"),
    # The NCHW strip kernel (triton_conv2d_nchw_strips: 4 outputs a thread from aligned vectors),
    # on by default for the NCHW 3x3 layers it covers.
    Case("mbv2-8x144@56-nchw-f32-strips", triton_conv2d, "_dw_conv2d_nchw_strip_tuned",
         _nchw_strips(True, lambda: triton_conv2d.dw_conv2d(torch.empty(8, 144, 56, 56), torch.empty(144, 1, 3, 3),
                                                            torch.empty(144), (1, 1), (1, 1, 1, 1), (1, 1))),
         True, "the NCHW strip kernel, stride 1: per tap row the 3 16-byte vectors a strip's columns span"),
    Case("mbv2-8x96@112-s2-nchw-f32-strips", triton_conv2d, "_dw_conv2d_nchw_strip_tuned",
         _nchw_strips(True, lambda: triton_conv2d.dw_conv2d(torch.empty(8, 96, 112, 112), torch.empty(96, 1, 3, 3),
                                                            None, (2, 2), (1, 1, 1, 1), (1, 1))),
         True, "the NCHW strip kernel, stride 2: per tap row the 3 16-byte vectors a strip's columns span"),
    Case("mbv2-32x32@112-nchw-bf16-strips", triton_conv2d, "_dw_conv2d_nchw_strip_tuned",
         _nchw_strips(True, lambda: triton_conv2d.dw_conv2d(torch.empty(32, 32, 112, 112, dtype=BF16),
                                                            torch.empty(32, 1, 3, 3, dtype=BF16), None,
                                                            (1, 1), (1, 1, 1, 1), (1, 1))),
         True, "the NCHW strip kernel in bf16: 8 outputs a thread from 16-byte vectors (VEC 8)"),
    Case("mbv2-8x96@112-s2-nhwc-f32", triton_conv2d, "_dw_conv2d_nhwc_kernel",
         _strips(False, lambda: triton_conv2d.dw_conv2d(_nhwc(8, 96, 112, 112, F32), torch.empty(96, 1, 3, 3), torch.empty(96),
                                         (2, 2), (1, 1, 1, 1), (1, 1))),
         True, "channels_last, stride 2; the per-pixel kernel (strips off)"),
    Case("mbv2-8x144@56-nhwc-f16", triton_conv2d, "_dw_conv2d_nhwc_kernel",
         _strips(False, lambda: triton_conv2d.dw_conv2d(_nhwc(8, 144, 56, 56, F16), torch.empty(144, 1, 3, 3, dtype=F16),
                                         torch.empty(144, dtype=F16), (1, 1), (1, 1, 1, 1), (1, 1))),
         True, "channels_last fp16; the per-pixel kernel (strips off)"),
    Case("mbv2-32x384@14-nhwc-bf16", triton_conv2d, "_dw_conv2d_nhwc_kernel",
         _strips(False, lambda: triton_conv2d.dw_conv2d(_nhwc(32, 384, 14, 14, BF16),
                                                        torch.empty(384, 1, 3, 3, dtype=BF16),
                                                        None, (1, 1), (1, 1, 1, 1), (1, 1))),
         True, "channels_last bf16, late stage; the per-pixel kernel (strips off)"),
    # The case above with the weight as stored, (C, 1, KH, KW)-contiguous: what the launcher
    # passed before it made tap-major copies, and still passes for inference-tensor weights.
    Case("mbv2-32x384@14-nhwc-bf16-channel-major-weight", triton_conv2d, "_dw_conv2d_nhwc_kernel",
         weight_layout.call_as_stored(_strips(
             False, lambda: triton_conv2d.dw_conv2d(_nhwc(32, 384, 14, 14, BF16), torch.empty(384, 1, 3, 3, dtype=BF16),
                                                    None, (1, 1), (1, 1, 1, 1), (1, 1)))),
         True, "the case above with the weight as stored, (C, 1, KH, KW): each tap's channels are 9 "
               "values apart, one 2-byte load each; the launchers pass a tap-major copy instead "
               "(models/depthwise/weight_layout.py)"),
    # The strip kernel (triton_conv2d_strips: 4 outputs a thread along W), on by default for 3x3
    # channels-inner layers at stride 1 and 2.
    Case("mbv2-8x144@56-nhwc-f32-strips", triton_conv2d, "_dw_conv2d_nhwc_strip_tuned",
         _strips(True, lambda: triton_conv2d.dw_conv2d(_nhwc(8, 144, 56, 56, F32), torch.empty(144, 1, 3, 3),
                                                       torch.empty(144), (1, 1), (1, 1, 1, 1), (1, 1))),
         True, "the strip kernel, stride 1: 6 input columns per tap row for 4 outputs"),
    Case("mbv2-8x96@112-s2-nhwc-f32-strips", triton_conv2d, "_dw_conv2d_nhwc_strip_tuned",
         _strips(True, lambda: triton_conv2d.dw_conv2d(_nhwc(8, 96, 112, 112, F32), torch.empty(96, 1, 3, 3),
                                                       None, (2, 2), (1, 1, 1, 1), (1, 1))),
         True, "the strip kernel, stride 2: 9 input columns per tap row for 4 outputs"),
    Case("mbv2-32x384@14-nhwc-bf16-strips", triton_conv2d, "_dw_conv2d_nhwc_strip_tuned",
         _strips(True, lambda: triton_conv2d.dw_conv2d(_nhwc(32, 384, 14, 14, BF16),
                                                       torch.empty(384, 1, 3, 3, dtype=BF16),
                                                       None, (1, 1), (1, 1, 1, 1), (1, 1))),
         False, "the strip kernel in bf16: the configs of 128 elements a warp (4 channels a thread) "
                "load 8 bytes, the two of 256 (8 a thread) load 16; not held to 16 bytes: "
                "the H200's tuner picked 8-byte configs on 23 of 27 bf16 layers, where the kernel ran "
                "0.67x of cuDNN's time (geomean; h200-2026-12-04-2/nhwc-h200.md)"),
    Case("decode-16x1024-k3-bf16", triton_decode, "_dw_decode_kernel",
         lambda: triton_decode.dw_conv1d_decode_step(torch.empty(16, 1024, dtype=BF16),
                                                     torch.empty(16, 1024, 2, dtype=BF16),
                                                     torch.empty(1024, 1, 3, dtype=BF16), None, "silu"),
         False, "one token; state (B, C, K-1): K-1 unit-stride; launch-bound"),
    Case("short-conv-1x512x1024-k3-bf16", triton_short_conv, "_short_conv_kernel",
         lambda: triton_short_conv.short_conv_block(torch.empty(1, 512, 3072, dtype=BF16),
                                                    torch.empty(1024, 1, 3, dtype=BF16), None,
                                                    torch.empty(1, 1024, 2, dtype=BF16),
                                                    torch.ones(1, 512, dtype=torch.bool)),
         True, "LFM2's fused gated block: bcx (B, L, 3C), y (B, L, C)"),
    Case("short-conv-1x512x2048-k7-bf16", triton_short_conv, "_short_conv_kernel",
         lambda: triton_short_conv.short_conv_block(torch.empty(1, 512, 6144, dtype=BF16),
                                                    torch.empty(2048, 1, 7, dtype=BF16), None,
                                                    torch.empty(1, 2048, 6, dtype=BF16),
                                                    torch.ones(1, 512, dtype=torch.bool)),
         True, "LFM3-1.7B's block: K=7 taps, the state's 6 columns as rows of the first time-tile"),
    Case("decode-16x2048-k7-bf16", triton_decode, "_dw_decode_kernel",
         lambda: triton_decode.dw_conv1d_decode_step(torch.empty(16, 2048, dtype=BF16),
                                                     torch.empty(16, 2048, 6, dtype=BF16),
                                                     torch.empty(2048, 1, 7, dtype=BF16), None, None),
         False, "LFM3's decode step: state (B, C, K-1=6), K-1 unit-stride; launch-bound"),
]


def run_case(case: Case) -> dict:
    t0 = time.perf_counter()
    launch = triton_aot.capture_launch(case.module, case.kernel, case.call)
    configs = [triton_aot.compile_variant(launch, v) for v in triton_aot.variants(launch)]
    kept = triton_aot.kept_configs(launch)
    for i, c in enumerate(configs):
        c["tuned"] = kept is None or i in kept       # the autotuner tries it on this launch (not pruned)
    return {"name": case.name, "kernel": case.kernel, "vector": case.vector, "note": case.note,
            "configs": configs, "problems": triton_aot.problems(configs, case.vector),
            "compile_s": round(time.perf_counter() - t0, 2)}


def ptxas_version() -> str:
    out = subprocess.run([str(triton_aot.TRITON_BIN / "ptxas"), "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def _fmt(counts: dict) -> str:
    return " ".join(f"{n}x{b}B" for b, n in sorted(counts.items(), reverse=True))


def write_markdown(result: dict, path: Path) -> None:
    env = result["environment"]
    lines = [f"# Fused kernels compiled for sm_90 (H100/H200) by Triton {env['triton']}, without a GPU", "",
             f"Triton {env['triton']} (ptxas: {result['ptxas']}), torch {env['torch']}, compiled on "
             f"{env['device_name']}; no kernel was run. Per config: registers and local memory (spills) per "
             "thread, shared memory per block, resident warps per SM (of 64), and one thread's global "
             "loads/stores as count x bytes per instruction (weights and masks included). `vector` cases "
             "have channels as the unit-stride dim and must use 16-byte accesses. Speed is measured on the "
             "device (benchmarks/gpu.py), not here. `dwserve bench ptx` writes this file for the installed Triton.", ""]
    for r in result["cases"]:
        verdict = "ok" if not r["problems"] else "PROBLEMS: " + "; ".join(r["problems"])
        lines += [f"## {r['name']} ({r['kernel']}{', vector' if r['vector'] else ''}): {verdict}", "",
                  r["note"], "", "| config | regs | local B | smem B | warps/SM | loads | stores |",
                  "|---|---:|---:|---:|---:|---|---|"]
        lines += [f"| {c['config']}{'' if c.get('tuned', True) else ' (pruned here)'} | {c['regs']} | "
                  f"{c['local']} | {c['smem']} | {c['warps_per_sm']} | {_fmt(c['loads'])} | {_fmt(c['stores'])} |"
                  for c in r["configs"]]
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dwserve bench ptx", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", help="comma list of case names (default all)")
    p.add_argument("--check", action="store_true", help="exit 1 on spills or missing 16-byte accesses")
    p.add_argument("--out", type=Path, default=LOCAL, help=out_help())
    args = p.parse_args(argv)
    names = args.cases.split(",") if args.cases else [c.name for c in CASES]
    if bad := sorted(set(names) - {c.name for c in CASES}):
        p.error(f"--cases: unknown {bad}; choose from {[c.name for c in CASES]}")
    if not args.cases:   # written at the end, after every case compiled: a bad folder is found now
        check_out(p, args.out)
    cases = [run_case(c) for c in CASES if c.name in names]
    result = {"environment": timing.environment("cpu"), "target": "sm_90", "ptxas": ptxas_version(),
              "cases": cases}
    for r in cases:
        print(f"{r['name']:34s} {len(r['configs'])} configs  regs {min(c['regs'] for c in r['configs'])}-"
              f"{max(c['regs'] for c in r['configs'])}  {'ok' if not r['problems'] else r['problems']}")
    if not args.cases:
        stem = f"ptx-sm90-triton{result['environment']['triton']}"    # one file per Triton version
        write_results(args.out, stem, result, write_markdown)
    else:
        print(json.dumps(cases, indent=1))
    return 1 if args.check and any(r["problems"] for r in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
