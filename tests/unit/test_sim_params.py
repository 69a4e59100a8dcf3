"""Scenario parameters: parsing, validation, one-line errors; the sim command's input handling."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dropdoc.cli import main
from dropdoc.sim import SimParams, SimParamsError, describe
from dropdoc.sim.params import _parse_number


def test_defaults_describe_a_typical_server_and_every_field_is_documented():
    p = SimParams()
    assert p.somaxconn == 4096 and p.netdev_max_backlog == 1000 and p.netdev_budget == 300
    rows = describe()
    assert len(rows) == len(p.to_dict())
    for row in rows:
        assert row["help"], row["name"]
        assert "unit" in row


def test_round_trip_through_dict():
    p = SimParams(udp_rate=1234.5, somaxconn=16, accept_rate=None, rx_path="veth", poisson=False)
    assert SimParams.from_dict(p.to_dict()) == p
    assert json.loads(json.dumps(p.to_dict())) == p.to_dict()


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1e6", 1_000_000), ("250k", 250_000), ("1M", 1_000_000),
                                         ("64Ki", 65536), ("100mbit", 100_000_000), ("0.5", 0.5), ("2_000", 2000)])
def test_numbers_with_suffixes(text, value):
    assert _parse_number(text) == value


def test_strings_from_flags_are_parsed_per_field():
    p = SimParams.from_dict({"udp-rate": "250k", "poisson": "off", "accept_rate": "none", "rx_path": "veth",
                             "somaxconn": "1024"})
    assert p.udp_rate == 250_000 and p.poisson is False and p.accept_rate is None
    assert p.rx_path == "veth" and p.somaxconn == 1024 and isinstance(p.somaxconn, int)


@pytest.mark.parametrize("values, message", [
    ({"somaxconn": -1}, "somaxconn: -1 is below the minimum"),
    ({"somaxconn": 1.5}, "somaxconn: expected a whole number"),
    ({"udp_rate": "fast"}, "udp_rate: expected a number"),
    ({"udp_rate": float("inf")}, "udp_rate: expected a finite number"),
    ({"poisson": "maybe"}, "poisson: expected true or false"),
    ({"rx_path": "tap"}, "rx_path: 'tap' is not one of nic, veth"),
    ({"somaxconn": None}, "somaxconn: a value is required"),
    ({"no_such": 1}, "unknown parameter 'no_such'"),
    ({"softirq_share": 2}, "softirq_share: 2 is above the maximum"),
    ({"cpus": True}, "cpus: expected a number"),
])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(SimParamsError) as info:
        SimParams.from_dict(values)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_replace_validates():
    with pytest.raises(SimParamsError):
        SimParams().replace(netdev_budget=0)
    assert SimParams().replace(netdev_budget="600").netdev_budget == 600


# ---- the command's input handling (pure: no kernel) ------------------------------------------

def run(args, **kwargs):
    return CliRunner().invoke(main, ["sim", *args], **kwargs)


def test_scenario_file_flags_override_and_json_output(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('seconds = 2\nrx_path = "veth"\nudp_rate = 1000\nread_rate = 400\n'
                        'udp_rcvbuf = 4096\n[what_if]\nudp_rcvbuf = 1048576\nrcvbuf_force = true\n')
    result = run([str(scenario), "--read-rate", "500", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema"] == "dropdoc.sim.compare/1"
    assert doc["before"]["params"]["read_rate"] == 500         # the flag won over the file
    assert doc["before"]["seconds"] == pytest.approx(2.0)
    assert doc["before"]["drops_per_s"]["udp.rcvbuf_full"] > 100
    assert doc["after"]["params"]["udp_rcvbuf"] == 1048576
    assert doc["changes"] == {"udp_rcvbuf": 1048576, "rcvbuf_force": True}


def test_text_output_names_the_bottleneck_and_writes_html(tmp_path):
    out = tmp_path / "sim.html"
    result = run(["--rx-path", "veth", "--conn-rate", "400", "--conn-total", "400", "--somaxconn", "16",
                  "--app-backlog", "1024", "--accept-rate", "100", "--seconds", "5",
                  "--what-if", "somaxconn=1024", "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert "bottleneck: tcp.listen_overflow" in result.output
    assert "what-if: somaxconn=1024" in result.output
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 3
    assert "tcp.listen_overflow" in page


def test_size_option_reports_the_smallest_queue():
    result = run(["--rx-path", "veth", "--udp-rate", "1000", "--burst-peak", "2", "--burst-length-s", "0.1",
                  "--burst-interval-s", "100", "--burst-start-s", "0.5", "--read-rate", "1000",
                  "--udp-truesize", "1000", "--udp-rcvbuf", "20000", "--rcvbuf-force", "true", "--poisson", "false",
                  "--seconds", "2", "--size", "udp.rcvbuf_full", "--format", "json"])
    assert result.exit_code == 0, result.output
    sizing = json.loads(result.output)["sizing"]
    assert 100 <= sizing["slots"] <= 101


@pytest.mark.parametrize("content, message", [
    ("udp_rate = [", "not valid TOML"),
    ("udp_rate = 'fast'", "udp_rate: expected a number"),
    ("no_such_knob = 3", "unknown parameter 'no_such_knob'"),
    ("what_if = 3", "[what_if] must be a table"),
])
def test_bad_scenario_file_is_one_line_error(tmp_path, content, message):
    scenario = tmp_path / "bad.toml"
    scenario.write_text(content + "\n")
    result = run([str(scenario)])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropdoc: ") and message in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["/nonexistent/scenario.toml"], "No such file"),
    (["--what-if", "somaxconn"], "expected key=value"),
    (["--seconds", "-2"], "seconds: expected a positive number"),
    (["--set", "bogus=1"], "unknown parameter 'bogus'"),
    (["--size", "ip.no_route"], "no queue to size"),
    (["--udp-rate", "lots"], "udp_rate: expected a number"),
])
def test_bad_flags_are_one_line_errors(args, message):
    result = run(args)
    assert result.exit_code == 3, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_list_params():
    result = run(["--list-params"])
    assert result.exit_code == 0
    assert "netdev_max_backlog" in result.output and "somaxconn" in result.output
