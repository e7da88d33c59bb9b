"""Static-cache decoding (models/lfm2/decoding.py) against the dynamic path, on CPU.

The CUDA graph itself needs a GPU (tests/test_lfm2.py has the CUDA checks); here the static
step runs eagerly, and a fake GraphRunner that "replays" by calling the captured function
drives the pooled graph path: same tokens as the eager path, one replay per decoded token,
graphs reused across generations, a busy decoder never shared.
"""
import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models.depthwise import fused, use_impl
from models.profiling import count_launches
from models.lfm2 import LFM2Config, LFM2ForCausalLM, StaticCache
from models.lfm2 import decoding

# Odd sizes: 40 channels, head_dim 8, GQA 5 -> 1 kv head; conv and attention layers mixed.
TINY = LFM2Config(vocab_size=97, hidden_size=40, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=5, num_key_value_heads=1, max_position_embeddings=512,
                  layer_types=("conv", "full_attention", "conv", "full_attention"))


def tiny_model(seed: int, config: LFM2Config = TINY) -> LFM2ForCausalLM:
    """config (default TINY) with seeded weights, larger than the default init: logits that
    differ per token."""
    m = LFM2ForCausalLM.empty(config)
    m.init_weights(seed=seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(10)
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def left_padded(rows):
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


class FakeRunner:
    """GraphRunner's interface on CPU: capture keeps fn and its output buffers; replay
    reruns fn and copies into them, as a graph replay rewrites its captured outputs."""
    captures = 0

    def __init__(self, device):
        self.fn = None

    def capture(self, fn, warmup):
        for _ in range(warmup):
            fn()
        FakeRunner.captures += 1
        self.fn, self.out = fn, fn()
        return self.out

    def replay(self):
        self.out.copy_(self.fn())


@pytest.fixture
def fake_graphs(monkeypatch, model):
    monkeypatch.setattr(decoding, "graphs_supported", lambda m: True)
    monkeypatch.setattr(decoding, "GraphRunner", FakeRunner)
    FakeRunner.captures = 0
    decoding.clear_decoders(model)
    yield
    decoding.clear_decoders(model)


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native")])
def test_static_step_equals_dynamic_step(model, impl):
    """Prefill a left-padded batch, then decode 6 tokens both ways: same logits every step."""
    ids, mask = left_padded([[5, 9, 11, 4, 7], [8, 3]])
    feed = torch.tensor([[12, 40], [13, 41], [14, 42], [15, 43], [16, 44], [17, 45]])
    with use_impl(impl):
        eager = decoding.EagerDecoder(model, 2, 11)
        static = decoding.StaticDecoder(model, 2, 64, graph=False)
        torch.testing.assert_close(static.prefill(ids, mask), eager.prefill(ids, mask))
        for tokens in feed:
            want = eager.step(tokens)
            got = static.step(tokens)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert static.cache.length == int(static.cache.slot) == 5 + len(feed)
    assert static.cache.positions.tolist() == [5 + 6, 2 + 6]


def test_static_cache_write_takes_the_device_slot():
    cache = StaticCache(TINY, 2, 8)
    k = torch.randn(2, 1, 1, TINY.head_dim)
    cache.slot.fill_(3)
    keys, values = cache.write_kv(1, k, -k, cache.slot)
    assert keys.shape == (2, 1, 8, TINY.head_dim)       # all slots, fixed shape
    torch.testing.assert_close(keys[:, :, 3:4], k)
    assert keys[:, :, :3].abs().sum() == 0 and keys[:, :, 4:].abs().sum() == 0
    cache.length = 3
    cache.reset()
    assert int(cache.slot) == 0 and cache.length == 0 and cache.keys[1].abs().sum() == 0


def test_graph_path_generates_the_eager_tokens(model, fake_graphs):
    prompts = [[5, 9, 11, 4, 7], [8, 3]]
    want = model.generate(prompts, max_new_tokens=7, cuda_graph=False)
    got = model.generate(prompts, max_new_tokens=7)          # None: graphs where "supported"
    assert got == want and len(set(want[0])) > 1
    (dec,) = model._static_decoders.values()
    assert dec.replays == 6                                   # one replay per decoded token
    assert dec.cache.max_length == decoding.MIN_STATIC_LENGTH
    sampled = dict(max_new_tokens=5, temperature=0.8, top_p=0.9, seed=11)
    assert model.generate(prompts, **sampled) == model.generate(prompts, cuda_graph=False, **sampled)
    assert FakeRunner.captures == 1                           # the same graph served all three


def test_graphs_are_kept_per_batch_length_and_policy(model, fake_graphs):
    model.generate([[4, 5]], max_new_tokens=3)
    model.generate([[4, 5], [6]], max_new_tokens=3)           # another batch size
    model.generate([[4] * 70], max_new_tokens=3)              # 73 tokens: the 128 bucket
    with use_impl("per_group"):
        model.generate([[4, 5]], max_new_tokens=3)           # another depthwise policy
    keys = [k[:3] for k in model._static_decoders]
    assert keys == [(1, 64, "auto"), (2, 64, "auto"), (1, 128, "auto"), (1, 64, "per_group")]
    assert FakeRunner.captures == 4


def test_pool_is_bounded(model, fake_graphs, monkeypatch):
    monkeypatch.setattr(decoding, "MAX_DECODERS", 2)
    for b in (1, 2, 3):
        model.generate([[4]] * b, max_new_tokens=2)
    assert [k[0] for k in model._static_decoders] == [2, 3]   # least recently used dropped


def test_busy_static_decoder_is_not_shared(model, fake_graphs):
    """A generation that finds its decoder mid-generation runs eagerly instead."""
    stream = model.stream_generate([[4, 5]], max_new_tokens=4)
    first = next(stream)                                      # holds the decoder's lock
    with decoding.open_decoder(model, 1, 6) as other:
        assert type(other) is decoding.EagerDecoder
    rest = list(stream)
    assert [first, *rest] == [[t] for t in model.generate([[4, 5]], max_new_tokens=4, cuda_graph=False)[0]]
    with decoding.open_decoder(model, 1, 6) as again:         # released after the stream ended
        assert type(again) is decoding.StaticDecoder


def test_static_length_buckets():
    assert [decoding.static_length(n) for n in (0, 1, 64, 65, 128, 129, 1000)] == [64, 64, 64, 128, 128, 256, 1024]


def test_cuda_graph_true_needs_cuda(model):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine can honour cuda_graph=True")
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        model.generate([[1, 2]], max_new_tokens=2, cuda_graph=True)


# Ops that read device data on the host (a sync, which fails a capture) or make a tensor from
# host data (captured as a copy from a host buffer the replay cannot rely on).
HOST_OPS = ("aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal", "aten.nonzero",
            "aten.masked_select", "aten.lift_fresh", "aten._unique", "aten.unique")


class OpTrace(TorchDispatchMode):
    """Every aten op a function dispatches: name, its non-tensor arguments, output shapes.

    A CUDA graph replays the kernels and the arguments of the captured call, so a step that
    is safe to capture dispatches the same trace at every position (nothing baked in from host
    state) and none of HOST_OPS. This checks that on CPU, where no graph can be captured."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat, _ = tree_flatten((args, kwargs))
        consts = tuple(type(a).__name__ if isinstance(a, torch.UntypedStorage) else a   # Triton's
                       for a in flat if not isinstance(a, torch.Tensor))              # interpreter
        outs = tuple((tuple(o.shape), o.dtype) for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor))
        self.ops.append((str(func), consts, outs))
        return out


def trace(fn) -> list:
    with OpTrace() as t:
        fn()
    return t.ops


def host_ops(ops) -> list[str]:
    return [name for name, _, _ in ops if name.startswith(HOST_OPS)]


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "fused")])
def test_static_step_is_one_fixed_op_sequence_without_host_reads(model, impl):
    """What graph capture needs of decoding.StaticDecoder._forward, for every policy it is
    captured under: the step at position 5 and at position 9 dispatch the same ops with the same
    non-tensor arguments and output shapes, and nothing reads device data on the host."""
    ids, mask = left_padded([[5, 9, 11, 4, 7], [8, 3]])
    with use_impl(impl), torch.inference_mode():
        dec = decoding.StaticDecoder(model, 2, 64, graph=False)
        dec.prefill(ids, mask)
        traces = []
        for step, tokens in enumerate(torch.tensor([[12, 40], [13, 41], [14, 42], [15, 43], [16, 44]])):
            dec.ids.copy_(tokens[:, None])
            ops = trace(dec._forward)
            dec.cache.length += 1
            if step in (0, 4):
                traces.append(ops)
    first, last = traces
    assert len(first) > 50 and host_ops(first) == []
    assert first == last, next((a, b) for a, b in zip(first, last) if a != b) if len(first) == len(last) \
        else f"{len(first)} ops at position 5, {len(last)} at position 9"


def test_op_trace_catches_host_reads_and_host_state():
    """The checks above can fail: a host read of the slot is flagged, and a step that slices
    by a host-side length dispatches a different trace at each position."""
    keys, slot = torch.randn(1, 16, 4), torch.tensor(3)
    assert host_ops(trace(lambda: keys[:, : int(slot) + 1].sum())) == ["aten._local_scalar_dense.default"]
    assert trace(lambda: keys[:, :4].sum()) != trace(lambda: keys[:, :5].sum())
    assert host_ops(trace(lambda: torch.tensor([1, 2]) + keys.shape[0])) == ["aten.lift_fresh.default"]
    assert trace(lambda: keys.index_select(1, slot[None]).sum()) == trace(lambda: keys.index_select(1, slot[None]).sum())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or fused.interpreting(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("fused", "native", "per_group")])
def test_cuda_graph_decoding_replays_the_eager_tokens(model, impl):
    """On CUDA: the captured step gives the eager path's tokens, one replay per decoded token."""
    m = copy.deepcopy(model).cuda()
    prompts = [[5, 9, 11, 4, 7], [8, 3]]
    with use_impl(impl):
        want = m.generate(prompts, max_new_tokens=7, cuda_graph=False)
        got = m.generate(prompts, max_new_tokens=7, cuda_graph=True)
        again = m.generate(prompts, max_new_tokens=7)             # reuses the graph
    assert got == want == again and len(set(want[0])) > 1
    (dec,) = m._static_decoders.values()
    assert isinstance(dec.runner.graph, torch.cuda.CUDAGraph) and dec.replays == 2 * 6


@pytest.mark.gpu
@needs_cuda
def test_kernels_inside_a_graph_replay_are_counted(model):
    """count_launches sees the kernels a replay runs (what the service's launch metric and the
    decode benchmark report per token), and no aten op: the replay is one host call."""
    m = copy.deepcopy(model).cuda()
    m.generate([[4, 5]], max_new_tokens=3, cuda_graph=True)
    (dec,) = m._static_decoders.values()
    with torch.inference_mode():
        eager = count_launches(dec._forward)                    # the same step, op by op
    replay = count_launches(dec.runner.replay)
    assert eager.cuda_kernels > 10 and replay.aten_ops == 0
    assert eager.cuda_kernels // 2 <= replay.cuda_kernels <= 2 * eager.cuda_kernels, (eager, replay)
