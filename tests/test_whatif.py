"""The what-if calculator (the dashboard's model page) takes numbers it can score: text
that Python reads as a float but is no finite number ("nan", "inf", "1e999") is refused
with the metric named. "nan" used to score as the best value there is (a red account
turned green on a typo)."""

from __future__ import annotations

from pathlib import Path

import pytest

import healthscore as hs
from fixtures import AS_OF
from healthscore.engine.whatif import what_if
from healthscore.errors import ScoringError

MODEL = Path(__file__).parent / "models" / "valid" / "definitions.yaml"


@pytest.fixture(scope="module")
def scored(fixture_db):
    model = hs.load_model(MODEL)
    store = hs.connect(fixture_db)
    yield store, model, hs.score(store, model, AS_OF).to_pylist()[0]
    store.close()


def _numeric_metric(model) -> str:
    return next(m for _, m, use in model.scored_metrics() if use.map is None)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_value_that_is_no_finite_number_is_refused_naming_the_metric(scored, value):
    store, model, row = scored
    m = _numeric_metric(model)
    with pytest.raises(ScoringError) as e:
        what_if(store, model, row, {m: value}, set())
    assert f"{m} = {value!r} is not a finite number" in str(e.value)


def test_a_finite_value_is_scored(scored):
    store, model, row = scored
    m = _numeric_metric(model)
    then = what_if(store, model, row, {m: "1e6"}, set())
    assert 0 <= then.explanation.score <= 100


def test_a_negative_count_is_refused_and_a_negative_change_is_not(scored):
    """A count is never negative: -3 late invoices scored as nothing real."""
    store, model, row = scored
    with pytest.raises(ScoringError, match="late_invoices_90d = '-3': a count is never negative"):
        what_if(store, model, row, {"late_invoices_90d": "-3"}, set())
    # a change over a window may fall: taken
    then = what_if(store, model, row, {"events_change": "-0.4"}, set())
    assert 0 <= then.explanation.score <= 100


def test_a_category_the_map_does_not_hold_is_refused_naming_them(scored, tmp_path):
    """A category the metric's map does not hold scored as missing data (a typo changed
    the score as if the value were unknown); case and spaces still do not matter."""
    store, _, _ = scored
    text = MODEL.read_text().replace(
        "      nps: {weight: 1, bad: 0, good: 10, missing: {neutral: 50}}",
        "      nps: {weight: 1, bad: 0, good: 10, missing: {neutral: 50}}\n"
        "      plan_segment: {weight: 1, map: {Enterprise: 100, SMB: 40}}",
    )
    path = tmp_path / "with_map.yaml"
    path.write_text(text)
    model = hs.load_model(path)
    row = hs.score(store, model, AS_OF).to_pylist()[0]
    with pytest.raises(ScoringError) as e:
        what_if(store, model, row, {"plan_segment": "Enterprize"}, set())
    assert "plan_segment = 'Enterprize' is not one of its categories" in str(e.value)
    assert "categories: Enterprise, SMB" in str(e.value)
    low = what_if(store, model, row, {"plan_segment": " smb "}, set()).explanation
    high = what_if(store, model, row, {"plan_segment": "enterprise"}, set()).explanation
    assert high.score > low.score
