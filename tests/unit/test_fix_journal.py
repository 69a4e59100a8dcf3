"""The journal and journaled apply/rollback, with an in-memory change kind ("memo": a
setting kept in a dict, registered for these tests only) so the ordering of journal writes
and system writes can be checked without touching the kernel. The real kinds are covered
by tests/functional/test_fix.py, including SIGKILL between two writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from dropdoc.errors import DropdocError, ParseError
from dropdoc.fix import journal as journal_mod
from dropdoc.fix.apply import ApplyFailed, apply_plan, rollback_run
from dropdoc.fix.changes import KINDS, Change
from dropdoc.fix.journal import Journal, JournalBusy, parse_records, read_records
from dropdoc.fix.plan import Plan, PlannedChange
from dropdoc.fix.sysctl import UnsafeChange

STORE: dict[str, Any] = {}
FAIL_ON: set[str] = set()
SEEN_BEFORE_WRITE: list[dict] = []


@dataclass
class MemoChange(Change):
    name: str = ""
    journal_path: str | None = None
    kind: ClassVar[str] = "memo"

    @property
    def target(self) -> str:
        return f"memo {self.name}"

    def read_current(self) -> Any:
        return STORE[self.name]

    def validate(self, current: Any) -> None:  # noqa: ARG002
        if not isinstance(self.value, int):
            raise UnsafeChange("memo values are integers")

    def _write(self, value: Any) -> None:
        if self.journal_path:  # what the journal holds at the moment the system changes
            SEEN_BEFORE_WRITE.append(read_records(self.journal_path)[-1])
        if self.name in FAIL_ON:
            raise DropdocError(f"memo {self.name}: refused by the system")
        STORE[self.name] = value

    def fields(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def build(cls, record: dict[str, Any], value: Any) -> "MemoChange":
        return cls(record.get("netns"), value, name=record["name"])


@pytest.fixture(autouse=True)
def memo_kind():
    KINDS["memo"] = MemoChange
    STORE.clear()
    FAIL_ON.clear()
    SEEN_BEFORE_WRITE.clear()
    yield
    del KINDS["memo"]


def plan_of(*changes: tuple[str, int], journal_path: str | None = None) -> Plan:
    plan = Plan("srv", "test", 5.0, [{"id": "x.test", "drops": 10, "rate_per_s": 2.0}])
    for name, value in changes:
        plan.changes.append(PlannedChange(MemoChange("srv", value, name=name, journal_path=journal_path),
                                          ["x.test"], value, why=f"raise {name}"))
    return plan


def events(path) -> list[tuple[str, Any]]:
    return [(r["event"], r.get("seq")) for r in read_records(str(path))]


def test_intent_is_on_disk_before_the_change_and_outcome_after(tmp_path):
    path = tmp_path / "j.jsonl"
    STORE.update(a=1, b=2)
    with Journal(str(path)) as journal:
        applied = apply_plan(plan_of(("a", 10), ("b", 20), journal_path=str(path)), journal)
    assert STORE == {"a": 10, "b": 20}
    assert [(a.old, a.in_force, a.status) for a in applied] == [(1, 10, "applied"), (2, 20, "applied")]
    # at each system write, the last record on disk was that change's intent
    assert [(r["event"], r["seq"], r["old"], r["new"]) for r in SEEN_BEFORE_WRITE] == \
        [("intent", 1, 1, 10), ("intent", 2, 2, 20)]
    assert events(path) == [("intent", 1), ("outcome", 1), ("intent", 2), ("outcome", 2)]
    intent = read_records(str(path))[0]
    assert intent["netns"] == "srv" and intent["finding"] == ["x.test"] and intent["reason"] == "raise a"
    assert intent["run"] == journal.run_id and intent["time"]
    assert intent["change"] == {"kind": "memo", "netns": "srv", "target": "memo a", "name": "a"}


def test_a_failing_change_restores_the_earlier_ones(tmp_path):
    path = tmp_path / "j.jsonl"
    STORE.update(a=1, b=2, c=3)
    FAIL_ON.add("b")
    with Journal(str(path)) as journal, pytest.raises(ApplyFailed, match="memo b: refused by the system"):
        apply_plan(plan_of(("a", 10), ("b", 20), ("c", 30)), journal)
    assert STORE == {"a": 1, "b": 2, "c": 3}
    records = read_records(str(path))
    assert [(r["event"], r.get("seq"), r.get("status")) for r in records] == [
        ("intent", 1, None), ("outcome", 1, "applied"), ("intent", 2, None), ("outcome", 2, "failed"),
        ("restored", 2, "already"), ("restore", 1, None), ("restored", 1, "restored")]


def write_killed_run(path, second_written: bool, second_outcome: bool) -> str:
    """A journal as a fixer killed during change 2 leaves it."""
    journal = Journal(str(path))
    with journal:
        journal.write("run-start", netns="srv")
        for seq, (name, old, new) in enumerate((("a", 1, 10), ("b", 2, 20)), 1):
            journal.write("intent", seq=seq, change={"kind": "memo", "netns": "srv", "target": f"memo {name}",
                                                     "name": name}, old=old, new=new, netns="srv",
                          finding=["x.test"], reason="r")
            if seq == 1 or second_written:
                STORE[name] = new
            if seq == 1 or second_outcome:
                journal.write("outcome", seq=seq, status="applied", in_force=new)
    return journal.run_id


@pytest.mark.parametrize("second_written, second_outcome", [(False, False), (True, False), (True, True)])
def test_rollback_after_a_kill_restores_exactly_the_previous_values(tmp_path, second_written, second_outcome):
    path = tmp_path / "j.jsonl"
    STORE.update(a=1, b=2)
    run_id = write_killed_run(path, second_written, second_outcome)
    result = rollback_run(str(path))
    assert result.run == run_id and result.ok
    assert STORE == {"a": 1, "b": 2}
    statuses = {r.target: r.status for r in result.restores}
    assert statuses == {"memo a": "restored", "memo b": "restored" if second_written else "already"}
    assert [r.target for r in result.restores] == ["memo b", "memo a"]  # newest first
    again = rollback_run(str(path))
    assert again.restores == [] and "already rolled back" in again.message


def test_rollback_leaves_a_value_someone_else_changed_since(tmp_path):
    path = tmp_path / "j.jsonl"
    STORE.update(a=1, b=2)
    write_killed_run(path, True, True)
    STORE["a"] = 99  # an administrator changed it after dropdoc
    result = rollback_run(str(path))
    assert not result.ok
    assert STORE == {"a": 99, "b": 2}
    skipped = [r for r in result.restores if r.status == "skipped"][0]
    assert skipped.target == "memo a" and "now 99" in skipped.detail and "left alone" in skipped.detail


def test_rollback_of_a_named_run_and_of_an_unknown_one(tmp_path):
    path = tmp_path / "j.jsonl"
    STORE.update(a=1, b=2)
    first = write_killed_run(path, True, True)
    STORE.update(a=1, b=2)
    write_killed_run(path, True, True)  # the last run
    STORE.update(a=5, b=6)
    result = rollback_run(str(path), first)
    assert result.run == first
    # the first run's values were 10/20, now 5/6: someone (the second run) changed them since
    assert {r.status for r in result.restores} == {"skipped"}
    with pytest.raises(DropdocError, match="no run nope"):
        rollback_run(str(path), "nope")


def test_rollback_with_an_empty_journal(tmp_path):
    result = rollback_run(str(tmp_path / "none.jsonl"))
    assert result.run is None and result.ok and "nothing to roll back" in result.message


def test_runs_summarise_the_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    STORE.update(a=1, b=2)
    run_id = write_killed_run(path, True, False)
    runs = journal_mod.runs(read_records(str(path)))
    changes = runs[run_id].changes
    assert [(c.seq, c.old, c.new, c.outcome) for c in changes] == [(1, 1, 10, "applied"), (2, 2, 20, None)]
    assert journal_mod.last_run_with_changes(read_records(str(path))).run == run_id


def test_torn_last_line_is_ignored_other_damage_is_an_error():
    good = json.dumps({"event": "intent", "run": "r1", "seq": 1}) + "\n"
    assert len(parse_records(good + '{"event": "outc')) == 1
    with pytest.raises(ParseError, match="line 1"):
        parse_records('{"event": "outc\n' + good)
    with pytest.raises(ParseError, match="not a dropdoc journal record"):
        parse_records('{"hello": 1}\n')
    assert parse_records("") == []


def test_one_fixer_at_a_time(tmp_path):
    path = str(tmp_path / "j.jsonl")
    with Journal(path):
        with pytest.raises(JournalBusy, match="another `dropdoc fix` is running"):
            Journal(path).open()
    with Journal(path):  # released when the first closed
        pass


def test_journal_file_is_private_and_in_a_new_directory(tmp_path):
    path = tmp_path / "var" / "lib" / "dropdoc" / "journal.jsonl"
    with Journal(str(path)) as journal:
        journal.write("run-start")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_records(str(path))[0]["v"] == journal_mod.VERSION


def test_memory_journal_for_the_lab():
    journal = Journal(None)
    with journal:
        journal.write("run-start", netns="x")
    assert journal.records()[0]["netns"] == "x"
