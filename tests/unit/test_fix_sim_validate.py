"""The pure parts of the simulator's validation against the lab (dropdoc.sim.validate): the
error, parameters from scenario definitions and load summaries, /proc/stat, the table.
The lab runs themselves are in tests/functional/test_sim_validation.py."""

from __future__ import annotations

import pytest

from dropdoc.lab.scenarios import get
from dropdoc.sim import validate
from dropdoc.sim.validate import LabRun, Row

PROC_STAT = """cpu  1000 0 500 90000 10 0 40 5 0 0
cpu0 600 0 300 45000 5 0 10 2 0 0
cpu1 400 0 200 45000 5 0 30 3 0 0
intr 12345
"""


def row(measured, predicted, scenario="udp-rcvbuf") -> Row:
    return Row(scenario, validate.FINDINGS[scenario], measured, predicted, 3.5, {"udp_rate": 1000.0},
               {"udp_rate": "sender summary"})


@pytest.mark.parametrize("measured,predicted,error", [(800.0, 600.0, -0.25), (200.0, 250.0, 0.25),
                                                      (0.0, 5.0, None), (None, 5.0, None), (5.0, None, None)])
def test_error_is_relative_to_measured_and_none_when_unknown(measured, predicted, error):
    got = row(measured, predicted).error
    assert got == (pytest.approx(error) if error is not None else None)


def test_program_args_of_a_scenario_definition():
    scenario = get("listen-overflow")
    server = validate.program_args(scenario, "dropdoc.lab.server")[0]
    client = validate.program_args(scenario, "dropdoc.lab.client")[0]
    assert (server["backlog"], server["accept-rate"]) == ("1024", "100")
    assert (client["rate"], client["connections"]) == ("400", "400")
    assert len(validate.program_args(get("cpu-backlog"), "dropdoc.lab.udp_burst")) == 2


def test_cpu_times_parses_per_cpu_lines_in_seconds():
    times = validate.cpu_times(PROC_STAT)
    assert set(times) == {"cpu0", "cpu1"}                   # not the "cpu" total line
    hz = validate.os.sysconf("SC_CLK_TCK")
    assert times["cpu1"]["softirq"] == pytest.approx(30 / hz) and times["cpu1"]["steal"] == pytest.approx(3 / hz)


def lab_run(cpu1_softirq: float, processed: int | None) -> LabRun:
    return LabRun("cpu-backlog", "cpu.backlog_drop", 3.0, 900, {"softnet.cpu1.processed": processed},
                  {}, {}, cpu={"cpu1": {"softirq": cpu1_softirq, "steal": 0.0}})


def test_softirq_cost_per_packet_and_too_few_ticks():
    assert validate.softirq_cost_us(lab_run(0.16, 32000), 1) == pytest.approx(5.0)
    assert validate.softirq_cost_us(lab_run(0.01, 32000), 1) is None   # one tick says nothing
    assert validate.softirq_cost_us(lab_run(0.16, None), 1) is None


def test_backlog_rate_spans_senders_that_do_not_overlap():
    run = lab_run(0.16, 32000)
    run.load = {"programs": [{"sent": 20000, "seconds": 0.1, "started_at": 100.0},
                             {"sent": 20000, "seconds": 0.1, "started_at": 100.1}]}
    params, sources = validate._backlog_params(run, get("cpu-backlog"))
    assert params["udp_rate"] == pytest.approx(40000 / 0.2)     # not 40000 / 0.1
    assert params["rx_cost_us"] == pytest.approx(5.0) and "last end - first start" in sources["udp_rate"]


def test_markdown_rows_and_spread():
    rows = [row(800.0, 600.0), row(800.0, 840.0), row(100.0, 300.0, "cpu-backlog")]
    table = validate.markdown(rows)
    assert "| udp-rcvbuf | `udp.rcvbuf_full` | 800.0 | 600.0 | -25 % | udp_rate=1000 |" in table
    assert "| udp-rcvbuf | 2 | 800-800 | 600-840 | -25 % .. +5 % | 2/2 |" in table
    assert "| cpu-backlog | 1 | 100-100 | 300-300 | +200 % .. +200 % | 0/1 |" in table


def test_unknown_scenario_is_a_one_line_error():
    with pytest.raises(validate.ValidationError, match="no validation for scenario 'healthy'"):
        validate.run_lab("healthy")
