"""Guards a mutation run found untested in service/middleware.py. GuardMiddleware
driven as a plain ASGI app around a stub app, so each test says exactly what the client did."""
import asyncio
from types import SimpleNamespace

import pytest

from service.body import BodyBudget
from service.metrics import ServiceMetrics
from service.middleware import GuardMiddleware, observed_latency
from service.settings import Settings


def _service():
    settings = Settings(access_log=False)
    return SimpleNamespace(settings=settings, metrics=ServiceMetrics(), bodies=BodyBudget(settings.total_body_limit),
                           model_names=("lfm2", "mobilenet_v2"), classify_model="mobilenet_v2",
                           generate_model="lfm2")


def _run(app, method, path, incoming, body=b"{}"):
    """-> (messages sent to the client, service). `incoming`: what receive() gives after the body."""
    svc = _service()
    sent = []
    queue = [{"type": "http.request", "body": body, "more_body": False}, *incoming]

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)
    headers = [(b"content-length", str(len(body)).encode())] if method == "POST" else []
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "headers": headers,
             "query_string": b"", "client": ("127.0.0.1", 1)}
    asyncio.run(GuardMiddleware(app, svc)(scope, receive, send))
    return sent, svc


def _value(svc, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for fam in text_string_to_metric_families(svc.metrics.render().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def _answering(status, body=b"ok", then_receive=False):
    async def app(scope, receive, send):
        if scope["method"] == "POST":
            await receive()                                   # the replayed body
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        if then_receive:
            await receive()                                   # a disconnect watcher, after the end
    return app


@pytest.mark.parametrize("status, observed", [(200, True), (500, True), (502, True), (503, False),
                                              (499, False), (400, False), (413, False)])
def test_observed_latency_takes_served_and_failed_requests_only(status, observed):
    assert observed_latency(status) is observed


@pytest.mark.parametrize("status, timed", [(500, 1), (503, 0)])
def test_a_server_failure_is_timed_and_a_shed_request_is_not(status, timed):
    _, svc = _run(_answering(status), "POST", "/v1/generate", [])
    assert _value(svc, "dwserve_requests_total", model="lfm2", status=str(status)) == 1
    assert _value(svc, "dwserve_request_duration_seconds_count", model="lfm2") == timed


def test_triton_generate_is_metered_under_the_generate_route():
    _, svc = _run(_answering(200), "POST", "/v2/models/lfm2/generate", [])
    assert _value(svc, "dwserve_request_duration_seconds_count", model="lfm2", route="generate") == 1
    assert _value(svc, "dwserve_request_duration_seconds_count", model="lfm2", route="infer") == 0


def test_a_client_leaving_after_the_whole_reply_is_a_200_not_a_499():
    """A stream that was sent to its end is served, even when the app's disconnect watcher
    then sees the client go."""
    sent, svc = _run(_answering(200, then_receive=True), "POST", "/v1/generate", [{"type": "http.disconnect"}])
    assert sent[0]["status"] == 200
    assert _value(svc, "dwserve_requests_total", model="lfm2", status="200") == 1
    assert _value(svc, "dwserve_requests_total", model="lfm2", status="499") == 0


def test_head_sends_no_body():
    sent, _ = _run(_answering(200, body=b'{"live":true}'), "HEAD", "/v2/health/live", [])
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == b""


def test_a_decoded_body_reaches_the_app_with_its_own_length_only():
    """After gzip decoding the app sees the decoded body, one Content-Length (its length) and
    no Content-Encoding: the header said of the body as sent is dropped, not kept beside."""
    import gzip
    raw = b'{"prompt": "' + b"a" * 2000 + b'"}'
    seen = {}

    async def app(scope, receive, send):
        seen["headers"] = [(k.lower(), v) for k, v in scope["headers"]]
        seen["body"] = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    svc = _service()
    packed = gzip.compress(raw)
    queue = [{"type": "http.request", "body": packed, "more_body": False}]

    async def receive():
        return queue.pop(0) if queue else await asyncio.sleep(3600)

    async def send(message):
        pass
    scope = {"type": "http", "method": "POST", "path": "/v1/generate", "raw_path": b"/v1/generate",
             "headers": [(b"content-length", str(len(packed)).encode()), (b"content-encoding", b"gzip")],
             "query_string": b"", "client": ("127.0.0.1", 1)}
    asyncio.run(GuardMiddleware(app, svc)(scope, receive, send))
    assert seen["body"] == raw
    assert [v for k, v in seen["headers"] if k == b"content-length"] == [str(len(raw)).encode()]
    assert not [v for k, v in seen["headers"] if k == b"content-encoding"]


def test_a_request_cut_at_shutdown_after_its_client_left_is_a_499_with_no_reply():
    """uvicorn cancels requests still running when the grace period ends. One whose client had
    already gone gets no 503 written to nobody, and is metered 499 (the client left), not 503."""
    async def app(scope, receive, send):
        await receive()                       # the replayed body
        await receive()                       # a disconnect watcher: the client goes
        await asyncio.sleep(3600)             # ... while the work runs on
    svc = _service()
    sent = []
    queue = [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]

    async def receive():
        return queue.pop(0) if queue else await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    async def main():
        scope = {"type": "http", "method": "POST", "path": "/v1/generate", "raw_path": b"/v1/generate",
                 "headers": [(b"content-length", b"2")], "query_string": b"", "client": ("127.0.0.1", 1)}
        task = asyncio.ensure_future(GuardMiddleware(app, svc)(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()                          # the shutdown's cut
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())
    assert sent == []
    assert _value(svc, "dwserve_requests_total", model="lfm2", status="499") == 1
    assert _value(svc, "dwserve_requests_total", model="lfm2", status="503") == 0
