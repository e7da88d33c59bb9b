"""`dwserve serve`'s flags and DWSERVE_* variables onto Settings (service/cli.py): flags over
the environment, the default models, a bad setting or variable as one line naming it as typed,
--device cuda:N, an empty variable as unset, --log-level, every flag a setting and every
setting but one a flag, and --help giving each flag a description, default and variable.
Settings that reach the models are test_cli_serve_model_settings.py's; the other commands
test_cli_commands.py's."""
import threading

import pytest
from pydantic import ValidationError

from service import cli
from service.settings import Settings

import cli_capture
from cli_capture import _help_text

captured = cli_capture.captured   # serve without uvicorn: the Settings it would serve with


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
    # inf (or anything past threading.TIMEOUT_MAX) was taken, and at SIGTERM the drain's thread
    # joins raised OverflowError: 'Application shutdown failed', the batchers never drained
    pytest.param(["--graceful-shutdown-s", "inf"], "--graceful-shutdown-s inf: expected a number >= 0 and <= 86400",
                 id="grace-inf"),
    # `--host "$HOST"` with HOST unset: uvicorn listened on every interface, gRPC's bind failed
    pytest.param(["--host", ""], "--host : expected an address or host name (0.0.0.0 or :: for every interface)",
                 id="host-empty"),
    # past torch's seed range the server started and then failed loading the models (exit 1)
    pytest.param(["--seed", str(2**64)], f"--seed {2**64}: expected an integer >= 0 and <= {2**64 - 1}",
                 id="seed-range"),
])
def test_serve_rejects_bad_settings(argv, line, captured, capsys):
    """One line per bad setting, naming the flag as typed and what it takes (not pydantic's
    multi-line report with its field names and documentation links)."""
    assert cli.main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dwserve serve: invalid settings: " + line), err
    assert "pydantic" not in err


def test_the_longest_grace_period_is_one_a_thread_join_takes():
    """The drain joins threads with --graceful-shutdown-s as timeout (service.app.Service.stop)."""
    limit = next(m.le for m in Settings.model_fields["graceful_shutdown_s"].metadata if getattr(m, "le", None))
    assert Settings(graceful_shutdown_s=limit).graceful_shutdown_s == limit
    assert threading.Lock().acquire(timeout=limit)   # OverflowError past threading.TIMEOUT_MAX


def test_the_seed_range_is_torchs():
    """--seed seeds torch.Generator (the embedded weights): its bounds are the generator's."""
    import torch
    bounds = {name: getattr(m, name) for m in Settings.model_fields["seed"].metadata for name in ("ge", "le")
              if getattr(m, name, None) is not None}
    assert bounds == {"ge": 0, "le": 2**64 - 1}
    torch.Generator().manual_seed(bounds["le"])
    with pytest.raises((ValueError, RuntimeError), match="Overflow"):
        torch.Generator().manual_seed(bounds["le"] + 1)


