"""Stress cases of continuous batching (service/generation.py, models/lfm2/continuous.py): the
admission bound while an engine is being made, clients leaving at every point, the prefix
cache evicting under load, timeouts and shutdown, each followed by the invariants an operator
relies on: every request one outcome, the metrics agree, every row free again, the prefix
cache's bytes accounted, and the same tokens as on an idle server."""
import time
from concurrent.futures import ThreadPoolExecutor

import continuous_helpers
import test_service_generation
from server_process import metric_sum, send_json_post

serve = test_service_generation.serve   # the fixture: fake models, a scheduler per test
model = continuous_helpers.model          # the tiny LFM2, one per module


def _slow_engines(scheduler, monkeypatch, delay_s: float):
    """Making an engine takes delay_s (a full cache allocated: large on a real model)."""
    make = scheduler.lm.continuous_batch

    def slow(*args, **kwargs):
        time.sleep(delay_s)
        return make(*args, **kwargs)
    monkeypatch.setattr(scheduler.lm, "continuous_batch", slow)


def test_the_queue_bound_holds_while_an_engine_is_being_made(serve, monkeypatch):
    """2 rows, max_queue_size 1: at most 3 generations of a policy are accepted. The first two
    of a new policy left the parked list while its engine was being made and were counted
    nowhere, so 3 more were accepted meanwhile (5 in all, 2 beyond the bound)."""
    client, lm, scheduler = serve(max_decode_batch=2, max_queue_size=1, token_delay_s=0.02)
    _slow_engines(scheduler, monkeypatch, 0.6)
    body = {"prompt": "a", "max_new_tokens": 20, "depthwise_impl": "slice_sum"}
    with ThreadPoolExecutor(6) as pool:
        first = [pool.submit(client.post, "/v1/generate", json=body) for _ in range(2)]
        time.sleep(0.3)                                    # both taken in: the engine is being made
        later = list(pool.map(lambda _: client.post("/v1/generate", json=body), range(4)))
        codes = sorted(r.status_code for r in later)
        assert [f.result().status_code for f in first] == [200, 200]
    assert codes == [200, 503, 503, 503], [r.text for r in later]


def test_admitted_sequences_are_always_waiting_joining_or_in_a_row(model):
    """The server's admission (generation_room.free_rows, _pending) reads an engine's waiting,
    joining and rows from another thread while a step runs. A group being admitted was popped
    off `waiting` one by one before it became `joining`: meanwhile it was in neither, so its
    rows looked free and its sequences not queued, and a burst got past --max-queue-size."""
    from models.lfm2.continuous import ContinuousBatch, Sequence
    from models.lfm2.prefix_cache import PrefixCache

    seen = []

    class Watching(PrefixCache):   # lookup runs for each waiting sequence _admit considers
        def lookup(self, prompt):
            seen.append(len(engine.waiting) + len(engine.joining) + len(engine.rows))
            return super().lookup(prompt)

    engine = ContinuousBatch(model, capacity=4, max_length=40, prefix_cache=Watching(1 << 20, block=4))
    for i in range(6):
        engine.add(Sequence([3 + i, 5, 7], max_new_tokens=3))
    engine.step()
    assert seen and set(seen) == {6}, seen


def test_the_prefix_cache_budget_holds_across_policies(monkeypatch):
    """--prefix-cache-mib bounds the prefix states kept whatever depthwise_impl requests use.
    Each policy's engine had a PrefixCache of the whole budget, so while a second policy's
    engine was live the server held up to twice the budget (here 1 MiB: ~2 MiB). Checked after
    every store, with both engines live and their prompts sharing nothing."""
    import random
    import threading

    from models.lfm2 import prefix_cache as pc
    from inprocess_app import real_lm_client

    held, scheduler = [], {}
    store = pc.PrefixCache.store

    def watched(self, *args):
        store(self, *args)
        engines = scheduler["s"]._engines.values()   # a shared cache (PrefixSpace.cache) counted once
        caches = {id(c): c for c in (getattr(e.prefix_cache, "cache", e.prefix_cache) for e in engines)}
        held.append(sum(c.nbytes for c in caches.values()))
    monkeypatch.setattr(pc.PrefixCache, "store", watched)
    rng = random.Random(3)
    with real_lm_client(max_decode_batch=2, prefix_cache_mib=1, max_sequence_length=256,
                        max_new_tokens=200) as client:
        scheduler["s"] = client.app.state.service.generate.scheduler
        prompts = [[rng.randrange(1, 260) for _ in range(140)] for _ in range(8)]
        long = threading.Thread(target=client.post, args=("/v1/generate",), kwargs={"json": {
            "input_ids": [7, 8, 9], "max_new_tokens": 200, "depthwise_impl": "slice_sum"}})
        long.start()                          # keeps the slice_sum engine (and its cache) live
        for i, prompt in enumerate(prompts):
            impl = "slice_sum" if i % 2 else "auto"
            r = client.post("/v1/generate", json={"input_ids": prompt, "max_new_tokens": 1, "depthwise_impl": impl})
            assert r.status_code == 200, r.text
        long.join()
    assert held and max(held) <= 1 << 20, [round(b / 2**20, 2) for b in held]


