"""An extra column held as text keeps each value as it was written, and `healthscore
load` and the service's ingest store the same text for the same value.

Found after the ninth session: a CSV's ``9.50`` and ``8`` went into an extra text column
as ``9.5`` and ``8.0`` (the file's column was read as numbers first, then cast back); a
JSON lines column mixing text and numbers stored the text with its JSON quotes
(``"9"``); and a number sent to the service was stored as ``8`` where `load` of the same
JSON stored ``8.0``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service_support import demo_event, stored_events
from test_cli import run

ACC = "ACC-00102"


def _column(db: Path, table: str, key: str, column: str) -> dict:
    from healthscore.store import connect

    store = connect(db, read_only=True)
    try:
        t = store.table(table)
        rows = store.execute(t.select(key, column)).to_pylist()
    finally:
        store.close()
    return {r[key]: r[column] for r in rows}


@pytest.fixture
def project(tmp_path):
    assert run("init", tmp_path, cwd=tmp_path).exit_code == 0
    return tmp_path


def _load(project: Path, table: str, name: str, text: str) -> None:
    (project / name).write_text(text)
    r = run("load", table, name, cwd=project)
    assert r.exit_code == 0, r.output


def test_csv_numbers_into_an_extra_text_column_keep_their_own_text(project):
    head = "account_id,created_at,tier\n"
    _load(project, "accounts", "a.csv", head + "A1,2024-01-01,gold\n")
    _load(project, "accounts", "b.csv", head + "A2,2024-01-01,8\nA3,2024-01-01,9.50\n")
    _load(project, "accounts", "c.csv", head + "A4,2024-01-01,007\nA5,2024-01-01,1e3\n")
    got = _column(project / "healthscore.duckdb", "accounts", "account_id", "tier")
    assert got == {"A1": "gold", "A2": "8", "A3": "9.50", "A4": "007", "A5": "1e3"}


def test_a_json_lines_column_of_text_and_numbers_is_text_without_quotes(project):
    rows = [
        {"account_id": "A1", "created_at": "2024-01-01", "tier": "9"},
        {"account_id": "A2", "created_at": "2024-01-01", "tier": 7},
        {"account_id": "A3", "created_at": "2024-01-01", "tier": "gold"},
    ]
    _load(project, "accounts", "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    got = _column(project / "healthscore.duckdb", "accounts", "account_id", "tier")
    assert got == {"A1": "9", "A2": "7", "A3": "gold"}


def test_json_numbers_into_an_extra_text_column_read_as_the_service_reads_them(project):
    first = {"account_id": "A1", "created_at": "2024-01-01", "tier": "gold"}
    _load(project, "accounts", "a.jsonl", json.dumps(first) + "\n")
    rows = [
        {"account_id": "A2", "created_at": "2024-01-01", "tier": 8.0},
        {"account_id": "A3", "created_at": "2024-01-01", "tier": 12},
    ]
    _load(project, "accounts", "b.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    got = _column(project / "healthscore.duckdb", "accounts", "account_id", "tier")
    assert got == {"A1": "gold", "A2": "8.0", "A3": "12"}


def test_ingest_stores_text_and_numbers_of_one_column_as_load_does(api, service):
    rows = [
        demo_event("xt-1", plan_t="9"),
        demo_event("xt-2", plan_t=7),
        demo_event("xt-3", plan_t="pro"),
    ]
    r = api.post("/v1/ingest/usage_events", json={"rows": rows})
    assert r.status_code == 200, r.text
    # a number into the text column it made: the number's JSON text, as `load` keeps it
    r = api.post("/v1/ingest/usage_events", json={"rows": [demo_event("xt-4", plan_t=8.0)]})
    assert r.status_code == 200, r.text
    assert stored_events(service, "plan_t") == {
        "xt-1": "9",
        "xt-2": "7",
        "xt-3": "pro",
        "xt-4": "8.0",
    }
