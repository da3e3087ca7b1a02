"""PostgreSQL: history and backtests finish (and agree with DuckDB) on a demo book, every
statement runs under a time limit, and a stopped command stops its query in the server.

Runs when ``HEALTHSCORE_TEST_PG`` names a server (``.ci/run`` starts one); skipped with the
reason otherwise. Each module gets a database of its own on that server.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest

import healthscore as hs
from fixtures import DEMO_END, postgres_store
from healthscore import portfolio
from healthscore.core.time import dates_between, today
from healthscore.demo import book
from healthscore.engine import asof, flags, timeline
from healthscore.evaluate import backtest as bt

BOOK = dict(accounts=25, months=8, seed=5, end=DEMO_END)
NINE_WEEKS = timedelta(weeks=8)


@pytest.fixture(scope="module")
def stores():
    """The same demo book in PostgreSQL and in DuckDB."""
    tables = book.generate(**BOOK)
    duck = hs.connect("duckdb://")
    with postgres_store() as pg:
        for name, rows in tables.items():
            pg.load(name, rows)
            duck.load(name, rows)
        yield pg, duck
    duck.close()


def _same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        for col, expected in w.items():
            if isinstance(expected, float) and g[col] is not None:
                assert math.isclose(g[col], expected, abs_tol=1e-9), (g["account_id"], col)
            else:
                assert g[col] == expected, (g["account_id"], col, g[col], expected)


@pytest.mark.parametrize("end", [DEMO_END, today()], ids=["data-end", "today"])
def test_weekly_history_on_postgres_equals_duckdb(stores, end):
    """Nine weekly dates ending on the data's last day, and ending today (after the data:
    every window then reaches past the last event)."""
    model = hs.load_model()
    stored = []
    for s in stores:
        result = asof.backfill(s, model, end - NINE_WEEKS, end, "1w", rebuild=True)
        assert len(result.computed) == 9
        t = s.stored("scores")
        t = t.filter(t.as_of.between(end - NINE_WEEKS, end)).drop("computed_at")
        stored.append(s.execute(t.order_by("account_id", "as_of")).to_pylist())
    _same(*stored)


def test_the_many_dates_query_plans_in_well_under_a_second(stores):
    """PostgreSQL copied each computed column into every place that used it, level upon
    level of the scoring steps: the nine-date query took 8 s to plan (and a cost estimate
    that switched on JIT optimisation, which then ran for minutes at 4 GB)."""
    pg, _ = stores
    dates = dates_between(today() - NINE_WEEKS, today(), "1w")
    sql = pg.compile(timeline.dates_expr(pg, hs.load_model(), dates))
    plan = pg.con.con.execute("EXPLAIN (SUMMARY, FORMAT JSON) " + sql).fetchone()[0][0]
    assert plan["Planning Time"] < 2000, plan["Planning Time"]
    assert pg.con.con.execute("SHOW jit").fetchone()[0] == "off"


def test_backtest_on_postgres_equals_duckdb(stores):
    pg, duck = stores
    model = hs.load_model()
    # the book's one churn (2025-05-13) is in the 60-day horizon of 2025-03-15, which
    # closes before its last outcome (2025-05-29)
    start, end = datetime(2025, 2, 15), datetime(2025, 3, 15)
    runs = [
        bt.backtest(s, model, start, end, every="1mo", horizon="60d", lead="1d", reps=20)
        for s in (pg, duck)
    ]
    got, want = (r.evaluations["churned"].overall for r in runs)
    assert got.positives == want.positives > 0 and got.observations == want.observations
    assert math.isclose(got.roc_auc.value, want.roc_auc.value, abs_tol=1e-9)


def test_contract_anniversaries_on_postgres_equal_duckdb(stores):
    from healthscore.evaluate.observations import ObservationPlan

    plan = ObservationPlan.anniversaries("1mo", "7d")
    pg, duck = (plan.observed(s, datetime(2025, 1, 1), datetime(2025, 6, 1)) for s in stores)
    assert pg.dates == duck.dates and len(pg.pairs) > 0
    assert pg.pairs.equals(duck.pairs) and pg.notes == duck.notes


# --- the statement timeout and stopping -----------------------------------------------------


def test_a_bad_statement_timeout_is_named(stores, monkeypatch):
    pg, _ = stores
    monkeypatch.setenv("HEALTHSCORE_STATEMENT_TIMEOUT", "soon")
    with pytest.raises(hs.StoreError, match="HEALTHSCORE_STATEMENT_TIMEOUT='soon'.*e.g. 90s"):
        hs.connect(pg.url)


def test_the_default_statement_timeout_is_thirty_minutes(stores):
    pg, _ = stores
    assert pg.con.con.execute("SHOW statement_timeout").fetchone()[0] == "30min"


@pytest.fixture
def locked(stores):
    """The store's bookkeeping table locked by another session: a command opening the
    store waits in the server until it gives up or is stopped."""
    import psycopg

    pg, _ = stores
    with psycopg.connect(pg.url) as locker, psycopg.connect(pg.url, autocommit=True) as watcher:
        locker.execute('LOCK TABLE "_healthscore_meta" IN ACCESS EXCLUSIVE MODE')
        yield pg, watcher  # its own session: pg_stat_activity is read once per transaction
        locker.rollback()


def _as_from_a_terminal() -> None:
    """In the child: Ctrl-C delivered and handled as a terminal's shell leaves it. A test
    worker's SIGINT disposition and mask are inherited through exec; in a whole-suite
    run something earlier in the worker left them so that the command never saw the
    Ctrl-C (it passed alone and in its own file)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _cli(db: str, cwd, **env) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200", **env}
    cmd = [sys.executable, "-m", "healthscore.cli", "score", "--db", db]
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_terminal,
    )


