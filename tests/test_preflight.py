"""`dwserve serve`'s preflight (service/preflight.py): an unservable --model, a port it cannot
listen on, a device the machine lacks are each one line and exit 2, before a port is bound or
a model built; the servable forms go through."""
import pytest

from service import cli


@pytest.fixture
def never_served(monkeypatch):
    """`serve` must stop before binding a port or building a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("serve went on to start the server")
    monkeypatch.setattr(cli, "run_server", refuse)
    import service.app
    monkeypatch.setattr(service.app, "create_app", refuse)


def _hf_dir(root, config=True, weights=True):
    root.mkdir()
    if config:
        (root / "config.json").write_text("{}")
    if weights:    # preflight only looks for it (reads no weights)
        (root / "model.safetensors").write_bytes(b"")
    return root


@pytest.mark.parametrize("model, says", [
    pytest.param("foo", "unknown model 'foo'; expected one of ('lfm2', 'mobilenet_v2')", id="unknown-name"),
    pytest.param("mobilenet_v2={tmp}/missing.pth", "weights path '{tmp}/missing.pth' does not exist", id="missing"),
    pytest.param("mobilenet_v2={tmp}", "is a directory", id="mobilenet-dir"),
    pytest.param("mobilenet_v2={tmp}/weights.txt", "expected a file ending in", id="mobilenet-suffix"),
    pytest.param("lfm2={tmp}/weights.txt", "is not a directory", id="lfm2-file"),
    pytest.param("lfm2={tmp}/noconfig", "no config.json in", id="lfm2-no-config"),
    pytest.param("lfm2={tmp}/noweights", "no weights in '{tmp}/noweights': expected model.safetensors or "
                 "model.safetensors.index.json (sharded); it has pytorch_model.bin: save the weights as "
                 "safetensors", id="lfm2-no-safetensors"),
    pytest.param("lfm2=preset:nope", "unknown LFM2 preset 'nope'; expected one of", id="unknown-preset"),
    pytest.param("mobilenet_v2=preset:lfm3-demo", "applies to lfm2", id="preset-for-mobilenet"),
])
def test_serve_refuses_an_unservable_model_before_starting(model, says, tmp_path, never_served, capsys):
    """Each --model is checked before the port is bound (no weights read): one line naming the
    flag as given and what it takes, exit 2. They were found by the loader thread after
    uvicorn was up, with a traceback."""
    (tmp_path / "weights.txt").write_text("x")
    _hf_dir(tmp_path / "noconfig", config=False)
    (_hf_dir(tmp_path / "noweights", weights=False) / "pytorch_model.bin").write_bytes(b"")
    model, says = model.format(tmp=tmp_path), says.format(tmp=tmp_path)
    assert cli.main(["serve", "--model", model]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dwserve serve: --model {model}: ") and says in err, err


def test_serve_preflight_names_the_environment_variable(tmp_path, monkeypatch, never_served, capsys):
    monkeypatch.setenv("DWSERVE_MODELS", f"lfm2={tmp_path / 'gone'},mobilenet_v2")
    assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err.startswith(f"dwserve serve: DWSERVE_MODELS='lfm2={tmp_path / 'gone'}': ")


def test_serve_accepts_the_servable_forms(tmp_path, monkeypatch):
    """What the real preflight lets through: names alone, a preset, a weights file, an HF directory."""
    import service.app
    seen = {}
    fake = type("App", (), {"state": type("State", (), {"service": type("S", (), {"load_error": None})()})()})()
    monkeypatch.setattr(service.app, "create_app", lambda settings: fake)
    monkeypatch.setattr(cli, "run_server", lambda app, settings, log_level="info": seen.update(settings=settings))
    monkeypatch.setattr(cli, "configure_logging", lambda level, log_format: None)   # not this process's
    (tmp_path / "w.safetensors").write_bytes(b"")
    hf = _hf_dir(tmp_path / "hf")
    assert cli.main(["serve", "--port", "0", "--model", f"lfm2={hf}",
                     "--model", f"mobilenet_v2={tmp_path / 'w.safetensors'}"]) == 0
    assert cli.main(["serve", "--port", "0", "--model", "lfm2=preset:lfm3-demo", "--model", "mobilenet_v2"]) == 0
    assert seen["settings"].model_entries() == [("lfm2", "preset:lfm3-demo"), ("mobilenet_v2", None)]


def test_serve_refuses_ports_it_cannot_listen_on(monkeypatch, never_served, capsys):
    """A port in use was uvicorn's exit 3 after the models had begun loading, and for
    --grpc-port a traceback out of the app's lifespan; now one line each, before either."""
    import socket
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert cli.main(["serve", "--port", str(taken)]) == 2
        assert capsys.readouterr().err == (f"dwserve serve: --port {taken}: cannot listen on 127.0.0.1:{taken} "
                                           "(Address already in use); pick another port\n")
        monkeypatch.setenv("DWSERVE_GRPC_PORT", str(taken))
        assert cli.main(["serve", "--port", "0"]) == 2
        assert capsys.readouterr().err.startswith(f"dwserve serve: DWSERVE_GRPC_PORT={taken}: cannot listen on")
    assert cli.main(["serve", "--port", str(taken), "--grpc-port", str(taken)]) == 2
    assert f"--grpc-port {taken}: the HTTP port is {taken} too" in capsys.readouterr().err
    assert cli.main(["serve", "--host", "no-such-host.invalid", "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("dwserve serve: --host no-such-host.invalid: cannot resolve it")


def test_a_taken_ipv6_port_is_named_as_an_address_with_a_port(never_served, capsys):
    """`[::1]:P`, as a URL writes it; it read '::1:P' (--host ::1) and ':::P' (--host ::)."""
    import socket
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6) as held:
        try:
            held.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        held.listen()
        taken = held.getsockname()[1]
        assert cli.main(["serve", "--host", "::1", "--port", str(taken)]) == 2
    assert f"cannot listen on [::1]:{taken} (Address already in use)" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["lfm2=", "=x", " =/w"])
def test_serve_refuses_a_model_entry_without_name_or_path(model, never_served, capsys):
    """`lfm2=` served the embedded default as if no path were meant."""
    assert cli.main(["serve", "--model", model]) == 2
    assert f"expected NAME or NAME=PATH, got {model!r}" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_serve_refuses_cuda_and_fused_without_cuda(monkeypatch, never_served, capsys):
    assert cli.main(["serve", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.startswith("dwserve serve: --device cuda: device 'cuda': CUDA is not available")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)   # as a real server runs (conftest sets it)
    monkeypatch.setenv("DWSERVE_DEPTHWISE_IMPL", "fused")
    assert cli.main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("dwserve serve: DWSERVE_DEPTHWISE_IMPL='fused': the fused impl needs a CUDA")


def test_serve_refuses_a_gpu_index_the_machine_lacks(monkeypatch, never_served, capsys):
    """cuda:N past the machine's devices was accepted, to fail at the first allocation."""
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert cli.main(["serve", "--device", "cuda:2"]) == 2
    assert "this machine has 2 CUDA device(s), expected cuda:0 to cuda:1" in capsys.readouterr().err
