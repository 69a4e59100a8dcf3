"""What `dropdoc report` reads, recognised by content rather than by file name:

  * a diagnosis: the JSON of `dropdoc diagnose --format json` (schema dropdoc.diagnosis/1),
    or of `dropdoc lab run NAME --format json` (its diagnosis, and the one after --fix);
  * a history: the SQLite file of `dropdoc watch --record` (schema dropdoc.history/1);
  * a bundle of `dropdoc collect -o` (gzip): diagnosed again, as `diagnose --from` does.

Anything else, or a damaged file, is a ReportInputError: one line naming the file and
what is wrong, never a traceback and never a half-rendered report.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

from ..errors import DropdocError
from ..history import History, Sample, SampleColumns
from ..model import SCHEMA as DIAGNOSIS_SCHEMA

SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"
MAX_JSON_BYTES = 64 << 20


class ReportInputError(DropdocError):
    """A report input that is missing, unreadable, of an unknown kind or damaged."""


@dataclass
class DiagnosisInput:
    label: str
    doc: dict[str, Any]                 # a dropdoc.diagnosis/1 document, checked
    source: str
    context: list[str] = field(default_factory=list)   # e.g. the lab scenario and its load


@dataclass
class HistoryInput:
    label: str
    samples: Sequence[Sample] | SampleColumns   # a file's: columns (a week of 1 s samples is 600k)
    meta: dict[str, str]
    source: str
    since: float | None = None      # --since: only samples ending at or after this time ...
    older: int = 0                  # ... and how many older ones the file holds besides


ReportInput = DiagnosisInput | HistoryInput


def load(path: str, since: float | None = None) -> list[ReportInput]:
    """The inputs in one file (a lab run with --fix holds two diagnoses)."""
    try:
        if os.path.isdir(path):
            raise ReportInputError(f"{path}: is a directory, not a diagnosis or history")
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise ReportInputError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportInputError(f"{path}: {exc.strerror or exc}") from None
    if not head:
        raise ReportInputError(f"{path}: empty file, not a diagnosis or history")
    if head.startswith(SQLITE_MAGIC):
        return [load_history(path, since)]
    if head.startswith(GZIP_MAGIC):
        return [load_bundle(path)]
    return load_json(path)


def _naming(path: str, exc: Exception) -> str:
    """The error's one line, starting with the file name (once)."""
    message = str(exc)
    return message if message.startswith(path) else f"{path}: {message}"


def load_history(path: str, since: float | None = None) -> HistoryInput:
    try:
        with History(path, create=False) as history:
            meta = history.meta()
            samples = history.columns(since)
            older = history.count() - len(samples.ts) if since is not None else 0
    except DropdocError as exc:
        raise ReportInputError(_naming(path, exc)) from None
    except sqlite3.DatabaseError as exc:  # a damaged page found while reading the rows
        raise ReportInputError(f"{path}: damaged history ({exc})") from None
    return HistoryInput("History", samples, meta, path, since, max(older, 0))


def load_bundle(path: str) -> DiagnosisInput:
    from ..diagnose import diagnose_bundle

    try:
        diagnosis = diagnose_bundle(path)
    except DropdocError as exc:
        raise ReportInputError(_naming(path, exc)) from None
    return DiagnosisInput("Diagnosis (bundle)", check_diagnosis(diagnosis.to_dict(), path), path,
                          [f"bundle {os.path.basename(path)}, diagnosed again by this dropdoc"])


def load_json(path: str) -> list[DiagnosisInput]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise ReportInputError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise ReportInputError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB, not a diagnosis")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ReportInputError(f"{path}: not a dropdoc diagnosis or history (binary data)") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path}: not a dropdoc diagnosis or history "
                               f"(invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise ReportInputError(f"{path}: JSON nested too deeply") from None
    return inputs_from_document(document, path)


def inputs_from_document(document: Any, source: str) -> list[DiagnosisInput]:
    """A diagnosis document, or a lab run's document holding one (two with --fix)."""
    if isinstance(document, dict) and "schema" not in document and isinstance(document.get("diagnosis"), dict):
        return _lab_inputs(document, source)
    return [DiagnosisInput("Diagnosis", check_diagnosis(document, source), source)]


