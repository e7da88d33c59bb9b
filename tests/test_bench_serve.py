"""benchmarks/serve.py: its load generator against a live (fake-model) server, its
request builder against the service's own decoder, its acceptance arithmetic, and the
committed CPU results against the service's acceptance targets."""
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import grpc_load, http_load, serve
from tests.server_process import fake_server_cmd, free_port, server_process

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "serve-cpu.json"


def scenario(rps, p50, p99, compute, clients=1):
    return {"clients": clients, "throughput_rps": rps, "p50_s": p50, "p99_s": p99, "compute_p50_s": compute}


def test_acceptance_arithmetic():
    res = {"scenarios": {"latency_binary": scenario(40, 0.023, 0.03, 0.020),
                         "batching_on": scenario(72, 0.2, 0.3, 0.1, 16),
                         "batching_off": scenario(40, 0.4, 0.45, 0.02, 16)}}
    acc = serve.acceptance(res)
    assert acc["binary_b1_overhead_vs_compute"]["value"] == pytest.approx(0.15)
    assert acc["binary_b1_overhead_vs_compute"]["pass"]
    assert acc["batching_throughput_speedup"]["value"] == pytest.approx(1.8)
    assert acc["batching_throughput_speedup"]["pass"] and acc["batching_p99_ratio"]["pass"]
    res["scenarios"]["latency_binary"]["p50_s"] = 0.0235          # 17.5% overhead
    res["scenarios"]["batching_on"]["throughput_rps"] = 60        # 1.5x
    acc = serve.acceptance(res)
    assert not acc["binary_b1_overhead_vs_compute"]["pass"] and not acc["batching_throughput_speedup"]["pass"]
    assert "batching_throughput_speedup_lfm2" not in acc           # only for scenarios that ran
    assert "grpc_b1_overhead_vs_compute" not in acc
    res["scenarios"]["latency_grpc"] = scenario(45, 0.022, 0.03, 0.020)
    assert serve.acceptance(res)["grpc_b1_overhead_vs_compute"]["value"] == pytest.approx(0.10)
    res["scenarios"]["batching_on_lfm2"] = scenario(90, 0.2, 0.3, 0.1, 16)
    res["scenarios"]["batching_off_lfm2"] = scenario(30, 0.5, 0.6, 0.03, 16)
    acc = serve.acceptance(res)
    assert acc["batching_throughput_speedup_lfm2"]["value"] == pytest.approx(3.0)
    assert acc["batching_throughput_speedup_lfm2"]["pass"] and acc["batching_p99_ratio_lfm2"]["pass"]


@pytest.mark.parametrize("binary", [pytest.param(True, id="binary"), pytest.param(False, id="json")])
def test_request_builder_decodes_in_the_service(binary):
    from service import codec
    arr = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    path, body, headers = serve.infer_request("mobilenet_v2", arr, binary, impl="per_group")
    assert path == "/v2/models/mobilenet_v2/infer"
    head, tail = codec.split_body(body, headers.get("Inference-Header-Content-Length"))
    raw = json.loads(head)
    assert raw["parameters"] == {"depthwise_impl": "per_group"}
    got = codec.decode_inputs(raw, tail, 10**6)["input"]
    np.testing.assert_array_equal(got, arr)


def test_grpc_request_builder_decodes_in_the_service():
    from service.grpc_codec import decode_request
    ids = np.random.default_rng(2).integers(0, 96, size=(2, 5)).astype(np.int64)
    arrays, _, params = decode_request(grpc_load.grpc_infer_request("lfm2", ids, impl="native"), 10**6)
    np.testing.assert_array_equal(arrays["input_ids"], ids)
    assert params == {"depthwise_impl": "native"}


def test_run_grpc_load_against_a_live_server():
    """The gRPC twin of run_load: same stats, Server-Timing from the trailer, batches formed."""
    port = free_port()
    cmd = fake_server_cmd(max_batch_size=2, max_queue_delay_ms=5, grpc_port=port)
    with server_process(cmd, timeout=60):
        arr = np.zeros((1, 3, 224, 224), np.float32)
        stats = grpc_load.run_grpc_load(f"127.0.0.1:{port}", grpc_load.grpc_infer_request("mobilenet_v2", arr),
                                        clients=2, duration=1.5, warmup=0.3)
        assert stats["errors"] == 0 and stats["requests"] >= 10
        assert 0 < stats["p50_s"] <= stats["p99_s"] and stats["compute_p50_s"] is not None
        assert 1.0 <= stats["batch_rows_mean"] <= 2.0
        bad = grpc_load.grpc_infer_request("mobilenet_v2", arr[:, :2])     # wrong shape: counted as errors
        with pytest.raises(RuntimeError, match="statuses \\[400\\]"):
            grpc_load.run_grpc_load(f"127.0.0.1:{port}", bad, clients=1, duration=0.3, warmup=0.0)


