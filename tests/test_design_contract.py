"""DESIGN.md's public contract, claim by claim, where no other test pins it (organised by the
design's sections; each claim that another file already checks names that file in a comment).
Service and Metrics are tests/test_design_contract_service.py's, Style test_design_contract_style.py's
(this file would pass ~300 lines).
The contract's names are what users and dashboards rely on, so these tests hold them exactly:
a rename, a dropped default, a metric's type or label set changing fails here."""
import ast
import contextvars
import inspect
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
IMPLS = ("per_group", "slice_sum", "compiled", "fused", "native")
POLICIES = IMPLS + ("auto",)


# ================================================================ Layout (top level is fixed)
# README's quick start and .ci/run: test_docs.py holds the docs' commands to the code.

def test_pyproject_names_the_distribution_its_packages_and_the_console_script():
    tomllib = pytest.importorskip("tomllib")                # Python >= 3.11
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "dwserve"
    assert meta["project"]["scripts"]["dwserve"] == "service.cli:main"
    assert set(meta["tool"]["setuptools"]["packages"]["find"]["include"]) == {"models*", "service*"}


@pytest.mark.parametrize("path", [pytest.param(p, id=p) for p in (
    "README.md", "models/depthwise/__init__.py", "models/depthwise/dispatch.py", "models/depthwise/modules.py",
    *(f"models/depthwise/{impl}.py" for impl in IMPLS), "benchmarks/results", "docker/Dockerfile",
    "docker/Dockerfile.cuda", "docker/docker-compose.yml", "docker/docker-compose.gpu.yml", "docker/locustfile.py",
    "deploy/prometheus/prometheus.yml", "deploy/prometheus/rules", "deploy/grafana/provisioning",
    "deploy/grafana/dashboards", "deploy/k8s/deployment.yaml", "deploy/k8s/kserve.yaml", ".ci/run")])
def test_layout_path_exists(path):
    assert (REPO / path).exists(), f"DESIGN.md's layout names {path}"


def test_readme_quick_start_is_one_serve_command_and_one_test_command_ci_runs():
    quick = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick.splitlines() if line.strip()]
    assert commands == ["make serve", "make test"], commands
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^serve:.*\n\t\$\(BIN\)/dwserve serve\n", makefile, re.M), "make serve: bare `dwserve serve` (embedded defaults)"
    assert re.search(r"^test:.*\n\t\$\(BIN\)/python -m pytest", makefile, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M) and (REPO / ".ci" / "run").stat().st_mode & 0o111


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_models_never_imports_fastapi_or_the_service():
    bad = {str(p.relative_to(REPO)): sorted(_imported_modules(p) & {"fastapi", "starlette", "uvicorn", "service"})
           for p in (REPO / "models").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def _skips_without_cuda(decorator: ast.expr, skip_names: set[str]) -> bool:
    src = ast.unparse(decorator)
    return ("skipif" in src and "cuda" in src) or src in skip_names


def test_every_gpu_marked_test_also_skips_without_cuda():
    """`gpu` is a marker for selection (benchmarks/gpu.sh), not a skip: each such test must carry
    its own skipif on CUDA (directly, or as a `needs_cuda = pytest.mark.skipif(...)` defined in a
    test module and imported, or as the module's pytestmark)."""
    trees = {p.name: ast.parse(p.read_text()) for p in sorted((REPO / "tests").glob("*.py"))}
    skip_names = {t.id for tree in trees.values() for n in tree.body if isinstance(n, ast.Assign)
                  and "skipif" in ast.unparse(n.value) and "cuda" in ast.unparse(n.value)
                  for t in n.targets if isinstance(t, ast.Name)} - {"pytestmark"}
    unguarded, marked = [], 0
    for name, tree in trees.items():
        module_skip = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                          and _skips_without_cuda(n.value, skip_names) for n in tree.body)
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            if any(ast.unparse(d) == "pytest.mark.gpu" for d in fn.decorator_list):
                marked += 1
                if not module_skip and not any(_skips_without_cuda(d, skip_names) for d in fn.decorator_list):
                    unguarded.append(f"{name}::{fn.name}")
    assert marked and not unguarded, f"@pytest.mark.gpu tests that would fail, not skip, without CUDA: {unguarded}"


# ================================================================ Depthwise operators
# Every impl against F.conv / the dense reference, padding forms, multipliers, channels_last,
# ValueErrors naming the expected shape: test_depthwise_ops.py; use_impl across threads and
# tasks, state_dict loading from nn.Conv, convert_depthwise: test_depthwise_modules.py.

