"""Per-model inference statistics in the shape of Triton's statistics extension
(`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`), which tritonclient's
`get_inference_statistics` and Triton tooling read. Prometheus (`/metrics`) has the same
story as histograms; this is the cumulative, per-model view those clients expect.

What is counted: OIP v2 tensor inference (REST and gRPC infer). Generations (/v1/generate,
/v1/completions, /v1/chat/completions) have their own metrics (tokens, TTFT, TPOT) and are
not counted here.
  success / fail      requests, from entering the queue to their result (or error)
  queue               time each request waited for its batch
  compute_input       a batch's inputs concatenated and copied to the device
  compute_infer       the forward (device-synchronised)
  compute_output      outputs copied back to the host
  inference_count     rows inferred; execution_count: forwards (batched rows count once)
  batch_stats         per batch size: forwards and their compute_* durations
  cache_hit / _miss   always zero (no response cache), written as Triton writes them: clients
                      such as perf_analyzer read every member of the JSON without checking for it
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

_PHASES = ("compute_input", "compute_infer", "compute_output")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_json(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _Batch:
    phases: dict[str, Duration] = field(default_factory=lambda: {p: Duration() for p in _PHASES})


class ModelStatistics:
    """Thread-safe counters: requests are recorded on the event loop, batches on the compute
    side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success, self.fail, self.queue = Duration(), Duration(), Duration()
        self.phases = {p: Duration() for p in _PHASES}
        self.inference_count = self.execution_count = 0
        self.last_inference_ms = 0
        self.batches: dict[int, _Batch] = {}

    def request_done(self, ok: bool, seconds: float) -> None:
        with self._lock:
            (self.success if ok else self.fail).add(seconds)

    def batch_done(self, rows: int, waits: list[float], input_s: float, infer_s: float, output_s: float) -> None:
        """One forward of `rows` rows for len(waits) requests."""
        with self._lock:
            for wait in waits:
                self.queue.add(wait)
            batch = self.batches.setdefault(rows, _Batch())
            for phase, seconds in zip(_PHASES, (input_s, infer_s, output_s)):
                # per request, as Triton counts them: each request of the batch spent it
                self.phases[phase].add(seconds * len(waits), len(waits))
                batch.phases[phase].add(seconds)
            self.inference_count += rows
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)

    def to_json(self, name: str) -> dict:
        with self._lock:
            stats = {"success": self.success.to_json(), "fail": self.fail.to_json(),
                     "queue": self.queue.to_json(), **{p: d.to_json() for p, d in self.phases.items()},
                     "cache_hit": Duration().to_json(), "cache_miss": Duration().to_json()}
            batches = [{"batch_size": rows, **{p: d.to_json() for p, d in b.phases.items()}}
                       for rows, b in sorted(self.batches.items())]
            return {"name": name, "version": "1", "last_inference": self.last_inference_ms,
                    "inference_count": self.inference_count, "execution_count": self.execution_count,
                    "inference_stats": stats, "batch_stats": batches}
