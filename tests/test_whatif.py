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
