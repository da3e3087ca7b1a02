"""A kept statement about a few accounts (the rescorer's micro-batch: their ids in
slots, padded to the plan's size) reads the row groups that hold those accounts'
events, not every group between the smallest and the largest id."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: DuckDB's rows in a row group (the zone maps a scan skips by)
GROUP = 122_880


def _events(groups: int) -> pa.Table:
    """``groups`` row groups of events clustered by account (as a load writes them), 100
    accounts a group."""
    n = groups * GROUP
    i = np.arange(n)
    number = pa.array(i * 100 * groups // n).cast(pa.string())
    return pa.table(
        {
            "event_id": pc.binary_join_element_wise("e", pa.array(i).cast(pa.string()), ""),
            "account_id": pc.binary_join_element_wise("acc-", pc.utf8_lpad(number, 5, "0"), ""),
            "user_id": pa.array(["u1"] * n),
            "event": pa.array(["login"] * n),
            "ts": pa.array(np.datetime64("2024-01-01", "us") + (i % 5000).astype("timedelta64[m]")),
            "quantity": pa.array(np.ones(n)),
        }
    )


def test_a_kept_query_of_a_few_accounts_reads_only_their_row_groups(tmp_path):
    from healthscore.store import connect, parameter

    events = _events(3)
    store = connect(tmp_path / "s.duckdb")
    try:
        store.insert("usage_events", events)
        t = store.table("usage_events")
        slots = [parameter(f"id{i}", "string") for i in range(64)]
        few = t.filter(t.account_id.isin(slots))
        expr = few.group_by("account_id").agg(n=few.count())
        prepared = store.prepare(expr.order_by("account_id"))
        prepared.kept = True  # as the rescorer's plans: a statement planned once
        # an account of the first row group and one of the last, padded to 64 slots
        wanted = ["acc-00010", "acc-00290"]
        values = {f"id{i}": wanted[min(i, 1)] for i in range(64)}
        store.run_prepared(prepared, values)  # planned
        native = store._backend.native
        profile = tmp_path / "profile.json"
        native.execute("PRAGMA enable_profiling = 'json'")
        native.execute(f"PRAGMA profiling_output = '{profile}'")
        rows = store.run_prepared(prepared, values)
        native.execute("PRAGMA disable_profiling")
    finally:
        store.close()
    ids = events["account_id"].to_pylist()
    assert rows.to_pylist() == [{"account_id": a, "n": ids.count(a)} for a in wanted]
    scanned = json.loads(profile.read_text())["cumulative_rows_scanned"]
    # the two accounts' row groups (and the one-row values table), not all three
    assert scanned <= 2 * GROUP + 10, scanned
