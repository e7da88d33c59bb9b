"""benchmarks/generate.py: its request against the service's own schema and validation, its
/metrics arithmetic, its report, and the committed CPU result (continuous batching must
beat one generation at a time, measured side by side)."""
import json
from pathlib import Path

import pytest
import torch

from benchmarks import generate, serve

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "generate-cpu.json"


def test_request_is_a_valid_greedy_generate_request():
    from service.schemas import GenerateRequest

    path, body, headers = generate.generate_request(16, 32)
    req = GenerateRequest.model_validate_json(body)
    assert path == "/v1/generate" and headers["Content-Type"] == "application/json"
    assert len(req.input_ids) == 16 and req.max_new_tokens == 32 and req.temperature == 0.0
    assert req.ignore_eos                                       # every reply: exactly 32 tokens
    assert all(0 <= i < 256 for i in req.input_ids)             # byte ids: in lfm2-demo's vocab


def _metrics(tokens, ttft_sum, ttft_n, tpot_sum, tpot_n, step_sum, step_n):
    lab = (("impl", "auto"), ("model", "lfm2"))
    return {("dwserve_generated_tokens_total", lab): tokens,
            ("dwserve_time_to_first_token_seconds_sum", lab): ttft_sum,
            ("dwserve_time_to_first_token_seconds_count", lab): ttft_n,
            ("dwserve_time_per_output_token_seconds_sum", lab): tpot_sum,
            ("dwserve_time_per_output_token_seconds_count", lab): tpot_n,
            ("dwserve_decode_batch_size_sum", (("model", "lfm2"),)): step_sum,
            ("dwserve_decode_batch_size_count", (("model", "lfm2"),)): step_n}


def test_ratios_of_two_servers():
    a = {"tokens_per_s": 300.0, "round_rps": [10.0, 8.0], "p50_s": 0.5, "ttft_mean_s": 0.1}
    b = {"tokens_per_s": 100.0, "round_rps": [4.0, 2.0], "p50_s": 2.0, "ttft_mean_s": None}
    r = generate.ratios(a, b)
    assert r == {"throughput_ratio": 3.0, "round_ratios": [2.5, 4.0], "p50_ratio": 0.25, "ttft_ratio": None}


def test_server_view_is_the_metrics_delta():
    before = _metrics(64, 1.0, 2, 0.2, 2, 10, 10)
    after = _metrics(64 + 320, 1.0 + 5.0, 12, 0.2 + 0.5, 12, 10 + 320, 10 + 40)
    view = generate.server_view(before, after, "auto")
    assert view["generated_tokens"] == 320
    assert view["ttft_mean_s"] == pytest.approx(0.5) and view["tpot_mean_s"] == pytest.approx(0.05)
    assert view["decode_batch_mean"] == pytest.approx(8.0)
    assert generate.server_view(before, before, "auto")["ttft_mean_s"] is None   # nothing ran


def test_report_states_the_ratio(tmp_path):
    server = {"throughput_rps": 2.0, "tokens_per_s": 64.0, "p50_s": 4.0, "p99_s": 6.0, "max_decode_batch": 16,
              "ttft_mean_s": 0.5, "tpot_mean_s": 0.1, "decode_batch_mean": 12.0}
    res = {"device": "cpu", "machine": "x", "torch": "2.13", "date": "2026-12-02",
           "args": {"model": "lfm2", "clients": 16, "prompt_tokens": 16, "new_tokens": 32, "rounds": 2,
                    "duration": 40.0},
           "servers": {"continuous": {**server, "impl": "auto"},
                       "serial": {**server, "max_decode_batch": 1, "decode_batch_mean": None, "impl": "auto"},
                       "continuous-per_group": {**server, "impl": "per_group"}},
           "summary": {"throughput_ratio": 3.25, "round_ratios": [3.0, 3.5], "p50_ratio": 0.4, "ttft_ratio": None,
                       "depthwise": {"throughput_ratio": 2.5, "round_ratios": [2.4, 2.6], "p50_ratio": 0.5,
                                     "ttft_ratio": 0.25}}}
    generate.write_markdown(res, tmp_path / "g.md")
    text = (tmp_path / "g.md").read_text()
    assert "**3.25x**" in text and "3.00x, 3.50x" in text and "| serial | 1 | auto |" in text and "| 12.0 |" in text
    assert "`auto` against the `per_group` baseline: **2.50x**" in text and "time to first token 0.25x" in text
    assert "![generation serving](g.png)" in text
    generate.write_plot(res, tmp_path / "g.png")
    png = (tmp_path / "g.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("name", [pytest.param("generate-cpu.json", id="lfm2-demo"),
                                  pytest.param("generate-cpu-lfm3.json", id="lfm3-demo")])
def test_committed_cpu_result_shows_continuous_batching_paying(name):
    """generate-cpu: lfm2-demo; generate-cpu-lfm3: its K=7 LFM3 twin (--model lfm2=preset:lfm3-demo)."""
    res = json.loads(RESULTS.with_name(name).read_text())
    c, s = res["servers"]["continuous"], res["servers"]["serial"]
    assert res["args"]["clients"] >= 8 and c["max_decode_batch"] >= 8 and s["max_decode_batch"] == 1
    assert c["errors"] == 0 and s["errors"] == 0
    assert c["completion_tokens"] == s["completion_tokens"] == res["args"]["new_tokens"]
    # Tokens/s: the ratio, every round's ratio, and the batch the decode steps really formed.
    assert res["summary"]["throughput_ratio"] >= 2.0
    assert min(res["summary"]["round_ratios"]) >= 1.5
    assert c["decode_batch_mean"] >= 4 and s["decode_batch_mean"] == pytest.approx(1.0)
    assert c["tokens_per_s"] == pytest.approx(c["throughput_rps"] * c["completion_tokens"])
    # The depthwise before/after under continuous batching: auto against per_group, same batching.
    pg = res["servers"]["continuous-per_group"]
    assert pg["impl"] == "per_group" and c["impl"] == "auto" and pg["errors"] == 0
    assert pg["decode_batch_mean"] >= 4 and res["summary"]["depthwise"]["throughput_ratio"] >= 3.0
    assert min(res["summary"]["depthwise"]["round_ratios"]) >= 2.0


@pytest.mark.parametrize("main", [pytest.param(generate.main, id="generate"),
                                  pytest.param(serve.main, id="serve")])
@pytest.mark.parametrize("device, expected", [
    pytest.param("gpu", "expected cpu, cuda or cuda:N", id="not-a-device"),
    pytest.param("cuda", "torch.cuda.is_available() is False", id="cuda-missing"),
])
def test_a_device_it_cannot_serve_is_a_one_line_usage_error(main, device, expected, capsys):
    """`bench generate/serve --device X`: a name the servers do not take, or CUDA on a machine
    without it, is argparse's error (exit 2) before any server starts; both were a traceback
    of the first server's preflight failure."""
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as exc:
        main(["--device", device, "--out", "unused"] if main is generate.main else ["--device", device])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err, err
