"""Continuous batching (models/lfm2/slots.py, continuous.py) against generating alone.

The reference is LFM2ForCausalLM.generate on one prompt at a time (the dynamic path, itself
checked against transformers in test_lfm2.py): every sequence of a continuous batch, however
it was interleaved with others joining and leaving, must get the tokens it gets alone.
"""
import copy
import random

import pytest
import torch

from models.depthwise import fused, use_impl
from models.lfm2 import decoding, slots as slots_mod
from models.lfm2.continuous import ContinuousBatch, Sequence
from models.lfm2.slots import SlotDecoder, buckets

from test_decoding import TINY, FakeRunner, host_ops, tiny_model, trace


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5)


def alone(model, seq: Sequence) -> list[int]:
    (out,) = model.generate([seq.prompt], max_new_tokens=seq.max_new_tokens, temperature=seq.temperature,
                            top_k=seq.top_k, top_p=seq.top_p, seed=seq.seed,
                            stop_token_ids=seq.stop_token_ids, cuda_graph=False)
    return out


def random_sequences(n: int, rng: random.Random, vocab: int) -> list[Sequence]:
    seqs = []
    for i in range(n):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 12))]
        sampled = i % 3 == 2
        seqs.append(Sequence(prompt, max_new_tokens=rng.randint(1, 14),
                             temperature=0.8 if sampled else 0.0, top_k=20 if sampled else None,
                             top_p=0.9 if i % 6 == 5 else None, seed=100 + i,
                             stop_token_ids=(rng.randrange(vocab),) if i % 4 == 1 else ()))
    return seqs


def run_staggered(engine: ContinuousBatch, seqs: list[Sequence], rng: random.Random):
    """Add the sequences a few at a time between steps, as requests arriving under load."""
    pending = list(seqs)
    steps = 0
    while pending or engine.busy:
        for _ in range(rng.randint(0, 3)):
            if pending:
                engine.add(pending.pop(0))
        if engine.busy:
            engine.step()
            steps += 1
        assert steps < 1000
    return steps


@pytest.mark.parametrize("impl, chunk", [pytest.param(i, c, id=f"{i}-chunk{c}") for i, c in
                                         (("slice_sum", None), ("native", None), ("fused", None),
                                          ("slice_sum", 3), ("fused", 4))])
def test_every_sequence_gets_the_tokens_it_gets_alone(model, impl, chunk):
    """chunk: prompts prefilled `chunk` columns per step (prompts here are 1-12 tokens)."""
    rng = random.Random(7)
    seqs = random_sequences(14, rng, TINY.vocab_size)
    with use_impl(impl):
        want = [alone(model, s) for s in seqs]
        engine = ContinuousBatch(model, capacity=4, max_length=40, prefill_chunk=chunk)
        steps = run_staggered(engine, seqs, rng)
    assert [s.tokens for s in seqs] == want
    assert all(s.done and s.row is None for s in seqs) and engine.decoder.live == 0
    for s in seqs:
        stopped = bool(s.stop_token_ids) and s.tokens[-1] in s.stop_token_ids
        assert s.finish_reason == ("stop" if stopped else "length")
    # Sharing happened: far fewer steps than generating them one after another.
    assert steps < (0.6 if chunk is None else 0.8) * sum(len(w) for w in want)
    assert len({tuple(w) for w in want}) > 10                     # the sequences differ


def test_rows_stay_a_prefix_and_follow_their_sequences(model):
    """Retiring a middle row moves the last live row into it; its sequence goes on unchanged."""
    seqs = [Sequence([3, 4, 5], max_new_tokens=9), Sequence([8], max_new_tokens=2),
            Sequence([1, 2], max_new_tokens=9)]
    want = [alone(model, s) for s in seqs]
    engine = ContinuousBatch(model, capacity=3, max_length=32)
    for s in seqs:
        engine.add(s)
    engine.step()                                                # all three admitted: rows 0, 1, 2
    assert [s.row for s in seqs] == [0, 1, 2]
    engine.step()                                                # the second is done: row 2 -> 1
    assert seqs[1].done and [s.row for s in seqs] == [0, None, 1] and engine.decoder.live == 2
    while engine.busy:
        engine.step()
    assert [s.tokens for s in seqs] == want


