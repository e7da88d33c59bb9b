"""Launching an already-compiled Triton kernel straight through its C launcher.

Per launch, Triton's `JITFunction.run` re-binds every argument, builds a specialization key,
looks up its cache, builds launch metadata and only then calls the compiled kernel's launcher:
tens of microseconds of Python on a slow host, next to a kernel of a few. Here, after the first
launch of a specialization (through `fn[grid]`, which compiles and returns the CompiledKernel),
later launches call `compiled.run(g0, g1, g2, stream, compiled.function, compiled.packed_metadata,
None, None, None, *every_parameter_in_signature_order)` exactly as JITFunction.run does (Triton
3.6, 3.9), with launch metadata and both hooks None (Triton passes empty HookChains there), each
tensor as its address (INT_POINTERS), and past `run`'s Python __call__ (C_LAUNCH). Usage:

    Launcher(fn, options).planned(grid, args, kwargs)   # fn[grid](*args, **kwargs, **options) -> Plan | None
    launch(fn, grid, *args, **kwargs)                   # the same, one Launcher per fn

A Plan is one direct launch with every non-tensor argument fixed, kept per call signature by each
fused call site (plan_key / tensors_key): a repeated call allocates its output and launches (replay).
`options`: kwargs fixed for this Launcher (an autotune pick). An entry's key (device, argument
types, tensors' dtypes and 16-byte alignment, other values) is more than Triton specialises on.

The JIT path (`fn[grid](...)`) is taken instead when: ENABLED is False (DWSERVE_TRITON_DIRECT_LAUNCH=0
at import), fn is not a JITFunction (TRITON_INTERPRET=1: the CPU tests' kernels always take it),
a launch hook or pre-run hook is set, the installed Triton's CompiledKernel lacks run/function/
packed_metadata, or no CUDA driver answers. Launches go on the current stream (graphs capture
them). JITFunction.run's knobs are assumed fixed after an entry's first launch.
"""
from __future__ import annotations

import importlib.util
import os

import torch

from . import triton_c_launch
from .weight_layout import tap_major


def env_switch(name: str) -> bool:
    """An on-by-default kernel switch, read at import: 0/false/no/off (any case) turn it off."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


# Its CUDA tests (test_triton_launch_gpu.py) passed 24/24 on an H200 (h200-2026-12-04-2/gpu-tests-launch.log).
ENABLED = env_switch("DWSERVE_TRITON_DIRECT_LAUNCH")
# Untimed on a GPU, each read per launch (DWSERVE_*=0 at import, or the flag set False, turns it off):
# tensors reach the C launcher as addresses (for a tensor it calls data_ptr() and the driver's
# cuPointerGetAttribute per pointer and launch; an int it takes as is: 3.6, 3.9; the fused ops checked
# the devices), and its C function is called past its Python __call__ (triton_c_launch.py).
INT_POINTERS = env_switch("DWSERVE_TRITON_INT_POINTERS")
C_LAUNCH = env_switch("DWSERVE_TRITON_C_LAUNCH")
_ADDRESS = torch.Tensor.data_ptr
MAX_ENTRIES = 1024           # entries per Launcher; a full one starts over (Triton keeps the binaries)
PLANS = True                 # call sites keep Plans (set False to time the Launcher alone)
MAX_PLANS = 4096             # plans per call site; a full table starts over

_JIT = object()              # entry marker: this spec launches through fn[grid]
_SCALARS = (float, bool, str, type(None))
_DRIVER: list = []           # [(current_device(), current_stream(device))] once resolved, [None] if none


def _driver():
    """(get_current_device, get_current_stream): the functions Triton's own launch path calls."""
    if not _DRIVER:
        try:
            from triton.runtime import driver
            active = driver.active
            get_device = active.get_current_device
            if get_device is torch.cuda.current_device:     # the same, less its Python lazy-init check
                get_device = torch._C._cuda_getDevice
            _DRIVER.append((get_device, active.get_current_stream))
        except Exception:            # no GPU backend (CPU-only host): direct launch unavailable
            _DRIVER.append(None)
    return _DRIVER[0]