@pytest.mark.parametrize("env, line", [
    pytest.param({"DWSERVE_MAX_BATCH_SIZE": "abc"}, "DWSERVE_MAX_BATCH_SIZE='abc': expected an integer >= 1",
                 id="not-a-number"),
    pytest.param({"DWSERVE_WARMUP": "maybe"}, "DWSERVE_WARMUP='maybe': expected a boolean", id="not-a-bool"),
    pytest.param({"DWSERVE_DEVICE": "gpu"}, "DWSERVE_DEVICE='gpu': expected auto, cpu, cuda or cuda:N", id="device"),
    pytest.param({"DWSERVE_LOG_LEVEL": "trace"}, "DWSERVE_LOG_LEVEL='trace': expected one of debug, info",
                 id="log-level"),
    pytest.param({"DWSERVE_DEPTHWISE_IMPL": "Warp"}, "DWSERVE_DEPTHWISE_IMPL='Warp': expected one of auto,",
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


@pytest.mark.parametrize("argv, line", [
    (["--depthwise-impl", "warp"], "argument --depthwise-impl: invalid choice: 'warp'"),
    (["--port", "abc"], "argument --port: invalid int value: 'abc'"),
    (["--max-queue-delay-ms", "soon"], "argument --max-queue-delay-ms: invalid float value: 'soon'"),
    (["--host"], "argument --host: expected one argument"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_serve_rejects_what_it_cannot_parse_in_one_line(argv, line, captured, capsys):
    """argparse printed its whole usage (30-odd lines) before the one that says what is wrong;
    now that line alone, as a bad setting's, exit 2."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dwserve serve: " + line), err


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
        variable = "DWSERVE_MODELS" if action.dest == "models" else "DWSERVE_" + action.dest.upper()
        assert action.help and not action.help.startswith("("), action.dest          # a description
        assert action.help.endswith(variable + ")") or action.help.endswith(variable + ", a comma list)"), action.help
        if action.dest != "models":
            default = field.default
            default = {None: "none", True: "on", False: "off"}[default] if default is None or isinstance(
                default, bool) else str(default)
            assert f"(default {default}; {variable}" in action.help, action.help
    assert "(default 8; DWSERVE_MAX_BATCH_SIZE)" in help_text
    # integer defaults of 0 and 1 are numbers, not switches (0 == False and 1 == True as dict keys)
    assert "(default 0; DWSERVE_SEED)" in help_text and "(default 1; DWSERVE_RESPONSE_COMPRESSION_LEVEL)" in help_text
    assert "(default lfm2,mobilenet_v2; DWSERVE_MODELS, a comma list)" in help_text


@pytest.mark.parametrize("flag, field", [pytest.param("--grpc-port", "grpc_port", id="grpc-port"),
                                         pytest.param("--torch-threads", "torch_threads", id="torch-threads"),
                                         pytest.param("--max-total-body-bytes", "max_total_body_bytes", id="total-body")])
def test_none_is_taken_where_help_offers_it(flag, field, monkeypatch, captured, capsys):
    """--help says '--grpc-port ... (0: any free one; none: off) (default none ...)', and 'none'
    for --torch-threads and --max-total-body-bytes too, but `--grpc-port none` was 'expected an
    integer >= 0 and <= 65535'. 'none' (flag or DWSERVE_* variable) is the default, unset."""
    entry = _help_text(["serve", "--help"], capsys).split(flag, 2)[2].split("\n  --", 1)[0]   # its --help entry
    assert "none" in entry, entry
    monkeypatch.setenv("DWSERVE_" + field.upper(), "7777")
    assert cli.main(["serve", flag, "none"]) == 0
    assert getattr(captured["settings"], field) is None
    monkeypatch.setenv("DWSERVE_" + field.upper(), "None")
    assert cli.main(["serve"]) == 0
    assert getattr(captured["settings"], field) is None


def test_log_level_flag_takes_any_case_as_its_variable_does(captured):
    """DWSERVE_LOG_LEVEL=WARNING was taken (as logging's own names are written) but
    `--log-level WARNING` was argparse's 'invalid choice': the flag and its variable disagreed."""
    assert cli.main(["serve", "--log-level", "WARNING"]) == 0
    assert captured["settings"].log_level == "warning"


@pytest.mark.parametrize("field", ["warmup", "access_log"])
def test_a_switch_flag_takes_back_its_variable_either_way(field, monkeypatch, captured):
    """An image's or compose file's DWSERVE_WARMUP=0 could not be taken back on the command line
    (only --no-warmup existed). --warmup / --no-warmup (and --access-log / --no-access-log) win
    over the variable either way; neither given leaves the variable or the default."""
    flag, variable = "--" + field.replace("_", "-"), "DWSERVE_" + field.upper()
    monkeypatch.setenv(variable, "0")
    assert cli.main(["serve", flag]) == 0 and getattr(captured["settings"], field) is True
    assert cli.main(["serve"]) == 0 and getattr(captured["settings"], field) is False
    monkeypatch.setenv(variable, "1")
    assert cli.main(["serve", flag.replace("--", "--no-")]) == 0 and getattr(captured["settings"], field) is False
    monkeypatch.delenv(variable)
    assert cli.main(["serve"]) == 0 and getattr(captured["settings"], field) is True


def test_a_switch_flag_is_named_as_typed():
    """What preflight and the settings errors call a switch given on the command line."""
    from service.preflight import _given
    assert _given("warmup", False, {"warmup"}) == "--no-warmup"
    assert _given("access_log", True, {"access_log"}) == "--access-log"
    assert _given("warmup", "maybe", set()) == "DWSERVE_WARMUP='maybe'"


@pytest.mark.parametrize("variable, flag, given, taken", [
    pytest.param("DWSERVE_LOG_FORMAT", "--log-format", " Json ", "json", id="log-format"),
    pytest.param("DWSERVE_DEPTHWISE_IMPL", "--depthwise-impl", "PER_GROUP", "per_group", id="impl"),
    pytest.param("DWSERVE_DTYPE", "--dtype", "BFloat16", "bfloat16", id="dtype"),
    pytest.param("DWSERVE_GRPC_INFER_RESPONSE_COMPRESSION_LEVEL", "--grpc-infer-response-compression-level",
                 "High", "high", id="grpc-compression"),
    pytest.param("DWSERVE_GENERATION_CONFIG", "--generation-config", "NONE", "none", id="generation-config"),
    pytest.param("DWSERVE_DEVICE", "--device", "CPU", "cpu", id="device"),
])
def test_a_word_setting_takes_any_case_as_log_level_does(variable, flag, given, taken, monkeypatch, captured):
    """DWSERVE_LOG_FORMAT=JSON was refused while DWSERVE_LOG_LEVEL=WARNING was taken: every
    setting that is one of a few lower-case words takes any case and surrounding spaces, as
    variable and as flag, and holds the word as written in its choices."""
    field = variable.removeprefix("DWSERVE_").lower()
    monkeypatch.setenv(variable, given)
    assert cli.main(["serve"]) == 0 and getattr(captured["settings"], field) == taken
    monkeypatch.delenv(variable)
    assert cli.main(["serve", flag, given]) == 0 and getattr(captured["settings"], field) == taken
