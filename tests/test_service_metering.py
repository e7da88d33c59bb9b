"""What GuardMiddleware and ModelRuntime meter, with fake models: a client that gives up is a
499 (never a 5xx the alerts would page on), only the methods an inference route serves are
metered, HEAD answers the health probes, request latency carries `route` and leaves out fast
rejections. (Launch counting's metering is in tests/test_service_compute.py.)"""
import socket
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready, metric_value
from inprocess_app import LIMITS, _infer_json


def samples(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of a /metrics page."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(**LIMITS), models=fake_models(delay_s=0.01), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as c:
        client_ready(c)
        yield c


def test_wrong_methods_on_inference_routes_are_not_metered(client):
    before = client.get("/metrics").text
    for method in ("GET", "PUT", "OPTIONS", "DELETE"):
        r = client.request(method, "/v2/models/lfm2/infer")
        assert r.status_code == 405, method
        assert "x-depthwise-impl" not in r.headers and "x-request-id" in r.headers
    r = client.get("/v1/generate")
    assert r.status_code == 405 and "x-depthwise-impl" not in r.headers
    after = client.get("/metrics").text
    for status in ("405", "200"):
        assert metric_value(after, "dwserve_requests_total", model="lfm2", status=status) == \
            metric_value(before, "dwserve_requests_total", model="lfm2", status=status), status
    # ... while POST still is
    assert _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64").headers["x-depthwise-impl"] == "auto"
    assert metric_value(client.get("/metrics").text, "dwserve_requests_total", model="lfm2", status="200") == \
        metric_value(after, "dwserve_requests_total", model="lfm2", status="200") + 1


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/v2/models/lfm2/ready",
                                  "/v2/models/lfm2/versions/1/ready"])
def test_head_answers_health_probes(client, path):
    get = client.get(path)
    head = client.head(path)
    assert get.status_code == head.status_code == 200, (get.status_code, head.status_code)
    assert head.content == b"" and "x-request-id" in head.headers
    assert head.headers.get("content-length") == get.headers.get("content-length")


def test_head_reports_not_ready_with_503():
    import threading
    gate = threading.Event()
    models = fake_models()
    original = models["lfm2"].warmup_inputs
    models["lfm2"].warmup_inputs = lambda batch_size=1: (gate.wait(10), original(batch_size))[1]
    with TestClient(create_app(Settings(), models=models, hooks=fake_hooks())) as c:
        assert c.head("/v2/health/live").status_code == 200
        assert c.head("/v2/health/ready").status_code == 503
        gate.set()
        client_ready(c)
        assert c.head("/v2/health/ready").status_code == 200


def test_request_latency_by_route_without_fast_rejections(client):
    before = client.get("/metrics").text
    _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64", depthwise_impl="native")
    assert client.post("/v1/generate", json={"prompt": "ab", "max_new_tokens": 2,
                                             "depthwise_impl": "native"}).status_code == 200
    png = _png()
    assert client.post("/v1/classify", files={"file": ("x.png", png, "image/png")}).status_code == 200
    for _ in range(3):   # 4xx: counted, not timed
        assert client.post("/v2/models/lfm2/infer", content=b"{bad").status_code == 400
    after = client.get("/metrics").text

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    count = "dwserve_request_duration_seconds_count"
    assert delta(count, model="lfm2", impl="native", route="infer") == 1
    assert delta(count, model="lfm2", impl="native", route="generate") == 1
    assert delta(count, model="mobilenet_v2", route="classify") == 1
    assert delta(count, model="lfm2", impl="auto") == 0                  # the three 400s
    assert delta("dwserve_requests_total", model="lfm2", status="400") == 3
    routes = {dict(ls).get("route") for (n, ls) in samples(after) if n == count}
    assert routes <= {"infer", "classify", "generate"}


def _png() -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_aborted_upload_is_499_not_500():
    """A client that sends 5 of the 1000 bytes it announced and closes: nobody to answer,
    nothing the server did wrong. Over a real socket (uvicorn in this process)."""
    from tests.test_service_server import in_process_server

    app = create_app(Settings(**LIMITS), models=fake_models(), hooks=fake_hooks())
    with in_process_server(app) as url:
        import httpx
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v2/models/lfm2/infer HTTP/1.1\r\nHost: test\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inp")
            time.sleep(0.2)
        deadline, text = time.time() + 10, ""
        while time.time() < deadline:
            text = httpx.get(f"{url}/metrics").text
            if metric_value(text, "dwserve_requests_total", model="lfm2", status="499"):
                break
            time.sleep(0.05)
        assert metric_value(text, "dwserve_requests_total", model="lfm2", status="499") == 1
        assert metric_value(text, "dwserve_requests_total", model="lfm2", status="500") == 0
        assert metric_value(text, "dwserve_request_duration_seconds_count", model="lfm2") == 0   # not timed
        assert metric_value(text, "dwserve_inflight_requests", model="lfm2") == 0
