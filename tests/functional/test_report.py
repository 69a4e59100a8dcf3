"""`dropdoc report` on real data, opened in a real browser: a live diagnosis of the
reference-case lab plus a history recorded around it (with a stretch when the recorder
was not running), rendered to HTML and read back by headless Chromium - the text of the
page and a screenshot whose pixels show the charts and the severity colours."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from dropdoc.history import History
from dropdoc.lab import scenarios
from dropdoc.meter import Meter
from dropdoc.render.charts import PALETTE
from dropdoc.render.timeline import Timeline

from .conftest import DROPDOC, lab_namespaces, requires_root, run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.functional, requires_root,
              pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs chromium (install.sh --test)")]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
TRANSPORT_COLOUR = bytes.fromhex(PALETTE[3][1:])   # the transport layer's line in the charts
CRITICAL_RED = bytes.fromhex("b91c1c")             # the CRITICAL badge and verdict


def chromium(*args: str, timeout: float = 60) -> str:
    """Run headless Chromium with a fresh profile; killed (its own process group, by the
    id we started) if it hangs. Returns stdout."""
    with tempfile.TemporaryDirectory(prefix="dropdoc-chromium-") as profile:
        process = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                   start_new_session=True)
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # helpers Chromium may leave behind
            except ProcessLookupError:
                pass
        assert process.returncode == 0, f"chromium exited {process.returncode}"
        return out


def read_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """A tiny PNG decoder (8-bit RGB/RGBA, not interlaced - what Chromium writes):
    (width, height, rows of raw pixels, bytes per pixel)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, [], None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, previous, offset = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1:offset + 1 + stride])
        offset += 1 + stride
        if kind == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, previous))
        elif kind == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + previous[x]) >> 1)) & 255
        elif kind == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = previous[x], previous[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, rows, bpp


def record_while(meter: Meter, history: History, busy, limit_s: float, interval: float = 0.5) -> None:
    """Sample every `interval` into the history while busy() is true (bounded in time)."""
    deadline = time.monotonic() + limit_s
    while busy() and time.monotonic() < deadline:
        time.sleep(interval)
        result = meter.sample()
        if result is not None:
            history.append(result)


@pytest.fixture(scope="module")
def lab_data(tmp_path_factory):
    """A live diagnosis (JSON and HTML, from the CLI) of the reference case and the
    history recorded meanwhile, with a 1.5 s stretch nobody recorded."""
    directory = tmp_path_factory.mktemp("report")
    history_path = str(directory / "history.db")
    with scenarios.running("listen-overflow") as lab, History(history_path) as history:
        history.describe_host(lab.netns)
        meter = Meter(lab.netns)
        meter.sample()
        lab.start_load()
        diagnose = subprocess.Popen([*DROPDOC, "diagnose", "--netns", lab.netns, "--duration", "3",
                                     "--format", "json"], stdout=subprocess.PIPE, text=True)
        record_while(meter, history, lambda: diagnose.poll() is None, limit_s=20)
        diagnosis_json, _ = diagnose.communicate(timeout=30)
        lab.wait_load()
        time.sleep(1.5)                     # the recorder is not running
        meter = Meter(lab.netns)            # ... and starts again: a new baseline
        meter.sample()
        lab.start_load()
        as_html = subprocess.Popen([*DROPDOC, "diagnose", "--netns", lab.netns, "--duration", "2",
                                    "--format", "html"], stdout=subprocess.PIPE, text=True)
        record_while(meter, history, lambda: as_html.poll() is None, limit_s=20)
        diagnose_html, _ = as_html.communicate(timeout=30)
        lab.wait_load()
    assert lab.netns not in lab_namespaces(), "the lab was torn down"
    (directory / "diagnosis.json").write_text(diagnosis_json)
    return {"dir": directory, "diagnosis": str(directory / "diagnosis.json"), "history": history_path,
            "diagnose_html": diagnose_html, "diagnose_code": diagnose.returncode,
            "netns": lab.netns}


def test_the_history_holds_drops_and_the_gap(lab_data, no_leftovers):
    with History(lab_data["history"], create=False) as history:
        timeline = Timeline(history.samples())
    assert len(timeline) >= 6
    assert [g for g in timeline.recording_gaps if g.seconds >= 1.0], "the stretch nobody recorded"
    peaks = {p.finding: p for p in timeline.peaks()}
    assert peaks["tcp.listen_overflow"].total > 0


def test_report_in_chromium_shows_findings_socket_fix_and_charts(lab_data, no_leftovers):
    diagnosis = json.loads(Path(lab_data["diagnosis"]).read_text())
    assert lab_data["diagnose_code"] == 2 and diagnosis["findings"][0]["id"] == "tcp.listen_overflow"
    page = lab_data["dir"] / "report.html"
    result = run_cli("report", lab_data["history"], lab_data["diagnosis"], "-o", str(page))
    assert result.returncode == 0, result.stderr

    dom = chromium("--dump-dom", page.as_uri())
    for expected in ("tcp.listen_overflow", "0.0.0.0:8080", "payments", "net.core.somaxconn",
                     f"ip netns exec {lab_data['netns']} sysctl -w net.core.somaxconn=",
                     "Drop rate per layer", "not recording from", "CRITICAL", "docs/runbook.md#tcp-listen-overflow"):
        assert expected in dom, expected

    shot = lab_data["dir"] / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    width, height, rows, bpp = read_png(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    pixels = {}
    for row in rows:
        for x in range(0, len(row), bpp):
            colour = row[x:x + 3]
            pixels[colour] = pixels.get(colour, 0) + 1
    assert len(pixels) > 200, "a page of text, tables and charts, not a blank or error page"
    assert pixels.get(TRANSPORT_COLOUR, 0) > 100, "the transport layer's drop-rate line is drawn"
    assert pixels.get(CRITICAL_RED, 0) > 100, "the critical finding is marked red"
    background = max(pixels.values()) / (width * height)
    assert background < 0.9

    pdf = lab_data["dir"] / "report.pdf"  # printable: Chromium's print path lays it out on pages
    chromium("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 2


def test_report_markdown_of_the_same_data(lab_data, no_leftovers):
    out = lab_data["dir"] / "report.md"
    result = run_cli("report", lab_data["diagnosis"], lab_data["history"], "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "| 1 | **critical** | `tcp.listen_overflow`" in text
    assert "### Drop rate per layer" in text
    assert "| no data |" in text or "(partly not recorded) |" in text  # the 1.5 s nobody recorded


def test_diagnose_format_html_is_the_same_report(lab_data, no_leftovers):
    page = lab_data["diagnose_html"]
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert f"netns <b>{lab_data['netns']}</b>" in page or f"netns {lab_data['netns']}" in page
    assert "Coverage" in page and "tcp.listen_overflow" in page


# -- found by trying to break it ------------------------------------------------------------

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"
# Measures the laid-out page in the browser: a copy of the report gets this script (the
# report itself has none) and the DOM dump carries the answer.
MEASURE = ("<script>document.addEventListener('DOMContentLoaded', () => {"
           "const e = document.documentElement; document.body.setAttribute('data-overflow',"
           " String(e.scrollWidth - e.clientWidth));"
           "const wide = [...document.querySelectorAll('.card')].filter(c => c.scrollWidth > c.clientWidth + 1);"
           "document.body.setAttribute('data-wide-cards', String(wide.length)); });</script>")


def hostile_diagnosis() -> dict:
    """27 findings (one per catalogue id), huge counts, names in other scripts, an RTL
    override, a 300-character command line as the process."""
    from dropdoc.rules.engine import load_rules

    base = json.loads((FIXTURES / "lab-listen-overflow.json").read_text())["diagnosis"]
    names = ["payments", "نظام الدفع", "支付服务", "a" * 300, "\u202etxt.exe", "x|y*z_`w`"]
    findings = []
    for index, rule in enumerate(load_rules()):
        finding = json.loads(json.dumps(base["findings"][0]))
        finding.update(id=rule.id, layer=rule.layer, title=rule.title, drops=2 ** 64 - 1 - index,
                       rate_per_s=(2 ** 64 - 1) / 3.0)
        finding["subjects"][0]["process"] = names[index % len(names)]
        findings.append(finding)
    return base | {"findings": findings}


def test_a_hostile_report_stays_inside_the_page_in_chromium(tmp_path, no_leftovers):
    # a 300-character process name pushed its table out of the card and the page sideways
    source = tmp_path / "hostile.json"
    source.write_text(json.dumps(hostile_diagnosis()))
    page = tmp_path / "report.html"
    result = run_cli("report", str(source), "-o", str(page))
    assert result.returncode == 0, result.stderr
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</head>", MEASURE + "</head>", 1))
    for width in (1280, 820):
        dom = chromium("--dump-dom", f"--window-size={width},900", measured.as_uri())
        overflow = re.search(r'data-overflow="(-?\d+)"', dom)
        wide = re.search(r'data-wide-cards="(\d+)"', dom)
        assert overflow and wide, "the measuring script ran"
        assert int(overflow.group(1)) <= 0 and wide.group(1) == "0", (width, overflow.group(1), wide.group(1))
        assert "18,446,744,073,709,551,615" in dom and "{U+202E}txt.exe" in dom and "\u202e" not in dom


def test_a_bundle_and_a_root_only_history_as_nobody(tmp_path, no_leftovers):
    bundle = tmp_path / "host.tar.gz"   # the host namespace, read only: nothing is changed
    result = run_cli("collect", "-o", str(bundle), "--duration", "0.3")
    assert result.returncode == 0, result.stderr
    out = run_cli("report", str(bundle), "--format", "markdown")
    assert out.returncode == 0, out.stderr
    assert "## Diagnosis (bundle):" in out.stdout and "diagnosed again by this dropdoc" in out.stdout

    # another user, who cannot create the -wal/-shm files next to a WAL-mode history
    with tempfile.TemporaryDirectory(prefix="dropdoc-test-") as directory:
        os.chmod(directory, 0o755)
        history = os.path.join(directory, "h.db")
        with History(history) as recorder:
            recorder.set_meta(hostname="vm", netns="srv")
            for i in range(1, 4):
                recorder.append(Meter_interval(i))
        as_nobody = run_cli("report", history, "--tz", "UTC", user="nobody")
        assert as_nobody.returncode == 0, as_nobody.stderr
        assert "| `tcp.listen_overflow` | transport | 6 |" in as_nobody.stdout
        assert os.listdir(directory) == ["h.db"]


def Meter_interval(i: int):
    from dropdoc.meter import Interval

    return Interval(wall=1_795_660_000.0 + i, seconds=1.0, drops={"tcp.listen_overflow": i})
