"""Property tests: normalisation bounds, exact additivity, point-in-time correctness."""

from __future__ import annotations

import math
from datetime import timedelta

import ibis
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import healthscore as hs
from fixtures import AS_OF, memory_store, tables
from healthscore.engine.scoring import _normalized
from healthscore.model import MetricUse

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@pytest.fixture(scope="module")
def mem_store():
    return memory_store()


def _eval(values, use: MetricUse):
    t = ibis.memtable({"x": pa.array(values, pa.float64())})
    return t.select(n=_normalized(t.x, use)).to_pyarrow()["n"].to_pylist()


@SETTINGS
@given(
    bad=finite,
    good=finite,
    values=st.lists(st.one_of(st.none(), finite), min_size=1, max_size=20),
)
def test_linear_normalisation_stays_within_0_100_and_keeps_nulls(bad, good, values):
    if bad == good:
        return
    out = _eval(values, MetricUse(weight=1, bad=bad, good=good))
    for v, n in zip(values, out, strict=True):
        assert (n is None) == (v is None)
        if n is not None:
            assert 0.0 <= n <= 100.0
            # direction: good scores 100, bad scores 0
    assert _eval([good, bad], MetricUse(weight=1, bad=bad, good=good)) == [100.0, 0.0]


@SETTINGS
@given(
    xs=st.lists(finite, min_size=2, max_size=6, unique=True),
    ys=st.lists(st.floats(0, 100), min_size=6, max_size=6),
    values=st.lists(finite, min_size=1, max_size=20),
)
# points a subnormal apart (the slope overflows) and points whose distance overflows
@example(xs=[-2.225073858507203e-309, 0.0], ys=[0.0, 1.0, 0, 0, 0, 0], values=[0.0, -1e-309])
@example(xs=[-1e308, 1e308], ys=[0.0, 100.0, 0, 0, 0, 0], values=[0.0, 5e307, -1e308])
def test_piecewise_normalisation_stays_within_its_points(xs, ys, values):
    xs = sorted(xs)
    points = list(zip(xs, ys[: len(xs)], strict=True))
    out = _eval(values, MetricUse(weight=1, points=points))
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    for n in out:
        assert lo - 1e-9 <= n <= hi + 1e-9


METRICS = """
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
  users_30d: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}
  activation: {formula: users_30d / seats}
  change: {from: usage_events, aggregate: count(), window: 30d, change_vs: previous}
  since: {from: usage_events, aggregate: days_since(max(ts))}
  open_tickets: {from: tickets, aggregate: count()}
  late:
    {from: invoices, where: "paid_at IS NULL OR paid_at > due_at", aggregate: count(), window: 90d}
  nps: {from: surveys, where: "kind = 'nps'", aggregate: last(score), window: 180d}
"""
NAMES = ["activation", "change", "since", "open_tickets", "late", "nps"]
policy = st.sampled_from(["reweight", "neutral", "penalty", "{neutral: 70}"])
weight = st.integers(0, 10)


@st.composite
def models(draw):
    lines = [METRICS, "pillars:"]
    pillars = {"a": NAMES[:3], "b": NAMES[3:]}
    for p, names in pillars.items():
        pw = draw(st.integers(1, 5))
        lines.append(f"  {p}:\n    weight: {pw}\n    metrics:")
        ws = [draw(weight) for _ in names]
        if sum(ws) == 0:
            ws[0] = 1
        for name, w in zip(names, ws, strict=True):
            bad, good = draw(st.sampled_from([(0, 1), (5, 0), (-0.5, 0.5), (30, 1)]))
            lines.append(
                f"      {name}: {{weight: {w}, bad: {bad}, good: {good}, missing: {draw(policy)}}}"
            )
    if draw(st.booleans()):
        lines.append("segments:\n  by: segment\n  weights:")
        lines.append(
            f"    enterprise: {{a: {draw(st.integers(0, 5))}, b: {draw(st.integers(1, 5))}}}"
        )
    rules = draw(st.lists(rule_specs, max_size=3))
    if rules:
        lines.append("rules:")
        lines += [f'  r{i}: {{when: "{when}", {effect}}}' for i, (when, effect) in enumerate(rules)]
    return hs.load_model_text("\n".join(lines))


