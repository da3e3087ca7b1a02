"""CSM flags: raised, resolved, listed, and seen point-in-time by has_flag()."""

from __future__ import annotations

from datetime import datetime

import pytest
from typer.testing import CliRunner

import healthscore as hs
from healthscore.cli import app
from healthscore.engine.flags import add_flag, list_flags, resolve_flag

MODEL = """
metrics:
  frozen: {formula: "CASE WHEN has_flag('budget_freeze') THEN 1 ELSE 0 END"}
  n: {from: tickets, aggregate: count()}
pillars:
  p: {weight: 1, metrics: {frozen: {weight: 1, bad: 1, good: 0}, n: {weight: 1, bad: 3, good: 0}}}
"""


def _frozen(store, when):
    rows = hs.score(store, hs.load_model_text(MODEL), when).to_pylist()
    return {r["account_id"]: r["frozen"] for r in rows}


def test_a_flag_counts_from_when_it_was_raised_until_resolved(fresh_store):
    row = add_flag(
        fresh_store,
        "A2",
        "Budget Freeze",
        note="Q3 freeze",
        author="bob",
        at=datetime(2024, 12, 10),
    )
    assert row["kind"] == "budget_freeze" and row["flag_id"].startswith("FLG-")
    assert _frozen(fresh_store, datetime(2024, 12, 9))["A2"] == 0
    assert _frozen(fresh_store, datetime(2024, 12, 20))["A2"] == 1
    resolve_flag(fresh_store, row["flag_id"], at=datetime(2024, 12, 25))
    assert _frozen(fresh_store, datetime(2024, 12, 20))["A2"] == 1  # history keeps it
    assert _frozen(fresh_store, datetime(2024, 12, 26))["A2"] == 0


def test_list_shows_active_flags_and_all_with_resolved(fresh_store):
    active = list_flags(fresh_store, as_of=datetime(2025, 1, 1))
    assert [r["flag_id"] for r in active] == ["F1"]  # F2 was resolved in November
    everything = list_flags(fresh_store, include_resolved=True)
    assert {r["flag_id"] for r in everything} == {"F1", "F2"}


def test_flag_mistakes_are_named(fresh_store):
    with pytest.raises(hs.StoreError, match="unknown account 'NOPE'"):
        add_flag(fresh_store, "NOPE", "reorg")
    with pytest.raises(hs.StoreError, match="unknown flag 'F9'"):
        resolve_flag(fresh_store, "F9")
    with pytest.raises(hs.StoreError, match="flag F2 was already resolved on 2024-11-01"):
        resolve_flag(fresh_store, "F2")


def test_flag_commands(tmp_path, fixture_db):
    import shutil

    db = tmp_path / "f.duckdb"
    shutil.copy(fixture_db, db)
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "flag",
            "add",
            "A1",
            "champion_left",
            "--note",
            "Ana left",
            "--author",
            "alice",
            "--at",
            "2024-12-30",
            "--db",
            str(db),
        ],
    )
    assert added.exit_code == 0, added.output
    flag_id = added.output.split()[1].rstrip(":")
    listed = runner.invoke(app, ["flag", "list", "--as-of", "2025-01-01", "--db", str(db)])
    assert flag_id in listed.output and "champion_left" in listed.output
    done = runner.invoke(app, ["flag", "resolve", flag_id, "--at", "2025-01-02", "--db", str(db)])
    assert done.exit_code == 0 and "resolved on 2025-01-02" in done.output
    again = runner.invoke(app, ["flag", "resolve", flag_id, "--db", str(db)])
    assert again.exit_code == 1 and "already resolved" in again.output


@pytest.mark.parametrize(
    ("kind", "code"),
    [("champion\x1b[31m_left", "U+001B"), ("budget\u200bfreeze", "U+200B"), ("re\norg", "U+000A")],
)
def test_a_flag_kind_holding_a_character_that_does_not_show_is_refused(fresh_store, kind, code):
    """A kind is what ``has_flag('kind')`` matches: one holding an escape, a zero-width
    space or a line break was stored, matched no rule, and read as another kind (or
    coloured the terminal) wherever it was listed (found by the service probe of the
    tenth session)."""
    before = list_flags(fresh_store, account_id="A2", include_resolved=True)
    with pytest.raises(hs.StoreError) as e:
        add_flag(fresh_store, "A2", kind)
    assert code in str(e.value) and "kind" in str(e.value)
    assert list_flags(fresh_store, account_id="A2", include_resolved=True) == before


def test_a_flag_kind_past_its_length_is_refused(fresh_store):
    with pytest.raises(hs.StoreError, match="at most 100"):
        add_flag(fresh_store, "A2", "x" * 101)
    assert add_flag(fresh_store, "A2", "x" * 100)["kind"] == "x" * 100
