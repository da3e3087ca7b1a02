"""Normalisation, weights, missing-data policies, segments, bands and exact contributions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import healthscore as hs
from fixtures import AS_OF
from healthscore.engine.explain import from_row

MODEL = Path(__file__).parent / "models" / "valid" / "definitions.yaml"


@pytest.fixture(scope="module")
def model():
    return hs.load_model(MODEL)


@pytest.fixture(scope="module")
def scored(fixture_db, model):
    """The fixture store scored by MODEL as of AS_OF, once for the module (tests only read)."""
    s = hs.connect(fixture_db)
    try:
        return hs.score(s, model, AS_OF)
    finally:
        s.close()


@pytest.fixture
def rows(scored):
    return {r["account_id"]: r for r in scored.to_pylist()}


def test_enterprise_weights_and_linear_normalisation(rows):
    a1 = rows["A1"]
    # usage (20 %): seat activation 0.4 -> 50, change +100 % -> 100; financial (80 %): 100, 90
    assert a1["pillar__usage"] == pytest.approx(75.0)
    assert a1["pillar__financial"] == pytest.approx(95.0)
    assert a1["score"] == pytest.approx(91.0)
    assert a1["band"] == "green"
    assert a1["coverage"] == pytest.approx(1.0)


def test_missing_metric_is_reweighted_within_its_pillar_and_neutral_is_fifty(rows):
    a2 = rows["A2"]
    assert a2["events_change__missing"] == "reweight"
    assert a2["events_change__weight"] == 0.0
    assert a2["seat_activation__weight"] == pytest.approx(0.6)  # whole usage pillar
    assert a2["nps__missing"] == "neutral"
    assert a2["nps__norm"] == 50.0
    assert a2["score"] == pytest.approx(25.0)
    assert a2["band"] == "red"
    assert a2["coverage"] == pytest.approx(0.5)


def test_pillar_without_data_shares_its_weight_with_the_other_pillars(rows):
    a3 = rows["A3"]
    assert a3["pillar__usage"] is None
    assert a3["late_invoices_90d__weight"] == pytest.approx(0.5)
    assert a3["score"] == pytest.approx(75.0)
    assert a3["band"] == "yellow"
    assert a3["coverage"] == pytest.approx(0.2)


def test_contributions_sum_exactly_to_score(rows, model):
    for r in rows.values():
        total = sum(r[f"{m}__contribution"] for _, m, _ in model.scored_metrics())
        assert abs(total - r["score"]) <= 1e-9
        weights = sum(r[f"{m}__weight"] for _, m, _ in model.scored_metrics())
        assert weights == pytest.approx(1.0)


def test_same_data_and_model_give_identical_output(store, model, scored):
    a = scored  # computed by the module's own run on its own connection
    b = hs.score(store, model, AS_OF)
    assert a.equals(b)


def test_explanation_lists_segment_weights_and_missing_treatment(store, model):
    e = hs.explain(store, model, "A2", AS_OF)
    assert e.segment == "smb" and e.segment_weights_used == "default"
    assert any("events_change: no data; its weight was shared" in s for s in e.missing_summary())
    assert any("nps: no data; scored 50 by the neutral policy" in s for s in e.missing_summary())
    assert sum(m.contribution for m in e.metrics) == pytest.approx(e.score, abs=1e-9)
    e1 = hs.explain(store, model, "A1", AS_OF)
    assert e1.segment_weights_used == "enterprise"
    assert [p.model_weight for p in e1.pillars] == pytest.approx([0.2, 0.8])


def test_explain_unknown_or_unscored_account_says_why(store, model):
    with pytest.raises(hs.ScoringError, match="unknown account 'NOPE'"):
        hs.explain(store, model, "NOPE", AS_OF)
    with pytest.raises(
        hs.ScoringError, match="'A4' is not scored .*: it was created on 2025-02-01"
    ):
        hs.explain(store, model, "A4", AS_OF)
    with pytest.raises(hs.ScoringError, match="none of its subscriptions .* ended on 2024-06-01"):
        hs.explain(store, model, "A5", AS_OF)


def test_piecewise_points_and_map_normalisation(store):
    model = hs.load_model_text(
        """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
  seg: {column: segment}
