"""Text generation over gRPC as Triton's vLLM backend serves it (service/grpc_generate.py):
tritonclient.grpc's stream API against uvicorn + gRPC in this process. With the real seeded
lfm2-demo model (greedy), the streamed pieces join to exactly what REST's
/v2/models/lfm2/generate answers for the same settings, the last answer is marked final,
unary ModelInfer answers the whole text, sampling_parameters is honoured; bad input is answered
with a message naming it and the server goes on; with fake models (a token every 20 ms), a
cancelled stream frees its sequence and a stream's window holds whole generations."""
import asyncio
import json
import queue
import time

import httpx
import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from server_process import metric_sum  # noqa: E402
from tests.grpc_fake_server import StreamContext  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402

LIMITS = dict(max_new_tokens=16, max_sequence_length=64, request_timeout_s=60)


@pytest.fixture(scope="module")
def real():
    """(gRPC target, REST url) of the app serving the real lfm2-demo model (seed 0, CPU)."""
    from models.registry import build_model
    from service.app import create_app
    from service.settings import Settings

    lm = build_model("lfm2", None, device="cpu", seed=0)
    app = create_app(Settings(models=("lfm2",), warmup=False, grpc_port=0, **LIMITS), models={"lfm2": lm})
    with in_process_server(app, timeout=120) as url:
        yield f"127.0.0.1:{app.state.service.grpc_port}", url


def _bytes(name, text):
    tensor = gc.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
    return tensor


def _inputs(text, stream=None, sampling=None, exclude=None):
    """vLLM backend's inputs; sampling: a dict sent as the JSON string, or a str sent as is."""
    inputs = [_bytes("text_input", text)]
    for name, flag in (("stream", stream), ("exclude_input_in_output", exclude)):
        if flag is not None:
            tensor = gc.InferInput(name, [1], "BOOL")
            tensor.set_data_from_numpy(np.array([flag]))
            inputs.append(tensor)
    if sampling is not None:
        inputs.append(_bytes("sampling_parameters", sampling if isinstance(sampling, str) else json.dumps(sampling)))
    return inputs


