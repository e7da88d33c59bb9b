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


@pytest.mark.parametrize("name,md", [pytest.param("run-0.5s", "run-0.5s.md", id="dot-in-name"),
                                     pytest.param("run.md", "run.md", id="md-suffix-given")])
def test_report_is_out_plus_md_even_with_a_dot_in_the_name(name, md, tmp_path):
    """--out is a path without suffix: OUT.md and OUT.png. A dot in the name (a duration, a
    version) is part of it, not a suffix to replace: --out run-0.5s wrote run-0.md."""
    pytest.importorskip("uvicorn")
    from service import loadtest
    from tests.server_process import fake_server_cmd, server_process
    with server_process(fake_server_cmd(delay_s=0.002), timeout=60) as (url, _):
        loadtest.main(["--url", url, "--duration", "0.5", "--warmup", "0", "--concurrency", "1",
                       "--tokens", "4", "--out", str(tmp_path / name)])
    stem = md.removesuffix(".md")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.md", f"{stem}.png"]
    assert f"]({stem}.png)" in (tmp_path / md).read_text()