def supported() -> bool:
    """Whether the installed Triton has the direct path (3.4+: triton.knobs); older: JITFunction.run."""
    try:
        return importlib.util.find_spec("triton.knobs") is not None
    except ImportError:              # no triton at all
        return False


def _hooks_idle(runtime) -> bool:
    """True when no launch hook would do anything: unset, or an empty HookChain (the default)."""
    for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook):
        if hook is not None and (not hasattr(hook, "calls") or hook.calls):
            return False
    return True


def _layout(types: tuple, n_args: int, names: tuple, scalars):
    """Per argument-type signature: (tensor positions, tensor kwarg names), or None when some
    argument's kind is not handled (a tuple, say: it could hold tensors, kept alive by a key)."""
    pos, kw = [], []
    for i, t in enumerate(types):
        if issubclass(t, torch.Tensor):
            if i < n_args:
                pos.append(i)
            else:
                kw.append(names[i - n_args])
        elif t is not int and t not in scalars:
            return None
    return tuple(pos), frozenset(kw)


def spec_of(args: tuple, kwargs: dict, scalars=_SCALARS, layouts: dict | None = None):
    """The per-call part of the cache key, or None when an argument's kind is not handled:
    every argument's type (True, 1 and 1.0 are different Triton types), every non-tensor value,
    every tensor's dtype and 16-byte alignment (never the tensor itself), kwargs' names."""
    types = (*map(type, args), *map(type, kwargs.values()))     # C loops: this runs per launch
    layout = None if layouts is None else layouts.get(types)
    if layout is None:
        layout = _layout(types, len(args), tuple(kwargs), scalars) or False
        if layouts is not None:
            layouts[types] = layout
    if layout is False:
        return None
    pos, kw = layout
    vals = list(args)
    for i in pos:
        t = args[i]
        vals[i] = (t.dtype, t.data_ptr() % 16 == 0)
    items = tuple(kwargs.items()) if not kw else tuple(
        (k, (v.dtype, v.data_ptr() % 16 == 0) if k in kw else v) for k, v in kwargs.items())
    return types, tuple(vals), items


class _Entry:
    """One compiled binary and how to lay out a call's arguments for its launcher."""
    __slots__ = ("run", "function", "packed", "c", "compiled", "template", "pos_tensors", "kw_tensors", "meta", "tail")

    def __init__(self, compiled, params, args, kwargs, options):
        self.compiled = compiled                # keeps the loaded module alive (__del__ unloads it)
        self.run = compiled.run                 # the launcher (handles loaded by the first launch)
        self.function, self.packed = compiled.function, compiled.packed_metadata
        self.c = triton_c_launch.layout(self.run, self.function, self.packed)   # its C function, or None
        merged = {**options, **kwargs}
        template, pos, kw = [], [], []
        for i, p in enumerate(params):          # every parameter, signature order
            if i < len(args):
                value = args[i]
                if isinstance(value, torch.Tensor):
                    pos.append(i)
            elif p.name in merged:
                value = merged[p.name]
                if isinstance(value, torch.Tensor):
                    kw.append((i, p.name))
            elif p.has_default:
                value = p.default
            else:
                raise TypeError(f"{len(params)}-parameter kernel launched without {p.name!r}")
            template.append(None if isinstance(value, torch.Tensor) else value)   # no tensor kept
        self.template, self.pos_tensors, self.kw_tensors = template, tuple(pos), tuple(kw)
        # What a callable grid sees: every non-tensor parameter (Triton passes all bound args).
        tensors = set(pos) | {i for i, _ in kw}
        self.meta = {p.name: v for i, (p, v) in enumerate(zip(params, template)) if i not in tensors}
        # A Plan's fixed arguments, when the tensors are exactly the leading positional ones (the
        # call sites' x, w, b, out ...); None: this entry cannot be replayed by a Plan.
        leading = not kw and self.pos_tensors == tuple(range(len(pos)))
        self.tail = tuple(template[len(pos):]) if leading else None

    def launch(self, grid3: tuple, stream, head, rest) -> None:
        """The launcher, as JITFunction.run calls it (no launch metadata, no hooks), with every
        parameter in signature order: `head` then `rest` (a Plan's tensors, then its fixed tail);
        its C function directly where triton_c_launch knows how (C_LAUNCH)."""
        c = self.c
        if c is None or not C_LAUNCH:
            self.run(grid3[0], grid3[1], grid3[2], stream, self.function, self.packed, None, None, None, *head, *rest)
        elif c[2]:                              # Triton 3.9: the kernel's arguments as one tuple
            c[0](grid3[0], grid3[1], grid3[2], stream, *c[1], (*head, *rest))
        else:
            c[0](grid3[0], grid3[1], grid3[2], stream, *c[1], *head, *rest)