conditions = st.sampled_from(
    ["since > 10", "open_tickets >= 1", "has_flag('champion_left')", "activation < 0.5", "true"]
)
effects = st.one_of(
    st.integers(-60, 60).map(lambda v: f"add: {v}"),
    st.integers(0, 100).map(lambda v: f"floor: {v}"),
    st.integers(0, 100).map(lambda v: f"cap: {v}"),
    st.sampled_from(["band: red", "band: green", "signal: watch"]),
)
rule_specs = st.tuples(conditions, effects)


# Every missing-data policy, a zero metric weight, segment weights with a zero pillar and
# every kind of rule effect (add, floor, cap, a band either way, a signal, a score clamped
# at 0: each bites on the fixture's accounts), drawn for sure by these two models, run
# besides the random examples: so 18 random examples (a scoring compile each, most of the
# test's time; 30 before) still draw mixes of what every run covers.
COVERING = [
    METRICS
    + """pillars:
  a:
    weight: 3
    metrics:
      activation: {weight: 2, bad: 0, good: 1, missing: reweight}
      change: {weight: 1, bad: -0.5, good: 0.5, missing: neutral}
      since: {weight: 0, bad: 30, good: 1, missing: penalty}
  b:
    weight: 1
    metrics:
      open_tickets: {weight: 1, bad: 5, good: 0, missing: {neutral: 70}}
      late: {weight: 3, bad: 5, good: 0, missing: penalty}
      nps: {weight: 1, bad: 0, good: 1, missing: reweight}
segments:
  by: segment
  weights:
    enterprise: {a: 0, b: 2}
rules:
  r0: {when: "since > 10", add: -60}
  r1: {when: "since > 10", floor: 90}
  r2: {when: "true", cap: 40}
""",
    METRICS
    + """pillars:
  a:
    weight: 5
    metrics:
      activation: {weight: 1, bad: 30, good: 1, missing: penalty}
      change: {weight: 4, bad: 0, good: 1, missing: {neutral: 70}}
      since: {weight: 2, bad: 5, good: 0, missing: reweight}
  b:
    weight: 1
    metrics:
      open_tickets: {weight: 0, bad: 0, good: 1, missing: neutral}
      late: {weight: 1, bad: -0.5, good: 0.5, missing: neutral}
      nps: {weight: 2, bad: 0, good: 1, missing: penalty}
rules:
  r0: {when: "has_flag('champion_left')", band: red}
  r1: {when: "activation < 0.5", band: green}
  r2: {when: "true", signal: watch}
  r3: {when: "since > 10", add: -60}
""",
]


@settings(max_examples=18, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=models())
@example(model=hs.load_model_text(COVERING[0]))
@example(model=hs.load_model_text(COVERING[1]))
def test_contributions_add_up_to_the_score_for_any_model_and_rules(mem_store, model):
    for r in hs.score(mem_store, model, AS_OF).to_pylist():
        contribs = [r[f"{m}__contribution"] for _, m, _ in model.scored_metrics()]
        contribs += [r[f"rule__{n}__contribution"] for n in model.spec.rules]
        contribs.append(r.get("clamp__contribution") or 0.0)
        if r["score"] is None:
            assert r["band"] is None
            continue
        assert math.isclose(sum(contribs), r["score"], abs_tol=1e-9)
        assert math.isclose(sum(r[f"{m}__weight"] for m in NAMES), 1.0, abs_tol=1e-9)
        assert 0.0 <= r["score"] <= 100.0
        assert 0.0 <= r["coverage"] <= 1.0 + 1e-12


later = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))