@pytest.fixture(scope="module")
def fake_server():
    with server_process(fake_server_cmd(max_batch_size=2, max_queue_delay_ms=5), timeout=60) as (url, _):
        yield url


def test_run_load_against_a_live_server(fake_server):
    """Two clients for ~1.5 s against the real server stack around fake models: every
    request answered, Server-Timing parsed, batches formed from the two clients."""
    arr = np.zeros((1, 3, 224, 224), np.float32)
    stats = http_load.run_load(fake_server, serve.infer_request("mobilenet_v2", arr, True), clients=2,
                               duration=1.5, warmup=0.3)
    assert stats["errors"] == 0 and stats["requests"] >= 10
    assert stats["throughput_rps"] > 0 and 0 < stats["p50_s"] <= stats["p99_s"]
    assert stats["compute_p50_s"] is not None and stats["queue_p50_s"] is not None
    assert 1.0 <= stats["batch_rows_mean"] <= 2.0


def test_server_side_means_from_a_live_scrape(fake_server):
    """The /metrics means a run reports (request time per route summed, compute) come from
    the live exposition: request time >= compute time > 0 for the requests sent between scrapes."""
    arr = np.zeros((1, 3, 224, 224), np.float32)
    before = serve.scrape(fake_server)
    http_load.run_load(fake_server, serve.infer_request("mobilenet_v2", arr, True), clients=1, duration=0.5, warmup=0)
    side = serve.server_side(before, serve.scrape(fake_server), "mobilenet_v2", "auto")
    assert side["request_mean_s"] is not None and side["compute_mean_s"] is not None, side
    assert side["request_mean_s"] >= side["compute_mean_s"] > 0
    assert side["overhead_vs_compute"] >= 0
    view = serve.impl_view(before, serve.scrape(fake_server), "mobilenet_v2", "auto")
    assert view["forwards"] > 0 and view["launches_per_forward"]["aten_ops"] > 0, view


def test_run_interleaved_takes_turns_and_pools_the_rounds(fake_server, monkeypatch):
    """Turns alternate in order (a b, b a, a b); each server's stats pool its rounds."""
    calls, real = [], http_load._load_window

    def recording(url, request, clients, duration, warmup):
        calls.append((url, round(duration, 3), warmup))
        return real(url, request, clients, duration, warmup)
    monkeypatch.setattr(http_load, "_load_window", recording)
    arr = np.zeros((1, 3, 224, 224), np.float32)
    urls = {"a": fake_server, "b": fake_server.replace("127.0.0.1", "localhost")}   # one server, two names
    got = http_load.run_interleaved(urls, serve.infer_request("mobilenet_v2", arr, True), clients=2,
                                    duration=1.5, warmup=0.3, rounds=3)
    assert [c[0] for c in calls] == [urls["a"], urls["b"], urls["b"], urls["a"], urls["a"], urls["b"]]
    assert all(c[1] == 0.5 for c in calls) and [c[2] for c in calls[:2]] == [0.3, 0.3]
    for name in ("a", "b"):
        stats = got[name]
        assert len(stats["round_rps"]) == 3 and all(r > 0 for r in stats["round_rps"])
        assert stats["errors"] == 0 and stats["requests"] >= 6
        # pooled throughput = all requests / all measured seconds: between the rounds' extremes
        assert min(stats["round_rps"]) * 0.999 <= stats["throughput_rps"] <= max(stats["round_rps"]) * 1.001
    with pytest.raises(ValueError, match="rounds >= 1"):
        http_load.run_interleaved(urls, None, 1, 1.0, 0.0, rounds=0)


def test_keep_alive_client_reads_errors_and_keeps_the_connection(fake_server):
    host, port = fake_server.removeprefix("http://").rsplit(":", 1)
    client = http_load.KeepAliveClient(host, int(port))
    bad = http_load.encode_post(host, "/v2/models/mobilenet_v2/infer", b"{not json", {"Content-Type": "application/json"})
    status, headers, body = client.post(bad)
    assert status == 400 and "error" in json.loads(body)
    sock = client.sock
    arr = np.ones((1, 3, 224, 224), np.float32)
    path, payload, hdrs = serve.infer_request("mobilenet_v2", arr, True)
    status, headers, body = client.post(http_load.encode_post(host, path, payload, hdrs))
    assert status == 200 and client.sock is sock                       # same connection
    n = int(headers["inference-header-content-length"])
    assert json.loads(body[:n])["outputs"][0]["shape"] == [1, 1000] and len(body) == n + 4000
    client.close()
    status, _, _ = client.post(http_load.encode_post(host, path, payload, hdrs))   # reconnects
    assert status == 200
    client.close()


