"""Prometheus metrics, exactly the names in DESIGN.md, in the service's own CollectorRegistry
(so several apps in one process, e.g. tests, never collide in the global registry).

Base units (seconds), histograms everywhere a distribution matters so replicas aggregate.
Labels stay bounded: `model` is a served model name (or "unknown"), `impl` one of IMPLS or
"auto", `status` an HTTP status code (499: the client closed the request before its answer),
`kind` "aten_ops" or "cuda_kernels", and `route` (request_duration only) one of ROUTES:
"infer" (OIP REST and gRPC), "classify" (/v1/classify), "generate" (every generation route,
streamed or not). Generations take seconds by nature; the route keeps them out of the one-shot
latency SLO, which reads route="infer"|"classify" (theirs is time_to_first_token).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

# No `<name>_created` gauge beside every counter and histogram series: nothing here reads them
# (rate() and increase() need none), and they doubled the series each replica exports.
disable_created_metrics()

# 100 us .. 60 s: a depthwise op on GPU is ~1e-4 s, a long generation tens of seconds.
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ROUTES = ("infer", "classify", "generate")
# Statuses the alerts and the errors panel divide: exposed at 0 from a (model, impl)'s first count.
PRIMED_STATUSES = ("200", "500", "503")


class _RequestsCounter(Counter):
    """dwserve_requests_total whose PRIMED_STATUSES exist at 0 once a (model, impl) is counted.

    rate()/increase() measure from a series' first scraped value, so a burst of 503s that
    creates its series between two scrapes was invisible (22 of 30 shed requests read 0 req/s
    and 0% shed, tests/test_metrics_series.py). Primed on first use, not at start-up: the
    impls requests will pick are not known before they come, and every IMPLS x status zero
    series would clutter the request-rate panel."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._primed: set[tuple[str, str]] = set()

    def labels(self, *values: str, **by_name: str):
        child = super().labels(*values, **by_name)
        model, impl = (values[:2] if values else (by_name["model"], by_name["impl"]))
        if (model, impl) not in self._primed:
            self._primed.add((model, impl))   # idempotent: a race only primes twice
            for status in PRIMED_STATUSES:
                super().labels(model, impl, status)   # creates the child at 0, counts nothing
        return child


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = _RequestsCounter("dwserve_requests_total", "Inference requests by HTTP status code.",
                                ["model", "impl", "status"], registry=r)
        self.request_duration = Histogram(
            "dwserve_request_duration_seconds",
            "End-to-end latency inside the server of requests served (2xx) or failed (5xx but 503); "
            "route: infer, classify or generate.",
            ["model", "impl", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram(
            "dwserve_queue_duration_seconds", "Time a request waited in the batching queue.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.compute_duration = Histogram(
            "dwserve_compute_duration_seconds", "Model forward time per batch (device-synchronised).",
            ["model", "impl"], buckets=LATENCY_BUCKETS, registry=r)
        self.depthwise_duration = Histogram(
            "dwserve_depthwise_duration_seconds",
            "Time inside depthwise ops per forward (sampled every N-th forward, device-synchronised).",
            ["model", "impl"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("dwserve_batch_size", "Rows per forward after dynamic batching.",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.decode_batch_size = Histogram(
            "dwserve_decode_batch_size", "Generations advanced by one decode step (continuous batching).",
            ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.launches_per_forward = Gauge(
            "dwserve_kernel_launches_per_forward",
            "Launches in one forward, last measured with count_launches (warm-up, new shape, every N).",
            ["model", "impl", "kind"], registry=r)
        self.launches_per_token = Gauge(
            "dwserve_kernel_launches_per_token",
            "Launches of one pure decode step of continuous batching (no prefill in it) / the rows "
            "it decoded, last measured with count_launches (first such step per impl and rows "
            "bucket, then every N steps). Not in kernel_launches_total (one-shot forwards only).",
            ["model", "impl", "kind"], registry=r)
        self.launches_total = Counter(
            "dwserve_kernel_launches_total", "Launches accumulated over forwards (per-forward count x forwards).",
            ["model", "impl", "kind"], registry=r)
        self.forwards = Counter(
            "dwserve_forwards_total",
            "One-shot forwards (batches, warm-up included), counted or timed: the forwards that add "
            "to kernel_launches_total, so launches_total / forwards_total is launches per forward.",
            ["model", "impl"], registry=r)
        self.inflight = Gauge("dwserve_inflight_requests", "Requests being handled right now.",
                              ["model"], registry=r)
        self.generated_tokens = Counter("dwserve_generated_tokens_total",
                                        "Tokens generated, counted per decode step (also those no client read).",
                                        ["model", "impl"], registry=r)
        self.prefix_cached_tokens = Counter(
            "dwserve_prefix_cached_tokens_total",
            "Prompt tokens restored from the prefix cache instead of prefilled.", ["model", "impl"], registry=r)
        self.ttft = Histogram("dwserve_time_to_first_token_seconds", "Request start to first token.",
                              ["model", "impl"], buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("dwserve_time_per_output_token_seconds",
                              "Mean time per generated token after the first.",
                              ["model", "impl"], buckets=LATENCY_BUCKETS, registry=r)
        self.build_info = Gauge("dwserve_build_info", "Constant 1; labels say what is running.",
                                ["version", "torch", "device"], registry=r)
        self.model_info = Gauge("dwserve_model_info", "Constant 1 per served model; labels say what it is.",
                                ["model", "architecture", "dtype", "conv_kernel_size"], registry=r)

    def set_build_info(self, version: str, torch_version: str, device: str) -> None:
        self.build_info.labels(version=version, torch=torch_version, device=device).set(1)

    def set_model_info(self, model: str, metadata: dict) -> None:
        """What a served name runs (the lfm2 slot may hold an LFM2, LFM2-MoE or LFM3)."""
        self.model_info.labels(model=model, architecture=str(metadata.get("architecture", "unknown")),
                               dtype=str(metadata.get("dtype", "unknown")),
                               conv_kernel_size=str(metadata.get("conv_kernel_size", ""))).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