class Launcher:
    """fn[grid](*args, **kwargs, **options), past JITFunction.run once an entry is compiled."""

    def __init__(self, fn, options: dict | None = None):
        self.fn, self.options = fn, dict(options or {})
        self.entries: dict = {}
        self.layouts: dict = {}                 # argument types -> where the tensors are
        self.direct = None                      # decided on the first call: can this fn go direct?

    def jit(self, grid, args, kwargs):
        return self.fn[grid](*args, **kwargs, **self.options)

    def _can_go_direct(self) -> bool:
        """Once per Launcher: the installed Triton launches the way this module expects."""
        try:
            import triton.language as tl
            from triton import knobs
            from triton.runtime.jit import JITFunction
        except ImportError:          # Triton < 3.4: no knobs, another launcher signature
            return False
        self.runtime, self.scalars = knobs.runtime, _SCALARS + (type(tl.float32),)   # tl.dtype: hashable scalars
        return (isinstance(self.fn, JITFunction) and os.environ.get("TRITON_INTERPRET", "0") != "1"
                and hasattr(self.fn, "params") and _driver() is not None)

    def direct_now(self) -> bool:
        """This launch may go direct: the path is on, fn can take it (decided on the first call)
        and nothing that Triton's own path would run (pre-run or launch hooks) is set."""
        if self.direct is None:
            self.direct = self._can_go_direct()
        return self.direct and ENABLED and not self.fn.pre_run_hooks and _hooks_idle(self.runtime)

    def planned(self, grid, args: tuple, kwargs: dict) -> "Plan | None":
        """fn[grid](*args, **kwargs, **options), direct once an entry is compiled; -> a Plan that repeats
        it with other tensors when it went direct and its tensors lead the arguments (x, w, b, out)."""
        if not self.direct_now():
            self.jit(grid, args, kwargs)
            return None
        spec = spec_of(args, kwargs, self.scalars, self.layouts)
        if spec is None:
            self.jit(grid, args, kwargs)
            return None
        get_device, get_stream = _DRIVER[0]
        device = get_device()
        entry = self.entries.get((device, spec))
        if entry is None:
            self._first(grid, args, kwargs, (device, spec))
            return None
        if entry is _JIT:
            self.jit(grid, args, kwargs)
            return None
        full, address = entry.template.copy(), INT_POINTERS
        for i in entry.pos_tensors:
            full[i] = args[i].data_ptr() if address else args[i]
        for i, name in entry.kw_tensors:
            full[i] = kwargs[name].data_ptr() if address else kwargs[name]
        if callable(grid):
            grid = grid(entry.meta)
        n = len(grid)
        g = (grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1)
        entry.launch(g, get_stream(device), (), full)
        if not PLANS or entry.tail is None:
            return None
        return Plan(entry, g, device, self)

    def _first(self, grid, args, kwargs, key):
        """Launch through Triton (compiling if needed) and keep the CompiledKernel it returns."""
        compiled = self.jit(grid, args, kwargs)
        if hasattr(compiled, "result"):
            compiled = compiled.result()        # an async-compile future (3.9 FutureKernel)
        entry = _JIT
        if all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")):
            entry = _Entry(compiled, self.fn.params, args, kwargs, self.options)
        if len(self.entries) >= MAX_ENTRIES:    # int values are in the key: a server meets many
            self.entries.clear()                 # lengths; each costs one JIT-path launch to re-enter
        self.entries[key] = entry
        return compiled


