"""Paths as clients write them: a trailing slash served as without it (and metered), and a
model name from the URL echoed in a 404 at most 80 characters long."""
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from error_bodies import error_message
from server_process import client_ready, metric_value

IDS = {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_queue_delay_ms=0), models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client_ready(client)


def _served(client) -> float:
    return metric_value(client.get("/metrics").text, "dwserve_requests_total", impl="auto", model="lfm2", status="200")


def test_a_trailing_slash_is_served_as_without_it(client):
    """Starlette redirected (307) to an absolute http:// URL, which tritonclient does not follow
    and which is wrong behind a TLS proxy; the request was not metered either."""
    before = _served(client)
    r = client.post("/v2/models/lfm2/infer/", json=IDS)
    assert r.status_code == 200 and r.json()["outputs"][0]["name"] == "logits", r.text
    assert _served(client) == before + 1
    assert client.get("/v2/models/lfm2/").json()["name"] == "lfm2"
    assert client.get("/v2/health/ready/").status_code == 200


def test_an_unknown_model_name_is_echoed_short(client):
    name = "m" * 5000
    for r in (client.post(f"/v2/models/{name}/infer", json=IDS), client.get(f"/v2/models/{name}"),
              client.get(f"/v2/models/{name}/ready")):
        message = error_message(r)
        assert r.status_code == 404 and "(5000 characters)" in message and len(message) < 300, message


def test_an_unknown_openai_model_name_is_echoed_short(client):
    """GET /v1/models/{id} (the openai client's models.retrieve) echoed a 5000-character id whole."""
    r = client.get(f"/v1/models/{'m' * 5000}")
    message = error_message(r)
    assert r.status_code == 404 and "(5000 characters)" in message and len(message) < 300, message
    assert r.json()["error"]["type"] == "not_found_error"