pillars:
  p:
    weight: 1
    metrics:
      seats: {weight: 1, points: [[0, 0], [5, 50], [10, 100]]}
      seg: {weight: 1, map: {enterprise: 100, smb: 20}, missing: {penalty: 0}}
"""
    )
    rows = {r["account_id"]: r for r in hs.score(store, model, AS_OF).to_pylist()}
    assert rows["A1"]["seats__norm"] == 100.0
    assert rows["A2"]["seats__norm"] == 50.0
    assert rows["A2"]["seg__norm"] == 20.0
    assert rows["A3"]["seg__norm"] == 0.0  # mid-market is not in the map: penalty
    assert rows["A3"]["seg__missing"] == "penalty"
    assert from_row(model, rows["A1"]).score == pytest.approx(100.0)


def test_a_value_at_the_bad_end_of_a_falling_scale_is_zero_not_minus_zero(store):
    """``bad`` above ``good`` (fewer is better): a value exactly at ``bad`` normalizes to
    0.0, not -0.0, which every page and the JSON showed as "-0.0" and "-0.00"."""
    import json
    import math

    model = hs.load_model_text(
        """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
pillars:
  p: {weight: 1, metrics: {seats: {weight: 1, bad: 5, good: 0}}}
"""
    )
    a2 = {r["account_id"]: r for r in hs.score(store, model, AS_OF).to_pylist()}["A2"]
    assert a2["seats"] == 5.0 and a2["seats__norm"] == 0.0
    assert math.copysign(1.0, a2["seats__norm"]) == 1.0
    line = from_row(model, a2).metrics[0]
    assert math.copysign(1.0, line.contribution) == 1.0
    assert "-0.0" not in json.dumps([line.normalized, line.contribution])


def test_data_only_in_a_zero_weight_pillar_gives_no_score_not_zero(store):
    model = hs.load_model_text(
        """
metrics:
  users: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}
  nps: {from: surveys, aggregate: last(score), window: 180d}
pillars:
  usage: {weight: 1, metrics: {users: {weight: 1, bad: 0, good: 4}}}
  relationship: {weight: 1, metrics: {nps: {weight: 1, bad: 0, good: 10}}}
segments:
  by: segment
  weights:
    smb: {usage: 0}
"""
    )
    a2 = {r["account_id"]: r for r in hs.score(store, model, AS_OF).to_pylist()}["A2"]
    assert a2["score"] is None and a2["band"] is None  # smb: usage weighs 0, no NPS


def test_log_of_a_negative_value_is_missing_not_a_crash(store):
    model = hs.load_model_text(
        """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
  odd: {formula: ln(0 - seats)}
pillars:
  p: {weight: 1, metrics: {odd: {weight: 1, bad: 0, good: 1}, seats: {weight: 1, bad: 0, good: 10}}}
"""
    )
    rows = {r["account_id"]: r for r in hs.score(store, model, AS_OF).to_pylist()}
    assert rows["A1"]["odd"] is None and rows["A1"]["odd__missing"] == "reweight"


def test_a_formula_that_is_no_finite_number_is_missing_not_the_best_value(fresh_store):
    # power(-8, 0.5) is NaN and exp(10000) infinite: both scored as the best value there
    # is (normalized 100, NaN comparing above every number), and the JSON said NaN
    model = hs.load_model_text(
        """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
  root: {formula: "power(0 - seats - 1, 0.5)"}
  huge: {formula: exp(seats * 10000)}
pillars:
  p:
    weight: 1
    metrics:
      root: {weight: 1, bad: 0, good: 1}
      huge: {weight: 1, bad: 0, good: 1}
      seats: {weight: 1, bad: 0, good: 100}
