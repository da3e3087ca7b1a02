"""`healthscore load` on the ambiguous data a first export holds: headers, ids, numbers,
dates. Each case is refused naming file, row and column (nothing stored), or read by a
documented rule; never guessed silently. Real files, a real DuckDB store, the CLI."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import healthscore as hs
from healthscore.cli import app

ACCOUNTS = "account_id,name,created_at\n"


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def one_line(text: str) -> str:
    """CLI output without the terminal's line wrapping."""
    return " ".join(text.split())


def load(tmp_path: Path, table: str, name: str, text: str | bytes, *args: str):
    """Run `healthscore load` on a file holding ``text``: (exit code, output, store path)."""
    f = write(tmp_path / name, text)
    db = tmp_path / "s.duckdb"
    result = CliRunner().invoke(app, ["load", table, str(f), "--db", str(db), *args])
    assert "Traceback" not in result.output
    return result.exit_code, one_line(result.output), db


def stored(db: Path, table: str) -> list[dict]:
    if not db.exists():
        return []
    store = hs.connect(db)
    if table not in store.list_tables():
        return []
    return store.table(table).to_pyarrow().to_pylist()


# ------------------------------------------------------------------------------ headers


def test_a_header_naming_a_column_twice_is_refused_not_renamed(tmp_path):
    # the reader renamed the second 'name' to name_1 and kept it as an extra column
    code, out, db = load(
        tmp_path, "accounts", "a.csv", "account_id,name,name,created_at\nA1,x,y,2025-01-01\n"
    )
    assert code == 1, out
    assert "a.csv: the header names 'name' twice" in out
    assert stored(db, "accounts") == []


def test_a_column_without_a_header_name_but_with_values_is_refused(tmp_path):
    # was stored as an extra column the reader called 'column1'
    code, out, db = load(tmp_path, "accounts", "a.csv", "account_id,,created_at\nA1,x,2025-01-01\n")
    assert code == 1, out
    assert "a.csv:2: column 2 has no name in the header but holds values (got 'x')" in out
    assert stored(db, "accounts") == []


def test_a_trailing_delimiter_column_is_left_out_and_said(tmp_path):
    # was stored as an empty extra column 'column3'
    code, out, db = load(
        tmp_path, "accounts", "a.csv", "account_id,name,created_at,\nA1,x,2025-01-01,\n"
    )
    assert code == 0, out
    assert "left out column 4: no name in the header and no value in any row" in out
    assert list(stored(db, "accounts")[0]) == ["account_id", "name", "segment", "csm", "created_at"]


def test_json_keys_differing_only_by_case_are_refused_not_emptied(tmp_path):
    # the reader renamed 'Account_ID' to 'Account_ID_1' and then read NULL for it: 'A2' lost
    rows = '{"account_id": "A1", "Account_ID": "A2", "created_at": "2025-01-01"}\n'
    code, out, db = load(tmp_path, "accounts", "a.jsonl", rows)
    assert code == 1, out
    assert "a.jsonl: columns 'account_id' and 'Account_ID' differ only by case" in out
    assert stored(db, "accounts") == []


def test_a_json_empty_key_is_refused_not_emptied(tmp_path):
    # the reader called it 'C1' and then read NULL for it: the value was lost
    rows = '{"account_id": "A1", "": "v", "created_at": "2025-01-01"}\n'
    code, out, db = load(tmp_path, "accounts", "a.jsonl", rows)
    assert code == 1, out
    assert 'a.jsonl: a row has an empty key ("": ...)' in out
    assert stored(db, "accounts") == []


# ------------------------------------------------------------------------------ ids


def test_ids_written_in_composed_and_decomposed_unicode_are_one_id(tmp_path):
    # 'José' as é (NFC) and as e + U+0301 (NFD) look the same: they were two accounts
    nfc, nfd = "Jos\u00e9", "Jose\u0301"
    code, out, db = load(
        tmp_path, "accounts", "a.csv", ACCOUNTS + f"{nfc},x,2025-01-01\n{nfd},y,2025-01-01\n"
    )
    assert code == 1, out
    assert "a.csv:3: account_id: duplicate account_id, first seen at row 2" in out
    code, out, db = load(tmp_path, "accounts", "b.csv", ACCOUNTS + f"{nfd},x,2025-01-01\n")
    assert code == 0, out
    code, out, db = load(
        tmp_path, "usage_events", "u.csv", f"account_id,event,ts\n{nfc},login,2025-01-02\n"
    )
    assert code == 0 and "not in the accounts table" not in out, out
    assert [r["account_id"] for r in stored(db, "accounts")] == [nfc]
    assert [r["account_id"] for r in stored(db, "usage_events")] == [nfc]


