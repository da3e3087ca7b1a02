"""The store: typed tables, idempotent loads with counts, watermarks and freshness."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

import healthscore as hs
from fixtures import tables
from healthscore.store import SCHEMA_VERSION, LoadResult, connect
from test_bigload import EVENTS


def test_new_store_has_typed_canonical_tables_and_schema_version(tmp_path):
    s = connect(tmp_path / "new.duckdb")
    assert s.columns("tickets")["closed_at"].startswith("timestamp")
    assert s.columns("subscriptions")["seats"] == "float64"
    assert s.meta()["schema_version"] == str(SCHEMA_VERSION)


def test_reloading_the_same_rows_changes_nothing(fresh_store):
    before = fresh_store.table("usage_events").to_pyarrow().sort_by("event_id")
    result = fresh_store.load("usage_events", tables()["usage_events"])
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 12)
    after = fresh_store.table("usage_events").to_pyarrow().sort_by("event_id")
    assert after.equals(before)


def test_changed_row_is_updated_and_new_row_inserted(fresh_store):
    acc = tables()["accounts"].slice(0, 2).to_pylist()
    acc[0]["csm"] = "carol"
    acc.append({**acc[1], "account_id": "A9", "name": "Nine"})
    result = fresh_store.load(
        "accounts", pa.Table.from_pylist(acc, schema=tables()["accounts"].schema)
    )
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 1)
    rows = {r["account_id"]: r for r in fresh_store.table("accounts").to_pyarrow().to_pylist()}
    assert rows["A1"]["csm"] == "carol"
    assert rows["A9"]["name"] == "Nine"
    assert len(rows) == 6


def test_extra_columns_are_kept_and_usable_by_a_model(fresh_store):
    acc = tables()["accounts"].append_column("tier", pa.array(["gold", "silver", "gold", "x", "x"]))
    fresh_store.load("accounts", acc)
    model = hs.load_model_text(
        """
columns: {accounts: {tier: string}}
metrics:
  tier: {column: tier}
pillars:
  p: {weight: 1, metrics: {tier: {weight: 1, map: {gold: 100, silver: 50}}}}
