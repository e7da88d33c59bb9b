"""Compile the fused Triton kernels ahead of time for a GPU we do not have, and read the result.

    launch = capture_launch(triton_conv2d, "_dw_conv2d_nhwc_kernel", lambda: dw_conv2d(x, w, ...))
    for v in variants(launch):                  # one per autotune config (or the fixed launch)
        info = compile_variant(launch, v)       # PTX/cubin for sm_90, registers, spills, access widths

How it stays faithful to what the GPU would run:
- The real launcher is called on CPU tensors of the case's shape, dtype and strides; the
  kernel object it would launch is swapped for a recorder, so the arguments (strides,
  constexpr flags, block sizes of fixed launches) are exactly the launcher's.
- Each argument is specialised by Triton's own `native_specialize_impl` (what its JIT calls
  per launch): ints equal to 1 become constants, multiples of 16 and 16-byte-aligned
  pointers get `tt.divisibility=16`. Those hints decide whether loads vectorise.
- `triton.compile` with a `GPUTarget` runs the whole pipeline (TTIR -> TTGIR -> LLIR -> PTX
  -> cubin through the ptxas bundled with Triton) with no driver and no GPU.

What it cannot say: time, bandwidth or the autotuner's pick. Those need the device
(benchmarks/gpu.py). The kernel modules must be imported with TRITON_INTERPRET unset: under
the interpreter `triton.jit` gives interpreted functions, which have nothing to compile.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

SM90 = GPUTarget("cuda", 90, 32)     # H100 / H200 (compute capability 9.0, warp size 32)
# Per-SM limits of compute capability 9.0 (CUDA C Programming Guide, "Compute Capabilities").
SM90_LIMITS = {"regs": 65536, "warps": 64, "blocks": 32, "smem": 227 * 1024, "reg_unit": 8}
TRITON_BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
# `ld.global[.nc][.L1::evict_last][.v4].b32 {..}` / `st.global.v2.b16 [..], {..}`
_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)+)")


@dataclass
class Launch:
    """One recorded launch: the kernel object the launcher used and its arguments."""
    kernel: object                     # Autotuner or JITFunction
    args: tuple
    kwargs: dict
    name: str = ""                     # the kernel's name in its module

    @property
    def fn(self) -> JITFunction:
        return self.kernel.fn if isinstance(self.kernel, Autotuner) else self.kernel


@dataclass
class Variant:
    """What one compile needs: a label, the specialised signature and the compile options."""
    label: str                         # "BLOCK_C=16 BLOCK_L=128 w4 s3"
    signature: dict                    # arg name -> "*bf16" / "i32" / "constexpr"
    constexprs: dict                   # arg name -> value
    attrs: dict                        # (arg index,) -> [["tt.divisibility", 16]]
    options: dict                      # num_warps, num_stages
    blocks: dict = field(default_factory=dict)


class _Recorder:
    """Stands in for a kernel: `kernel[grid](*args, **kwargs)` records instead of launching."""

    def __init__(self, name: str, kernel, launches: list):
        self.name, self.kernel, self.launches = name, kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(Launch(self.kernel, args, kwargs, self.name))


def _kernels_of(module) -> dict:
    return {name: k for name, k in vars(module).items() if isinstance(k, (Autotuner, JITFunction))}


@contextlib.contextmanager
def recording(*modules):
    """Within the block, every Triton kernel (Autotuner / JITFunction) defined in `modules`
    records its launches (a list, yielded) instead of running; launchers still return their
    (unwritten) outputs. The kernels are put back on exit."""
    if not any(_kernels_of(m) for m in modules):
        raise RuntimeError(f"no compilable Triton kernels in {[m.__name__ for m in modules]}: "
                           "import the kernel modules with TRITON_INTERPRET unset")
    launches: list[Launch] = []
    saved = [(m, name, k) for m in modules for name, k in _kernels_of(m).items()]
    for m, name, k in saved:
        setattr(m, name, _Recorder(name, k, launches))
    try:
        yield launches
    finally:
        for m, name, k in saved:
            setattr(m, name, k)


def capture_launch(module, kernel_name: str, call) -> Launch:
    """Run `call()` (which must launch module.<kernel_name> exactly once) and record that launch."""
    if not isinstance(getattr(module, kernel_name), (Autotuner, JITFunction)):
        raise RuntimeError(f"{module.__name__}.{kernel_name} is {type(getattr(module, kernel_name)).__name__}, "
                           "not a compilable Triton kernel: import the kernel modules with TRITON_INTERPRET unset")
    with recording(module) as launches:
        call()
    mine = [x for x in launches if x.name == kernel_name]
    if len(mine) != 1:
        raise RuntimeError(f"expected one launch of {kernel_name}, got {len(mine)}")
    return mine[0]


def _specialise(fn: JITFunction, values: dict) -> tuple[dict, dict, dict]:
    signature, constexprs, attrs = {}, {}, {}
    for i, p in enumerate(fn.params):
        value = values[p.name]
        if p.is_constexpr:
            signature[p.name], constexprs[p.name] = "constexpr", value
            continue
        kind, hint = native_specialize_impl(CUDABackend, value, False, not p.do_not_specialize, True)
        if kind == "constexpr":                  # an int equal to 1, or None
            signature[p.name], constexprs[p.name] = "constexpr", value
        else:
            signature[p.name] = kind
            if hint:
                attrs[(i,)] = CUDABackend.parse_attr(hint)
    return signature, constexprs, attrs


def kept_configs(launch: Launch) -> set[int] | None:
    """Indices (into the Autotuner's configs and variants(launch)) of the configs its
    early_config_prune keeps for this launch, as Triton would tune them; None: every one."""
    kernel = launch.kernel
    prune = getattr(kernel, "early_config_prune", None) if isinstance(kernel, Autotuner) else None
    if prune is None:
        return None
    kept = {id(c) for c in prune(kernel.configs, dict(zip(launch.fn.arg_names, launch.args)), **launch.kwargs)}
    return {i for i, c in enumerate(kernel.configs) if id(c) in kept}


def variants(launch: Launch) -> list[Variant]:
    """One variant per autotune config, or the launch as recorded for a fixed-config kernel."""
    kwargs = dict(launch.kwargs)
    fixed = {"num_warps": kwargs.pop("num_warps", 4), "num_stages": kwargs.pop("num_stages", 3)}
    configs = launch.kernel.configs if isinstance(launch.kernel, Autotuner) else [None]
    out = []
    for cfg in configs:
        blocks = dict(cfg.kwargs) if cfg else {k: v for k, v in kwargs.items() if k.startswith("BLOCK")}
        options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages} if cfg else dict(fixed)
        values = dict(zip(launch.fn.arg_names, launch.args)) | kwargs | (cfg.kwargs if cfg else {})
        sig, const, attrs = _specialise(launch.fn, values)
        label = " ".join(f"{k}={v}" for k, v in blocks.items()) + f" w{options['num_warps']} s{options['num_stages']}"
        out.append(Variant(label, sig, const, attrs, options, blocks))
    return out


def access_widths(ptx: str) -> tuple[Counter, Counter]:
    """Global loads and stores in the PTX, counted by bytes per instruction (per thread)."""
    loads, stores = Counter(), Counter()
    for m in _ACCESS.finditer(ptx):
        mods = m.group(2).split(".")
        lanes = next((int(x[1:]) for x in mods if re.fullmatch(r"v\d", x)), 1)
        bits = next(int(x[1:]) for x in mods if re.fullmatch(r"[bfus]\d+", x))
        (loads if m.group(1) == "ld" else stores)[lanes * bits // 8] += 1
    return loads, stores


def resource_usage(cubin: bytes) -> dict:
    """Registers, stack and local memory per thread, read by the cuobjdump bundled with Triton."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([str(TRITON_BIN / "cuobjdump"), "--dump-resource-usage", str(path)],
                              capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"\b(REG|STACK|LOCAL):(\d+)", text))
    return {"regs": int(found["REG"]), "stack": int(found["STACK"]), "local": int(found["LOCAL"])}


