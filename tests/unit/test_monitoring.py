"""The shipped alert rules, their promtool unit tests and the Grafana dashboard (monitoring/).

promtool (Debian's prometheus package) checks and unit-tests the rules for real; the rest
checks what promtool cannot: that the files are the ones generated from the catalogue,
that thresholds and runbook links follow it, that every expression uses only the metrics
`dropdoc serve` exports, and that the dashboard is complete and importable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropdoc.rules.engine import load_rules

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMTOOL_MISSING = ("promtool not found: install Debian's prometheus package "
                    "(apt-get install --no-install-recommends prometheus, or scripts/install.sh --test)")


sys.path.insert(0, str(MONITORING))  # monitoring/dropdoc_mixin: the generator of the shipped files
from dropdoc_mixin import cases, contract, outputs  # noqa: E402
from dropdoc_mixin import rules as mixin_rules  # noqa: E402

CAUSE_ALERTS = {"DropdocListenOverflow": "tcp.listen_overflow", "DropdocSynQueueFull": "tcp.syn_queue_full",
                "DropdocUdpReceiveBufferFull": "udp.rcvbuf_full", "DropdocSoftnetBacklogDrop": "cpu.backlog_drop",
                "DropdocConntrackTableFull": "conntrack.table_full", "DropdocQdiscDrop": "qdisc.drop",
                "DropdocNicRxMissed": "nic.rx_missed"}
META_ALERTS = {"DropdocConntrackTableNearlyFull", "DropdocSourceDown", "DropdocTraceLostEvents",
               "DropdocExporterDown"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail(PROMTOOL_MISSING)
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=MONITORING)


def alert_rules() -> list[dict]:
    return [rule for group in mixin_rules.build_rules()["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((MONITORING / "dashboard.json").read_text(encoding="utf-8"))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


# ---------------------------------------------------------------- the files themselves

def test_shipped_files_are_the_generated_ones():
    for name, text in outputs().items():
        shipped = (MONITORING / name).read_text(encoding="utf-8")
        assert shipped == text, f"monitoring/{name} is out of date: run python monitoring/generate.py"


def test_promtool_check_rules_is_clean():
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path):
    # The unit tests must fail when a `for:` or a threshold changes: they test behaviour.
    broken = (MONITORING / "alerts.yml").read_text(encoding="utf-8")
    broken = broken.replace("for: 10m", "for: 4m", 1)
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    shutil.copy(MONITORING / "alerts_test.yml", tmp_path / "alerts_test.yml")
    if shutil.which("promtool") is None:
        pytest.fail(PROMTOOL_MISSING)
    result = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert "DropdocListenOverflow" in result.stdout + result.stderr


# ---------------------------------------------------------------- rules follow the catalogue

def test_every_expected_alert_exists_with_its_severities():
    severities: dict[str, set[str]] = {}
    for rule in alert_rules():
        severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    assert set(severities) == set(CAUSE_ALERTS) | META_ALERTS
    for alert in CAUSE_ALERTS:
        assert severities[alert] == {"warning", "critical"}, alert


THRESHOLD = re.compile(r'finding="(?P<finding>[^"]+)"\}\[(?P<window>\w+)\]\)+ (?P<op>>=|>) (?P<value>[0-9.]+)$')


def test_thresholds_mirror_the_catalogue():
    catalogue = {rule.id: rule for rule in load_rules()}
    for rule in alert_rules():
        if rule["alert"] not in CAUSE_ALERTS:
            continue
        match = THRESHOLD.search(rule["expr"])
        assert match, rule["expr"]
        finding = catalogue[match["finding"]]
        assert match["finding"] == CAUSE_ALERTS[rule["alert"]] == rule["labels"]["finding"]
        value = float(match["value"])
        if rule["labels"]["severity"] == "critical":
            assert (match["op"], value) == (">=", finding.critical_per_s), rule["expr"]
        elif finding.warning_per_s == 0:
            assert (match["op"], value) == (">", 0), rule["expr"]  # any drop
        else:
            assert (match["op"], value) == (">=", finding.warning_per_s), rule["expr"]


def test_for_outlasts_the_window_so_a_single_burst_never_fires():
    # A burst keeps rate(x[w]) up for at most w: with for > w it cannot fire on its own.
    checked = 0
    for rule in alert_rules():
        window = re.search(r"\brate\([^\[]*\[(\d+[smh])\]", rule["expr"])
        if window:
            assert mixin_rules.seconds(rule["for"]) > mixin_rules.seconds(window[1]), rule["alert"]
            checked += 1
    assert checked == 2 * len(CAUSE_ALERTS) + 1  # both severities of each cause + lost events


def test_runbook_urls_point_at_existing_anchors():
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    readme = (MONITORING / "README.md").read_text(encoding="utf-8")
    readme_anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                      for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        page, anchor = url.split("#")
        if page == "docs/runbook.md":
            assert f'<a id="{anchor}"></a>' in runbook, url
        else:
            assert page == "monitoring/README.md" and anchor in readme_anchors, url


def test_runbook_sections_name_their_alerts():
    runbook = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r'<a id="([^"]+)"></a>\n(.*?)(?=<a id=|\Z)', runbook, re.S))
    for rule in alert_rules():
        page, anchor = rule["annotations"]["runbook_url"].split("#")
        if page == "docs/runbook.md":
            line = re.search(r"^Alert: (.+)$", sections[anchor], re.M)
            assert line and rule["alert"] in line[1].split(", "), (anchor, rule["alert"])


def test_annotations_name_the_rate_the_place_and_the_finding():
    for rule in alert_rules():
        summary = rule["annotations"]["summary"]
        assert "{{ $labels.instance }}" in summary, rule["alert"]
        if rule["alert"] in CAUSE_ALERTS:
            assert "{{ $value | humanize }} drops/s" in summary
            assert CAUSE_ALERTS[rule["alert"]] in summary
            assert "host-wide" in summary if rule["alert"] == "DropdocSoftnetBacklogDrop" \
                else "{{ $labels.netns }}" in summary


def test_promtool_cases_cover_every_alert_firing_and_silent():
    tests = cases.build_tests(mixin_rules.build_rules())["tests"]
    firing: dict[str, set[str]] = {}
    silent: dict[str, set[str]] = {}
    for group in tests:
        instances = {re.search(r'instance="([^"]+)"', s["series"])[1] for s in group["input_series"]}
        for check in group["alert_rule_test"]:
            fired = {a["exp_labels"]["instance"] for a in check["exp_alerts"]}
            firing.setdefault(check["alertname"], set()).update(fired)
            silent.setdefault(check["alertname"], set()).update(instances - fired)
    assert set(firing) == set(CAUSE_ALERTS) | META_ALERTS
    for alert in firing:
        assert firing[alert] and silent[alert], alert
    for alert in CAUSE_ALERTS:
        expected = {"at-critical", "intermittent", "scrape-gaps"}
        if alert != "DropdocSoftnetBacklogDrop":  # host-wide: no per-namespace case
            expected.add("host-namespace")
        assert expected <= firing[alert], alert
        never = {"single-burst", "single-drop", "counter-reset"}
        assert never <= silent[alert] and not never & firing[alert], alert


def expand(notation: str) -> list[float | None]:
    """promtool's series notation, as its docs define it: 'a+bxn' is n+1 values, '_xn' n gaps."""
    values: list[float | None] = []
    for token in notation.split():
        if token.startswith("_"):
            values += [None] * (int(token[2:]) if "x" in token else 1)
            continue
        match = re.fullmatch(r"(-?[0-9.e+]+?)([+-])([0-9.e+]+)x(\d+)", token)
        if match:
            start, sign, step, count = float(match[1]), match[2], float(match[3]), int(match[4])
            values += [start + (step if sign == "+" else -step) * k for k in range(count + 1)]
        else:
            values.append(float(token))
    return values


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 50).map(float), st.sampled_from([0.5, 7.5, 1e6])),
                max_size=30))
