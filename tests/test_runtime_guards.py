"""Guards a mutation run found untested in service/runtime.py."""
import asyncio

import numpy as np
import pytest
import torch

from service.batching import Item
from service.metrics import ServiceMetrics
from service.runtime import ModelRuntime, Result
from service.settings import Settings
from service.testing import FakeLanguageModel, fake_hooks


class Picky(FakeLanguageModel):
    """Refuses (ValueError, as registry.ServedModel does for bad input) any batch with a negative id."""

    def forward(self, inputs):
        if int(inputs["input_ids"].min()) < 0:
            raise ValueError("input 'input_ids': token ids must be >= 0")
        return super().forward(inputs)


def _rt(served=None, **settings):
    return ModelRuntime(served or FakeLanguageModel(), Settings(**settings), ServiceMetrics(), fake_hooks())


def test_one_bad_request_fails_alone_and_its_batch_mates_are_answered():
    rt = _rt(Picky())
    key = ("tensor", "auto", (("input_ids", "<i8", (3,)),))
    good, bad, good2 = (np.array([[1, 2, 3]]), np.array([[1, -2, 3]]), np.array([[4, 5, 6]]))
    results = rt._run_batch(key, [Item({"input_ids": a}, key, 1) for a in (good, bad, good2)])
    assert isinstance(results[0], Result) and isinstance(results[2], Result)
    assert isinstance(results[1], ValueError) and "token ids" in str(results[1])
    assert results[0].outputs["logits"].argmax() == 4 and results[2].outputs["logits"].argmax() == 7


def test_no_impl_in_a_request_takes_the_servers_default():
    assert _rt(depthwise_impl="native").check_impl(None) == "native"
    assert _rt(depthwise_impl="slice_sum").check_impl(None) == "slice_sum"


def test_each_result_carries_its_wait_and_the_batchs_rows():
    """Result.queue_s is the item's own wait since it was enqueued (also observed in
    dwserve_queue_duration_seconds) and batch_rows the rows of the whole forward."""
    import time
    rt = _rt()
    key = ("tensor", "auto", (("input_ids", "<i8", (2,)),))
    items = [Item({"input_ids": np.array([[1, 2]])}, key, 1), Item({"input_ids": np.array([[3, 4], [5, 6]])}, key, 2)]
    items[0].enqueued = time.perf_counter() - 0.5                     # waited half a second
    results = rt._run_batch(key, items)
    assert [r.batch_rows for r in results] == [3, 3]
    assert results[0].queue_s >= 0.5 and results[1].queue_s < 0.5
    text = rt.metrics.render().decode()
    total = [float(line.split()[-1]) for line in text.splitlines()
             if line.startswith('dwserve_queue_duration_seconds_sum{model="lfm2"}')]
    assert total and total[0] >= 0.5
