"""Admission to continuous batching (service/generation.py), with fake models: the queue
bound counts only what waits beyond the free rows, an n-choice request is admitted all or
none (400 when it can never fit), and requests of many depthwise policies never make more
than the default policy's engine plus OTHER_ENGINES (each a full cache)."""
import itertools
import time
from concurrent.futures import ThreadPoolExecutor

from service.generation_room import OTHER_ENGINES

from test_service_generation import _engine, _expected, serve  # noqa: F401 - serve is a fixture
from error_bodies import error_message


def _completion(client, n: int, max_tokens: int = 2, prompt: str = "a"):
    return client.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "n": n,
                                                "temperature": 0})


def test_an_idle_server_takes_as_many_sequences_as_it_has_free_rows(serve):
    """max_queue_size 4 but 16 free rows: n=8 and a burst of 10 all run at once (before,
    requests about to take a free row counted as waiting: always 503 for n=8)."""
    client, lm, scheduler = serve(max_decode_batch=16, max_queue_size=4, token_delay_s=0.02)
    r = _completion(client, n=8, max_tokens=3)
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == [_expected("a", 3)] * 8
    before = len(_engine(scheduler).steps)
    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda p: client.post("/v1/generate", json={"prompt": p, "max_new_tokens": 20}),
                                "abcdefghij"))
    assert [r.status_code for r in replies] == [200] * 10, [r.text for r in replies if r.status_code != 200]
    assert [r.json()["text"] for r in replies] == [_expected(p, 20) for p in "abcdefghij"]
    assert max(_engine(scheduler).steps[before:]) >= 5    # they decoded together, not queued one by one


def test_the_queue_bound_still_holds_beyond_the_free_rows(serve):
    """2 rows busy, max_queue_size 2: a third and fourth single request queue, a fifth is 503."""
    client, lm, scheduler = serve(max_decode_batch=2, max_queue_size=2, token_delay_s=0.02)
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client.post, "/v1/generate", json={"prompt": p, "max_new_tokens": 40}) for p in "ab"]
        time.sleep(0.2)                                    # both admitted: the two rows are taken
        queued = [pool.submit(client.post, "/v1/generate", json={"prompt": p, "max_new_tokens": 2}) for p in "cd"]
        time.sleep(0.1)
        r = client.post("/v1/generate", json={"prompt": "e", "max_new_tokens": 2})
        assert r.status_code == 503 and "max_queue_size=2" in error_message(r) and r.headers["Retry-After"]
        assert [f.result().status_code for f in running + queued] == [200] * 4
        assert [f.result().json()["text"] for f in queued] == [_expected(p, 2) for p in "cd"]


def test_n_choices_are_admitted_all_or_none(serve):
    """2 rows busy, max_queue_size 2: n=3 cannot all wait, so none does (a 503 that leaves the
    queue empty); n=2 fits the queue and is served once the rows free."""
    client, lm, scheduler = serve(max_decode_batch=2, max_queue_size=2, token_delay_s=0.02)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(_completion, client, 2, 30)
        time.sleep(0.2)
        r = _completion(client, n=3)
        assert r.status_code == 503 and "max_queue_size=2" in error_message(r)
        assert scheduler.waiting == 0                      # not one of the three took a place
        fits = pool.submit(_completion, client, 2, 2, "k")
        time.sleep(0.1)
        assert scheduler.waiting == 2                      # the n=2 request waits, whole
        assert running.result().status_code == 200
        assert [c["text"] for c in fits.result().json()["choices"]] == [_expected("k", 2)] * 2


def test_n_that_can_never_fit_is_a_400_naming_the_limits(serve):
    client, lm, scheduler = serve(max_decode_batch=2, max_queue_size=2)
    r = _completion(client, n=5)
    assert r.status_code == 400
    assert "--max-decode-batch" in error_message(r) and "--max-queue-size" in error_message(r)
    assert "n <= 4" in error_message(r)
    assert _completion(client, n=4).status_code == 200     # the largest that fits, on an idle server


def test_many_policies_never_hold_more_than_the_allowed_engines(serve, monkeypatch):
    """Requests of four policies at once: each engine is made while at most OTHER_ENGINES
    others are live (the default's included: it is never dropped), the rest of the policies
    waiting meanwhile, and every request gets its tokens."""
    client, lm, scheduler = serve(max_decode_batch=2, token_delay_s=0.01)
    at_creation = []   # (engines live, tickets parked) whenever an engine is made
    make = lm.lm.continuous_batch

    def counted(*args, **kwargs):   # on the compute thread, while the scheduler thread waits for it
        at_creation.append((len(scheduler._engines), len(scheduler._parked)))
        return make(*args, **kwargs)

    monkeypatch.setattr(lm.lm, "continuous_batch", counted)
    impls = ["per_group", "slice_sum", "native", "compiled"]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: client.post("/v1/generate", json={
            "prompt": "ab"[i % 2], "max_new_tokens": 6, "depthwise_impl": impls[i % 4]}), range(8)))
    assert [r.json()["parameters"]["depthwise_impl"] for r in replies] == impls * 2
    assert [r.json()["text"] for r in replies] == [_expected("ab"[i % 2], 6) for i in range(8)]
    assert len(at_creation) >= 4
    assert max(live for live, _ in at_creation) <= OTHER_ENGINES      # + the one being made
    assert max(parked for _, parked in at_creation) > 0                # the policies did contend
    assert set(scheduler._engines) == {"auto"}                         # idle others dropped


