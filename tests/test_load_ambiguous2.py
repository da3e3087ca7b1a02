"""`healthscore load` on what a first export holds, second round: JSON lines text that is
not plain UTF-8, ISO 8601 offsets, two-digit-year dates, and ``--account-from`` keys in
decomposed Unicode. Each case is read by a documented rule or refused naming the file and
line; never guessed silently. Real files, a real DuckDB store, the CLI."""

from __future__ import annotations

import codecs
from datetime import datetime

import pytest

from test_load_ambiguous import load, stored

ROWS = (
    '{"account_id": "A1", "name": "x", "created_at": "2025-01-01"}\n'
    '{"account_id": "A2", "name": "y", "created_at": "2025-01-02"}\n'
)


# ------------------------------------------------------------------ JSON lines text


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_json_lines_file_starting_with_a_utf8_bom_is_read_as_a_csv_is(
    tmp_path, monkeypatch, threads
):
    # read on one thread, refused on more: "line 2: byte order mark (BOM) is not
    # supported"; hint "write one JSON object per line"
    monkeypatch.setenv("HEALTHSCORE_DUCKDB_THREADS", threads)
    code, out, db = load(tmp_path, "accounts", "a.jsonl", codecs.BOM_UTF8 + ROWS.encode())
    assert code == 0, out
    assert [r["account_id"] for r in stored(db, "accounts")] == ["A1", "A2"]


def test_a_bad_line_after_a_bom_is_named_by_its_own_line(tmp_path):
    text = codecs.BOM_UTF8 + (ROWS + '{"account_id": "A3", "name": x}\n').encode()
    code, out, db = load(tmp_path, "accounts", "a.jsonl", text)
    assert code == 1, out
    assert (
        "a.jsonl:3: cannot read as JSON lines (one object per line): Expecting value (character 30)"
        in out
    )
    assert stored(db, "accounts") == []


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_json_lines_file_is_refused_naming_the_encoding(tmp_path, encoding):
    # was "line 2: UTF-16 encoding is not supported" (or "unexpected character" without a
    # byte order mark); hint "write one JSON object per line"
    code, out, db = load(tmp_path, "accounts", "a.jsonl", ROWS.encode(encoding))
    assert code == 1, out
    assert "a.jsonl:1: the file is UTF-16 text; hint: save the file as UTF-8" in out
    assert stored(db, "accounts") == []


def test_a_utf16_csv_without_a_byte_order_mark_is_refused_naming_the_encoding(tmp_path):
    # was "a.csv:3: has 1 field, the header has 3"
    text = "account_id,name,created_at\nA1,x,2025-01-01\n".encode("utf-16-le")
    code, out, db = load(tmp_path, "accounts", "a.csv", text)
    assert code == 1, out
    assert "a.csv:1: the file is UTF-16 text; hint: save the file as UTF-8" in out


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        # the reader said "line 2" for line 1, and "line 3" for line 2
        (b'{"account_id": "A1", "name": "caf\xe9"}\n', "a.jsonl:1: not UTF-8 text (byte 0xe9"),
        (
            ROWS.encode() + b'{"account_id": "A3",\n',
            "a.jsonl:3: cannot read as JSON lines (one object per line): the line ends inside",
        ),
        (
            b"\n" + ROWS.encode() + b'{"x": y}\n',
            "a.jsonl:4: cannot read as JSON lines (one object per line): Expecting value",
        ),
    ],
)
def test_a_json_lines_read_error_names_the_line_a_text_editor_shows(tmp_path, lines, said):
    code, out, db = load(tmp_path, "accounts", "a.jsonl", lines)
    assert code == 1, out
    assert said in out


def test_a_json_line_holding_a_list_is_refused_naming_its_line(tmp_path):
    # was "missing required columns for table accounts; columns found: json"
    code, out, db = load(tmp_path, "accounts", "a.jsonl", ROWS + "[1, 2]\n")
    assert code == 1, out
    assert (
        "a.jsonl:3: cannot read as JSON lines (one object per line): the line holds a list, "
        "not an object; hint: write one JSON object per line"
    ) in out
    assert stored(db, "accounts") == []


# ------------------------------------------------------------------ ISO 8601 offsets

ACCOUNTS = "account_id,name,created_at\n"


