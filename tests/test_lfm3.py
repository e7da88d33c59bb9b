"""LFM3 (model_type "lfm3") against transformers' Lfm3ForCausalLM, the independent reference.

LFM3 runs on the LFM2 code with its features switched on by the config: K=7 short convs,
sliding-window attention layers, proportional RoPE on half of each full-attention head, a
sigmoid gate per head, sandwich norms. The sliding window here (5) is shorter than the
sequences, so every check crosses it: logits for every impl, greedy tokens past the window,
cached and static decoding, continuous batching and prefix caching against generating alone.
"""
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.depthwise import use_impl  # noqa: E402
from models.lfm2 import LFM2Config, LFM2ForCausalLM, decoding  # noqa: E402
from models.lfm2.continuous import ContinuousBatch, Sequence  # noqa: E402
from models.lfm2.prefix_cache import PrefixCache  # noqa: E402

from hf_reference import assert_logits_match, random_checkpoint  # noqa: E402
from continuous_helpers import alone, assert_cuda_graphs_replay_eager, run_staggered  # noqa: E402
from test_decoding import needs_cuda, tiny_model  # noqa: E402
from error_bodies import error_message

needs_lfm3 = pytest.mark.skipif(not hasattr(transformers, "Lfm3ForCausalLM"),
                                reason=f"transformers {transformers.__version__} has no LFM3")

# Odd sizes: 56 channels, 7 heads of 12 (head_dim given, != 56/7), GQA 7 -> 1, FFN 72 as is.
TINY = dict(vocab_size=113, hidden_size=56, intermediate_size=72, num_hidden_layers=6,
            num_attention_heads=7, num_key_value_heads=1, head_dim=12, sliding_window=5,
            max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            layer_types=["conv", "sliding_attention", "full_attention", "conv", "sliding_attention", "conv"])


def make_hf(path, seed=0, **changes):
    """A randomly initialised HF Lfm3ForCausalLM (norm weights too), saved to path."""
    return random_checkpoint(transformers, "Lfm3", {**TINY, **changes}, path, seed, scale=0.3)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm3_tiny")
    hf = make_hf(path)
    return hf, LFM2ForCausalLM.from_pretrained(path)


def rand_ids(b, L, seed=0):
    return torch.randint(3, TINY["vocab_size"], (b, L), generator=torch.Generator().manual_seed(seed))


def test_the_checkpoint_loads_as_lfm3(pair):
    _, ours = pair
    c = ours.config
    assert (c.model_type, c.conv_L_cache, c.head_dim, c.sliding_window, c.rotary_dims) == ("lfm3", 7, 12, 5, 6)
    assert c.use_sandwich_norm and c.use_attention_gate and c.ffn_dim == 72
    assert ours.model.layers[1].self_attn.gate_proj.weight.shape == (7, 56)


@pytest.mark.parametrize("impl", [
    pytest.param("per_group", id="per_group"), pytest.param("slice_sum", id="slice_sum"),
    pytest.param("native", id="native"), pytest.param("auto", id="auto"),
    pytest.param("compiled", id="compiled"),
    pytest.param("fused", id="fused-interpreter", marks=pytest.mark.fused)])
def test_logits_match_transformers(pair, impl):
    hf, ours = pair
    ids = rand_ids(2, 23, seed=1)                     # 23 tokens: 4x the window
    with use_impl(impl):
        assert_logits_match(hf, ours, ids)


def test_the_window_and_the_gate_matter(pair):
    """The comparison above can fail: a window one longer, or no gate, changes the logits."""
    hf, ours = pair
    ids = rand_ids(1, 23, seed=1)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    for change in (dict(sliding_window=6), dict(partial_rotary_factor=1.0)):
        other = LFM2ForCausalLM.empty(ours.config.replace(**change))
        other.load_state_dict(ours.state_dict())
        with torch.inference_mode():
            assert (other(ids) - ref).abs().max() > 1e-2, change
    gate = ours.model.layers[2].self_attn.gate_proj
    saved = gate.weight.detach().clone()
    with torch.no_grad():
        gate.weight.zero_()
        try:
            with torch.inference_mode():
                assert (ours(ids) - ref).abs().max() > 1e-2
        finally:
            gate.weight.copy_(saved)


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("slice_sum", "native", "per_group")])
def test_greedy_generation_past_the_window_matches_transformers(pair, impl):
    hf, ours = pair
    prompt = rand_ids(1, 6, seed=2)
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                          do_sample=False, eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    with use_impl(impl):
        got = ours.generate(prompt, max_new_tokens=20, cuda_graph=False)
    assert got == [ref] and len(set(ref)) > 3


