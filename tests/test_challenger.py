"""The learned challenger: held out, leak-free, deterministic, explained; challenger only."""

from __future__ import annotations

import shutil
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

import healthscore as hs
from healthscore.core.time import dates_between, shift
from healthscore.errors import ScoringError
from healthscore.evaluate import backtest as bt
from healthscore.evaluate import challenger as chm
from healthscore.evaluate import stats

END = datetime(2025, 7, 1)
START, STOP = datetime(2024, 7, 1), datetime(2025, 4, 1)
TRAIN_UNTIL = datetime(2024, 12, 1)


@pytest.fixture(scope="module")
def demo(demo_project):
    """300 demo accounts over 15 months (the shared small project); monthly history stored
    by a backtest."""
    result = demo_project
    store = hs.connect(result.db_path)
    bt.backtest(store, result.model, START, STOP, every="1mo", reps=20)
    store.con.raw_sql("CHECKPOINT")
    yield result, store, dates_between(START, STOP, "1mo")
    store.con.disconnect()


@pytest.fixture(scope="module")
def challenged(demo):
    result, store, dates = demo
    return chm.challenge(store, result.model, dates, reps=100, seed=0)


def test_challenger_beats_chance_on_held_out_demo_dates(challenged):
    r = challenged
    assert r.train_until == TRAIN_UNTIL  # the first date of the second half
    assert "first half" in r.split
    assert r.roc_auc.lo > 0.5 and r.roc_auc.value > 0.7
    assert r.pr_auc.value > r.positives / r.observations  # above the base rate
    assert not any("better than chance" in n and "does not" in n for n in r.notes)


def test_weighted_model_is_measured_on_the_same_held_out_observations(challenged):
    r = challenged
    held = r.predictions
    assert len(held) == r.observations and held["as_of"].min() >= r.train_until
    y = held["label"].to_numpy(bool)
    assert r.weighted_roc_auc.value == pytest.approx(roc_auc_score(y, -held["score"]))
    assert r.roc_auc.value == pytest.approx(roc_auc_score(y, held["probability"]))
    assert r.pr_auc.value == pytest.approx(average_precision_score(y, held["probability"]))
    diff = {d.metric: d.value for d in r.differences}
    assert diff["roc_auc"].value == pytest.approx(r.roc_auc.value - r.weighted_roc_auc.value)
    assert diff["roc_auc"].lo <= diff["roc_auc"].value <= diff["roc_auc"].hi


def test_result_says_challenger_only_everywhere(challenged):
    assert chm.CHALLENGER_ONLY in challenged.lines()[0]
    assert challenged.to_dict()["label"] == chm.CHALLENGER_ONLY


def test_trained_only_on_observations_whose_horizon_closed(challenged):
    ch = challenged.challenger
    assert ch.train_dates and all(shift(d, "90d", +1) <= ch.train_until for d in ch.train_dates)


def test_same_seed_same_challenger(demo, challenged):
    result, store, dates = demo
    again = chm.challenge(store, result.model, dates, reps=100, seed=0)
    assert again.to_dict() == challenged.to_dict()
    held = challenged.predictions
    np.testing.assert_array_equal(
        again.challenger.predict(held), challenged.challenger.predict(held)
    )


def _perturbed_copy(demo, tmp_path, when):
    """A copy of the store whose churns matching ``when(ts, i)`` (i-th churn) became renewals."""
    result, store, _ = demo
    path = tmp_path / "copy.duckdb"
    shutil.copy(result.db_path, path)
    copy = hs.connect(path)
    # the i-th churn in time order, whatever order the store keeps its rows in
    out = (
        copy.table("outcomes")
        .to_pyarrow()
        .sort_by([("ts", "ascending"), ("outcome_id", "ascending")])
    )
    ts = out["ts"].to_pylist()
    churns = iter(range(len(ts)))
    kind = [
        "renewed" if k == "churned" and when(t, next(churns)) else k
        for k, t in zip(out["kind"].to_pylist(), ts, strict=True)
    ]
    assert kind != out["kind"].to_pylist()
    copy.load(
        "outcomes", out.set_column(out.schema.get_field_index("kind"), "kind", pa.array(kind))
    )
    return copy