def test_namespaces_of_one_prefix_cache_are_kept_apart(model):
    """Two policies' engines share one budget; neither restores the other's states."""
    from models.lfm2.prefill import Prefill
    from models.lfm2.prefix_cache import PrefixCache

    shared = PrefixCache(1 << 30, block=4)
    a, b = shared.namespace("native"), shared.namespace("fused")
    prompt = [5, 9, 2, 7, 3, 3, 8, 1, 4]
    Prefill(model, [prompt], prefix_cache=a).advance()
    assert a.lookup(prompt)[1] == 8 and b.lookup(prompt) is None and shared.lookup(prompt) is None
    kept = shared.nbytes
    Prefill(model, [prompt], prefix_cache=b).advance()
    assert b.lookup(prompt)[1] == 8 and shared.nbytes == a.nbytes == 2 * kept


def _leave(url: str, path: str, body: dict, after_s: float) -> None:
    """POST on a raw socket and close it after_s later, having read at most what came."""
    import json
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        send_json_post(s, path, json.dumps(body).encode())
        s.settimeout(after_s)
        try:
            s.recv(300)
        except OSError:
            pass


def test_mixed_load_with_clients_leaving_leaves_the_engine_as_it_found_it(caplog):
    """The real lfm2-demo behind uvicorn: JSON and streamed generations, n=3 choices, prompts
    sharing prefixes while the prefix cache evicts, requests at max_sequence_length exactly and
    clients that leave at random points (queued, prefilling, decoding). Afterwards: every
    request counted once, nothing in flight, every row and slot free, the prefix cache's bytes
    what its chains hold and within budget, and a probe's tokens those of the idle server."""
    import random

    import httpx
    import torch

    from models.registry import build_model
    from service.app import create_app
    from service.settings import Settings
    from test_service_server import in_process_server

    settings = Settings(models=("lfm2",), warmup=False, max_decode_batch=4, max_queue_size=32, prefix_cache_mib=1,
                        max_sequence_length=160, max_new_tokens=40, prefill_chunk_tokens=32, request_timeout_s=30)
    app = create_app(settings, models={"lfm2": build_model("lfm2", None, device="cpu", seed=0)})
    rng = random.Random(5)
    shared = [rng.randrange(1, 260) for _ in range(130)]
    jobs = []
    for i in range(20):
        ids = shared[:rng.choice([64, 100, 128])] + [rng.randrange(1, 260) for _ in range(rng.randint(1, 20))]
        kind = ("json", "stream", "leave", "leave-stream", "n3", "full")[i % 6]
        body = {"input_ids": ids, "max_new_tokens": rng.randint(1, 12), "stream": kind.endswith("stream")}
        if kind == "n3":
            body = {"prompt": "ab " * rng.randint(1, 30), "max_tokens": 6, "n": 3, "stream": i % 4 == 0}
        if kind == "full":   # prompt + max_new_tokens = max_sequence_length exactly
            body = {"input_ids": [rng.randrange(1, 260) for _ in range(150)], "max_new_tokens": 10}
        jobs.append((kind, "/v1/completions" if kind == "n3" else "/v1/generate", body, rng.uniform(0, 0.4)))
    probe = {"input_ids": [3, 70, 100, 12, 40], "max_new_tokens": 8, "temperature": 0.9, "seed": 5}
    with caplog.at_level("ERROR"), in_process_server(app) as url:
        scheduler = app.state.service.generate.scheduler
        idle = httpx.post(url + "/v1/generate", json=probe, timeout=30).json()["token_ids"]
        sent = metric_sum(url, "dwserve_requests_total")

        def run(job):
            kind, path, body, after_s = job
            if kind.startswith("leave"):
                return _leave(url, path, body, after_s)
            r = httpx.post(url + path, json=body, timeout=60)
            assert r.status_code == 200, r.text
            assert "data: [DONE]" in r.text if body.get("stream") else "usage" in r.json()
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(run, jobs))
        deadline = time.time() + 10
        while (metric_sum(url, "dwserve_inflight_requests") or scheduler._busy()) and time.time() < deadline:
            time.sleep(0.05)
        assert metric_sum(url, "dwserve_requests_total") - sent == len(jobs)
        assert metric_sum(url, "dwserve_inflight_requests") == 0
        assert not (scheduler._incoming or scheduler._parked or scheduler._entering or scheduler._reserved)
        assert not any(scheduler._tickets.values())
        engine = scheduler._engines["auto"]
        dec = engine.decoder
        assert not (engine.rows or engine.joining or engine.waiting or engine.prefill) and dec.live == 0
        assert sum(dec.lengths) == 0 and not dec.slot.any() and not dec.store.key_mask.any()
        cache = engine.prefix_cache.cache
        held = sum(t.numel() * t.element_size() for c in cache.chains.values()
                   for t in [*c.keys, *c.values, *(s for states in c.conv.values() for s in states)]
                   if isinstance(t, torch.Tensor))
        assert cache.chains and cache.nbytes == held <= cache.max_bytes
        assert all(id(c) in cache.chains for c, _ in cache.index.values())
        assert httpx.post(url + "/v1/generate", json=probe, timeout=30).json()["token_ids"] == idle
    assert not caplog.records, caplog.text
