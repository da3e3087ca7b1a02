"""The Python API end to end on demo data: the default model finds real signal."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

import healthscore as hs
from healthscore.api import run_demo

END = datetime(2025, 7, 1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    result = run_demo(tmp_path_factory.mktemp("demo"), accounts=400, months=12, seed=11, end=END)
    store = hs.connect(result.db_path)
    yield result, store
    store.con.disconnect()


def _by_account(store, model, as_of):
    return {r["account_id"]: r for r in hs.score(store, model, as_of).to_pylist()}


def test_demo_portfolio_has_all_three_bands(demo):
    result, _ = demo
    bands = {r["band"] for r in result.scores.to_pylist()}
    assert {"green", "yellow", "red"} <= bands


def test_some_demo_accounts_drop_twenty_points_within_thirty_days(demo):
    result, store = demo
    now = _by_account(store, result.model, END)
    month_ago = _by_account(store, result.model, END - timedelta(days=30))
    drops = [
        a
        for a, r in now.items()
        if a in month_ago
        and r["score"] is not None
        and month_ago[a]["score"] is not None
        and month_ago[a]["score"] - r["score"] >= 20
    ]
    assert len(drops) >= 3


def test_default_score_before_renewal_separates_churn_from_renewal(demo):
    """The latest monthly score 45+ days before the outcome: churners well below renewers."""
    result, store = demo
    dates = [END - timedelta(days=30 * k) for k in range(2, 12)]
    history = {d: _by_account(store, result.model, d) for d in dates}
    churned, renewed = [], []
    for o in store.table("outcomes").to_pyarrow().to_pylist():
        if o["kind"] not in ("churned", "renewed"):
            continue
        seen = [d for d in dates if d <= o["ts"] - timedelta(days=45)]
        row = history[max(seen)].get(o["account_id"]) if seen else None
        if row and row["score"] is not None:
            (churned if o["kind"] == "churned" else renewed).append(row["score"])
    assert len(churned) >= 5 and len(renewed) >= 50
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(churned) < mean(renewed) - 10
    red_share_churned = sum(s < 50 for s in churned) / len(churned)
    red_share_renewed = sum(s < 50 for s in renewed) / len(renewed)
    assert red_share_churned > 3 * red_share_renewed


def test_segment_can_come_from_an_as_of_value(store):
    model = hs.load_model(Path(__file__).parent / "models" / "valid" / "segment_from_arr.yaml")
    rows = {r["account_id"]: r for r in hs.score(store, model, "2025-01-01").to_pylist()}
    assert rows["A1"]["segment"] == "big"  # ARR 120k in force at D
    assert rows["A1"]["open_tickets__weight"] == pytest.approx(0.75)
    assert rows["A2"]["segment"] == "small"
    assert rows["A2"]["open_tickets__weight"] == pytest.approx(0.5)
    # in mid-2024 A1's contract in force was S1 (ARR 96k): the segment follows the as-of value
    earlier = {r["account_id"]: r for r in hs.score(store, model, "2024-06-01").to_pylist()}
    assert earlier["A1"]["segment"] == "small"


def test_demo_history_shows_rapid_declines_and_expansion_candidates(demo):
    from healthscore.engine import trends

    result, store = demo
    # the demo stored 12 months of weekly history: a rerun over part of it computes nothing
    assert len(result.history.computed) == 53 and result.history.rows > 53 * 300
    backfill = hs.api.history(store, result.model, END - timedelta(weeks=13), END, "1w")
    assert backfill.computed == [] and len(backfill.skipped) == 14
    classes = trends.classify(store, result.model, END).to_pylist()
    counts = {c: sum(r["trend"] == c for r in classes) for c in trends.CLASSES}
    assert counts["rapid_decline"] >= 3
    assert counts["stable_high"] >= 20
    assert counts["stable"] >= 50
    rapid = [r for r in classes if r["trend"] == "rapid_decline"]
    assert all(r["score_now"] is not None and r["score_then"] is not None for r in rapid)


def test_demo_explains_each_rapid_decline_and_writes_the_report(demo):
    from healthscore.engine import trends

    result, store = demo
    rapid = {
        r["account_id"]: r
        for r in trends.classify(store, result.model, END, "rapid_decline").to_pylist()
    }
    assert len(result.declines) == len(rapid) >= 3
    for change in result.declines:
        r = rapid[change.account_id]
        # from the highest stored score of the window down to now, exactly
        assert change.before.score == pytest.approx(r["peak"])
        assert change.after.score == pytest.approx(r["score_now"])
        assert change.delta <= -20 + 1e-9
        assert sum(ln.effect for ln in change.lines) == pytest.approx(change.delta, abs=1e-9)
        assert change.summary().startswith(f"{change.account_id} ")
    assert [c.delta for c in result.declines] == sorted(c.delta for c in result.declines)
    html = result.report_path.read_text()
    assert result.report_path.name == "report.html" and "plotly" in html.lower()


def test_importing_the_api_and_the_cli_loads_no_heavy_library():
    """`healthscore --help` stays fast: the engine's libraries load when a command runs."""
    import subprocess
    import sys

    heavy = ["ibis", "pandas", "sklearn", "scipy", "plotly", "pyarrow", "duckdb"]
    code = (
        "import sys, healthscore.api, healthscore.cli; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_name_the_api_exports_resolves():
    from healthscore import api

    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert api.score is hs.score and api.history.__module__ == "healthscore.api"


def test_api_argument_errors_name_parameters_not_flags():
    from healthscore import api

    with pytest.raises(api.ArgumentError, match="^`train_until` goes with `challenger`$"):
        api.run_backtest(None, None, "2024-01-01", "2024-06-01", train_until="2024-03-01")
    with pytest.raises(api.ArgumentError, match="give `start` and `end`"):
        api.run_backtest(None, None)
    with pytest.raises(api.ArgumentError, match="give `train_until`"):
        api.calibrate_model(None, None)
