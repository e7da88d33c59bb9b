"""Row-chunked batched CPU forwards (models/row_chunks.py) and MobileNetV2's use of them.

The chunked forward is checked against the whole-batch forward and against one forward per
row, on fresh random inputs; the per-stage byte counts against conv shapes recorded by
forward hooks during a real forward (not the formula under test)."""
import pytest
import torch
from torch import nn

from models.depthwise import DepthwiseConv2d, use_impl
from models.mobilenet import mobilenet_v2
from models.row_chunks import CPU_ROW_CHUNK_BYTES, chunk_plan, conv_stage_row_bytes, run_chunked


@pytest.mark.parametrize("row_bytes, batch, budget, expected", [
    pytest.param([10, 10, 10], 8, 100, [(0, 3, 8)], id="all-fit-whole-batch"),
    pytest.param([10, 40, 10], 8, 100, [(0, 1, 8), (1, 2, 2), (2, 3, 8)], id="big-middle-stage"),
    pytest.param([30, 30, 60], 16, 100, [(0, 2, 2), (2, 3, 1)], id="power-of-two-floor"),
    pytest.param([500, 5], 4, 100, [(0, 1, 1), (1, 2, 4)], id="over-budget-still-one-row"),
    pytest.param([1, 1], 3, 100, [(0, 2, 3)], id="capped-at-batch"),
    pytest.param([], 4, 100, [], id="no-stages"),
])
def test_chunk_plan(row_bytes, batch, budget, expected):
    assert chunk_plan(row_bytes, batch, budget) == expected


@pytest.mark.parametrize("batch, budget", [(0, 100), (4, 0)], ids=["batch-0", "budget-0"])
def test_chunk_plan_rejects_nonpositive(batch, budget):
    with pytest.raises(ValueError, match="expected batch >= 1"):
        chunk_plan([1], batch, budget)


class _RecordBatches(nn.Module):
    """Identity that records the batch size of every call."""
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, x):
        self.seen.append(x.shape[0])
        return x


@pytest.mark.parametrize("plan, batches", [
    pytest.param([(0, 3, 7)], [[7], [7]], id="whole"),
    pytest.param([(0, 1, 2), (1, 3, 4)], [[2, 2, 2, 1], [4, 3]], id="grow"),
    pytest.param([(0, 1, 4), (1, 3, 1)], [[4, 3], [1] * 7], id="shrink"),
    pytest.param([(0, 1, 1), (1, 2, 2), (2, 3, 8)], [[1] * 7, [2, 2, 2, 1]], id="grow-twice"),
])
def test_run_chunked_equals_whole_batch_and_runs_the_planned_chunks(plan, batches):
    torch.manual_seed(0)
    first, second = [], []
    stages = nn.Sequential(nn.Linear(6, 5), _RecordBatches(first), nn.Tanh(),
                           _RecordBatches(second), nn.Linear(5, 3))
    stages = nn.Sequential(stages[:2], stages[2:4], stages[4:])      # 3 stages
    x = torch.randn(7, 6)
    expected = stages(x)
    first.clear(), second.clear()
    torch.testing.assert_close(run_chunked(stages, x, plan), expected, rtol=0, atol=1e-6)
    assert [first, second] == batches


def _recorded_row_bytes(model, h, w):
    """Per stage: max over its convs of (input + output numel) / batch * 4, from hooks."""
    peaks, hooks = [], []
    for stage in model.features:
        peaks.append(0)
        for conv in stage.modules():
            if isinstance(conv, (nn.Conv2d, DepthwiseConv2d)):
                def hook(mod, args, out, i=len(peaks) - 1):
                    peaks[i] = max(peaks[i], (args[0][0].numel() + out[0].numel()) * 4)
                hooks.append(conv.register_forward_hook(hook))
    model.row_chunk_bytes = None
    with torch.no_grad():
        model(torch.randn(2, 3, h, w))
    for hk in hooks:
        hk.remove()
    return peaks


@pytest.mark.parametrize("h, w", [(224, 224), (65, 97)], ids=["224", "odd-65x97"])
def test_conv_stage_row_bytes_match_recorded_shapes(h, w):
    model = mobilenet_v2(width_mult=0.5, seed=1)
    assert conv_stage_row_bytes(model.features, h, w, 4) == _recorded_row_bytes(model, h, w)


@pytest.fixture(scope="module")
def folded_nhwc():
    model = mobilenet_v2(num_classes=10, width_mult=0.5, seed=2).fold_bn().to_channels_last()
    assert model.row_chunk_bytes == CPU_ROW_CHUNK_BYTES
    return model


@pytest.mark.parametrize("batch, budget", [(5, 1), (6, 600_000), (8, 2 << 20)],
                         ids=["every-stage-1-row", "mixed-chunks", "default-ish"])
@pytest.mark.parametrize("impl", ["auto", "slice_sum"])
def test_mobilenet_chunked_forward_equals_whole_batch_and_per_row(folded_nhwc, batch, budget, impl):
    model = folded_nhwc
    x = torch.randn(batch, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    plan = chunk_plan(conv_stage_row_bytes(model.features, 96, 96, 4), batch, budget)
    assert any(rows < batch for _, _, rows in plan)          # the case really chunks
    with torch.no_grad(), use_impl(impl):
        model.row_chunk_bytes = budget
        chunked = model(x)
        model.row_chunk_bytes = None
        whole = model(x)
        rows = torch.cat([model(x[i:i + 1]) for i in range(batch)])
    model.row_chunk_bytes = CPU_ROW_CHUNK_BYTES
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(chunked, rows, rtol=1e-4, atol=1e-4)


def test_training_mode_never_chunks():
    """BatchNorm in training normalises with batch statistics, so chunks would change it."""
    model = mobilenet_v2(num_classes=10, width_mult=0.35, seed=3).train()
    x = torch.randn(6, 3, 64, 64)
    def forward(inputs):                      # the same dropout mask every time
        torch.manual_seed(0)
        return model(inputs)
    with torch.no_grad():
        model.row_chunk_bytes = 1
        chunk_setting = forward(x)
        model.row_chunk_bytes = None
        whole = forward(x)
    torch.testing.assert_close(chunk_setting, whole, rtol=0, atol=0)
    # and chunking a training forward would have differed, so the check above can fail
    with torch.no_grad():
        halves = torch.cat([forward(x[:3]), forward(x[3:])])
    assert not torch.allclose(halves, whole, atol=1e-3)


def test_per_group_baseline_is_never_chunked(monkeypatch):
    """per_group pays per call; chunks would multiply its launches and handicap the baseline."""
    import models.mobilenet as mobilenet
    calls = []
    real = mobilenet.run_chunked
    monkeypatch.setattr(mobilenet, "run_chunked", lambda *a: calls.append(1) or real(*a))
    model = mobilenet_v2(num_classes=10, width_mult=0.35, seed=4).fold_bn().to_channels_last()
    model.row_chunk_bytes = 1
    x = torch.randn(2, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        with use_impl("per_group"):
            before = model(x)
        assert calls == []
        with use_impl("native"):
            after = model(x)
        assert calls == [1]
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-4)
