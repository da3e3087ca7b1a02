"""Rules (add, floor, cap, band, signal) and several scorecards, on the hand-computed fixture.

As of D the fixture gives users_30d: A1 4, A2 1, A3 0; A1 has ticket T1 open; A2 has an
active champion_left flag (since 2024-12-01). With `good: 10` the base scores are
A1 40, A2 10, A3 0.
"""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from typer.testing import CliRunner

import healthscore as hs
from fixtures import AS_OF, memory_store
from healthscore.cli import app

BASE = """
metrics:
  users_30d: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}
  open_tickets: {from: tickets, aggregate: count()}
bands: {green: 80, yellow: 20}
pillars:
  p: {weight: 1, metrics: {users_30d: {weight: 1, bad: 0, good: 10}}}
"""


@pytest.fixture(scope="module")
def store():
    return memory_store()


def _scores(store, text, as_of=AS_OF):
    model = hs.load_model_text(BASE + text)
    return model, {r["account_id"]: r for r in hs.score(store, model, as_of).to_pylist()}


def _lines_add_up(model, r):
    total = sum(r[f"{m}__contribution"] for _, m, _ in model.scored_metrics())
    total += sum(r[f"rule__{n}__contribution"] for n in model.spec.rules)
    total += r.get("clamp__contribution") or 0.0
    assert math.isclose(total, r["score"], abs_tol=1e-9)


RULES = """
rules:
  busy_but_slipping:            # A1 only: 40 - 30 = 10
    when: "users_30d >= 4"
    add: -30
  someone_uses_it:              # A1 and A2: at least 25
    when: "users_30d >= 1"
    floor: 25
  champion_gone:                # A2 only (flag active at D): at most 5
    when: "has_flag('champion_left')"
    cap: 5
    signal: champion_left
"""


def test_effects_apply_in_order_add_floor_cap_each_with_its_own_line(store):
    model, s = _scores(store, RULES)
    a1, a2, a3 = s["A1"], s["A2"], s["A3"]
    # A1: 40, add -30 -> 10, floor 25 lifts +15 -> 25; no cap
    assert a1["base_score"] == pytest.approx(40.0)
    assert a1["score"] == pytest.approx(25.0)
    assert a1["rule__busy_but_slipping__contribution"] == pytest.approx(-30.0)
    assert a1["rule__someone_uses_it__contribution"] == pytest.approx(15.0)
    assert a1["rule__champion_gone__contribution"] == 0.0
    assert a1["band"] == "yellow"
    # A2: 10, floor 25 (+15), then the cap 5 wins (-20): caps come last
    assert a2["score"] == pytest.approx(5.0)
    assert a2["rule__someone_uses_it__contribution"] == pytest.approx(15.0)
    assert a2["rule__champion_gone__contribution"] == pytest.approx(-20.0)
    assert a2["signals"] == "champion_left" and a1["signals"] is None
    assert a2["band"] == "red"
    # A3: no rule holds
    assert a3["score"] == 0.0 and not any(a3[f"rule__{n}"] for n in model.spec.rules)
    for r in s.values():
        _lines_add_up(model, r)


def test_points_beyond_100_are_taken_back_by_a_clamp_line(store):
    model, s = _scores(store, "rules:\n  star: {when: 'users_30d >= 4', add: 75}\n")
    a1 = s["A1"]
    assert a1["score"] == 100.0
    assert a1["rule__star__contribution"] == 75.0
    assert a1["clamp__contribution"] == pytest.approx(-15.0)
    _lines_add_up(model, a1)


def test_highest_floor_and_lowest_cap_bind(store):
    text = """
rules:
  low_floor: {when: "users_30d >= 1", floor: 20}
  high_floor: {when: "users_30d >= 1", floor: 30}
  loose_cap: {when: "users_30d >= 4", cap: 39}
  tight_cap: {when: "users_30d >= 4", cap: 35}
"""
    model, s = _scores(store, text)
    a1, a2 = s["A1"], s["A2"]
    assert a2["score"] == pytest.approx(30.0)
    assert a2["rule__high_floor__contribution"] == pytest.approx(20.0)
    assert a2["rule__low_floor__contribution"] == 0.0
    assert a1["score"] == pytest.approx(35.0)
    assert a1["rule__tight_cap__contribution"] == pytest.approx(-5.0)
    assert a1["rule__loose_cap__contribution"] == 0.0


def test_a_forced_band_overrides_the_score_and_the_worst_forced_band_wins(store):
    text = """
rules:
  ticket_open: {when: "open_tickets >= 1", band: red}
  big_user: {when: "users_30d >= 4", band: green}
  any_user: {when: "users_30d >= 1", band: yellow}
"""
    model, s = _scores(store, text)
    assert s["A1"]["score"] == pytest.approx(40.0)  # band rules do not move the score
    assert s["A1"]["band"] == "red" and s["A1"]["band_forced_by"] == "ticket_open"
    assert s["A2"]["band"] == "yellow" and s["A2"]["band_forced_by"] == "any_user"
    assert s["A3"]["band"] == "red" and s["A3"]["band_forced_by"] is None