def test_server_timing_parse():
    got = http_load.server_timing('queue;dur=1.500, compute;dur=20.250, batch;desc="8"')
    assert got == {"queue": 0.0015, "compute": 0.02025, "batch": 8.0}
    assert http_load.server_timing("") == {}


@pytest.fixture(scope="module")
def committed():
    if not RESULTS.exists():
        pytest.fail(f"{RESULTS} missing: run `dwserve bench serve` and commit it")
    return json.loads(RESULTS.read_text())


@pytest.mark.parametrize("name", ["serve-cpu.json", "serve-cpu-xeon.json", "serve-cpu-epyc.json"])
def test_committed_results_are_recomputable(name):
    """The acceptance block is what serve.acceptance computes from the committed scenarios."""
    committed = json.loads((RESULTS.parent / name).read_text())
    again = serve.acceptance(committed)
    assert set(again) == set(committed["acceptance"])
    for name, check in again.items():
        assert check["value"] == pytest.approx(committed["acceptance"][name]["value"]), name
    assert committed["device"] == "cpu" and committed["cpu_count"] >= 1


def test_committed_grpc_beside_rest():
    """The second box's run measured all three protocols in one run, with Server-Timing for each."""
    res = json.loads((RESULTS.parent / "serve-cpu-xeon.json").read_text())
    lat = {p: res["scenarios"]["latency_" + p] for p in ("binary", "grpc", "json")}
    assert all(s["errors"] == 0 and s["requests"] >= 100 and s["compute_p50_s"] for s in lat.values())
    assert "Xeon" in res["cpu_model"]
    assert lat["binary"]["p50_s"] < lat["json"]["p50_s"] and lat["grpc"]["p50_s"] < lat["json"]["p50_s"]


def test_committed_binary_overhead_and_tail_latency(committed):
    """Issue targets: batch-1 binary server overhead <= 15% of compute; batching p99 <= 1.5x."""
    acc = committed["acceptance"]
    assert acc["binary_b1_overhead_vs_compute"]["value"] <= 0.15
    assert acc["batching_p99_ratio"]["value"] <= 1.5


def test_committed_lfm2_batching(committed):
    """Short LFM2 prompts at 16 clients: batching reads the weights once per forward."""
    acc = committed["acceptance"]
    assert acc["batching_throughput_speedup_lfm2"]["value"] >= 1.8
    assert acc["batching_p99_ratio_lfm2"]["value"] <= 1.5


def test_committed_batching_throughput(committed):
    """Issue target: >= 1.8x throughput at 16 clients with dynamic batching (mobilenet_v2)."""
    acc = committed["acceptance"]["batching_throughput_speedup"]
    assert acc["value"] >= 1.8


def test_committed_impls_show_before_and_after(committed):
    """per_group vs auto as /metrics showed it: slower, more launches, larger depthwise share."""
    impls = committed["impls"]
    for model in ("mobilenet_v2", "lfm2"):
        before, after = impls[f"{model}/per_group"], impls[f"{model}/auto"]
        assert before["compute_mean_s"] > after["compute_mean_s"]
        assert before["launches_per_forward"]["aten_ops"] > 10 * after["launches_per_forward"]["aten_ops"]
        assert before["depthwise_share"] > after["depthwise_share"]


def test_impl_view_launches_are_the_windows_own_mean_not_the_last_gauge():
    """launches per forward over the measured window: launches_total / forwards_total deltas.
    The gauge holds whichever forward the server counted last, which may be a batch from an
    earlier scenario (more ops at 8 rows than at 1), not one of the window's forwards."""
    def key(name, **labels):
        return (name, tuple(sorted({"model": "mobilenet_v2", "impl": "auto", **labels}.items())))

    before = {key("dwserve_kernel_launches_total", kind="aten_ops"): 10_000.0,
              key("dwserve_forwards_total"): 50.0, key("dwserve_compute_duration_seconds_count"): 40.0,
              key("dwserve_compute_duration_seconds_sum"): 4.0}
    after = {key("dwserve_kernel_launches_total", kind="aten_ops"): 10_000.0 + 4 * 153,
             key("dwserve_forwards_total"): 54.0, key("dwserve_compute_duration_seconds_count"): 44.0,
             key("dwserve_compute_duration_seconds_sum"): 4.4,
             key("dwserve_kernel_launches_per_forward", kind="aten_ops"): 314.0}   # a batch-8 count
    view = serve.impl_view(before, after, "mobilenet_v2", "auto")
    assert view["launches_per_forward"] == {"aten_ops": 153.0}
    assert view["compute_mean_s"] == pytest.approx(0.1)
