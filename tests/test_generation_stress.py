"""Stress cases of continuous batching (service/generation.py, models/lfm2/continuous.py): the
admission bound while an engine is being made, clients leaving at every point, the prefix
cache evicting under load, timeouts and shutdown, each followed by the invariants an operator
relies on: every request one outcome, the metrics agree, every row free again, the prefix
cache's bytes accounted, and the same tokens as on an idle server."""
import time
from concurrent.futures import ThreadPoolExecutor

import continuous_helpers
import test_service_generation

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