@st.composite
def future_rows(draw):
    """Rows dated at or after the as-of date, of every kind that must not matter."""
    kind = draw(st.sampled_from(["event", "subscription", "ticket_closed_later", "survey", "flag"]))
    at = AS_OF + draw(later)
    acc = draw(st.sampled_from(["A1", "A2", "A3"]))
    return kind, at, acc


def _apply(store, row, i):
    kind, at, acc = row
    ts = pa.array([at], pa.timestamp("us"))
    if kind == "event":
        store.load(
            "usage_events",
            pa.table(
                {
                    "event_id": [f"F{i}"],
                    "account_id": [acc],
                    "user_id": ["new"],
                    "event": ["x"],
                    "ts": ts,
                    "quantity": [5.0],
                }
            ),
        )
    elif kind == "subscription":
        store.load(
            "subscriptions",
            pa.table(
                {
                    "subscription_id": [f"FS{i}"],
                    "account_id": [acc],
                    "seats": [99.0],
                    "arr": [9e5],
                    "start_date": pa.array([at + timedelta(microseconds=1)], pa.timestamp("us")),
                    "end_date": pa.array([None], pa.timestamp("us")),
                }
            ),
        )
    elif kind == "ticket_closed_later":
        t1 = tables()["tickets"].slice(0, 1).to_pylist()[0]  # T1, open at D
        t1["closed_at"] = max(at, AS_OF)
        store.load("tickets", pa.Table.from_pylist([t1], schema=tables()["tickets"].schema))
    elif kind == "survey":
        store.load(
            "surveys",
            pa.table(
                {
                    "response_id": [f"FR{i}"],
                    "account_id": [acc],
                    "ts": ts,
                    "kind": ["nps"],
                    "score": [0.0],
                }
            ),
        )
    else:
        store.load(
            "flags",
            pa.table(
                {
                    "flag_id": [f"FF{i}"],
                    "account_id": [acc],
                    "ts": ts,
                    "kind": ["champion_left"],
                }
            ),
        )


@pytest.fixture(scope="module")
def default_scores(mem_store):
    return hs.score(mem_store, hs.load_model(), AS_OF)


class _Undo(Exception):
    """Raised to roll an example's rows back."""


@pytest.fixture(scope="module")
def future_store(default_scores):
    """A fixture store of this test's own and the default model's scoring query compiled
    once with its dates as parameters (``ScorePlan``: ``hs.score``'s expression, as
    ``healthscore score`` and the rescorer run it; a compile per example was most of the
    test's time). Before any row is added it gives exactly ``hs.score``'s table."""
    from healthscore.engine.plan import ScorePlan

    store = memory_store()
    plan = ScorePlan(hs.load_model())
    assert plan.run(store, AS_OF).equals(default_scores)
    return store, plan


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(future_rows(), min_size=1, max_size=4))
def test_rows_dated_after_as_of_never_change_that_score(default_scores, future_store, rows):
    store, plan = future_store
    before = default_scores
    # each example's rows go into the store inside a transaction that is rolled back
    # after the example has scored: the next example starts from the fixture tables
    with pytest.raises(_Undo):
        with store.transaction():
            for i, row in enumerate(rows):
                _apply(store, row, i)
            after = plan.run(store, AS_OF)
            raise _Undo
    assert after.equals(before)
    assert store.count("usage_events") == len(tables()["usage_events"])


dates = st.sampled_from(
    [AS_OF - timedelta(days=d) for d in (0, 3, 10, 20, 35, 60, 120)] + [AS_OF + timedelta(days=4)]
)


# each example scores two accounts at two dates (four compiles): 12 examples still draw
# models with and without segments and rules over the eight dates
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=models(), d1=dates, d2=dates)
def test_a_change_decomposes_exactly_into_its_lines(mem_store, model, d1, d2):
    for account in ("A1", "A2"):
        try:
            change = hs.api.explain_change(mem_store, model, account, d2, d1)
        except hs.ScoringError:
            continue  # not scored at one of the dates
        total = sum(ln.effect for ln in change.lines)
        assert math.isclose(total, change.delta, abs_tol=1e-9)
