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
