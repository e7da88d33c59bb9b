"""Kernel launches per generated token (`dwserve_kernel_launches_per_token`), for the
continuous batch of service/generation.py.

A pure decode step (engine.decode_only: live rows, nothing joining or prefilling) runs under
hooks.count_launches once per (impl, live rows rounded up to a power of two) and again every
`launch_recount_every` decode steps of that impl; launches / rows decoded is the gauge. The
whole engine step is counted (decode, sampling, a finished row's release). On CUDA with graphs
the step is a replay: the profiler counts its kernels (for the bucket's padded rows) and its
aten ops are only the host's (sampling). The step's output is used as usual; a counted step is
2-3x slower (per_group, under the counter), and time per output token, measured per request
from token timestamps, absorbs it once per recount. Not added to dwserve_kernel_launches_total,
whose recording rule divides by one-shot requests.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Optional


def rows_bucket(rows: int) -> int:
    """Rows rounded up to a power of two (as the CUDA graphs' buckets)."""
    return 1 << max(0, rows - 1).bit_length()


class TokenLaunchCounter:
    def __init__(self, runtime):
        self.rt = runtime
        self._decode_steps: collections.Counter[str] = collections.Counter()   # per impl
        self._last_count_at: dict[str, int] = {}       # impl -> its step index at the last count
        self._counted: set[tuple[str, int]] = set()    # (impl, rows bucket) counted so far

    def _due(self, impl: str, engine) -> Optional[list]:
        """The live sequences if this step is to be counted, else None: a pure decode step
        (an engine that cannot say is never counted) of a new (impl, rows bucket), or the first
        after launch_recount_every steps of this impl since its last count."""
        self._decode_steps[impl] += 1
        if not getattr(engine, "decode_only", False):
            return None
        rows = list(engine.rows)
        if ((impl, rows_bucket(len(rows))) in self._counted and self._decode_steps[impl]
                - self._last_count_at.get(impl, 0) < self.rt.settings.launch_recount_every):
            return None
        return rows

    def step(self, impl: str, engine, on_compute: Callable[[Callable[[], Any]], Any]) -> list:
        """engine.step() through `on_compute`; when due, under hooks.count_launches, and the
        gauge set to launches / rows decoded."""
        live = self._due(impl, engine)
        if live is None:
            return on_compute(engine.step)
        result: dict[str, list] = {}

        def run():
            result["out"] = engine.step()
        counts = on_compute(lambda: self.rt.hooks.count_launches(run))
        out = result["out"]
        # A cancel between the check and the step frees a row first (a waiting sequence may
        # take it): then fewer or other rows decoded, or a prefill began; not counted.
        if ({id(s) for s, _ in out} != {id(s) for s in live} or len(out) != len(live)
                or getattr(engine, "prefill", None) is not None):
            return out
        self._counted.add((impl, rows_bucket(len(live))))
        self._last_count_at[impl] = self._decode_steps[impl]
        kinds = {"aten_ops": counts.aten_ops}
        if counts.cuda_kernels is not None:
            kinds["cuda_kernels"] = counts.cuda_kernels
        for kind, value in kinds.items():
            self.rt.metrics.launches_per_token.labels(self.rt.name, impl, kind).set(value / len(out))
        return out
