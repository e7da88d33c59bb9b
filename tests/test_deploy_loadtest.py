"""`dwserve loadtest` (service/loadtest.py) against two live fake-model servers on loopback:
it refuses remote targets, measures both targets, and writes a Markdown report and a PNG."""
import socket
import threading

import httpx
import pytest

from service import loadtest
from server_process import free_port, wait_http_ok

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def servers():
    """Two in-process servers with the service's fake models: 'before' (per_group, slower
    forwards) and 'after' (auto). Real models are exercised by tests/test_topology.py."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    urls, running = {}, []
    for label, impl, delay in (("before", "per_group", 0.02), ("after", "auto", 0.002)):
        port = free_port()
        app = create_app(Settings(port=port, depthwise_impl=impl, warmup=False),
                         models=fake_models(delay_s=delay), hooks=fake_hooks())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        urls[label] = f"http://127.0.0.1:{port}"
    for url in urls.values():
        wait_http_ok(f"{url}/v2/health/ready", 30)
    yield urls
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(10)   # its shutdown lines logged while pytest still captures (not into a closed file)


@pytest.mark.parametrize("url", [
    pytest.param("http://10.0.0.1:8000", id="private-ip"),
    pytest.param("http://example.com:8000", id="hostname"),
    pytest.param("ftp://127.0.0.1:8000", id="scheme"),
])
def test_refuses_non_loopback_targets(url, capsys):
    with pytest.raises(SystemExit) as exc:
        loadtest.parse_args(["--url", url])
    assert exc.value.code == 2
    assert "loopback" in capsys.readouterr().err or url.startswith("ftp")


def test_allow_remote_and_loopback_forms():
    assert loadtest.check_url("http://10.0.0.1:8000/", allow_remote=True) == "http://10.0.0.1:8000"
    for url in ("http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"):
        assert loadtest.check_url(url, allow_remote=False) == url


@pytest.mark.parametrize("argv", [
    pytest.param(["--url", "http://127.0.0.1:1", "--duration", "100000"], id="duration-bound"),
    pytest.param(["--url", "http://127.0.0.1:1", "--concurrency", "0"], id="concurrency-bound"),
    pytest.param(["--before", "http://127.0.0.1:1"], id="after-missing"),
    pytest.param(["--url", "http://127.0.0.1:1", "--before", "http://127.0.0.1:2"], id="both-modes"),
    pytest.param(["--url", "http://127.0.0.1:1", "--impls", "per_group,nope"], id="unknown-impl"),
    pytest.param(["--url", "http://127.0.0.1:1", "--impls", "auto,auto"], id="repeated-impl"),
])
def test_bad_arguments_are_rejected(argv):
    with pytest.raises(SystemExit) as exc:
        loadtest.parse_args(argv)
    assert exc.value.code == 2


def test_unreachable_server_says_how_to_fix():
    with pytest.raises(SystemExit, match="dwserve serve"):
        loadtest.main(["--url", "http://127.0.0.1:1", "--duration", "1", "--warmup", "0", "--timeout", "1",
                       "--ready-timeout", "1"])


def test_before_after_two_targets(servers, tmp_path):
    out = tmp_path / "report"
    rc = loadtest.main(["--before", servers["before"], "--after", servers["after"], "--duration", "1.5",
                        "--warmup", "0.3", "--concurrency", "2", "--tokens", "8", "--out", str(out)])
    assert rc == 0
    md = (tmp_path / "report.md").read_text()
    assert "| before | per_group |" in md and "| after | auto |" in md
    assert "concurrency 2" in md and "torch" in md and "![latency and throughput](report.png)" in md
    # Fake hooks count 100 launches per forward for per_group, 10 otherwise.
    assert "100 aten_ops" in md and "10 aten_ops" in md
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_one_target_per_request_impls(servers, tmp_path, monkeypatch):
    from service import compression
    asked, negotiate = [], compression.negotiate
    monkeypatch.setattr(compression, "negotiate", lambda header: asked.append(header) or negotiate(header))
    out = tmp_path / "one"
    rc = loadtest.main(["--url", servers["after"], "--impls", "per_group,slice_sum", "--duration", "1",
                        "--warmup", "0", "--concurrency", "2", "--model", "mobilenet_v2", "--out", str(out)])
    assert rc == 0
    md = (tmp_path / "one.md").read_text()
    # The server reports back the impl each request ran under.
    assert "| per_group | per_group |" in md and "| slice_sum | slice_sum |" in md
    assert "model `mobilenet_v2`" in md
    # The load asks for replies as they are (httpx would ask for gzip): no compression work.
    assert asked and set(asked) == {"identity"}, set(asked)


def test_generate_mode_loads_v1_generate_per_impl(servers, tmp_path):
    out = tmp_path / "gen"
    rc = loadtest.main(["--url", servers["after"], "--impls", "per_group,auto", "--duration", "1",
                        "--warmup", "0", "--concurrency", "3", "--model", "generate", "--tokens", "4",
                        "--new-tokens", "5", "--out", str(out)])
    assert rc == 0
    md = (tmp_path / "gen.md").read_text()
    assert "| per_group | per_group |" in md and "| auto | auto |" in md
    assert "/v1/generate: 4-token prompt, 5 new tokens" in md and "one generation request" in md
    metrics = httpx.get(f"{servers['after']}/metrics").text
    assert 'dwserve_generated_tokens_total{impl="per_group",model="lfm2"}' in metrics


def test_chat_mode_loads_chat_completions_per_impl(servers, tmp_path):
    out = tmp_path / "chat"
    rc = loadtest.main(["--url", servers["after"], "--impls", "per_group,auto", "--duration", "1",
                        "--warmup", "0", "--concurrency", "2", "--model", "chat", "--tokens", "20",
                        "--new-tokens", "3", "--out", str(out)])
    assert rc == 0
    md = (tmp_path / "chat.md").read_text()
    assert "| per_group | per_group |" in md and "| auto | auto |" in md    # from X-Depthwise-Impl
    assert "/v1/chat/completions: a shared 20-character system prompt" in md
    body, _ = loadtest.make_request("chat", 20, 50, "native", seed=3, new_tokens=4)
    from service.schemas_openai import ChatCompletionRequest
    req = ChatCompletionRequest.model_validate_json(body)
    assert req.messages[0].content == loadtest.system_prompt(20) and len(req.messages[0].content) == 20
    assert req.max_tokens == 4 and req.ignore_eos and req.depthwise_impl == "native"


def test_generate_request_is_valid_for_the_service():
    import json

    from service.schemas import GenerateRequest

    body, headers = loadtest.make_request("generate", 6, 50, "slice_sum", seed=1, new_tokens=7)
    req = GenerateRequest.model_validate(json.loads(body))
    assert len(req.input_ids) == 6 and max(req.input_ids) < 50 and req.max_new_tokens == 7
    assert req.ignore_eos and req.depthwise_impl == "slice_sum"


def test_proxy_environment_does_not_reroute_the_load(servers, tmp_path, monkeypatch):
    """HTTP(S)_PROXY / ALL_PROXY in the environment must not send the load (or the metadata and
    /metrics reads) through a proxy: the loopback check is about where the traffic goes, and a
    proxy would also be what the latencies measured. The 'proxy' here is a loopback listener
    that records every connection it gets."""
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(16)
    proxy.settimeout(0.2)
    seen, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = proxy.accept()
            except OSError:
                continue
            seen.append(conn.recv(100))
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()
    listener = threading.Thread(target=accept, daemon=True)
    listener.start()
    url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, url)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    try:
        rc = loadtest.main(["--before", servers["before"], "--after", servers["after"], "--duration", "0.6",
                            "--warmup", "0", "--concurrency", "1", "--tokens", "4", "--out", str(tmp_path / "p")])
    finally:
        stop.set()
        listener.join(2)
        proxy.close()
    assert not seen, f"requests went through the proxy: {seen[:2]}"
    assert rc == 0 and "100 aten_ops" in (tmp_path / "p.md").read_text()