def _rest(url, prompt, **settings):
    r = httpx.post(f"{url}/v2/models/lfm2/generate", json={"text_input": prompt, **settings}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["text_output"]


def _stream(target, requests, empty_final=False, parameters=None):
    """Each (request id, inputs) over one stream, read to each one's final answer -> {id: [(text
    or None, final)]} and {n: the n-th error message}."""
    client = gc.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    got, errors = {rid: [] for rid, _ in requests}, {}
    try:
        for rid, inputs in requests:
            client.async_stream_infer("lfm2", inputs, request_id=rid, enable_empty_final_response=empty_final,
                                      parameters=parameters)
        unanswered = len(requests)   # each request ends with a final answer or an error
        while unanswered:
            result, error = answers.get(timeout=60)
            if error is not None:   # tritonclient gives an error without its response (nor id)
                errors[len(errors)] = error.message()
                unanswered -= 1
                continue
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            text = result.as_numpy("text_output")
            got[response.id].append((None if text is None else text[0].decode(), final))
            unanswered -= final
    finally:
        client.stop_stream()
    return got, errors


@pytest.mark.parametrize("prompt, exclude", [pytest.param("dwserve", None, id="split-characters"),
                                             pytest.param("xyz xyz", False, id="with-prompt")])
def test_streamed_pieces_join_to_rests_text_and_the_last_is_final(real, prompt, exclude):
    """Greedy, 16 tokens, output that splits characters over byte tokens: the pieces (a piece
    per text, marked not final) then a final empty one join to REST's text_output exactly."""
    target, url = real
    settings = {"max_tokens": 16, "temperature": 0}
    extra = {} if exclude is None else {"exclude_input_in_output": exclude}
    expected = _rest(url, prompt, **settings, **extra)
    assert expected.startswith(prompt) == (exclude is False) and len(expected) > 2
    got, errors = _stream(target, [("g1", _inputs(prompt, True, settings, exclude))])
    pieces = got["g1"]
    assert not errors and len(pieces) > 2, pieces
    assert [final for _, final in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(text for text, _ in pieces[:-1]) and pieces[-1][0] == ""
    assert "".join(text for text, _ in pieces) == expected


def test_an_empty_final_response_when_the_client_asks(real):
    target, url = real
    expected = _rest(url, "dwserve", max_tokens=8, temperature=0)
    got, _ = _stream(target, [("e1", _inputs("dwserve", True, {"max_tokens": 8}))], empty_final=True)
    pieces = got["e1"]
    assert pieces[-1] == (None, True) and not any(final for _, final in pieces[:-1])   # no outputs at all
    assert "".join(text for text, _ in pieces[:-1]) == expected


def test_not_streamed_over_the_stream_and_unary_model_infer_answer_the_whole_text(real):
    target, url = real
    expected = _rest(url, "abc", max_tokens=10, temperature=0)
    got, _ = _stream(target, [("n1", _inputs("abc", False, {"max_tokens": 10, "temperature": 0}))])
    assert got["n1"] == [(expected, True)]
    result = gc.InferenceServerClient(target).infer("lfm2", _inputs("abc", sampling={"max_tokens": 10}),
                                                    request_id="u1")
    assert result.as_numpy("text_output").tolist() == [expected.encode()]
    assert result.get_response().id == "u1"


def test_sampling_parameters_are_honoured(real):
    """max_tokens, temperature 0 and stop from the JSON string, as the vLLM backend reads them
    (genai-perf sends max_tokens as a string); TRT-LLM's scalar tensors and request parameters
    as well. Each equals REST's for the same settings; the shorter ones are prefixes of 16 tokens'."""
    target, url = real
    full = _rest(url, "abc", max_tokens=16)
    assert full == "G77777%%%%%%%%%%"   # the seeded model's greedy text, which the cases below cut
    short, stopped = _rest(url, "abc", max_tokens=4), _rest(url, "abc", max_tokens=16, stop=["%"])
    assert (short, stopped) == (full[:4], full[:full.index("%")])
    max_tokens = gc.InferInput("max_tokens", [1, 1], "INT32")   # TRT-LLM's tensor
    max_tokens.set_data_from_numpy(np.array([[4]], dtype=np.int32))
    client = gc.InferenceServerClient(target)
    cases = {"json": ({"max_tokens": "4", "temperature": 0}, [], None, short),
             "stop": ({"max_tokens": 16, "stop": ["%"], "temperature": 0.0}, [], None, stopped),
             "tensor": (None, [max_tokens], None, short),
             "parameters": (None, [], {"max_tokens": 16, "stop": "%"}, stopped)}
    for name, (sampling, tensors, parameters, expected) in cases.items():
        result = client.infer("lfm2", _inputs("abc", sampling=sampling) + tensors, parameters=parameters)
        assert result.as_numpy("text_output")[0].decode() == expected, name
        got, _ = _stream(target, [(name, _inputs("abc", True, sampling) + tensors)], parameters=parameters)
        assert "".join(text for text, _ in got[name]) == expected, name


def _refusal(call):
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value.status(), err.value.message()


def test_bad_input_is_refused_naming_it_and_the_server_goes_on(real):
    target, url = real
    client = gc.InferenceServerClient(target)
    cases = [(_inputs("abc", sampling="{max_tokens: 4"), "sampling_parameters: expected a JSON object"),
             (_inputs("abc", sampling={"max_tokens": 17}), "max_tokens: at most 16"),
             (_inputs("abc", sampling={"temperature": -1}), "temperature: Input should be greater than or equal to 0"),
             (_inputs("abc", sampling={"tempreature": 1}), "tempreature: Extra inputs are not permitted"),
             ([_bytes("text_input", "a"), _bytes("beam_width", "2")], "'beam_width': not a generation input")]
    for inputs, says in cases:
        code, message = _refusal(lambda: client.infer("lfm2", inputs))
        assert code == "StatusCode.INVALID_ARGUMENT" and says in message, message
    max_tokens = gc.InferInput("max_tokens", [1], "INT32")
    max_tokens.set_data_from_numpy(np.array([4], dtype=np.int32))
    code, message = _refusal(lambda: client.infer("lfm2", _inputs("abc", sampling={"max_tokens": 5}) + [max_tokens]))
    assert message == ("'max_tokens' set twice with different values, in the input tensors and in "
                       "sampling_parameters; expected each once"), message
    two = gc.InferInput("text_input", [2], "BYTES")
    two.set_data_from_numpy(np.array([b"a", b"b"], dtype=object))
    code, message = _refusal(lambda: client.infer("lfm2", [two]))
    assert "expected one value (shape [1] or [1, 1]), got shape [2]" in message, message
    # Over a stream: each refused with its message, the good one between them still served.
    got, errors = _stream(target, [("b1", cases[0][0]), ("ok", _inputs("abc", True, {"max_tokens": 4})),
                                   ("b2", cases[1][0])])
    assert sorted(errors.values()) == sorted([
        "sampling_parameters: expected a JSON object (or a string holding one), got unparseable text '{max_tokens: 4'",
        "max_tokens: at most 16, the server's max_new_tokens (DWSERVE_MAX_NEW_TOKENS), got 17"])
    assert "".join(text for text, _ in got["ok"]) == "G777"
    assert metric_sum(url, "dwserve_requests_total", model="lfm2", status="400") >= len(cases) + 3


def test_text_input_to_a_model_that_does_not_generate_names_the_one_that_does():
    from tests.grpc_fake_server import grpc_server
    with grpc_server(warmup=False) as (target, _, _):
        client = gc.InferenceServerClient(target)
        code, message = _refusal(lambda: client.infer("mobilenet_v2", _inputs("a")))
        assert code == "StatusCode.INVALID_ARGUMENT"
        assert message == "model 'mobilenet_v2' does not generate text; the generate extension serves 'lfm2'"
        assert client.infer("lfm2", _inputs("a", sampling={"max_tokens": 2})).as_numpy("text_output")[0] == b"bc"


def test_generations_are_metered_as_rests_generate(real):
    target, url = real
    before = metric_sum(url, "dwserve_request_duration_seconds_count", model="lfm2", route="generate")
    ok = metric_sum(url, "dwserve_requests_total", model="lfm2", status="200")
    tokens = metric_sum(url, "dwserve_generated_tokens_total", model="lfm2")
    gc.InferenceServerClient(target).infer("lfm2", _inputs("abc", sampling={"max_tokens": 3}))
    _stream(target, [("m", _inputs("abc", True, {"max_tokens": 5}))])
    assert metric_sum(url, "dwserve_request_duration_seconds_count", model="lfm2", route="generate") == before + 2
    assert metric_sum(url, "dwserve_requests_total", model="lfm2", status="200") == ok + 2
    assert metric_sum(url, "dwserve_generated_tokens_total", model="lfm2") == tokens + 8


@pytest.fixture
def slow():
    """A server with fake models generating a token every 20 ms -> (target, url, service)."""
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    app = create_app(Settings(grpc_port=0, max_new_tokens=300, max_sequence_length=512, max_queue_size=2,
                              max_batch_size=1), models=fake_models(token_delay_s=0.02), hooks=fake_hooks())
    with in_process_server(app) as url:
        yield f"127.0.0.1:{app.state.service.grpc_port}", url, app.state.service


def test_a_cancelled_stream_frees_its_sequence(slow):
    target, url, service = slow
    client = gc.InferenceServerClient(target)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("lfm2", _inputs("a", True, {"max_tokens": 300}), request_id="c1")
    result, error = answers.get(timeout=10)
    assert error is None and result.as_numpy("text_output")[0] == b"b"   # under way
    client.stop_stream(cancel_requests=True)
    engine = service.generate.scheduler._engines["auto"]
    deadline = time.time() + 3
    while engine.busy and time.time() < deadline:
        time.sleep(0.02)
    assert not engine.busy, "the cancelled generation kept its row"
    assert sum(engine.steps) < 150   # not its 300 tokens
    deadline = time.time() + 3
    while metric_sum(url, "dwserve_requests_total", model="lfm2", status="499") < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert metric_sum(url, "dwserve_requests_total", model="lfm2", status="499") == 1   # the client left
    again = gc.InferenceServerClient(target).infer("lfm2", _inputs("k", sampling={"max_tokens": 3}))
    assert again.as_numpy("text_output")[0] == b"lmn"


def test_a_streams_window_counts_generations_not_answers(slow):
    """The window (queue + batch = 3) bounds the requests taken whose last answer is not yet
    sent. A generation has many answers: a place freed per answer let a client that reads its
    pieces have a request taken per piece read, past what the scheduler holds."""
    from service.grpc_infer import InferCalls
    _, _, service = slow
    window = service.settings.max_queue_size + service.settings.max_batch_size
    taken, finals = [], []

    async def requests():   # endless generations of 6 pieces each; counts what the server reads
        while True:
            taken.append(len(taken))
            text = pb.ModelInferRequest.InferInputTensor(name="text_input", datatype="BYTES", shape=[1])
            text.contents.bytes_contents.append(b"a")
            flag = pb.ModelInferRequest.InferInputTensor(name="stream", datatype="BOOL", shape=[1])
            flag.contents.bool_contents.append(True)
            request = pb.ModelInferRequest(model_name="lfm2", id=str(len(taken)), inputs=[text, flag])
            request.parameters["max_tokens"].int64_param = 6
            yield request

    async def run():
        answers = InferCalls(service).ModelStreamInfer(requests(), StreamContext())
        most, texts = 0, {}
        for _ in range(40):
            out = await answers.__anext__()
            assert out.error_message == "", out.error_message
            response = out.infer_response
            texts[response.id] = texts.get(response.id, "") + response.raw_output_contents[0][4:].decode()
            if response.parameters["triton_final_response"].bool_param:
                finals.append(response.id)
            most = max(most, len(taken) - len(finals))
        await answers.aclose()
        return most, texts

    most, texts = asyncio.run(run())
    assert len(finals) >= 4 and all(texts[i] == "bcdefg" for i in finals)
    assert most <= window, (most, window)


def test_pieces_go_out_as_they_come_after_the_client_closes_its_side(slow):
    """A client that sends its requests and closes its side (a finite request iterator) still
    gets each piece as it is made: the stream waited for every request to finish before sending
    what was left, so a generation's pieces all came at its end."""
    target, _, _ = slow
    text = pb.ModelInferRequest.InferInputTensor(name="text_input", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"a")
    flag = pb.ModelInferRequest.InferInputTensor(name="stream", datatype="BOOL", shape=[1])
    flag.contents.bool_contents.append(True)
    request = pb.ModelInferRequest(model_name="lfm2", id="h", inputs=[text, flag])
    request.parameters["max_tokens"].int64_param = 40   # 0.8 s at 20 ms a token
    from tritonclient.grpc import service_pb2_grpc as pb_grpc
    with grpc.insecure_channel(target) as channel:
        t0, times, pieces = time.perf_counter(), [], []
        for out in pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request]), timeout=30):
            times.append(time.perf_counter() - t0)
            pieces.append(out.infer_response.raw_output_contents[0][4:].decode())
    # the fake's rule: each token the next character after the last, wrapping at 95
    assert len(pieces) == 41 and "".join(pieces) == "".join(chr(32 + (65 + i + 1) % 95) for i in range(40))
    assert times[-1] - times[0] > 0.4, times   # spread over the generation, not sent together at its end
