"""Argument checks shared by the benchmarks' command lines, so a bad value is a one-line usage
error (exit 2) before any model is built, not a traceback minutes into a run:

    p.add_argument("--budget-s", type=positive(float))     # > 0, finite: 0, -1, nan, inf refused
    p.add_argument("--rounds", type=positive(int))
    p.add_argument("--chunks", type=int_list(0))           # "0,128,256": every item >= 0
    args = p.parse_args(argv)
    check_out(p, args.out)                                 # creatable, writable folder, up front
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Callable


def at_least(kind: Callable[[str], float], low: float) -> Callable[[str], float]:
    """An argparse type: `kind(value)`, finite and >= low, else ArgumentTypeError (exit 2)."""
    def parse(value: str):
        try:
            x = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} >= {low:g}, got {value!r}") from None
        if not math.isfinite(x) or x < low:
            raise argparse.ArgumentTypeError(f"expected a finite {kind.__name__} >= {low:g}, got {value!r}")
        return x
    parse.__name__ = kind.__name__   # argparse names the type in "invalid int value" messages
    return parse


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: `kind(value)`, finite and > 0 (1 and up for int)."""
    if kind is int:
        return at_least(int, 1)

    def parse(value: str):
        try:
            x = kind(value)
        except ValueError:
            x = math.nan
        if not math.isfinite(x) or x <= 0:
            raise argparse.ArgumentTypeError(f"expected a finite {kind.__name__} > 0, got {value!r}")
        return x
    parse.__name__ = kind.__name__
    return parse


def int_list(low: int) -> Callable[[str], list[int]]:
    """An argparse type: a comma list of ints, each >= low (e.g. "0,128,256")."""
    def parse(value: str) -> list[int]:
        try:
            items = [int(v) for v in value.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of ints >= {low}, got {value!r}") from None
        if any(x < low for x in items):
            raise argparse.ArgumentTypeError(f"expected a comma list of ints >= {low}, got {value!r}")
        return items
    parse.__name__ = "int list"
    return parse


def check_out(p: argparse.ArgumentParser, out: str | Path, flag: str = "--out") -> None:
    """Exit 2 unless `out` is (or can be made) a writable folder: results are written at the end
    of a run, so a bad --out found then would throw the whole run away."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"{flag} {str(out)!r}: cannot create that folder ({exc.strerror}); name a writable folder")
    if not os.access(out, os.W_OK | os.X_OK):
        p.error(f"{flag} {str(out)!r}: folder is not writable; name a writable folder")


def device_arg(value: str) -> str:
    """argparse type of a benchmark's --device: what the servers' --device takes but auto."""
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", value):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N (a GPU index), got {value!r}")
    return value


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """A CUDA device this machine lacks is the parser's one-line error (exit 2) before any model
    is built or server started (bench serve/generate: not a traceback of the first server's
    preflight failure)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device} but torch.cuda.is_available() is False; use --device cpu")


def smoke_or_cuda(parser: argparse.ArgumentParser, smoke: bool) -> str:
    """The device of a GPU probe (gpu_launch, gpu_strips, gpu_cache_warm): "cpu" for its --smoke
    run, else "cuda", a usage error (exit 2) on a machine without it."""
    import torch

    if not smoke and not torch.cuda.is_available():
        parser.error("needs CUDA (or --smoke)")
    return "cpu" if smoke else "cuda"