def test_an_id_holding_a_zero_width_space_is_refused(tmp_path):
    # 'A1\u200b' was stored as an account apart from 'A1', looking the same
    code, out, db = load(
        tmp_path, "accounts", "a.csv", ACCOUNTS + "A1\u200b,x,2025-01-01\nA1,y,2025-01-01\n"
    )
    assert code == 1, out
    assert "a.csv:2: account_id: holds an invisible character (U+200B at character 3)" in out
    assert stored(db, "accounts") == []


def test_a_missing_value_marker_is_no_id_and_a_spec_can_say_it_is_missing(tmp_path):
    # '#N/A' (a failed VLOOKUP) and 'NULL' were stored as accounts of those names
    rows = "account_id,user_id,event,ts\n#N/A,U1,login,2025-01-01\nA1,NULL,login,2025-01-01\n"
    code, out, db = load(tmp_path, "usage_events", "u.csv", rows)
    assert code == 1, out
    assert (
        "u.csv:2: account_id: '#N/A' is how exports mark a missing value; refused as "
        "account_id (got '#N/A'); hint: leave the cell empty, or say what it means in a "
        "load spec: `map: {account_id: {values: {'#N/A': null}}}` (the row is then skipped)"
    ) in out
    assert "u.csv:3: user_id: 'NULL' is how exports mark a missing value" in out
    assert stored(db, "usage_events") == []
    spec = write(
        tmp_path / "spec.yaml",
        "map:\n  account_id: {values: {'#N/A': null}}\n  user_id: {values: {'NULL': null}}\n",
    )
    code, out, db = load(tmp_path, "usage_events", "u.csv", rows, "--spec", str(spec))
    assert code == 0, out
    assert [(r["account_id"], r["user_id"]) for r in stored(db, "usage_events")] == [("A1", None)]


def test_a_missing_value_marker_in_a_required_text_column_is_refused(tmp_path):
    # a flag of kind 'N/A' was stored
    rows = "flag_id,account_id,ts,kind\nF1,A1,2025-01-01,N/A\n"
    code, out, db = load(tmp_path, "flags", "f.csv", rows)
    assert code == 1, out
    assert "f.csv:2: kind: 'N/A' is how exports mark a missing value; refused as kind" in out


# ------------------------------------------------------------------------------ numbers


def test_a_number_like_1_200_alone_is_refused_not_read_as_decimals(tmp_path):
    # a European export's ARR 12.000 and 1.200 were stored as 12.0 and 1.2
    rows = (
        "subscription_id,account_id,start_date,arr\n"
        "S1,A1,2025-01-01,12.000\nS2,A1,2025-01-01,1.200\nS3,A1,2025-01-01,850\n"
    )
    code, out, db = load(tmp_path, "subscriptions", "s.csv", rows)
    assert code == 1, out
    assert (
        "s.csv:2: arr: not a number: '.' could separate thousands or decimals (got '12.000', "
        "expected a number like 1234.5); hint: no number in arr shows whether '.' separates "
        "thousands or decimals (row 2: '12.000'): pass --number-format 1.234,56 (thousands) "
        "or 1,234.56 (decimals)"
    ) in out
    assert stored(db, "subscriptions") == []
    code, out, db = load(tmp_path, "subscriptions", "s.csv", rows, "--number-format", "1.234,56")
    assert code == 0, out
    assert [r["arr"] for r in stored(db, "subscriptions")] == [12000.0, 1200.0, 850.0]


def test_a_column_that_shows_decimals_reads_1_200_as_decimals(tmp_path):
    rows = (
        "subscription_id,account_id,start_date,arr\nS1,A1,2025-01-01,1.200\nS2,A1,2025-01-01,0.5\n"
    )
    code, out, db = load(tmp_path, "subscriptions", "s.csv", rows)
    assert code == 0, out
    assert [r["arr"] for r in stored(db, "subscriptions")] == [1.2, 0.5]


# ------------------------------------------------------------------------------ offsets


def test_times_with_and_without_an_offset_in_one_column_are_loaded_and_said(tmp_path):
    # the ones without an offset were taken as UTC with no word: a file mixing
    # 10:00+02:00 and 10:00 may hold local times in the second form
    text = (
        ACCOUNTS
        + "A1,Acme,2025-01-01T10:00:00+02:00\n"
        + "A2,Bolt,2025-01-02 10:00\n"
        + "A3,Cove,2025-01-03 11:30:00\n"
        + "A4,Dune,2025-01-04\n"
    )
    code, out, db = load(tmp_path, "accounts", "a.csv", text)
    assert code == 0, out
    assert (
        "a.csv: created_at: 1 value gives a UTC offset and 2 times of day do not "
        "(row 3: '2025-01-02 10:00'); those were read as UTC" in out
    ), out
    assert len(stored(db, "accounts")) == 4
    # one form throughout says nothing
    code, out, _ = load(tmp_path, "accounts", "b.csv", ACCOUNTS + "B1,x,2025-01-02 10:00\n")
    assert code == 0 and "UTC offset" not in out, out