def test_impls_is_exactly_the_contract_tuple_and_auto_is_a_policy_beside_it():
    import models.depthwise as dw
    assert dw.IMPLS == IMPLS and "auto" not in dw.IMPLS
    x, w = torch.randn(1, 3, 8), torch.randn(3, 1, 3)
    assert torch.allclose(dw.depthwise_conv1d(x, w, impl="auto"), torch.nn.functional.conv1d(x, w, groups=3), atol=1e-5)


@pytest.mark.parametrize("name", ["depthwise_conv1d", "depthwise_conv2d"])
def test_op_signature(name):
    import models.depthwise as dw
    params = inspect.signature(getattr(dw, name)).parameters
    shape = [(p.name, p.kind, p.default) for p in params.values()]
    P, K, E = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty
    assert shape == [("x", P, E), ("weight", P, E), ("bias", P, None), ("stride", K, 1), ("padding", K, 0),
                     ("dilation", K, 1), ("impl", K, None)]


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in POLICIES])
def test_use_impl_value_lives_in_a_contextvar(name):
    """A context copied inside use_impl carries its impl out of the block; one copied before it
    keeps what was current then (what a thread pool's or an asyncio task's copy relies on)."""
    from models.depthwise import current_impl, use_impl
    with use_impl("native" if name != "native" else "slice_sum"):
        before, outside = current_impl(), contextvars.copy_context()
        with use_impl(name):
            inside = contextvars.copy_context()
            assert current_impl() == name
        assert current_impl() == before != name
    assert inside.run(current_impl) == name and outside.run(current_impl) == before


@pytest.mark.parametrize("dim", [pytest.param(1, id="conv1d"), pytest.param(2, id="conv2d")])
@pytest.mark.parametrize("m", [pytest.param(1, id="m1"), pytest.param(3, id="m3")])
@pytest.mark.parametrize("bias", [pytest.param(True, id="bias"), pytest.param(False, id="nobias")])
def test_module_state_dict_is_nn_convs_both_ways(dim, m, bias):
    from models.depthwise import DepthwiseConv1d, DepthwiseConv2d
    C, k = 4, 3
    conv = (torch.nn.Conv1d if dim == 1 else torch.nn.Conv2d)(C, C * m, k, groups=C, bias=bias)
    mine = (DepthwiseConv1d if dim == 1 else DepthwiseConv2d)(C, C * m, k, bias=bias)
    theirs = conv.state_dict()
    assert {n: t.shape for n, t in mine.state_dict().items()} == {n: t.shape for n, t in theirs.items()}
    assert theirs["weight"].shape == (C * m, 1, *(k,) * dim)          # (C*m, 1, K) / (C*m, 1, KH, KW)
    conv.load_state_dict(mine.state_dict())                             # ours -> nn.Conv, strict
    x = torch.randn(2, C, *(9,) * dim)
    torch.testing.assert_close(mine(x), conv(x), rtol=1e-5, atol=1e-5)


def test_convert_depthwise_returns_the_count_and_swaps_in_place():
    from models.depthwise import DepthwiseConv1d, DepthwiseConv2d, convert_depthwise
    net = torch.nn.ModuleDict({"a": torch.nn.Conv1d(4, 8, 3, groups=4), "b": torch.nn.Conv1d(4, 4, 3),
                               "c": torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, groups=3))})
    before = id(net)
    assert convert_depthwise(net, impl="slice_sum") == 2
    assert id(net) == before and isinstance(net["a"], DepthwiseConv1d) and isinstance(net["c"][0], DepthwiseConv2d)
    assert type(net["b"]) is torch.nn.Conv1d
    assert inspect.signature(convert_depthwise).parameters["impl"].default is None


@pytest.mark.parametrize("impl", [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "auto")])
def test_causal_padding_is_left_dilation_k_minus_1_and_keeps_length(impl):
    from models.depthwise import depthwise_conv1d
    x, w = torch.randn(2, 5, 11), torch.randn(10, 1, 3)
    out = depthwise_conv1d(x, w, padding="causal", dilation=2, impl=impl)
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (4, 0)), w, dilation=2, groups=5)
    assert out.shape == (2, 10, 11)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_unknown_impl_in_use_impl_and_bad_padding_in_a_module_are_value_errors():
    """The ops' own ValueErrors are test_depthwise_ops.py's; the context manager and the modules
    reject the same input, each saying what is expected."""
    from models.depthwise import DepthwiseConv1d, use_impl
    with pytest.raises(ValueError, match="per_group"):
        with use_impl("cudnn"):
            pass
    with pytest.raises(ValueError, match="same"):
        DepthwiseConv1d(3, 3, 3, padding="full")(torch.randn(1, 3, 8))


# ---------------------------------------------------------------- count_launches
# Per-impl counts and the CUDA side: test_profiling.py.

