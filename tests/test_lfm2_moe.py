"""LFM2-MoE (model_type "lfm2_moe") against transformers' Lfm2MoeForCausalLM.

The LFM2 code with a sparse feed-forward from num_dense_layers on: a sigmoid router with an
expert bias picks 2 of 6 experts per token here. The checkpoint is saved by transformers
(per-expert w1/w3/w2, as published) and stacked on load. Checked: logits for every impl,
greedy tokens, the graph-capture path (every expert on every token, the unpicked weighted 0)
against the eager one (only the picked experts), continuous batching against generating alone,
and loading errors that name the tensor.
"""
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from models.depthwise import use_impl  # noqa: E402
from models.lfm2 import LFM2Config, LFM2ForCausalLM, decoding  # noqa: E402
from models.lfm2.continuous import ContinuousBatch, Sequence  # noqa: E402
from models.lfm2.layers import MoE  # noqa: E402

from hf_reference import assert_logits_match, assert_missing_tensor_is_named, random_checkpoint  # noqa: E402
from continuous_helpers import alone, assert_cuda_graphs_replay_eager, run_staggered  # noqa: E402
from test_decoding import needs_cuda, tiny_model  # noqa: E402

# Odd sizes: 48 channels, 6 experts of width 20, 2 per token; dense FFN 72 in layer 0 only.
TINY = dict(vocab_size=107, hidden_size=48, intermediate_size=72, moe_intermediate_size=20,
            num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2, num_experts=6,
            num_experts_per_tok=2, num_dense_layers=1, max_position_embeddings=256,
            layer_types=["conv", "full_attention", "conv", "conv"], pad_token_id=0, bos_token_id=1,
            eos_token_id=2)


def make_hf(path, seed=0, **changes):
    """A randomly initialised HF Lfm2MoeForCausalLM (expert bias too), saved to path."""
    return random_checkpoint(transformers, "Lfm2Moe", {**TINY, **changes}, path, seed, scale=0.3)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2_moe_tiny")
    hf = make_hf(path)
    return hf, LFM2ForCausalLM.from_pretrained(path), path


def rand_ids(b, L, seed=0):
    return torch.randint(3, TINY["vocab_size"], (b, L), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def dense_moe(monkeypatch):
    """Every MoE layer takes the graph-capture path (all experts, unpicked weighted 0)."""
    forward = MoE.forward
    monkeypatch.setattr(MoE, "forward", lambda self, x, dense=None: forward(self, x, dense=True))


def test_the_checkpoint_loads_as_lfm2_moe(pair):
    _, ours, _ = pair
    layers = ours.model.layers
    assert ours.config.model_type == "lfm2_moe" and not isinstance(layers[0].feed_forward, MoE)
    moe = layers[1].feed_forward
    assert isinstance(moe, MoE) and moe.experts.gate_up_proj.shape == (6, 40, 48)
    assert moe.experts.down_proj.shape == (6, 48, 20) and moe.expert_bias.abs().sum() > 0


@pytest.mark.parametrize("impl", [
    pytest.param("per_group", id="per_group"), pytest.param("slice_sum", id="slice_sum"),
    pytest.param("native", id="native"), pytest.param("auto", id="auto"),
    pytest.param("fused", id="fused-interpreter", marks=pytest.mark.fused)])
def test_logits_match_transformers(pair, impl):
    hf, ours, _ = pair
    ids = rand_ids(2, 13, seed=1)
    with use_impl(impl):
        assert_logits_match(hf, ours, ids)


def test_the_capture_path_gives_the_same_logits(pair, dense_moe):
    hf, ours, _ = pair
    ids = rand_ids(2, 13, seed=1)
    assert_logits_match(hf, ours, ids)


def test_routing_matters(pair):
    """The comparison can fail: routing without the expert bias changes the logits."""
    hf, ours, _ = pair
    ids = rand_ids(1, 13, seed=1)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits
    other = LFM2ForCausalLM.empty(ours.config.replace(use_expert_bias=False))
    state = {k: v for k, v in ours.state_dict().items() if not k.endswith("expert_bias")}
    other.load_state_dict(state)
    with torch.inference_mode():
        assert (other(ids) - ref).abs().max() > 1e-2


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("slice_sum", "native")])
def test_greedy_generation_matches_transformers(pair, impl):
    hf, ours, _ = pair
    prompt = rand_ids(1, 6, seed=2)
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                          do_sample=False, eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    with use_impl(impl):
        assert ours.generate(prompt, max_new_tokens=12, cuda_graph=False) == [ref]
    assert len(set(ref)) > 3


def test_static_step_with_the_capture_path_equals_dynamic_step(pair, dense_moe):
    _, ours, _ = pair
    ids, mask = torch.tensor([[0, 0, 5, 9, 11], [8, 3, 7, 1, 4]]), torch.tensor([[0, 0, 1, 1, 1], [1] * 5])
    eager = decoding.EagerDecoder(ours, 2, 16)
    static = decoding.StaticDecoder(ours, 2, 64, graph=False)
    torch.testing.assert_close(static.prefill(ids, mask), eager.prefill(ids, mask))
    for step in range(8):
        tokens = torch.tensor([12 + step, 40 + step])
        torch.testing.assert_close(static.step(tokens), eager.step(tokens), rtol=1e-5, atol=1e-5)