def test_promtool_series_notation_round_trips(values):
    assert expand(cases.values_text(values)) == values


def test_humanize_like_prometheus():
    assert cases.go_humanize(0.95) == "950m" and cases.go_humanize(4.0333) == "4.033"
    assert cases.go_humanize(2500) == "2.5k" and cases.go_humanize(0) == "0" and cases.go_humanize(1) == "1"


# ---------------------------------------------------------------- metrics of the contract only

def test_reference_extraction():
    metrics, labels = contract.references(
        'max without (netns) (rate(dropdoc_drops_total{finding="a.b", instance=~"$instance"}[$__rate_interval])) '
        '/ on (instance) group_left (nodename) node_uname_info * 1e3 or label_replace(up == 0, "x", "y", "", "")')
    assert metrics == {"dropdoc_drops_total", "node_uname_info", "up"}
    assert labels == {"netns", "finding", "instance", "nodename"}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_expressions_use_only_the_metric_contract(source):
    exprs = [r["expr"] for r in alert_rules()] if source == "rules" else dashboard_exprs()
    assert exprs
    for expr in exprs:
        metrics, labels = contract.references(expr)
        assert metrics, expr
        assert metrics <= contract.CONTRACT_METRICS | contract.PROMETHEUS_METRICS, (expr, metrics)
        assert labels <= contract.CONTRACT_LABELS, (expr, labels)


