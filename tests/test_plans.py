"""Observation plans: a grid, contract anniversaries, or a file of (account, date) pairs.

A small book worked out by hand (the same hint-scored accounts as test_backtest):
R0 and R1 score 20 (red), G0 and G1 score 90 (green), all created 2024-01-01. Their
first contracts start R0 2024-03-15, R1 2024-06-01, G0 2024-03-15, G1 2024-09-10 (R0
and G0 renew on 2025-03-15 with a second contract, which changes nothing: anniversaries
count from the first). With a 12-month period and a 30-day lead, they are observed on
R0 2025-02-13, R1 2025-05-02, G0 2025-02-13 and G1 2025-08-11 (and a year later each).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import healthscore as hs
from fixtures import outcome_book
from healthscore.cli import app
from healthscore.errors import ScoringError, SourceError
from healthscore.evaluate import backtest as bt
from healthscore.evaluate.observations import ObservationPlan

MODEL = """
columns: {accounts: {hint: float64}}
metrics:
  hint: {column: hint}
pillars:
  p: {weight: 1, metrics: {hint: {weight: 1, bad: 0, good: 100}}}
"""
START, END = datetime(2024, 6, 1), datetime(2025, 6, 1)


def _book(path):
    hints = [("R0", 20.0), ("R1", 20.0), ("G0", 90.0), ("G1", 90.0), ("N0", 50.0)]
    outcomes = [
        ("R0", datetime(2025, 3, 1), "churned"),
        ("R1", datetime(2025, 6, 15), "churned"),
        ("G0", datetime(2025, 12, 31), "renewed"),
    ]
    store = outcome_book(path, hints, outcomes)
    starts = [
        ("S1", "R0", datetime(2024, 3, 15)),
        ("S2", "R1", datetime(2024, 6, 1)),
        ("S3", "G0", datetime(2024, 3, 15)),
        ("S4", "G1", datetime(2024, 9, 10)),
        ("S5", "R0", datetime(2025, 3, 15)),
        ("S6", "G0", datetime(2025, 3, 15)),
    ]
    store.load(
        "subscriptions",
        pa.table(
            {
                "subscription_id": [s for s, _, _ in starts],
                "account_id": [a for _, a, _ in starts],
                "start_date": pa.array([d for _, _, d in starts], pa.timestamp("us")),
            }
        ),
    )
    return store


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    store = _book(tmp_path_factory.mktemp("plans") / "book.duckdb")
    yield store
    store.con.disconnect()


def test_anniversaries_are_first_start_plus_k_periods_minus_the_lead(book):
    plan = ObservationPlan.anniversaries("12mo", "30d")
    seen = plan.observed(book, datetime(2024, 1, 1), datetime(2026, 12, 31))
    got = {(a, d.date().isoformat()) for a, d in seen.pairs.itertuples(index=False)}
    assert got == {
        ("R0", "2025-02-13"),
        ("R0", "2026-02-13"),
        ("R1", "2025-05-02"),
        ("R1", "2026-05-02"),
        ("G0", "2025-02-13"),
        ("G0", "2026-02-13"),
        ("G1", "2025-08-11"),
        ("G1", "2026-08-11"),
    }
    # the history is stored at the union of the accounts' dates, once each
    assert [d.date().isoformat() for d in seen.dates] == [
        "2025-02-13",
        "2025-05-02",
        "2025-08-11",
        "2026-02-13",
        "2026-05-02",
        "2026-08-11",
    ]
    assert seen.notes == [
        "1 of 5 accounts have no contract (subscription) and are not observed on anniversaries"
    ]
    assert plan.describe() == "each account 30d before each 12mo anniversary of its first contract"


def test_month_end_anniversaries_count_whole_periods_from_the_start(tmp_path):
    store = outcome_book(
        tmp_path / "m.duckdb", [("A", 50.0)], [("A", datetime(2025, 1, 1), "renewed")]
    )
    store.load(
        "subscriptions",
        pa.table(
            {
                "subscription_id": ["S"],
                "account_id": ["A"],
                "start_date": pa.array([datetime(2024, 1, 31)], pa.timestamp("us")),
            }
        ),
    )
    seen = ObservationPlan.anniversaries("1mo", "1d").observed(
        store, datetime(2024, 1, 1), datetime(2024, 5, 31)
    )
    # Jan 31 + 1, 2, 3, 4 months (Feb 29, Mar 31, Apr 30, May 31), each a day earlier:
    # not Feb 29 + 1 month (Mar 29) and so on
    assert [d.date().isoformat() for d in seen.dates] == [
        "2024-02-28",
        "2024-03-30",
        "2024-04-29",
        "2024-05-30",
    ]
    store.con.disconnect()


def _contracts(path, starts: list[datetime]):
    """A book of one account per contract start (A0, A1 ...)."""
    ids = [f"A{i}" for i in range(len(starts))]
    store = outcome_book(path, [(a, 50.0) for a in ids], [("A0", datetime(2025, 1, 1), "renewed")])
    store.load(
        "subscriptions",
        pa.table(
            {
                "subscription_id": [f"S{a}" for a in ids],
                "account_id": ids,
                "start_date": pa.array(starts, pa.timestamp("us")),
            }
        ),
    )
    return store


def test_anniversaries_of_a_contract_a_century_old_fall_in_the_range(tmp_path):
    # k periods were counted one by one through a duration of k periods: past 100 years
    # (1,203mo) that is no duration, and the plan failed with "a duration must be at most
    # 100 years: '1203mo'", a value nobody typed
    store = _contracts(tmp_path / "old.duckdb", [datetime(1920, 1, 31)])
    seen = ObservationPlan.anniversaries("1mo", "1d").observed(
        store, datetime(2024, 2, 1), datetime(2024, 4, 30)
    )
    assert [d.date().isoformat() for d in seen.dates] == ["2024-02-28", "2024-03-30", "2024-04-29"]
    store.con.disconnect()


def test_anniversaries_over_too_many_dates_are_refused_at_once(tmp_path):
    # as a grid is: each date is the whole book scored and stored
    store = _contracts(tmp_path / "many.duckdb", [datetime(1901, 1, 1 + i) for i in range(20)])
    start, end = datetime(1900, 1, 1), datetime(2999, 1, 1)
    with pytest.raises(ScoringError, match=r"every 1w is more than 20,000 dates"):
        ObservationPlan.anniversaries("1w", "1d").observed(store, start, end)
    # 20 contracts, each with about 1,100 yearly anniversaries on a day of its own
    with pytest.raises(ScoringError, match=r"21,942 observation dates from 1900-01-01 to 2999"):
        ObservationPlan.anniversaries("12mo", "1d").observed(store, start, end)
    store.con.disconnect()


def test_backtest_on_anniversaries_matches_the_hand_computed_figures(book):
    model = hs.load_model_text(MODEL)
    plan = ObservationPlan.anniversaries("12mo", "30d")
    r = bt.backtest(book, model, START, END, plan=plan, reps=50)
    m = r.evaluations["churned"].overall
    # observed: R0 2025-02-13 (churns 03-01: positive), R1 2025-05-02 (churns 06-15,
    # within 90 days: positive), G0 2025-02-13 (renews: negative); G1's 2025-08-11 is
    # after the end
    assert (m.observations, m.positives, m.accounts) == (3, 2, 3)
    # R0's churn is judged at 2025-01-30, before its only observation: not judged; R1's
    # at 2025-05-16, by its red observation of 2025-05-02: caught
    assert m.events == 1 and m.caught == 1 and m.recall.value == 1.0
    assert m.false_positive_rate.value == 0.0 and m.precision.value == 1.0
    assert r.plan == plan.describe() and r.lead == "30d"
    assert "plan" in r.to_dict() and "observed" not in r.to_dict()
    later = bt.backtest(book, model, START, datetime(2026, 6, 1), plan=plan, reps=20)
    m2 = later.evaluations["churned"].overall
    # G1's 2025-08-11 comes in (a negative); the planned 2026 dates have open horizons
    # (last outcome 2025-12-31): left out, said so
    assert (m2.observations, m2.positives) == (4, 2)
    assert any("horizon ends after the last outcome" in n for n in later.notes)


def test_fit_probability_on_anniversaries_says_who_the_plan_leaves_out(book):
    from healthscore.evaluate.probability import fit_probability_details

    model = hs.load_model_text(MODEL)
    plan = ObservationPlan.anniversaries("12mo", "30d")
    fit = fit_probability_details(book, model, datetime(2025, 12, 31), start=START, plan=plan)
    assert (
        "1 of 5 accounts have no contract (subscription) and are not observed on anniversaries"
        in fit.notes
    )


def test_churn_ends_observations_on_any_plan(book, tmp_path):
    model = hs.load_model_text(MODEL)
    f = tmp_path / "pairs.csv"
    # R0 churned 2025-03-01: its pair of 2025-04-01 is no prediction target any more
    f.write_text("account_id,as_of\nR0,2025-02-01\nR0,2025-04-01\nG0,2025-02-01\n")
    plan = ObservationPlan.read_pairs(book, f)
    r = bt.backtest(book, model, datetime(2025, 2, 1), datetime(2025, 4, 1), plan=plan, reps=20)
    m = r.evaluations["churned"].overall
    assert (m.observations, m.positives) == (2, 1)


def test_a_pairs_file_gives_exactly_its_pairs_and_its_dates(book, tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text("account_id,as_of\nR1,2025-01-10\nG1,2025-01-10\nG0,2024-12-01\n")
    plan = ObservationPlan.read_pairs(book, f, lead="14d")
    assert plan.span() == (datetime(2024, 12, 1), datetime(2025, 1, 10))
    seen = plan.observed(book, *plan.span())
    assert seen.dates == [datetime(2024, 12, 1), datetime(2025, 1, 10)] and not seen.notes
    part = plan.observed(book, datetime(2025, 1, 1), datetime(2025, 2, 1))
    assert part.dates == [datetime(2025, 1, 10)]
    assert part.notes == [
        "1 pair of pairs.csv falls outside 2025-01-01 .. 2025-02-01 and is not observed here"
    ]
    assert sorted(seen.pairs.itertuples(index=False, name=None)) == [
        ("G0", datetime(2024, 12, 1)),
        ("G1", datetime(2025, 1, 10)),
        ("R1", datetime(2025, 1, 10)),
    ]
    model = hs.load_model_text(MODEL)
    r = bt.backtest(book, model, *plan.span(), plan=plan, reps=20)
    m = r.evaluations["churned"].overall
    # R0 is scored at both dates (the history holds every account) but not in the file
    assert m.observations == 3 and m.accounts == 3 and r.lead == "14d"


def test_a_bad_pairs_file_names_file_row_and_field_and_nothing_is_used(book, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text(
        "account_id,as_of\n"
        "R0,2025-02-13\n"  # row 2: good
        "XX,2025-02-13\n"  # row 3: no such account
        "R1,2025-13-01\n"  # row 4: no 13th month
        "R0,2025-02-13\n"  # row 5: the pair of row 2 again
        ",2025-02-13\n"  # row 6: no account
    )
    with pytest.raises(SourceError) as e:
        ObservationPlan.read_pairs(book, f)
    text = str(e.value).replace(str(f), "bad.csv")
    assert text.startswith("bad.csv: 4 invalid rows of (account, date) pairs, nothing observed")
    lines = text.splitlines()[1:]
    assert lines[0].strip().startswith("bad.csv:3: account_id: unknown account")
    assert "got 'XX'" in lines[0]
    assert (
        lines[1].strip().startswith("bad.csv:4: as_of: not a date or timestamp (got '2025-13-01'")
    )
    assert lines[2].strip().startswith("bad.csv:5: account_id, as_of: duplicate key")
    assert "first seen at row 2" in lines[2] and "give each (account, date) pair once" in lines[2]
    assert lines[3].strip() == "bad.csv:6: account_id: required value is empty"
    assert len(lines) == 4


def test_a_pairs_file_without_the_columns_says_which_it_needs(book, tmp_path):
    f = tmp_path / "cols.csv"
    f.write_text("account,date\nR0,2025-02-13\n")
    with pytest.raises(SourceError, match="it needs the columns account_id, as_of"):
        ObservationPlan.read_pairs(book, f)


def test_no_planned_observation_in_the_range_says_so(book):
    plan = ObservationPlan.anniversaries("12mo", "30d")
    with pytest.raises(ScoringError, match="no observation from 2024-06-01 to 2024-07-01"):
        plan.observed(book, datetime(2024, 6, 1), datetime(2024, 7, 1))


def test_a_grid_is_the_old_every_and_a_plan_wins(book):
    model = hs.load_model_text(MODEL)
    a = bt.backtest(book, model, START, END, every="1mo", lead="30d", reps=20)
    b = bt.backtest(book, model, START, END, plan=ObservationPlan.grid("1mo", "30d"), reps=20)
    assert a.to_dict() == b.to_dict() and a.plan == "every 1mo"


def test_cli_observes_on_anniversaries_and_rejects_options_that_do_not_go_together(tmp_path):
    db = tmp_path / "cli.duckdb"
    _book(db).con.disconnect()
    mf = tmp_path / "m.yaml"
    mf.write_text(MODEL)
    runner = CliRunner()
    base = ["backtest", "--db", str(db), "--model", str(mf), "--from", "2024-06-01"]
    base += ["--to", "2025-06-01", "--bootstrap", "20", "--format", "json"]
    r = runner.invoke(app, [*base, "--anniversaries", "12mo"])
    assert r.exit_code == 0, r.output
    import json

    d = json.loads(r.stdout)
    assert d["plan"] == "each account 30d before each 12mo anniversary of its first contract"
    assert d["evaluations"]["churned"]["overall"]["observations"] == 3
    r = runner.invoke(app, [*base, "--anniversaries", "12mo", "--every", "1w"])
    assert r.exit_code != 0 and "--every does not apply with --anniversaries" in r.output
    pairs = tmp_path / "p.csv"
    pairs.write_text("account_id,as_of\nR0,2025-01-01\n")
    r = runner.invoke(app, [*base, "--anniversaries", "12mo", "--pairs", str(pairs)])
    assert r.exit_code != 0 and "do not go together" in r.output
    r = runner.invoke(app, [*base, "--predictions", str(tmp_path / "x.csv")])
    assert r.exit_code != 0 and "--predictions does not apply without --challenger" in r.output


def test_calibrate_and_fit_probability_take_the_plan_options(tmp_path):
    db = tmp_path / "cli.duckdb"
    _book(db).con.disconnect()
    mf = tmp_path / "m.yaml"
    mf.write_text(MODEL)
    runner = CliRunner()
    common = ["--db", str(db), "--model", str(mf)]
    r = runner.invoke(app, ["calibrate", *common, "--train-until", "2025-06-01", "--lead", "0d"])
    assert r.exit_code != 0 and "--lead" in r.output and "longer than 0" in r.output
    r = runner.invoke(
        app,
        ["calibrate", *common, "--train-until", "2025-06-01", "--pairs", "x.csv", "--every", "1w"],
    )
    assert r.exit_code != 0 and "--every does not apply with --anniversaries or --pairs" in r.output
    fit = ["model", "fit-probability", *common, "--until", "2025-12-31"]
    r = runner.invoke(app, [*fit, "--lead", "10d"])
    assert r.exit_code != 0 and "--lead does not apply without --anniversaries" in r.output
    f = tmp_path / "pairs.csv"
    f.write_text("account_id,as_of\nR0,2025-02-01\nNOPE,2025-02-01\n")
    r = runner.invoke(app, [*fit, "--pairs", str(f)])
    assert r.exit_code != 0 and "pairs.csv:3: account_id: unknown account" in r.output
    r = runner.invoke(
        app,
        [
            "backtest",
            *common,
            "--from",
            "2024-06-01",
            "--to",
            "2025-06-01",
            "--challenger",
            "--predictions",
            str(tmp_path / "p.txt"),
        ],
    )
    assert r.exit_code != 0 and "--predictions p.txt: name a .csv or .parquet file" in r.output
