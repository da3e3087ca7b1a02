"""A small micro-batch's fixed costs cut without changing what it writes: a few rows
are inserted as bound values (not Arrow rows).

Real DuckDB files; the values chosen to trip a conversion (quotes, NUL-free unicode,
NaN, the smallest subnormal, microseconds, the extremes of int64)."""

from __future__ import annotations

import math
import shutil
from datetime import date, datetime

import pyarrow as pa

import fixtures


def _awkward(n: int) -> pa.Table:
    texts = ["it's", 'say "hi"', "", "naïve ☃ 名前", "a\nb\tc", "\\x00", None]
    floats = [0.1 + 0.2, math.nan, 5e-324, -0.0, 1e308, math.inf, None]
    ints = [0, -(2**63), 2**63 - 1, None]
    return pa.table(
        {
            "t": pa.array([texts[i % len(texts)] for i in range(n)], pa.string()),
            "f": pa.array([floats[i % len(floats)] for i in range(n)], pa.float64()),
            "i": pa.array([ints[i % len(ints)] for i in range(n)], pa.int64()),
            "b": pa.array([[True, False, None][i % 3] for i in range(n)], pa.bool_()),
            "d": pa.array([date(2024, 2, 29) if i % 2 else None for i in range(n)], pa.date32()),
            "ts": pa.array(
                [datetime(2025, 1, 1, 23, 59, 59, 999_999 - i) for i in range(n)],
                pa.timestamp("us"),
            ),
        }
    )


def _comparable(rows: list[dict]) -> list[tuple]:
    # NaN != NaN, and -0.0 == 0.0: floats compared by their text
    return [tuple(repr(v) if isinstance(v, float) else v for v in r.values()) for r in rows]


def _rows(store, name: str) -> list[tuple]:
    return _comparable(store.execute(store.stored(name).order_by("ts")).to_pylist())


def test_a_few_rows_are_stored_exactly_as_the_arrow_insert_stores_them(tmp_path):
    from healthscore.store import connect

    rows = _awkward(40)
    schema = {"t": "string", "f": "float64", "i": "int64", "b": "boolean", "d": "date"}
    schema["ts"] = "timestamp"
    store = connect(tmp_path / "s.duckdb")
    try:
        store.create_table("one_by_one", schema)
        store.create_table("at_once", schema)
        for start in range(0, rows.num_rows, 3):  # 3 rows at a time: bound values
            store.insert("one_by_one", rows.slice(start, 3))
        store.insert("at_once", rows)  # 40 rows: the Arrow rows scanned
        got = _rows(store, "one_by_one")
        assert got == _rows(store, "at_once")
        want = sorted(rows.to_pylist(), key=lambda r: r["ts"])
        assert got == _comparable(want)
    finally:
        store.close()


def test_a_one_account_micro_batch_writes_the_row_a_rescore_of_everyone_wrote(fixture_db, tmp_path):
    from healthscore.service import Settings
    from healthscore.service.rescorer import Rescorer
    from healthscore.service.state import ServiceState
    from healthscore.store import current

    db = tmp_path / "store.duckdb"
    shutil.copy2(fixture_db, db)
    state = ServiceState.open(
        Settings(db=str(db), now=fixtures.AS_OF, daily_rescore=False, idle_builds=False)
    )
    try:
        rescorer = Rescorer(state)
        rescorer.rescore_everyone(daily=False)  # every account: Arrow rows
        card = state.model.scorecard(state.model.scorecard_names()[0])

        def stored(account: str) -> dict:
            with state.store_access() as store:
                t = current.of_model(store, card.version, card.scorecard_name)
                row = store.execute(t.filter(t.account_id == account)).to_pylist()
            assert len(row) == 1
            row[0].pop("computed_at")
            return row[0]

        with state.store_access() as store:  # the accounts scored at that date
            t = current.of_model(store, card.version, card.scorecard_name)
            ids = sorted(store.execute(t)["account_id"].to_pylist())
        for account in (ids[0], ids[-1]):
            everyone = stored(account)
            rescorer.rescore({account})  # one account: bound values
            assert stored(account) == everyone
    finally:
        state.close()
