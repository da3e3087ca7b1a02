"""Trend classes on constructed score series stored in the history tables."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

import healthscore as hs
from healthscore.engine import history, trends

D = datetime(2025, 6, 1)

# account -> weekly scores, oldest first, the last one at D
SERIES = {
    "crash": [85, 85, 84, 86, 85, 85, 84, 85, 86, 85, 84, 62],  # -24 in a week
    "slide": [82, 80, 79, 77, 75, 74, 72, 70, 69, 67, 66, 64, 62],  # -20 in 12 weeks, steady
    "climb": [40, 42, 45, 46, 49, 51, 53, 56, 58, 60, 62, 65, 66],  # +2/week
    "high": [88, 90, 89, 91, 90, 88, 89, 90, 91, 90, 89, 90, 89],  # green, steady
    "noisy": [60, 75, 58, 72, 61, 70, 59, 74, 62, 71, 60, 73, 65],  # up and down
    "new": [70, 69],  # too little history for a slope
}


def _store(*models, series=SERIES, url="duckdb://"):
    """A store whose history holds ``series`` for each of ``models``."""
    store = hs.connect(url)
    history.ensure_tables(store)
    rows = []
    for model in models:
        for acc, scores in series.items():
            for i, score in enumerate(reversed(scores)):
                band = "green" if score >= 80 else "yellow" if score >= 50 else "red"
                rows.append(
                    {
                        "account_id": acc,
                        "as_of": D - timedelta(weeks=i),
                        "model_version": model.version,
                        "scorecard": "health",
                        "score": float(score),
                        "band": band,
                        "coverage": 1.0,
                    }
                )
    schema = pa.schema(
        [
            (c, pa.timestamp("us") if t == "timestamp" else ibis_type(t))
            for c, t in history.SCHEMAS[history.SCORES].items()
        ]
    )
    store.con.insert(history.SCORES, pa.Table.from_pylist(rows, schema=schema))
    return store


@pytest.fixture
def store_with_series():
    model = hs.load_model()
    return _store(model), model


def ibis_type(t):
    return {"string": pa.string(), "float64": pa.float64()}[t]


def test_each_constructed_series_gets_its_class(store_with_series):
    store, model = store_with_series
    got = {r["account_id"]: r for r in trends.classify(store, model, D).to_pylist()}
    assert {a: r["trend"] for a, r in got.items()} == {
        "crash": "rapid_decline",
        "slide": "gradual_decline",
        "climb": "improving",
        "high": "stable_high",
        "noisy": "stable",
        "new": "stable",
    }
    crash = got["crash"]
    # "then" is the latest stored score at least 30 days back: 5 weeks ago, 84
    assert crash["score_now"] == 62 and crash["score_then"] == 84
    assert crash["change"] == -22
    assert got["slide"]["slope_per_30d"] == pytest.approx(-20 / 84 * 30, rel=0.05)  # 82 -> 62


def test_thresholds_come_from_the_model():
    default = hs.load_model()
    text = hs.model.default_model_text() + "\ntrends:\n  rapid_decline: {drop: 30, within: 30d}\n"
    strict = hs.load_model_text(text)
    assert strict.version != default.version  # thresholds are part of the version
    store = _store(default, strict)
    by_default = {
        r["account_id"]: r["trend"] for r in trends.classify(store, default, D).to_pylist()
    }
    by_strict = {r["account_id"]: r["trend"] for r in trends.classify(store, strict, D).to_pylist()}
    assert by_default["crash"] == "rapid_decline"  # 84 -> 62 in a week: 24 below the high
    assert by_strict["crash"] != "rapid_decline"  # less than the strict model's 30 points


def test_a_model_version_without_stored_history_says_how_to_store_it(store_with_series):
    store, _ = store_with_series
    other = hs.load_model_text(hs.model.default_model_text().replace("green: 80", "green: 85"))
    with pytest.raises(
        hs.ScoringError, match="no stored scores as of 2025-06-01.*healthscore history"
    ):
        trends.classify(store, other, D)


def test_filter_by_class_and_unknown_class(store_with_series):
    store, model = store_with_series
    only = trends.classify(store, model, D, "improving").to_pylist()
    assert [r["account_id"] for r in only] == ["climb"]
    with pytest.raises(hs.ScoringError, match="unknown trend class 'falling'"):
        trends.classify(store, model, D, "falling")


def test_a_rapid_decline_row_shows_the_peak_it_fell_from_and_when(tmp_path):
    """Scored 60 a month ago, 85 two weeks ago, 62 now: +2 on the month, 23 below the peak."""
    from typer.testing import CliRunner

    from healthscore.cli import app

    model = hs.load_model()
    db = tmp_path / "h.duckdb"
    _store(model, series={"spike": [60, 60, 60, 60, 85, 84, 62]}, url=str(db)).close()
    args = ["trends", "--db", str(db), "--as-of", f"{D:%Y-%m-%d}", "--class", "rapid_decline"]
    model_file = tmp_path / "healthscore.yaml"
    model_file.write_text(hs.model.default_model_text())
    out = CliRunner().invoke(app, [*args, "--model", str(model_file)], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    row = next(ln for ln in out.output.splitlines() if ln.startswith("spike"))
    peak_on = D - timedelta(weeks=2)
    assert row.split()[:6] == [
        "spike",
        "rapid_decline",
        "62.0",
        "yellow",
        "85.0",
        f"{peak_on:%Y-%m-%d}",
    ]
    assert "30d peak" in out.output and "peak on" in out.output