def test_later_outcomes_do_not_change_the_fitted_challenger(demo, challenged, tmp_path):
    result, _, dates = demo
    held = challenged.predictions
    copy = _perturbed_copy(demo, tmp_path, lambda t, i: t > TRAIN_UNTIL)
    try:
        ch = chm.train_challenger(copy, result.model, TRAIN_UNTIL, dates=dates)
        np.testing.assert_array_equal(ch.predict(held), challenged.challenger.predict(held))
    finally:
        copy.con.disconnect()


def test_earlier_outcomes_do_change_it(demo, challenged, tmp_path):
    """The control: the check above would notice a challenger that learns from outcomes."""
    result, _, dates = demo
    held = challenged.predictions
    copy = _perturbed_copy(demo, tmp_path, lambda t, i: t <= TRAIN_UNTIL and i % 2)
    try:
        ch = chm.train_challenger(copy, result.model, TRAIN_UNTIL, dates=dates)
        assert not np.array_equal(ch.predict(held), challenged.challenger.predict(held))
    finally:
        copy.con.disconnect()


def test_explanations_add_up_to_the_probability_minus_the_baseline(challenged):
    assert len(challenged.explanations) == 10
    probs = [e.probability for e in challenged.explanations]
    assert probs == sorted(probs, reverse=True)  # the riskiest accounts
    for e in challenged.explanations:
        total = sum(d.contribution for d in e.drivers)
        assert total == pytest.approx(e.probability - e.baseline_probability, abs=1e-9)
        held = challenged.predictions
        row = held[(held["account_id"] == e.account_id) & (held["as_of"] == e.as_of)]
        assert e.probability == pytest.approx(float(row["probability"].iloc[0]))
        sizes = [abs(d.contribution) for d in e.drivers]
        assert sizes == sorted(sizes, reverse=True)


def test_explanations_point_the_way_the_model_anchors_do(demo, challenged):
    """A value worse than the training median can only add churn risk, a better one remove it."""
    result, _, _ = demo
    ch = challenged.challenger
    direction = dict(zip(ch.features, chm.directions(result.model, ch.features), strict=True))
    checked = 0
    for e in challenged.explanations:
        for d in e.drivers:
            if d.value is None or d.baseline is None or abs(d.contribution) < 1e-12:
                continue
            assert np.sign(d.contribution) == direction[d.feature] * np.sign(d.value - d.baseline)
            checked += 1
    assert checked >= 10
    # what drives the riskiest accounts is what the model calls bad
    top = challenged.explanations[0].drivers[0]
    assert top.contribution > 0


class _Linear:
    """A stand-in estimator whose probability is linear: its Shapley values are known."""

    coef = np.array([0.3, -0.2, 0.05])

    def predict_proba(self, x):
        p = 0.1 + np.nan_to_num(x) @ self.coef
        return np.column_stack([1 - p, p])


@pytest.mark.parametrize("exact_max", [chm.EXACT_MAX, 1])  # exact, then sampled orders
def test_shapley_values_of_a_linear_model_are_its_terms(monkeypatch, exact_max):
    monkeypatch.setattr(chm, "EXACT_MAX", exact_max)
    x, base = np.array([1.0, 2.0, 0.5]), np.array([0.0, 0.5, 0.5])
    phi, p = chm._shapley(_Linear(), x, base, np.random.default_rng(0))
    np.testing.assert_allclose(phi, _Linear.coef * (x - base), atol=1e-12)
    assert p == pytest.approx(0.1 + x @ _Linear.coef)


def test_fast_auc_and_average_precision_equal_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(5, 200))
        y = rng.random(n) < 0.3
        s = np.round(rng.random(n) * rng.integers(1, 10))  # with ties
        if 0 < y.sum() < n:
            assert stats.rank_roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert stats.step_average_precision(y, s) == pytest.approx(
                average_precision_score(y, s), abs=1e-12
            )


def test_no_closed_horizon_to_train_on_says_so(demo):
    result, store, dates = demo
    with pytest.raises(ScoringError, match="no observation date's 90d horizon closes by"):
        chm.train_challenger(store, result.model, datetime(2024, 8, 1), dates=dates)
    with pytest.raises(ScoringError, match="nothing to evaluate the challenger on"):
        chm.challenge(store, result.model, dates, train_until=datetime(2025, 6, 1))


