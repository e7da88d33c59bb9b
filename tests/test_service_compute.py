"""service.compute.ComputeThread: every call on one OS thread, results and errors back to
the caller, re-entrant from that thread, and the real service runs its forwards there; and
ModelRuntime.forward's launch counting: once per shape class, never inside compute time."""
import threading
import time

import pytest
import torch

from service.compute import ComputeThread
from service.metrics import ServiceMetrics
from service.runtime import ModelRuntime
from service.settings import Settings
from service.testing import fake_hooks, fake_models


def test_calls_from_many_threads_run_on_one_thread():
    compute = ComputeThread()
    seen, errors = set(), []

    def client(i):
        try:
            ident, value = compute.call(lambda v: (threading.get_ident(), v * 2), i)
            seen.add(ident)
            assert value == 2 * i
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    compute.shutdown()
    assert not errors and len(seen) == 1 and threading.get_ident() not in seen


def test_exceptions_reach_the_caller_and_the_thread_survives():
    compute = ComputeThread()
    with pytest.raises(ValueError, match="bad row"):
        compute.call(lambda: (_ for _ in ()).throw(ValueError("bad row")))
    assert compute.call(lambda: 7) == 7
    compute.shutdown()


def test_a_call_from_the_compute_thread_runs_inline():
    compute = ComputeThread()
    outer = compute.call(lambda: (threading.get_ident(), compute.call(threading.get_ident)))
    assert outer[0] == outer[1]     # no deadlock, same thread
    compute.shutdown()


def test_service_forwards_run_on_its_compute_thread(monkeypatch):
    """The model is built, warmed up and run on Service.compute, not on batcher threads."""
    from service.app import Service
    from service.runtime import ModelRuntime
    from service.settings import Settings

    threads = {}
    real_forward = ModelRuntime.forward

    def forward(self, batch, impl):
        threads.setdefault(self.name, set()).add(threading.get_ident())
        return real_forward(self, batch, impl)

    monkeypatch.setattr(ModelRuntime, "forward", forward)
    svc = Service(Settings(models=["mobilenet_v2"], warmup=True, max_batch_size=2))
    svc.load()
    try:
        assert svc.ready
        compute_ident = svc.compute.call(threading.get_ident)
        import numpy as np
        rt = svc.runtimes["mobilenet_v2"]
        x = np.zeros((1, 3, 224, 224), np.float32)
        fut = rt.batcher.submit({"input": x}, ("tensor", "auto", (("input", x.dtype.str, x.shape[1:]),)), 1)
        assert fut.result(60)
        assert threads["mobilenet_v2"] == {compute_ident}
    finally:
        svc.stop()


def test_other_models_run_between_the_tokens_of_a_generation(monkeypatch):
    """A long generation holds the compute thread one decode step at a time (its
    GenerationScheduler hands each step to ModelRuntime.on_compute): a classify batch
    submitted mid-generation finishes long before the generation does."""
    import numpy as np

    from models.lfm2.continuous import Sequence
    from service.app import Service
    from service.testing import FakeContinuousBatch

    step_threads = set()
    real_step = FakeContinuousBatch.step

    def step(self):   # 40 tokens x 20 ms, each step recorded where it ran
        step_threads.add(threading.get_ident())
        return real_step(self)

    monkeypatch.setattr(FakeContinuousBatch, "step", step)
    svc = Service(Settings(warmup=False), models=fake_models(token_delay_s=0.02), hooks=fake_hooks())
    svc.load()
    try:
        tokens, done = [], {}
        finished = threading.Event()

        def emit(event):
            if event[0] == "token":
                tokens.append(event[1])
            else:
                done["gen"] = time.perf_counter()
                finished.set()

        svc.generate.scheduler.submit(Sequence([1, 2], max_new_tokens=40), "auto", emit)
        time.sleep(0.1)                                   # generation under way
        cnn_rt = svc.runtimes["mobilenet_v2"]
        x = np.zeros((1, 3, 224, 224), np.float32)
        key = ("tensor", "auto", (("input", x.dtype.str, x.shape[1:]),))
        cnn_rt.batcher.submit({"input": x}, key, 1).result(10)
        t_cnn = time.perf_counter()
        assert finished.wait(30)
        assert len(tokens) == 40 and t_cnn < done["gen"] - 0.2
        assert step_threads == {svc.compute.call(threading.get_ident)}
    finally:
        svc.stop()


# --- ModelRuntime.forward: launch counting, bounded and kept out of the timed forward ---------

def _value(runtime_metrics, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    want = set(labels.items())
    return sum(s.value for fam in text_string_to_metric_families(runtime_metrics.render().decode())
               for s in fam.samples if s.name == name and want <= set(s.labels.items()))


class _CountingHooks:
    """fake_hooks whose count_launches also sleeps (a counted forward is slow, as the profiler's
    is) and records each call."""

    def __init__(self, slow_s=0.05):
        self.base, self.calls, self.slow_s = fake_hooks(), 0, slow_s
        self.use_impl, self.depthwise_timer, self.impls = self.base.use_impl, self.base.depthwise_timer, self.base.impls

    def count_launches(self, fn, *args, **kwargs):
        self.calls += 1
        time.sleep(self.slow_s)
        return self.base.count_launches(fn, *args, **kwargs)


def _runtime(hooks, **settings):
    served = fake_models()["lfm2"]
    metrics = ServiceMetrics()
    return ModelRuntime(served, Settings(**settings), metrics, hooks), metrics


def test_launch_recount_is_per_shape_class_not_per_length():
    hooks = _CountingHooks(slow_s=0.0)
    rt, metrics = _runtime(hooks)
    for length in range(5, 17):            # 12 lengths, two classes: <= 8 and <= 16
        rt.forward({"input_ids": torch.ones(1, length, dtype=torch.int64)}, "per_group")
    assert hooks.calls == 2
    rt.forward({"input_ids": torch.ones(2, 9, dtype=torch.int64)}, "per_group")    # new rows
    rt.forward({"input_ids": torch.ones(1, 9, dtype=torch.int64)}, "native")       # new impl
    assert hooks.calls == 4
    # every forward still adds its class's count to the total
    assert _value(metrics, "dwserve_kernel_launches_total", impl="per_group", kind="aten_ops") == 13 * 100


def test_a_counted_forward_is_not_observed_in_compute_time():
    hooks = _CountingHooks(slow_s=0.2)
    rt, metrics = _runtime(hooks, depthwise_sample_every=1)
    batch = {"input_ids": torch.ones(1, 4, dtype=torch.int64)}
    rt.forward(batch, "per_group")          # counted (new class): slow, not timed
    for _ in range(3):
        rt.forward(batch, "per_group")      # timed
    assert hooks.calls == 1
    assert _value(metrics, "dwserve_compute_duration_seconds_count", impl="per_group") == 3
    assert _value(metrics, "dwserve_compute_duration_seconds_sum", impl="per_group") < 0.2
    assert _value(metrics, "dwserve_depthwise_duration_seconds_count", impl="per_group") == 3
    assert _value(metrics, "dwserve_batch_size_count") == 4                  # every forward's rows


def test_periodic_recount_is_not_timed_either():
    hooks = _CountingHooks(slow_s=0.0)
    rt, metrics = _runtime(hooks, launch_recount_every=3)
    batch = {"input_ids": torch.ones(1, 4, dtype=torch.int64)}
    for _ in range(7):                      # counted at forwards 1, 4, 7
        rt.forward(batch, "auto")
    assert hooks.calls == 3
    assert _value(metrics, "dwserve_compute_duration_seconds_count", impl="auto") == 4