def test_cancel_frees_the_row_for_a_waiting_sequence(model):
    first, second = Sequence([5, 6], max_new_tokens=30), Sequence([7, 7, 7], max_new_tokens=5)
    engine = ContinuousBatch(model, capacity=1, max_length=40)
    engine.add(first)
    engine.add(second)
    engine.step()
    assert first.row == 0 and second.row is None                 # the batch is full: it waits
    engine.cancel(first)
    engine.step()
    assert first.finish_reason == "cancelled" and len(first.tokens) == 1
    assert second.row == 0
    while engine.busy:
        engine.step()
    assert second.tokens == alone(model, Sequence([7, 7, 7], max_new_tokens=5))


def test_a_long_prompt_joins_in_chunks_while_the_others_keep_decoding(model):
    """prefill_chunk=4: a 14-token prompt takes 4 steps to join; the live sequence gets a token
    at each of them, the joining one only once its prefill is done; both as alone."""
    live, joining = Sequence([3, 1, 4], max_new_tokens=10), Sequence(list(range(1, 15)), max_new_tokens=3)
    engine = ContinuousBatch(model, capacity=2, max_length=40, prefill_chunk=4)
    engine.add(live)
    engine.step()                                                # live joins (3 columns: 1 chunk)
    engine.add(joining)
    got = [[s for s, _ in engine.step()] for _ in range(4)]
    assert got == [[live], [live], [live], [live, joining]]      # 4 + 4 + 4 + 2 columns
    assert engine.prefill is None and joining.row == 1
    while engine.busy:
        engine.step()
    assert live.tokens == alone(model, Sequence([3, 1, 4], max_new_tokens=10))
    assert joining.tokens == alone(model, Sequence(list(range(1, 15)), max_new_tokens=3))


def test_cancelled_while_joining_never_gets_a_token(model):
    a, b = Sequence([5] * 9, max_new_tokens=4), Sequence([6] * 9, max_new_tokens=4)
    engine = ContinuousBatch(model, capacity=2, max_length=40, prefill_chunk=3)
    engine.add(a)
    engine.add(b)
    assert engine.step() == [] and engine.joining == [a, b]      # first chunk of three
    engine.cancel(a)
    engine.step()
    out = engine.step()                                          # the last chunk: b joins alone
    assert [s for s, _ in out] == [b] and a.tokens == [] and a.finish_reason == "cancelled"
    assert engine.decoder.live == 1 and b.row == 0
    engine.cancel(b)
    assert engine.step() == [] and not engine.busy


def test_admission_keeps_each_group_within_max_length(model):
    """A long prompt and a long generation are not padded into one group past max_length."""
    long_prompt = Sequence(list(range(1, 21)), max_new_tokens=2)
    long_gen = Sequence([4], max_new_tokens=18)
    engine = ContinuousBatch(model, capacity=2, max_length=24)
    engine.add(long_prompt)
    engine.add(long_gen)
    engine.step()
    assert long_prompt.row == 0 and long_gen.row is None         # 20 + 18 > 24: admitted later
    while engine.busy:
        engine.step()
    assert long_gen.tokens == alone(model, Sequence([4], max_new_tokens=18))


@pytest.mark.parametrize("bad, match", [
    pytest.param(Sequence([], max_new_tokens=2), "non-empty", id="empty-prompt"),
    pytest.param(Sequence([500], max_new_tokens=2), r"\[0, 97\)", id="token-out-of-vocab"),
    pytest.param(Sequence([1] * 10, max_new_tokens=30), "max_length 32", id="too-long"),
    pytest.param(Sequence([1], max_new_tokens=2, temperature=-1.0), "temperature", id="temperature"),
])
def test_bad_sequences_are_refused_naming_what_was_expected(model, bad, match):
    engine = ContinuousBatch(model, capacity=2, max_length=32)
    with pytest.raises(ValueError, match=match):
        engine.add(bad)
    assert not engine.busy


