"""service.compute.ComputeThread: every call on one OS thread, results and errors back to
the caller, re-entrant from that thread, and the real service runs its forwards there."""
import threading

import pytest

from service.compute import ComputeThread


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


def test_other_models_run_between_the_tokens_of_a_generation():
    """A long generation holds the compute thread one token at a time: a classify batch
    submitted mid-generation finishes long before the generation does."""
    import time

    import numpy as np

    from service.app import Service
    from service.runtime import Job
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    svc = Service(Settings(warmup=False), models=fake_models(token_delay_s=0.02), hooks=fake_hooks())
    svc.load()
    try:
        lm_rt, cnn_rt = svc.runtimes["lfm2"], svc.runtimes["mobilenet_v2"]
        lm = lm_rt.served.lm
        tokens, done = [], {}

        def job():   # as GenerateHandler's: 40 tokens x 20 ms, each step on the compute thread
            steps = lm.stream_generate([[1, 2]], max_new_tokens=40)
            while True:
                ident, step = lm_rt.on_compute(lambda: (threading.get_ident(), next(steps, None)))
                if step is None:
                    break
                tokens.append((ident, time.perf_counter()))
            done["gen"] = time.perf_counter()

        gen = lm_rt.batcher.submit(Job(job, "auto"), None, 1)
        time.sleep(0.1)                                   # generation under way
        x = np.zeros((1, 3, 224, 224), np.float32)
        key = ("tensor", "auto", (("input", x.dtype.str, x.shape[1:]),))
        cnn = cnn_rt.batcher.submit({"input": x}, key, 1)
        cnn.result(10)
        t_cnn = time.perf_counter()
        gen.result(30)
        assert len(tokens) == 40 and t_cnn < done["gen"] - 0.2
        compute_ident = svc.compute.call(threading.get_ident)
        assert {ident for ident, _ in tokens} == {compute_ident}
    finally:
        svc.stop()