def test_a_left_padded_batch_gets_each_rows_own_tokens(pair):
    """Rows of different lengths in one batch: each gets what it gets alone (its own window
    counted over its own tokens, padding never inside it)."""
    _, ours = pair
    rows = [rand_ids(1, n, seed=10 + n)[0].tolist() for n in (3, 11, 7)]
    together = ours.generate(rows, max_new_tokens=12, cuda_graph=False)
    assert together == [ours.generate([r], max_new_tokens=12, cuda_graph=False)[0] for r in rows]


@pytest.mark.parametrize("chunks", [pytest.param([9, 1, 1, 1, 6], id="prefill-decode-prefill"),
                                    pytest.param([1] * 18, id="token-by-token")])
def test_cached_decoding_equals_full_recomputation(pair, chunks):
    _, ours = pair
    ids = rand_ids(3, 18, seed=5)
    with torch.inference_mode():
        full = ours(ids)
        cache, outs, s = ours.new_cache(3, 20), [], 0
        for n in chunks:
            outs.append(ours(ids[:, s:s + n], cache=cache))
            s += n
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-4)


def test_static_step_equals_dynamic_step(pair):
    """The CUDA-graph decode step (fixed shapes, masks over all slots), run eagerly."""
    _, ours = pair
    rows = [[5, 9, 11, 4, 7, 8, 3, 30], [8, 3]]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    eager = decoding.EagerDecoder(ours, 2, width + 12)
    static = decoding.StaticDecoder(ours, 2, 64, graph=False)
    torch.testing.assert_close(static.prefill(ids, mask), eager.prefill(ids, mask))
    for step in range(12):
        tokens = torch.tensor([12 + step, 40 + step])
        torch.testing.assert_close(static.step(tokens), eager.step(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", [pytest.param("slice_sum", id="slice_sum"),
                                  pytest.param("fused", id="fused-interpreter", marks=pytest.mark.fused)])
def test_continuous_batch_gives_every_sequence_its_tokens_alone(pair, impl):
    _, ours = pair
    rng = random.Random(3)
    n = 4 if impl == "fused" else 10             # Triton's interpreter is slow: fewer for fused
    seqs = [Sequence([rng.randrange(3, 113) for _ in range(rng.randint(1, 12))],
                     max_new_tokens=rng.randint(4, 14), temperature=0.8 if i % 3 == 2 else 0.0,
                     seed=50 + i) for i in range(n)]
    with use_impl(impl):
        want = [alone(ours, s) for s in seqs]
        engine = ContinuousBatch(ours, capacity=4, max_length=32, prefill_chunk=4)
        run_staggered(engine, seqs, rng)
    assert [s.tokens for s in seqs] == want


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_decoding_replays_the_eager_tokens():
    """On CUDA: the captured steps (one per generate, one per continuous-batch bucket) give
    the eager tokens past the window."""
    m = tiny_model(1, LFM2Config.from_dict({"model_type": "lfm3", **TINY})).cuda()
    with use_impl("native"):   # the graph over the masks is the point; no new Triton compiles in gpu.sh's 75 s
        assert_cuda_graphs_replay_eager(m, new_tokens=14, max_length=32)


def test_prefix_cache_restores_past_the_window(pair):
    """A 16-token shared prefix (over three windows) is restored, not recomputed, and the
    sequences still get the tokens they get alone."""
    _, ours = pair
    rng = random.Random(4)
    system = [rng.randrange(3, 113) for _ in range(16)]
    seqs = [Sequence(system + [rng.randrange(3, 113) for _ in range(rng.randint(1, 6))],
                     max_new_tokens=8) for _ in range(4)]
    want = [alone(ours, s) for s in seqs]
    cache = PrefixCache(max_bytes=1 << 30, block=8)
    engine = ContinuousBatch(ours, capacity=2, max_length=40, prefix_cache=cache)
    for s in seqs:
        engine.add(s)
        while engine.busy:
            engine.step()
    assert [s.tokens for s in seqs] == want
    assert [s.cached_tokens for s in seqs] == [0, 16, 16, 16]