def test_cache_bytes_counts_every_row_and_slot(model):
    engine = ContinuousBatch(model, capacity=3, max_length=32)
    kv = 2 * 2 * 3 * TINY.num_key_value_heads * 32 * TINY.head_dim * 4        # 2 attention layers, K+V
    conv = 2 * 3 * TINY.hidden_size * (TINY.conv_L_cache - 1) * 4              # 2 conv layers
    assert engine.cache_bytes == kv + conv


def test_zero_new_tokens_is_done_at_once(model):
    engine = ContinuousBatch(model, capacity=2, max_length=32)
    seq = engine.add(Sequence([1, 2], max_new_tokens=0))
    assert seq.done and seq.finish_reason == "length" and not engine.busy


def test_graph_mode_replays_one_bucket_per_step(model, monkeypatch):
    """The CUDA-graph path on CPU (GraphRunner faked): graphs are captured once per bucket before
    any row is live, a step replays the smallest bucket that holds the live rows (padding rows
    compute unread values and never index past max_length), and tokens match generating alone."""
    monkeypatch.setattr(slots_mod, "GraphRunner", FakeRunner)
    monkeypatch.setattr(decoding, "graphs_supported", lambda m: True)
    FakeRunner.captures = 0
    rng = random.Random(11)
    seqs = random_sequences(9, rng, TINY.vocab_size)
    want = [alone(model, s) for s in seqs]
    engine = ContinuousBatch(model, capacity=5, max_length=30)      # cuda_graph=None: "on CUDA"
    assert engine.decoder.graph
    assert buckets(5) == [1, 2, 4, 5] and FakeRunner.captures == 4
    assert engine.decoder.live == 0 and not engine.decoder.slot.any()
    run_staggered(engine, seqs, rng)
    assert [s.tokens for s in seqs] == want
    assert FakeRunner.captures == 4


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "fused")])
def test_bucket_step_is_one_fixed_op_sequence_without_host_reads(model, impl):
    """What capturing a bucket's step needs (the graph is captured before any row is live and
    replayed whatever the rows hold): with two live rows at different slots, and again after
    rows left, moved and joined, the step over the bucket dispatches the same ops with the
    same non-tensor arguments, and nothing reads device data on the host."""
    def graph_step(dec):
        ops = trace(lambda: dec._forward(4, dec.max_length))      # what bucket 4 replays
        for r in range(dec.live):
            dec.lengths[r] += 1
        return ops

    with use_impl(impl), torch.inference_mode():
        dec = SlotDecoder(model, 4, 32, graph=False)
        rows, _ = dec.admit([[5, 9, 11, 4, 7], [8, 3]])
        dec.set_next(rows, torch.tensor([12, 40]))
        first = graph_step(dec)
        graph_step(dec)
        dec.release(0)                                             # row 1 moves into row 0
        rows, _ = dec.admit([[1, 2, 3]])
        dec.set_next(rows, torch.tensor([7]))
        last = graph_step(dec)
    assert dec.live == 2 and dec.lengths[:2] == [7 + 1, 3 + 1]
    assert len(first) > 50 and host_ops(first) == []
    assert first == last, next((a, b) for a, b in zip(first, last) if a != b) if len(first) == len(last) \
        else f"{len(first)} ops before, {len(last)} after"


