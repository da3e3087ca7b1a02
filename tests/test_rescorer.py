"""Real-time rescoring: the compiled plan scores exactly as ``score()`` does, a
micro-batch rescores only the accounts it was given, the daily rescore appends the
midnight row to history, and a failing rescore is reported while the thread lives on.

The service tests run a real service on loopback over a copy of the demo store; new
data arrives as it will through ingestion: rows written with ``Store.load`` inside
``state.store_access()``, then ``state.touched``.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import fixtures
from service_support import running_service


def _ids(store, n: int, seed: int) -> list[str]:
    ids = store.execute(store.table("accounts").select("account_id"))["account_id"].to_pylist()
    return random.Random(seed).sample(sorted(ids), min(n, len(ids)))


def _same(plan_rows: pa.Table, score_rows: pa.Table) -> None:
    assert plan_rows.schema.equals(score_rows.schema)
    assert plan_rows.num_rows == score_rows.num_rows
    assert plan_rows.equals(score_rows)


def _same_accounts(plan_rows: pa.Table, everyone: pa.Table, ids: list[str]) -> None:
    """The plan's rows for ``ids`` are, exactly, the rows of those accounts among
    ``everyone``'s (both in account order; an account not scored at that date is in
    neither)."""
    import pyarrow.compute as pc

    order = [("account_id", "ascending")]
    mine = everyone.filter(pc.is_in(everyone["account_id"], pa.array(ids)))
    _same(plan_rows.sort_by(order), mine.sort_by(order))


def test_the_compiled_plan_scores_like_score_on_the_demo(demo_project):
    from healthscore.engine.asof import score
    from healthscore.engine.plan import ScorePlan
    from healthscore.model import load_model
    from healthscore.store import connect

    store = connect(demo_project.db_path)
    model = load_model(demo_project.model_path)
    try:
        for name in model.scorecard_names():
            card = model.scorecard(name)
            plan = ScorePlan(card)
            # midnight, mid-day (an event of this morning counts this morning), earlier;
            # an account's score does not depend on which others are scored with it, so
            # each date's batches are checked against one score() of every account
            dates = [fixtures.DEMO_END, datetime(2025, 6, 14, 13, 30, 5), datetime(2025, 1, 31)]
            everyone_at = {}  # date -> score() of every account (compiled once per date)
            for d in dates:
                everyone = everyone_at[d] = score(store, card, d)
                for n, seed in ((1, 1), (3, 2), (17, 3)):
                    ids = _ids(store, n, seed)
                    _same_accounts(plan.run(store, d, ids), everyone, ids)
            # built once per slot size (1, 4, 64 slots: 1, 3 and 17 accounts), then only bound
            assert plan.builds == 3
            # every account, and a batch larger than the largest slot
            _same(plan.run(store, fixtures.DEMO_END), everyone_at[fixtures.DEMO_END])
            # (score() of the 280 is their rows in score() of every account, in order: the
            # oracle scored once above, not again per scorecard)
            import pyarrow.compute as pc

            many, everyone = _ids(store, 280, 4), everyone_at[fixtures.DEMO_END]
            mine = everyone.filter(pc.is_in(everyone["account_id"], pa.array(many)))
            _same(plan.run(store, fixtures.DEMO_END, many), mine)
            assert plan.run(store, fixtures.DEMO_END, ["no-such-account"]).num_rows == 0
    finally:
        store.close()


def test_the_compiled_plan_scores_like_score_on_the_fixture_store(store):
    from healthscore.engine.asof import score
    from healthscore.engine.plan import ScorePlan
    from healthscore.model import load_model

    model = load_model(None)
    plan = ScorePlan(model)
    ids = _ids(store, 5, 7)
    everyone_at = {}  # date -> score() of every account (one compile per date)
    for d in (fixtures.AS_OF, fixtures.AS_OF + timedelta(hours=9, minutes=15)):
        # as on the demo: each batch against the rows of its accounts in one score() of
        # every account at that date
        everyone = everyone_at[d] = score(store, model, d)
        for n in (1, 2, 5):
            _same_accounts(plan.run(store, d, ids[:n]), everyone, ids[:n])
    # score() of the same accounts, and of every account
    later = fixtures.AS_OF + timedelta(hours=9, minutes=15)
    _same(plan.run(store, later, ids), score(store, model, later, ids))
    _same(plan.run(store, fixtures.AS_OF), everyone_at[fixtures.AS_OF])


def test_the_compiled_batch_trends_give_the_built_querys_rows(demo_projects, tmp_path):
    """A micro-batch's trend classes from the query compiled once (dates, ids, new scores
    and bands bound per run) are those of the query built for the batch, whatever the
    batch's size (past the largest slot too: the accounts as lists), date and scores (a
    missing score has no point), and a second batch of the same size builds nothing."""
    import shutil

    import pyarrow.compute as pc

    from healthscore import api as hs
    from healthscore.engine.current import BatchTrends, batch_trend_rows
    from healthscore.engine.plan import ScorePlan
    from healthscore.store import connect

    template = demo_projects(fixtures.SMALL_DEMO)
    db = tmp_path / "trends.duckdb"
    shutil.copy2(template.db_path, db)
    model = hs.load_model(template.model_path)
    store = connect(db)
    try:
        hs.history(store, model, "2025-03-01", fixtures.DEMO_END, "1w")
        card = model.scorecard(model.scorecard_names()[0])
        plan, trends = ScorePlan(card), BatchTrends(card)
        rng = random.Random(11)
        seen = set()
        for d in (fixtures.DEMO_END, fixtures.DEMO_END + timedelta(hours=7, minutes=3)):
            for n, seed in ((1, 1), (3, 2), (3, 5), (20, 3), (280, 4)):
                wide = plan.run(store, d, _ids(store, n, seed))
                # moved scores (up, down, missing), so that the classes vary
                moved = [
                    None if rng.random() < 0.15 else max(0.0, s + rng.uniform(-30, 30))
                    for s in wide["score"].to_pylist()
                ]
                i = wide.schema.get_field_index("score")
                wide = wide.set_column(i, "score", pa.array(moved, wide.schema.field(i).type))
                built = batch_trend_rows(store, card, wide)
                compiled = batch_trend_rows(store, card, wide, trends)
                assert compiled == built
                seen |= {r["trend"] for r in built.values()}
                assert not set(compiled) & set(
                    wide.filter(pc.is_null(wide["score"]))["account_id"].to_pylist()
                )
        assert len(seen) > 1  # the batches did meet more than one class
        assert trends.builds == 4  # 1, 4 and 16 slots and the list of any size, once each
    finally:
        store.close()


def _event(account_id: str, at: datetime, n: int) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"rt-{account_id}-{n}-{i}" for i in range(n)],
            "account_id": [account_id] * n,
            "user_id": [f"rt-user-{i}" for i in range(n)],
            "event": ["login"] * n,
            "ts": pa.array([at - timedelta(minutes=i + 1) for i in range(n)], pa.timestamp("us")),
        }
    )


def _current(state, version: str, scorecard: str = "health") -> dict[str, dict]:
    from healthscore.store import current

    with state.store_access() as store:
        rows = store.execute(current.of_model(store, version, scorecard)).to_pylist()
    return {r["account_id"]: r for r in rows}


def _wait(check, timeout: float = 60.0):
    # generous: these tests assert what the rescorer computes, not how fast (speed is
    # bench/ingest_realtime.py's); at load 20 on 2 cores a rescore took over 20 s
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def quiet(demo_project):
    """A service with no daily rescore: current_scores starts empty; not warmed up (a
    batch builds the plan it needs on first use: these tests assert what a batch
    writes, not how soon, and ``driven`` below tests the warm-up itself)."""
    with running_service(demo_project.db_path, demo_project.model_path, warm_up=False) as s:
        yield s


def test_a_micro_batch_rescores_only_the_touched_accounts(quiet):
    from healthscore.engine.asof import score

    state = quiet.state
    with state.store_access() as store:
        a, b = _ids(store, 2, 11)
    assert _current(state, state.model.version) == {}
    with state.store_access() as store:
        before = score(store, state.model, state.now(), [a]).to_pylist()[0]["score"]
        store.load("usage_events", _event(a, state.now(), 40))
    state.touched([a, b])
    # (the first batch builds its plans: as patient as the warm-up wait was)
    rows = _wait(lambda: _current(state, state.model.version), 300)
    assert set(rows) == {a, b}  # nobody else
    for name in state.model.scorecard_names():
        card = state.model.scorecard(name)
        assert set(_current(state, card.version, name)) <= {a, b}
    with state.store_access() as store:
        want = score(store, state.model, state.now(), [a, b]).to_pylist()
    assert {r["account_id"]: r["score"] for r in want} == {k: r["score"] for k, r in rows.items()}
    assert rows[a]["score"] != before  # the new events moved it
    assert rows[a]["as_of"] == state.now()
    with quiet.client() as api:
        st = api.get("/v1/status").json()["rescorer"]
    assert st["running"] and st["last_batch"]["accounts"] == 2 and st["queue"] == 0
    assert st["last_error"] is None


def test_a_failing_rescore_is_reported_and_the_thread_lives(quiet):
    state = quiet.state
    with state.store_access() as store:
        (a,) = _ids(store, 1, 12)
        # the scoring query now fails: the tickets table is away
        store.con.create_table("tickets_away", store.table("tickets"))
        store.con.drop_table("tickets")
    try:
        state.touched([a])
        with quiet.client() as api:
            # (a plan built while idle may fail first, "during" its warm-up)
            def batch_error():
                error = api.get("/v1/status").json()["rescorer"]["last_error"]
                return error if error and error["during"] == "micro-batch" else None

            st = _wait(batch_error)
            assert "tickets" in st["error"]
            assert api.get("/v1/status").json()["rescorer"]["running"]
    finally:
        with state.store_access() as store:
            store.con.create_table("tickets", store.con.table("tickets_away"))
            store.con.drop_table("tickets_away")
    # the batch is tried again once the store is whole, by the same thread
    rows = _wait(lambda: _current(state, state.model.version).get(a), timeout=30)
    assert rows["account_id"] == a
    with quiet.client() as api:
        st = api.get("/v1/status").json()["rescorer"]
    assert st["running"] and st["failures"] >= 1 and st["queue"] == 0


def test_the_daily_rescore_appends_the_midnight_row_to_history(demo_projects, tmp_path):
    import shutil

    from healthscore.engine.asof import score
    from healthscore.engine.history import SCORES, stored_dates
    from healthscore.store import current

    columns = ("account_id", "score", "band", "coverage", "segment", "csm")
    template = demo_projects(fixtures.SMALL_DEMO)
    db, model_file = tmp_path / "daily.duckdb", tmp_path / "healthscore.yaml"
    shutil.copy2(template.db_path, db)
    shutil.copy2(template.model_path, model_file)
    now = fixtures.DEMO_END + timedelta(hours=10)  # the midnight of the day is DEMO_END
    with running_service(db, model_file, daily_rescore=True, now=now, warm_up=False) as running:
        state = running.state
        with running.client() as api:
            st = _wait(lambda: api.get("/v1/status").json()["rescorer"]["last_daily"], 120)
        assert st["everyone"]
        for name in state.model.scorecard_names():
            card = state.model.scorecard(name)
            with state.store_access() as store:
                assert fixtures.DEMO_END in stored_dates(store, card)
                assert current.complete(store, card.version, name)
                scored = store.execute(current.of_model(store, card.version, name))
            assert scored.num_rows == st["accounts"] or name != "health"
            assert set(scored["as_of"].to_pylist()) == {now}
            if name == "health":  # the midnight's stored rows are those of score()
                with state.store_access() as store:
                    t = store.stored(SCORES)
                    mine = (t.as_of == fixtures.DEMO_END) & (t.scorecard == name)
                    stored = store.execute(
                        t.filter(mine & (t.model_version == card.version)).select(columns)
                    )
                    want = score(store, card, fixtures.DEMO_END).select(list(columns))
                order = [("account_id", "ascending")]
                assert stored.num_rows == want.num_rows > 0
                assert stored.sort_by(order).to_pylist() == want.sort_by(order).to_pylist()
        # the list now comes from current_scores, as of now
        with running.client() as api:
            listed = api.get("/v1/accounts", params={"limit": 5}).json()
        assert listed["as_of"] == now.isoformat() and listed["total"] == st["accounts"]


def test_the_start_up_rescore_of_a_store_that_never_stored_history(fixture_db, tmp_path):
    import shutil

    from healthscore.store import current

    db = tmp_path / "fresh.duckdb"
    shutil.copy2(fixture_db, db)
    with running_service(db, daily_rescore=True, now=fixtures.AS_OF, warm_up=False) as running:
        with running.client() as api:
            _wait(lambda: api.get("/v1/status").json()["rescorer"]["last_daily"], 120)
            assert api.get("/v1/status").json()["rescorer"]["last_error"] is None
        model = running.state.model
        with running.state.store_access() as store:
            assert current.complete(store, model.version, "health")


def test_a_micro_batch_recomputes_the_trend_class_with_the_new_score(demo_projects, tmp_path):
    """A flag that takes an account 20 points under its high of the last 30 days makes a
    rapid decline at once (not at the next rescore of everyone), in current_scores and
    in the API; resolving it makes it what it was."""
    import shutil

    from healthscore import api as hs
    from healthscore.engine.trends import trends_expr
    from healthscore.service.rescorer import Rescorer

    template = demo_projects(fixtures.SMALL_DEMO)
    db, model_file = tmp_path / "trend.duckdb", tmp_path / "healthscore.yaml"
    shutil.copy2(template.db_path, db)
    shutil.copy2(template.model_path, model_file)
    with running_service(db, model_file, warm_up=False) as running:
        state = running.state
        now = state.now()
        with state.store_access() as store:
            hs.history(store, state.model, "2025-04-01", now, "1w")
        Rescorer(state).rescore_everyone(daily=False)
        with state.store_access() as store:
            classes = store.execute(trends_expr(store, state.model, now)).to_pylist()
            flagged = {f["account_id"] for f in hs.list_flags(store, as_of=now)}
        drop = state.model.spec.trends.rapid_decline.drop
        ruled = {k for k, r in _current(state, state.model.version).items() if r["signals"]}
        # not in rapid decline, but within 10 points (the champion_left rule; no other rule
        # in force to cap or floor it) of it, with its high of the window before today
        target = next(
            r
            for r in classes
            if r["trend"] != "rapid_decline"
            and r["account_id"] not in flagged | ruled
            and r["peak_as_of"] < now
            and r["peak"] - r["score_now"] >= drop - 10 + 0.5
            and r["score_now"] > 15
        )
        acc = target["account_id"]

        def listed():
            with running.client() as api:
                return api.get("/v1/accounts", params={"q": acc}).json()["items"][0]

        before = listed()
        assert before["trend"] == target["trend"] and before["score"] == pytest.approx(
            target["score_now"]
        )
        with running.client() as api:
            at = (now - timedelta(seconds=1)).isoformat()
            flag = api.post(
                "/v1/flags", json={"account_id": acc, "kind": "champion_left", "at": at}
            ).json()
        # (the first batch builds its plans: patient)
        after = _wait(lambda: (r := listed())["score"] != before["score"] and r, 300)
        assert after["score"] == pytest.approx(before["score"] - 10)
        assert after["trend"] == "rapid_decline"
        assert after["change_30d"] == pytest.approx(before["change_30d"] - 10)
        assert _current(state, state.model.version)[acc]["trend"] == "rapid_decline"
        with running.client() as api:
            api.post(f"/v1/flags/{flag['flag_id']}/resolve", json={"at": at})
        back = _wait(lambda: (r := listed())["score"] == pytest.approx(before["score"]) and r)
        assert back["trend"] == before["trend"]


@pytest.fixture(scope="module")
def driven(quiet):
    """A second rescorer of the quiet service, never started: the tests drive it step by
    step. One for the module: its plans are compiled once, not once per test (a test
    that runs it on 4 accounts or fewer builds nothing :meth:`warm` did not)."""
    from healthscore.service.rescorer import Rescorer

    return Rescorer(quiet.state)


def test_an_idle_rescorer_builds_the_larger_plans_so_a_batch_of_ten_builds_nothing(quiet, driven):
    """Start-up builds the plans of 1 and 4 accounts; the larger ones are built one at a
    time while nothing is marked, so a later batch of 10 accounts waits for no build."""
    from healthscore.service.rescorer import IDLE_SLOTS

    state = quiet.state
    rescorer = driven  # not started: driven here step by step
    rescorer.warm()
    names = state.model.scorecard_names()
    plans = [rescorer._plan(state.model.scorecard(n)) for n in names]
    assert [p.builds for p in plans] == [2] * len(names)
    for _ in range(len(IDLE_SLOTS) * len(names) + 1):  # one more: nothing left to build
        rescorer.warm_one_more()
    assert [p.builds for p in plans] == [5] * len(names)
    from healthscore.engine.asof import score

    with state.store_access() as store:
        ids = _ids(store, 10, 21)
        scored = set(score(store, state.model, state.now(), ids)["account_id"].to_pylist())
    rescorer.rescore(set(ids))
    assert [p.builds for p in plans] == [5] * len(names)
    # every account of the batch that score() scores (it leaves one of these ten out), whatever
    # other tests of the module rescored before
    assert len(scored) >= 9
    assert set(_current(state, state.model.version)) & set(ids) == scored


def test_after_the_idle_builds_a_batch_of_each_scorecard_plans_no_statement_again(quiet, driven):
    """Once warm-up and the idle builds are done, every scorecard's kept statements are
    planned on the catalog as it is: a batch of 10 accounts prepares none of them again
    (each build changed the catalog the statements before it were planned on)."""
    from healthscore.service.rescorer import IDLE_SLOTS

    state = quiet.state
    rescorer = driven
    rescorer.warm()
    for _ in range(len(IDLE_SLOTS) * len(state.model.scorecard_names()) + 1):
        rescorer.warm_one_more()
    with state.store_access() as store:
        ids = _ids(store, 10, 23)
    with state.reading() as reader:
        backend = reader._backend
    before = backend.plannings
    rescorer.rescore(set(ids))
    assert backend.plannings == before
    assert set(_current(state, state.model.version)) & set(ids)


def test_the_status_counts_a_micro_batch_under_way_until_its_rows_are_written(quiet, driven):
    """While a batch is being rescored, the status does not say the rescorer has caught
    up: the batch's accounts are `rescoring` and `lag_seconds` runs from its oldest mark
    (the queue alone was empty as soon as the batch was taken)."""
    import threading

    state = quiet.state
    rescorer = driven  # not started: driven here
    rescorer.warm()
    with state.store_access() as store:
        ids = set(_ids(store, 3, 31))
    done = []
    with state.store_access():  # the batch reads, then waits here to write its rows
        worker = threading.Thread(target=lambda: done.append(rescorer.rescore(ids, 0.5)))
        worker.start()
        st = _wait(lambda: (s := rescorer.status())["rescoring"] and s)
        assert st["rescoring"] == 3 and st["queue"] == 0 and st["lag_seconds"] >= 0.5
    worker.join(60)
    st = rescorer.status()
    assert done and st["rescoring"] == 0 and st["lag_seconds"] == 0.0
    assert st["last_batch"]["accounts"] == 3


def test_under_heavy_ingest_a_micro_batch_gathers_as_long_as_the_last_took_and_loses_none(
    demo_projects, tmp_path
):
    """After a micro-batch of more than 256 accounts, with as many marked again, the next
    gathers as long as that batch took (the rescorer leaves ingest half the CPU); with a
    few marked it gathers ``rescore_every`` as usual. Every marked account is rescored,
    and an account's new events show in its current score."""
    import shutil

    from healthscore.engine.asof import score
    from healthscore.service import Settings
    from healthscore.service.rescorer import MAX_GATHER, PACE_ACCOUNTS, Rescorer
    from healthscore.service.state import ServiceState

    template = demo_projects(fixtures.SMALL_DEMO)
    db = tmp_path / "heavy.duckdb"
    shutil.copy2(template.db_path, db)
    settings = Settings(
        db=str(db),
        model=str(template.model_path),
        now=fixtures.DEMO_END,
        daily_rescore=False,
        idle_builds=False,
        rescore_every=0.05,
        state_dir=tmp_path / "state",
    )
    state = ServiceState.open(settings)
    try:
        # not started: driven here, so that the marks stay; not warmed either (the plans
        # of 1 and 4 accounts: no batch here uses them)
        rescorer = Rescorer(state)
        with state.store_access() as store:
            ids = _ids(store, 300, 41)
        assert len(ids) > PACE_ACCOUNTS
        assert rescorer.gathering() == 0.05  # no batch yet
        state.touched(ids)
        heavy = rescorer.rescore(state.take_touched())
        assert heavy.accounts == len(ids)
        before = _current(state, state.model.version)[ids[0]]["score"]
        state.touched(ids[:5])  # light: a few marked
        assert rescorer.gathering() == 0.05
        with state.store_access() as store:
            store.append("usage_events", _event(ids[0], state.now(), 40))
        state.touched(ids)  # heavy again
        assert rescorer.gathering() == max(0.05, min(heavy.seconds, MAX_GATHER))
        marked = datetime.now(UTC).replace(tzinfo=None)  # as computed_at is written
        taken = state.take_touched()
        assert taken == set(ids)
        rescorer.rescore(taken)
        rows = _current(state, state.model.version)
        with state.store_access() as store:
            want = score(store, state.model, state.now(), ids)
        assert set(rows) == set(want["account_id"].to_pylist())  # none lost
        assert all(r["computed_at"] >= marked for r in rows.values())
        new = next(r["score"] for r in want.to_pylist() if r["account_id"] == ids[0])
        assert rows[ids[0]]["score"] == pytest.approx(new) and new != before
    finally:
        state.close()


def test_marks_that_waited_for_the_batch_before_are_taken_without_gathering_again():
    """The rescorer gathers marks until the oldest is ``rescore_every`` old: accounts
    marked while a batch was being rescored waited for it already, and the next batch
    takes them at once (it gathered ``rescore_every`` more, each of their waits longer
    by that much); a fresh mark still gathers."""
    from healthscore.service import Settings
    from healthscore.service.rescorer import Rescorer
    from healthscore.service.state import ServiceState

    state = ServiceState(Settings(rescore_every=2.0), store=None, model=None)  # marks only
    rescorer = Rescorer(state)  # not started: driven here
    state.touched(["ACC-1"])
    assert 0 < rescorer.gather_left() <= 2.0  # just marked: gathers
    time.sleep(2.1)  # as if a batch took this long while it was marked
    state.touched(["ACC-2"])
    assert rescorer.gather_left() == 0  # the oldest mark has gathered enough
    state.take_touched()
    state.touched(["ACC-3"])
    assert 0 < rescorer.gather_left() <= 2.0
