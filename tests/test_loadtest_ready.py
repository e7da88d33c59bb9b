"""`dwserve loadtest` waits for every target's /v2/health/ready before it measures anything.

The README starts both servers in the background and runs the load test on the next line: the
servers are still building and warming their models then (minutes on 2 cores). The load test
asked for a model's metadata once and gave up ('cannot reach ...; start it with dwserve serve'
about a server that was starting), and a target whose one model was ready while its other model
(or the other target) still warmed up was measured against that warm-up's CPU use: the first
target's numbers paid for the second's compile."""
import threading
import time

import pytest

from service import loadtest
from server_process import free_port

pytest.importorskip("uvicorn")


class LateServer:
    """A fake-model dwserve on a reserved loopback port that starts listening after `delay_s`."""

    def __init__(self, impl: str, delay_s: float):
        import uvicorn

        from service.app import create_app
        from service.settings import Settings
        from service.testing import fake_hooks, fake_models

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(Settings(port=self.port, depthwise_impl=impl, warmup=False),
                         models=fake_models(delay_s=0.002), hooks=fake_hooks())
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.started_at = None

        def run():
            time.sleep(delay_s)
            self.started_at = time.perf_counter()
            self.server.run()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def late_servers():
    made = []

    def make(impl, delay_s):
        made.append(LateServer(impl, delay_s))
        return made[-1]
    yield make
    for s in made:
        s.stop()


def test_waits_for_servers_that_are_still_starting(late_servers, tmp_path):
    """The README's sequence: `dwserve serve ... &` twice, then `dwserve loadtest` at once."""
    before, after = late_servers("per_group", 1.0), late_servers("auto", 1.5)
    rc = loadtest.main(["--before", before.url, "--after", after.url, "--duration", "0.6", "--warmup", "0",
                        "--concurrency", "1", "--tokens", "4", "--ready-timeout", "30", "--out", str(tmp_path / "r")])
    assert rc == 0
    md = (tmp_path / "r.md").read_text()
    assert "| before | per_group |" in md and "| after | auto |" in md


def test_no_target_is_measured_before_every_target_is_ready(late_servers, tmp_path, monkeypatch):
    before, after = late_servers("per_group", 0.0), late_servers("auto", 2.0)
    starts = []
    real = loadtest.run_phase

    def recording(target, args, vocab, seconds, phase):
        starts.append(time.perf_counter())
        return real(target, args, vocab, seconds, phase)
    monkeypatch.setattr(loadtest, "run_phase", recording)
    rc = loadtest.main(["--before", before.url, "--after", after.url, "--duration", "0.5", "--warmup", "0.2",
                        "--concurrency", "1", "--tokens", "4", "--ready-timeout", "30", "--out", str(tmp_path / "r")])
    assert rc == 0 and starts and after.started_at is not None
    assert min(starts) > after.started_at, "the before target was loaded while the after target was not up"


def test_a_server_that_never_comes_up_is_named_with_how_to_fix(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match=r"127\.0\.0\.1:1 .*not ready after 1 s.*dwserve serve"):
        loadtest.main(["--url", "http://127.0.0.1:1", "--duration", "1", "--warmup", "0", "--timeout", "1",
                       "--ready-timeout", "1", "--out", str(tmp_path / "r")])
    assert time.perf_counter() - t0 < 10


def test_out_of_range_flags_are_named_as_typed(capsys):
    """The range check named `--new_tokens` and `--ready_timeout`, flags that do not exist."""
    for flag in ("--new-tokens", "--ready-timeout"):
        with pytest.raises(SystemExit):
            loadtest.parse_args(["--url", "http://127.0.0.1:1", flag, "-1"])
        assert f"{flag}: expected" in capsys.readouterr().err
