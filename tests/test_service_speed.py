"""The live service's fast paths keep their guarantees: what start-up prepares, the
token cache (revocation honoured at once), and the rescorer's scores against the CLI's
after an ingest."""

from __future__ import annotations

import shutil

from service_support import running_service


def _indexed_tables(state) -> set[str]:
    with state.store_access() as store:
        rows = store.execute_sql("SELECT table_name FROM duckdb_indexes()").to_pylist()
    return {r["table_name"] for r in rows}


def test_the_append_key_indexes_are_made_at_start_up_not_by_the_first_batch(
    fixture_db, tmp_path
):
    # the first append to a table makes its key index (a minute on 10 M events); made
    # by a batch, it held the store and every other request waited behind it
    db = tmp_path / "s.duckdb"
    shutil.copy(fixture_db, db)
    with running_service(db) as svc:
        assert {"usage_events", "tickets", "accounts"} <= _indexed_tables(svc.state)
