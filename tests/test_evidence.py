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
    report = run(
        "report", "--db", db, "--model", model, "--as-of", "2025-01-01", "-o", tmp_path / "r.html"
    )
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


# --- accounts left out are counted -------------------------------------------------------------


def _left_out_book(tmp_path: Path) -> tuple[Path, Path]:
    """X1 scored; X2 created after D; X3's only subscription ended; X4 a trial, outside
    the model's population."""
    accounts = pa.table(
        {
            "account_id": ["X1", "X2", "X3", "X4"],
            "name": ["Acme", "Bolt", "Cove", "Dune"],
            "segment": ["smb", "smb", "smb", "trial"],
            "created_at": _ts(
                [datetime(2024, 1, 1), D + timedelta(days=3)] + [datetime(2024, 1, 1)] * 2
            ),
        }
    )
    subs = pa.table(
        {
            "subscription_id": ["S1", "S3"],
            "account_id": ["X1", "X3"],
            "start_date": _ts([datetime(2024, 1, 1), datetime(2024, 1, 1)]),
            "end_date": _ts([None, datetime(2024, 7, 1)]),
        }
    )
    model = USAGE_MODEL + "population: \"segment <> 'trial'\"\n"
    events = _events([("X1", D - timedelta(days=1))])
    return _book(tmp_path, model, accounts=accounts, subscriptions=subs, usage_events=events)


def test_score_says_how_many_accounts_were_left_out_and_why(tmp_path):
    db, model = _left_out_book(tmp_path)
    common = ["--db", db, "--model", model, "--as-of", "2025-01-01"]
    result = run("score", *common)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        "scored 1 of 4 accounts as of 2025-01-01; left out: 1 not yet created, "
        "1 no subscription in force, 1 outside the population" in said
    )
    listed = run("score", *common, "--include-unscored")
    text = " ".join(listed.stdout.split())
    assert "3 accounts left out as of 2025-01-01" in text
    assert "X2 Bolt not yet created" in text and "X3 Cove no subscription in force" in text
    assert "X4 Dune outside the population" in text
    as_json = json.loads(run("score", *common, "--include-unscored", "-f", "json").stdout)
    assert [r["account_id"] for r in as_json] == ["X1", "X2", "X3", "X4"]
    assert as_json[3] == {"account_id": "X4", "name": "Dune", "segment": "trial", "csm": None,
                          "left_out": "outside the population"}  # fmt: skip
    history = run(
        "history", "--db", db, "--model", model, "--from", "2024-12-25", "--to", "2025-01-01"
    )
    assert "scored 1 of 4 accounts as of 2025-01-01; left out: 1 not yet created" in history.stdout
    report = run("report", *common, "--out", tmp_path / "r.html")
    assert "left out: 1 not yet created" in report.stdout
    assert "scored 1 of 4 accounts" in (tmp_path / "r.html").read_text()


# --- category values match whatever their case and surrounding spaces ---------------------------

CATEGORIES = """
columns:
  accounts: {contract: string}
metrics:
  open_urgent: {from: tickets, where: "priority IN ('urgent', 'high')", aggregate: count()}
  urgent_eq: {from: tickets, where: "priority = 'urgent'", aggregate: count()}
  contract: {column: contract}
pillars:
  support:
    weight: 1
    metrics:
      open_urgent: {weight: 1, bad: 1, good: 0}
      urgent_eq: {weight: 1, bad: 1, good: 0}
  financial: {weight: 1, metrics: {contract: {weight: 1, map: {Two Year: 100, one year: 0}}}}
segments:
  by: segment
  weights:
    enterprise: {support: 0, financial: 1}
"""


def test_category_values_match_whatever_their_case_and_spaces(tmp_path):
    accounts = _accounts(
        ["X1", "X2", "X3"],
        segment=["Enterprise", " enterprise", "EMEA"],
        contract=["two year", "ONE YEAR ", "Three Year"],
    )
    tickets = pa.table(
        {
            "ticket_id": ["T1", "T2"],
            "account_id": ["X2", "X3"],
            "opened_at": _ts([D - timedelta(days=2)] * 2),
            "closed_at": _ts([None, None]),
            "priority": ["Urgent", " URGENT"],
        }
    )
    db, model = _book(tmp_path, CATEGORIES, accounts=accounts, tickets=tickets)
    common = ["--db", db, "--model", model, "--as-of", "2025-01-01"]
    result = run("score", *common, "-f", "json")
    assert result.exit_code == 0, result.output
    scores = {r["account_id"]: r for r in json.loads(result.stdout)}
    # "Enterprise" and " enterprise" are the model's enterprise: only the contract counts
    assert scores["X1"]["segment"] == "enterprise" and scores["X1"]["score"] == 100.0
    assert scores["X2"]["segment"] == "enterprise" and scores["X2"]["score"] == 0.0
    # "EMEA" gets the default weights: its open " URGENT" ticket counts in both metrics
    metrics = {ln["metric"]: ln for ln in scores["X3"]["lines"] if ln["kind"] == "metric"}
    assert metrics["open_urgent"]["raw"] == 1 and metrics["urgent_eq"]["raw"] == 1
    assert metrics["contract"]["missing"] == "reweight"  # "Three Year" is not in the map
    said = " ".join(result.output.split())
    assert "segment values the model does not name get the default weights" in said
    assert "'EMEA' (1 account)" in said
    assert "contract: values its `map:` does not name count as missing data" in said
    assert "'Three Year' (1 account)" in said
    checked = run("validate", model, "--db", db)
    assert checked.exit_code == 0, checked.output
    assert "'EMEA' (1 account)" in " ".join(checked.output.split())


def test_only_text_equality_in_and_like_ignore_case_numbers_and_order_do_not():
    import ibis

    from healthscore import expressions as ex

    t = ibis.memtable({"n": [1, 3], "s": ["Urgent", "low"]})
    con = ibis.duckdb.connect()

    def rows(text: str) -> list[int]:
        return con.to_pyarrow(t.filter(ex.compile_row(text, t.__getitem__)))["n"].to_pylist()

    assert rows("s = ' urgent '") == [1]
    assert rows("s <> 'URGENT'") == [3]
    assert rows("s IN ('LOW', 'high')") == [3]
    assert rows("s LIKE 'urg%'") == [1]
    assert rows("CASE s WHEN 'LOW' THEN true ELSE false END") == [3]
    assert rows("n = 3") == [3] and rows("n IN (1, 2)") == [1]
    assert rows("s > 'a'") == [3]  # ordering is by code point, as before: 'U' < 'a'
