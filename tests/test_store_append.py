"""``Store.append`` (a small batch against the stored rows of its keys) does what
``Store.load`` does: the same counts, the same stored rows, the same watermark, and
says which accounts it changed."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from healthscore.errors import StoreError
from healthscore.store import connect

D = dt.datetime


def _events(ids, accounts, quantities, ts=D(2025, 6, 1), **extra) -> pa.Table:
    n = len(ids)
    cols = {
        "event_id": ids,
        "account_id": pa.array(accounts, pa.string()),
        "user_id": ["u"] * n,
        "event": ["login"] * n,
        "ts": pa.array([ts] * n, pa.timestamp("us")),
        "quantity": pa.array(quantities, pa.float64()),
    }
    return pa.table({**cols, **extra})


BATCHES = [
    # (rows, columns supplied)
    (_events(["e1", "e2"], ["A1", "A2"], [1, 2]), None),
    (_events(["e2", "e3"], ["A2", "A9"], [5, 3]), None),  # e2 changed, e3 new, A9 unknown
    (_events(["e1", "e3"], ["A1", "A9"], [1, 3]), None),  # identical
    (_events(["e1"], ["A3"], [1], plan=["pro"]), None),  # moved to A3, a new column
    # a batch about quantity only: the stored account and plan are kept
    (_events(["e2"], [None], [9]), ("event_id", "quantity")),
]


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request, tmp_path):
    """A fresh store on each backend (PostgreSQL: skipped without HEALTHSCORE_TEST_PG)."""
    if request.param == "duckdb":
        s = connect(tmp_path / "s.duckdb")
        yield s
        s.close()
        return
    from fixtures import postgres_store

    with postgres_store() as s:
        yield s


@pytest.mark.parametrize("method", ["load", "append"])
def test_append_and_load_agree(method, backend):
    s = backend
    s.load(
        "accounts", pa.table({"account_id": ["A1", "A2", "A3"], "created_at": [D(2024, 1, 1)] * 3})
    )
    results = [getattr(s, method)("usage_events", b, columns=c) for b, c in BATCHES]
    counts = [(r.inserted, r.updated, r.unchanged, r.unknown_accounts) for r in results]
    assert counts == [(2, 0, 0, 0), (1, 1, 0, 1), (0, 0, 2, 1), (0, 1, 0, 0), (0, 1, 0, 0)]
    rows = s.execute(s.table("usage_events").order_by("event_id")).to_pylist()
    assert [(r["event_id"], r["account_id"], r["quantity"], r["plan"]) for r in rows] == [
        ("e1", "A3", 1.0, "pro"),
        ("e2", "A2", 9.0, None),
        ("e3", "A9", 3.0, None),
    ]
    assert s.watermarks()["usage_events"] == D(2025, 6, 1)
    if method == "append":
        assert [r.accounts for r in results] == [
            ["A1", "A2"],
            ["A2", "A9"],
            [],
            ["A1", "A3"],
            ["A2"],
        ]
    s.close()


def test_append_refuses_a_batch_with_a_key_twice_and_writes_nothing(backend):
    s = backend
    with pytest.raises(StoreError, match="more than once"):
        s.append("usage_events", _events(["e1", "e1"], ["A1", "A1"], [1, 2]))
    with pytest.raises(StoreError, match="have no event_id"):
        s.append("usage_events", _events([None], ["A1"], [1]))
    assert s.count("usage_events") == 0


def test_delete_rows_matches_awkward_values_exactly(backend):
    # the value lists are rendered at once (thousands of accounts a micro-batch): quotes,
    # backslashes, unicode and timestamps still match only the rows they name
    ids = ["it's", "back\\slash", "ünï", "a'b''c", "plain", "keep"] + [f"n{i}" for i in range(300)]
    times = [D(2025, 6, 1, 12, 30, 5, 123000), D(2025, 6, 2)]
    backend.load(
        "usage_events",
        _events(ids, ["A1"] * len(ids), [1.0] * len(ids), ts=times[0]),
    )
    gone = [i for i in ids if i != "keep"]
    backend.delete_rows("usage_events", {"event_id": gone, "ts": times})
    left = backend.execute(backend.table("usage_events").select("event_id"))
    assert left["event_id"].to_pylist() == ["keep"]
    backend.delete_rows("usage_events", {"event_id": ["keep"], "ts": times[1]})  # other time
    assert backend.count("usage_events") == 1
    backend.delete_rows("usage_events", {"event_id": []})  # an empty list matches nothing
    assert backend.count("usage_events") == 1
