"""The Open Inference Protocol over REST as tritonclient.http (sync and aio) and hand-written
requests use it, against uvicorn in this process (fake models): what Triton's extensions
dwserve does not serve (shared memory, trace, logging) is refused with a 400 that says so and
what to do instead, never a bare 404 'Not Found' or silently ignored; what it claims in
`GET /v2` it serves; a tensor in shared memory is refused, not read as missing or ignored; a request's outputs are each
named once."""
import asyncio

import httpx
import numpy as np
import pytest

hc = pytest.importorskip("tritonclient.http")
import tritonclient.http.aio as aioc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.testing import fake_hooks, fake_models  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402
from error_bodies import error_message  # noqa: E402


@pytest.fixture(scope="module")
def url():
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(max_batch_size=4, max_sequence_length=64), models=fake_models(), hooks=fake_hooks())
    with in_process_server(app) as base:
        yield base


def _client(url):
    return hc.InferenceServerClient(url.removeprefix("http://"))


def _refusal(call):
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value.status(), err.value.message()


def _ids(client_module=hc):
    x = client_module.InferInput("input_ids", [1, 3], "INT64")
    x.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int64))
    return x


SHM_CALLS = {
    "system status": lambda c: c.get_system_shared_memory_status(),
    "system region status": lambda c: c.get_system_shared_memory_status("r0"),
    "system register": lambda c: c.register_system_shared_memory("r0", "/dw_shm", 64),
    "system unregister all": lambda c: c.unregister_system_shared_memory(),
    "system unregister": lambda c: c.unregister_system_shared_memory("r0"),
    "cuda status": lambda c: c.get_cuda_shared_memory_status(),
    "cuda register": lambda c: c.register_cuda_shared_memory("r0", b"\0" * 64, 0, 64),
    "cuda unregister all": lambda c: c.unregister_cuda_shared_memory(),
}


@pytest.mark.parametrize("call", [pytest.param(f, id=k) for k, f in SHM_CALLS.items()])
def test_shared_memory_endpoints_say_unsupported(url, call):
    """tritonclient's shared-memory calls (its examples' cleanup makes them routinely): a 400
    naming the extension and the way to send tensors instead (was a bare 404 'Not Found', as
    for a mistyped URL; gRPC already answered UNIMPLEMENTED saying why)."""
    status, message = _refusal(lambda: call(_client(url)))
    assert status == "400", (status, message)
    assert "shared memory" in message and "not served by dwserve" in message and "binary_data" in message


@pytest.mark.parametrize("call", [
    pytest.param(lambda c: c.get_trace_settings(), id="trace"),
    pytest.param(lambda c: c.get_trace_settings(model_name="lfm2"), id="model trace"),
    pytest.param(lambda c: c.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}), id="update trace"),
    pytest.param(lambda c: c.get_log_settings(), id="logging"),
    pytest.param(lambda c: c.update_log_settings({"log_verbose_level": 1}), id="update logging"),
])
def test_trace_and_logging_endpoints_say_unsupported(url, call):
    status, message = _refusal(lambda: call(_client(url)))
    assert status == "400" and "not served by dwserve" in message, (status, message)


def test_aio_client_sees_the_same_refusal(url):
    async def run():
        client = aioc.InferenceServerClient(url.removeprefix("http://"))
        try:
            with pytest.raises(InferenceServerException) as err:
                await client.get_cuda_shared_memory_status()
            return err.value
        finally:
            await client.close()

    err = asyncio.run(run())
    assert err.status() == "400" and "shared memory" in err.message()


def test_extensions_listed_are_the_ones_served(url):
    """`GET /v2` is what clients read to decide what to use: no shared memory, trace or
    logging in it, and the rest still 404s with the router's plain answer."""
    extensions = httpx.get(url + "/v2").json()["extensions"]
    assert not {"system_shared_memory", "cuda_shared_memory", "trace", "logging"} & set(extensions)
    r = httpx.get(url + "/v2/sharedmemory/status")
    assert r.status_code == 404 and error_message(r) == "Not Found"


def test_input_in_shared_memory_is_refused_saying_so(url):
    """InferInput.set_shared_memory: the 400 names shared memory (was 'expected data or
    parameters.binary_data_size', as if the client had forgotten the tensor)."""
    x = hc.InferInput("input_ids", [1, 3], "INT64")
    x.set_shared_memory("in_region", 24)
    status, message = _refusal(lambda: _client(url).infer("lfm2", [x]))
    assert status == "400" and "shared_memory_region" in message and "set_data_from_numpy" in message, message


def test_output_to_shared_memory_is_refused_not_ignored(url):
    """InferRequestedOutput.set_shared_memory asks for the output in the client's region, not
    in the body: answering in the body left the region as it was (the client reads stale
    memory as the result). A 400 instead."""
    out = hc.InferRequestedOutput("logits")
    out.set_shared_memory("out_region", 384)
    status, message = _refusal(lambda: _client(url).infer("lfm2", [_ids()], outputs=[out]))
    assert status == "400" and "shared_memory_region" in message and "logits" in message, message


def test_an_output_requested_twice_is_a_400(url):
    """Each output once, as each input once (was: the tensor twice in `outputs`, which
    tritonclient's result, keyed by name, cannot tell apart)."""
    outs = [hc.InferRequestedOutput("logits"), hc.InferRequestedOutput("logits", class_count=2)]
    status, message = _refusal(lambda: _client(url).infer("lfm2", [_ids()], outputs=outs))
    assert status == "400" and "'logits'" in message and "twice" in message, message


def test_statistics_have_every_member_perf_analyzer_reads(url):
    """perf_analyzer (-i http) reads each model's statistics JSON member by member with rapidjson
    (triton_client_backend.cc ParseStatistics), cache_hit and cache_miss among them; a missing
    member is rapidjson's assert (abort, or a silent 0 under NDEBUG). Triton always writes both;
    dwserve has no response cache, so both are zero (were absent)."""
    _client(url).infer("lfm2", [_ids()])
    for model in ("lfm2", ""):
        for stat in _client(url).get_inference_statistics(model)["model_stats"]:
            assert isinstance(stat["name"], str) and isinstance(stat["version"], str)
            assert all(isinstance(stat[k], int) for k in ("inference_count", "execution_count"))
            for member in ("success", "queue", "compute_input", "compute_infer", "compute_output",
                           "cache_hit", "cache_miss"):
                assert set(stat["inference_stats"][member]) == {"count", "ns"}, member
            assert stat["inference_stats"]["cache_hit"] == stat["inference_stats"]["cache_miss"] == {"count": 0, "ns": 0}
