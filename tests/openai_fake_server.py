"""A live in-process server (uvicorn on a free port, fake models) for the OpenAI-compatible
routes' tests (test_service_openai_*.py), through the official `openai` client: the
module-scoped `server` (its URL) and `client` fixtures (a test module takes both with
`server, client = openai_fake_server.server, openai_fake_server.client`), the chat CHAT
they send and `_fake_answer`, what FakeLM replies to it."""
import contextlib
import threading

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from service.testing import FakeTokenizer  # noqa: E402
from server_process import free_port, wait_http_ok  # noqa: E402


@contextlib.contextmanager
def live_server(**settings):
    """uvicorn on a free port around the fake models, in this process -> its URL."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    port = free_port()
    app = create_app(Settings(port=port, warmup=False, **settings), models=fake_models(), hooks=fake_hooks())
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/v2/health/ready", 30)
        yield url
    finally:
        srv.should_exit = True
        thread.join(10)   # its shutdown lines logged while pytest still captures (not into a closed file)


@pytest.fixture(scope="module")
def server():
    with live_server(max_new_tokens=64, max_sequence_length=128) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]


def _fake_answer(messages, n):
    """What FakeLM answers greedily: the ids after the rendered prompt's last one."""
    tok = FakeTokenizer(96)
    last = tok.apply_chat_template(messages)[-1]
    return tok.decode([(last + 1 + i) % 95 for i in range(n)]), len(tok.render_chat(messages))
