"""Shared by the `dwserve` CLI tests (test_cli_*.py): `captured`, a fixture that runs `serve`
without starting uvicorn or configuring logging and keeps the Settings it would serve with (a test module takes it
with `captured = cli_capture.captured`), and `_help_text`, what a --help printed."""
import pytest

from service import cli


@pytest.fixture
def captured(monkeypatch):
    """Run `serve` without starting uvicorn; return the Settings it would serve with."""
    seen = {}
    monkeypatch.setattr(cli, "run_server", lambda app, settings, log_level="info": seen.update(settings=settings))
    import service.app

    fake_app = type("App", (), {"state": type("State", (), {"service": type("S", (), {"load_error": None})()})()})()
    monkeypatch.setattr(service.app, "create_app", lambda settings: fake_app)
    monkeypatch.setattr(cli, "preflight", lambda settings, from_flags: [])   # paths, CUDA: test_preflight.py
    # Not this process's logging: configure_logging's root handler (force=True) outlived the test,
    # bound to its captured stderr, and every later test's log line hit a closed file ('Logging
    # error ... I/O operation on closed file' from another module's server thread).
    monkeypatch.setattr(cli, "configure_logging", lambda level, log_format: seen.update(logging=(level, log_format)))
    return seen


def _help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out
