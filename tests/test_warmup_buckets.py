"""ModelRuntime's warm-up batch sizes: the sizes the batcher can form (1, half, top - 1, top),
and, for a model replayed from CUDA graphs (its `graphed` set: models/graphed.py keeps one graph
per power-of-two bucket of rows), every power of two up to the top too, so no capture (and no
autotuning of the fused kernels inside it) lands on a request."""
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.testing import fake_hooks, fake_models
from server_process import client_ready


def _warmed_sizes(graphed, max_batch_size):
    models = fake_models()
    served = models["mobilenet_v2"]
    served.graphed = graphed
    sizes, original = [], served.warmup_inputs
    served.warmup_inputs = lambda batch_size=1: (sizes.append(batch_size), original(batch_size))[1]
    with TestClient(create_app(Settings(max_batch_size=max_batch_size), models=models, hooks=fake_hooks())) as c:
        client_ready(c)
    return sizes


@pytest.mark.parametrize("top, eager, graphed", [
    (8, [1, 4, 7, 8, 1], [1, 2, 4, 7, 8, 1]),
    (32, [1, 16, 31, 32, 1], [1, 2, 4, 8, 16, 31, 32, 1]),
    (1, [1, 1], [1, 1]),
    (6, [1, 3, 5, 6, 1], [1, 2, 3, 4, 5, 6, 1]),
])
def test_graphed_models_warm_every_power_of_two_bucket(top, eager, graphed):
    assert _warmed_sizes(None, top) == eager
    assert _warmed_sizes(object(), top) == graphed
