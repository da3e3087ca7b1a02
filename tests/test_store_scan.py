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


#: usage_events read by a window scan and a whole-history scan (the reference model's
#: shape: the two scans share one account-filtered relation in a micro-batch's SQL; with
#: the 90-day distinct count beside the 30-day ones, DuckDB 1.5 reads every column of it)
USAGE = """
metrics:
  events_30d: {from: usage_events, aggregate: count(), window: 30d}
  users_30d: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}
  kinds_90d: {from: usage_events, aggregate: count_distinct(event), window: 90d}
  days_since_last: {from: usage_events, aggregate: days_since(max(ts)), fill: 365}
pillars:
  p:
    weight: 1
    metrics:
      events_30d: {weight: 1, bad: 0, good: 10}
      users_30d: {weight: 1, bad: 0, good: 3}
      kinds_90d: {weight: 1, bad: 0, good: 3}
      days_since_last: {weight: 1, bad: 30, good: 1}
"""
#: the same plus the latest event, which orders rows by time then key (event_id)
LATEST = USAGE.replace(
    "pillars:",
    "  last_event: {from: usage_events, aggregate: last(quantity), window: 30d}\npillars:",
).replace(
    "      days_since_last:",
    "      last_event: {weight: 1, bad: 0, good: 5}\n      days_since_last:",
)


def _scan_columns(profile: dict, table: str) -> set[str]:
    """The columns DuckDB's profile says the scans of ``table`` read."""
    found: set[str] = set()

    def walk(node):
        info = node.get("extra_info") or {}
        if node.get("operator_type") == "TABLE_SCAN" and str(info.get("Table", "")).endswith(
            "." + table
        ):
            cols = info.get("Projections", [])
            found.update([cols] if isinstance(cols, str) else cols)
        for child in node.get("children", []):
            walk(child)

    walk(profile)
    return found


def _few_and_everyone(tmp_path, text: str):
    """A micro-batch plan's rows of two accounts (kept statement, profiled), the columns
    its usage_events scans read, and the rows of the plan of everyone for them."""
    import healthscore as hs
    from fixtures import AS_OF, memory_store
    from healthscore.engine.plan import ScorePlan

    store = memory_store()
    model = hs.load_model_text(text)
    ids = sorted(store.table("accounts").account_id.to_pyarrow().to_pylist())[:2]
    plan = ScorePlan(model)
    plan.run(store, AS_OF, ids)  # planned
    native = store._backend.native
    profile = tmp_path / f"profile-{len(text)}.json"
    native.execute("PRAGMA enable_profiling = 'json'")
    native.execute(f"PRAGMA profiling_output = '{profile}'")
    few = plan.run(store, AS_OF, ids).to_pylist()
    native.execute("PRAGMA disable_profiling")
    everyone = [r for r in plan.run(store, AS_OF).to_pylist() if r["account_id"] in ids]
    return few, _scan_columns(json.loads(profile.read_text()), "usage_events"), everyone


def test_a_plan_of_a_few_accounts_reads_only_the_event_columns_its_metrics_use(tmp_path):
    # the scans' shared account-filtered relation was `SELECT *`: DuckDB materialized
    # every column (on the S book the events' event_id text was most of a 93-account
    # micro-batch's CPU)
    few, read, everyone = _few_and_everyone(tmp_path, USAGE)
    assert few == everyone and len(few) == 2
    assert read == {"account_id", "user_id", "event", "ts"}, read


def test_a_plan_that_orders_rows_by_key_still_reads_the_key(tmp_path):
    few, read, everyone = _few_and_everyone(tmp_path, LATEST)
    assert few == everyone and len(few) == 2
    assert read == {"account_id", "event_id", "user_id", "event", "ts", "quantity"}, read