def test_count_launches_returns_launch_count_with_none_for_cuda_kernels_off_cuda():
    from models.profiling import LaunchCount, count_launches
    params = list(inspect.signature(count_launches).parameters.values())
    assert [p.kind for p in params] == [inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL,
                                        inspect.Parameter.VAR_KEYWORD]
    counted = count_launches(torch.add, torch.ones(3), other=torch.ones(3))
    assert isinstance(counted, LaunchCount) and LaunchCount._fields == ("aten_ops", "cuda_kernels")
    assert counted.aten_ops >= 1 and counted.cuda_kernels is None


# ================================================================ Models
# HF field names and presets: test_lfm2_config.py; loading HF directories: test_lfm2_loading.py;
# logits against the reference: test_lfm2.py; torchvision keys and BN folding: test_mobilenet.py;
# lfm2-demo >= 1024 channels: test_lfm2_config.py::test_published_preset_shapes.

def test_from_pretrained_signature():
    from models.lfm2 import LFM2ForCausalLM
    params = inspect.signature(LFM2ForCausalLM.from_pretrained).parameters
    assert [(p.name, p.default) for p in params.values()] == [("path", inspect.Parameter.empty), ("device", None),
                                                             ("dtype", None)]


def test_conv_state_cache_is_the_last_k_minus_1_inputs_updated_in_place():
    """The first layer (conv) sees only each token's own embedding, so its state after two
    prompts that end in the same K-1 tokens is the same, and after another last token it is not;
    the caches are the tensors allocated by new_cache, written in place."""
    from models.lfm2 import LFM2Config, LFM2ForCausalLM
    cfg = LFM2Config(vocab_size=50, hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=64, layer_types=("conv", "full_attention"))
    model = LFM2ForCausalLM.empty(cfg)
    model.init_weights(seed=0)
    K = cfg.conv_L_cache

    def state(ids):
        cache = model.new_cache(1, 16)
        addresses = [t.data_ptr() for t in (cache.conv_states[0], cache.keys[1], cache.values[1])]
        with torch.no_grad():
            model(torch.tensor([ids]), cache=cache)
        assert [t.data_ptr() for t in (cache.conv_states[0], cache.keys[1], cache.values[1])] == addresses
        assert cache.conv_states[0].shape == (1, cfg.hidden_size, K - 1) and cache.conv_states[1] is None
        return cache.conv_states[0].clone()

    tail = list(range(10, 10 + K - 1))
    same = state([1, 2, 3] + tail)
    torch.testing.assert_close(state([7, 8, 9, 4, 5] + tail), same)
    assert not torch.allclose(state([1, 2, 3] + tail[:-1] + [40]), same)


def test_mobilenet_v2_signature_and_defaults():
    from models.mobilenet import MobileNetV2, mobilenet_v2
    params = inspect.signature(mobilenet_v2).parameters
    assert list(params)[:2] == ["num_classes", "width_mult"]
    assert (params["num_classes"].default, params["width_mult"].default) == (1000, 1.0)
    assert isinstance(mobilenet_v2(num_classes=10, width_mult=0.25), MobileNetV2)


def test_lfm2_config_is_a_frozen_dataclass_with_hf_core_field_names():
    import dataclasses
    from models.lfm2 import LFM2Config
    from models.lfm2.presets import PRESETS
    assert dataclasses.is_dataclass(LFM2Config) and LFM2Config.__dataclass_params__.frozen
    fields = {f.name for f in dataclasses.fields(LFM2Config)}
    assert {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "conv_L_cache", "conv_bias", "layer_types", "norm_eps", "rope_theta"} <= fields
    assert PRESETS and all(isinstance(c, LFM2Config) for c in PRESETS.values())


NETWORK_MODULES = {"huggingface_hub", "requests", "urllib", "urllib3", "http", "httpx", "socket", "torchvision"}


def test_models_import_nothing_that_downloads():
    bad = {str(p.relative_to(REPO)): sorted(_imported_modules(p) & NETWORK_MODULES) for p in (REPO / "models").rglob("*.py")}
    hub = [str(p.relative_to(REPO)) for p in (REPO / "models").rglob("*.py") if "torch.hub" in p.read_text()]
    assert not {k: v for k, v in bad.items() if v} and not hub, (bad, hub)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in ("lfm2", "mobilenet_v2")])
def test_embedded_defaults_build_offline_from_a_fixed_seed(name, monkeypatch):
    """No download anywhere, ever: the embedded default builds with every socket refused, and
    twice gives the same weights (a fixed seed)."""
    import socket
    from models.registry import build_model

    def refuse(*args, **kwargs):
        raise AssertionError(f"building the embedded {name} opened a connection: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    first, second = (build_model(name, None, device="cpu", seed=0) for _ in range(2))
    a, b = (served.module.state_dict() for served in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