"""
    )
    rows = {r["account_id"]: r for r in hs.score(fresh_store, model, AS_OF).to_pylist()}
    a1 = rows["A1"]
    for m in ("root", "huge"):
        assert a1[m] is None and a1[f"{m}__norm"] is None and a1[f"{m}__missing"] == "reweight"
    assert a1["score"] == pytest.approx(10.0)  # 10 seats of 100: the one metric with data
    # the same in stored history (the many-dates path) and in the JSON of an explanation
    hs.api.history(fresh_store, model, AS_OF, AS_OF)
    stored = fresh_store.execute(fresh_store.stored("score_lines")).to_pylist()
    odd = [r for r in stored if r["account_id"] == "A1" and r["name"] in ("root", "huge")]
    assert len(odd) == 2 and all(r["raw"] is None and r["contribution"] == 0 for r in odd)
    text = hs.api.explain_account(fresh_store, model, "A1", AS_OF).explanation.to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))


def test_why_it_moved_names_the_metrics_and_a_segment_change(store):
    model = hs.load_model(Path(__file__).parent / "models" / "valid" / "segment_from_arr.yaml")
    change = hs.api.explain_change(store, model, "A1", AS_OF, "2024-12-01")
    by_name = {ln.name: ln for ln in change.lines}
    # A1 renewed into a bigger contract (segment small -> big): support now weighs 75 %
    assert by_name["weights"].raw_before == "small" and by_name["weights"].raw_after == "big"
    assert by_name["open_tickets"].raw_before == 0 and by_name["open_tickets"].raw_after == 1
    assert by_name["open_tickets"].effect == pytest.approx(0.5 * (50 - 100))
    assert sum(ln.effect for ln in change.lines) == pytest.approx(change.delta, abs=1e-9)
    assert change.summary().startswith("A1 ")
    assert "open_tickets 0 -> 1 (-25.0)" in change.summary()


def test_a_segment_with_bands_of_its_own_is_banded_by_them(store):
    text = """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
pillars:
  p: {weight: 1, metrics: {seats: {weight: 1, points: [[0, 0], [5, 50], [10, 100]]}}}
bands: {green: 80, yellow: 40}
segments:
  by: segment
"""
    plain = hs.load_model_text(text)
    own = hs.load_model_text(text + "  bands:\n    smb: {green: 95, yellow: 60}\n")
    a = {r["account_id"]: r for r in hs.score(store, plain, AS_OF).to_pylist()}
    b = {r["account_id"]: r for r in hs.score(store, own, AS_OF).to_pylist()}
    # A2 (smb) scores 50: yellow by the model's bands, red by its segment's
    assert a["A2"]["score"] == b["A2"]["score"] == pytest.approx(50.0)
    assert (a["A2"]["band"], b["A2"]["band"]) == ("yellow", "red")
    # other segments keep the model's bands
    assert b["A1"]["band"] == a["A1"]["band"] == "green"
    assert own.version != plain.version
    assert own.bands_for("smb").yellow == 60 and own.bands_for("enterprise").yellow == 40
    # a segments section without bands keeps the version it had before bands existed
    no_bands = hs.load_model_text(text + "  weights: {smb: {p: 1}}\n")
    assert (
        no_bands.version
        == hs.load_model_text(text + "  weights: {smb: {p: 1}}\n  bands: {}\n").version
    )


def test_an_explanation_as_data_holds_every_field_and_line(store, model):
    """``to_dict`` (what the service stores and the JSON output shows) is the whole
    explanation: the fields, pillar and metric lines and points ``asdict`` gives."""
    import json
    from dataclasses import asdict

    shaped = hs.load_model_text(
        """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
pillars:
  p:
    weight: 1
    metrics:
      seats: {weight: 1, points: [[0, 0], [5, 50], [10, 100]]}
"""
    )
    for m, account in ((model, "A1"), (model, "A2"), (shaped, "A1")):
        e = hs.explain(store, m, account, AS_OF)
        want = asdict(e)
        want["as_of"] = e.as_of.isoformat()
        assert e.to_dict() == want
        assert e.to_dict()["metrics"] and e.to_dict()["pillars"]
        # the service's stored text, written without the copy: the same characters
        assert e.to_json() == json.dumps(want, default=str)
    assert e.to_dict()["metrics"][0]["points"] == [(0.0, 0.0), (5.0, 50.0), (10.0, 100.0)]