def test_a_row_out_of_room_is_refused_not_overrun(model):
    dec = SlotDecoder(model, 2, 4, graph=False)
    rows, _ = dec.admit([[1, 2, 3]])
    dec.set_next(rows, torch.tensor([5]))
    dec.step()                                                   # slot 3: the last one
    with pytest.raises(ValueError, match="max_length=4"):
        dec.step()
    with pytest.raises(ValueError, match="3 prompts, 1 free rows"):
        dec.admit([[1], [2], [3]])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or fused.interpreting(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", [pytest.param("fused", id="fused")])   # gpu.sh's 75 s: one policy
def test_cuda_graph_continuous_batch_gives_the_eager_tokens(model, impl):
    """On CUDA: one captured graph per bucket, a replay per step, and the tokens of the same
    staggered schedule run eagerly (the path the CPU tests check against generating alone)."""
    m = copy.deepcopy(model).cuda()
    runs = []
    for graph in (False, True):
        rng = random.Random(13)
        seqs = random_sequences(10, rng, TINY.vocab_size)
        with use_impl(impl):
            engine = ContinuousBatch(m, capacity=4, max_length=40, cuda_graph=graph)
            run_staggered(engine, seqs, rng)
        runs.append(([s.tokens for s in seqs], engine.decoder))
    (eager, _), (replayed, dec) = runs
    assert replayed == eager and len({tuple(t) for t in eager}) > 5
    assert sorted(dec._graphs) == [1, 2, 4]
    assert all(isinstance(r.graph, torch.cuda.CUDAGraph) for r, _ in dec._graphs.values())
    assert dec.steps > 0 and dec.live == 0


def assert_cuda_graphs_replay_eager(model, new_tokens: int, max_length: int) -> None:
    """On CUDA, two prompts: generate() through its captured step and a continuous batch
    through its bucket graphs both give the eager tokens (for the model families' own graphs:
    LFM3's sliding-window masks, LFM2-MoE's all-experts routing)."""
    prompts = [[5, 9, 11, 4, 7], [8, 3]]
    want = model.generate(prompts, max_new_tokens=new_tokens, cuda_graph=False)
    assert model.generate(prompts, max_new_tokens=new_tokens, cuda_graph=True) == want
    seqs = [Sequence(p, max_new_tokens=new_tokens) for p in prompts]
    engine = ContinuousBatch(model, capacity=2, max_length=max_length, cuda_graph=True)
    for s in seqs:
        engine.add(s)
    while engine.busy:
        engine.step()
    assert [s.tokens for s in seqs] == want and len(set(want[0])) > 3


def test_logprobs_are_the_models_distribution_and_checked(model):
    """Each generated token's logprob and top-k under the raw distribution (whatever the
    temperature), equal to a plain forward of prompt + tokens; a bad k is a ValueError."""
    engine = ContinuousBatch(model, capacity=2, max_length=40)
    a = engine.add(Sequence([3, 1, 4, 1, 5], max_new_tokens=6, temperature=0.9, seed=2, logprobs=4))
    b = engine.add(Sequence([9, 2], max_new_tokens=4, logprobs=0))
    c = engine.add(Sequence([7], max_new_tokens=3))
    while engine.busy:
        engine.step()
    for s, k in ((a, 4), (b, 0)):
        with torch.inference_mode():
            lp = torch.log_softmax(model(torch.tensor([s.prompt + s.tokens])).float(), -1)[0]
        assert len(s.token_logprobs) == len(s.tokens)
        for i, (tok, (got, top)) in enumerate(zip(s.tokens, s.token_logprobs)):
            want = lp[len(s.prompt) - 1 + i]
            assert abs(got - want[tok].item()) < 1e-5 and len(top) == k
            assert [t for t, _ in top] == want.topk(k).indices.tolist() if k else top == []
    assert c.token_logprobs == []
    for bad in (-1, 21, True, 2.0):
        with pytest.raises(ValueError, match="logprobs"):
            engine.add(Sequence([1], max_new_tokens=1, logprobs=bad))


def _adjusted_greedy(model, prompt, n, presence=0.0, frequency=0.0, bias=None):
    """Independent reference: a full forward per token, OpenAI's adjustments written out."""
    out = []
    for _ in range(n):
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + out])).float()[0, -1]
        logits = logits.clone()   # a normal tensor, for the in-place adjustments below
        for j in set(out):
            logits[j] -= presence + frequency * out.count(j)
        for j, b in (bias or {}).items():
            logits[j] += b
        out.append(int(logits.argmax()))
    return out