@pytest.mark.parametrize(
    "written",
    [
        # refused without seconds; read with them
        "2025-03-04T10:00+0200",
        "2025-03-04T10:00+02",
        "2025-03-04T10:00+02:00",
        "2025-03-04 10:00 +02:00",
        "2025-03-04T10:00:00+0200",
        "2025-03-04T10:00:00.000+02",
        "2025-03-04T08:00Z",
        "2025-03-04T08:00:00Z",
        # 'UTC' was read only after a space
        "2025-03-04T08:00:00UTC",
        "2025-03-04T13:30+0530",
        "2025-03-04T05:00-03",
    ],
)
def test_every_iso_8601_offset_form_is_read_with_or_without_seconds(tmp_path, written):
    code, out, db = load(tmp_path, "accounts", "a.csv", ACCOUNTS + f"A1,x,{written}\n")
    assert code == 0, out
    assert [r["created_at"] for r in stored(db, "accounts")] == [datetime(2025, 3, 4, 8, 0)]


@pytest.mark.parametrize(
    ("written", "said"),
    [
        # +2500 was stored as a day earlier; +0260 as 07:00
        ("2025-03-04T10:00:00+2500", "not a date or timestamp: the offset '+2500' is out of range"),
        ("2025-03-04T10:00+02:60", "not a date or timestamp: the offset '+02:60' is out of range"),
        ("2025-03-04T10:00:00+020", "not a date or timestamp (got"),
    ],
)
def test_an_offset_that_is_none_is_refused_naming_row_and_column(tmp_path, written, said):
    code, out, db = load(tmp_path, "accounts", "a.csv", ACCOUNTS + f"A1,x,{written}\n")
    assert code == 1, out
    assert f"a.csv:2: created_at: {said}" in out
    assert stored(db, "accounts") == []


# ------------------------------------------------------------------ two-digit years


def test_a_two_digit_year_date_hint_names_year_first_among_the_formats(tmp_path):
    # the hint said day first (%d-%m-%y) only: 25-03-04 is 4 March 2025 year first
    code, out, db = load(tmp_path, "accounts", "a.csv", ACCOUNTS + "A1,x,25-03-04\n")
    assert code == 1, out
    assert (
        "hint: created_at writes two-digit years and no date in it has a field above 31, so "
        "the file cannot tell whether the year is first or last (row 2: '25-03-04'): pass "
        "--date-format %y-%m-%d (year first) or %d-%m-%y (day first)"
    ) in out
    code, out, db = load(
        tmp_path, "accounts", "a.csv", ACCOUNTS + "A1,x,25-03-04\n", "--date-format", "%y-%m-%d"
    )
    assert code == 0, out
    assert [r["created_at"] for r in stored(db, "accounts")] == [datetime(2025, 3, 4)]


@pytest.mark.parametrize(
    ("rows", "hint"),
    [
        # no field above 12: three orders
        ("03/04/25", "pass --date-format %y/%m/%d (year first), %d/%m/%y (day first) or "),
        # a field above 31 says where the year is
        (
            "99-03-04",
            "created_at has its year first (row 2: '99-03-04'): pass --date-format %y-%m-%d",
        ),
        ("04-03-99", "pass --date-format %d-%m-%y (day first) or %m-%d-%y (month first)"),
        (
            "99-03-04\nA2,x,04-03-99",
            "created_at mixes year-first (row 2: '99-03-04') and year-last",
        ),
        # a second field above 12 is no month: the year is last
        (
            "04/15/25",
            "created_at has its month first (row 2: '04/15/25'): pass --date-format %m/%d/%y",
        ),
    ],
)
def test_a_two_digit_year_hint_follows_the_columns_evidence(tmp_path, rows, hint):
    code, out, db = load(tmp_path, "accounts", "a.csv", ACCOUNTS + f"A1,x,{rows}\n")
    assert code == 1, out
    assert hint in out


# ------------------------------------------------------------------ --account-from keys


@pytest.mark.parametrize("events_form", ["NFD", "NFC"])
def test_account_from_finds_a_key_written_in_decomposed_unicode(tmp_path, events_form):
    # subscription ids are stored in NFC; a usage file writing 'Sé' as S + e + U+0301
    # found no account for it ("unknown subscription_id")
    nfc, nfd = "S\u00e9-1", "Se\u0301-1"
    code, out, db = load(tmp_path, "accounts", "a.csv", ACCOUNTS + "A1,x,2025-01-01\n")
    assert code == 0, out
    code, out, db = load(
        tmp_path,
        "subscriptions",
        "s.csv",
        f"subscription_id,account_id,start_date,arr\n{nfd},A1,2025-01-01,100\n",
    )
    assert code == 0, out
    key = nfd if events_form == "NFD" else nfc
    code, out, db = load(
        tmp_path,
        "usage_events",
        "u.csv",
        f"subscription_id,event,ts\n{key},login,2025-01-02\n",
        "--account-from",
        "subscriptions",
    )
    assert code == 0, out
    assert [r["account_id"] for r in stored(db, "usage_events")] == ["A1"]