def warps_per_sm(regs: int, num_warps: int, smem: int, limits: dict = SM90_LIMITS) -> int:
    """Resident warps per SM for a block of num_warps warps: registers, smem and block limits."""
    regs_per_warp = -(-regs // limits["reg_unit"]) * limits["reg_unit"] * 32
    blocks = min(limits["blocks"], limits["warps"] // num_warps,
                 limits["regs"] // (regs_per_warp * num_warps),
                 limits["smem"] // smem if smem else limits["blocks"])
    return blocks * num_warps


def widest(counts: dict) -> int:
    """Bytes of the widest access in a {bytes: count} histogram (0 if none); keys may be the
    strings a JSON round trip leaves."""
    return max((int(b) for b in counts), default=0)


def problems(configs: list[dict], vector: bool) -> list[str]:
    """What is wrong with a case's compiled configs ([] = nothing): spills anywhere, and where
    channels are the unit-stride dim (`vector`), global loads or stores narrower than 16 bytes in
    a config the autotuner tries on that launch (`tuned`, default true: not pruned for it)."""
    found = [f"{c['config']}: {c['local']} B local memory per thread (spills)" for c in configs if c["local"]]
    if vector:
        found += [f"{c['config']}: widest load {widest(c['loads'])} B, store {widest(c['stores'])} B (want 16)"
                  for c in configs if c.get("tuned", True) and (widest(c["loads"]) < 16 or widest(c["stores"]) < 16)]
    return found


def compile_variant(launch: Launch, variant: Variant, target: GPUTarget = SM90) -> dict:
    """Compile one variant for `target`; what the GPU would run, described."""
    src = ASTSource(launch.fn, variant.signature, variant.constexprs, variant.attrs)
    kernel = triton.compile(src, target=target, options=variant.options)
    loads, stores = access_widths(kernel.asm["ptx"])
    usage = resource_usage(kernel.asm["cubin"])
    smem = int(kernel.metadata.shared)
    return {"config": variant.label, "blocks": variant.blocks, **variant.options, **usage, "smem": smem,
            "warps_per_sm": warps_per_sm(usage["regs"], variant.options["num_warps"], smem),
            "loads": dict(sorted(loads.items())), "stores": dict(sorted(stores.items()))}
