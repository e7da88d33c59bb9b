"""`dwserve loadtest` fails (exit 1) when a phase's share of failed requests is above
--max-error-ratio, naming the phase and the ratio. It used to exit 0 unless a phase had no
success at all: errors showed in the table, and a CI gate on the exit status passed a server
that shed most of its requests with 503."""
import pytest

from service import loadtest
from tests.server_process import fake_server_cmd, server_process

pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def servers():
    """'healthy': room for the load; 'shedding': one forward at a time and one queued request,
    so most of 6 concurrent workers get 503 + Retry-After (the queue-full answer)."""
    with server_process(fake_server_cmd(delay_s=0.002), timeout=60) as (healthy, _), \
            server_process(fake_server_cmd(delay_s=0.03, max_batch_size=1, max_queue_size=1),
                           timeout=60) as (shedding, _):
        yield {"healthy": healthy, "shedding": shedding}


def run(before: str, after: str, tmp_path, *extra: str) -> int:
    return loadtest.main(["--before", before, "--after", after, "--duration", "1", "--warmup", "0",
                          "--concurrency", "6", "--tokens", "4", "--out", str(tmp_path / "r"), *extra])


def test_errors_above_the_ratio_fail_the_run_naming_the_phase(servers, tmp_path, capsys):
    rc = run(servers["healthy"], servers["shedding"], tmp_path)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "phase 'after': error ratio" in err and "--max-error-ratio 0.01" in err and "'503'" in err
    assert "phase 'before'" not in err           # the healthy one passed
    md = (tmp_path / "r.md").read_text()
    assert "- after: " in md and "% of requests (--max-error-ratio 0.01)" in md


def test_a_higher_ratio_accepts_them(servers, tmp_path, capsys):
    assert run(servers["healthy"], servers["shedding"], tmp_path, "--max-error-ratio", "1") == 0
    assert "error ratio" not in capsys.readouterr().err


def test_a_clean_run_passes(servers, tmp_path, capsys):
    assert run(servers["healthy"], servers["healthy"], tmp_path, "--max-error-ratio", "0") == 0


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_ratio_out_of_range_is_rejected(value, capsys):
    with pytest.raises(SystemExit) as exc:
        loadtest.parse_args(["--url", "http://127.0.0.1:1", "--max-error-ratio", value])
    assert exc.value.code == 2 and "--max-error-ratio" in capsys.readouterr().err
