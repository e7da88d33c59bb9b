"""The access log and the log format (service/logs.py): one line per request naming its
status, time, request id (the X-Request-ID the client got) and, on inference routes, model
and impl; REST and gRPC alike; JSON lines on request, uvicorn's own lines included."""
import json
import logging
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.logs import TEXT_FORMAT, JsonFormatter
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready, fake_server_cmd, server_process

IDS = {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}


def _client(**settings):
    app = create_app(Settings(max_queue_delay_ms=0, **settings), models=fake_models(), hooks=fake_hooks())
    return TestClient(app, raise_server_exceptions=False)


def _lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dwserve.access"]


def test_each_request_has_one_access_line_with_its_id_status_model_and_impl(caplog):
    with _client() as client:
        client_ready(client)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dwserve.access"):
            ok = client.post("/v2/models/lfm2/infer", json={**IDS, "parameters": {"depthwise_impl": "slice_sum"}},
                             headers={"X-Request-ID": "client-42"})
            bad = client.post("/v2/models/lfm2/infer", json={"inputs": []})
            client.get("/v2/health/ready")   # a probe: debug, not at info
    assert ok.status_code == 200 and bad.status_code == 400
    first, second = _lines(caplog)
    assert (first.method, first.path, first.status, first.model, first.impl, first.request_id) == \
        ("POST", "/v2/models/lfm2/infer", 200, "lfm2", "slice_sum", "client-42")
    assert first.duration_ms > 0 and "client-42" in first.getMessage() and "impl=slice_sum" in first.getMessage()
    assert second.status == 400 and second.request_id == bad.headers["x-request-id"]


def test_probes_log_at_debug_and_the_access_log_can_be_turned_off(caplog):
    with _client() as client:
        client_ready(client)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="dwserve.access"):
            client.get("/v2/health/live")
        assert [(r.levelno, r.path) for r in _lines(caplog)] == [(logging.DEBUG, "/v2/health/live")]
    with _client(access_log=False) as client:
        client_ready(client)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="dwserve.access"):
            client.post("/v2/models/lfm2/infer", json=IDS)
        assert _lines(caplog) == []


def test_a_path_with_control_characters_cannot_forge_a_text_log_line(caplog):
    """%0a / %0d in a path decode to a newline / carriage return: the text line escapes them."""
    with _client() as client:
        client_ready(client)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dwserve.access"):
            got = client.get("/v2/models/%0a2026-12-05%20INFO%20FORGED%0d/ready")
    assert got.status_code == 404
    (line,) = _lines(caplog)
    text = logging.Formatter(TEXT_FORMAT).format(line)
    assert "\n" not in text and "\r" not in text and "/v2/models/\\n2026-12-05 INFO FORGED\\r/ready 404" in text
    assert line.path == "/v2/models/\n2026-12-05 INFO FORGED\r/ready"      # the JSON field keeps the path as sent


def test_json_lines_carry_the_fields_and_a_traceback_in_one_line():
    record = logging.LogRecord("dwserve.access", logging.INFO, __file__, 1, "x %s", ("y",), None)
    record.status, record.request_id = 503, "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "x y" and line["status"] == 503 and line["request_id"] == "abc"
    assert line["level"] == "INFO" and line["logger"] == "dwserve.access" and line["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("dwserve.app", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(failed)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exception"]


def test_grpc_calls_have_access_lines_too(caplog):
    gc = pytest.importorskip("tritonclient.grpc")
    import numpy as np

    from tests.grpc_fake_server import grpc_server

    with grpc_server(warmup=False) as (target, _, _):
        inp = gc.InferInput("input_ids", [1, 2], "INT64")
        inp.set_data_from_numpy(np.array([[1, 2]], np.int64))
        with caplog.at_level(logging.INFO, logger="dwserve.access"):
            gc.InferenceServerClient(target).infer("lfm2", [inp], headers={"x-request-id": "grpc-7"})
    (line,) = [r for r in _lines(caplog) if r.method == "gRPC"]
    assert (line.path, line.status, line.model, line.request_id) == \
        ("/inference.GRPCInferenceService/ModelInfer", 200, "lfm2", "grpc-7")


def test_a_json_log_server_writes_only_json_lines():
    """uvicorn's own lines ("Uvicorn running on ...") came out in its text format beside the
    JSON ones, and a log pipeline parsing one object per line dropped or mangled them."""
    with server_process(fake_server_cmd(log_format="json", log_level="info"), timeout=60) as (url, proc):
        r = httpx.post(f"{url}/v2/models/lfm2/infer", json=IDS, headers={"X-Request-ID": "json-1"})
        assert r.status_code == 200
        proc.terminate()   # uvicorn logs its shutdown lines too
        proc.wait(30)
    proc.output.thread.join(5)
    lines = [line for line in proc.output.lines if line.strip()]
    parsed = [json.loads(line) for line in lines]   # every line: JSON
    assert any(p["logger"].startswith("uvicorn") and "running on" in p["message"].lower() for p in parsed), lines
    assert any(p.get("request_id") == "json-1" and p.get("status") == 200 for p in parsed), lines
    assert any("shutting down" in p["message"].lower() for p in parsed), lines
    assert not any("color_message" in p for p in parsed)
