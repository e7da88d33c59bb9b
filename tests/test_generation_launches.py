"""dwserve_kernel_launches_per_token: continuous batching counts the launches of a pure decode
step (service/generation_launches.py TokenLaunchCounter, run by GenerationScheduler._run_step) and divides by the rows it decoded.

With fake models: the gauge appears after a generation (warm-up included), equals the count /
rows, is measured once per (impl, rows bucket) and again every launch_recount_every steps, and
never on a step where a sequence joins. With the real lfm2-demo on CPU: per_group's aten ops per
token dwarf slice_sum's, the value equals count_launches around one decode step of an engine
built here, a prefill-only generation sets nothing, and /metrics still parses.
"""
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import FakeContinuousBatch, fake_hooks, fake_models

from server_process import client_ready

GAUGE = "dwserve_kernel_launches_per_token"


def _gauge(text: str, impl: str, kind: str = "aten_ops", model: str = "lfm2"):
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == GAUGE and s.labels == {"model": model, "impl": impl, "kind": kind}:
                return s.value
    return None


# --- fake models ------------------------------------------------------------------------------

class _Hooks:
    """fake_hooks (count: 100 under per_group, else 10) that records each count, and whether a
    count is running (so the engine can say which of its steps were counted)."""

    def __init__(self):
        self.base, self.calls, self.counting = fake_hooks(), [], False
        self.use_impl, self.depthwise_timer, self.impls = self.base.use_impl, self.base.depthwise_timer, self.base.impls

    def count_launches(self, fn, *args, **kwargs):
        self.counting = True
        try:
            count = self.base.count_launches(fn, *args, **kwargs)
        finally:
            self.counting = False
        self.calls.append(count.aten_ops)
        return count


@pytest.fixture
def fake_serve(monkeypatch):
    """A live app on fake models whose engine records every step: (live rows before, a
    sequence joined, counted)."""
    hooks, log, clients = _Hooks(), [], []
    step = FakeContinuousBatch.step

    def recorded(engine):
        rows, joins = len(engine.rows), bool(engine.waiting) and len(engine.rows) < engine.capacity
        out = step(engine)
        log.append((rows, joins, hooks.counting))
        return out
    monkeypatch.setattr(FakeContinuousBatch, "step", recorded)

    def make(**settings):
        app = create_app(Settings(**{"request_timeout_s": 20, **settings}),
                         models=fake_models(token_delay_s=0.005), hooks=hooks)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        client_ready(client)
        return client, hooks, log

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _generate(client, impl, n=8, prompt="ab"):
    r = client.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": n, "depthwise_impl": impl})
    assert r.status_code == 200, r.text
    return r.json()


def test_warmup_and_a_generation_set_the_gauge(fake_serve):
    client, hooks, log = fake_serve()
    # warm-up (default impl auto): its second step is the first pure decode, counted
    assert _gauge(client.get("/metrics").text, "auto") == 10
    assert _gauge(client.get("/metrics").text, "per_group") is None
    _generate(client, "per_group")
    text = client.get("/metrics").text
    assert _gauge(text, "per_group") == 100 and _gauge(text, "per_group", "cuda_kernels") is None
    # generation launches stay out of the one-shot counter (its rule divides by one-shot requests)
    assert not re.search(r'^dwserve_kernel_launches_total\{[^}]*impl="per_group"', text, re.M)


def test_value_is_per_row_and_a_joining_step_is_never_counted(fake_serve):
    client, hooks, log = fake_serve(launch_recount_every=1, max_decode_batch=4)
    start = len(log)
    with ThreadPoolExecutor(3) as pool:     # staggered: later ones join while others decode
        futures = []
        for i in range(3):
            futures.append(pool.submit(_generate, client, "per_group", 12 + 4 * i, "abc"[i]))
            time.sleep(0.02)
        [f.result() for f in futures]
    steps = log[start:]
    assert any(joins for _, joins, _ in steps) and any(rows == 3 for rows, _, _ in steps)
    assert not any(counted for _, joins, counted in steps if joins)        # a prefill is never counted
    pure = [rows for rows, joins, _ in steps if rows and not joins]
    assert [rows for rows, _, counted in steps if counted] == pure         # every 1 step: all pure ones
    # the last pure step decoded `pure[-1]` rows: 100 launches / those rows
    assert _gauge(client.get("/metrics").text, "per_group") == pytest.approx(100 / pure[-1])
    # n=2 choices decode side by side to the end: every counted step had 2 rows
    r = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 6, "n": 2, "depthwise_impl": "native"})
    assert r.status_code == 200, r.text
    assert _gauge(client.get("/metrics").text, "native") == 10 / 2