def test_a_waiting_policy_is_not_starved_by_a_busy_one(serve):
    """per_group holds the other engine; slice_sum arrives, then more per_group: slice_sum
    runs next, and the later per_group request after it (first come, first served)."""
    client, lm, scheduler = serve(max_decode_batch=4, token_delay_s=0.02)
    lm.calls.clear()

    def gen(prompt, n, impl):
        return client.post("/v1/generate", json={"prompt": prompt, "max_new_tokens": n, "depthwise_impl": impl})

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(gen, "a", 20, "per_group")
        time.sleep(0.15)
        waiting = pool.submit(gen, "k", 3, "slice_sum")
        time.sleep(0.1)
        later = pool.submit(gen, "x", 3, "per_group")
        assert [f.result().status_code for f in (first, waiting, later)] == [200] * 3
    blocks = [impl for impl, _ in itertools.groupby(impl for _, impl in lm.calls)]
    assert blocks == ["per_group", "slice_sum", "per_group"]
    assert max(rows for rows, impl in lm.calls if impl == "per_group") == 1   # `later` never joined `first`


def test_a_group_in_both_lists_is_held_once():
    """ContinuousBatch.step moves a joining group into `rows` a statement before it empties
    `joining`; an admission check landing between them counted the group twice (free rows
    too few: a spurious 503 at the queue bound)."""
    from types import SimpleNamespace

    from service.generation_room import free_rows
    group, live = [object(), object()], [object()]
    moving = SimpleNamespace(capacity=8, rows=live + group, joining=group)    # between the two statements
    assert free_rows(moving) == 5 == free_rows(SimpleNamespace(capacity=8, rows=live + group, joining=[]))


def test_would_queue_counts_only_what_the_free_rows_cannot_take():
    from collections import Counter
    from types import SimpleNamespace

    from service.generation_room import would_queue

    def engine(capacity, rows, joining=0):
        return SimpleNamespace(capacity=capacity, rows=[object() for _ in range(rows)],
                               joining=[object() for _ in range(joining)])   # distinct sequences

    engines = {"auto": engine(16, rows=10, joining=2)}                     # 4 rows free
    assert would_queue(Counter(auto=4), engines, "auto", 16) == 0
    assert would_queue(Counter(auto=7), engines, "auto", 16) == 3
    # No engine yet: the default's and the first other policy's will be made with every row
    # free; a second other policy has none until an engine is dropped.
    assert would_queue(Counter(per_group=16), {}, "auto", 16) == 0
    assert would_queue(Counter(per_group=16, slice_sum=2), {}, "auto", 16) == 2
    engines["per_group"] = engine(16, rows=16)
    assert would_queue(Counter(per_group=1, slice_sum=2, auto=1), engines, "auto", 16) == 3


def test_newcomers_parked_behind_another_policy_count_against_the_queue(serve):
    """A per_group generation holds the one other engine (1 of 4 rows); a slice_sum request
    waits for an engine (the one allowed waiter, max_queue_size 1). Later per_group requests
    are kept behind it (no starvation), so they would wait too: 503, not admitted past the bound."""
    client, lm, scheduler = serve(max_decode_batch=4, max_queue_size=1, token_delay_s=0.02)
    gen = lambda p, n, impl: client.post("/v1/generate", json={"prompt": p, "max_new_tokens": n,
                                                               "depthwise_impl": impl})
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(gen, "a", 60, "per_group")
        time.sleep(0.2)
        parked = pool.submit(gen, "k", 3, "slice_sum")
        time.sleep(0.1)
        more = [pool.submit(gen, p, 3, "per_group") for p in "xyz"]
        time.sleep(0.3)
        assert scheduler.waiting <= 1
        codes = [f.result().status_code for f in (first, parked, *more)]
    assert codes == [200, 200, 503, 503, 503], codes


def test_would_queue_gives_blocked_policies_no_rows():
    from collections import Counter
    from types import SimpleNamespace

    from service.generation_room import would_queue

    engines = {"per_group": SimpleNamespace(capacity=4, rows=[object()], joining=[])}      # 3 rows free
    assert would_queue(Counter(per_group=3), engines, "auto", 4) == 0
    assert would_queue(Counter(per_group=3, slice_sum=1), engines, "auto", 4, others_blocked=True) == 4
    assert would_queue(Counter(auto=2, slice_sum=1), engines, "auto", 4, others_blocked=True) == 1   # default unaffected


def test_a_prompt_batch_is_admitted_whole_or_named_in_the_400(serve):
    """OpenAI's batched prompts: each prompt's n choices are sequences of the one reservation,
    so prompts x n beyond the rows and queue is a 400 naming both fields, and a batch that
    fits is served whole, prompt i's choices at i*n .. i*n+n-1."""
    client, lm, scheduler = serve(max_decode_batch=2, max_queue_size=2)
    body = {"prompt": ["a", "b", "c"], "max_tokens": 2, "n": 2, "temperature": 0}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400 and "prompt (3 prompts) x n (2): 6 sequences" in error_message(r)
    assert "prompt (3 prompts) x n (2) <= 4" in error_message(r)
    r = client.post("/v1/completions", json={**body, "prompt": ["a", "b"]})
    assert r.status_code == 200, r.text
    assert [(c["index"], c["text"]) for c in r.json()["choices"]] == \
        [(0, _expected("a", 2)), (1, _expected("a", 2)), (2, _expected("b", 2)), (3, _expected("b", 2))]