class Plan:
    """One direct launch with every non-tensor argument fixed, for a call site to repeat: kept per
    call signature (all that decides the launch but the tensors' addresses: shapes, strides,
    dtypes, 16-byte alignment, the op's arguments), a repeated call skips its set-up, the autotune
    lookup and the Launcher's key. launch() refuses (False, nothing launched) when the direct
    path's conditions no longer hold; the call site then takes its ordinary path."""
    __slots__ = ("entry", "grid", "device", "launcher", "n_tensors", "tail")

    def __init__(self, entry: _Entry, grid: tuple, device, launcher: Launcher):
        self.entry, self.grid, self.device, self.launcher = entry, grid, device, launcher
        self.n_tensors, self.tail = len(entry.pos_tensors), entry.tail   # made once per entry

    def launch(self, tensors: tuple, out) -> bool:
        """Launch on the current stream with `tensors`, the kernel's leading tensor parameters in
        order (a placeholder where the kernel reads none, as the call site passes it). out: the
        output among them, just allocated, so 16-byte aligned on CUDA; checked anyway, as the
        entry was compiled for an aligned one."""
        if not (PLANS and self.launcher.direct_now()) or out.data_ptr() % 16 or len(tensors) != self.n_tensors:
            return False
        get_device, get_stream = _DRIVER[0]
        if get_device() != self.device:
            return False
        head = map(_ADDRESS, tensors) if INT_POINTERS else tensors
        self.entry.launch(self.grid, get_stream(self.device), head, self.tail)
        return True


def plan_key(x, weight, bias, op_args: tuple) -> tuple:
    """A conv call site's Plan key: all its launch depends on but the tensors' addresses (shapes,
    strides, dtypes, 16-byte alignment of x, weight, bias; the op's arguments). Device: Plan.launch."""
    return (x.shape, x.stride(), x.dtype, x.data_ptr() % 16 == 0,
            weight.shape, weight.stride(), weight.dtype, weight.data_ptr() % 16 == 0,
            None if bias is None else (bias.dtype, bias.data_ptr() % 16 == 0), op_args)


def tensors_key(tensors: tuple, op_args) -> tuple:
    """plan_key for any number of tensors (None where an optional one is absent)."""
    return (tuple(None if t is None else (t.shape, t.stride(), t.dtype, t.data_ptr() % 16 == 0) for t in tensors),
            op_args)


def replay(kept: tuple, x, weight, bias):
    """A call site's kept (Plan, output shape and strides, weight tap-major?) launched with these tensors:
    the new output (x.new_empty_strided: 0.9 us on a Xeon, 1.6 torch.empty's), or None if the Plan refuses."""
    plan, shape, strides, tap = kept
    out = x.new_empty_strided(shape, strides)
    w = tap_major(weight) if tap else weight
    return out if plan.launch((x, w, bias if bias is not None else w, out), out) else None


def keep_plan(table: dict, key: tuple, value) -> None:
    """table[key] = value; a table of MAX_PLANS starts over (a server meets many lengths)."""
    if len(table) >= MAX_PLANS:
        table.clear()
    table[key] = value


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) in plain ints, for launch grids: Triton 3.9's triton.cdiv / next_power_of_2 are
    ConstexprFunctions at ~1.7 us a host call, on launch-bound calls of ~10 us of host in all."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n (0 for n <= 0, as triton.next_power_of_2), for block sizes."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


_LAUNCHERS: dict = {}


def launch(fn, grid, *args, **kwargs):
    """fn[grid](*args, **kwargs) for a plain triton.jit kernel, launched directly when it can
    be; -> a Plan that repeats this launch with other tensors, or None (Launcher.planned)."""
    launcher = _LAUNCHERS.get(fn)
    if launcher is None:
        launcher = _LAUNCHERS[fn] = Launcher(fn)
    return launcher.planned(grid, args, kwargs)
