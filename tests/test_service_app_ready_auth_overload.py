"""The app in-process with fake models (tests/inprocess_app.py): who gets an answer. Live
from the start but not ready (503 + Retry-After) until warmed up, the bearer token guarding
the inference routes only, and an overloaded queue answering every request, 503s with
Retry-After included."""
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready
from inprocess_app import _infer_json


def test_not_ready_until_warmed_up_and_live_from_start():
    gate = threading.Event()
    models = fake_models()
    original = models["lfm2"].warmup_inputs
    models["lfm2"].warmup_inputs = lambda batch_size=1: (gate.wait(10), original(batch_size))[1]
    app = create_app(Settings(), models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        r = _infer_json(client, "lfm2", "input_ids", np.array([[1]]), "INT64")
        assert r.status_code == 503 and "Retry-After" in r.headers
        gate.set()
        client_ready(client)


def test_bearer_token_guards_inference_routes_only():
    app = create_app(Settings(api_key="s3cret"), models=fake_models(), hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)
        body = {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}
        r = client.post("/v2/models/lfm2/infer", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert client.post("/v2/models/lfm2/infer", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/v2/models/lfm2/infer", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200 and client.get("/metrics").status_code == 200
        assert 'status="401"' in client.get("/metrics").text


def test_overload_gives_503_and_every_request_an_answer():
    models = fake_models(delay_s=0.05)
    app = create_app(Settings(max_queue_size=2, max_batch_size=1, max_queue_delay_ms=0),
                     models=models, hooks=fake_hooks())
    with TestClient(app) as client:
        client_ready(client)

        def one(_):
            return _infer_json(client, "lfm2", "input_ids", np.array([[1, 2]]), "INT64")

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(one, range(24), timeout=60))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 2
        assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
        assert client.get("/v2/health/ready").status_code == 200
