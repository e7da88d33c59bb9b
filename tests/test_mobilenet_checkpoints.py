"""MobileNetV2 weights as training scripts leave them on disk: DataParallel's `module.`
prefix, a state_dict wrapped in a checkpoint dict, a whole pickled model, one bad tensor in
a narrow model."""
import pytest
import torch

from models.depthwise import use_impl
from models.mobilenet import MobileNetV2, mobilenet_v2
from models.registry import build_model


@pytest.fixture(scope="module")
def src():
    return mobilenet_v2(num_classes=10, width_mult=0.5, seed=5)


def _same_outputs(loaded, src):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), use_impl("native"):
        assert torch.equal(loaded(x), src(x))


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda sd: sd, id="bare"),
    # pytorch/examples' ImageNet script: DataParallel, saved under "state_dict" with the epoch
    pytest.param(lambda sd: {"epoch": 90, "arch": "mobilenet_v2", "state_dict": sd,
                             "best_acc1": torch.tensor(71.9)}, id="imagenet-example"),
])
def test_dataparallel_module_prefix_is_stripped(tmp_path, src, wrap):
    state = {"module." + k: v for k, v in src.state_dict().items()}
    torch.save(wrap(state), tmp_path / "dp.pth")
    loaded = MobileNetV2.from_file(tmp_path / "dp.pth")
    assert loaded.num_classes == 10
    _same_outputs(loaded, src)
    served = build_model("mobilenet_v2", tmp_path / "dp.pth")      # the registry's path too
    assert served.outputs[0].shape == (-1, 10)


@pytest.mark.parametrize("key", ["model_state_dict", "model"])
def test_state_dict_under_a_checkpoint_key_is_found(tmp_path, src, key):
    """PyTorch's tutorial saves {'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'};
    torchvision's reference scripts put the weights under 'model'."""
    torch.save({"epoch": 3, key: src.state_dict(), "loss": torch.tensor(0.5)}, tmp_path / "ckpt.pth")
    _same_outputs(MobileNetV2.from_file(tmp_path / "ckpt.pth"), src)


def test_a_dict_without_weights_names_its_keys(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(ValueError, match=r"'epoch', 'optimizer'.*state_dict") as err:
        MobileNetV2.from_file(tmp_path / "opt.pth")
    assert "got dict" not in str(err.value)


class _Code:                                   # a pickle that runs print when loaded unsafely
    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize("obj, names", [
    pytest.param(lambda: {"features.0.0.weight": _Code()}, "call print ", id="pickled-code"),
    pytest.param(lambda: mobilenet_v2(seed=None), "call models.mobilenet.MobileNetV2 ", id="whole-model"),
])
def test_pickled_objects_are_refused_naming_what_they_need(tmp_path, capsys, obj, names):
    """weights_only=True refuses them; the message names the global the file wants run and
    how to re-save, without torch's advice cut off mid-sentence ('Re-running torch.load with
    weights_only set to False' was where its first 200 characters ended)."""
    torch.save(obj(), tmp_path / "w.pth")
    with pytest.raises(ValueError) as err:
        MobileNetV2.from_file(tmp_path / "w.pth")
    msg = str(err.value)
    assert names in msg and "state_dict()" in msg and "weights_only=True" in msg, msg
    assert "Re-running" not in msg and "\x1b[" not in msg, msg
    assert "executed" not in capsys.readouterr().out


def test_one_bad_tensor_in_a_narrow_model_is_the_one_named(tmp_path, src):
    """Width 0.35 and 0.5 have the same stem; with one tensor off, the width read from the
    shapes is the one the rest fit (0.5), so the error names that tensor, not a fine one."""
    state = dict(src.state_dict(), **{"features.3.conv.1.0.weight": torch.zeros(3)})
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"'features\.3\.conv\.1\.0\.weight' has shape \(3,\), "
                                         r"expected \(96, 1, 3, 3\)"):
        MobileNetV2.from_file(tmp_path / "w.pth")
