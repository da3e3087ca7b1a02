"""The store: typed tables, idempotent loads with counts, watermarks and freshness."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

import healthscore as hs
from fixtures import tables
from healthscore.store import SCHEMA_VERSION, connect


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
