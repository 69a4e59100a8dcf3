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


# -- found by trying to break it -----------------------------------------------------------

import copy  # noqa: E402
import json  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from dropdoc.render.output import OutputError, write_text  # noqa: E402

DROPDOC = [sys.executable, "-m", "dropdoc.cli"]


def test_a_pipe_or_device_is_written_to_not_replaced(tmp_path):
    # `-o /dev/full` as root replaced the device node with a regular file (and /dev/null,
    # /dev/stdout would have gone the same way): a FIFO and a link to it stand in here
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "stdout"
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_text(str(link), "report\n")
    reader.join(timeout=10)
    assert got == [b"report\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["fifo", "stdout"]   # no temporary file left


def test_a_symlink_to_a_file_keeps_pointing_at_it(tmp_path):
    (tmp_path / "real.md").write_text("old")
    (tmp_path / "link.md").symlink_to("real.md")
    result = run(LAB, "-o", str(tmp_path / "link.md"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link.md").is_symlink() and (tmp_path / "real.md").read_text().startswith("# dropdoc report")


def test_output_places_that_cannot_be_written_are_one_line(tmp_path):
    result = run(LAB, "-o", str(tmp_path / "missing" / "r.html"))
    assert result.stderr == f"dropdoc: cannot write {tmp_path / 'missing' / 'r.html'}: directory {tmp_path / 'missing'} does not exist\n"
    with pytest.raises(OutputError, match="is a directory"):
        write_text(str(tmp_path), "x")


def _cli(*args, **popen):
    return subprocess.run([*DROPDOC, "report", *args], capture_output="stdout" not in popen, text=True,
                          timeout=60, **popen)


def test_stdout_that_is_closed_or_full_is_one_line():
    # `dropdoc report x.json >&-` died with AttributeError: 'NoneType' object has no attribute 'write'
    closed = subprocess.run([*DROPDOC, "report", LAB], stderr=subprocess.PIPE, text=True, timeout=60,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 3 and closed.stderr == "dropdoc: cannot write to standard output: it is closed\n"
    with open("/dev/full", "w") as full:
        result = subprocess.run([*DROPDOC, "report", LAB], stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 3   # it said "exit 0" with nothing written
    assert result.stderr == "dropdoc: cannot write to standard output: No space left on device\n"


def test_a_reader_that_goes_away_ends_it_quietly(tmp_path):
    document = json.loads(Path(LAB).read_text())["diagnosis"]
    document["findings"] = [copy.deepcopy(document["findings"][0]) for _ in range(27)]   # > a pipe's 64 KiB
    big = tmp_path / "big.json"
    big.write_text(json.dumps(document))
    process = subprocess.Popen([*DROPDOC, "report", str(big), "--format", "html"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.read(10)
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141 and err == b""


def test_tz_names_offsets_and_errors(tmp_path):
    history = str(tmp_path / "h.db")
    with History(history) as h:
        h.append(Interval(wall=1_795_660_000.0, seconds=1.0, drops={"tcp.listen_overflow": 10}))
    assert "period: 2026-11-26 03:26:39 +01:00 to 2026-11-26 03:26:40 +01:00" in run(history, "--tz", "Europe/Paris").stdout
    assert "period: 2026-11-26 02:26:39 UTC" in run(history, "--tz", "UTC").stdout
    for bad, message in (("Mars/Base", "unknown time zone 'Mars/Base'"), ("+25:00", "out of range")):
        result = run(LAB, "--tz", bad)
        assert result.exit_code == 3 and message in result.stderr and result.stderr.count("\n") == 1


def test_since_that_leaves_nothing_says_so_not_empty(tmp_path):
    # `--since 1h` on a history of yesterday said "holds no samples yet"
    history = str(tmp_path / "h.db")
    two_hours_ago = time.time() - 7200
    with History(history) as h:
        for i in range(3):
            h.append(Interval(wall=two_hours_ago + i, seconds=1.0, drops={"tcp.listen_overflow": 10}))
    text = run(history, "--since", "1h", "--tz", "UTC").stdout
    assert "holds no samples since" in text and "(--since), only 3 older ones." in text
    assert "holds no samples yet" not in text
