"""`dwserve loadtest` argument checks that must fail before any load: an --out whose folder
cannot be written (the report is written after the whole run, minutes later), and a target
URL that does not parse (the error names the target and the form expected)."""
import pytest

from service.loadtest import parse_args


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_out_under_a_file_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _usage_error(["--url", "http://127.0.0.1:9", "--out", str(blocker / "report")], capsys)
    assert "--out" in line and "writable" in line, line


def test_out_in_a_new_folder_is_accepted(tmp_path):
    args = parse_args(["--url", "http://127.0.0.1:9", "--out", str(tmp_path / "new" / "report")])
    assert args.out == str(tmp_path / "new" / "report")


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:notaport"])
def test_unparsable_target_names_it(url, capsys):
    line = _usage_error(["--url", url], capsys)
    assert repr(url) in line and "http://HOST:PORT" in line, line
