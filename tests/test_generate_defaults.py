"""A generation that names no token count gets the route's default (32 on /v1/generate and
Triton's generate, 16 on OpenAI's completions), or fewer where the server's --max-new-tokens or
the sequence length leaves less room: it was a 400 for a limit the client never named."""
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready


@pytest.fixture(scope="module")
def client():
    app = create_app(Settings(max_new_tokens=8, max_sequence_length=24, max_queue_delay_ms=0),
                     models=fake_models(), hooks=fake_hooks())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client_ready(client)


@pytest.mark.parametrize("path, body, count", [
    pytest.param("/v1/generate", {"input_ids": [1, 2, 3]}, lambda r: len(r["token_ids"]), id="generate"),
    pytest.param("/v1/completions", {"prompt": [1, 2, 3]}, lambda r: r["usage"]["completion_tokens"], id="completions"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "abc"}, lambda r: r["usage"]["completion_tokens"],
                 id="triton-generate")])
def test_no_token_count_takes_the_servers_limit_when_lower(client, path, body, count):
    r = client.post(path, json={**body, "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert count(r.json()) == 8, r.text


def test_no_token_count_takes_the_room_the_sequence_leaves(client):
    r = client.post("/v1/generate", json={"input_ids": list(range(1, 21)), "ignore_eos": True})
    assert r.status_code == 200 and len(r.json()["token_ids"]) == 4, r.text   # 24 - 20
    r = client.post("/v1/generate", json={"input_ids": list(range(1, 21)), "max_new_tokens": 5})
    assert r.status_code == 400 and "max_new_tokens (5)" in r.json()["error"], r.text   # named: still checked