"""
    )
    rows = {r["account_id"]: r for r in hs.score(fresh_store, model, "2025-01-01").to_pylist()}
    assert rows["A1"]["score"] == 100.0 and rows["A2"]["score"] == 50.0


def test_watermark_is_the_latest_timestamp_loaded(store):
    assert store.watermarks()["usage_events"] == datetime(2025, 1, 2)


def test_freshness_warns_when_as_of_is_past_a_tables_expected_lag(store):
    model = hs.load_model()
    warnings = store.freshness(model, datetime(2025, 2, 1))
    stale = {w.table for w in warnings}
    assert "usage_events" in stale  # last event 2025-01-02, expected within 2 days
    text = str(next(w for w in warnings if w.table == "usage_events"))
    assert "usage_events is stale: latest data 2025-01-02 00:00, 30.0 days before" in text
    assert store.freshness(model, datetime(2025, 1, 2)) == []


def test_subscriptions_without_a_new_contract_for_months_are_not_stale_while_loaded():
    """Contracts start at renewals, months apart: a slow-changing table is judged by its
    last load (a stalled sync), not by its latest start date; usage still by its data."""
    from datetime import timedelta

    from fixtures import memory_store

    as_of = datetime(2025, 3, 1)
    event = {"event_id": "E-late", "account_id": "A1", "user_id": "U1", "event": "login"}
    store = memory_store(usage_events=[{**event, "ts": as_of - timedelta(days=1)}])
    assert as_of - store.watermarks()["subscriptions"] > timedelta(days=35)
    model = hs.load_model()
    stale = {w.table: str(w) for w in store.freshness(model, as_of)}
    assert "subscriptions" not in stale and "usage_events" not in stale
    # a sync that stopped: the last load is more than 35 days before the as-of date
    later = datetime.now() + timedelta(days=40)
    text = {w.table: str(w) for w in store.freshness(model, later)}["subscriptions"]
    assert "subscriptions is stale: last loaded" in text
    assert "(expected a load within 35 days (the default for subscriptions; set " in text
    # a table's cadence is the model's to set, and the warning names it
    own = hs.load_model_text(
        "freshness: {subscriptions: {data: 30d}, usage_events: {load: 1d}}\n"
        + hs.model.default_model_text()
    )
    stale = {w.table: str(w) for w in store.freshness(own, as_of)}
    assert "subscriptions is stale: latest data" in stale["subscriptions"]
    assert (
        "expected new data within 30 days (the model's `freshness.subscriptions`)"
        in (stale["subscriptions"])
    )
    assert "usage_events" not in stale  # loaded now, after the as-of date
    with pytest.raises(hs.ModelError, match=r"freshness\.subscriptions.*one of `data"):
        hs.load_model_text(
            "freshness: {subscriptions: {data: 30d, load: 2d}}\n" + hs.model.default_model_text()
        )


def test_opening_a_missing_store_without_create_says_how_to_make_one(tmp_path):
    with pytest.raises(
        hs.StoreError, match="no store at .*missing.duckdb; hint: run `healthscore init`"
    ):
        connect(tmp_path / "missing.duckdb", create=False)


def test_duplicate_keys_in_one_load_are_refused_and_nothing_changes(fresh_store):
    before = fresh_store.count("accounts"), fresh_store.watermarks()["accounts"]
    rows = tables()["accounts"].slice(0, 1).to_pylist() * 2
    with pytest.raises(hs.StoreError, match="1 account_id values occur more than once.*'A1'"):
        fresh_store.load("accounts", pa.Table.from_pylist(rows, schema=tables()["accounts"].schema))
    assert (fresh_store.count("accounts"), fresh_store.watermarks()["accounts"]) == before


def test_a_column_differing_only_by_case_is_named(fresh_store):
    acc = tables()["accounts"].drop(["name"]).append_column("Name", pa.array(["x"] * 5))
    with pytest.raises(hs.StoreError, match="column 'Name' differs from the stored column 'name'"):
        fresh_store.load("accounts", acc)


def test_watermark_ignores_scheduled_dates_in_the_future(tmp_path):
    s = connect(tmp_path / "w.duckdb")
    inv = pa.table(
        {
            "invoice_id": ["I1", "I2"],
            "account_id": ["A", "A"],
            "due_at": pa.array([datetime(2024, 1, 1), datetime(2999, 1, 1)], pa.timestamp("us")),
        }
    )
    s.load("invoices", inv)
    assert s.watermarks()["invoices"] == datetime(2024, 1, 1)


def test_rows_without_a_key_are_refused(fresh_store):
    rows = pa.table(
        {
            "account_id": pa.array([None], pa.string()),
            "created_at": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
        }
    )
    with pytest.raises(hs.StoreError, match="1 rows have no account_id; nothing was loaded"):
        fresh_store.load("accounts", rows)


# ------------------------------------------------------- files with different columns

CRM = "account_id,created_at,segment,industry\nA1,2024-01-01,smb,retail\nA2,2024-01-01,smb,media\n"
BILLING = "account_id,created_at,plan\nA1,2024-01-01,gold\nA2,2024-01-01,silver\n"


def _files(tmp_path, **texts) -> dict[str, str]:
    for name, text in texts.items():
        (tmp_path / f"{name}.csv").write_text(text)
    return {name: str(tmp_path / f"{name}.csv") for name in texts}


def _accounts(store) -> dict[str, dict]:
    return {r["account_id"]: r for r in store.table("accounts").to_pyarrow().to_pylist()}


def test_a_second_file_adds_its_columns_and_keeps_the_first_files(tmp_path):
    s = connect(tmp_path / "s.duckdb")
    f = _files(tmp_path, crm=CRM, billing=BILLING)
    hs.load_file(s, "accounts", f["crm"])
    second = hs.load_file(s, "accounts", f["billing"])
    assert (second.inserted, second.updated, second.unchanged) == (0, 2, 0)
    a1 = _accounts(s)["A1"]
    assert (a1["segment"], a1["industry"], a1["plan"]) == ("smb", "retail", "gold")


@pytest.mark.parametrize("order", [("crm", "billing"), ("billing", "crm")])
def test_reloading_both_files_in_either_order_changes_nothing(tmp_path, order):
    s = connect(tmp_path / "s.duckdb")
    f = _files(tmp_path, crm=CRM, billing=BILLING)
    for name in ("crm", "billing"):
        hs.load_file(s, "accounts", f[name])
    before = _accounts(s)
    for name in order:
        result = hs.load_file(s, "accounts", f[name])
        assert (result.inserted, result.updated, result.unchanged) == (0, 0, 2), name
    assert _accounts(s) == before


def test_a_changed_value_in_the_second_file_updates_only_that_account(tmp_path):
    s = connect(tmp_path / "s.duckdb")
    f = _files(tmp_path, crm=CRM, billing=BILLING, billing2=BILLING.replace("silver", "gold"))
    for name in ("crm", "billing"):
        hs.load_file(s, "accounts", f[name])
    result = hs.load_file(s, "accounts", f["billing2"])
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
    a2 = _accounts(s)["A2"]
    assert (a2["plan"], a2["industry"], a2["segment"]) == ("gold", "media", "smb")


def test_a_new_account_in_the_second_file_has_no_values_for_the_firsts_columns(tmp_path):
    s = connect(tmp_path / "s.duckdb")
    f = _files(tmp_path, crm=CRM, billing=BILLING + "A3,2024-02-01,bronze\n")
    hs.load_file(s, "accounts", f["crm"])
    result = hs.load_file(s, "accounts", f["billing"])
    assert (result.inserted, result.updated) == (1, 2)
    a3 = _accounts(s)["A3"]
    assert (a3["plan"], a3["industry"], a3["segment"]) == ("bronze", None, None)


def test_a_column_present_but_empty_in_the_file_is_cleared(tmp_path):
    s = connect(tmp_path / "s.duckdb")
    f = _files(tmp_path, crm=CRM, crm2=CRM.replace(",retail", ","))
    hs.load_file(s, "accounts", f["crm"])
    result = hs.load_file(s, "accounts", f["crm2"])
    assert (result.updated, _accounts(s)["A1"]["industry"]) == (1, None)


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, tmp_path):
    """An empty store on each backend."""
    if request.param == "duckdb":
        yield connect(tmp_path / "s.duckdb")
        return
    from fixtures import postgres_store

    with postgres_store() as store:
        yield store


def test_loads_merge_supplied_columns_on_every_backend(backend):
    day = pa.array([datetime(2024, 1, 1)] * 2, pa.timestamp("us"))
    crm = pa.table({"account_id": ["A1", "A2"], "created_at": day, "industry": ["x", "y"]})
    billing = pa.table({"account_id": ["A2", "A3"], "created_at": day, "plan": ["p", "q"]})
    backend.load("accounts", crm, columns=crm.column_names)
    result = backend.load("accounts", billing, columns=billing.column_names)
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 0)
    again = backend.load("accounts", crm, columns=crm.column_names)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    rows = backend.table("accounts").select("account_id", "industry", "plan").to_pyarrow()
    assert sorted(rows.to_pylist(), key=lambda r: r["account_id"]) == [
        {"account_id": "A1", "industry": "x", "plan": None},
        {"account_id": "A2", "industry": "y", "plan": "p"},
        {"account_id": "A3", "industry": None, "plan": "q"},
    ]


def test_skipped_rows_are_reported_with_their_reason():
    result = LoadResult("outcomes", 2, 0, 0, skipped=3, skip_reason="S maps to nothing (J)")
    assert str(result) == (
        "outcomes: 2 inserted, 0 updated, 0 unchanged, 0 rejected; "
        "skipped 3 rows whose S maps to nothing (J)"
    )
    assert "skipped" not in str(LoadResult("outcomes", 2, 0, 0))


def test_a_load_writes_events_clustered_by_account_so_one_accounts_rows_sit_together(tmp_path):
    # the live rescorer asks about a few accounts: stored by account, their rows sit in
    # a few blocks the store can find by the blocks' account ranges; stored in time
    # order, every block holds every account and the whole column is read
    s = connect(tmp_path / "c.duckdb")
    n = 3000
    accounts = [f"A{i % 7}" for i in range(n)]  # interleaved in time
    day = datetime(2025, 1, 2) - datetime(2025, 1, 1)
    ts = [datetime(2025, 1, 1) + day * i / n for i in range(n)]
    s.load(
        "usage_events",
        pa.table(
            {
                "event_id": [f"e{i}" for i in range(n)],
                "account_id": accounts,
                "event": ["login"] * n,
                "ts": pa.array(ts, pa.timestamp("us")),
            }
        ),
    )
    stored = s.execute_sql("SELECT account_id FROM usage_events ORDER BY rowid").to_pylist()
    order = [r["account_id"] for r in stored]
    assert order == sorted(order)  # by account
    assert len(order) == n


def test_a_long_query_draws_no_progress_bar_into_the_commands_output(fixture_db):
    # DuckDB draws its bar on stdout, terminal or not, once a query has run for 2 s
    # (`progress_bar_time`): on a large book, into `score --format csv > scores.csv`.
    # Checked as a command runs, in a fresh process writing to a pipe (a plain
    # connection there draws it; under pytest the driver's default differs), on the
    # setting itself: setting `progress_bar_time` to shorten the wait turns it on again.
    import subprocess
    import sys

    probe = (
        "import sys, duckdb\n"
        "from healthscore.store import connect\n"
        "q = \"SELECT current_setting('enable_progress_bar')\"\n"
        "print(duckdb.connect().execute(q).fetchone()[0])\n"
        "for read_only in (True, False):\n"
        "    s = connect(sys.argv[1], create=False, read_only=read_only)\n"
        "    print(s._backend.native.execute(q).fetchone()[0])\n"
        "    s.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(fixture_db)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]  # a plain connection; the store's


def test_the_threads_a_duckdb_store_runs_come_from_the_environment(tmp_path, monkeypatch):
    """$HEALTHSCORE_DUCKDB_THREADS caps the threads of a store's connection and of the
    scratch databases a load reads through (processes sharing a machine's cores); unset,
    DuckDB runs one per core; a value that is not a number of threads is a clear error
    naming the variable, before the store is opened."""
    from healthscore.errors import StoreError
    from healthscore.store.scratch import open_scratch

    def threads(store) -> int:
        return store._backend.native.execute("SELECT current_setting('threads')").fetchone()[0]

    monkeypatch.delenv("HEALTHSCORE_DUCKDB_THREADS", raising=False)
    default = connect(tmp_path / "default.duckdb")
    assert threads(default) >= 1
    monkeypatch.setenv("HEALTHSCORE_DUCKDB_THREADS", "3")
    assert threads(connect(tmp_path / "three.duckdb")) == 3
    with open_scratch("64MB") as db:
        assert db.execute("SELECT current_setting('threads')").fetchone()[0] == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("HEALTHSCORE_DUCKDB_THREADS", bad)
        with pytest.raises(StoreError) as e:
            connect(tmp_path / f"bad{bad}.duckdb")
        assert e.value.message.startswith(f"$HEALTHSCORE_DUCKDB_THREADS is '{bad}'")
        assert "whole number" in e.value.hint
        assert not (tmp_path / f"bad{bad}.duckdb").exists()


def test_the_store_makes_its_tables_with_the_types_ibis_gives_them(tmp_path):
    """A new store writes its CREATE TABLE statements itself (Ibis's create_table costs
    a schema read-back per table): every table it makes has the column names, types and
    nullability Ibis's own statement gives, for every schema the store or the service
    declares, as a table of the file and as a temporary one of a read-only session."""
    import duckdb
    import ibis

    from healthscore.core.tables import TABLES
    from healthscore.evaluate.backtest import RUN_COLUMNS
    from healthscore.service import auth
    from healthscore.service.dashboard.feedback import COLUMNS as FEEDBACK_COLUMNS
    from healthscore.store import BOOKKEEPING
    from healthscore.store.backend import DuckDBBackend
    from healthscore.store.current import SCHEMA as CURRENT_SCHEMA
    from healthscore.store.history import SCHEMAS as HISTORY_SCHEMAS

    schemas = {name: t.columns for name, t in TABLES.items()}
    schemas |= dict(BOOKKEEPING) | dict(HISTORY_SCHEMAS)
    schemas |= {"runs": RUN_COLUMNS, "cur": CURRENT_SCHEMA, "fb": FEEDBACK_COLUMNS}
    schemas |= {"tokens": auth.TOKEN_COLUMNS, "users": auth.USER_COLUMNS}
    schemas["odd types"] = {"d": "date", "n": "!int64", "i": "int32", "j": "json"}

    def described(con, name):
        return con.execute(f'DESCRIBE "{name}"').fetchall()

    ours = DuckDBBackend.open(str(tmp_path / "ours.duckdb"), read_only=False)
    reference = ibis.duckdb.connect(str(tmp_path / "ibis.duckdb"))
    for name, schema in schemas.items():
        ours.create_empty(name, schema, temp=False)
        reference.create_table(name, schema=ibis.schema(schema))
        assert described(ours.native, name) == described(reference.con, name), name
    ours.close()

    # read-only: a session's temporary table, nothing written into the file
    read_only = connect(tmp_path / "ours.duckdb", read_only=True)
    read_only.create_table("session only", {"a": "string", "b": "!timestamp"})
    assert read_only.columns("session only") == {"a": "string", "b": "!timestamp(6)"}
    read_only.close()
    with duckdb.connect(str(tmp_path / "ours.duckdb"), read_only=True) as con:
        assert not con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'session only'"
        ).fetchall()


def test_a_tables_columns_follow_every_change_of_the_store(fresh_store):
    """The columns of a table, which an append reads at every batch, are kept per
    connection only as long as the catalog is unchanged: a column added by a load, an
    append or a rolled-back transaction shows (or not) at once."""
    s = fresh_store
    before = s.columns("users")
    assert "plan_tier" not in before
    day = pa.array([datetime(2024, 1, 1)])
    s.append("users", pa.table({"user_id": ["u9"], "account_id": ["A1"], "created_at": day}))
    assert s.columns("users") == before
    extra = {"user_id": ["u9"], "account_id": ["A1"], "created_at": day, "plan_tier": ["gold"]}
    s.append("users", pa.table(extra))
    assert s.columns("users") == {**before, "plan_tier": "string"}
    with pytest.raises(RuntimeError), s.transaction():
        s._add_columns("users", [pa.field("seat_count", pa.int64())])
        assert s.columns("users")["seat_count"] == "int64"
        raise RuntimeError("rolled back")
    assert s.columns("users") == {**before, "plan_tier": "string"}


def test_has_table_says_what_the_list_of_tables_says(tmp_path):
    """``has_table`` looks one name up (the rescorer asks at every micro-batch): the
    store's tables, a session's temporary table and a view are there, a missing name
    or one that differs by case or holds a quote is not, as in :meth:`list_tables`."""
    s = connect(tmp_path / "t.duckdb")
    s._backend.native.execute("CREATE TEMP TABLE scratch_one (a INTEGER)")
    s._backend.native.execute("CREATE VIEW a_view AS SELECT 1 AS x")
    listed = set(s.list_tables())
    assert {"accounts", "scratch_one", "a_view"} <= listed
    for name in ("accounts", "scratch_one", "a_view", "ACCOUNTS", "missing", "it's", ""):
        assert s.has_table(name) == (name in listed), name
    s.close()


def test_ctrl_c_during_a_query_is_a_keyboard_interrupt_for_a_library_caller(tmp_path):
    """A script or notebook pressing Ctrl-C during a long query got a ScoringError ("the
    store could not run the scoring query: Query interrupted"), which reads as a broken
    model and which ``except KeyboardInterrupt`` does not catch."""
    import os
    import signal
    import threading

    store = connect(tmp_path / "s.duckdb")
    slow = store.con.sql("SELECT count(*) AS n FROM range(20000000000) a")
    # the query runs for minutes: a second in, it is inside DuckDB (the store's own
    # Python before it takes milliseconds)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.execute(slow)
    finally:
        timer.cancel()
        store.close()


def test_a_reload_tells_new_changed_and_unchanged_rows_apart_by_every_column_and_null(tmp_path):
    """A reload compares each row with the stored one (on DuckDB by a hash of the row's
    columns, not the columns carried through the join): a change in any column, or
    between a value and NULL, is an update; NULL where NULL was stored, or the same
    value, is unchanged."""
    s = connect(tmp_path / "r.duckdb")
    day = datetime(2025, 3, 1)

    def rows(changes: dict[int, dict]) -> pa.Table:
        base = [
            {"event_id": f"e{i}", "account_id": "A1", "user_id": "u1" if i % 2 else None,
             "event": "login", "ts": day + timedelta(hours=i), "quantity": float(i)}
            for i in range(6)
        ]  # fmt: skip
        for i, change in changes.items():
            base[i] |= change
        return pa.Table.from_pylist(base, EVENTS)

    assert s.load("usage_events", rows({})).inserted == 6
    again = s.load("usage_events", rows({}))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 6)
    changed = {
        1: {"user_id": None},  # a value to NULL
        2: {"user_id": "u2"},  # NULL to a value
        3: {"ts": day + timedelta(hours=3, microseconds=1)},
        4: {"quantity": 4.5},
        5: {"event": "Login"},
    }
    result = s.load("usage_events", rows(changed))
    assert (result.inserted, result.updated, result.unchanged) == (0, 5, 1)
    stored = {r["event_id"]: r for r in s.table("usage_events").to_pyarrow().to_pylist()}
    assert stored["e1"]["user_id"] is None and stored["e2"]["user_id"] == "u2"
    assert stored["e3"]["ts"] == day + timedelta(hours=3, microseconds=1)
    assert (stored["e4"]["quantity"], stored["e5"]["event"]) == (4.5, "Login")
