"""A real Prometheus scrapes a real `dropdoc serve` during the listen-overflow lab scenario,
evaluates the shipped alert rules and fires DropdocListenOverflow for the lab namespace.

The one difference from monitoring/alerts.yml: every `for:` is shortened to 1s, so the
test takes seconds rather than 10 minutes (`for:` itself is tested by promtool in
tests/unit/test_monitoring.py). Both servers listen on 127.0.0.1 only, on free ports, and
are stopped by PID; their files live in a temporary directory that is removed."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest

from dropdoc.lab import scenarios

from .conftest import DROPDOC, requires_root

pytestmark = [pytest.mark.functional, requires_root]

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
ALERT = "DropdocListenOverflow"
SHORT_FOR = "1s"
MAX_LOADS = 6            # the scenario's load lasts ~2-4 s; restarted until the critical rate is reached
ALERT_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shortened_for(rules: str) -> str:
    """The shipped rules with every `for:` set to SHORT_FOR - and nothing else changed."""
    out = re.sub(r"^(\s+for: )\S+$", rf"\g<1>{SHORT_FOR}", rules, flags=re.M)
    changed = [new for old, new in zip(rules.splitlines(), out.splitlines()) if old != new]
    assert changed and all(line.strip() == f"for: {SHORT_FOR}" for line in changed)
    assert len(out.splitlines()) == len(rules.splitlines())
    return out


def stop(process: subprocess.Popen) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def get(url: str, params: dict | None = None, timeout: float = 5.0) -> bytes:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def api(base: str, path: str, **params) -> dict:
    try:
        body = json.loads(get(f"{base}/api/v1/{path}", params))
    except urllib.error.HTTPError as exc:  # 400 with an error body for a bad expression
        body = json.loads(exc.read() or b"{}")
    return body


def wait_until(check, timeout: float, what: str, logs: list[Path], interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError as exc:  # not listening yet
            last_error = exc
        time.sleep(interval)
    tails = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}" for log in logs if log.exists())
    raise AssertionError(f"{what}: not within {timeout:g} s (last error: {last_error})\n{tails}")


def spawn(stack: ExitStack, command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stack.callback(stop, process)
    return process


def prometheus_config(workdir: Path, exporter_port: int) -> Path:
    (workdir / "alerts.yml").write_text(shortened_for((MONITORING / "alerts.yml").read_text(encoding="utf-8")))
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n  - job_name: dropdoc\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n")
    return config


def dashboard_queries(netns: str) -> list[tuple[str, str]]:
    """(panel title, expr) with Grafana's variables replaced the way Grafana would."""
    board = json.loads((MONITORING / "dashboard.json").read_text(encoding="utf-8"))
    values = {"$__rate_interval": "1m", "$instance": ".*", "$netns": netns}  # lab names have no regex metacharacters
    queries = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in values.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            queries.append((panel["title"], expr))
    return queries


def firing(base: str, netns: str) -> list[dict]:
    alerts = api(base, "alerts")["data"]["alerts"]
    return [a for a in alerts if a["state"] == "firing" and a["labels"].get("netns") == netns]


def test_listen_overflow_fires_in_a_real_prometheus(no_leftovers):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus not found: install Debian's prometheus package "
                    "(apt-get install --no-install-recommends prometheus, or scripts/install.sh --test)")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dropdoc-prometheus-")))
        lab = stack.enter_context(scenarios.running("listen-overflow"))
        serve_log, prom_log = workdir / "serve.log", workdir / "prometheus.log"
        logs = [serve_log, prom_log]

        exporter_port = free_port()
        spawn(stack, [*DROPDOC, "serve", "--netns", lab.netns, "--listen", f"127.0.0.1:{exporter_port}"], serve_log)
        wait_until(lambda: get(f"http://127.0.0.1:{exporter_port}/metrics"), 20, "dropdoc serve answering", logs)

        prom_port = free_port()
        base = f"http://127.0.0.1:{prom_port}"
        spawn(stack, [prometheus, f"--config.file={prometheus_config(workdir, exporter_port)}",
                      f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                      "--log.level=warn"], prom_log)
        wait_until(lambda: get(f"{base}/-/ready"), 20, "prometheus ready", logs)

        # Two scrapes of the lab's counter before the load: rate() then sees the increase.
        selector = f'dropdoc_drops_total{{finding="tcp.listen_overflow", netns="{lab.netns}"}}'
        wait_until(lambda: any(float(r["value"][1]) >= 2 for r in
                               api(base, "query", query=f"count_over_time({selector}[1m])")["data"]["result"]),
                   20, "two scrapes of the lab namespace", logs)

        time.sleep(2.5)  # a few rule evaluations over the quiet lab: nothing may fire (for: 1s)
        assert not firing(base, lab.netns), firing(base, lab.netns)

        started = time.monotonic()
        lab.start_load()
        loads = 1

        def critical_fired():
            nonlocal loads
            fired = [a for a in firing(base, lab.netns)
                     if a["labels"]["alertname"] == ALERT and a["labels"]["severity"] == "critical"]
            if not fired and loads < MAX_LOADS and all(p.poll() is not None for p in lab.loads):
                lab.wait_load()
                lab.start_load()
                loads += 1
            return fired

        alert = wait_until(critical_fired, ALERT_TIMEOUT, f"{ALERT} firing for {lab.netns}", logs, 0.5)[0]
        print(f"\n{ALERT} (critical) firing {time.monotonic() - started:.1f} s after the load started "
              f"({loads} load run(s)): {alert['annotations']['summary']}")
        drops = api(base, "query", query=selector)["data"]["result"]
        print(f"dropdoc_drops_total for the lab: {drops[0]['value'][1]}")

        assert alert["labels"]["finding"] == "tcp.listen_overflow" and alert["labels"]["job"] == "dropdoc"
        assert f"netns {lab.netns}" in alert["annotations"]["summary"]
        assert f"--netns {lab.netns}" in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"].endswith("docs/runbook.md#tcp-listen-overflow")
        # The lab has one fault: no other Dropdoc alert may fire for its namespace.
        assert {a["labels"]["alertname"] for a in firing(base, lab.netns)} == {ALERT}

        # Every shipped rule evaluates without error against the real metrics.
        groups = api(base, "rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == len(re.findall(r"^\s+- alert: ", (MONITORING / "alerts.yml").read_text(), re.M))
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

        # Every dashboard expression is valid PromQL; the panels about this fault show it.
        answers = {}
        for title, expr in dashboard_queries(lab.netns):
            body = api(base, "query", query=expr)
            assert body.get("status") == "success", (title, expr, body.get("error"))
            answers.setdefault(title, []).extend(body["data"]["result"])
        overflow = next(v for k, v in answers.items() if "tcp.listen_overflow" in k)
        assert any(r["metric"].get("netns") == lab.netns and float(r["value"][1]) > 0 for r in overflow)
        queues = next(v for k, v in answers.items() if k.startswith("Listen queues"))
        assert any(r["metric"].get("socket", "").endswith(":8080") and r["metric"].get("process") == "payments"
                   for r in queues), queues
