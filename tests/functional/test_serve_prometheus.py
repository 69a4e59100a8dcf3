"""The exporter as real Prometheus tooling sees it: `promtool check metrics` lints the
exposition, and a real Prometheus (Debian's 2.42, on 127.0.0.1) scrapes it and can query
the contract's series. Both programs are stopped by PID; their files live in a temporary
directory removed at the end."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from .conftest import requires_root
from .test_serve import serve  # noqa: F401 - the fixture

pytestmark = [requires_root, pytest.mark.functional,
              pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("promtool")),
                                 reason="needs prometheus and promtool")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_promtool_finds_nothing_to_lint(serve):  # noqa: F811
    status, body = serve().get()
    assert status == 200
    lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert not lint.stdout.strip() and not lint.stderr.strip()  # not even a warning


def query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]


def test_real_prometheus_scrapes_the_contract(serve):  # noqa: F811
    served = serve()
    with tempfile.TemporaryDirectory(prefix="dropdoc-prom-") as workdir:
        config = f"{workdir}/prometheus.yml"
        with open(config, "w") as handle:
            handle.write("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                         "scrape_configs:\n"
                         f"  - job_name: dropdoc\n    static_configs: [{{targets: ['127.0.0.1:{served.port}']}}]\n")
        web = free_port()
        log = open(f"{workdir}/prometheus.log", "wb")  # noqa: SIM115 - closed in the finally
        prometheus = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir}/data",
                                       f"--web.listen-address=127.0.0.1:{web}", "--log.level=warn"],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline, up = time.monotonic() + 30, []
            while time.monotonic() < deadline:
                try:
                    up = query(web, 'up{job="dropdoc"}')
                except OSError:
                    up = []
                if up and up[0]["value"][1] == "1":
                    break
                time.sleep(0.5)
            with open(f"{workdir}/prometheus.log") as handle:
                assert up and up[0]["value"][1] == "1", (up, handle.read()[-2000:])
            findings = query(web, 'dropdoc_drops_total{netns=""}')
            assert findings and all(r["metric"]["layer"] in ("link", "kernel", "network", "transport", "socket")
                                    for r in findings)
            assert query(web, 'dropdoc_source_up{source="netstat"}')[0]["value"][1] == "1"
            assert query(web, "dropdoc_build_info")[0]["metric"]["version"]
            duration = float(query(web, 'scrape_duration_seconds{job="dropdoc"}')[0]["value"][1])
            assert duration < 1.0
        finally:
            prometheus.terminate()
            try:
                prometheus.wait(15)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(5)
            log.close()