def test_backtest_with_a_challenger_reports_every_model_on_the_held_out_dates_only(demo):
    result, store, dates = demo
    run = hs.api.run_backtest(
        store, result.model, START, STOP, challenger=True, train_until=TRAIN_UNTIL, reps=20
    )
    # the weighted model's figures cover the held-out dates, not the training ones ...
    assert run.result.start == TRAIN_UNTIL and run.result.end == STOP
    held = [d for d in dates if d >= TRAIN_UNTIL]
    obs, _ = bt.observations(store, result.model, held, "90d")
    assert run.result.evaluations["churned"].overall.observations == len(obs)
    # ... the same dates the challenger is measured on, and the output says so
    assert run.challenger.test_dates[0] >= TRAIN_UNTIL
    assert any(
        n.startswith("held out:") and f"{TRAIN_UNTIL:%Y-%m-%d}" in n for n in run.result.notes
    )


def test_the_challenger_gets_the_weighted_models_figure_set_on_the_same_rows(demo, challenged):
    result, store, _ = demo
    r = challenged
    c, w = r.figures["challenger"], r.figures["weighted"]
    # the weighted model's figures are the backtest's own on the held-out observations
    ev, obs, _ = bt.evaluate(store, result.model, r.test_dates, reps=100, seed=0)
    m = ev.overall
    assert len(obs) == r.observations
    for key in ("10%", "20%"):
        assert w.recall_riskiest[key].value == pytest.approx(m.recall_riskiest[key].value)
    assert w.lift == pytest.approx(m.lift)
    assert w.false_positive_rate.value == pytest.approx(m.false_positive_rate.value)
    assert w.precision == pytest.approx(m.precision.value)
    assert w.flagged_but_renewed_share == pytest.approx(m.flagged_but_renewed_share)
    # the challenger flags as many accounts per date as the weighted model had red
    held = r.predictions
    assert c.flagged == pytest.approx(float((held["band"] == "red").sum()))
    # its riskiest-10 % recall, recomputed from the stored predictions outside the tool
    y = held["label"].to_numpy(bool)
    inside = 0.0
    for _, day in held.groupby("as_of"):
        k = 0.1 * len(day)
        p = day["probability"].to_numpy()
        yy = day["label"].to_numpy(bool)
        for v in np.unique(p)[::-1]:  # riskiest first; a tied run across the cut shared
            tied = p == v
            take = min(k, tied.sum())
            inside += take / tied.sum() * yy[tied].sum()
            k -= take
            if k <= 0:
                break
    assert c.recall_riskiest["10%"].value == pytest.approx(inside / y.sum())
    assert c.lift[0] > 1 and c.recall.lo is not None
    text = "\n".join(r.lines())
    assert "recall in the riskiest 10%: challenger" in text and "flag list (red band" in text
    assert set(r.to_dict()["figures"]) == {"challenger", "weighted"}


def test_challenger_predictions_are_written_for_checking_outside_the_tool(demo, tmp_path):
    import pandas as pd

    result, store, _ = demo
    out = tmp_path / "predictions.csv"
    run = hs.api.run_backtest(
        store,
        result.model,
        START,
        STOP,
        challenger=True,
        train_until=TRAIN_UNTIL,
        reps=20,
        predictions=out,
    )
    back = pd.read_csv(out)
    held = run.challenger.predictions
    assert len(back) == len(held) == run.challenger.observations
    assert list(back.columns[:8]) == [
        "account_id",
        "as_of",
        "segment",
        "score",
        "band",
        "label",
        "renewed",
        "probability",
    ]
    assert back["probability"].to_numpy() == pytest.approx(held["probability"].to_numpy())
    y = back["label"].to_numpy(bool)
    assert roc_auc_score(y, back["probability"]) == pytest.approx(run.challenger.roc_auc.value)
    assert run.to_dict()["predictions"] == str(out)
    parquet = hs.api.write_predictions(run.challenger, tmp_path / "p.parquet")
    assert len(pd.read_parquet(parquet)) == len(held)
    with pytest.raises(hs.api.ArgumentError, match="name a .csv or .parquet file"):
        hs.api.write_predictions(run.challenger, tmp_path / "p.txt")