def _waiting(locker, timeout: float = 60) -> list[int]:
    """The server processes waiting for the lock (polled until one is)."""
    sql = (
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND wait_event_type = 'Lock'"
        " AND query LIKE '%_healthscore_meta%' AND pid <> pg_backend_pid()"
        # this test's database only: the other worker's tests lock their own stores
        " AND datname = current_database()"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [r[0] for r in locker.execute(sql).fetchall()]
        if pids:
            return pids
        time.sleep(0.2)
    return []


def test_a_statement_over_the_timeout_stops_with_a_message_naming_the_setting(locked, tmp_path):
    pg, _ = locked
    proc = _cli(pg.url, tmp_path, HEALTHSCORE_STATEMENT_TIMEOUT="1s")
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert b"statement timeout (1s)" in err and b"HEALTHSCORE_STATEMENT_TIMEOUT" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_command_cancels_its_query_in_the_server(locked, sig, tmp_path):
    pg, locker = locked
    proc = _cli(pg.url, tmp_path)
    try:
        pids = _waiting(locker)
        assert pids, "the command never reached the server"
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            pytest.fail(
                f"the command did not stop on {sig.name}; this worker's SIGINT handler "
                f"{signal.getsignal(signal.SIGINT)!r}, blocked signals {blocked}"
            )
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert f"interrupted ({sig.name})".encode() in err
    assert b"Traceback" not in err
    deadline = time.monotonic() + 5
    while _waiting(locker, timeout=0.1) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _waiting(locker, timeout=0.1), "the query still runs in the server"


@pytest.fixture
def own_timeout(stores, monkeypatch):
    """A second store on the same database whose statements may run one second, and a
    locker: a session of its own that locks a table so that reading it waits."""
    import psycopg

    pg, _ = stores
    monkeypatch.setenv("HEALTHSCORE_STATEMENT_TIMEOUT", "1s")
    store = hs.connect(pg.url)

    @contextmanager
    def locking(table: str):
        with psycopg.connect(pg.url) as locker:
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            try:
                yield
            finally:
                locker.rollback()

    yield store, locking
    store.con.disconnect()


@pytest.mark.parametrize(
    "table, run",
    [
        ("flags", lambda s, _: flags.list_flags(s)),
        ("accounts", lambda s, account: asof.why_not_scored(s, account, DEMO_END)),
        ("accounts", lambda s, _: portfolio._accounts(s)),
    ],
    ids=["flags", "why-not-scored", "portfolio"],
)
def test_a_query_run_straight_through_ibis_times_out_in_our_words(own_timeout, table, run):
    store, locking = own_timeout
    account = store.table("accounts").account_id.min().to_pyarrow().as_py()
    t0 = time.monotonic()
    with locking(table), pytest.raises(hs.StoreError) as caught:
        run(store, account)
    assert time.monotonic() - t0 < 30
    assert "statement timeout (1s)" in str(caught.value)
    assert "HEALTHSCORE_STATEMENT_TIMEOUT" in caught.value.hint
    # the session is usable after: the failed statement's transaction was rolled back
    assert run(store, account) is not None


def test_a_load_staged_through_copy_keeps_every_value(stores, monkeypatch):
    """A streamed load on PostgreSQL (staged with COPY) stores exactly the values sent:
    text that COPY's own format would misread (tabs, newlines, backslashes, ``\\N``),
    empty text apart from NULL, microseconds, and floats of every kind; reloaded, it is
    all unchanged."""
    import pyarrow as pa

    from healthscore.store import backend

    # batches of 3,000 rows (100,000 in use): the same slicing of the stream into COPY
    # batches and of the rows read back, on 24,000 rows rather than 240,000
    monkeypatch.setattr(backend, "_FETCH_ROWS", 3_000)
    pg, duck = stores
    texts = ["tab\there", "line\nbreak", "back\\slash", "\\N", "", None, "ünï ☃", "a,b;'\""]
    n = len(texts) * 3_000  # several COPY batches
    ids = [f"copy-{i}" for i in range(n)]
    base = datetime(2024, 3, 1, 12, 0, 0, 123456)
    rows = pa.table(
        {
            "event_id": ids,
            "account_id": [texts[i % len(texts)] or "acct" for i in range(n)],
            "user_id": [texts[i % len(texts)] for i in range(n)],
            "event": ["login"] * n,
            "ts": pa.array(
                [base + timedelta(microseconds=i) for i in range(n)], pa.timestamp("us")
            ),
            "quantity": [[0.1, -0.0, 1e300, float("inf"), None][i % 5] for i in range(n)],
        }
    )
    stream = pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches(max_chunksize=7_000))
    result = pg.load("usage_events", stream)
    assert (result.inserted, result.updated, result.unchanged) == (n, 0, 0)
    t = pg.table("usage_events")
    got = pg.execute(t.filter(t.event_id.startswith("copy-")).order_by("ts"))
    assert got.select(rows.column_names).to_pylist() == rows.to_pylist()
    again = pg.load("usage_events", rows)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, n)