def test_counted_once_per_rows_bucket_then_every_n_steps(fake_serve):
    client, hooks, log = fake_serve(launch_recount_every=1000)

    def counted():
        return sum(c for _, _, c in log)
    assert counted() == 1                              # the warm-up's one pure decode step
    _generate(client, "auto", 20)                      # 1 row: that bucket is counted already
    assert counted() == 1
    _generate(client, "slice_sum", 20)                 # a new impl: counted once in 19 pure steps
    assert counted() == 2 and _gauge(client.get("/metrics").text, "slice_sum") == 10

    client2, hooks2, log2 = fake_serve(launch_recount_every=5)   # (log2 is log: one recorder)
    start = len(log2)
    _generate(client2, "auto", 21)                     # 20 pure steps after the first token
    at = [i for i, (_, _, c) in enumerate(log2[start:]) if c]
    assert 3 <= len(at) <= 5 and all(b - a >= 5 for a, b in zip(at, at[1:])), at


# --- the real lfm2-demo on CPU ---------------------------------------------------------------

PROMPT = list(range(40, 52))


@pytest.fixture(scope="module")
def real():
    from models.registry import build_model
    lm = build_model("lfm2", None, device="cpu", seed=0)
    settings = Settings(models=("lfm2",), max_sequence_length=256, max_decode_batch=4, warmup=False,
                        depthwise_impl="slice_sum")
    app = create_app(settings, models={"lfm2": lm})
    with TestClient(app) as c:
        client_ready(c)
        yield c, lm, settings


def _real_generate(client, impl, n):
    r = client.post("/v1/generate", json={"input_ids": PROMPT, "max_new_tokens": n, "depthwise_impl": impl,
                                          "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert len(r.json()["token_ids"]) == n


def _independent_count(lm, settings, impl, n=3) -> float:
    """count_launches around the second step of a fresh engine holding the same sequence: the
    first step prefills, the second decodes its one row."""
    from models.depthwise import use_impl
    from models.lfm2.continuous import ContinuousBatch, Sequence
    from models.profiling import count_launches

    model = lm.lm
    with use_impl(impl), torch.inference_mode():
        engine = ContinuousBatch(model, settings.max_decode_batch, settings.max_sequence_length,
                                 prefill_chunk=settings.prefill_chunk_tokens or None)
        engine.add(Sequence(list(PROMPT), max_new_tokens=n, stop_token_ids=()))
        assert not engine.decode_only                  # waiting, rows free: a prefill comes
        engine.step()
        assert engine.decode_only and len(engine.rows) == 1
        return count_launches(engine.step).aten_ops / 1


def test_real_lfm2_per_group_launches_per_token_dwarf_slice_sums(real):
    client, lm, settings = real
    _real_generate(client, "per_group", 3)
    _real_generate(client, "slice_sum", 3)
    text = client.get("/metrics").text
    before, after = _gauge(text, "per_group"), _gauge(text, "slice_sum")
    assert before is not None and after is not None, text
    # 5 conv layers of 1024 channels: per_group dispatches ~C ops per layer per token
    assert before > 5 * 1024 and before > 10 * after, (before, after)
    assert before == _independent_count(lm, settings, "per_group")
    assert after == _independent_count(lm, settings, "slice_sum")


def test_decode_only_is_false_while_a_sequence_joins(real):
    """ContinuousBatch.decode_only on the real engine: live rows and nothing to prefill."""
    from models.depthwise import use_impl
    from models.lfm2.continuous import ContinuousBatch, Sequence

    _, lm, _ = real
    with use_impl("slice_sum"), torch.inference_mode():
        engine = ContinuousBatch(lm.lm, 2, 256, prefill_chunk=4)
        assert not engine.decode_only                              # no live row
        a = engine.add(Sequence([5, 6, 7], max_new_tokens=30))
        engine.step()
        assert engine.rows == [a] and engine.decode_only
        b = engine.add(Sequence(list(range(20, 32)), max_new_tokens=30))
        assert not engine.decode_only                              # b joins at the next step
        engine.step()
        assert engine.prefill is not None and not engine.decode_only   # b's prefill: 3 chunks
        while engine.prefill is not None:
            engine.step()
        assert engine.rows == [a, b] and engine.decode_only
        engine.add(Sequence([9], max_new_tokens=3))
        assert engine.decode_only                                  # it waits: no row is free
        engine.cancel(a)
        assert not engine.decode_only                              # a's row frees, the next joins


def test_real_lfm2_prefill_only_step_is_not_counted(real):
    client, lm, settings = real
    _real_generate(client, "native", 1)               # one token: the prefill step, no decode
    assert _gauge(client.get("/metrics").text, "native") is None
    _real_generate(client, "native", 2)               # then one pure decode step
    assert _gauge(client.get("/metrics").text, "native") is not None


def test_metrics_exposition_parses(real):
    from prometheus_client.parser import text_string_to_metric_families
    client, _, _ = real
    _real_generate(client, "slice_sum", 2)
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    fam = families[GAUGE]
    assert fam.type == "gauge" and fam.samples
    promtool = shutil.which("promtool")
    if promtool is not None:
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and GAUGE not in r.stdout + r.stderr, r.stdout + r.stderr
