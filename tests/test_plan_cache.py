"""Scoring plans compiled once per process: a store whose tables have the columns of one
scored before runs the plan compiled then, whatever rows it holds; anything the query
depends on (the model's content, not only its version; the columns of the tables it
reads; which of them are empty; the number of accounts) compiles a plan of its own.

Each check compares the rows with a fresh compile of the expression
(:func:`healthscore.engine.asof.score_expr` run by :meth:`Store.execute`), and the
builds with :data:`healthscore.store.compiled_plans`' count.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import fixtures
from healthscore.engine import asof
from healthscore.model import load_model, load_model_text
from healthscore.model.load import default_model_text
from healthscore.store import PlanCache, compiled_plans, connect


def _fresh(store, model, as_of, ids=None) -> pa.Table:
    """The rows of the expression built and compiled now (what score() did before)."""
    return store.execute(asof.score_expr(store, model, as_of, ids))


def _scored_after(warm, model, store, *, builds: int = 1) -> pa.Table:
    """``store`` scored by ``model`` as of the fixture date right after ``warm`` (a store
    and model) was: with ``builds`` new compiles (1: the plan is not shared), and the
    rows a fresh compile gives."""
    asof.score(*warm, fixtures.AS_OF)
    built = compiled_plans.builds
    rows = asof.score(store, model, fixtures.AS_OF)
    assert compiled_plans.builds == built + builds
    assert rows.equals(_fresh(store, model, fixtures.AS_OF))
    return rows


def _store(**tables) -> object:
    """An in-memory store holding ``tables`` (name -> Arrow rows)."""
    store = connect("duckdb://")
    for name, rows in tables.items():
        store.load(name, rows)
    return store


def _without(name: str):
    """The fixture tables with ``name`` left empty (never loaded)."""
    return {n: t for n, t in fixtures.tables().items() if n != name}


def test_a_second_store_with_the_same_model_and_columns_scores_without_a_build():
    model = load_model(None)
    first = fixtures.memory_store()
    # other rows, same columns: a later contract for A3 and more events for A2
    later = fixtures.D(2024, 12, 20)
    second = fixtures.memory_store(
        subscriptions=[
            {
                "subscription_id": "S9",
                "account_id": "A3",
                "plan": "pro",
                "seats": 40.0,
                "mrr": 4000.0,
                "arr": 48000.0,
                "start_date": later,
                "end_date": later + timedelta(days=365),
                "billing_period_months": 12,
                "auto_renew": True,
            }
        ],
        usage_events=[
            {
                "event_id": f"X{i}",
                "account_id": "A2",
                "user_id": f"w{i}",
                "event": "export",
                "ts": fixtures.AS_OF - timedelta(days=i + 1),
                "quantity": 1.0,
            }
            for i in range(6)
        ],
    )
    try:
        ids = ["A1", "A2", "A3"]
        asof.score(first, model, fixtures.AS_OF)
        asof.score(first, model, fixtures.AS_OF, ids)
        asof.explain(first, model, "A1", fixtures.AS_OF)
        built = compiled_plans.builds
        # another store, another date, another number of ids of the same slots
        noon = fixtures.AS_OF + timedelta(days=3, hours=12)
        everyone = asof.score(second, model, noon)
        some = asof.score(second, model, noon, ["A3", "A2"])
        one = asof.explain(second, model, "A2", noon)
        assert compiled_plans.builds == built  # nothing built or compiled
        assert everyone.equals(_fresh(second, model, noon))
        assert some.equals(_fresh(second, model, noon, ["A2", "A3"]))
        assert one.score == _fresh(second, model, noon, ["A2"])["score"][0].as_py()
        # the plan carries no rows: the second store's own data is what is scored
        assert not everyone.equals(asof.score(first, model, noon))
    finally:
        first.close()
        second.close()


def test_a_changed_weight_with_the_same_version_compiles_its_own_plan():
    # the version rounds normalised weights to 12 digits: 30 and 30 + 1e-11 share one
    base, yaml = load_model(None), default_model_text()
    assert "\n    weight: 30\n" in yaml
    nudged = load_model_text(yaml.replace("\n    weight: 30\n", "\n    weight: 30.00000000001\n"))
    assert nudged.version == base.version
    store = fixtures.memory_store()
    try:
        rows = _scored_after((store, base), nudged, store)
        # what the plan of the same version would have given: other scores
        assert not rows.equals(_fresh(store, base, fixtures.AS_OF))
    finally:
        store.close()


PROBABILITY = """
metrics:
  hint: {column: hint}
columns: {accounts: {hint: float64}}
pillars:
  p: {weight: 1, metrics: {hint: {weight: 1, bad: 0, good: 100}}}
