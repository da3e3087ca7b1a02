"""Percentile normalisation: fitted once at a date, stored in the model, never live."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import healthscore as hs
from fixtures import AS_OF
from healthscore.cli import app

MODEL = """\
# users active in 30 days, ranked among peers
metrics:
  users_30d: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}
  events_30d: {from: usage_events, aggregate: count(), window: 30d}
pillars:
  usage:
    weight: 1
    metrics:
      users_30d:
        weight: 1
        percentile: {better: higher, by_segment: false, quantiles: [0, 0.5, 1]}
      events_30d: {weight: 1, bad: 0, good: 10}
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(MODEL)
    return path


def test_scoring_an_unfitted_percentile_model_says_how_to_fit(store, model_file):
    model = hs.load_model(model_file)
    with pytest.raises(hs.ScoringError, match="users_30d is not fitted yet.*fit-percentiles"):
        hs.score(store, model, AS_OF)


def test_fit_writes_points_into_the_model_keeping_comments(fixture_db, model_file):
    result = CliRunner().invoke(
        app,
        [
            "model",
            "fit-percentiles",
            "--as-of",
            "2025-01-01",
            "--model",
            str(model_file),
            "--db",
            str(fixture_db),
        ],
    )
    assert result.exit_code == 0, result.output
    text = model_file.read_text()
    assert text.startswith("# users active in 30 days, ranked among peers")
    assert "fitted_at: '2025-01-01'" in text or "fitted_at: 2025-01-01" in text
    fitted = hs.load_model(model_file)
    # A1 has 4 users, A2 1, A3 0: quantiles 0, 0.5, 1 fall on 0, 1, 4
    use = fitted.spec.pillars["usage"].metrics["users_30d"]
    assert use.percentile.points["*"] == [(0.0, 0.0), (1.0, 50.0), (4.0, 100.0)]
    assert fitted.version != hs.load_model_text(MODEL).version


def test_fitted_score_does_not_move_when_a_peer_changes(fresh_store, model_file):
    fitted = hs.api.fit_percentiles(fresh_store, model_file, AS_OF)
    before = {r["account_id"]: r for r in hs.score(fresh_store, fitted, AS_OF).to_pylist()}
    assert before["A2"]["users_30d__norm"] == 50.0
    extra = pa.table(
        {
            "event_id": [f"X{i}" for i in range(8)],
            "account_id": ["A1"] * 8,
            "user_id": [f"new{i}" for i in range(8)],
            "event": ["x"] * 8,
            "ts": pa.array([AS_OF - timedelta(days=1)] * 8, pa.timestamp("us")),
            "quantity": [1.0] * 8,
        }
    )
    fresh_store.load("usage_events", extra)
    after = {r["account_id"]: r for r in hs.score(fresh_store, fitted, AS_OF).to_pylist()}
    assert after["A1"]["users_30d"] == 12
    assert after["A2"]["users_30d__norm"] == before["A2"]["users_30d__norm"]
    assert after["A2"]["score"] == before["A2"]["score"]


def test_fit_without_percentile_metrics_is_an_error(store, tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(
        "metrics: {n: {from: tickets, aggregate: count()}}\n"
        "pillars: {p: {weight: 1, metrics: {n: {weight: 1, bad: 3, good: 0}}}}\n"
    )
    with pytest.raises(hs.ScoringError, match="no scored metric uses `percentile:`"):
        hs.api.fit_percentiles(store, path, AS_OF)


def test_a_scorecard_percentile_is_fitted_within_that_scorecard(fresh_store, tmp_path):
    """The `young` scorecard ranks only its own population (A3, created 2024-12-15)."""
    path = tmp_path / "cards.yaml"
    path.write_text(
        MODEL
        + """scorecards:
  young:
    population: "days_since(created_at) <= 60"
    pillars:
      q:
        weight: 1
        metrics:
          events_30d:
            weight: 1
            percentile: {better: higher, by_segment: false, quantiles: [0, 1]}
"""
    )
    fitted = hs.api.fit_percentiles(fresh_store, path, AS_OF)
    young = fitted.scorecard("young")
    use = young.spec.pillars["q"].metrics["events_30d"]
    assert use.percentile.points["*"] == [(0.0, 50.0)]  # one account, no events: one point
    rows = hs.score(fresh_store, young, AS_OF).to_pylist()
    assert [r["account_id"] for r in rows] == ["A3"]
    # the health scorecard's own percentile is fitted over all three accounts
    use = fitted.spec.pillars["usage"].metrics["users_30d"]
    assert use.percentile.points["*"] == [(0.0, 0.0), (1.0, 50.0), (4.0, 100.0)]
