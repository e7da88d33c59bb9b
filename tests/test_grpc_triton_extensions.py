"""Triton's model-configuration, statistics and model-repository extensions
(service/triton_ext.py) over REST and gRPC, as tritonclient.http and tritonclient.grpc call
them, against uvicorn in this process (fake models): the same config and statistics on both
protocols (both front ends counted), the repository index and its fixed-at-start refusals,
and an index that says LOADING / UNAVAILABLE and why."""
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.testing import fake_models  # noqa: E402
from tests import grpc_fake_server  # noqa: E402
from tests.grpc_fake_server import _code_and_message, _image, _infer, grpc_server  # noqa: E402
from error_bodies import error_message

served = grpc_fake_server.served   # this module's server: fake models, max_batch_size=4


def _ints(obj):
    """gRPC's JSON spells int64 as strings: back to ints for comparison with REST's."""
    if isinstance(obj, dict):
        return {k: _ints(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ints(v) for v in obj]
    return int(obj) if isinstance(obj, str) and obj.lstrip("-").isdigit() else obj


def test_model_config_over_rest_and_grpc(served):
    target, url, models = served
    import tritonclient.http as hc
    for model, served_model in models.items():
        rest = hc.InferenceServerClient(url.removeprefix("http://")).get_model_config(model)
        over_grpc = _ints(gc.InferenceServerClient(target).get_model_config(model, as_json=True)["config"])
        if model == "lfm2":   # gRPC lists its text interface too, every input optional (test_grpc_text_interface.py)
            n = len(served_model.inputs)
            assert all(t.pop("optional") is True for t in over_grpc["input"])
            over_grpc["input"], over_grpc["output"] = over_grpc["input"][:n], over_grpc["output"][:-1]
        assert over_grpc == rest
        assert rest["max_batch_size"] == 4 and rest["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
        assert [(t["name"], t["data_type"], t["dims"]) for t in rest["input"]] == \
               [(t.name, "TYPE_" + t.datatype, list(t.shape[1:])) for t in served_model.inputs]
    assert httpx.get(f"{url}/v2/models/nope/config").status_code == 404
    assert "model_configuration" in gc.InferenceServerClient(target).get_server_metadata(as_json=True)["extensions"]


def test_statistics_count_both_front_ends():
    import tritonclient.http as hc
    with grpc_server(delay_s=0.05, max_batch_size=4, max_queue_delay_ms=20) as (target, url, _):
        rng = np.random.default_rng()
        rest_client = hc.InferenceServerClient(url.removeprefix("http://"), concurrency=4)

        def over_rest(x):
            inp = hc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return rest_client.infer("mobilenet_v2", [inp]).as_numpy("logits").shape[0]

        def over_grpc(x):
            return _infer(gc.InferenceServerClient(target), "mobilenet_v2", x).as_numpy("logits").shape[0]

        images = [_image(rng, rows) for rows in (1, 1, 1, 2, 1, 1, 1)]
        with ThreadPoolExecutor(7) as pool:
            rows = list(pool.map(lambda ix: (over_rest if ix[0] % 2 else over_grpc)(ix[1]), enumerate(images)))
        assert sum(rows) == 8
        rest = hc.InferenceServerClient(url.removeprefix("http://")).get_inference_statistics("mobilenet_v2")
        over_grpc_stats = _ints(gc.InferenceServerClient(target).get_inference_statistics("mobilenet_v2", as_json=True))
        for got in (rest, over_grpc_stats):
            (stats,) = got["model_stats"]
            inf = stats["inference_stats"]
            assert stats["inference_count"] == 8 and inf["success"]["count"] == 7
            assert inf["queue"]["count"] == 7 and inf["compute_infer"]["count"] == 7
            assert inf.get("fail", {}).get("count", 0) == 0
            batches = stats["batch_stats"]
            assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 8
            assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"] < 7   # batched
            assert inf["success"]["ns"] >= inf["compute_infer"]["ns"] > 0.05e9 * stats["execution_count"]
        everything = httpx.get(f"{url}/v2/models/stats").json()["model_stats"]
        assert {m["name"] for m in everything} == {"lfm2", "mobilenet_v2"}
        code, _ = _code_and_message(lambda: gc.InferenceServerClient(target).get_inference_statistics("nope"))
        assert code == "StatusCode.NOT_FOUND"


def test_model_repository_over_rest_and_grpc(served):
    """Triton's model-repository extension, as tritonclient calls it over both protocols."""
    import tritonclient.http as hc
    target, url, models = served
    rest, over_grpc = hc.InferenceServerClient(url.removeprefix("http://")), gc.InferenceServerClient(target)
    want = [{"name": m, "version": "1", "state": "READY", "reason": ""} for m in models]
    assert rest.get_model_repository_index() == want
    assert [{"reason": "", **m} for m in over_grpc.get_model_repository_index(as_json=True)["models"]] == want
    assert httpx.post(f"{url}/v2/repository/index", json={"ready": True}).json() == want
    assert "model_repository" in rest.get_server_metadata()["extensions"]
    rest.load_model("lfm2")           # served and ready: nothing to do
    over_grpc.load_model("mobilenet_v2")
    for client in (rest, over_grpc):  # fixed at start: the errors say so, the models stay served
        for call, kwargs, code in ((client.unload_model, {}, ("400", "INVALID_ARGUMENT")),
                                   (client.load_model, {"model_name": "nope"}, ("404", "NOT_FOUND")),
                                   (client.load_model, {"config": '{"max_batch_size": 2}'}, ("400", "INVALID_ARGUMENT"))):
            with pytest.raises(InferenceServerException) as err:
                call(**{"model_name": "lfm2", **kwargs})
            assert str(err.value.status()).endswith(code) and "--model" in err.value.message()
    for bad in (b'{"ready": "maybe"}', b'{"ready": 0}', b'{"readyy": true}', b"[1]", b"{"):
        r = httpx.post(f"{url}/v2/repository/index", content=bad, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500 and "error" in r.json(), (bad, r.text)
    many = {f"file:{i}/{'x' * 100}": "" for i in range(50)}
    r = httpx.post(f"{url}/v2/repository/models/lfm2/load", json={"parameters": many})
    assert r.status_code == 400 and "(50: 'file:0/" in error_message(r) and len(r.text) < 500
    assert rest.get_model_repository_index() == want and rest.is_model_ready("lfm2")


def test_repository_index_says_loading_and_why_a_model_is_unavailable():
    from service.app import Service
    from service.settings import Settings
    from service.triton_ext import repository_index

    svc = Service(Settings(), models=fake_models())   # not loaded yet
    assert [(m["name"], m["state"]) for m in repository_index(svc)] == [("lfm2", "LOADING"), ("mobilenet_v2", "LOADING")]
    assert repository_index(svc, ready_only=True) == []
    svc.load_error = "FileNotFoundError: no config.json in /models/lfm2"
    assert {m["state"] for m in repository_index(svc)} == {"UNAVAILABLE"}
    assert repository_index(svc)[0]["reason"] == svc.load_error


def test_a_model_whose_loading_failed_says_so_not_retry():
    """After loading failed (embedded use: create_app without the CLI, which exits instead),
    the model's calls say why and that a restart is needed, with no Retry-After: "still
    loading; retry" had a client retry forever. While loading, the 503 + Retry-After stays."""
    from service.app import Service
    from service.errors import ServiceError
    from service.settings import Settings

    svc = Service(Settings(), models=fake_models())   # not loaded yet
    with pytest.raises(ServiceError) as loading:
        svc.runtime("lfm2")
    assert loading.value.status == 503 and "still loading" in loading.value.message
    assert loading.value.headers.get("Retry-After")
    svc.load_error = "FileNotFoundError: no config.json in /models/lfm2"
    with pytest.raises(ServiceError) as failed:
        svc.runtime("lfm2")
    assert failed.value.status == 503 and "Retry-After" not in failed.value.headers
    assert svc.load_error in failed.value.message and "restart" in failed.value.message
