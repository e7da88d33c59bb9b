"""models.registry: specs, validated forwards, warm-up inputs, extras, errors (ValueError)."""
import pytest
import torch

from models.depthwise import use_impl
from models.registry import MODEL_NAMES, ServedModel, TensorSpec, build_model


@pytest.fixture(scope="module")
def mobilenet():
    return build_model("mobilenet_v2")


@pytest.fixture(scope="module")
def lfm2():
    return build_model("lfm2")


def test_names():
    assert MODEL_NAMES == ("lfm2", "mobilenet_v2")
    with pytest.raises(ValueError, match="expected one of"):
        build_model("resnet50")


def test_mobilenet_specs_and_metadata(mobilenet):
    assert isinstance(mobilenet, ServedModel) and mobilenet.name == "mobilenet_v2"
    assert mobilenet.inputs == (TensorSpec("input", "FP32", (-1, 3, 224, 224)),)
    assert mobilenet.outputs == (TensorSpec("logits", "FP32", (-1, 1000)),)
    assert mobilenet.device == torch.device("cpu")
    meta = mobilenet.metadata
    assert meta["num_classes"] == 1000 and meta["parameters"] == 3_504_872
    assert meta["bn_folded"] and meta["depthwise_layers"] == 17
    assert mobilenet.labels[:2] == ["class_0", "class_1"] and len(mobilenet.labels) == 1000
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in mobilenet.module.modules())


def test_mobilenet_forward_matches_unfolded_model(mobilenet):
    """The served (BN-folded) forward equals an independently built eval model."""
    from models.mobilenet import mobilenet_v2
    ref_model = mobilenet_v2(seed=0)
    x = mobilenet.warmup_inputs(2)["input"]
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    with use_impl("native"):
        out = mobilenet.forward({"input": x})["logits"]
        with torch.inference_mode():
            ref = ref_model(x)
    assert out.shape == (2, 1000) and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=1e-4 * max(1.0, float(ref.abs().max())))


def _with_one(batch, value):
    """Random images with `value` at one pixel of the last row."""
    x = torch.randn(batch, 3, 224, 224)
    x[-1, 1, 100, 7] = value
    return x


@pytest.mark.parametrize("inputs,match", [
    pytest.param({"x": torch.zeros(1, 3, 224, 224)}, r"expected inputs \['input'\]", id="wrong-name"),
    pytest.param({"input": torch.zeros(1, 3, 64, 64)}, r"expected shape \[-1,3,224,224\]", id="wrong-hw"),
    pytest.param({"input": torch.zeros(3, 224, 224)}, r"expected shape \[-1,3,224,224\]", id="no-batch"),
    pytest.param({"input": torch.zeros(0, 3, 224, 224)}, r"any size >= 1", id="empty-batch"),
    pytest.param({"input": torch.zeros(1, 3, 224, 224, dtype=torch.int64)}, "FP32", id="int-data"),
    pytest.param({"input": torch.full((1, 3, 224, 224), float("nan"))}, "finite", id="nan"),
    pytest.param({"input": _with_one(2, float("inf"))}, "finite", id="one-inf-in-row-1"),
    pytest.param({"input": _with_one(3, float("-inf"))}, "finite", id="one-minus-inf"),
    pytest.param({"input": _with_one(2, float("nan"))}, "finite", id="one-nan-in-row-1"),
    pytest.param({"input": [[0.0]]}, "expected a tensor", id="not-a-tensor"),
])
def test_mobilenet_bad_inputs(mobilenet, inputs, match):
    with pytest.raises(ValueError, match=match):
        mobilenet.forward(inputs)


def test_mobilenet_accepts_huge_finite_values_whose_sum_overflows(mobilenet):
    x = torch.full((2, 3, 224, 224), 3e38)               # finite, but the sum is inf
    assert torch.isinf(x.sum())
    assert mobilenet.forward({"input": x})["logits"].shape == (2, 1000)


def test_mobilenet_preprocess_feeds_forward(mobilenet):
    from PIL import Image
    x = mobilenet.preprocess(Image.new("RGB", (320, 240), (10, 200, 30)))
    assert x.shape == (3, 224, 224)
    assert mobilenet.forward({"input": x[None]})["logits"].shape == (1, 1000)


def test_mobilenet_from_file_with_labels(tmp_path):
    from safetensors.torch import save_file

    from models.mobilenet import mobilenet_v2
    src = mobilenet_v2(num_classes=5, seed=9)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    served = build_model("mobilenet_v2", str(tmp_path / "w.safetensors"))
    assert served.outputs[0].shape == (-1, 5) and served.labels == list("abcde")
    assert served.metadata["source"].endswith("w.safetensors")
    x = torch.randn(1, 3, 224, 224)
    with use_impl("native"), torch.inference_mode():
        ref = src(x)
    assert torch.allclose(served.forward({"input": x})["logits"], ref, atol=1e-4)
    with pytest.raises(ValueError, match="does not exist"):
        build_model("mobilenet_v2", str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="is a directory"):
        build_model("mobilenet_v2", str(tmp_path))


