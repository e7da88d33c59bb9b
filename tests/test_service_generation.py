"""/v1/generate through the GenerationScheduler (service/generation.py), with fake models:
concurrent generations share decode steps, each gets its own tokens, rows are freed on
finish, cancel and disconnect, the queue bound holds, a failing step fails only its
requests, and shutdown drains. The real model's batching is checked against generating
alone in tests/test_continuous_batching.py, and end to end in tests/test_service_server.py."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from service.app import Service, create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models

from server_process import client_ready
from error_bodies import error_message


def _expected(prompt: str, n: int, vocab: int = 96) -> str:
    """FakeLM's rule: next id = (last + 1) % (vocab - 1), ids are characters - 32."""
    last, out = ord(prompt[-1]) - 32, []
    for _ in range(n):
        last = (last + 1) % (vocab - 1)
        out.append(chr(32 + last))
    return "".join(out)


@pytest.fixture
def serve():
    clients = []

    def make(token_delay_s=0.01, **settings):
        models = fake_models(token_delay_s=token_delay_s)
        app = create_app(Settings(**{"request_timeout_s": 20, **settings}), models=models, hooks=fake_hooks())
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        client_ready(client)
        engine = app.state.service.generate.scheduler
        return client, models["lfm2"], engine

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _engine(scheduler, impl="auto"):
    return scheduler._engines[impl]


def test_concurrent_generations_share_decode_steps(serve):
    client, lm, scheduler = serve(max_decode_batch=4)
    prompts = ["ab", "k", "xyz", "q", "mn", "c", "u", "hh"]
    lengths = [3, 9, 5, 12, 4, 7, 10, 6]

    def one(i):
        return client.post("/v1/generate", json={"prompt": prompts[i], "max_new_tokens": lengths[i]})

    warmup_steps = len(_engine(scheduler).steps)                # the warm-up's sequence: 2 tokens
    assert warmup_steps == 2
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(one, range(8)))
    for r, p, n in zip(replies, prompts, lengths):
        assert r.status_code == 200, r.text
        assert r.json()["text"] == _expected(p, n) and r.json()["usage"]["completion_tokens"] == n
    steps = _engine(scheduler).steps[warmup_steps:]
    assert max(steps) == 4 and sum(steps) == sum(lengths)      # never more rows than allowed
    assert len(steps) < 0.5 * sum(lengths)                     # shared: not one token per step
    text = client.get("/metrics").text
    assert 'dwserve_decode_batch_size_bucket{le="4.0",model="lfm2"} %d.0' % len(steps) in text   # warm-up unobserved
    assert 'dwserve_decode_batch_size_bucket{le="2.0",model="lfm2"}' in text


def test_max_decode_batch_1_runs_one_generation_at_a_time(serve):
    client, lm, scheduler = serve(max_decode_batch=1)
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda p: client.post("/v1/generate", json={"prompt": p, "max_new_tokens": 4}),
                                ["a", "b", "c"]))
    assert [r.json()["text"] for r in replies] == [_expected(p, 4) for p in "abc"]
    assert set(_engine(scheduler).steps) == {1}


def test_a_finished_or_stopped_generation_frees_its_row_for_a_waiting_one(serve):
    """Capacity 1: the second request waits; the first ends at its stop string (a cancel), and
    the second starts right after, long before the first's max_new_tokens would have ended."""
    client, lm, scheduler = serve(max_decode_batch=1, token_delay_s=0.02)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/v1/generate", json={"prompt": "a", "max_new_tokens": 200, "stop": "e"})
        time.sleep(0.05)
        second = pool.submit(client.post, "/v1/generate", json={"prompt": "k", "max_new_tokens": 3})
        a, b = first.result(), second.result()
    assert a.json()["text"] == "bcd" and a.json()["finish_reason"] == "stop"
    assert b.json()["text"] == "lmn"
    assert time.perf_counter() - t0 < 0.02 * 60                # not 200 tokens x 20 ms
    assert not scheduler._engines["auto"].busy


