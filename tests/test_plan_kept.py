"""A compiled score plan kept as a DuckDB statement (planned once per connection, its
values read from a temporary table): its rows are those of ``score()`` for any
accounts and date, they follow data written after the statement was prepared, and a
read-only store runs it too."""

from __future__ import annotations

import random
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

import fixtures


def _ids(store, n: int, seed: int) -> list[str]:
    ids = store.execute(store.table("accounts").select("account_id"))["account_id"].to_pylist()
    return random.Random(seed).sample(sorted(ids), min(n, len(ids)))


def _kept(store, plan) -> list[str]:
    """Names of the statements this store's connection keeps for ``plan``."""
    return [store._backend._statements.get(p, "") for p, _ in plan._plans.values()]


def test_a_kept_plan_follows_data_written_after_it_was_prepared(demo_project):
    from healthscore.engine.asof import score
    from healthscore.engine.plan import ScorePlan
    from healthscore.model import load_model
    from healthscore.store import connect

    store = connect(demo_project.db_path)
    reader = store.reader()  # as the service scores: a second connection
    model = load_model(demo_project.model_path)
    card = model.scorecard(model.scorecard_names()[0])
    plan = ScorePlan(card)
    end = fixtures.DEMO_END
    try:
        ids = _ids(store, 3, 5)
        before = plan.run(reader, end, ids[:1])
        assert before.equals(score(store, card, end, ids[:1]))
        assert all(name.startswith("hs_plan_") for name in _kept(reader, plan))
        # new events of the account (yesterday, copies of one of its own)
        events = store.execute(
            store.table("usage_events").filter(lambda t: t.account_id == ids[0]).limit(1)
        )
        assert events.num_rows == 1
        ts = pa.array([end - timedelta(days=1)] * 40, events.schema.field("ts").type)
        more = pa.concat_tables([events] * 40).set_column(
            events.schema.get_field_index("ts"), "ts", ts
        )
        store.insert("usage_events", more)
        after = plan.run(reader, end, ids[:1])
        assert after.equals(score(store, card, end, ids[:1]))
        assert not after.equals(before)  # 40 more events in its metrics
        # the same statement, other accounts and another date
        for n, d in ((3, end), (2, end - timedelta(days=40, hours=5))):
            assert plan.run(reader, d, ids[:n]).equals(score(store, card, d, ids[:n]))
        assert plan.builds == 2  # 1 and 4 slots
    finally:
        reader.close()
        store.close()


def test_a_read_only_store_runs_a_kept_plan(demo_project):
    from healthscore.engine.asof import score
    from healthscore.engine.plan import ScorePlan
    from healthscore.model import load_model
    from healthscore.store import connect

    store = connect(demo_project.db_path, read_only=True)
    model = load_model(demo_project.model_path)
    card = model.scorecard(model.scorecard_names()[0])
    plan = ScorePlan(card)
    try:
        for n, seed in ((1, 2), (5, 3)):
            ids = _ids(store, n, seed)
            rows = plan.run(store, fixtures.DEMO_END, ids)
            assert rows.equals(score(store, card, fixtures.DEMO_END, ids))
            assert rows.num_rows >= 1
        everyone = plan.run(store, fixtures.DEMO_END)
        assert everyone.equals(score(store, card, fixtures.DEMO_END))
        assert pc.count(everyone["score"]).as_py() > 0
        assert all(name.startswith("hs_plan_") for name in _kept(store, plan))
    finally:
        store.close()


def test_a_kept_plan_is_planned_again_once_when_the_catalog_changes(demo_project):
    # DuckDB plans a kept statement again at every run once a table was made after it
    # was prepared (and never keeps that plan): the statement is prepared again instead,
    # once, and its rows stay those of score()
    from healthscore.engine.asof import score
    from healthscore.engine.plan import ScorePlan
    from healthscore.model import load_model
    from healthscore.store import connect

    store = connect(demo_project.db_path)
    reader = store.reader()
    model = load_model(demo_project.model_path)
    card = model.scorecard(model.scorecard_names()[0])
    plan = ScorePlan(card)
    end = fixtures.DEMO_END
    backend = reader._backend
    try:
        ids = _ids(store, 4, 9)
        # score() compiled once per account (the store's data does not change here)
        first, second = score(store, card, end, ids[:1]), score(store, card, end, ids[1:2])
        for _ in range(3):
            assert plan.run(reader, end, ids[:1]).equals(first)
        assert backend.plannings == 1  # planned once, then kept
        store.create_table("hs_test_new_table", {"note": "string"})  # the other connection
        for _ in range(3):
            assert plan.run(reader, end, ids[1:2]).equals(second)
        assert backend.plannings == 2  # once more, not at every run
        # another plan's statement (its values table is new in this connection's catalog)
        assert plan.run(reader, end, ids).equals(score(store, card, end, ids))
        for _ in range(3):
            plan.run(reader, end, ids[:1])
            plan.run(reader, end, ids)
        assert backend.plannings == 4  # the 4-slot statement, and the 1-slot one again
        assert all(name.startswith("hs_plan_") for name in _kept(reader, plan))
    finally:
        reader.close()
        store.close()
