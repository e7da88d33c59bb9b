"""`dwserve` CLI: flag/env mapping onto Settings, bench/loadtest dispatch, clear errors."""
import shutil
import subprocess
import sys

import pytest

from service import cli
from pydantic import ValidationError

from service.settings import Settings


@pytest.fixture
def captured(monkeypatch):
    """Run `serve` without starting uvicorn; return the Settings it would serve with."""
    seen = {}
    monkeypatch.setattr(cli, "run_server", lambda app, settings, log_level="info": seen.update(settings=settings))
    import service.app

    fake_app = type("App", (), {"state": type("State", (), {"service": type("S", (), {"load_error": None})()})()})()
    monkeypatch.setattr(service.app, "create_app", lambda settings: fake_app)
    monkeypatch.setattr(cli, "preflight", lambda settings, from_flags: [])   # paths, CUDA: test_preflight.py
    return seen


def test_serve_flags_override_env(monkeypatch, captured):
    monkeypatch.setenv("DWSERVE_MAX_QUEUE_SIZE", "7")
    monkeypatch.setenv("DWSERVE_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("DWSERVE_API_KEY", "k")
    assert cli.main(["serve", "--model", "lfm2=/weights/lfm2", "--model", "mobilenet_v2", "--port", "0",
                     "--max-batch-size", "16", "--depthwise-impl", "per_group", "--max-queue-delay-ms", "2.5"]) == 0
    s: Settings = captured["settings"]
    assert s.model_entries() == [("lfm2", "/weights/lfm2"), ("mobilenet_v2", None)]
    assert (s.max_batch_size, s.max_queue_size, s.depthwise_impl, s.max_queue_delay_ms) == (16, 7, "per_group", 2.5)
    assert s.api_key == "k" and s.port == 0


def test_serve_defaults_to_both_models(monkeypatch, captured):
    monkeypatch.delenv("DWSERVE_MODELS", raising=False)
    assert cli.main(["serve"]) == 0
    assert captured["settings"].models == ("lfm2", "mobilenet_v2")


def test_env_models_comma_list(monkeypatch, captured):
    monkeypatch.setenv("DWSERVE_MODELS", "mobilenet_v2")
    assert cli.main(["serve"]) == 0
    assert captured["settings"].models == ("mobilenet_v2",)


@pytest.mark.parametrize("argv, line", [
    pytest.param(["--max-batch-size", "0"], "--max-batch-size 0: expected an integer >= 1 and <= 1024",
                 id="batch-zero"),
    pytest.param(["--port", "70000"], "--port 70000: expected an integer >= 0 and <= 65535", id="port-range"),
    pytest.param(["--max-queue-delay-ms", "nan"], "--max-queue-delay-ms nan: expected a number >= 0 and <= 10000",
                 id="delay-nan"),
    pytest.param(["--model", "lfm2", "--model", "lfm2=/x"],
                 "--model ['lfm2', 'lfm2=/x']: expected each model name at most once", id="duplicate-model"),
])
def test_serve_rejects_bad_settings(argv, line, captured, capsys):
    """One line per bad setting, naming the flag as typed and what it takes (not pydantic's
    multi-line report with its field names and documentation links)."""
    assert cli.main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dwserve serve: invalid settings: " + line), err
    assert "pydantic" not in err


@pytest.mark.parametrize("env, line", [
    pytest.param({"DWSERVE_MAX_BATCH_SIZE": "abc"}, "DWSERVE_MAX_BATCH_SIZE='abc': expected an integer >= 1",
                 id="not-a-number"),
    pytest.param({"DWSERVE_WARMUP": "maybe"}, "DWSERVE_WARMUP='maybe': expected a boolean", id="not-a-bool"),
    pytest.param({"DWSERVE_DEVICE": "gpu"}, "DWSERVE_DEVICE='gpu': expected auto, cpu, cuda or cuda:N", id="device"),
    pytest.param({"DWSERVE_LOG_LEVEL": "trace"}, "DWSERVE_LOG_LEVEL='trace': expected one of debug, info",
                 id="log-level"),
    pytest.param({"DWSERVE_DEPTHWISE_IMPL": "Native"}, "DWSERVE_DEPTHWISE_IMPL='Native': expected one of auto,",
                 id="impl"),
])
def test_serve_names_the_bad_environment_variable(env, line, monkeypatch, captured, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dwserve serve: invalid settings: " + line), err


def test_device_flag_takes_a_gpu_index_like_the_environment(monkeypatch, captured, capsys):
    """--device cuda:1 is what DWSERVE_DEVICE=cuda:1 is; argparse's choices refused it."""
    monkeypatch.setenv("DWSERVE_DEVICE", "cuda:1")
    assert cli.main(["serve"]) == 0 and captured["settings"].device == "cuda:1"
    monkeypatch.delenv("DWSERVE_DEVICE")
    assert cli.main(["serve", "--device", "cuda:1"]) == 0 and captured["settings"].device == "cuda:1"
    assert cli.main(["serve", "--device", "gpu"]) == 2
    assert "--device gpu: expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_an_empty_variable_is_as_if_unset(monkeypatch, captured):
    """The Docker images set DWSERVE_GRPC_PORT=8001; `-e DWSERVE_GRPC_PORT=` turns it off
    (the default) instead of failing to parse '' as an integer."""
    for name in ("DWSERVE_GRPC_PORT", "DWSERVE_TORCH_THREADS", "DWSERVE_API_KEY", "DWSERVE_MAX_BATCH_SIZE"):
        monkeypatch.setenv(name, "")
    assert cli.main(["serve"]) == 0
    s = captured["settings"]
    assert (s.grpc_port, s.torch_threads, s.api_key, s.max_batch_size) == (None, None, None, 8)


def test_serve_rejects_unknown_impl():
    with pytest.raises(SystemExit):
        cli.main(["serve", "--depthwise-impl", "warp"])


def test_bench_runs_benchmark_main_with_argv(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "ops.py").write_text(
        "SEEN = []\ndef main(argv):\n    import json, pathlib\n"
        f"    pathlib.Path({str(tmp_path / 'argv.json')!r}).write_text(json.dumps(argv))\n    return 0\n")
    monkeypatch.setattr(cli, "_REPO", tmp_path)
    assert cli.main(["bench", "ops", "--quick", "x"]) == 0
    assert (tmp_path / "argv.json").read_text() == '["--quick", "x"]'


def test_bench_without_checkout_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_REPO", tmp_path)
    assert cli.main(["bench", "serve"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_bench_unknown_name(capsys):
    assert cli.main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "usage: dwserve bench" in err and "unknown benchmark 'nope'" in err


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_bench_help_is_an_answer_not_an_error(flag, capsys):
    """`dwserve bench --help` was the usage on stderr with exit 2, as for a wrong name."""
    assert cli.main(["bench", flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dwserve bench {ops,") and "NAME --help" in out


def test_loadtest_dispatches_to_service_loadtest(monkeypatch):
    loadtest = pytest.importorskip("service.loadtest")
    seen = []
    monkeypatch.setattr(loadtest, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["loadtest", "--duration", "1"]) == 0
    assert seen == [["--duration", "1"]]


def test_help_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "dwserve serve" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2


def test_console_script_is_installed():
    exe = shutil.which("dwserve") or shutil.which("dwserve", path=str(__import__("pathlib").Path(sys.executable).parent))
    if exe is None:
        pytest.skip("package not installed (pip install -e .)")
    proc = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--depthwise-impl" in proc.stdout and "--max-queue-delay-ms" in proc.stdout


def test_serve_exits_1_when_a_model_cannot_load(tmp_path):
    """A weights file found unreadable only when loaded: exit 1 with the reason, logged as one
    line (a ValueError says what is wrong; its traceback says nothing more)."""
    corrupt = tmp_path / "corrupt-weights.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "0", "--log-level", "error",
                           "--model", f"mobilenet_v2={corrupt}"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "model loading failed" in proc.stderr and "corrupt-weights" in proc.stderr
    assert "not a readable safetensors file" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_dtype_flag_env_and_auto(monkeypatch, captured):
    monkeypatch.setenv("DWSERVE_DTYPE", "float16")
    assert cli.main(["serve"]) == 0
    assert captured["settings"].dtype == "float16"
    assert cli.main(["serve", "--dtype", "bfloat16"]) == 0
    assert captured["settings"].resolved_dtype("cpu") == "bfloat16"
    auto = Settings(dtype="auto")
    assert (auto.resolved_dtype("cpu"), auto.resolved_dtype("cuda"), auto.resolved_dtype("cuda:1")) == \
        ("float32", "bfloat16", "bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        Settings(dtype="float64")


def test_service_builds_models_in_the_settings_dtype():
    """Service._build hands the resolved dtype to the registry: a bf16 MobileNetV2 still
    takes FP32 input and answers FP32 logits (the protocol's types do not change)."""
    import torch

    from service.app import Service
    svc = Service(Settings(models=["mobilenet_v2"], dtype="bfloat16"))
    served = svc._build("mobilenet_v2", "cpu")
    assert served.metadata["dtype"] == "bfloat16" and served.dtype == torch.bfloat16
    out = served.forward({"input": torch.randn(1, 3, 224, 224)})["logits"]
    assert out.dtype == torch.float32 and out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("env, expected", [
    pytest.param(None, 8 << 20, id="default-8MiB"),
    pytest.param("0", None, id="0-whole-batches"),
    pytest.param("2", 2 << 20, id="2MiB"),
])
def test_service_sets_the_row_chunk_budget_from_settings(monkeypatch, env, expected):
    from models.row_chunks import CPU_ROW_CHUNK_BYTES
    from service.app import Service
    if env is not None:
        monkeypatch.setenv("DWSERVE_CPU_ROW_CHUNK_MIB", env)
    svc = Service(Settings(models=["mobilenet_v2", "lfm2"]))
    assert svc._build("mobilenet_v2", "cpu").module.row_chunk_bytes == expected
    assert not hasattr(svc._build("lfm2", "cpu").module, "row_chunk_bytes")
    assert Settings.model_fields["cpu_row_chunk_mib"].default << 20 == CPU_ROW_CHUNK_BYTES  # one default


def test_row_chunk_flag_reaches_settings(captured):
    assert cli.main(["serve", "--cpu-row-chunk-mib", "0"]) == 0
    assert captured["settings"].cpu_row_chunk_mib == 0


def test_row_chunk_budget_rejects_negative():
    with pytest.raises(ValidationError, match="cpu_row_chunk_mib"):
        Settings(cpu_row_chunk_mib=-1)


def _help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", cli.BENCHMARKS)
def test_bench_help_names_the_command_and_ends_its_sentence(name, capsys):
    """`dwserve bench NAME --help`: usage says `dwserve bench NAME` (not the file's name) and
    the description is a whole paragraph, not a first line cut mid-sentence."""
    if name in ("ptx", "host_overhead"):
        # These two unset TRITON_INTERPRET when imported (they need real triton.jit kernels):
        # in this process that would turn the interpreter off for every later fused test.
        pytest.importorskip("triton")
        run = subprocess.run([sys.executable, "-c", "import sys; from service import cli; cli.main(sys.argv[1:])",
                              "bench", name, "--help"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        out = run.stdout
    else:
        out = _help_text(["bench", name, "--help"], capsys)
    assert out.startswith(f"usage: dwserve bench {name} "), out[:200]
    description = out.split("\n\n")[1].strip()
    assert description.endswith((".", ")")), description


def test_loadtest_help_ends_its_sentence(capsys):
    pytest.importorskip("service.loadtest")
    out = _help_text(["loadtest", "--help"], capsys)
    assert out.startswith("usage: dwserve loadtest ")
    description = out.split("\n\n")[1].strip()
    assert description.endswith((".", ")")) and description.count("(") == description.count(")"), description


def test_log_level_flag_and_env(monkeypatch, captured):
    """--log-level is a Settings field like every other flag: DWSERVE_LOG_LEVEL sets it, the
    flag wins, and uvicorn gets the resolved level."""
    levels = []
    monkeypatch.setattr(cli, "run_server", lambda app, settings, log_level="info":
                        levels.append((settings.log_level, log_level)))
    monkeypatch.delenv("DWSERVE_LOG_LEVEL", raising=False)
    assert cli.main(["serve"]) == 0
    monkeypatch.setenv("DWSERVE_LOG_LEVEL", "WARNING")
    assert cli.main(["serve"]) == 0
    assert cli.main(["serve", "--log-level", "debug"]) == 0
    assert levels == [("info", "info"), ("warning", "warning"), ("debug", "debug")]
    with pytest.raises(ValidationError, match="log_level"):
        Settings(log_level="verbose")


def test_every_serve_flag_is_a_setting():
    """Each flag of `dwserve serve` lands on a Settings field of the same name (so it is also a
    DWSERVE_* variable); --model is the one plural, DWSERVE_MODELS."""
    dests = {a.dest for a in cli._serve_parser()._actions if a.dest != "help"}
    assert dests <= set(Settings.model_fields), dests - set(Settings.model_fields)
    assert "models" in dests and "log_level" in dests


def test_every_setting_but_keep_freed_memory_is_a_serve_flag():
    """The other way round: README and service/settings.py name DWSERVE_KEEP_FREED_MEMORY as
    the one setting without a flag."""
    dests = {a.dest for a in cli._serve_parser()._actions}
    assert set(Settings.model_fields) - dests == {"keep_freed_memory"}


def test_serve_help_gives_every_flag_a_description_default_and_variable(capsys):
    """README sends operators to `dwserve serve --help` for the limits: each flag says what it
    does, its default and its DWSERVE_* variable (most limits were a bare `--max-elements
    MAX_ELEMENTS`)."""
    help_text = " ".join(_help_text(["serve", "--help"], capsys).split())
    for action in cli._serve_parser()._actions:
        if action.dest == "help":
            continue
        field = Settings.model_fields[action.dest]
        variable = {"models": "DWSERVE_MODELS", "warmup": "DWSERVE_WARMUP=0"}.get(action.dest,
                                                                                  "DWSERVE_" + action.dest.upper())
        assert action.help and not action.help.startswith("("), action.dest          # a description
        assert action.help.endswith(variable + ")") or action.help.endswith(variable + ", a comma list)"), action.help
        if action.dest not in ("warmup", "models"):
            default = "none" if field.default is None else str(field.default)
            assert f"(default {default}; {variable}" in action.help, action.help
    assert "(default 8; DWSERVE_MAX_BATCH_SIZE)" in help_text
    assert "(default lfm2,mobilenet_v2; DWSERVE_MODELS, a comma list)" in help_text


def test_loadtest_without_httpx_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "httpx", None)          # as if the load extra were missing
    monkeypatch.delitem(sys.modules, "service.loadtest", raising=False)
    assert cli.main(["loadtest", "--help"]) == 2
    assert "pip install 'dwserve[load]'" in capsys.readouterr().err
