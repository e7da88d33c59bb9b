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


@pytest.mark.parametrize("x, match", [
    pytest.param(torch.randn(3, 64, 64), r"\(B, 3, H, W\).*unsqueeze", id="unbatched-image"),
    pytest.param(torch.randn(2, 4, 64, 64), r"\(B, 3, H, W\)", id="four-channels"),
    pytest.param(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8), "dtype", id="uint8-pixels"),
    pytest.param(torch.randn(2, 3, 64, 64, dtype=torch.float64), "dtype", id="float64"),
])
def test_bad_input_is_a_value_error_naming_what_was_expected(small, x, match):
    """An unbatched (3, H, W) image was an IndexError inside the row chunking (torch.Size index
    3); a wrong channel count or dtype a RuntimeError from deep inside the first conv."""
    with torch.no_grad(), pytest.raises(ValueError, match=match):
        small(x)


def test_autocast_still_takes_float32_input_into_the_float32_model(small):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = small(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = small(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.1, atol=0.1)


def test_a_meta_device_forward_gives_the_logits_shape():
    """Shape inference and FLOP counting run the model on the meta device: its input check
    asked torch.is_autocast_enabled('meta'), a RuntimeError ('unknown device type for
    autocast'), where the forward ran before the check existed."""
    model = mobilenet_v2(num_classes=10, width_mult=0.35, seed=0).to("meta")
    with torch.no_grad():
        assert model(torch.empty(2, 3, 64, 64, device="meta")).shape == (2, 10)


@pytest.mark.parametrize("x_dtype, model_dtype", [pytest.param(torch.float64, torch.float32, id="float64-input"),
                                                  pytest.param(torch.float32, torch.float64, id="float64-model")])
def test_under_autocast_a_float64_side_is_still_a_dtype_error(x_dtype, model_dtype):
    """autocast casts float32/float16/bfloat16, never float64: such a pair stays mismatched
    inside the first conv (a RuntimeError 'expected scalar type Double but found BFloat16'),
    so autocast excuses no dtype difference that has a float64 side."""
    model = mobilenet_v2(num_classes=10, width_mult=0.35, seed=0).to(model_dtype)
    x = torch.randn(2, 3, 64, 64, dtype=x_dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="dtype"):
        model(x)
