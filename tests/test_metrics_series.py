"""dwserve_requests_total exposes the statuses the alerts and the errors panel read (200, 500,
503) at 0 as soon as a (model, impl) has been counted once.

Why: Prometheus's rate()/increase() measure a counter from its first scraped value. A labelled
series that first appears already at 22 (a burst of 503s between two scrapes) contributes
nothing: against a real Prometheus and a running `dwserve serve --max-queue-size 4`, 22 of 30
requests shed in one burst read 0 req/s in 'Errors by status' and 0% in the DwserveQueueSaturated
ratio. A series that exists at 0 before the burst counts all 22.
"""
import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
from inprocess_app import LIMITS, _infer_json


def requests_total(text: str) -> dict:
    """{(model, impl, status): value} of dwserve_requests_total on a /metrics page."""
    return {(s.labels["model"], s.labels["impl"], s.labels["status"]): s.value
            for fam in text_string_to_metric_families(text) if fam.name == "dwserve_requests"
            for s in fam.samples if s.name == "dwserve_requests_total"}


def test_first_count_of_a_model_and_impl_exposes_its_alerting_statuses_at_zero():
    m = ServiceMetrics()
    assert requests_total(m.render().decode()) == {}           # nothing before any request
    m.requests.labels("lfm2", "auto", "200").inc()
    m.requests.labels("mobilenet_v2", "per_group", "503").inc()   # a first request shed
    got = requests_total(m.render().decode())
    assert got == {("lfm2", "auto", "200"): 1, ("lfm2", "auto", "500"): 0, ("lfm2", "auto", "503"): 0,
                   ("mobilenet_v2", "per_group", "200"): 0, ("mobilenet_v2", "per_group", "500"): 0,
                   ("mobilenet_v2", "per_group", "503"): 1}
    # other statuses are counted as they come, not primed (a 400 is no alerting status)
    m.requests.labels(model="lfm2", impl="auto", status="400").inc()
    assert requests_total(m.render().decode())[("lfm2", "auto", "400")] == 1
    assert len(requests_total(m.render().decode())) == 7


def test_served_request_leaves_503_and_500_series_at_zero():
    app = create_app(Settings(**LIMITS), models=fake_models(delay_s=0.001), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        r = _infer_json(client, "lfm2", "input_ids", np.array([[1, 2, 3]]), "INT64")
        assert r.status_code == 200
        got = requests_total(client.get("/metrics").text)
    impl = r.headers["x-depthwise-impl"]
    assert got[("lfm2", impl, "200")] == 1
    assert got[("lfm2", impl, "503")] == 0 and got[("lfm2", impl, "500")] == 0


def test_no_created_series_are_exported():
    """prometheus_client wrote a `<name>_created` gauge beside every counter and histogram
    series, doubling what each replica exports for nothing the rules or dashboards read."""
    from prometheus_client import generate_latest

    from service.metrics import ServiceMetrics

    m = ServiceMetrics()
    m.requests.labels("lfm2", "auto", "200").inc()
    m.request_duration.labels("lfm2", "auto", "infer").observe(0.1)
    text = generate_latest(m.registry).decode()
    assert "dwserve_requests_total{" in text and "_created" not in text, text[:500]
