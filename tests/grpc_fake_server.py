"""The in-process OIP v2 server over gRPC with the fake models (service.testing), shared by
the gRPC test modules: `grpc_server(...)` starts uvicorn with a gRPC port in this process and
yields (target, url, models); `served` is a module-scoped one with max_batch_size=4 (a test
module takes it with `served = grpc_fake_server.served`); `_image`, `_infer` and
`_code_and_message` build a request through tritonclient.grpc and read a refusal's status."""
import contextlib

import numpy as np
import pytest

gc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from service.testing import fake_hooks, fake_models  # noqa: E402
from tests.test_service_server import in_process_server  # noqa: E402


class StreamContext:
    """What InferCalls.ModelStreamInfer reads of grpc's call context, for driving it directly
    (no metadata: no bearer token, no request id)."""
    def invocation_metadata(self):
        return ()

    def peer(self):
        return "test"


@contextlib.contextmanager
def grpc_server(delay_s=0.0, **settings):
    from service.app import create_app
    from service.settings import Settings

    models = fake_models(delay_s=delay_s)
    app = create_app(Settings(grpc_port=0, **settings), models=models, hooks=fake_hooks())
    with in_process_server(app) as url:
        yield f"127.0.0.1:{app.state.service.grpc_port}", url, models


@pytest.fixture(scope="module")
def served():
    with grpc_server(max_batch_size=4) as s:
        yield s


def _image(rng, rows=1):
    return rng.standard_normal((rows, 3, 224, 224)).astype(np.float32)


def _infer(client, model, x, datatype="FP32", **kw):
    inp = gc.InferInput("input" if model == "mobilenet_v2" else "input_ids", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp], **kw)


def _code_and_message(call):
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value.status(), err.value.message()
