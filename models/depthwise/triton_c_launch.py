"""A compiled Triton kernel's C launch function, called without the launcher's Python __call__.

`compiled.run` (what JITFunction.run and triton_launch's direct path call) is a CudaLauncher
whose Python __call__ allocates the kernel's global and profile scratch memory (None when the
kernel needs none: every fused kernel here) and calls its C function `launch` with the launcher's
fixed fields between the grid and the kernel's arguments. For such a kernel, `layout(run,
function, packed)` gives the C function and those fixed fields, so a launch is one C call:

    c(g0, g1, g2, stream, *fixed, *kernel_args)        # Triton 3.6 (args_as_tuple False)
    c(g0, g1, g2, stream, *fixed, tuple(kernel_args))  # Triton 3.9 (args_as_tuple True)

the same call CudaLauncher.__call__ makes for run(g0, g1, g2, stream, function, packed, None,
None, None, *kernel_args) (no launch metadata, no hooks: as triton_launch calls it). Why: on a
Xeon that __call__ is ~0.75 us of a launch-bound call's Python (a closure, two nested calls, the
argument tuple built twice) against 0.26 us for the C call (Triton 3.6, a stand-in C function).

Only the two layouts read here (Triton 3.6: the H200's; 3.9: this project's CPU install), each
checked by version, class, __call__'s parameters and the fields it reads; anything else (another
version, a kernel with scratch memory, GSan instrumentation) gets None and keeps the Python path.
"""
from __future__ import annotations

import functools
import inspect

_FLAT = ("self", "gridX", "gridY", "gridZ", "stream", "function", "args")            # 3.6
_NAMED = ("self", "gridX", "gridY", "gridZ", "stream", "function", "kernel_metadata", "launch_metadata",
          "launch_enter_hook", "launch_exit_hook", "args")                            # 3.9
_LAYOUTS = {"3.6": _FLAT, "3.9": _NAMED}     # Triton minor version -> CudaLauncher.__call__'s parameters


@functools.lru_cache(maxsize=None)
def _call_style(cls) -> str | None:
    """'flat' (3.6), 'tuple' (3.9) or None: how `cls` (a launcher class) calls its C function."""
    try:
        import triton
        from triton.backends.nvidia.driver import CudaLauncher
        params = tuple(inspect.signature(cls.__call__).parameters)
    except (ImportError, TypeError, ValueError):
        return None
    expected = _LAYOUTS.get(".".join(triton.__version__.split(".")[:2]))
    if cls is not CudaLauncher or expected is None or params != expected:
        return None
    return "flat" if expected is _FLAT else "tuple"


def layout(run, function, packed) -> tuple | None:
    """(c, fixed, args_as_tuple) for launching `run`'s kernel straight through its C function, or
    None when `run` is not a launcher of a known layout, or its kernel needs scratch memory."""
    style = _call_style(type(run))
    fields = vars(run) if style else {}
    need = ("launch", "global_scratch_size", "profile_scratch_size", "launch_cooperative_grid", "launch_pdl")
    if style is None or not all(k in fields for k in need):
        return None
    if fields["global_scratch_size"] or fields["profile_scratch_size"]:
        return None                          # __call__ would allocate scratch per launch
    coop, pdl = fields["launch_cooperative_grid"], fields["launch_pdl"]
    if style == "flat":                      # launch(..., global_scratch, profile_scratch, *args)
        return fields["launch"], (function, coop, pdl, None, None, packed, None, None, None), False
    if fields.get("gsan_enabled", True) or not all(k in fields for k in ("arg_annotations", "kernel_signature")):
        return None
    return (fields["launch"], (function, coop, pdl, packed, None, None, None, None, None,
                               fields["arg_annotations"], fields["kernel_signature"]), True)


def stand_in(launch, **fields):
    """A CudaLauncher of the installed Triton made without compiling a kernel, its C function
    `launch` (a Python callable): the fields its __call__ reads, for a kernel with no scratch
    memory, overridden by `fields`. For the CPU tests and benchmarks/host_overhead.py (3.9's
    __call__ also reads triton.runtime.driver.active, which a CPU host has to be given)."""
    from triton.backends.nvidia.driver import CudaLauncher
    run = object.__new__(CudaLauncher)
    run.__dict__.update(num_ctas=1, global_scratch_size=0, global_scratch_align=1, profile_scratch_size=0,
                        profile_scratch_align=1, launch_cooperative_grid=False, launch_pdl=False,
                        gsan_enabled=False, arg_annotations=(), kernel_signature=b"", launch=launch)
    run.__dict__.update(fields)
    return run
