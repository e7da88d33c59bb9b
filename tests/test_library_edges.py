"""Edge cases a library user hits calling models.depthwise / models.lfm2 / models.mobilenet from
Python (no server): empty chunks, a flat prompt list, wrong-typed constructor arguments.

Each test failed before its fix; results are compared with the plain-torch references
(`short_conv_block_reference` on a non-empty chunk, F.conv1d) on fresh random inputs.
"""
from __future__ import annotations

import pytest
import torch

from models.depthwise import IMPLS, short_conv_block
from models.depthwise.short_conv import short_conv_block_reference

IMPL_PARAMS = [pytest.param(i, id=i, marks=pytest.mark.fused) if i == "fused" else pytest.param(i, id=i)
               for i in IMPLS + ("auto",)]


@pytest.mark.parametrize("with_state", [pytest.param(False, id="no-state"), pytest.param(True, id="state")])
@pytest.mark.parametrize("impl", IMPL_PARAMS)
def test_short_conv_block_empty_chunk_is_empty_for_every_impl(impl, with_state):
    """An empty chunk (L=0, e.g. a stream's empty step) gives (B, 0, C) and leaves the conv
    state as it was, whatever the impl: slice_sum and fused did, per_group/compiled/native (and
    the reference) raised a ValueError about conv1d's output size instead."""
    if impl == "fused":
        pytest.importorskip("triton")
        from models.depthwise import fused
        if not fused.available("cpu"):
            pytest.skip("fused on CPU needs TRITON_INTERPRET=1")
    g = torch.Generator().manual_seed(11)
    B, C, K = 3, 5, 4
    weight, bias = torch.randn(C, 1, K, generator=g), torch.randn(C, generator=g)
    state = torch.randn(B, C, K - 1, generator=g) if with_state else None
    before = None if state is None else state.clone()
    y = short_conv_block(torch.randn(B, 0, 3 * C, generator=g), weight, bias, conv_state=state,
                         mask=torch.ones(B, 0), impl=impl)
    assert y.shape == (B, 0, C) and y.dtype == torch.float32
    if state is not None:
        torch.testing.assert_close(state, before, rtol=0, atol=0)
    ref = short_conv_block_reference(torch.randn(B, 0, 3 * C), weight, bias, conv_state=before)
    assert ref.shape == (B, 0, C)
    # ...and the stream goes on: a chunk after the empty one equals the reference's.
    bcx = torch.randn(B, 6, 3 * C, generator=g)
    ref_state = None if before is None else before.clone()
    got = short_conv_block(bcx, weight, bias, conv_state=state, impl=impl)
    torch.testing.assert_close(got, short_conv_block_reference(bcx, weight, bias, conv_state=ref_state),
                               rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_lm():
    from models.lfm2 import LFM2Config, LFM2ForCausalLM
    cfg = LFM2Config(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, layer_types=["conv", "full_attention"])
    model = LFM2ForCausalLM(cfg).eval()
    model.init_weights(seed=0)
    return model


@pytest.mark.parametrize("prompts, hint", [
    pytest.param([5, 6, 7], "[[5, 6, 7]]", id="flat-list"),
    pytest.param((5, 6, 7), "[[5, 6, 7]]", id="flat-tuple"),
    pytest.param(torch.tensor([5, 6, 7]), "unsqueeze(0)", id="1d-tensor"),
])
@pytest.mark.parametrize("method", ["generate", "stream_generate"])
def test_generate_one_flat_prompt_says_to_wrap_it(tiny_lm, method, prompts, hint):
    """generate([5, 6, 7]) (one prompt, not wrapped in a batch) is a ValueError saying to pass
    [[5, 6, 7]]: it said 'prompt 0 must be a non-empty list of token ids (start it with
    bos_token_id if there is no text)', pointing at a prompt that was not empty; a 1-d tensor's
    said '(batch, length)' without the fix."""
    with pytest.raises(ValueError) as err:
        getattr(tiny_lm, method)(prompts, max_new_tokens=2)
    assert hint in str(err.value) and "list of token-id lists" in str(err.value)
    assert tiny_lm.generate([list(map(int, prompts))], max_new_tokens=2)    # the hinted form runs


@pytest.mark.parametrize("kwargs, match", [
    pytest.param(dict(num_classes=True), "num_classes must be a positive int", id="num_classes-bool"),
    pytest.param(dict(width_mult="1.0"), "width_mult must be a finite number > 0", id="width-str"),
    pytest.param(dict(width_mult=None), "width_mult must be a finite number > 0", id="width-none"),
    pytest.param(dict(width_mult=float("inf")), "width_mult must be a finite number > 0", id="width-inf"),
    pytest.param(dict(width_mult=True), "width_mult must be a finite number > 0", id="width-bool"),
])
def test_mobilenet_bad_constructor_arguments_are_value_errors(kwargs, match):
    """MobileNetV2(num_classes=True) was a TypeError from torch.empty deep in nn.Linear,
    width_mult='1.0' / None a TypeError from '>', width_mult=inf an OverflowError."""
    from models.mobilenet import MobileNetV2, mobilenet_v2
    with pytest.raises(ValueError, match=match):
        MobileNetV2(**kwargs)
    with pytest.raises(ValueError, match=match):
        mobilenet_v2(**kwargs)


def _other_lm(**changes):
    from models.lfm2 import LFM2Config, LFM2ForCausalLM
    cfg = LFM2Config(**{**dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=1, layer_types=["conv", "full_attention"]), **changes})
    return LFM2ForCausalLM(cfg).eval()


