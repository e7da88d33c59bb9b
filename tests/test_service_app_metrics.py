"""The app in-process with fake models (tests/inprocess_app.py): the Prometheus metrics a
request leaves, by name and label (requests, latency, queue, compute, batch size, kernel
launches as aten ops and as CUDA kernels, in-flight, tokens, build and model info), the
depthwise duration sampled every N forwards, and launches_total / forwards_total per impl."""
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
import inprocess_app
from inprocess_app import LIMITS, _infer_json

served = inprocess_app.served   # this module's client: fake models, LIMITS


def test_cuda_kernel_counts_reach_the_launch_metric():
    """Where count_launches sees CUDA kernels (a CUDA device), the launch gauge and counter
    carry them as kind="cuda_kernels" beside the aten ops (the profiler side of this is
    tests/test_profiling.py's CUDA test)."""
    from types import SimpleNamespace
    from service.testing import _Count
    hooks = fake_hooks()

    def count_launches(fn, *args, **kwargs):
        counted = hooks.count_launches(fn, *args, **kwargs)
        return _Count(aten_ops=counted.aten_ops, cuda_kernels=3 * counted.aten_ops)

    app = create_app(Settings(**LIMITS), models=fake_models(), hooks=SimpleNamespace(**{**vars(hooks), "count_launches": count_launches}))
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        for impl in ("per_group", "auto"):
            assert _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl=impl).status_code == 200
        text = client.get("/metrics").text
    for needle in ['dwserve_kernel_launches_per_forward{impl="per_group",kind="cuda_kernels",model="lfm2"} 300.0',
                   'dwserve_kernel_launches_per_forward{impl="auto",kind="cuda_kernels",model="lfm2"} 30.0',
                   'dwserve_kernel_launches_total{impl="per_group",kind="cuda_kernels",model="lfm2"} 300.0',
                   'dwserve_kernel_launches_per_forward{impl="auto",kind="aten_ops",model="lfm2"} 10.0']:
        assert needle in text, needle


def test_metrics_names_labels_and_impl_override(served):
    client, _ = served
    _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl="per_group")
    client.post("/v2/models/lfm2/infer", content=b"{bad")
    client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 3})
    text = client.get("/metrics").text
    for needle in ['dwserve_requests_total{impl="per_group",model="lfm2",status="200"}',
                   'dwserve_requests_total{impl="auto",model="lfm2",status="400"}',
                   'dwserve_request_duration_seconds_bucket{impl="per_group",le="0.0001",model="lfm2",route="infer"}',
                   'dwserve_request_duration_seconds_count{impl="auto",model="lfm2",route="generate"}',
                   'dwserve_queue_duration_seconds_count{model="lfm2"}',
                   'dwserve_compute_duration_seconds_count{impl="per_group",model="lfm2"}',
                   'dwserve_batch_size_bucket{le="1.0",model="lfm2"}',
                   'dwserve_kernel_launches_per_forward{impl="per_group",kind="aten_ops",model="lfm2"} 100.0',
                   'dwserve_kernel_launches_per_forward{impl="auto",kind="aten_ops",model="lfm2"} 10.0',
                   'dwserve_kernel_launches_total{impl="per_group",kind="aten_ops",model="lfm2"}',
                   'dwserve_inflight_requests{model="lfm2"} 0.0',
                   'dwserve_generated_tokens_total{impl="auto",model="lfm2"}',
                   'dwserve_time_to_first_token_seconds_count{impl="auto",model="lfm2"}',
                   'dwserve_time_per_output_token_seconds_count{impl="auto",model="lfm2"}',
                   'dwserve_build_info{device="cpu"',
                   'dwserve_model_info{architecture="unknown",conv_kernel_size="",dtype="unknown",model="lfm2"} 1.0']:
        assert needle in text, needle


def test_depthwise_duration_sampled_every_n_forwards():
    models = fake_models()
    app = create_app(Settings(depthwise_sample_every=3, max_queue_delay_ms=0), models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        for _ in range(9):
            _infer_json(client, "lfm2", "input_ids", np.array([[1]]), "INT64", depthwise_impl="native")
        text = client.get("/metrics").text
    line = next(l for l in text.splitlines()
                if l.startswith('dwserve_depthwise_duration_seconds_count{impl="native",model="lfm2"}'))
    # 5 warm-up (batch 1, 4, 7, 8, 1) + 9 forwards: 9 and 12 sampled; 6 is the first of its
    # shape class under native, so it is counted (launches) and neither timed nor sampled.
    assert float(line.split()[-1]) == 2.0


@pytest.mark.parametrize("recount_every", [pytest.param(5, id="some-counted"), pytest.param(1, id="every-counted")])
def test_launches_total_over_forwards_total_is_the_per_forward_count(recount_every):
    """dwserve_forwards_total counts every forward that adds to kernel_launches_total, counted
    (warm-up, a new shape class, every launch_recount_every-th) or timed, so their ratio is the
    fake per-forward count exactly (per_group 100, others 10), per impl. compute_duration's count,
    the old denominator, leaves the counted forwards out: it read high, or (every-counted) nothing."""
    app = create_app(Settings(launch_recount_every=recount_every, max_queue_delay_ms=0),
                     models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        for length in (1, 2, 3, 5, 9, 2, 2, 2):        # 1, 2, 3-4, 5-8, 9-16: new shape classes
            for impl in ("per_group", "auto", "native"):
                ids = np.ones((1, length), dtype=np.int64)
                assert _infer_json(client, "lfm2", "input_ids", ids, "INT64", depthwise_impl=impl).status_code == 200
        # a generation (under auto) adds to neither counter: its steps are not one-shot forwards
        assert client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 3}).status_code == 200
        text = client.get("/metrics").text
    value = {(s.name, s.labels.get("impl")): s.value for fam in text_string_to_metric_families(text)
             for s in fam.samples if s.labels.get("model") == "lfm2" and s.labels.get("kind", "aten_ops") == "aten_ops"}
    for impl, per_forward in (("per_group", 100), ("auto", 10), ("native", 10)):
        forwards = value[("dwserve_forwards_total", impl)]
        assert forwards >= 8, (impl, forwards)                   # 8 requests (+ warm-up under auto)
        assert value[("dwserve_kernel_launches_total", impl)] / forwards == per_forward, impl
        timed = value.get(("dwserve_compute_duration_seconds_count", impl), 0.0)
        assert timed < forwards and (timed == 0) == (recount_every == 1), (impl, timed, forwards)


def test_batch_size_counts_the_batchers_forwards_not_the_warm_up():
    """dwserve_batch_size is the rows per forward the dynamic batcher forms. Warm-up forwards
    (rows 1, max/2, max-1, max, 1 before the server turns ready) were observed too: an idle,
    just-started server read a p95 batch of --max-batch-size and a mean of 2.2 rows for the
    first rate window, as if full batches had formed. decode_batch_size leaves its warm-up out alike."""
    app = create_app(Settings(**LIMITS), models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        idle = client.get("/metrics").text
        ids = np.array([[1, 2], [3, 4]], dtype=np.int64)
        assert _infer_json(client, "lfm2", "input_ids", ids, "INT64").status_code == 200
        served_one = client.get("/metrics").text

    def batch(text, model):
        return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name in ("dwserve_batch_size_count", "dwserve_batch_size_sum") and s.labels["model"] == model}

    for model in ("lfm2", "mobilenet_v2"):
        assert batch(idle, model) in ({}, {"dwserve_batch_size_count": 0, "dwserve_batch_size_sum": 0}), model
    assert batch(served_one, "lfm2") == {"dwserve_batch_size_count": 1, "dwserve_batch_size_sum": 2}
