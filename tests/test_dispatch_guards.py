"""Guards a mutation run found untested in models/depthwise/dispatch.py: the call
cache and auto's cache must tell x's memory format apart, since auto's rule reads it."""
import pytest
import torch

from models.depthwise import depthwise_conv2d, dispatch, native, slice_sum


@pytest.fixture
def spied(monkeypatch):
    """auto answers slice_sum for channels_last x, native otherwise; records what it was asked
    and which impl each call ran."""
    asked, ran = [], []

    def choose(op, device, dtype, x_shape, weight_shape, stride, dilation, channels_last, graphed=False,
               padding=None):
        asked.append(channels_last)
        return "slice_sum" if channels_last else "native"

    def spy(module, name):
        real = module.conv2d

        def conv2d(*args, **kwargs):
            ran.append(name)
            return real(*args, **kwargs)
        monkeypatch.setattr(module, "conv2d", conv2d)
    monkeypatch.setattr(dispatch, "_choose", choose)
    spy(native, "native")
    spy(slice_sum, "slice_sum")
    dispatch.clear_caches()
    yield asked, ran
    dispatch.clear_caches()   # entries hold the spies


def test_a_channels_last_x_of_a_cached_shape_is_resolved_for_its_own_layout(spied):
    asked, ran = spied
    x, w = torch.randn(2, 8, 6, 6), torch.randn(8, 1, 3, 3)
    want = torch.nn.functional.conv2d(x, w, padding=1, groups=8)
    out = depthwise_conv2d(x, w, padding=1, impl="auto")                    # NCHW: cached
    out_cl = depthwise_conv2d(x.contiguous(memory_format=torch.channels_last), w, padding=1, impl="auto")
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(out_cl, want)
    assert asked == [False, True] and ran == ["native", "slice_sum"]
    depthwise_conv2d(x, w, padding=1, impl="auto")                           # and back: both cached
    assert ran == ["native", "slice_sum", "native"] and len(asked) == 2


def test_a_one_by_one_map_counts_as_contiguous_not_channels_last(spied):
    """(B, C, 1, 1) is both contiguous and channels_last-contiguous: auto is told contiguous."""
    asked, ran = spied
    depthwise_conv2d(torch.randn(2, 8, 1, 1), torch.randn(8, 1, 3, 3), padding=1, impl="auto")
    assert asked == [False] and ran == ["native"]