def test_penalties_and_logit_bias_as_openai_defines_them(model):
    engine = ContinuousBatch(model, capacity=3, max_length=40)
    cases = [dict(presence=1.5), dict(frequency=2.0), dict(presence=-2.0, frequency=0.5),
             dict(bias={5: 100.0}), dict(frequency=1.0, bias={7: 3.0, 11: -100.0})]
    seqs = []
    for i, c in enumerate(cases):
        seqs.append(engine.add(Sequence([2 + i, 9, 4], max_new_tokens=8, presence_penalty=c.get("presence", 0.0),
                                        frequency_penalty=c.get("frequency", 0.0), logit_bias=c.get("bias"))))
    plain = engine.add(Sequence([2, 9, 4], max_new_tokens=8))
    while engine.busy:
        engine.step()
    for s, c in zip(seqs, cases):
        assert s.tokens == _adjusted_greedy(model, s.prompt, 8, c.get("presence", 0.0), c.get("frequency", 0.0),
                                            c.get("bias")), c
    assert seqs[3].tokens == [5] * 8                      # +100: always that token
    assert 11 not in seqs[4].tokens
    assert seqs[0].tokens != plain.tokens or len(set(plain.tokens)) == 8   # the penalty changed something
    for bad, match in ((dict(presence_penalty=2.5), "presence_penalty"), (dict(frequency_penalty=True), "frequency"),
                       (dict(logit_bias={97: 1.0}), "token ids"), (dict(logit_bias={3: 101.0}), "logit_bias"),
                       (dict(logit_bias=dict.fromkeys(range(301), 1.0)), "at most 300")):
        with pytest.raises(ValueError, match=match):
            engine.add(Sequence([1], max_new_tokens=1, **bad))


def test_equal_prompts_are_prefilled_once(model):
    """n choices / repeated requests: one prefill row per distinct prompt, each sequence still
    gets what it gets alone (its own sampler)."""
    engine = ContinuousBatch(model, capacity=6, max_length=40)
    prompt = [4, 8, 15, 16, 23, 42]
    seqs = [Sequence(list(prompt), max_new_tokens=7, temperature=0.9, seed=s) for s in (1, 2, 3)]
    seqs += [Sequence(list(prompt), max_new_tokens=5), Sequence([1, 2], max_new_tokens=4, temperature=0.5, seed=9)]
    want = [alone(model, s) for s in seqs]
    prefill_rows = []
    real = slots_mod.SlotDecoder.attach

    def recording(self, prefill, src_rows=None):
        prefill_rows.append((prefill.rows, list(src_rows or [])))
        return real(self, prefill, src_rows)

    slots_mod.SlotDecoder.attach = recording
    try:
        for s in seqs:
            engine.add(s)
        while engine.busy:
            engine.step()
    finally:
        slots_mod.SlotDecoder.attach = real
    assert [s.tokens for s in seqs] == want
    assert prefill_rows == [(2, [0, 0, 0, 0, 1])]


def test_a_joining_group_is_never_counted_twice_while_it_is_sampled(model):
    """The server's admission check (service/generation_room.free_rows) reads rows + joining
    from another thread while step() runs: when a group's prefill ends, the group must be in
    exactly one of the two lists while its first tokens are sampled."""
    engine = ContinuousBatch(model, capacity=4, max_length=40)
    seen, sample = [], engine._sample

    def watched(seqs, logits):
        seen.append(len(engine.rows) + len(engine.joining))
        return sample(seqs, logits)

    engine._sample = watched
    for prompt in ([1, 2, 3], [4, 5, 6]):
        engine.add(Sequence(prompt, max_new_tokens=5))
    with torch.inference_mode():
        engine.step()
        engine.step()
    assert seen and all(held == 2 for held in seen), seen
