"""`dwserve serve` as an operator stops it: Ctrl+C (SIGINT, `make serve` in a terminal) drains
as SIGTERM does and ends without a traceback, exit status 130 (128 + SIGINT, as a shell reports
an interrupted command). A real `python -m service.cli serve` process: the signal path runs
through uvicorn's handlers and asyncio's runner, which an in-process test would not."""
import signal
import sys

from server_process import server_process

SERVE = [sys.executable, "-m", "service.cli", "serve", "--model", "mobilenet_v2", "--no-warmup"]


def _sigint_as_in_a_terminal():
    """A server started from a terminal takes SIGINT's default action; a test run started in the
    background (`cmd &` in a script: CI's) passes SIGINT on ignored, and uvicorn then re-raises
    the signal it caught into that ignore after its drain (exit 0, nothing to test)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_shuts_down_without_a_traceback():
    with server_process(SERVE, timeout=120, preexec_fn=_sigint_as_in_a_terminal) as (url, proc):
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
        proc.output.thread.join(5)
    out = proc.output.tail(20000)
    assert "Application shutdown complete" in out, out[-3000:]   # the lifespan's drain ran
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert rc == 128 + signal.SIGINT, out[-3000:]
