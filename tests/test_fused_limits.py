"""The fused impl's size limits, refused with a ValueError naming them before any launch: a batch
beyond the CUDA grid's 65535 rows, and a batch row (times the channel multiplier) of ROW_LIMIT
elements or more, where the kernels' int32 offsets inside a row would wrap and read or write
other memory. Expanded (stride-0) tensors reach the checks without the memory; a lowered limit
shows the boundary on small tensors, the calls under it still equal to the reference."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from fused_common import needs_fused  # noqa: E402
from models.depthwise import depthwise_conv1d, depthwise_conv2d, dispatch, fused, short_conv_block  # noqa: E402

pytestmark = [pytest.mark.fused, needs_fused]


@pytest.fixture(autouse=True)
def _fresh_call_cache():
    dispatch.clear_caches()          # the conv ops check once per call signature
    yield
    dispatch.clear_caches()


def test_a_row_of_2_to_the_30_elements_is_refused_without_the_memory():
    x = torch.zeros(1, 1, 1).expand(2, 1 << 15, 1 << 15)            # 2 rows of 2**30, no memory
    with pytest.raises(ValueError, match=r"at most 1073741824 elements per batch row .*impl='native'"):
        depthwise_conv1d(x, torch.zeros(1 << 15, 1, 3), impl="fused")


def test_a_batch_beyond_the_grid_limit_is_refused():
    x = torch.zeros(1, 1, 1).expand(fused.MAX_BATCH + 1, 4, 8)
    with pytest.raises(ValueError, match="batches of at most 65535 rows"):
        depthwise_conv1d(x, torch.zeros(4, 1, 3), impl="fused")


def test_the_row_limit_counts_the_channel_multiplier_and_holds_for_every_fused_op(monkeypatch):
    monkeypatch.setattr(fused, "ROW_LIMIT", 64)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 4, 15, generator=g), torch.randn(4, 1, 3, generator=g)
    torch.testing.assert_close(depthwise_conv1d(x, w, padding=1, impl="fused"),
                               F.conv1d(x, w, padding=1, groups=4), rtol=1e-5, atol=1e-5)   # 60 < 64
    with pytest.raises(ValueError, match="at most 64 elements per batch row"):
        depthwise_conv1d(torch.randn(2, 4, 16, generator=g), w, padding=1, impl="fused")    # 64
    x2 = torch.randn(1, 2, 4, 4, generator=g)                                                # 32 a row
    with pytest.raises(ValueError, match=r"got 64"):                                       # x 2 outputs
        depthwise_conv2d(x2, torch.randn(4, 1, 3, 3, generator=g), padding=1, impl="fused")
    w2 = torch.randn(2, 1, 3, 3, generator=g)
    torch.testing.assert_close(depthwise_conv2d(x2, w2, padding=1, impl="fused"),
                               F.conv2d(x2, w2, padding=1, groups=2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="at most 64 elements per batch row"):
        short_conv_block(torch.randn(1, 8, 3 * 8, generator=g), torch.randn(8, 1, 3, generator=g), impl="fused")
