"""A client that closes its socket before a JSON (non-streamed) generation is ready stops it:
the sequence leaves its decode row at once instead of running all its max tokens, for every
generating route (service/disconnect.py). Checked on a live uvicorn with fake models, whose
engine records each step, against the same request left to finish."""
import json
import socket
import time

import httpx
import pytest

pytest.importorskip("uvicorn")

from server_process import metric_sum, send_json_post  # noqa: E402
from test_service_server import in_process_server  # noqa: E402

MAX_TOKENS = 200
TOKEN_DELAY_S = 0.02   # 200 tokens: 4 s if the generation ran to the end
ROUTES = [
    pytest.param("/v1/generate", {"prompt": "a", "max_new_tokens": MAX_TOKENS}, id="v1-generate"),
    pytest.param("/v1/completions", {"prompt": "a", "max_tokens": MAX_TOKENS, "n": 2}, id="completions-n2"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}],
                                          "max_tokens": MAX_TOKENS}, id="chat"),
    pytest.param("/v2/models/lfm2/generate", {"text_input": "a", "max_tokens": MAX_TOKENS}, id="triton-generate"),
]


@pytest.fixture(scope="module")
def live():
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    # Two decode rows (for n=2): a generation still running after its client left holds them.
    settings = Settings(max_decode_batch=2, max_new_tokens=MAX_TOKENS, request_timeout_s=30)
    app = create_app(settings, models=fake_models(token_delay_s=TOKEN_DELAY_S), hooks=fake_hooks())
    with in_process_server(app) as url:
        yield url, app.state.service.generate.scheduler


def _post_and_leave(url: str, path: str, body: dict, after_s: float) -> None:
    """POST on a raw socket, close it after_s later without reading a byte of the reply."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        send_json_post(s, path, json.dumps(body).encode())
        time.sleep(after_s)


def _wait_idle(scheduler, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(e.busy for e in scheduler._engines.values()):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("path, body", ROUTES)
def test_a_json_generation_stops_when_its_client_disconnects(live, path, body):
    url, scheduler = live
    tokens0 = metric_sum(url, "dwserve_generated_tokens_total")
    closed0 = metric_sum(url, "dwserve_requests_total", status="499")
    steps0 = len(scheduler._engines["auto"].steps)
    t0 = time.perf_counter()
    _post_and_leave(url, path, body, after_s=0.3)
    assert _wait_idle(scheduler, timeout=2.0), "the generation kept its row after the client left"
    assert time.perf_counter() - t0 < MAX_TOKENS * TOKEN_DELAY_S / 2
    steps = len(scheduler._engines["auto"].steps) - steps0
    generated = metric_sum(url, "dwserve_generated_tokens_total") - tokens0
    choices = body.get("n", 1)
    assert 0 < steps < MAX_TOKENS / 2 and 0 < generated < choices * MAX_TOKENS / 2, (steps, generated)
    # Every token the engine made is counted, those made after the client left included.
    assert generated == sum(scheduler._engines["auto"].steps[steps0:]), (generated, steps)
    assert metric_sum(url, "dwserve_requests_total", status="499") == closed0 + 1
    # The rows are free again: a following request is served, with every token it asked for.
    r = httpx.post(url + "/v1/generate", json={"prompt": "a", "max_new_tokens": 3}, timeout=10)
    assert r.status_code == 200 and r.json()["text"] == "bcd"


def test_a_client_that_stays_gets_every_token(live):
    """The cross-check: the same long request, not abandoned, runs all its tokens (so the test
    above measures the disconnect, not some other early end)."""
    url, scheduler = live
    tokens0 = metric_sum(url, "dwserve_generated_tokens_total")
    r = httpx.post(url + "/v1/generate", json={"prompt": "a", "max_new_tokens": 60}, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 60
    assert metric_sum(url, "dwserve_generated_tokens_total") - tokens0 == 60

