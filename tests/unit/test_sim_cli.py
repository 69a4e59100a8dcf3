"""`dropdoc sim` as an operator breaks it: misspelt names, what-ifs that are wrong, absurd
numbers, pages that cannot be written - each one line, before any simulating - and the
HTML page's charts, which must not mislead."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner

from dropdoc.cli import main
from dropdoc.sim import SimParams, SimParamsError, simulate
from dropdoc.sim.render import render_html


def run(*args: str):
    return CliRunner().invoke(main, ["sim", *args])


def one_line_error(result, message: str) -> None:
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropdoc: ") and message in lines[0], result.output


@pytest.mark.parametrize("key, suggestion", [("somaxcon", "did you mean somaxconn?"),
                                             ("netdev_max_backlg", "did you mean netdev_max_backlog?"),
                                             ("zzzz", "(see `dropdoc sim --list-params`)")])
def test_an_unknown_name_suggests_the_closest(key, suggestion):
    one_line_error(run("--set", f"{key}=1"), suggestion)
    with pytest.raises(SimParamsError, match=re.escape(suggestion)):
        SimParams.from_dict({key: 1})


def test_a_bad_what_if_is_refused_before_the_first_run(tmp_path):
    # the first simulation ran (seconds of it) before `--what-if somaxcon=1024` was found unknown
    started = time.monotonic()
    one_line_error(run("--what-if", "somaxcon=1024", "--conn-rate", "1000", "--seconds", "600"),
                   "--what-if: unknown parameter 'somaxcon' (did you mean somaxconn?")
    one_line_error(run("--what-if", "somaxconn=-5", "--seconds", "600"), "--what-if: somaxconn: -5 is below")
    assert time.monotonic() - started < 5
    scenario = tmp_path / "s.toml"
    scenario.write_text("conn_rate = 10\n[what_if]\nsomaxcon = 5\n")
    one_line_error(run(str(scenario)), f"{scenario}: [what_if] unknown parameter 'somaxcon'")


@pytest.mark.parametrize("content, message", [
    ('seconds = "x"', "seconds: expected a number of seconds"),   # the file was not named
    ("seconds = 0", "seconds: expected a positive number"),
    ("dt = -1", "dt: expected a positive number"),
])
def test_run_settings_in_a_file_name_the_file(tmp_path, content, message):
    scenario = tmp_path / "s.toml"
    scenario.write_text(content + "\n")
    one_line_error(run(str(scenario)), f"{scenario}: {message}")


def test_a_file_that_is_not_text_is_one_line(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_bytes(b"\xff\xfe\x00x")
    one_line_error(run(str(scenario)), "not valid TOML")


@pytest.mark.parametrize("args, message", [
    (("--conn-rate", "1e300"), "conn_rate: 1e+300 is above the maximum 1e+09"),   # 300-digit tables before
    (("--burst-peak", "1e300", "--burst-length-s", "0.1"), "burst_peak: 1e+300 is above the maximum"),
    (("--udp-total", "1e20"), "udp_total: 1e+20 is above the maximum"),
    (("--conn-rate", "nan"), "conn_rate: expected a finite number"),
    (("--conn-rate", "-1"), "conn_rate: -1 is below the minimum 0"),
    (("--dt", "2", "--seconds", "1"), "dt: a step of 2 s is longer than the 1 s simulated"),  # ran 10 s instead
])
def test_absurd_numbers_are_one_line(args, message):
    one_line_error(run(*args), message)


def test_an_unwritable_page_is_said_before_simulating(tmp_path):
    started = time.monotonic()
    one_line_error(run("--html", str(tmp_path / "missing" / "s.html"), "--conn-rate", "1000", "--seconds", "600"),
                   f"cannot write {tmp_path / 'missing' / 's.html'}: directory {tmp_path / 'missing'} does not exist")
    assert time.monotonic() - started < 5
    result = run("--html", "-")
    assert result.exit_code == 2 and "--html needs a file name" in result.output


def test_the_page_is_written_whole_and_nothing_else(tmp_path):
    page = tmp_path / "s.html"
    result = run("--conn-rate", "400", "--accept-rate", "100", "--somaxconn", "16", "--seconds", "1",
                 "--html", str(page))
    assert result.exit_code == 0, result.output
    assert page.read_text().rstrip().endswith("</html>") and sorted(p.name for p in tmp_path.iterdir()) == ["s.html"]


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, re.S)


def test_occupancy_is_on_a_0_to_100_axis_and_drops_share_one_scale():
    # the after chart of a fixed queue peaked at 3 % and was drawn 0-3 %: it looked as full as before
    before = simulate(SimParams(conn_rate=400, accept_rate=100, somaxconn=16), 1.0)
    after = simulate(SimParams(conn_rate=400, accept_rate=100, somaxconn=1024, app_backlog=1024), 1.0)
    page = render_html(before, after, {"somaxconn": 1024})
    occupancy = [svg for svg in _svgs(page) if "queue occupancy" in svg]
    assert len(occupancy) == 2
    for svg in occupancy:
        assert ">100</text>" in svg and "simulated time (s)" in svg
    faster = simulate(SimParams(conn_rate=400, accept_rate=390, somaxconn=16), 1.0)   # peaks ~1.5k vs ~2.3k
    page = render_html(before, faster, {"accept_rate": 390})
    drops = [svg for svg in _svgs(page) if "drops per second" in svg]
    assert len(drops) == 2   # both still drop: the two charts end at the same top tick
    tops = [re.findall(r'text-anchor="end" fill="#64748b">([^<]+)</text>', svg)[-1] for svg in drops]
    assert tops[0] == tops[1]