def test_a_flag_rule_holds_only_while_the_flag_is_active():
    resolved = {
        "flag_id": "F9",
        "account_id": "A1",
        "ts": datetime(2024, 12, 10),
        "kind": "budget_freeze",
        "note": None,
        "author": None,
        "resolved_at": datetime(2024, 12, 20),
    }
    store = memory_store(flags=[resolved])
    text = "rules:\n  freeze: {when: \"has_flag('budget_freeze')\", add: -10}\n"
    for day, holds in ((5, False), (15, True), (25, False)):
        _, s = _scores(store, text, datetime(2024, 12, day))
        assert s["A1"]["rule__freeze"] is holds, day


def test_explanations_show_rules_and_changes_split_into_rule_lines(store):
    model = hs.load_model_text(BASE + RULES)
    e = hs.explain(store, model, "A2", AS_OF)
    lines = {r.rule: r for r in e.rules}
    assert (
        lines["champion_gone"].holds
        and lines["champion_gone"].effect == "cap 5, signal champion_left"
    )
    assert e.signals == ["champion_left"] and e.base_score == pytest.approx(10.0)
    # before the flag (2024-11-20) only the floor held: 25 -> 5 is the cap's line
    change = hs.api.explain_change(store, model, "A2", AS_OF, datetime(2024, 11, 20))
    by_name = {ln.name: ln for ln in change.lines}
    assert by_name["champion_gone"].kind == "rule"
    assert by_name["champion_gone"].effect == pytest.approx(-20.0)
    assert math.isclose(sum(ln.effect for ln in change.lines), change.delta, abs_tol=1e-9)
    assert "rule champion_gone now holds (-20.0)" in change.summary()


def test_history_stores_rule_lines_that_add_up(tmp_path):
    from fixtures import write

    db = tmp_path / "f.duckdb"
    write(db)
    store = hs.connect(db)
    model = hs.load_model_text(BASE + RULES)
    hs.api.history(store, model, "2024-12-18", "2025-01-01", "1w")
    lines = store.con.table("score_lines").to_pyarrow().to_pylist()
    scores = store.con.table("scores").to_pyarrow().to_pylist()
    a2 = next(r for r in scores if r["account_id"] == "A2" and r["as_of"] == AS_OF)
    assert a2["signals"] == "champion_left"
    mine = [
        ln
        for ln in lines
        if ln["account_id"] == "A2" and ln["as_of"] == AS_OF and ln["kind"] != "pillar"
    ]
    assert {ln["name"] for ln in mine if ln["kind"] == "rule"} == {*model.spec.rules, "clamp"}
    assert math.isclose(sum(ln["contribution"] for ln in mine), a2["score"], abs_tol=1e-9)


# --- scorecards ---------------------------------------------------------------------

CARDS = """
scorecards:
  reach:
    description: how many people use it, on a stricter scale
    bands: {green: 50, yellow: 30}
    pillars:
      q: {weight: 1, metrics: {users_30d: {weight: 1, bad: 0, good: 5}}}
    rules:
      support_load: {when: "open_tickets >= 1", cap: 50}
  young:
    population: "days_since(created_at) <= 60"
    pillars:
      q: {weight: 1, metrics: {users_30d: {weight: 1, bad: 0, good: 2}}}
"""


def test_each_scorecard_has_its_own_pillars_bands_rules_and_population(store):
    model = hs.load_model_text(BASE + RULES + CARDS)
    assert model.scorecard_names() == ["health", "reach", "young"]
    reach = {
        r["account_id"]: r for r in hs.score(store, model.scorecard("reach"), AS_OF).to_pylist()
    }
    # A1: 4 users of 5 -> 80, capped at 50 by its open ticket; green from 50 in this card
    assert reach["A1"]["score"] == pytest.approx(50.0) and reach["A1"]["band"] == "green"
    assert reach["A2"]["score"] == pytest.approx(20.0) and reach["A2"]["band"] == "red"
    assert "rule__busy_but_slipping" not in reach["A1"]  # health's rules stay in health
    young = hs.score(store, model.scorecard("young"), AS_OF)
    assert young["account_id"].to_pylist() == ["A3"]  # created 2024-12-15: the only young one


def test_a_scorecard_version_ignores_edits_to_other_scorecards():
    a = hs.load_model_text(BASE + CARDS)
    b = hs.load_model_text(BASE + CARDS.replace("good: 2}", "good: 3}"))
    assert a.version == b.version  # health unchanged
    assert a.scorecard("reach").version == b.scorecard("reach").version
    assert a.scorecard("young").version != b.scorecard("young").version
    assert len({a.scorecard(n).version for n in a.scorecard_names()}) == 3
    with pytest.raises(hs.ModelError, match="no scorecard 'growth'; hint: scorecards: health"):
        a.scorecard("growth")