def _lab_inputs(document: dict[str, Any], source: str) -> list[DiagnosisInput]:
    scenario = str(document.get("scenario") or "?")
    context = [f"lab scenario {scenario}"]
    if isinstance(document.get("load"), dict):
        context.append("load: " + _pairs(document["load"]))
    fix = document.get("fix") if isinstance(document.get("fix"), dict) else None
    inputs = [DiagnosisInput(f"Lab {scenario}" + (": before the fix" if fix else ""),
                             check_diagnosis(document["diagnosis"], f"{source} (diagnosis)"), source, context)]
    if fix and isinstance(fix.get("diagnosis"), dict):
        after = [f"lab scenario {scenario}, after the fix"]
        for change in fix.get("applied") or []:
            if isinstance(change, dict):
                after.append(f"applied: {change.get('key')} {change.get('old')} -> {change.get('new')}"
                             + (f" ({change['verdict']})" if change.get("verdict") else ""))
        if isinstance(fix.get("load"), dict):
            after.append("load: " + _pairs(fix["load"]))
        inputs.append(DiagnosisInput(f"Lab {scenario}: after the fix",
                                     check_diagnosis(fix["diagnosis"], f"{source} (fix.diagnosis)"), source, after))
    return inputs


def _pairs(mapping: dict[str, Any]) -> str:
    from .report_model import plain

    return plain(mapping)


# -- checking a diagnosis document -------------------------------------------------------

_NUMBER = (int, float)


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ReportInputError:
        return ReportInputError(f"{self.source}: damaged diagnosis: {where} {problem}")

    def expect(self, value: Any, kinds: tuple[type, ...], where: str, optional: bool = True) -> Any:
        if value is None and optional:
            return None
        # bool is an int in Python: a count of True is damage, not a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__.replace("dict", "object").replace("list", "array")
                                .replace("str", "string").replace("float", "number") for k in kinds)
            raise self.fail(where, f"is {_json_type(value)}, expected {names}")
        return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def check_diagnosis(document: Any, source: str) -> dict[str, Any]:
    """The document if it is a dropdoc.diagnosis/1 whose fields have the types the report
    reads; a ReportInputError naming the first bad field otherwise."""
    check = _Checker(source)
    if not isinstance(document, dict):
        raise ReportInputError(f"{source}: not a dropdoc diagnosis (the JSON is {_json_type(document)}, not an object)")
    schema = document.get("schema")
    if schema is None:
        raise ReportInputError(f"{source}: not a dropdoc diagnosis (no \"schema\" field)")
    if schema != DIAGNOSIS_SCHEMA:
        raise ReportInputError(f"{source}: schema {str(schema)[:80]!r}, this dropdoc reads {DIAGNOSIS_SCHEMA!r}")
    for key in ("host", "window", "coverage", "coverage_errors", "not_evaluated"):
        check.expect(document.get(key), (dict,), key)
    for key in ("kernel", "netns", "hostname"):
        check.expect((document.get("host") or {}).get(key), (str,), f"host.{key}")
    check.expect((document.get("window") or {}).get("seconds"), _NUMBER, "window.seconds")
    check.expect(document.get("healthy"), (bool,), "healthy")
    check.expect(document.get("counter_resets"), (list,), "counter_resets")
    for key in ("coverage", "coverage_errors", "not_evaluated"):
        for name, value in (document.get(key) or {}).items():
            check.expect(value, (str,), f"{key}.{name}", optional=False)
    findings = check.expect(document.get("findings"), (list,), "findings") or []
    for index, finding in enumerate(findings):
        where = f"findings[{index}]"
        check.expect(finding, (dict,), where, optional=False)
        check.expect(finding.get("id"), (str,), f"{where}.id", optional=False)
        for key in ("layer", "severity", "summary", "title", "runbook", "explanation"):
            check.expect(finding.get(key), (str,), f"{where}.{key}")
        for key in ("drops", "rate_per_s"):
            check.expect(finding.get(key), _NUMBER, f"{where}.{key}")
        check.expect(finding.get("benign"), (bool,), f"{where}.benign")
        for key in ("evidence", "subjects", "fixes"):
            for item_index, item in enumerate(check.expect(finding.get(key), (list,), f"{where}.{key}") or []):
                check.expect(item, (dict,), f"{where}.{key}[{item_index}]", optional=False)
    trace = check.expect(document.get("trace"), (dict,), "trace")
    if trace:
        for key in ("reasons",):
            check.expect(trace.get(key), (dict,), f"trace.{key}")
        for key in ("unmatched", "counter_only"):
            check.expect(trace.get(key), (list,), f"trace.{key}")
        for index, entry in enumerate(trace.get("unmatched") or []):
            check.expect(entry, (dict,), f"trace.unmatched[{index}]", optional=False)
    return document
