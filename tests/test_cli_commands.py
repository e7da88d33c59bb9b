"""The `dwserve` commands other than serve (service/cli.py): `bench NAME` runs the checkout's
benchmark with its argv (clear errors without a checkout or for an unknown name; each
benchmark's --help names the command and ends its sentence), `loadtest` dispatches to
service.loadtest (and names the extra when httpx is missing), top-level --help and unknown
commands, and the installed console script."""
import shutil
import subprocess
import sys

import pytest

from service import cli

from cli_capture import _help_text


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
    err = capsys.readouterr().err   # the usage, then the one line saying what was wrong
    assert err.strip().splitlines()[-1] == "dwserve: unknown command 'frobnicate'; expected serve, bench or loadtest"
    assert cli.main([]) == 2
    assert "unknown command" not in capsys.readouterr().err   # no command at all: the usage only


def test_console_script_is_installed():
    exe = shutil.which("dwserve") or shutil.which("dwserve", path=str(__import__("pathlib").Path(sys.executable).parent))
    if exe is None:
        pytest.skip("package not installed (pip install -e .)")
    proc = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--depthwise-impl" in proc.stdout and "--max-queue-delay-ms" in proc.stdout


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


def test_loadtest_without_httpx_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "httpx", None)          # as if the load extra were missing
    monkeypatch.delitem(sys.modules, "service.loadtest", raising=False)
    assert cli.main(["loadtest", "--help"]) == 2
    assert "pip install 'dwserve[load]'" in capsys.readouterr().err
