"""`dropdoc report`: the format from the extension, stdout, errors as one line, and a
failed write leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from dropdoc.cli import main
from dropdoc.history import History
from dropdoc.meter import Interval

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"
LAB = str(FIXTURES / "lab-listen-overflow.json")


def run(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def test_format_follows_the_extension(tmp_path):
    for name, marker in (("r.html", "<!DOCTYPE html>"), ("r.HTM", "<!DOCTYPE html>"), ("r.md", "# dropdoc report")):
        result = run(LAB, "-o", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        assert (tmp_path / name).read_text().startswith(marker)
        assert f"wrote {tmp_path / name}" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["r.HTM", "r.html", "r.md"]  # no temporary files left


def test_stdout_is_markdown_unless_asked_for_html():
    assert run(LAB).stdout.startswith("# dropdoc report: vm")
    assert run(LAB, "--format", "html").stdout.startswith("<!DOCTYPE html>")


def test_a_diagnosis_and_a_history_make_one_report(tmp_path):
    history = str(tmp_path / "h.db")
    with History(history) as h:
        h.set_meta(hostname="vm", netns="srv")
        for i in range(1, 4):
            h.append(Interval(wall=1_795_660_000.0 + i, seconds=1.0, drops={"tcp.listen_overflow": 10 * i}))
    result = run(LAB, history, "-o", str(tmp_path / "r.html"), "--title", "incident 42")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert "<title>incident 42</title>" in page
    assert page.index("Lab listen-overflow") < page.index("Drop rate per layer")
    assert "1 diagnosis(es), 1 history(ies)" in result.stderr


def test_an_unknown_extension_is_a_usage_error(tmp_path):
    result = run(LAB, "-o", str(tmp_path / "r.txt"))
    assert result.exit_code == 2 and "name it .html or .md, or pass --format" in result.stderr
    assert run(LAB, "-o", str(tmp_path / "r.txt"), "--format", "markdown").exit_code == 0


def test_bad_input_is_one_line_and_exit_3(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/else"}')
    result = run(LAB, str(bad), "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [f"dropdoc: {bad}: schema 'something/else', this dropdoc reads 'dropdoc.diagnosis/1'"]
    assert not (tmp_path / "r.html").exists()


def test_an_unwritable_output_is_one_line_and_leaves_nothing(tmp_path):
    result = run(LAB, "-o", str(tmp_path / "missing" / "r.html"))
    assert result.exit_code == 3
    assert result.stderr.startswith("dropdoc: cannot write") and result.stderr.count("\n") == 1
    target = tmp_path / "out.html"
    target.mkdir()  # replacing a directory fails after the temporary file was written
    result = run(LAB, "-o", str(target))
    assert result.exit_code == 3 and "cannot write" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["out.html"]


def test_since_needs_a_duration(tmp_path):
    result = run(LAB, "--since", "soon")
    assert result.exit_code == 3 and "not a duration" in result.stderr
