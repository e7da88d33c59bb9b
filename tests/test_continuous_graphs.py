"""Continuous batching's CUDA-graph path (models/lfm2/slots.py: SlotDecoder and its row
buckets): on CPU with GraphRunner faked, one capture per bucket and a replay of the smallest
that holds the live rows, giving the tokens of generating alone; a bucket's step is one fixed
op sequence with no host reads, whatever its rows hold; a row out of room is refused; and on
CUDA (gpu.sh) the captured graphs give the eager tokens."""
import copy
import random

import pytest
import torch

from models.depthwise import fused, use_impl
from models.lfm2 import decoding, slots as slots_mod
from models.lfm2.continuous import ContinuousBatch
from models.lfm2.slots import SlotDecoder, buckets

import continuous_helpers
from continuous_helpers import alone, random_sequences, run_staggered
from test_decoding import TINY, FakeRunner, host_ops, trace

model = continuous_helpers.model   # the tiny model, one per test module


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
