"""MobileNetV2 used as a library, as torchvision's mobilenet_v2 would be: edge batches through
the eval forward (whose CPU path runs stages in row chunks, models/row_chunks.py)."""
import pytest
import torch

from models.depthwise import use_impl
from models.mobilenet import mobilenet_v2


@pytest.fixture(scope="module")
def small():
    return mobilenet_v2(num_classes=10, width_mult=0.35, seed=0)


@pytest.mark.parametrize("impl", [pytest.param("slice_sum", id="slice_sum"), pytest.param("native", id="native"),
                                  pytest.param("per_group", id="per_group")])
@pytest.mark.parametrize("layout", [pytest.param(torch.contiguous_format, id="nchw"),
                                    pytest.param(torch.channels_last, id="nhwc")])
def test_an_empty_batch_gives_empty_logits(small, impl, layout):
    """torchvision's model maps (0, 3, H, W) to (0, num_classes); the row-chunked eval
    forward raised chunk_plan's 'expected batch >= 1' instead."""
    x = torch.randn(0, 3, 64, 64).contiguous(memory_format=layout)
    with use_impl(impl), torch.inference_mode():
        out = small(x)
    assert out.shape == (0, 10) and out.dtype == torch.float32


def test_an_empty_batch_through_the_folded_model():
    model = mobilenet_v2(num_classes=10, width_mult=0.35, seed=0).fold_bn()
    with torch.no_grad():
        assert model(torch.randn(0, 3, 64, 64)).shape == (0, 10)
