"""What a score rests on, told to the user: one "today" for every command, empty tables
are no evidence, accounts left out are counted, category values match whatever their case.

Each test builds a tiny book of business in a real DuckDB file and runs the real
command or API function, asserting what a CS ops person would see.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import typer
from typer.testing import CliRunner

from healthscore import api
from healthscore.cli import app
from healthscore.core.time import today
from healthscore.store import connect

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _ts(values):
    return pa.array(values, pa.timestamp("us"))


USAGE_MODEL = """
metrics:
  events_30d: {from: usage_events, aggregate: count(), window: 30d}
pillars:
  usage: {weight: 1, metrics: {events_30d: {weight: 1, bad: 0, good: 2}}}
"""


def _book(tmp_path: Path, model: str, **tables: pa.Table) -> tuple[Path, Path]:
    """A store holding ``tables`` and a model file; returns their paths."""
    db, path = tmp_path / "book.duckdb", tmp_path / "model.yaml"
    store = connect(db)
    for name, table in tables.items():
        store.load(name, table)
    store.close()
    path.write_text(model, encoding="utf-8")
    return db, path


def _accounts(ids, created=datetime(2024, 1, 1), **extra) -> pa.Table:
    return pa.table(
        {
            "account_id": list(ids),
            "name": [f"Name {i}" for i in ids],
            "created_at": _ts([created] * len(ids)),
            **extra,
        }
    )


def _events(rows: list[tuple[str, datetime]]) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"E{i}" for i in range(len(rows))],
            "account_id": [a for a, _ in rows],
            "event": ["login"] * len(rows),
            "ts": _ts([t for _, t in rows]),
        }
    )


# --- one "today" ----------------------------------------------------------------------------


def test_every_command_defaults_to_today_at_midnight_so_their_scores_agree(tmp_path):
    midnight = today()
    # one event yesterday, one at 00:00 today: as of today 00:00 only the first counts
    events = _events([("X1", midnight - timedelta(hours=12)), ("X1", midnight)])
    db, model = _book(tmp_path, USAGE_MODEL, accounts=_accounts(["X1"]), usage_events=events)
    common = ["--db", db, "--model", model]
    default = run("score", *common, "-f", "json")
    assert default.exit_code == 0, default.output
    dated = run("score", *common, "-f", "json", "--as-of", f"{midnight:%Y-%m-%d}")
    first, second = json.loads(default.stdout), json.loads(dated.stdout)
    assert first[0]["as_of"] == midnight.isoformat() and first[0]["score"] == 50.0
    assert [r["score"] for r in first] == [r["score"] for r in second]
    explained = json.loads(run("explain", "X1", *common, "-f", "json").stdout)
    assert explained["as_of"] == midnight.isoformat() and explained["score"] == 50.0
    report = run("report", *common, "--out", tmp_path / "r.html")
    assert report.exit_code == 0, report.output
    assert f"as of {midnight:%Y-%m-%d}" in report.stdout
    commands = typer.main.get_command(app).commands
    for name in ("score", "explain", "report", "trends", "compare"):
        (as_of,) = [p for p in commands[name].params if "--as-of" in p.opts]
        assert "[default: today 00:00 UTC" in as_of.help, name


# --- empty tables are no evidence -------------------------------------------------------------

D = datetime(2025, 1, 1)
TWO_PILLARS = """
metrics:
  events_30d: {from: usage_events, aggregate: count(), window: 30d}
  meetings_90d: {from: touchpoints, aggregate: count(), window: 90d}
pillars:
  usage: {weight: 1, metrics: {events_30d: {weight: 1, bad: 0, good: 2}}}
  relationship: {weight: 1, metrics: {meetings_90d: {weight: 1, bad: 0, good: 2}}}
"""


def _touchpoints(rows: list[tuple[str, datetime]]) -> pa.Table:
    return pa.table(
        {
            "touchpoint_id": [f"M{i}" for i in range(len(rows))],
            "account_id": [a for a, _ in rows],
            "ts": _ts([t for _, t in rows]),
            "kind": ["meeting"] * len(rows),
        }
    )


def test_a_table_with_no_rows_is_missing_data_not_a_zero(tmp_path):
    events = _events([("X1", D - timedelta(days=3)), ("X1", D - timedelta(days=2))])
    db, model = _book(tmp_path, TWO_PILLARS, accounts=_accounts(["X1", "X2"]), usage_events=events)
    result = run("score", "--db", db, "--model", model, "--as-of", "2025-01-01", "-f", "json")
    assert result.exit_code == 0, result.output
    scores = {r["account_id"]: r for r in json.loads(result.stdout)}
    # touchpoints was never loaded: no meeting count, not "zero meetings" (which scored 0)
    assert scores["X1"]["score"] == 100.0 and scores["X1"]["coverage"] == 0.5
    assert scores["X2"]["score"] == 0.0 and scores["X2"]["coverage"] == 0.5
    lines = {ln["metric"]: ln for ln in scores["X1"]["lines"] if ln["kind"] == "metric"}
    assert lines["meetings_90d"]["raw"] is None
    assert "Warning: no rows loaded in touchpoints" in result.output
    assert "meetings_90d count as missing data" in result.output
    explained = run("explain", "X1", "--db", db, "--model", model, "--as-of", "2025-01-01")
    assert "no rows loaded in touchpoints" in explained.output
    report = run("report", "--db", db, "--model", model, "--as-of", "2025-01-01", "-o", tmp_path / "r.html")
    assert "no rows loaded in touchpoints" in (tmp_path / "r.html").read_text()
    assert "no rows loaded in touchpoints" in report.output


def test_once_the_table_has_rows_an_account_without_any_has_a_real_zero(tmp_path):
    events = _events([("X1", D - timedelta(days=3)), ("X1", D - timedelta(days=2))])
    meetings = _touchpoints([("X1", D - timedelta(days=5)), ("X1", D - timedelta(days=9))])
    db, model = _book(
        tmp_path,
        TWO_PILLARS,
        accounts=_accounts(["X1", "X2"]),
        usage_events=events,
        touchpoints=meetings,
    )
    result = run("score", "--db", db, "--model", model, "--as-of", "2025-01-01", "-f", "json")
    scores = {r["account_id"]: r for r in json.loads(result.stdout)}
    assert scores["X1"]["score"] == 100.0 and scores["X2"]["score"] == 0.0
    assert scores["X2"]["coverage"] == 1.0  # no meetings in a table that has some: a real 0
    assert "no rows loaded" not in result.output


def test_history_and_one_date_agree_on_an_empty_table(tmp_path):
    from healthscore.engine import asof, timeline
    from healthscore.model import load_model

    events = _events([("X1", D - timedelta(days=3)), ("X2", D - timedelta(days=40))])
    db, path = _book(tmp_path, TWO_PILLARS, accounts=_accounts(["X1", "X2"]), usage_events=events)
    store, model = connect(db), load_model(path)
    dates = [D - timedelta(days=7), D]
    many = timeline.score_dates(store, model, dates).select(["account_id", "as_of", "score"])
    one = [asof.score(store, model, d).select(["account_id", "as_of", "score"]) for d in dates]
    assert sorted(many.to_pylist(), key=str) == sorted(
        one[0].to_pylist() + one[1].to_pylist(), key=str
    )
    assert {r["score"] for r in one[1].to_pylist()} == {50.0, 0.0}  # usage only
    result = api.history(store, model, dates[0], dates[1], "1w")
    assert "no rows loaded in touchpoints" in str(result)