probability: {outcome: churned, horizon: 90d, points: [[0, %s], [100, 0.02]]}
"""


def _hinted(hints: list) -> object:
    return _store(
        accounts=pa.table(
            {
                "account_id": [f"H{i}" for i in range(len(hints))],
                "created_at": pa.array([fixtures.D(2024, 1, 1)] * len(hints), pa.timestamp("us")),
                "hint": hints,
            }
        )
    )


def test_a_refitted_probability_curve_keeps_the_version_but_not_the_plan():
    # fitted artefacts that never move a score stay out of the version; the probability
    # column of the rows still moves with them
    old, refit = load_model_text(PROBABILITY % 0.6), load_model_text(PROBABILITY % 0.9)
    assert old.version == refit.version
    store = _hinted([20.0, 55.0, 90.0])
    try:
        before = asof.score(store, old, fixtures.AS_OF)
        built = compiled_plans.builds
        after = asof.score(store, refit, fixtures.AS_OF)
        assert compiled_plans.builds == built + 1
        assert after.equals(_fresh(store, refit, fixtures.AS_OF))
        assert after["probability"].to_pylist() != before["probability"].to_pylist()
    finally:
        store.close()


def test_a_column_of_another_type_compiles_its_own_plan():
    model = load_model_text(PROBABILITY % 0.6)
    floats, ints = _hinted([20.0, 90.0]), _hinted([20, 90])
    try:
        rows = _scored_after((floats, model), model, ints)
        assert rows.schema.field("hint").type == pa.int64()  # the plan of floats: double
    finally:
        floats.close()
        ints.close()


def test_an_empty_table_compiles_its_own_plan_and_its_metrics_read_as_missing():
    from healthscore.engine.inputs import tables_needed
    from healthscore.engine.metrics import MetricBuilder
    from healthscore.engine.scoring import score_metrics

    model = load_model(None)
    full, no_tickets = fixtures.memory_store(), _store(**_without("tickets"))
    try:
        rows = _scored_after((full, model), model, no_tickets)
        # the plan of a store whose tickets table has rows reads "no ticket" as a real
        # zero: other scores
        as_zero = no_tickets.execute(
            score_metrics(
                MetricBuilder(model, no_tickets.tables(tables_needed(model))).build(fixtures.AS_OF),
                model,
            )
        )
        assert not rows.equals(as_zero)
        assert rows["open_tickets"].null_count == rows.num_rows
    finally:
        full.close()
        no_tickets.close()


def test_each_number_of_account_slots_has_its_plan_and_a_large_list_runs_every_account():
    model = load_model(None)
    store = fixtures.memory_store()
    try:
        d = fixtures.AS_OF + timedelta(hours=5)
        # the oracle: everyone's rows from one fresh compile, narrowed to the accounts
        # asked for (an account's row never depends on who else is scored; a fresh
        # compile per list cost ~1 s of CPU each)
        everyone = _fresh(store, model, d)
        assert everyone.num_rows == 3

        def only(ids: list[str]) -> pa.Table:
            return everyone.filter(pc.is_in(everyone["account_id"], pa.array(ids, pa.string())))

        for ids in (["A1"], ["A5", "A1", "A1"], ["A2", "A3", "A5", "A1", "A4"], [], ["nobody"]):
            assert asof.score(store, model, d, ids).equals(only(ids))
        many = [f"Z{i:03}" for i in range(300)] + ["A2", "A1"]
        assert asof.score(store, model, d, many).equals(only(many))
        assert only(many).num_rows == 2
    finally:
        store.close()


def test_the_process_keeps_the_plans_used_last():
    kept = PlanCache(2)
    for key in ("a", "b"):
        kept.put((key,), (None, key))
    assert kept.get(("a",)) == (None, "a")  # now used after b
    kept.put(("c",), (None, "c"))
    assert kept.get(("b",)) is None
    assert [kept.get((k,)) for k in ("a", "c")] == [(None, "a"), (None, "c")]
    assert len(kept) == 2
    assert len(compiled_plans) <= compiled_plans.size


def test_a_second_postgresql_store_scores_without_a_build():
    model = load_model(None)
    d = datetime(2025, 1, 3, 6)  # the second survey (2025-01-02) counts
    with fixtures.postgres_store() as one, fixtures.postgres_store() as two:
        for name, rows in fixtures.tables().items():
            one.load(name, rows)
            if name != "surveys":
                two.load(name, rows)
        two.load("surveys", fixtures.tables()["surveys"].slice(0, 1))
        asof.score(one, model, d)
        built = compiled_plans.builds
        rows = asof.score(two, model, d)
        assert compiled_plans.builds == built
        assert rows.equals(_fresh(two, model, d))
        assert not rows.equals(asof.score(one, model, d))


@pytest.mark.parametrize("bad", ["A1'; DROP TABLE accounts; --", "A1\\"])
def test_account_ids_are_values_never_sql(bad):
    model = load_model(None)
    store = fixtures.memory_store()
    try:
        assert asof.score(store, model, fixtures.AS_OF, [bad]).num_rows == 0
        assert store.count("accounts") == 5
    finally:
        store.close()


def test_the_accounts_left_out_and_the_trends_of_a_date_run_plans_compiled_once():
    from healthscore.engine.history import backfill
    from healthscore.engine.metrics import MetricBuilder
    from healthscore.engine.trends import classify, trends_expr

    model = load_model(None)
    first, second = fixtures.memory_store(), fixtures.memory_store()
    try:
        end = fixtures.AS_OF + timedelta(days=14)
        for store in (first, second):
            dates = [end - timedelta(days=7 * k) for k in range(8, -1, -1)]
            backfill(store, model, dates, lambda d, s=store: asof.score(s, model, d))
        asof.left_out(first, model, end)
        classify(first, model, end)
        built = compiled_plans.builds
        for d in (end, end - timedelta(days=7)):
            out = asof.left_out(second, model, d)
            trends = classify(second, model, d)
            built_now = MetricBuilder(model, second.tables()).left_out(d).order_by("account_id")
            assert out.equals(second.execute(built_now))
            # A4 created after the date, A5 with no subscription in force
            assert out["account_id"].to_pylist() == ["A4", "A5"]
            fresh = second.execute(trends_expr(second, model, d))
            # (a line through one point has no R²: NaN, which equals() never matches)
            assert trends.schema == fresh.schema
            assert repr(trends.to_pylist()) == repr(fresh.to_pylist())
            assert trends.num_rows == 3
        assert compiled_plans.builds == built
    finally:
        first.close()
        second.close()


def test_a_second_backfill_of_the_model_on_the_same_columns_compiles_nothing():
    """The scores of every account at many dates (a backfill's pass): compiled once with
    the dates as parameters; as many dates of the same shape on a store of the same
    columns (other rows, other dates) run that plan, and another shape compiles its own.
    The rows are always those of the expression built for the dates."""
    from healthscore.engine import timeline

    model = load_model(None)
    # a shape no other test uses: 7 dates 11 days apart (same process, same plans)
    first_dates = [fixtures.AS_OF - timedelta(days=11 * k) for k in range(6, -1, -1)]
    later = [d + timedelta(days=4) for d in first_dates]
    first = fixtures.memory_store()
    second = fixtures.memory_store(
        usage_events=[
            {
                "event_id": f"X{i}",
                "account_id": "A2",
                "user_id": f"w{i}",
                "event": "export",
                "ts": later[-1] - timedelta(days=3 * i + 1),
                "quantity": 1.0,
            }
            for i in range(6)
        ]
    )
    try:
        built = compiled_plans.builds
        timeline.score_dates(first, model, first_dates)
        assert compiled_plans.builds == built + 1
        built = compiled_plans.builds
        two = timeline.score_dates(second, model, later)
        assert compiled_plans.builds == built  # nothing built or compiled
        assert two.equals(second.execute(timeline.dates_expr(second, model, later)))
        assert sorted(set(two["as_of"].to_pylist())) == later
        # the plan carries no rows: the second store's own events are scored
        assert not two.equals(timeline.score_dates(first, model, later))
        # the same dates with an offset are the same instants: the same rows
        plus2 = timezone(timedelta(hours=2))
        aware = [(d + timedelta(hours=2)).replace(tzinfo=plus2) for d in later]
        assert timeline.score_dates(second, model, aware).equals(two)
        # the same number of dates, neither evenly spaced nor all midnights: another plan
        other = [*later[:-1], later[-1] + timedelta(hours=6)]
        built = compiled_plans.builds
        got = timeline.score_dates(second, model, other)
        assert compiled_plans.builds == built + 1
        assert got.equals(second.execute(timeline.dates_expr(second, model, other)))
    finally:
        first.close()
        second.close()


def test_the_account_list_in_another_order_runs_the_plan_compiled_for_the_first():
    """``healthscore score --sort ...``: the list's query holds the order of every sort,
    the one asked for bound at the run; each order is still the one the sort promises
    (rows without the value last, ties by account id)."""
    from healthscore.engine.snapshot import Snapshot
    from healthscore.portfolio import listed_scores

    model = load_model(None)
    store = fixtures.memory_store()

    def expected(rows: list[dict], column: str, descending: bool) -> list[str]:
        have = sorted((r for r in rows if r[column] is not None), key=lambda r: r["account_id"])
        have.sort(key=lambda r: r[column], reverse=descending)  # stable: ties by id
        rest = sorted((r for r in rows if r[column] is None), key=lambda r: r["account_id"])
        return [r["account_id"] for r in have + rest]

    try:
        plans = Snapshot(store, model)
        listed_scores(store, model, fixtures.AS_OF, plans, "score")
        built = compiled_plans.builds
        orders = {}
        for sort, column, descending in (
            ("arr", "arr_in_force", True),
            ("renewal", "renewal_date", False),
            ("score", "score", model.highest_first),
            ("name", "account_id", False),
        ):
            rows = listed_scores(store, model, fixtures.AS_OF, plans, sort).to_pylist()
            assert len(rows) == 3
            orders[sort] = [r["account_id"] for r in rows]
            assert orders[sort] == expected(rows, column, descending), sort
        assert compiled_plans.builds == built  # nothing built or compiled
        assert len(set(map(tuple, orders.values()))) > 1  # the orders differ
    finally:
        store.close()