def test_lfm2_specs_forward_and_extras(lfm2):
    v = lfm2.lm.config.vocab_size
    assert lfm2.inputs == (TensorSpec("input_ids", "INT64", (-1, -1)),)
    assert lfm2.outputs == (TensorSpec("logits", "FP32", (-1, v)),)
    assert lfm2.metadata["vocab_size"] == v and lfm2.lm.tokenizer is not None
    ids = lfm2.warmup_inputs(2)["input_ids"]
    assert ids.dtype == torch.int64 and ids.shape[0] == 2
    with use_impl("native"):
        out = lfm2.forward({"input_ids": ids})["logits"]
    assert out.shape == (2, v) and out.dtype == torch.float32
    # independent check: the last position of the full-sequence logits
    with torch.inference_mode(), use_impl("native"):
        ref = lfm2.lm(ids)[:, -1].float()
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_lfm2_impls_agree(lfm2):
    ids = torch.tensor([lfm2.lm.tokenizer.encode("depthwise")])
    with use_impl("native"):
        ref = lfm2.forward({"input_ids": ids})["logits"]
    for impl in ("per_group", "slice_sum", "auto"):
        with use_impl(impl):
            out = lfm2.forward({"input_ids": ids})["logits"]
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), impl


@pytest.mark.parametrize("ids,match", [
    pytest.param(torch.tensor([[1, 2, 10_000]]), r"in \[0, 264\)", id="out-of-vocab"),
    pytest.param(torch.tensor([[-1, 2]]), r"in \[0, 264\)", id="negative"),
    pytest.param(torch.tensor([1, 2, 3]), r"expected shape \[-1,-1\]", id="1d"),
    pytest.param(torch.zeros(1, 0, dtype=torch.int64), r"any size >= 1", id="empty"),
    pytest.param(torch.tensor([[1.0, 2.0]]), "INT64", id="float-ids"),
])
def test_lfm2_bad_inputs(lfm2, ids, match):
    with pytest.raises(ValueError, match=match):
        lfm2.forward({"input_ids": ids})


def test_lfm2_from_hf_directory(tmp_path):
    """A tiny HF-layout directory (config.json + model.safetensors, tied head omitted) loads
    through the registry and serves the same next-token logits as the model it was saved from."""
    import json

    from safetensors.torch import save_file

    from models.lfm2 import LFM2Config, LFM2ForCausalLM
    cfg = LFM2Config(vocab_size=300, hidden_size=64, intermediate_size=96, block_auto_adjust_ff_dim=False,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     layer_types=("conv", "full_attention"))
    src = LFM2ForCausalLM.empty(cfg)
    src.init_weights(3)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file({k: v.contiguous() for k, v in src.state_dict().items() if k != "lm_head.weight"},
              str(tmp_path / "model.safetensors"))
    served = build_model("lfm2", str(tmp_path))
    assert served.outputs[0].shape == (-1, 300) and served.metadata["vocab_size"] == 300
    assert served.metadata["conv_layers"] == 1 and not served.metadata["has_tokenizer"]
    ids = torch.tensor([[5, 299, 0, 17]])
    with torch.inference_mode(), use_impl("native"):
        ref = src(ids)[:, -1]
    assert torch.allclose(served.forward({"input_ids": ids})["logits"], ref, atol=1e-5)
    with pytest.raises(ValueError, match=r"in \[0, 300\)"):
        served.forward({"input_ids": torch.tensor([[300]])})


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        build_model("mobilenet_v2", dtype="int8")
    with pytest.raises(ValueError, match="device"):
        build_model("mobilenet_v2", device="tpu")
    with pytest.raises(ValueError, match="not a directory"):
        f = tmp_path / "x.safetensors"
        f.write_bytes(b"")
        build_model("lfm2", str(f))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            build_model("mobilenet_v2", device="cuda")


def test_lfm2_from_a_preset_architecture():
    """--model lfm2=preset:NAME serves another architecture with seeded weights (the demos keep
    their byte tokenizer); a wrong name lists the presets, other models refuse the form."""
    served = build_model("lfm2", "preset:lfm3-demo")
    assert served.metadata["architecture"] == "lfm3" and served.metadata["conv_kernel_size"] == 7
    assert served.metadata["has_tokenizer"] and "preset lfm3-demo" in served.metadata["source"]
    ids = torch.tensor([[257, 104, 105]])
    with torch.inference_mode():
        want = served.lm(ids)[:, -1]
    torch.testing.assert_close(served.forward({"input_ids": ids})["logits"], want)
    with pytest.raises(ValueError, match=r"unknown LFM2 preset 'nope'; expected one of .*lfm3-demo"):
        build_model("lfm2", "preset:nope")
    with pytest.raises(ValueError, match="applies to lfm2"):
        build_model("mobilenet_v2", "preset:lfm3-demo")


def test_check_source_reads_an_lfm2_config_json(tmp_path):
    """dwserve serve's preflight (check_source, before the port is bound) refuses a directory
    whose config.json is not an LFM2's, naming the file; it only looked for the file, and the
    loader found the model_type after the server was up."""
    from models.registry import check_source
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match=r"config\.json: model_type='llama': expected one of"):
        check_source("lfm2", tmp_path)
    (tmp_path / "config.json").write_text("{}")      # transformers' defaults: an LFM2 config
    with pytest.raises(ValueError, match=r"no weights in .*: expected model\.safetensors or model\.safetensors\.index\.json"):
        check_source("lfm2", tmp_path)               # a config alone: refused before the port, not after
    (tmp_path / "model.safetensors").write_bytes(b"")
    check_source("lfm2", tmp_path)
