"""`dwserve serve` warns about a DWSERVE_* variable it does not read (service/preflight.py):
a misspelt one (DWSERVE_MAX_BATCH=8) was silently ignored. One line per name on stderr,
naming the closest setting; never a failure, since the compose files, the locustfile and the
tests read DWSERVE_* variables of their own (preflight.NOT_SETTINGS, each checked here)."""
import re
from pathlib import Path

import pytest

from service import cli
from service.preflight import NOT_SETTINGS, unknown_variables
from service.settings import Settings

import cli_capture

captured = cli_capture.captured   # serve without uvicorn: the Settings it would serve with
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, says", [
    pytest.param("DWSERVE_MAX_BATCH", "DWSERVE_MAX_BATCH is not a setting and is ignored; "
                 "did you mean DWSERVE_MAX_BATCH_SIZE?", id="max-batch"),
    pytest.param("DWSERVE_DEPTHWISE", "did you mean DWSERVE_DEPTHWISE_IMPL?", id="depthwise"),
    # pydantic-settings reads DWSERVE_* names in any case, so a lower-case one is one of them too
    pytest.param("dwserve_max_queue_sise", "dwserve_max_queue_sise is not a setting and is ignored; "
                 "did you mean DWSERVE_MAX_QUEUE_SIZE?", id="lower-case"),
    pytest.param("DWSERVE_ZZZ", "DWSERVE_ZZZ is not a setting and is ignored (dwserve serve --help",
                 id="nothing-close"),
])
def test_a_misspelt_variable_is_one_warning_line_and_serve_goes_on(name, says, monkeypatch, captured, capsys):
    monkeypatch.setenv(name, "8")
    assert cli.main(["serve"]) == 0                                      # a warning, not a failure
    assert captured["settings"].max_batch_size == Settings.model_fields["max_batch_size"].default  # ignored
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dwserve serve: warning: "), err
    assert says in err, err


@pytest.mark.parametrize("name", ["DWSERVE_MAX_BATCH_SIZE", "dwserve_port", *sorted(NOT_SETTINGS)])
def test_a_setting_or_another_tools_variable_is_no_warning(name, monkeypatch, captured, capsys):
    monkeypatch.setenv(name, "1")
    cli.main(["serve"])
    assert "warning" not in capsys.readouterr().err


def test_every_variable_that_is_not_a_setting_is_read_where_the_list_says():
    """NOT_SETTINGS names each variable's reader: it must still read it (or the entry goes)."""
    for name, where in NOT_SETTINGS.items():
        assert name in (REPO / where).read_text(), f"{name} is not in {where}; drop it from NOT_SETTINGS"


def test_every_variable_the_project_reads_is_a_setting_or_listed():
    """The other way: a DWSERVE_* variable read by code or a compose file (os.environ, ${...})
    and not a setting is in NOT_SETTINGS, or `dwserve serve` would warn about it."""
    settings = {"DWSERVE_" + f.upper() for f in Settings.model_fields}
    reads = re.compile(r"""environ(?:\.get)?[\[(]\s*["'](DWSERVE_\w+)|\$\{(DWSERVE_\w+)""")
    read = set()
    for path in [*REPO.glob("docker/*"), *REPO.glob("deploy/**/*.y*ml"), *REPO.glob("[mstbd]*/**/*.py")]:
        if ".venv" not in path.parts and path.is_file():
            read |= {a or b for a, b in reads.findall(path.read_text(errors="replace"))}
    assert "DWSERVE_AUTO_COMPILED" in read and "DWSERVE_CPUSET_BEFORE" in read   # the scan finds readers
    assert read - settings <= set(NOT_SETTINGS), sorted(read - settings - set(NOT_SETTINGS))


def test_unknown_variables_ignores_other_prefixes():
    assert unknown_variables({"PATH": "/bin", "DWSERVEX": "1", "DWSERVE_PORT": "1"}) == []