def test_continuous_batch_gives_every_sequence_its_tokens_alone(pair):
    _, ours, _ = pair
    rng = random.Random(5)
    seqs = [Sequence([rng.randrange(3, 107) for _ in range(rng.randint(1, 10))],
                     max_new_tokens=rng.randint(3, 10), temperature=0.8 if i % 3 == 2 else 0.0,
                     seed=70 + i) for i in range(8)]
    want = [alone(ours, s) for s in seqs]
    engine = ContinuousBatch(ours, capacity=3, max_length=24, prefill_chunk=4)
    run_staggered(engine, seqs, rng)
    assert [s.tokens for s in seqs] == want


@pytest.mark.parametrize("changes", [
    pytest.param(dict(use_expert_bias=False, norm_topk_prob=False, routed_scaling_factor=2.5), id="no-bias-unnormed"),
    pytest.param(dict(num_dense_layers=0, num_experts_per_tok=6), id="all-moe-all-experts"),
    pytest.param(dict(head_dim=16), id="explicit-head_dim"),   # not hidden / heads: was read for LFM3 only
])
def test_routing_variants_match_transformers(tmp_path, changes):
    hf = make_hf(tmp_path, seed=3, **changes)
    ours = LFM2ForCausalLM.from_pretrained(tmp_path)
    ids = rand_ids(2, 9, seed=4)
    assert_logits_match(hf, ours, ids)


def test_a_missing_expert_is_named(tmp_path):
    make_hf(tmp_path, seed=8)
    assert_missing_tensor_is_named(tmp_path, "model.layers.2.feed_forward.experts.4.w3.weight")


def test_an_expert_of_the_wrong_shape_is_named(tmp_path):
    from safetensors.torch import load_file, save_file
    make_hf(tmp_path, seed=8)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.3.feed_forward.experts.1.w2.weight"] = torch.zeros(48, 21)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"experts\.1\.w2\.weight' has shape \(48, 21\), expected \(48, 20\)"):
        LFM2ForCausalLM.from_pretrained(tmp_path)


def test_an_expert_beyond_num_experts_is_named(tmp_path):
    import json
    make_hf(tmp_path, seed=9)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_experts": 5}))
    with pytest.raises(ValueError, match=r"experts\.5\.w1\.weight.*num_experts=5"):
        LFM2ForCausalLM.from_pretrained(tmp_path)


def test_served_metadata_names_the_experts(pair):
    from models.registry import build_model
    hf, _, path = pair
    served = build_model("lfm2", str(path))
    assert (served.metadata["architecture"], served.metadata["experts"], served.metadata["experts_per_token"]) \
        == ("lfm2_moe", 6, 2)
    ids = rand_ids(1, 7, seed=10)
    with torch.no_grad():
        ref = hf(ids, use_cache=False).logits[:, -1]
    torch.testing.assert_close(served.forward({"input_ids": ids})["logits"], ref, rtol=1e-4, atol=1e-4)


def test_config_round_trips_through_transformers():
    ours = LFM2Config.from_dict({"model_type": "lfm2_moe", **TINY})
    d = ours.to_dict()
    assert d["architectures"] == ["Lfm2MoeForCausalLM"] and "block_multiple_of" not in d
    hf = transformers.Lfm2MoeConfig(**{k: v for k, v in d.items() if k not in ("architectures", "model_type")})
    assert LFM2Config.from_dict(hf.to_dict()) == ours and ours.ffn_dim == 72


@pytest.mark.parametrize("d, match", [
    pytest.param({**TINY, "num_experts_per_tok": 7}, "num_experts_per_tok", id="top-k-over-experts"),
    pytest.param({**TINY, "moe_intermediate_size": 0}, "moe_intermediate_size", id="no-width"),
    pytest.param({**TINY, "num_dense_layers": 5}, "num_dense_layers", id="too-many-dense"),
    pytest.param({k: v for k, v in TINY.items() if k != "layer_types"}, "layer_types", id="no-layer-types"),
])
def test_bad_configs_are_refused_naming_the_field(d, match):
    with pytest.raises(ValueError, match=match):
        LFM2Config.from_dict({"model_type": "lfm2_moe", **d})


def test_experts_on_an_lfm2_config_are_refused():
    with pytest.raises(ValueError, match="lfm2_moe"):
        LFM2Config.from_dict({"model_type": "lfm2", "num_experts": 4})


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_decoding_routes_as_eager():
    """On CUDA the captured step runs every expert (no host read of the routing); its tokens
    equal the eager path's, for one generate and for the continuous batch's buckets."""
    m = tiny_model(1, LFM2Config.from_dict({"model_type": "lfm2_moe", **TINY})).cuda()
    with use_impl("native"):   # the graph over the routing is the point; no new Triton compiles in gpu.sh's 75 s
        assert_cuda_graphs_replay_eager(m, new_tokens=10, max_length=24)
