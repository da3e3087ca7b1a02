"""Backtest figures on a constructed book whose every figure is worked out by hand.

40 accounts, scored from a column: R0..R19 score 20 (red), G0..G19 score 90 (green).
R0..R9 and G0, G1 churn on 2025-03-15; R10..R14 renew on 2025-04-15 (red but renewed);
G2..G19 renew on 2025-12-31 (so every 90-day window has closed). Observations monthly
2025-01-01 .. 2025-06-01, horizon 90d, lead 30d.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from typer.testing import CliRunner

import healthscore as hs
from fixtures import outcome_book
from healthscore.cli import app
from healthscore.evaluate import backtest as bt

MODEL = """
columns: {accounts: {hint: float64}}
metrics:
  hint: {column: hint}
pillars:
  p: {weight: 1, metrics: {hint: {weight: 1, bad: 0, good: 100}}}
"""
INVERTED = MODEL.replace("bad: 0, good: 100", "bad: 100, good: 0")
START, END = datetime(2025, 1, 1), datetime(2025, 6, 1)


def _book(path):
    hints = [(f"R{i}", 20.0) for i in range(20)] + [(f"G{i}", 90.0) for i in range(20)]
    rows = [(f"R{i}", datetime(2025, 3, 15), "churned") for i in range(10)]
    rows += [(f"G{i}", datetime(2025, 3, 15), "churned") for i in range(2)]
    rows += [(f"R{i}", datetime(2025, 4, 15), "renewed") for i in range(10, 15)]
    rows += [(f"G{i}", datetime(2025, 12, 31), "renewed") for i in range(2, 20)]
    return outcome_book(path, hints, rows)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    store = _book(tmp_path_factory.mktemp("bt") / "book.duckdb")
    yield store
    store.con.disconnect()


def test_churn_figures_equal_the_hand_computed_ones(book):
    model = hs.load_model_text(MODEL)
    r = bt.backtest(book, model, START, END, every="1mo", horizon="90d", lead="30d", reps=100)
    m = r.evaluations["churned"].overall
    # 12 churn events, judged on the score of 2025-02-01: 10 red, 2 green
    assert m.events == 12
    assert m.recall.value == pytest.approx(10 / 12)
    assert m.opposite_share.value == pytest.approx(2 / 12)
    # churners: 3 positive observations each (Jan, Feb, Mar), none after their churn
    assert m.positives == 36 and m.observations == 36 + 28 * 6
    assert m.false_positive_rate.value == pytest.approx(60 / 168)
    assert m.precision.value == pytest.approx(30 / 90)
    assert m.roc_auc.value == pytest.approx(4464 / 6048)
    assert m.flagged_but_renewed == 15 and m.flagged_but_renewed_share == pytest.approx(15 / 90)
    assert m.median_lead_days == pytest.approx(73.0)  # red since 2025-01-01, churned 03-15
    assert m.lift[0] > 1 > m.lift[-1]
    # tied scores shared: the top tenth (20.4 of 204 observations) lies inside the 90
    # tied red observations, 30 of them positive
    assert m.lift[0] == pytest.approx((30 / 90) / (36 / 204))
    # the riskiest 10 % of each date's 40 accounts is 4 of the 20 tied red ones (a share
    # of 0.2 each); 10 churners x 3 dates among 36 positive observations
    assert m.recall_riskiest["10%"].value == pytest.approx(10 * 3 * 0.2 / 36)
    assert m.recall_riskiest["20%"].value == pytest.approx(10 * 3 * 0.4 / 36)
    assert m.caught == 10 and m.flagged_renewed_accounts == 5  # R10..R14 renewed
    assert r.verdict.startswith(
        "Red caught 10 of 12 accounts that churned, a median of 73 days ahead; "
        "5 red accounts renewed anyway. Ranked by score, the riskiest 10% of the book "
        "held 17% of those about to churn (20%: 33%). The score ranks churned usefully"
    )
    assert m.roc_auc.lo < m.roc_auc.value < m.roc_auc.hi
    assert set(r.evaluations) == {"churned"}  # no expansion outcomes on file
    # 12 events: too few to trust, and said so
    assert any("only 12 outcome events" in n for n in r.notes)
    assert set(r.evaluations["churned"].segments) == {"enterprise", "smb"}


def test_the_bootstrap_is_seeded_and_resamples_accounts(book):
    model = hs.load_model_text(MODEL)
    a = bt.backtest(book, model, START, END, reps=60, seed=3).evaluations["churned"].overall
    b = bt.backtest(book, model, START, END, reps=60, seed=3).evaluations["churned"].overall
    c = bt.backtest(book, model, START, END, reps=60, seed=4).evaluations["churned"].overall
    assert (a.roc_auc.lo, a.roc_auc.hi) == (b.roc_auc.lo, b.roc_auc.hi)
    assert (a.roc_auc.lo, a.roc_auc.hi) != (c.roc_auc.lo, c.roc_auc.hi)


def test_two_models_side_by_side_on_the_same_observations(book):
    good, bad = hs.load_model_text(MODEL), hs.load_model_text(INVERTED)
    r = bt.backtest(book, good, START, END, vs=bad, reps=100)
    ours, theirs = r.evaluations["churned"].overall, r.vs_evaluations["churned"].overall
    assert ours.observations == theirs.observations
    assert theirs.roc_auc.value == pytest.approx(1 - 4464 / 6048)
    diff = {d.metric: d.value for d in r.differences["churned"]}
    assert diff["roc_auc"].value == pytest.approx(ours.roc_auc.value - theirs.roc_auc.value)
    assert diff["roc_auc"].lo > 0  # clearly better, interval and all
    # the inverted model scores churners 80 (green): worse than chance, and said so
    assert not any("better than chance" in n for n in r.notes)
    r2 = bt.backtest(book, bad, START, END, reps=100)
    assert any("is inverted" in n for n in r2.notes)


def test_later_outcomes_leave_open_windows_out(tmp_path):
    store = _book(tmp_path / "b.duckdb")
    model = hs.load_model_text(MODEL)
    r = bt.backtest(store, model, START, datetime(2025, 12, 1), every="1mo", reps=20)
    # windows of 2025-10-01 .. 12-01 end after the last outcome (2025-12-31)
    assert any("observations left out" in n and "2025-12-31" in n for n in r.notes)


def test_backtest_command_prints_figures_and_json(book, tmp_path):
    db = book.con.con.execute("PRAGMA database_list").fetchall()[0][2]
    (tmp_path / "m.yaml").write_text(MODEL)
    (tmp_path / "inv.yaml").write_text(INVERTED)
    args = ["backtest", "--db", db, "--model", str(tmp_path / "m.yaml")]
    args += ["--from", "2025-01-01", "--to", "2025-06-01", "--bootstrap", "50"]
    res = CliRunner().invoke(
        app, [*args, "--vs", str(tmp_path / "inv.yaml")], env={"COLUMNS": "150"}
    )
    assert res.exit_code == 0, res.output
    assert "ROC AUC" in res.output and "red but renewed" in res.output
    assert res.output.startswith("Verdict: Red caught 10 of 12 accounts that churned")
    assert "recall in the riskiest 10% of the book" in res.output
    assert "difference" in res.output and "only 12 outcome events" in res.output
    out = json.loads(CliRunner().invoke(app, [*args, "-f", "json"]).output)
    assert out["evaluations"]["churned"]["overall"]["events"] == 12


def test_no_scores_at_the_dates_or_no_events_of_the_kind_are_clear(book):
    model = hs.load_model_text(MODEL)
    early = [datetime(2023, 1, 1), datetime(2023, 2, 1)]  # before any account existed
    hs.api.history(book, model, early[0], early[1], "1mo")
    with pytest.raises(hs.ScoringError, match="no account has a stored score at the 2"):
        bt.observations(book, model, early, "90d")
    obs, _ = bt.observations(book, model, [START], "90d", outcome="contracted")
    assert len(obs) == 40 and not obs["label"].any()  # nobody contracted: all negative


# --- recurring outcomes, events of every observed account, inverted scores ------------------


def _expansion_book(path):
    """Green accounts expand twice: once before the backtest starts, once inside it."""
    hints = [(f"R{i}", 20.0) for i in range(10)] + [(f"G{i}", 90.0) for i in range(10)]
    rows = [(f"G{i}", datetime(2024, 12, 1), "expanded") for i in range(10)]
    rows += [(f"G{i}", datetime(2025, 3, 20), "expanded") for i in range(10)]
    rows += [(f"R{i}", datetime(2025, 12, 31), "renewed") for i in range(10)]
    return outcome_book(path, hints, rows)


def test_expansion_recurs_and_only_churn_ends_an_accounts_observations(tmp_path):
    store = _expansion_book(tmp_path / "x.duckdb")
    model = hs.load_model_text(MODEL)
    hs.api.history(store, model, START, END, "1mo")
    obs, _ = bt.observations(store, model, bt.dates_between(START, END, "1mo"), "90d", "expanded")
    # every green account stays observed after its first expansion (2024-12-01) ...
    assert set(obs.loc[obs["account_id"].str.startswith("G"), "account_id"]) == {
        f"G{i}" for i in range(10)
    }
    # ... and is labelled by its second one: Jan, Feb and Mar windows hold 2025-03-20
    g0 = obs[obs["account_id"] == "G0"].set_index("as_of")["label"]
    assert g0[datetime(2025, 1, 1)] and g0[datetime(2025, 3, 1)]
    assert not g0[datetime(2025, 4, 1)]


def test_expansion_events_are_judged_on_the_same_accounts_overall_in_segments_and_resamples(
    tmp_path,
):
    store = _expansion_book(tmp_path / "x.duckdb")
    model = hs.load_model_text(MODEL)
    r = bt.backtest(store, model, START, END, every="1mo", horizon="90d", lead="30d", reps=200)
    ev = r.evaluations["expanded"]
    # the 10 expansions of 2025-03-20, judged on 2025-02-01's (green) scores
    assert ev.overall.events == 10 and ev.overall.recall.value == 1.0
    assert sum(m.events for m in ev.segments.values()) == ev.overall.events
    for m in [ev.overall, *ev.segments.values()]:
        for est in (m.recall, m.opposite_share, m.roc_auc):
            if est.lo is not None:
                assert est.lo <= est.value <= est.hi, (est, m)


def test_a_significantly_inverted_score_is_called_inverted_not_chance(book):
    bad = hs.load_model_text(INVERTED)
    r = bt.backtest(book, bad, START, END, reps=200)
    auc = r.evaluations["churned"].overall.roc_auc
    assert auc.hi < 0.5  # clearly below chance
    notes = " ".join(r.notes)
    assert "better than chance" not in notes
    assert "inverted" in notes and "higher scores" in notes


def test_all_replicates_at_once_equal_the_figures_of_each_resample_concatenated():
    import numpy as np

    from healthscore.evaluate import stats as st

    rng = np.random.default_rng(1)
    accounts = np.repeat(np.arange(200), 4)  # 4 correlated rows per account
    y = rng.random(len(accounts)) < 0.2
    risk = np.round(rng.random(len(accounts)), 2)  # many ties
    rep = st.Replicates(accounts, 200, reps=25, seed=3)
    auc, ap = rep.roc_auc(y, risk), rep.average_precision(y, risk)
    fpr, corr = rep.ratio((risk > 0.5) & ~y, ~y), rep.correlation(risk, y)
    rows = [np.flatnonzero(accounts == a) for a in range(200)]
    draws = np.random.default_rng(3)
    for k in range(25):  # the same seeded draws, resampled the slow way
        o = np.concatenate([rows[i] for i in draws.integers(0, 200, 200)])
        assert auc[k] == pytest.approx(st.roc_auc(y[o], risk[o]), abs=1e-12)
        assert ap[k] == pytest.approx(st.average_precision(y[o], risk[o]), abs=1e-12)
        assert fpr[k] == pytest.approx(((risk[o] > 0.5) & ~y[o]).sum() / (~y[o]).sum())
        assert corr[k] == pytest.approx(np.corrcoef(risk[o], y[o])[0, 1], abs=1e-9)
