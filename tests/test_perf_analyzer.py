"""NVIDIA's perf_analyzer (Triton's load generator; genai-perf drives it) against dwserve, as a
user runs it (README "Load testing with perf_analyzer"): MobileNetV2 over HTTP and gRPC,
LFM2's tensor interface, and LFM2 text generation streamed over gRPC as genai-perf sends it.
Each run must finish with exit 0, a throughput, the server's statistics read back, and (the
stream) several responses per request: the pieces, then the final one.

The binary comes from `bash benchmarks/install_perf_analyzer.sh` (.venv/perf_analyzer/);
without it these tests skip, unless PERF_ANALYZER names it (CI does): then it must be there.
Fake models (service.testing), uvicorn + gRPC in this process; short count windows."""
import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc")

from tests.test_service_server import in_process_server  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[1] / ".venv" / "perf_analyzer" / "perf_analyzer"
BINARY = Path(os.environ.get("PERF_ANALYZER") or DEFAULT)
if "PERF_ANALYZER" in os.environ:
    assert BINARY.is_file(), f"PERF_ANALYZER={BINARY} is not a file (bash benchmarks/install_perf_analyzer.sh)"
elif not BINARY.is_file():
    pytest.skip("perf_analyzer not installed (bash benchmarks/install_perf_analyzer.sh)", allow_module_level=True)

# Short windows, any spread taken as stable: fake models answer in microseconds, so one scheduling
# hiccup on a busy 2-core box made a window 10x slower than the last (a CI run failed at 999%).
WINDOWS = ["--measurement-mode", "count_windows", "--measurement-request-count", "8",
           "--stability-percentage", "1000000", "--max-trials", "10"]


@pytest.fixture(scope="module")
def server():
    """(HTTP host:port, gRPC host:port, service) of fake models (a token every 5 ms)."""
    from service.app import create_app
    from service.settings import Settings
    from service.testing import fake_hooks, fake_models

    app = create_app(Settings(grpc_port=0, max_batch_size=4), models=fake_models(token_delay_s=0.005),
                     hooks=fake_hooks())
    with in_process_server(app) as url:
        yield url.removeprefix("http://"), f"127.0.0.1:{app.state.service.grpc_port}", app.state.service


def _run(args, tmp_path, name):
    out = tmp_path / f"{name}.csv"
    proc = subprocess.run([str(BINARY), *args, *WINDOWS, "-f", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = list(csv.DictReader(out.open()))
    return row, proc.stdout


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_mobilenet_under_perf_analyzer(server, tmp_path, protocol):
    http, grpc, service = server
    before = service.runtimes["mobilenet_v2"].statistics.to_json("m")["inference_stats"]["success"]["count"]
    # zero data: its default random bytes include NaN, which dwserve refuses (a 400 naming the input)
    row, stdout = _run(["-m", "mobilenet_v2", "-u", http if protocol == "http" else grpc, "-i", protocol,
                        "-b", "2", "--concurrency-range", "2", "--input-data", "zero"], tmp_path, protocol)
    assert float(row["Inferences/Second"]) > 0
    assert "Server:" in stdout and "Successful request count" in stdout   # it read the statistics
    after = service.runtimes["mobilenet_v2"].statistics.to_json("m")["inference_stats"]["success"]["count"]
    assert after - before >= 3 * 8   # at least its three windows' requests


def test_lfm2_tensors_under_perf_analyzer(server, tmp_path):
    _, grpc, _ = server
    data = tmp_path / "ids.json"
    data.write_text(json.dumps({"data": [{"input_ids": {"content": [1, 2, 3, 4], "shape": [4]}}]}))
    row, _ = _run(["-m", "lfm2", "-u", grpc, "-i", "grpc", "--input-data", str(data)], tmp_path, "ids")
    assert float(row["Inferences/Second"]) > 0


def test_lfm2_text_streamed_under_perf_analyzer(server, tmp_path):
    """genai-perf's request for a Triton vLLM model: text_input, stream, sampling_parameters
    (max_tokens as a string), exclude_input_in_output; perf_analyzer's profile export records
    each response: the prompt's 3 tokens' pieces, then the final one."""
    _, grpc, service = server
    data = tmp_path / "text.json"
    data.write_text(json.dumps({"data": [{"text_input": ["a"], "stream": [True], "exclude_input_in_output": [True],
                                          "sampling_parameters": [json.dumps({"max_tokens": "3"})]}]}))
    export = tmp_path / "profile.json"
    row, stdout = _run(["-m", "lfm2", "-u", grpc, "-i", "grpc", "--streaming", "--input-data", str(data),
                        "--profile-export-file", str(export)], tmp_path, "text")
    assert float(row["Inferences/Second"]) > 0 and "Successful request count" in stdout
    requests = [r for experiment in json.loads(export.read_text())["experiments"] for r in experiment["requests"]]
    assert len(requests) >= 3 * 8
    for r in requests:
        assert len(r["response_timestamps"]) == 4, r
        assert [o["text_output"] for o in r["response_outputs"]] == ["b", "c", "d", ""], r
