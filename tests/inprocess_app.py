"""The app in-process (TestClient) with the fake models (service.testing), shared by the
test_service_app_*.py modules and the metering tests: LIMITS (small limits, fast on 2 cores),
`served` (a module-scoped client and its models; a test module takes it with
`served = inprocess_app.served`), the requests `_image` and `_infer_json` build, and
`real_lm_client`: the app around the real seeded lfm2-demo model; `eos_fake_client`: the
fake models with 'H' (EOS) made the end-of-sequence token."""
import contextlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready


LIMITS = dict(max_sequence_length=64, max_batch_size=4, max_body_bytes=3 * 2**20, max_new_tokens=16,
              max_queue_delay_ms=20, request_timeout_s=20)


@pytest.fixture(scope="module")
def served():
    models = fake_models(delay_s=0.01)
    app = create_app(Settings(**LIMITS), models=models, hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        client_ready(client)
        yield client, models


EOS = ord("H") - 32          # FakeTokenizer: id = ord(ch) - 32


@contextlib.contextmanager
def eos_fake_client():
    """A ready TestClient of the fake models with EOS the end-of-sequence token (decoded as no
    text, it stops a generation: FakeLM counts up one character per token, so a prompt ending
    'EF' generates 'G', then eos)."""
    models = fake_models()
    models["lfm2"].lm.tokenizer.eos_token_id = EOS
    app = create_app(Settings(warmup=False, max_new_tokens=32, max_sequence_length=128), models=models,
                     hooks=fake_hooks())
    with TestClient(app) as c:
        yield client_ready(c, timeout=30)


@contextlib.contextmanager
def real_lm_client(**settings):
    """A ready TestClient of the app serving the real lfm2-demo model (seed 0, CPU) alone,
    without warm-up, under `settings` (limits the test needs)."""
    from models.registry import build_model

    lm = build_model("lfm2", None, device="cpu", seed=0)
    app = create_app(Settings(models=("lfm2",), warmup=False, **settings), models={"lfm2": lm})
    with TestClient(app) as client:
        yield client_ready(client, timeout=120)


def _image(rng, rows=1):
    return rng.standard_normal((rows, 3, 224, 224)).astype(np.float32)


def _infer_json(client, model, name, arr, datatype, **params):
    body = {"inputs": [{"name": name, "shape": list(arr.shape), "datatype": datatype, "data": arr.reshape(-1).tolist()}]}
    if params:
        body["parameters"] = params
    return client.post(f"/v2/models/{model}/infer", json=body)