def test_a_client_that_disconnects_mid_stream_frees_its_row(serve):
    client, lm, scheduler = serve(max_decode_batch=2, token_delay_s=0.02)
    with client.stream("POST", "/v1/generate", json={"prompt": "a", "max_new_tokens": 200, "stream": True}) as r:
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["text"] == "b"
    deadline = time.time() + 5
    while _engine(scheduler).busy and time.time() < deadline:
        time.sleep(0.02)
    assert not _engine(scheduler).busy
    assert sum(_engine(scheduler).steps) < 100


def test_n_choices_decode_together_and_a_disconnect_frees_them_all(serve):
    client, lm, scheduler = serve(max_decode_batch=4, token_delay_s=0.01)
    r = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 12, "temperature": 0, "n": 3})
    assert [c["text"] for c in r.json()["choices"]] == [_expected("a", 12)] * 3
    assert len(_engine(scheduler).steps) < 2 * 12                 # 36 tokens in about 12 steps, not 36
    steps_before = len(_engine(scheduler).steps)
    with client.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 250, "n": 3,
                                                        "stream": True}) as r:
        seen = set()
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.add(json.loads(line[6:])["choices"][0]["index"])
            if len(seen) == 3:
                break
    deadline = time.time() + 5
    while _engine(scheduler).busy and time.time() < deadline:
        time.sleep(0.02)
    assert not _engine(scheduler).busy                             # every choice's row freed
    assert len(_engine(scheduler).steps) - steps_before < 100      # long before their 250 tokens


def test_queue_bound_is_a_503_with_retry_after(serve):
    client, lm, scheduler = serve(max_decode_batch=1, max_queue_size=1, token_delay_s=0.05)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(client.post, "/v1/generate", json={"prompt": "a", "max_new_tokens": 30})
        time.sleep(0.2)                                       # admitted: it holds the one row
        waiting = pool.submit(client.post, "/v1/generate", json={"prompt": "b", "max_new_tokens": 2})
        time.sleep(0.1)
        r = client.post("/v1/generate", json={"prompt": "c", "max_new_tokens": 2})
        assert r.status_code == 503 and "max_queue_size=1" in error_message(r) and r.headers["Retry-After"]
        assert running.result().status_code == 200 and waiting.result().json()["text"] == _expected("b", 2)


def test_a_failing_step_fails_its_requests_and_the_server_goes_on(serve, monkeypatch):
    client, lm, scheduler = serve(max_decode_batch=2)
    from service.testing import FakeContinuousBatch

    real_step = FakeContinuousBatch.step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device lost")
        return real_step(self)

    monkeypatch.setattr(FakeContinuousBatch, "step", flaky)
    r = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 3})
    assert r.status_code == 500 and "RuntimeError" in error_message(r)
    r = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 3})
    assert r.status_code == 200 and r.json()["text"] == "bcd"
    assert client.get("/v2/health/ready").status_code == 200


def test_an_error_in_the_scheduler_itself_fails_requests_instead_of_hanging_them(serve, monkeypatch):
    client, lm, scheduler = serve(max_decode_batch=2)
    real = scheduler.rt.metrics.decode_batch_size
    monkeypatch.setattr(scheduler.rt.metrics, "decode_batch_size", None)   # .labels -> AttributeError
    r = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 3})
    assert r.status_code == 500 and "AttributeError" in error_message(r)
    monkeypatch.setattr(scheduler.rt.metrics, "decode_batch_size", real)
    r = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 3})
    assert r.status_code == 200 and r.json()["text"] == "bcd"


def test_policies_get_their_own_engines(serve):
    client, lm, scheduler = serve(max_decode_batch=4, token_delay_s=0.01)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(
            lambda i: client.post("/v1/generate", json={"prompt": "ab"[i % 2], "max_new_tokens": 5,
                                                        "depthwise_impl": ("per_group", "slice_sum")[i % 2]}),
            range(4)))
    assert [r.json()["parameters"]["depthwise_impl"] for r in replies] == ["per_group", "slice_sum"] * 2
    assert [r.json()["text"] for r in replies] == [_expected("a", 5), _expected("b", 5)] * 2
    impls = {impl for _, impl in lm.calls}
    assert {"per_group", "slice_sum"} <= impls
    # Idle non-default engines are dropped after the step that sent their last tokens, which
    # may be just after the replies went out.
    deadline = time.time() + 5
    while set(scheduler._engines) != {"auto"} and time.time() < deadline:
        time.sleep(0.01)
    assert set(scheduler._engines) == {"auto"}