def test_history_and_trends_keep_scorecards_apart(tmp_path):
    from fixtures import write

    db = tmp_path / "f.duckdb"
    write(db)
    model = hs.load_model_text(BASE + CARDS)
    store = hs.connect(db)
    hs.api.history(store, model, "2024-12-01", "2025-01-01", "1w")
    hs.api.history(store, model.scorecard("reach"), "2024-12-01", "2025-01-01", "1w")
    t = store.con.table("scores").to_pyarrow().to_pylist()
    by_card = {}
    for r in t:
        by_card.setdefault(r["scorecard"], {})[(r["account_id"], r["as_of"])] = r["score"]
    assert set(by_card) == {"health", "reach"}
    assert by_card["health"][("A1", AS_OF)] == pytest.approx(40.0)
    assert by_card["reach"][("A1", AS_OF)] == pytest.approx(50.0)


def test_cli_takes_a_scorecard(tmp_path, monkeypatch):
    from fixtures import write

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "healthscore.duckdb")
    (tmp_path / "healthscore.yaml").write_text(BASE + RULES + CARDS)
    runner = CliRunner()
    res = runner.invoke(
        app, ["score", "--as-of", "2025-01-01", "--scorecard", "reach", "-f", "csv"]
    )
    assert res.exit_code == 0, res.output
    header, *rows = res.stdout.strip().splitlines()
    assert "rule__support_load" in header and len(rows) == 3
    res = runner.invoke(app, ["explain", "A2", "--as-of", "2025-01-01"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "champion_gone" in res.output and "signals: champion_left" in res.output
    res = runner.invoke(app, ["score", "--scorecard", "nope"])
    assert res.exit_code == 1 and "no scorecard 'nope'" in res.output


def test_default_model_ships_health_expansion_and_onboarding():
    model = hs.load_model()
    assert model.scorecard_names() == ["health", "expansion", "onboarding"]
    assert model.spec.rules  # health has rules
    onboarding = model.scorecard("onboarding")
    assert "days_to_first_key_action" in {m for _, m, _ in onboarding.scored_metrics()}


def test_a_band_only_rule_shows_in_why_it_moved_though_it_moves_no_points():
    flag = {
        "flag_id": "F8",
        "account_id": "A1",
        "ts": datetime(2024, 12, 10),
        "kind": "budget_freeze",
        "note": None,
        "author": None,
        "resolved_at": None,
    }
    store = memory_store(flags=[flag])
    text = "rules:\n  frozen: {when: \"has_flag('budget_freeze')\", band: red, signal: freeze}\n"
    model = hs.load_model_text(BASE + text)
    change = hs.api.explain_change(store, model, "A1", AS_OF, datetime(2024, 12, 5))
    line = next(ln for ln in change.lines if ln.name == "frozen")
    assert (line.kind, line.raw_before, line.raw_after, line.effect) == ("rule", False, True, 0.0)
    assert change.after.band == "red" and change.after.band_forced_by == "frozen"
    assert "band forced red by rule frozen" in change.summary()
    assert change.to_dict()["after"]["signals"] == ["freeze"]


def test_a_metric_whose_data_arrives_is_its_own_line_not_a_weight_shift():
    """NPS (reweight) has no answer before 2024-10-01 and a 9 after: its line says so."""
    text = """
metrics:
  events_30d: {from: usage_events, aggregate: count(), window: 30d}
  nps: {from: surveys, aggregate: last(score), window: 365d}
pillars:
  p:
    weight: 1
    metrics:
      events_30d: {weight: 1, bad: 0, good: 10}
      nps: {weight: 1, bad: 0, good: 10, missing: reweight}
"""
    model = hs.load_model_text(text)
    store = memory_store()
    before, after = datetime(2024, 9, 15), datetime(2024, 10, 15)
    change = hs.api.explain_change(store, model, "A1", after, before, stored=False)
    lines = {ln.name: ln for ln in change.lines}
    # before: only events_30d, weight 1, 3 events -> 30; after: 9 -> 90 at weight 1/2
    assert lines["nps"].raw_before is None and lines["nps"].raw_after == 9.0
    assert lines["nps"].effect == pytest.approx(45.0)  # its whole new contribution
    shifted = lines["weights"].effect if "weights" in lines else 0.0
    assert shifted == pytest.approx(change.delta - 45.0 - lines["events_30d"].effect, abs=1e-9)
    assert sum(ln.effect for ln in change.lines) == pytest.approx(change.delta, abs=1e-9)
    back = hs.api.explain_change(store, model, "A1", before, after, stored=False)
    assert {ln.name: ln for ln in back.lines}["nps"].effect == pytest.approx(-45.0)