@pytest.mark.parametrize("changes", [
    pytest.param(dict(use_sandwich_norm=False, use_attention_gate=False, conv_bias=True), id="plain-bias"),
    pytest.param(dict(attention_bias=True, conv_L_cache=3, tie_word_embeddings=False), id="attn-bias-K3-untied"),
    pytest.param(dict(rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 5000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 300.0}}), id="default-rope"),
    pytest.param(dict(layer_types=["conv", "conv", "full_attention", "conv", "conv", "conv"]), id="no-sliding"),
])
def test_config_variants_match_transformers(tmp_path, changes):
    hf = make_hf(tmp_path, seed=3, **changes)
    ours = LFM2ForCausalLM.from_pretrained(tmp_path)
    ids = rand_ids(2, 13, seed=4)
    assert_logits_match(hf, ours, ids)


def test_bfloat16_is_as_close_to_float32_as_transformers_bfloat16(tmp_path):
    hf = make_hf(tmp_path, seed=6)
    ours = LFM2ForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    ids = rand_ids(1, 40, seed=7)
    with torch.no_grad():
        exact = hf(ids, use_cache=False).logits
        hf_error = (hf.to(torch.bfloat16)(ids, use_cache=False).logits.float() - exact).abs().max()
    with torch.inference_mode():
        our_error = (ours(ids).float() - exact).abs().max()
    assert 0 < our_error <= 1.5 * hf_error, (our_error, hf_error)


def test_served_as_lfm2_through_the_registry_and_the_generate_route(tmp_path):
    """`--model lfm2=/path/to/an/LFM3`: OIP logits and /v1/generate tokens are transformers'."""
    import json

    from fastapi.testclient import TestClient

    from models.registry import build_model
    from service.app import create_app
    from service.settings import Settings
    from server_process import client_ready
    hf = make_hf(tmp_path, seed=12)
    served = build_model("lfm2", str(tmp_path))
    assert (served.metadata["architecture"], served.metadata["conv_kernel_size"],
            served.metadata["sliding_window"]) == ("lfm3", 7, 5)
    prompt = rand_ids(1, 9, seed=13)
    with torch.no_grad():
        logits = hf(prompt, use_cache=False).logits[:, -1]
        tokens = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                             do_sample=False, eos_token_id=None, pad_token_id=0)[0, 9:].tolist()
    app = create_app(Settings(models=("lfm2",), max_sequence_length=64, max_new_tokens=16, warmup=False),
                     models={"lfm2": served})
    with TestClient(app) as c:
        client_ready(c, timeout=60)
        r = c.post("/v2/models/lfm2/infer", json={"inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [1, 9], "data": prompt[0].tolist()}]})
        assert r.status_code == 200, r.text
        got = torch.tensor(r.json()["outputs"][0]["data"]).view(1, -1)
        torch.testing.assert_close(got, logits, rtol=1e-4, atol=1e-4)
        r = c.post("/v1/generate", json={"input_ids": prompt[0].tolist(), "max_new_tokens": 12,
                                         "ignore_eos": True})
        assert r.status_code == 200, r.text
        assert r.json()["token_ids"] == tokens
        # No tokenizer.json in this checkpoint: token ids only, text is a 400 saying so.
        r = c.post("/v1/generate", json={"input_ids": prompt[0].tolist(), "max_new_tokens": 12,
                                         "ignore_eos": True, "stream": True})
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert [e["token_id"] for e in events if "token_id" in e] == tokens
        for body in ({"prompt": "hello", "max_new_tokens": 4}, {"input_ids": [5, 6], "stop": ["x"], "max_new_tokens": 4}):
            r = c.post("/v1/generate", json=body)
            assert r.status_code == 400 and "tokenizer" in error_message(r), r.text
        meta = c.get("/v2/models/lfm2").json()["parameters"]
        assert meta["architecture"] == "lfm3" and meta["conv_kernel_size"] == 7
        assert ('dwserve_model_info{architecture="lfm3",conv_kernel_size="7",dtype="float32",model="lfm2"} 1.0'
                in c.get("/metrics").text)
