"""Rows sent to the service (``check_rows``) are read exactly as ``healthscore load``
reads the same rows from a JSON lines file: same values, same types, same derived ids,
same columns supplied; and a batch with a bad row still names each row and column."""

from __future__ import annotations

import json

import pytest

from healthscore.errors import SourceError
from healthscore.sources import read_source
from healthscore.sources.rows import check_rows

BATCHES = {
    "usage_events": [
        {"event_id": "e1", "account_id": "A1", "user_id": "U1", "event": "login",
         "ts": "2024-03-01T10:00:00+02:00", "quantity": 2},
        {"event_id": " e2 ", "account_id": 12345, "event": 42, "ts": "2024-03-01T10:00:00Z",
         "quantity": 1.5},
        {"account_id": "A1", "ts": "2024/03/02", "quantity": "1,234.5"},
        {"account_id": "A1", "ts": "2024/03/02", "quantity": "1,234.5"},  # same again
        {"event_id": "", "account_id": 42.0, "ts": "2024-03-03 12:30", "quantity": " 7 "},
        {"event_id": "e6", "account_id": "A\u00e9", "ts": "2024-03-04T00:00:00.123456-05:00",
         "quantity": None, "user_id": None},
        {"event_id": 7, "account_id": "A2", "ts": "2024-03-05", "quantity": 1e5},
    ],
    "surveys": [
        {"response_id": "R1", "account_id": "A1", "ts": "2024-03-01", "kind": "NPS", "score": 9},
        {"response_id": "R2", "account_id": "A1", "ts": "2024-03-01", "kind": " csat ",
         "score": "4", "comment": "it's fine\n"},
    ],
    "subscriptions": [
        {"subscription_id": "S1", "account_id": "A1", "start_date": "2024-01-01",
         "end_date": None, "seats": "10", "billing_period_months": 12, "auto_renew": True},
        {"subscription_id": "S2", "account_id": "A1", "start_date": "2024-01-01",
         "end_date": "2025-01-01", "seats": 3.0, "mrr": "1200.50",
         "billing_period_months": "12", "auto_renew": "yes"},
        {"subscription_id": "S3", "account_id": "A2", "start_date": "2024-01-01",
         "billing_period_months": 12.0, "auto_renew": 0},
    ],
    "accounts": [
        {"account_id": "A1", "name": "O'Brien & Co", "created_at": "2023-01-01"},
        {"account_id": "A2", "name": "  Globex  ", "segment": "SMB", "created_at": "2023-02-01"},
    ],
}  # fmt: skip


@pytest.mark.parametrize("table", sorted(BATCHES))
def test_a_batch_is_read_as_healthscore_load_reads_its_json_lines(table, tmp_path):
    rows = BATCHES[table]
    path = tmp_path / f"{table}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = read_source(path, table)
    with check_rows(rows, table) as batch:
        sent = batch.data.read_all()
        supplied = batch.supplied
    pk = sent.column_names[0]
    assert sent.sort_by(pk).to_pylist() == loaded.data.sort_by(pk).to_pylist()
    assert sent.schema == loaded.data.schema
    assert supplied == loaded.supplied
    assert batch.rejects == [] and batch.valid == len(rows)


def test_a_bad_row_among_good_ones_is_named_by_its_index_and_column():
    rows = [dict(r) for r in BATCHES["usage_events"]]
    rows[3]["ts"] = "soon"
    rows[5]["event_id"] = "e1"  # e1 again
    with pytest.raises(SourceError) as e, check_rows(rows, "usage_events"):
        pass
    text = str(e.value)
    assert "usage_events batch: 2 invalid rows, nothing written" in text
    assert "row 3: ts: not a date or timestamp (got 'soon'" in text
    assert "row 5: event_id: duplicate event_id, first seen at row 0 (got 'e1')" in text


def test_a_hint_names_the_batch_index_of_the_row_it_shows_not_a_line_of_a_file():
    """The hint about a number format names the row it saw the evidence on; it named the
    line of the temporary file (1-based, counting only the kept rows), so a one-row
    batch's hint said "row 1" of a row the problem itself calls row 0."""
    base = {"account_id": "A1", "ts": "2024-03-01", "kind": "nps"}
    rows = [
        {**base, "response_id": "R0", "score": "7,5"},  # line 1 of the temporary file
        {**base, "response_id": "R1", "score": [9]},  # not a scalar: left out of the file
        {**base, "response_id": "R2", "score": "8"},
    ]
    with pytest.raises(SourceError) as e, check_rows(rows, "surveys"):
        pass
    bad = next(p for p in e.value.problems if p.column == "score" and p.row == 0)
    assert "(row 0: '7,5')" in bad.hint, bad.hint


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_number_json_cannot_hold_is_a_problem_of_its_row_not_a_crash(value):
    """From Python (the service's JSON reader refuses them itself), a NaN or an infinity
    was a bare ValueError out of the JSON writer: now a problem naming row and column."""
    rows = [
        {"response_id": "R1", "account_id": "A1", "ts": "2024-03-01", "kind": "nps", "score": 9},
        {"response_id": "R2", "account_id": "A1", "ts": "2024-03-01", "kind": "nps",
         "score": value},
    ]  # fmt: skip
    with pytest.raises(SourceError) as e, check_rows(rows, "surveys"):
        pass
    assert "row 1: score: not a finite number" in str(e.value)
