"""What `dropdoc report` reads: recognised by content, and anything wrong with a file is
one ReportInputError line naming it - never a traceback, never a half report."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropdoc.history import History
from dropdoc.meter import Interval
from dropdoc.render import html, markdown
from dropdoc.render.report_inputs import (
    DiagnosisInput,
    HistoryInput,
    ReportInputError,
    check_diagnosis,
    load,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "report"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_a_diagnosis_document_is_one_input():
    [item] = load(str(FIXTURES / "diagnosis-two-causes.json"))
    assert isinstance(item, DiagnosisInput)
    assert [f["id"] for f in item.doc["findings"]] == ["udp.rcvbuf_full", "tcp.listen_overflow"]


def test_a_lab_run_gives_its_diagnosis_with_the_scenario_as_context():
    [item] = load(str(FIXTURES / "lab-listen-overflow.json"))
    assert item.label == "Lab listen-overflow"
    assert item.context[0] == "lab scenario listen-overflow"
    assert "connected 400" in item.context[1]


def test_a_lab_run_with_fix_gives_before_and_after():
    before, after = load(str(FIXTURES / "lab-listen-overflow-fix.json"))
    assert before.label.endswith("before the fix") and after.label.endswith("after the fix")
    assert before.doc["findings"] and not after.doc["findings"]
    assert any("net.core.somaxconn 16 -> 2048 (verified)" in line for line in after.context)


def test_a_history_is_recognised_by_its_sqlite_header_whatever_its_name(tmp_path):
    path = tmp_path / "history.json"  # the name lies; the content decides
    with History(str(path)) as history:
        history.append(Interval(wall=1_795_660_001.0, seconds=1.0, drops={"tcp.listen_overflow": 3}))
    [item] = load(str(path))
    assert isinstance(item, HistoryInput)
    assert item.samples.drops == [(1_795_660_001.0, "tcp.listen_overflow", 3)]


def test_since_keeps_only_recent_samples(tmp_path):
    path = str(tmp_path / "h.db")
    with History(path) as history:
        for i in range(5):
            history.append(Interval(wall=1000.0 + i, seconds=1.0, drops={}))
    [item] = load(path, since=1003.0)
    assert item.samples.ts == [1003.0, 1004.0]


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _damaged_history(tmp_path: Path) -> str:
    good = tmp_path / "good.db"
    with History(str(good)) as history:
        for i in range(200):
            history.append(Interval(wall=1000.0 + i, seconds=1.0, drops={"tcp.listen_overflow": i}))
    data = bytearray(good.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page after the first is garbage
    return _write(tmp_path, "damaged.db", bytes(data))


def _other_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    return str(path)


BAD = {
    "missing": (lambda tmp: str(tmp / "nope.json"), "no such file"),
    "directory": (lambda tmp: str(tmp), "directory"),
    "empty": (lambda tmp: _write(tmp, "e.json", b""), "empty file"),
    "binary": (lambda tmp: _write(tmp, "b.bin", b"\x00\xff\xfe garbage"), "not a dropdoc diagnosis"),
    "truncated JSON": (lambda tmp: _write(tmp, "t.json", (FIXTURES / "diagnosis-two-causes.json").read_bytes()[:300]),
                       "invalid JSON at line"),
    "JSON array": (lambda tmp: _write(tmp, "a.json", b"[1, 2]"), "an array, not an object"),
    "no schema": (lambda tmp: _write(tmp, "n.json", b'{"findings": []}'), "no \"schema\""),
    "other schema": (lambda tmp: _write(tmp, "o.json", b'{"schema": "dropdoc.diagnosis/2"}'),
                     "this dropdoc reads 'dropdoc.diagnosis/1'"),
    "wrong type": (lambda tmp: _write(tmp, "w.json", b'{"schema": "dropdoc.diagnosis/1", "findings": [{"id": 5}]}'),
                   "findings[0].id is a number, expected string"),
    "boolean count": (lambda tmp: _write(tmp, "c.json", b'{"schema": "dropdoc.diagnosis/1", '
                                         b'"findings": [{"id": "x", "drops": true}]}'), "findings[0].drops is a boolean"),
    "other sqlite": (_other_sqlite, "not a dropdoc history"),
    "damaged sqlite": (_damaged_history, "malformed"),
    "not a bundle": (lambda tmp: _write(tmp, "x.tar.gz", b"\x1f\x8b\x08\x00garbage"), "not a dropdoc bundle"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    make, expected = BAD[case]
    path = make(tmp_path)
    with pytest.raises(ReportInputError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(path + ": ") and message.count(path) == 1 and "\n" not in message
    assert expected in message


def test_reading_another_sqlite_file_leaves_it_untouched(tmp_path):
    path = _other_sqlite(tmp_path)
    before = Path(path).read_bytes()
    with pytest.raises(ReportInputError):
        load(path)
    assert Path(path).read_bytes() == before


# -- a damaged diagnosis never gets past the check half-way --------------------------------

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


BASE = fixture("lab-listen-overflow.json")["diagnosis"]
PATHS = [p for p in _paths(BASE) if p]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(PATHS), value=JSON, drop=st.booleans())
def test_a_mutated_diagnosis_is_rejected_in_one_line_or_rendered(where, value, drop):
    document = copy.deepcopy(BASE)
    node = document
    for key in where[:-1]:
        node = node[key]
    if drop and isinstance(node, dict):
        del node[where[-1]]
    else:
        node[where[-1]] = value
    try:
        checked = check_diagnosis(document, "d.json")
    except ReportInputError as exc:
        assert str(exc).startswith("d.json: ") and "\n" not in str(exc)
        return
    item = DiagnosisInput("Diagnosis", checked, "d.json")
    assert "<html" in html.render([item])
    assert markdown.render([item]).startswith("# ")
