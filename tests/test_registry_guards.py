"""Guards a mutation run found untested in models/registry.py."""
import pytest
import torch
from torch import nn

from models.registry import ServedModel, TensorSpec


class Echo(ServedModel):
    def __init__(self):
        super().__init__("echo", (TensorSpec("x", "FP32", (-1, 2)),), (TensorSpec("y", "FP32", (-1, 2)),),
                         nn.Identity(), "cpu", {})

    def _forward(self, inputs):
        return {"y": inputs["x"]}


@pytest.mark.parametrize("inputs", [
    pytest.param({"x": torch.ones(1, 2), "extra": torch.ones(1, 2)}, id="an-extra-input"),
    pytest.param({}, id="none"),
    pytest.param({"y": torch.ones(1, 2)}, id="another-name"),
])
def test_inputs_must_be_exactly_the_declared_names(inputs):
    with pytest.raises(ValueError, match=r"expected inputs \['x'\]"):
        Echo().forward(inputs)
    assert torch.equal(Echo().forward({"x": torch.ones(1, 2)})["y"], torch.ones(1, 2))


class _TinyLM(nn.Module):
    from types import SimpleNamespace as _NS
    config = _NS(vocab_size=10, max_position_embeddings=4)

    def next_token_logits(self, ids):
        return torch.zeros(ids.shape[0], 10)


def test_a_row_of_exactly_max_position_embeddings_tokens_is_taken():
    from models.registry import LFM2Served
    served = LFM2Served(_TinyLM(), "cpu", {})
    assert served.forward({"input_ids": torch.zeros(2, 4, dtype=torch.int64)})["logits"].shape == (2, 10)
    with pytest.raises(ValueError, match="at most 4 tokens per row"):
        served.forward({"input_ids": torch.zeros(1, 5, dtype=torch.int64)})


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.complex64])
def test_token_ids_that_are_not_integers_are_refused(dtype):
    from models.registry import LFM2Served
    with pytest.raises(ValueError, match="expected INT64 token ids"):
        LFM2Served(_TinyLM(), "cpu", {}).forward({"input_ids": torch.zeros(1, 3, dtype=dtype)})


def test_labels_for_lfm2_are_refused_before_anything_is_built():
    from models.registry import build_model
    with pytest.raises(ValueError, match="labels= applies to mobilenet_v2 only"):
        build_model("lfm2", labels="labels.txt")
