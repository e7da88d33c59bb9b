"""MobileNetV2: torchvision layout, impl swaps, BN folding, channels_last, checkpoints, preprocessing.

The expected layout below is written out independently of models/mobilenet.py (a hand table
of torchvision's blocks), so a layout slip in the model fails here. Forwards use small
inputs (64x64) to keep per_group and the interpreter fast on 2 cores.
"""
import pickle
import re

import pytest
import torch

from models.depthwise import DepthwiseConv2d, use_impl
from models.mobilenet import MobileNetV2, fold_bn_into_conv, mobilenet_v2, preprocess

# (cin, cout, expand) of features.1 .. features.17, torchvision's mobilenet_v2 at width 1.0.
BLOCKS = ([(32, 16, 1), (16, 24, 6), (24, 24, 6), (24, 32, 6), (32, 32, 6), (32, 32, 6),
           (32, 64, 6)] + [(64, 64, 6)] * 3 + [(64, 96, 6), (96, 96, 6), (96, 96, 6),
           (96, 160, 6), (160, 160, 6), (160, 160, 6), (160, 320, 6)])


def expected_layout(num_classes=1000):
    """{key: shape} of torchvision.models.mobilenet_v2().state_dict(), from the table above."""
    out = {}

    def conv(key, cout, cin_per_group, k):
        out[f"{key}.weight"] = (cout, cin_per_group, k, k)

    def bn(key, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            out[f"{key}.{n}"] = (c,)
        out[f"{key}.num_batches_tracked"] = ()

    conv("features.0.0", 32, 3, 3), bn("features.0.1", 32)
    for i, (cin, cout, t) in enumerate(BLOCKS, start=1):
        p, h = f"features.{i}.conv", cin * t
        j = 0
        if t != 1:
            conv(f"{p}.0.0", h, cin, 1), bn(f"{p}.0.1", h)
            j = 1
        conv(f"{p}.{j}.0", h, 1, 3), bn(f"{p}.{j}.1", h)
        conv(f"{p}.{j + 1}", cout, h, 1), bn(f"{p}.{j + 2}", cout)
    conv("features.18.0", 1280, 320, 1), bn("features.18.1", 1280)
    out["classifier.1.weight"], out["classifier.1.bias"] = (num_classes, 1280), (num_classes,)
    return out


@pytest.fixture(scope="module")
def model():
    return mobilenet_v2(seed=0)


def close(a, b, rtol=1e-4):
    """Max abs error relative to the reference's scale (logits are O(1) or smaller)."""
    return float((a - b).abs().max()) <= rtol * max(1.0, float(b.abs().max()))


def test_parameter_count_and_torchvision_keys(model):
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = expected_layout()
    assert len(want) == 314
    assert list(got) == list(want)                          # names *and* order
    assert got == want


def test_depthwise_layers_are_depthwise_modules(model):
    dw = [(n, m) for n, m in model.named_modules() if isinstance(m, DepthwiseConv2d)]
    assert len(dw) == model.num_depthwise == 17
    assert dw[0][0] == "features.1.conv.0.0" and dw[1][0] == "features.2.conv.1.0"
    assert all(m.weight.shape[1:] == (1, 3, 3) for _, m in dw)


def test_width_mult_and_num_classes():
    m = MobileNetV2(num_classes=10, width_mult=0.5)
    assert m.features[0][0].weight.shape == (16, 3, 3, 3)      # make_divisible(16) = 16
    assert m.classifier[1].weight.shape == (10, 1280)           # last channel never shrinks
    with pytest.raises(ValueError, match="num_classes"):
        MobileNetV2(num_classes=0)


# compiled pays one compilation per layer shape and the Triton interpreter is slow, so those
# two run on the stem + first 2 blocks (2 depthwise layers, strides 1 and 2) on CPU.
_PREFIX_ON_CPU = ("compiled", "fused")


@pytest.mark.parametrize("impl", [
    pytest.param("per_group", id="per_group"), pytest.param("slice_sum", id="slice_sum"),
    pytest.param("compiled", id="compiled"), pytest.param("auto", id="auto"),
    pytest.param("fused", id="fused", marks=pytest.mark.fused),
])
def test_impls_keep_outputs(model, impl):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    net = model
    if impl in _PREFIX_ON_CPU and not torch.cuda.is_available():
        net, x = model.features[:3], x[:, :, :32, :32]
    with torch.inference_mode():
        with use_impl("native"):
            ref = net(x)
        with use_impl(impl):
            out = net(x)
    assert out.shape == ref.shape and float(ref.std()) > 1e-3
    assert close(out, ref), float((out - ref).abs().max())


def test_fold_bn_keeps_outputs():
    m = mobilenet_v2(num_classes=16, seed=3)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(), use_impl("native"):
        ref = m(x)
        m.fold_bn()
        out = m(x)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert all(mod.bias is not None for mod in m.modules()
               if isinstance(getattr(mod, "weight", None), torch.Tensor) and mod.weight.dim() == 4)
    assert float(ref.std()) > 1e-3                              # a non-degenerate comparison
    assert close(out, ref), float((out - ref).abs().max())
    m.fold_bn()                                                 # idempotent
    with torch.inference_mode(), use_impl("native"):
        assert torch.equal(m(x), out)


def test_fold_bn_into_conv_matches_conv_then_bn():
    """Independent of the model: one conv + a BN with random stats, in eval mode."""
    g = torch.Generator().manual_seed(4)
    conv, bn = torch.nn.Conv2d(5, 7, 3, bias=True), torch.nn.BatchNorm2d(7).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.randn(7, generator=g))
        bn.running_var.copy_(torch.rand(7, generator=g) + 0.1)
    x = torch.randn(2, 5, 9, 9, generator=g)
    with torch.no_grad():
        ref = bn(conv(x))
        fold_bn_into_conv(conv, bn)
        assert torch.allclose(conv(x), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        fold_bn_into_conv(torch.nn.Conv2d(5, 3, 1), torch.nn.BatchNorm2d(7))


@pytest.mark.parametrize("impl", [pytest.param("native", id="native"),
                                  pytest.param("slice_sum", id="slice_sum")])
def test_channels_last_keeps_outputs(impl):
    m = mobilenet_v2(num_classes=8, seed=5).fold_bn()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode(), use_impl(impl):
        ref = m(x)
        m.to_channels_last()
        assert m.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
        out = m(x.contiguous(memory_format=torch.channels_last))
    assert close(out, ref), float((out - ref).abs().max())


@pytest.mark.parametrize("suffix", [pytest.param(".safetensors", id="safetensors"),
                                    pytest.param(".pth", id="pth")])
def test_checkpoint_round_trip(tmp_path, suffix):
    src = mobilenet_v2(num_classes=10, seed=7)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = MobileNetV2.from_file(path)
    assert loaded.num_classes == 10                             # read from classifier.1.weight
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode(), use_impl("native"):
        assert torch.equal(loaded(x), src(x))


def _save(tmp_path, state):
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    return path


def test_bad_checkpoints_name_the_tensor(tmp_path):
    state = mobilenet_v2(num_classes=10, seed=None).state_dict()
    missing = {k: v for k, v in state.items() if k != "features.3.conv.1.0.weight"}
    with pytest.raises(ValueError, match=r"missing tensor 'features\.3\.conv\.1\.0\.weight'"):
        MobileNetV2.from_file(_save(tmp_path, missing))
    wrong = dict(state, **{"features.5.conv.2.weight": torch.zeros(32, 191, 1, 1)})
    with pytest.raises(ValueError, match=r"'features\.5\.conv\.2\.weight' has shape \(32, 191, 1, 1\)"
                                         r", expected \(32, 192, 1, 1\)"):
        MobileNetV2.from_file(_save(tmp_path, wrong))
    extra = dict(state, **{"features.19.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected tensor 'features\.19\.0\.weight'"):
        MobileNetV2.from_file(_save(tmp_path, extra))
    no_head = {k: v for k, v in state.items() if not k.startswith("classifier")}
    with pytest.raises(ValueError, match="classifier.1.weight"):
        MobileNetV2.from_file(_save(tmp_path, no_head))
    # older checkpoints without BN step counters still load
    MobileNetV2.from_file(_save(tmp_path, {k: v for k, v in state.items()
                                           if not k.endswith("num_batches_tracked")}))


class _Evil:                                        # a pickle payload weights_only must refuse
    def __reduce__(self):
        return (print, ("executed",))


def test_pth_is_loaded_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(ValueError, match="weights_only"):
        MobileNetV2.from_file(path)
    with pytest.raises(ValueError, match="not a file"):
        MobileNetV2.from_file(tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=".safetensors"):
        MobileNetV2.from_file(tmp_path / "w.onnx")


def test_preprocess_shape_normalisation_and_centre_crop():
    from PIL import Image
    # 512x256: shorter side is already 256, so the centre crop keeps columns 144..367:
    # 112 columns of the left colour, then 112 of the right one.
    img = Image.new("RGB", (512, 256), (255, 0, 0))
    img.paste((0, 128, 255), (256, 0, 512, 256))
    x = preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    left = (torch.tensor([255, 0, 0]) / 255 - mean) / std
    right = (torch.tensor([0, 128, 255]) / 255 - mean) / std
    assert torch.allclose(x[:, :, :110], left[:, None, None].expand(3, 224, 110), atol=1e-5)
    assert torch.allclose(x[:, :, 114:], right[:, None, None].expand(3, 224, 110), atol=1e-5)
    # any size and mode: grayscale portrait -> the same output shape
    assert preprocess(Image.new("L", (100, 333), 7)).shape == (3, 224, 224)
    with pytest.raises(ValueError, match="PIL"):
        preprocess(torch.zeros(3, 224, 224))


def test_labels_file(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    assert mobilenet_v2(num_classes=3, labels=tmp_path / "labels.txt").labels == ["cat", "dog", "bird"]
    assert mobilenet_v2(num_classes=2).labels == ["class_0", "class_1"]
    with pytest.raises(ValueError, match="3 lines, expected one per class"):
        mobilenet_v2(num_classes=4, labels=tmp_path / "labels.txt")


def test_labels_file_as_windows_editors_save_it(tmp_path):
    """Notepad's UTF-8 opens with a BOM and ends lines with CRLF: neither belongs to a name
    (class 0 was '\\ufeffcat'). A file in another encoding is refused naming the file."""
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\r\nchien \u00e9\r\n".encode("utf-8"))
    assert mobilenet_v2(num_classes=2, labels=path).labels == ["cat", "chien \u00e9"]
    path.write_bytes("cat\nchien \u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"labels: {path} is not UTF-8 text") + ".*save it as UTF-8"):
        mobilenet_v2(num_classes=2, labels=path)


@pytest.mark.parametrize("width_mult", [pytest.param(w, id=f"x{w}") for w in (0.35, 0.75, 1.4)])
def test_width_mult_is_read_from_the_checkpoint(tmp_path, width_mult):
    """A torchvision state_dict of another width loads as that width (the registry's path,
    which takes no width argument), with the same outputs."""
    src = mobilenet_v2(num_classes=7, width_mult=width_mult, seed=3)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    loaded = MobileNetV2.from_file(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode(), use_impl("native"):
        assert torch.equal(loaded(x), src(x))
    with pytest.raises(ValueError, match="stem conv"):
        MobileNetV2.from_file(_save(tmp_path, {**src.state_dict(), "features.0.0.weight": torch.zeros(5, 3, 3, 3)}))
