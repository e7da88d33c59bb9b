"""models/graphed.py: a forward replayed from CUDA graphs per bucket of rows and depthwise policy.

On CPU a stand-in runner plays the graph (capture keeps fn's output tensor, a replay recomputes
fn over the static input and writes into it, as a graph replay rewrites its output in place),
so the bucketing, the static input, the copies out, the eager fallbacks and the cache bound are
checked here; on CUDA (gpu.sh) the served MobileNetV2 replays real graphs against its eager
forward."""
import pytest
import torch

from models import graphed as graphed_mod
from models import profiling
from models.depthwise import use_impl
from models.graphed import GraphedForward


class FakeRunner:
    def __init__(self, device):
        self.fn = self.out = None

    def capture(self, fn, warmup):
        for _ in range(warmup):
            fn()
        self.fn, self.out = fn, fn()
        return self.out

    def replay(self):
        self.out.copy_(self.fn())


def _net(seed=0):
    """A small CNN that mixes no rows: conv, ReLU, pooled, linear (B, 3, 8, 8) -> (B, 5)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    return lambda x: net(x).float()


def _graphed(fn=None):
    return GraphedForward(fn or _net(), (3, 8, 8), torch.float32, "cpu", runner=FakeRunner)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8])
def test_replays_equal_the_eager_forward_for_every_row_count(rows):
    fn, g = _net(), None
    g = _graphed(fn)
    with torch.inference_mode():
        for _ in range(2):                       # a fresh input each call, the second a replay
            x = torch.randn(rows, 3, 8, 8)
            torch.testing.assert_close(g(x), fn(x), rtol=0, atol=0)
    assert g.captures == 1 and g.replays == 2


def test_a_bucket_of_rows_is_one_graph_and_its_extra_rows_never_reach_a_result():
    fn = _net()
    g = _graphed(fn)
    with torch.inference_mode():
        big = torch.randn(4, 3, 8, 8) * 100
        g(big)                                   # bucket 4, its rows hold `big`
        x = torch.randn(3, 3, 8, 8)
        torch.testing.assert_close(g(x), fn(x), rtol=0, atol=0)    # same graph, row 4 stale
        assert g.captures == 1
        one = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(g(one), fn(one), rtol=0, atol=0)
        g(torch.randn(5, 3, 8, 8))
    assert sorted(rows for rows, _ in g.graphs) == [1, 4, 8] and g.captures == 3


def test_a_result_is_a_copy_the_next_replay_does_not_touch():
    g = _graphed()
    with torch.inference_mode():
        first = g(torch.randn(2, 3, 8, 8))
        kept = first.clone()
        g(torch.randn(2, 3, 8, 8))
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


def test_each_depthwise_policy_gets_its_own_graph_and_per_group_and_compiled_stay_eager():
    g = _graphed()
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        for policy in ("auto", "native", "slice_sum", "native"):
            with use_impl(policy):
                g(x)
        for policy in graphed_mod.EAGER_POLICIES:
            with use_impl(policy):
                g(x)
    assert sorted(p for _, p in g.graphs) == ["auto", "native", "slice_sum"] and g.replays == 4


def test_profiled_and_depthwise_timed_calls_run_eagerly_and_capture_nothing():
    calls = []
    fn = _net()
    g = _graphed(lambda x: calls.append(x.shape[0]) or fn(x))
    x = torch.randn(3, 3, 8, 8)
    with torch.inference_mode():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
            torch.testing.assert_close(g(x), fn(x), rtol=0, atol=0)
        with profiling.depthwise_timer():
            g(x)
    assert g.captures == 0 and g.replays == 0 and calls == [3, 3]     # eager: x itself, 3 rows


def test_at_most_max_graphs_are_kept_least_recently_used_dropped(monkeypatch):
    monkeypatch.setattr(graphed_mod, "MAX_GRAPHS", 2)
    g = _graphed()
    with torch.inference_mode():
        for rows in (1, 2, 1, 4):                # bucket 2 is the least recently used when 4 comes
            g(torch.randn(rows, 3, 8, 8))
    assert list(g.graphs) == [(1, "auto"), (4, "auto")] and g.captures == 3


@pytest.mark.parametrize("shape", [(2, 3, 8, 9), (0, 3, 8, 8), (2, 8, 8)])
def test_rows_of_another_shape_are_a_value_error(shape):
    with pytest.raises(ValueError, match=r"expected \(B >= 1, 3, 8, 8\) rows"):
        _graphed()(torch.randn(*shape))


def test_the_served_mobilenet_replays_equal_its_eager_forward_on_cpu_with_the_stand_in():
    from models.registry import build_model
    served = build_model("mobilenet_v2", device="cpu", seed=0)
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        served.use_cuda_graphs(True)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    want = served.forward({"input": x})["logits"]
    served.graphed = GraphedForward(lambda t: served.module(t).float(), (3, 224, 224), served.dtype, "cpu",
                                    memory_format=torch.channels_last, runner=FakeRunner)
    got = served.forward({"input": x})["logits"]
    assert served.graphed.replays == 1 and served.graphed.graphs[(4, "auto")][0].is_contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    served.use_cuda_graphs(False)
    assert served.graphed is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_served_mobilenet_in_cuda_graphs_equals_its_eager_forward():
    """Real graphs: fp16 channels_last MobileNetV2, buckets 1 and 4 (3 rows, one stale), each
    replay against the eager forward of the same rows, cuDNN's depthwise inside (native: fused
    would autotune and compile ~17 layers here, past gpu.sh's 75 s test window; the fused
    launches' own graph capture is tests/test_triton_launch_gpu.py's)."""
    policy = "native"
    from models.registry import build_model
    served = build_model("mobilenet_v2", device="cuda", dtype=torch.float16, seed=0)
    served.use_cuda_graphs(True)
    g = torch.Generator().manual_seed(2)
    with use_impl(policy):
        for rows in (1, 3, 3):
            x = torch.randn(rows, 3, 224, 224, generator=g)
            got = served.forward({"input": x})["logits"]
            with torch.inference_mode():
                want = served.module(x.to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)).float()
            torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    assert served.graphed.captures == 2 and served.graphed.replays == 3


def test_the_switch_is_on_by_default_a_serve_flag_and_an_env_variable_and_a_cpu_server_leaves_it_off(monkeypatch):
    """On by default since the CUDA test above passed on an H200 (benchmarks/results/
    h200-2026-12-04-2/gpu-tests.xml); --no-cuda-graphs / DWSERVE_CUDA_GRAPHS=0 turn it off; on
    CPU the default is a no-op (no GraphedForward)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.cli import _serve_parser
    from service.settings import Settings
    assert _serve_parser().parse_args(["--cuda-graphs"]).cuda_graphs is True
    assert _serve_parser().parse_args(["--no-cuda-graphs"]).cuda_graphs is False
    assert _serve_parser().parse_args([]).cuda_graphs is None          # not given: the setting's
    monkeypatch.delenv("DWSERVE_CUDA_GRAPHS", raising=False)
    assert Settings().cuda_graphs is True
    for off in ("0", "false"):
        monkeypatch.setenv("DWSERVE_CUDA_GRAPHS", off)
        assert Settings().cuda_graphs is False
    monkeypatch.setenv("DWSERVE_CUDA_GRAPHS", "1")
    assert Settings().cuda_graphs is True
    app = create_app(Settings(models=("mobilenet_v2",), warmup=False, device="cpu"))
    assert app.state.service.settings.cuda_graphs is True                 # on, yet a CPU server:
    with TestClient(app) as client:
        from server_process import client_ready
        client_ready(client, timeout=120)
        assert app.state.service.runtimes["mobilenet_v2"].served.graphed is None     # graphs are CUDA's
