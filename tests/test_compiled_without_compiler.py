"""The `compiled` impl on a CPU host without a C++ compiler (python:3.11-slim, the base of the
CPU image before it installed g++): torch.compile's inductor emits C++ there, so every request
with parameters.depthwise_impl=compiled reached the forward and answered 500
(InvalidCxxCompiler), and DWSERVE_DEPTHWISE_IMPL=compiled started a server that failed every
request. Now a 400 naming what to use instead, as for `fused` off CUDA, and a preflight line."""
import pytest

from inprocess_app import real_lm_client
from models.depthwise import auto
from service import cli
from error_bodies import error_message

INFER = {"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
         "parameters": {"depthwise_impl": "compiled"}}


@pytest.fixture
def no_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(auto.shutil, "which", lambda name: None)   # what the slim image's PATH finds
    auto._cxx_available.cache_clear()
    yield
    auto._cxx_available.cache_clear()


@pytest.mark.parametrize("path, body", [
    pytest.param("/v2/models/lfm2/infer", INFER, id="oip-infer"),
    pytest.param("/v1/generate", {"input_ids": [1, 2, 3], "max_new_tokens": 2, "depthwise_impl": "compiled"},
                 id="generate"),
])
def test_compiled_without_a_compiler_is_a_400_naming_the_alternatives(no_compiler, path, body):
    with real_lm_client() as client:
        r = client.post(path, json=body)
        assert r.status_code == 400, (r.status_code, r.text[:500])
        msg = error_message(r)
        assert "compiled" in msg and "C++ compiler" in msg and "slice_sum" in msg, msg
        # the other impls still serve
        ok = client.post("/v2/models/lfm2/infer", json={**INFER, "parameters": {"depthwise_impl": "slice_sum"}})
        assert ok.status_code == 200, ok.text[:300]


def test_compiled_with_a_compiler_is_accepted(monkeypatch):
    monkeypatch.setattr(auto.shutil, "which", lambda name: f"/usr/bin/{name}")
    auto._cxx_available.cache_clear()
    try:
        with real_lm_client() as client:
            r = client.post("/v2/models/lfm2/infer", json=INFER)
            assert r.status_code == 200, r.text[:300]
            assert r.json()["parameters"]["depthwise_impl"] == "compiled"
    finally:
        auto._cxx_available.cache_clear()


def test_serve_refuses_compiled_as_default_without_a_compiler(no_compiler, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("serve went on to start the server")
    monkeypatch.setattr(cli, "run_server", refuse)
    monkeypatch.setenv("DWSERVE_DEPTHWISE_IMPL", "compiled")
    assert cli.main(["serve", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dwserve serve: DWSERVE_DEPTHWISE_IMPL='compiled': ") and "C++ compiler" in err, err
