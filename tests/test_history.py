"""Score history: incremental, per model version, point-in-time, explainable."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import healthscore as hs
from fixtures import memory_store
from healthscore.cli import app
from healthscore.core.time import dates_between
from healthscore.engine import history

FROM, TO = datetime(2024, 12, 4), datetime(2025, 1, 1)


@pytest.fixture
def mem():
    return memory_store()


def _stored(store, model):
    t = store.stored(history.SCORES)
    t = t.filter(t.model_version == model.version)
    return t.order_by(["as_of", "account_id"]).to_pyarrow().to_pylist()


def test_backfill_stores_each_date_once_and_a_rerun_computes_nothing(mem):
    model = hs.load_model()
    first = hs.api.history(mem, model, FROM, TO, "1w")
    assert [d.day for d in first.computed] == [4, 11, 18, 25, 1]
    again = hs.api.history(mem, model, FROM, TO, "1w")
    assert again.computed == [] and len(again.skipped) == 5
    rows = _stored(mem, model)
    assert len(rows) == first.rows
    assert {r["as_of"] for r in rows} == set(first.computed)


def test_stored_scores_equal_live_scores_and_their_lines_add_up(mem):
    model = hs.load_model()
    hs.api.history(mem, model, TO, TO, "1d")
    live = {r["account_id"]: r for r in hs.score(mem, model, TO).to_pylist()}
    stored = {r["account_id"]: r for r in _stored(mem, model)}
    assert stored.keys() == live.keys()
    lines = mem.stored(history.LINES)
    # metric and rule lines add up (the default model's champion_left rule takes 10 from A2)
    lines = lines.filter((lines.kind != "pillar") & (lines.as_of == TO)).to_pyarrow().to_pylist()
    assert any(ln["kind"] == "rule" and ln["contribution"] == -10 for ln in lines)
    for acc, row in stored.items():
        assert row["score"] == live[acc]["score"] and row["band"] == live[acc]["band"]
        total = sum(ln["contribution"] for ln in lines if ln["account_id"] == acc)
        assert abs(total - row["score"]) < 1e-9


def test_a_row_loaded_later_does_not_rewrite_history_unless_rebuilt(mem):
    model = hs.load_model()
    hs.api.history(mem, model, TO, TO, "1d")
    before = _stored(mem, model)
    # an open ticket loaded afterwards, opened before the stored date
    mem.load(
        "tickets",
        pa.table(
            {
                "ticket_id": ["T99"],
                "account_id": ["A2"],
                "opened_at": pa.array([TO - timedelta(days=3)], pa.timestamp("us")),
                "priority": ["urgent"],
            }
        ),
    )
    hs.api.history(mem, model, TO, TO, "1d")
    assert [r["score"] for r in _stored(mem, model)] == [r["score"] for r in before]
    hs.api.history(mem, model, TO, TO, "1d", rebuild=True)
    after = {r["account_id"]: r["score"] for r in _stored(mem, model)}
    assert after["A2"] < {r["account_id"]: r["score"] for r in before}["A2"]


def test_two_model_versions_coexist(mem):
    a = hs.load_model()
    b = hs.load_model_text(
        hs.model.default_model_text().replace(
            "bands: {green: 80, yellow: 50}", "bands: {green: 70, yellow: 40}"
        )
    )
    assert a.version != b.version
    hs.api.history(mem, a, TO, TO, "1d")
    result = hs.api.history(mem, b, TO, TO, "1d")
    assert len(result.computed) == 1  # not skipped: another version
    assert len(_stored(mem, a)) == len(_stored(mem, b)) == 3
    labels = mem.stored(history.MODELS).to_pyarrow().to_pylist()
    assert {r["model_version"] for r in labels} == {a.version, b.version}


def test_month_steps_stay_on_month_ends():
    dates = dates_between(datetime(2025, 1, 20), datetime(2025, 5, 31), "1mo")
    assert [d.strftime("%m-%d") for d in dates] == ["01-31", "02-28", "03-31", "04-30", "05-31"]


def test_history_command_reports_computed_and_skipped_dates(tmp_path, fixture_db):
    import shutil

    db = tmp_path / "h.duckdb"
    shutil.copy(fixture_db, db)
    runner = CliRunner()
    args = [
        "history",
        "--from",
        "2024-12-04",
        "--to",
        "2025-01-01",
        "--every",
        "1w",
        "--db",
        str(db),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    # A3 exists from 2024-12-15: 2 + 2 + 3 + 3 + 3 scores
    assert "5 dates computed (13 scores), 0 already stored" in first.output
    second = runner.invoke(app, args)
    assert "0 dates computed (0 scores), 5 already stored" in second.output
    bad = runner.invoke(app, [*args[:6], "--every", "weekly", "--db", str(db)])
    assert bad.exit_code == 2


def test_why_it_moved_from_stored_history_matches_the_live_decomposition(mem):
    model = hs.load_model()
    hs.api.history(mem, model, FROM, TO, "1w")
    for acc in ("A1", "A2"):
        stored = hs.api.explain_change(mem, model, acc, TO, FROM)
        live = hs.api.explain_change(mem, model, acc, TO, FROM, stored=False)
        assert stored.delta == pytest.approx(live.delta, abs=1e-9)
        effects = {(ln.kind, ln.name): ln.effect for ln in live.lines}
        assert {(ln.kind, ln.name): pytest.approx(ln.effect, abs=1e-9) for ln in stored.lines} == (
            effects
        )
        # the same values (a stored whole float reads back as an int: 365.0 shows as 365)
        raws = {ln.name: (ln.raw_before, ln.raw_after) for ln in live.lines}
        assert {ln.name: (ln.raw_before, ln.raw_after) for ln in stored.lines} == raws
    # a row loaded later changes the live answer, not the stored one (history is what was seen)
    mem.load(
        "tickets",
        pa.table(
            {
                "ticket_id": ["T98"],
                "account_id": ["A1"],
                "opened_at": pa.array([TO - timedelta(days=2)], pa.timestamp("us")),
                "priority": ["urgent"],
            }
        ),
    )
    stored = hs.api.explain_change(mem, model, "A1", TO, FROM)
    live = hs.api.explain_change(mem, model, "A1", TO, FROM, stored=False)
    assert live.after.score < stored.after.score


def test_a_chunk_that_fails_while_being_written_leaves_the_stored_dates_as_they_were(mem):
    from healthscore.store import history as tables

    model = hs.load_model()
    hs.api.history(mem, model, FROM, TO, "1w")
    before = _stored(mem, model)
    scores = mem.stored(history.SCORES).to_pyarrow()
    broken = pa.table({"no_such_column": [1]})  # the lines' insert fails after the deletes
    with pytest.raises(Exception, match="score_lines"):
        tables.write_dates(mem, model, [FROM, TO], scores, broken)
    assert _stored(mem, model) == before