# ---------------------------------------------------------------- the Grafana dashboard

def test_dashboard_schema_basics():
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("instance", "netns"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"  # .* includes netns=""
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        assert p["type"] in {"timeseries", "stat", "state-timeline", "table", "bargauge"} and p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"panel {p['title']} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}" and t["expr"].strip()


def test_every_dashboard_selector_follows_the_instance_variable():
    for expr in dashboard_exprs():
        for selector in re.findall(r"\b\w+\{[^}]*\}", expr):
            assert 'instance=~"$instance"' in selector, selector


def test_dashboard_has_a_panel_per_cause_and_health_cost_and_trace():
    panels = dashboard()["panels"]
    for finding in CAUSE_ALERTS.values():
        owning = [p for p in panels if any(f'finding="{finding}"' in t["expr"] for t in p["targets"])]
        assert len(owning) == 1 and finding in owning[0]["title"], finding

    def panel_with(metric: str) -> dict:
        found = [p for p in panels if any(metric in contract.references(t["expr"])[0] for t in p["targets"])]
        assert found, metric
        return found[0]

    assert panel_with("dropdoc_source_up") is panel_with("dropdoc_trace_up")  # source health
    assert panel_with("dropdoc_source_up") is panel_with("dropdoc_source_unavailable")
    assert panel_with("dropdoc_scrape_duration_seconds") is panel_with("dropdoc_scrape_cpu_seconds")  # cost
    reasons = panel_with("dropdoc_trace_drops_total")
    assert any("by (reason)" in t["expr"] for t in reasons["targets"])
    every_metric = set().union(*(contract.references(e)[0] for e in dashboard_exprs()))
    assert every_metric == contract.CONTRACT_METRICS | contract.PROMETHEUS_METRICS  # nothing exported goes unseen


def test_the_mixins_contract_is_what_the_exporter_exports():
    from dropdoc.export.prometheus import METRICS

    assert contract.CONTRACT_METRICS == set(METRICS)


def test_source_down_needs_no_memory_of_the_source_being_up():
    # The exporter leaves out sources the host lacks (and trace_up without --trace), so the
    # alert is a plain "== 0 for 10m": no max_over_time look-back that resolves after an hour.
    (rule,) = [r for r in alert_rules() if r["alert"] == "DropdocSourceDown"]
    assert "over_time" not in rule["expr"] and "dropdoc_source_unavailable" not in rule["expr"]