def _recorder():
    """-> (events, done, emit): emit(event) records a scheduler event; done is set at the last
    (a "done" or an "error")."""
    events: list = []
    done = threading.Event()

    def emit(event):
        events.append(event)
        if event[0] != "token":
            done.set()
    return events, done, emit


def test_shutdown_finishes_accepted_generations():
    svc = Service(Settings(warmup=False, max_decode_batch=2), models=fake_models(token_delay_s=0.02),
                  hooks=fake_hooks())
    svc.load()
    from models.lfm2.continuous import Sequence

    events, done, emit = _recorder()
    svc.generate.scheduler.submit(Sequence([33], max_new_tokens=10), "auto", emit)
    time.sleep(0.05)
    svc.stop()                                                  # drains: the 10 tokens still come
    assert done.is_set() and events[-1] == ("done", "length")
    assert [e for e in events if e[0] == "token"] == [("token", 34 + i) for i in range(10)]
    from service.batching import BatcherStopped
    with pytest.raises(BatcherStopped):
        svc.generate.scheduler.submit(Sequence([1], max_new_tokens=1), "auto", emit)


def test_shutdown_past_its_grace_ends_running_generations_with_a_503_not_a_traceback(caplog):
    """graceful_shutdown_s 0: stop() does not wait for the scheduler, and the compute thread
    stops under a generation still stepping. Its next step failed with the executor's
    RuntimeError (a 500) and logged "generation step failed" with a traceback; now the
    request gets BatcherStopped (503 + Retry-After) and nothing is logged as a failure."""
    svc = Service(Settings(warmup=False, graceful_shutdown_s=0), models=fake_models(token_delay_s=0.05),
                  hooks=fake_hooks())
    svc.load()
    from models.lfm2.continuous import Sequence
    from service.batching import BatcherStopped

    events, done, emit = _recorder()
    svc.generate.scheduler.submit(Sequence([33], max_new_tokens=40), "auto", emit)   # ~2 s of steps
    time.sleep(0.1)
    with caplog.at_level("ERROR", logger="dwserve"):
        svc.stop()
        assert done.wait(5)
    assert events[-1][0] == "error" and isinstance(events[-1][1], BatcherStopped), events[-1]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


@pytest.mark.parametrize("text, hold, want", [
    pytest.param("abc", 0, 3, id="plain"),
    pytest.param("abc", 2, 1, id="stop-string-hold"),
    pytest.param("ab\ufffd", 0, 2, id="incomplete-char-held"),
    pytest.param("a\ufffd\ufffd\ufffd\ufffd", 0, 2, id="at-most-three-held"),
    pytest.param("\ufffd", 0, 0, id="only-incomplete"),
    pytest.param("ab\ufffd", 1, 1, id="stop-hold-before-incomplete-char"),
])
def test_sendable_holds_back_stop_prefixes_and_incomplete_characters(text, hold, want):
    from service.handlers.text_output import sendable
    assert sendable(text, hold) == want


def test_streamed_byte_text_is_a_prefix_of_the_final_text_at_every_token():
    """Byte-level decoding token by token (as the handler does): what sendable lets out is
    always a prefix of the final decode, for text with multi-byte characters split across tokens."""
    from models.lfm2.tokenizer import ByteTokenizer
    from models.lfm2 import PRESETS
    from service.handlers.text_output import sendable

    tok = ByteTokenizer(PRESETS["lfm2-demo"])
    ids = list("naïve → 😀 ok".encode()) + [0xFF] + list("é".encode())
    final = tok.decode(ids)
    sent = ""
    for n in range(1, len(ids) + 1):
        text = tok.decode(ids[:n])
        sent += text[len(sent):sendable(text, 0)]
        assert final.startswith(sent), (n, sent)
    assert final.startswith(sent) and len(final) - len(sent) <= 1
