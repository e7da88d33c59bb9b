"""Per-model inference statistics in the shape of Triton's statistics extension
(`GET /v2/models/{m}/stats`, gRPC `ModelStatistics`), which tritonclient's
`get_inference_statistics` and Triton tooling read. Prometheus (`/metrics`) has the same
story as histograms; this is the cumulative, per-model view those clients expect.

What is counted: every request that reaches the model. OIP v2 tensor inference (REST and
gRPC infer) by its batches; each generated sequence (every generation route: Triton generate
and gRPC text_input, /v1/generate, the OpenAI routes; one per choice) as Triton counts a
request to a decoupled LLM model, so Triton's tools (perf_analyzer, genai-perf: they find the
model version by its growing queue count) see a text load too. Tokens, TTFT and TPOT are
Prometheus's (/metrics).
  success / fail      requests, from entering the queue to their result (or error; a client
                      that leaves mid-generation is a fail)
  queue               time each request waited: for its batch; a generation for its first step
  compute_input       a batch's inputs concatenated and copied to the device (a generation: 0)
  compute_infer       the forward (device-synchronised); a generation: first step to its end
  compute_output      outputs copied back to the host (a generation: 0); the three counts
                      stay equal, as Triton's clients require
  inference_count     rows inferred, and generated sequences; execution_count: forwards
                      (batched rows count once), and the continuous batch's decode steps
  batch_stats         per batch size: tensor forwards and their compute_* durations
  cache_hit / _miss   always zero (no response cache), written as Triton writes them: clients
                      such as perf_analyzer read every member of the JSON without checking for it
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Optional

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

    def generation_done(self, ok: bool, enqueued: float, first_step: Optional[float]) -> None:
        """One generated sequence ended, submitted at `enqueued` (perf_counter), its first decode
        step at `first_step` (None: it never reached one)."""
        now = time.perf_counter()
        with self._lock:
            (self.success if ok else self.fail).add(now - enqueued)
            if ok:
                if first_step is not None:
                    self.queue.add(first_step - enqueued)
                    for phase in _PHASES:
                        self.phases[phase].add(now - first_step if phase == "compute_infer" else 0.0)
                self.inference_count += 1
                self.last_inference_ms = int(time.time() * 1000)

    def step_done(self) -> None:
        """One decode step of the continuous batch (every row it advanced): one execution."""
        with self._lock:
            self.execution_count += 1

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
