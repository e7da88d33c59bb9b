"""Service start and stop racing each other (service/app.py): a shutdown that comes while the
loader thread is still building and warming models (SIGTERM during a slow start, a test client
leaving early). stop() iterated the runtimes dict while the loader inserted into it
('dictionary changed size during iteration' out of the lifespan), stopped only the models
already warm, and the loader went on to start the rest after it."""
import logging
import threading
import time

import pytest

from service.app import Service
from service.runtime import ModelRuntime
from service.settings import Settings
from service.testing import fake_hooks, fake_models

FORWARD_S = 0.2     # each fake forward (warm-up runs several per model)


@pytest.fixture()
def runtime_log(monkeypatch):
    """Which runtimes were started and which stopped, in order."""
    events = []
    start, stop = ModelRuntime.start, ModelRuntime.stop

    def started(self):
        events.append(("start", self))
        return start(self)

    def stopped(self, timeout=None):
        events.append(("stop", self))
        return stop(self, timeout)

    monkeypatch.setattr(ModelRuntime, "start", started)
    monkeypatch.setattr(ModelRuntime, "stop", stopped)
    return events


def test_a_shutdown_while_loading_stops_every_started_model_and_starts_no_more(runtime_log, caplog):
    service = Service(Settings(graceful_shutdown_s=5), models=fake_models(delay_s=FORWARD_S), hooks=fake_hooks())
    loader = threading.Thread(target=service.load)
    loader.start()
    deadline = time.time() + 10
    while not runtime_log and time.time() < deadline:     # the first model is warming up
        time.sleep(0.005)
    assert runtime_log and not service.ready
    with caplog.at_level(logging.INFO, logger="dwserve"):
        service.stop()
        loader.join(30)
    assert not loader.is_alive()
    started = [rt for what, rt in runtime_log if what == "start"]
    stopped = [rt for what, rt in runtime_log if what == "stop"]
    assert len(started) == 1, "a model was started after the shutdown began"
    assert stopped == started, "a model started while loading was never stopped"
    assert not service.ready and service.load_error is None       # cut short, not failed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_readiness_reads_while_models_are_added():
    """`ready` is read on the event loop while the loader adds runtimes: it must not raise."""
    service = Service(Settings(), models=fake_models(), hooks=fake_hooks())
    errors, done = [], threading.Event()

    def read():
        while not done.is_set():
            try:
                service.ready
            except RuntimeError as exc:       # noqa: PERF203 - the race this test looks for
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        service.load()
    finally:
        done.set()
        reader.join()
    assert service.ready and not errors
    service.stop()


def test_a_shutdown_during_the_last_warm_up_leaves_no_generation_scheduler_running(monkeypatch):
    """stop() read `generate` before the loader set it: a shutdown while lfm2 (the generate
    model) warmed up found none to stop, and the loader then started its scheduler thread,
    which nothing ever stopped."""
    service = Service(Settings(graceful_shutdown_s=5, warmup=False), models=fake_models(), hooks=fake_hooks())
    warmup = ModelRuntime.warmup

    def warmup_then_shutdown(self):
        warmup(self)
        if self.name == service.generate_model:   # the shutdown lands between warm-up and setup
            stopper = threading.Thread(target=service.stop)
            stopper.start()
            stopper.join(10)

    monkeypatch.setattr(ModelRuntime, "warmup", warmup_then_shutdown)
    service.load()
    running = [t.name for t in threading.enumerate() if t.name.startswith("dwserve-generate-")]
    assert not running, f"generation scheduler left running after the shutdown: {running}"
    assert not service.ready
