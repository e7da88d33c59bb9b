"""`dwserve bench ptx --out DIR`: a folder that cannot be created or written is a usage error
(exit 2) before any kernel is compiled, as every other benchmark's --out (cli_args.check_out);
it was found only at the end, when write_results failed after compiling every case."""
import pytest

ptx = pytest.importorskip("benchmarks.ptx")


def test_uncreatable_out_is_a_usage_error_before_any_work(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    compiled = []
    monkeypatch.setattr(ptx, "run_case", lambda case: compiled.append(case.name) or pytest.fail("compiled"))
    with pytest.raises(SystemExit) as exc:
        ptx.main(["--out", str(blocker / "results")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and compiled == [], err
    assert "dwserve bench ptx: error: --out" in err and "writable folder" in err, err
