"""gRPC's port (service/grpc_server.start_grpc_server): one another server already listens on
is an error naming the setting, as a taken REST port is, never a port the two share."""
import asyncio
import types

import pytest

pytest.importorskip("grpc")
pytest.importorskip("tritonclient.grpc")

from service.grpc_server import start_grpc_server  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.grpc_fake_server import grpc_server  # noqa: E402


def test_a_port_another_dwserve_listens_on_is_refused_naming_the_setting():
    """grpc binds with SO_REUSEPORT by default, so a second dwserve given the first one's
    --grpc-port started as if all were well and the kernel spread gRPC connections over the
    two (different models or settings behind one address). dwserve serve's preflight trial
    bind catches a port taken before it runs, not one taken between it and the bind (two
    started together) nor an app started without the CLI."""
    with grpc_server(warmup=False) as (target, _, _):
        port = int(target.rsplit(":", 1)[1])
        second = types.SimpleNamespace(settings=Settings(grpc_port=port), ready=False)

        async def start():
            server, _ = await start_grpc_server(second)
            await server.stop(0)   # (it should not have started)

        with pytest.raises(RuntimeError) as err:
            asyncio.run(start())
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "--grpc-port" in message and "DWSERVE_GRPC_PORT" in message, message