@pytest.mark.parametrize("make_cache, match", [
    pytest.param(lambda m: m.new_cache(2, 8).__dict__, "cache must be an LFM2Cache", id="not-a-cache"),
    pytest.param(lambda m: __import__("models.lfm2", fromlist=["LFM2Cache"]).LFM2Cache(m.config, 2, 8,
                 dtype=torch.bfloat16), "cache holds torch.bfloat16", id="other-dtype"),
    pytest.param(lambda m: _other_lm(layer_types=["full_attention", "conv"]).new_cache(2, 8),
                 "cache was made for another config", id="layer-order"),
    pytest.param(lambda m: _other_lm(num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"])
                 .new_cache(2, 8), "cache was made for another config", id="layer-count"),
    pytest.param(lambda m: _other_lm(hidden_size=24, num_attention_heads=3).new_cache(2, 8),
                 "cache was made for another config", id="width"),
])
def test_a_cache_that_does_not_fit_the_model_is_a_value_error(tiny_lm, make_cache, match):
    """forward(ids, cache=c) with a cache made before model.to(dtype), for another config or not
    an LFM2Cache at all: a ValueError saying to make it with model.new_cache. It was a RuntimeError
    from attention ('Expected query, key, and value to have the same dtype'), an IndexError,
    an AttributeError ('dict' has no 'check_room') or, for a same-size other layout, no error."""
    ids = torch.randint(0, 50, (2, 4), generator=torch.Generator().manual_seed(0))
    cache = make_cache(tiny_lm)
    with pytest.raises(ValueError, match=match) as err, torch.no_grad():
        tiny_lm(ids, cache=cache)
    assert "new_cache" in str(err.value)
    with torch.no_grad():                      # the model's own cache still runs and matches
        torch.testing.assert_close(tiny_lm(ids, cache=tiny_lm.new_cache(2, 8)), tiny_lm(ids))


@pytest.mark.parametrize("impl", IMPL_PARAMS)
def test_numpy_integer_arguments_are_ints_as_for_f_conv(impl):
    """stride / padding / dilation given as numpy integers (read from a config array) work as
    in F.conv1d/F.conv2d; they were a ValueError 'must be an int or a tuple of 1 ints'."""
    np = pytest.importorskip("numpy")
    if impl == "fused":
        from models.depthwise import fused
        if not fused.available("cpu"):
            pytest.skip("fused on CPU needs TRITON_INTERPRET=1")
    import torch.nn.functional as F

    from models.depthwise import depthwise_conv1d, depthwise_conv2d
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(2, 3, 17, generator=g), torch.randn(6, 1, 3, generator=g)
    kw = dict(stride=np.int64(2), padding=np.int32(1), dilation=np.int64(2))
    torch.testing.assert_close(depthwise_conv1d(x, w, impl=impl, **kw), F.conv1d(x, w, groups=3, **kw))
    x2, w2 = torch.randn(1, 3, 9, 8, generator=g), torch.randn(3, 1, 3, 2, generator=g)
    kw2 = dict(stride=(np.int64(1), 2), padding=(np.int64(1), np.int64(0)), dilation=np.int64(1))
    torch.testing.assert_close(depthwise_conv2d(x2, w2, impl=impl, **kw2), F.conv2d(x2, w2, groups=3, **kw2))
    with pytest.raises(ValueError, match="stride must be an int"):
        depthwise_conv1d(x, w, stride=np.float64(2.0), impl=impl)    # a float still is not
    from models.depthwise import DepthwiseConv1d
    module = DepthwiseConv1d(3, 6, np.int64(3), impl=impl, **kw)   # and the module, as nn.Conv1d
    assert module.padding == (1,) and type(module.padding[0]) is int
    conv = torch.nn.Conv1d(3, 6, np.int64(3), groups=3, **kw)
    conv.load_state_dict(module.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module(x), conv(x))


def test_generate_takes_numpy_integers_as_its_seed_does(tiny_lm):
    """max_new_tokens / top_k as numpy integers (seed already took them): they were ValueErrors
    'must be an int >= 0' naming a value that is one; bools are still refused."""
    np = pytest.importorskip("numpy")
    prompts = [[3, 4, 5], [6]]
    got = tiny_lm.generate(prompts, max_new_tokens=np.int64(3), temperature=0.7, top_k=np.int32(5), seed=1)
    assert got == tiny_lm.generate(prompts, max_new_tokens=3, temperature=0.7, top_k=5, seed=1)
    assert [len(r) for r in got] == [3, 3]
    with pytest.raises(ValueError, match="max_new_tokens must be an int"):
        tiny_lm.generate(prompts, max_new_tokens=True)
    with pytest.raises(ValueError, match="top_k must be None or an int"):
        tiny_lm.generate(prompts, max_new_tokens=2, temperature=1.0, top_k=np.float64(5))


@pytest.mark.parametrize("dims", [1, 2])
def test_module_refuses_x_with_other_channels_even_when_they_divide_out_channels(dims):
    """DepthwiseConv1d(4, 8) (m=2) given x with 2 channels ran as a C=2, m=4 conv and returned
    (B, 8, ...) without a word; nn.Conv1d(4, 8, groups=4), which convert_depthwise replaces,
    refuses it. Now a ValueError naming the expected (B, 4, ...) shape, as for any other count."""
    from models.depthwise import DepthwiseConv1d, DepthwiseConv2d, convert_depthwise
    cls, conv_cls = (DepthwiseConv1d, torch.nn.Conv1d) if dims == 1 else (DepthwiseConv2d, torch.nn.Conv2d)
    spatial = (10,) * dims
    x = torch.randn(2, 2, *spatial)
    with pytest.raises(RuntimeError):
        conv_cls(4, 8, 3, groups=4)(x)                     # what the module stands in for
    with pytest.raises(ValueError, match=r"in_channels=4.*\(B, 4, "):
        cls(4, 8, 3)(x)
    model = torch.nn.Sequential(conv_cls(4, 8, 3, groups=4))
    assert convert_depthwise(model) == 1
    with pytest.raises(ValueError, match=r"in_channels=4"):
        model(x)
    ok = torch.randn(2, 4, *spatial)                        # the right count still runs as nn.Conv
    ref = conv_cls(4, 8, 3, groups=4)
    ref.load_state_dict(model[0].state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(ok), ref(ok))


@pytest.mark.parametrize("impl", IMPL_PARAMS)
def test_short_conv_ops_under_autocast_cast_as_f_conv(impl):
    """Inside torch.autocast the short-conv block and decode step cast as depthwise_conv1d does
    (F.conv's policy): bfloat16 activations meet float32 parameters. They raised 'weight must be
    ... with dtype torch.bfloat16 like bcx', so an LFM2 model could not run under autocast."""
    if impl == "fused":
        from models.depthwise import fused
        if not fused.available("cpu"):
            pytest.skip("fused on CPU needs TRITON_INTERPRET=1")
    from models.depthwise import conv1d_decode_step
    from models.depthwise.short_conv import conv1d_decode_step_reference
    g = torch.Generator().manual_seed(3)
    B, L, C, K = 2, 5, 6, 3
    bcx, w, b = torch.randn(B, L, 3 * C, generator=g), torch.randn(C, 1, K, generator=g), torch.randn(C, generator=g)
    state, ref_state = torch.randn(B, C, K - 1, generator=g), None
    ref_state = state.clone()
    bf = torch.bfloat16
    with torch.autocast("cpu", dtype=bf):
        y = short_conv_block(bcx.to(bf), w, b, conv_state=state, impl=impl)
        step = conv1d_decode_step(bcx[:, 0, :C].to(bf), state, w, b, impl=impl)
    assert y.dtype == bf and step.dtype == bf and state.dtype == torch.float32
    ref = short_conv_block_reference(bcx.to(bf), w.to(bf), b.to(bf), conv_state=ref_state)
    ref_step = conv1d_decode_step_reference(bcx[:, 0, :C].to(bf), ref_state, w.to(bf), b.to(bf))
    torch.testing.assert_close(y, ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(step, ref_step, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(state, ref_state, rtol=2e-2, atol=2e-2)


def test_lfm2_under_autocast_matches_transformers_under_autocast(tmp_path):
    """A float32 LFM2 run inside torch.autocast(bfloat16) gives transformers' logits under the
    same autocast (bfloat16 tolerance), with and without a cache, and generates."""
    transformers = pytest.importorskip("transformers")
    from hf_reference import random_checkpoint

    from models.lfm2 import LFM2ForCausalLM
    hf = random_checkpoint(transformers, "Lfm2", dict(
        vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, layer_types=["conv", "full_attention", "conv"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2), tmp_path, seed=2)
    ours = LFM2ForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(3, 61, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = hf(ids, use_cache=False).logits.float()
        got = ours(ids).float()
        cache = ours.new_cache(2, 7)
        cached = torch.cat([ours(ids[:, :4], cache=cache), ours(ids[:, 4:], cache=cache)], 1).float()
        assert len(ours.generate(ids, max_new_tokens=2)[0]) == 2
    scale = ref.abs().max()
    torch.testing.assert_close(got / scale, ref / scale, rtol=0, atol=3e-2)
    torch.testing.assert_close(cached / scale, ref / scale, rtol=0, atol=3e-2)


@pytest.mark.parametrize("kwargs, hint", [
    pytest.param(dict(max_length=10), "max_new_tokens", id="max_length"),
    pytest.param(dict(pad_token_id=0), "unpadded", id="pad_token_id"),
    pytest.param(dict(num_beams=2), "beam search", id="num_beams"),
    pytest.param(dict(bogus=1), "prefix_allowed_tokens_fn", id="unknown"),
])
@pytest.mark.parametrize("method", ["generate", "stream_generate"])
def test_generate_names_itself_and_the_fix_for_a_transformers_keyword_it_lacks(tiny_lm, method, kwargs, hint):
    """generate(..., pad_token_id=...) (transformers' common idiom) or max_length was a TypeError
    'stream_generate() got an unexpected keyword argument', naming a function the caller did
    not call and not what to use instead."""
    with pytest.raises(TypeError) as err:
        getattr(tiny_lm, method)([[3, 4]], max_new_tokens=2, **kwargs)
    msg = str(err.value)
    assert msg.startswith(f"{method}()") and next(iter(kwargs)) in msg and hint in msg
