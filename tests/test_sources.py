"""sources: reading CSV, Parquet and JSON-lines files into validated canonical tables."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthscore.errors import SourceError
from healthscore.sources import parse_mapping, read_source, write_rejects

RAVENSTACK = Path(__file__).parents[1].parent / "shared" / "data" / "ravenstack-saas"

TICKETS_HEAD = "ticket_id,account_id,opened_at,closed_at,priority\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict | None]) -> Path:
    """One JSON object per line; None writes a blank line."""
    path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in records))
    return path


def col(batch, name):
    return batch.data.column(name).to_pylist()


def msg(text: str) -> str:
    """A regex matching ``text`` literally."""
    return re.escape(text)


# ------------------------------------------------------------------------- formats


def test_csv_loads_into_canonical_columns_in_table_order(tmp_path):
    f = write(tmp_path / "a.csv", "created_at,account_id,name\n2024-03-01,A1,Acme\n")
    batch = read_source(f, "accounts")
    assert batch.table == "accounts" and batch.file == str(f) and batch.rows_read == 1
    assert batch.data.column_names == ["account_id", "name", "segment", "csm", "created_at"]
    assert batch.data.schema.field("created_at").type == pa.timestamp("us")
    assert batch.data.to_pylist() == [
        {
            "account_id": "A1",
            "name": "Acme",
            "segment": None,
            "csm": None,
            "created_at": dt.datetime(2024, 3, 1),
        }
    ]
    assert batch.rejects == [] and batch.reject_rows is None


def test_tsv_and_txt_delimiters_are_recognised(tmp_path):
    tsv = write(tmp_path / "a.tsv", "account_id\tname\tcreated_at\nA1\tAcme, Inc\t2024-03-01\n")
    txt = write(tmp_path / "a.txt", "account_id;name;created_at\nA1;Acme, Inc;2024-03-01\n")
    for f in (tsv, txt):
        assert col(read_source(f, "accounts"), "name") == ["Acme, Inc"]


def test_json_lines_load(tmp_path):
    f = write_jsonl(
        tmp_path / "t.jsonl",
        [{"ticket_id": 7, "account_id": "A1", "opened_at": "2024-03-01T09:30:00Z", "csat": 4}],
    )
    batch = read_source(f, "tickets")
    assert col(batch, "ticket_id") == ["7"]
    assert col(batch, "opened_at") == [dt.datetime(2024, 3, 1, 9, 30)]
    assert col(batch, "csat") == [4.0]


def test_parquet_integer_ids_become_text(tmp_path):
    f = tmp_path / "acc.parquet"
    pq.write_table(
        pa.table(
            {
                "account_id": pa.array([42, 7], pa.int32()),
                "created_at": pa.array([dt.date(2024, 3, 1), dt.date(2024, 3, 2)]),
            }
        ),
        f,
    )
    batch = read_source(f, "accounts")
    assert col(batch, "account_id") == ["42", "7"]
    assert batch.data.schema.field("account_id").type == pa.string()
    assert col(batch, "created_at") == [dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2)]


def test_parquet_whole_floats_become_integer_text(tmp_path):
    f = tmp_path / "acc.parquet"
    pq.write_table(pa.table({"account_id": [42.0, 1.5], "created_at": ["2024-03-01"] * 2}), f)
    assert col(read_source(f, "accounts"), "account_id") == ["42", "1.5"]


def test_parquet_zoned_timestamps_are_stored_as_naive_utc(tmp_path):
    f = tmp_path / "u.parquet"
    paris = dt.timezone(dt.timedelta(hours=1))
    pq.write_table(
        pa.table(
            {
                "user_id": ["U1"],
                "account_id": ["A1"],
                "created_at": pa.array(
                    [dt.datetime(2024, 3, 1, 12, tzinfo=paris)], pa.timestamp("ns", "Europe/Paris")
                ),
            }
        ),
        f,
    )
    batch = read_source(f, "users")
    assert col(batch, "created_at") == [dt.datetime(2024, 3, 1, 11)]
    assert batch.data.schema.field("created_at").type == pa.timestamp("us")


def test_unknown_extension_names_the_file_and_accepted_extensions(tmp_path):
    f = write(tmp_path / "accounts.xlsx", "")
    with pytest.raises(SourceError, match=msg(f"{f}: unknown file type; hint: accepted ext")):
        read_source(f, "accounts")
    with pytest.raises(SourceError, match=msg(".csv, .tsv, .txt, .parquet, .pq, .jsonl")):
        read_source(f, "accounts")


def test_missing_file_is_an_error(tmp_path):
    f = tmp_path / "nope.csv"
    with pytest.raises(SourceError, match=msg(f"{f}: file not found")):
        read_source(f, "accounts")


def test_unknown_table_is_an_error(tmp_path):
    f = write(tmp_path / "a.csv", "x\n1\n")
    with pytest.raises(SourceError, match=msg("unknown table 'acounts'; hint: canonical tables")):
        read_source(f, "acounts")


def test_unreadable_file_is_reported_with_its_name(tmp_path):
    f = write(tmp_path / "e.parquet", "not parquet")
    with pytest.raises(SourceError, match=msg(f"{f}: cannot read as Parquet")):
        read_source(f, "accounts")
    j = write(tmp_path / "e.json", '[{"account_id": 1},\n {"account_id": 2}]\n')
    with pytest.raises(SourceError, match=msg(f"{j}:1: cannot read as JSON lines")) as e:
        read_source(j, "accounts")
    assert str(e.value).endswith(
        "hint: write one JSON object per line; a file holding a JSON array is not read"
    )


def test_row_with_a_different_number_of_fields_is_named(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,name,created_at\nA1,x,2024-01-01\nA2,y\n")
    with pytest.raises(SourceError, match=msg(f"{f}:3: has 2 fields, the header has 3")):
        read_source(f, "accounts")
    g = write(tmp_path / "b.csv", "account_id,name,created_at\nA1,Acme, Inc,2024-01-01\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{g}:2: has 4 fields, the header has 3; hint: quote values that contain the delimiter"
        ),
    ):
        read_source(g, "accounts")


def test_semicolon_separated_csv_is_recognised(tmp_path):
    f = write(tmp_path / "a.csv", "account_id;name;created_at\nA1;Acme, Inc;2024-03-01\n")
    assert col(read_source(f, "accounts"), "name") == ["Acme, Inc"]


def test_file_not_in_utf8_is_reported_with_its_line_and_a_hint(tmp_path):
    f = tmp_path / "a.csv"
    f.write_bytes("account_id,name,created_at\nA1,Café,2024-01-01\n".encode("latin-1"))
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}:2: not UTF-8 text (byte 0xe9 at character 7); hint: save the file as UTF-8"
        ),
    ):
        read_source(f, "accounts")
    g = tmp_path / "b.csv"
    g.write_bytes("account_id,name,created_at\nA1,x,2024-01-01\n".encode("utf-16"))
    with pytest.raises(SourceError, match=msg(f"{g}:1: the file is UTF-16 text; hint: save")):
        read_source(g, "accounts")


def test_mixed_line_endings_load(tmp_path):
    """A CRLF file whose last line was appended with LF (or the other way round)."""
    for i, text in enumerate(
        [
            'account_id,name,created_at\r\nA1,"Acme, Inc",2024-01-01\r\nA2,Globex,2024-01-02\n',
            "account_id,name,created_at\nA1,Acme,2024-01-01\r\n\r\nA2,Globex,2024-01-02\r\n",
        ]
    ):
        f = tmp_path / f"m{i}.csv"
        f.write_bytes(text.encode())
        batch = read_source(f, "accounts")
        assert col(batch, "account_id") == ["A1", "A2"]
        assert col(batch, "name")[1] == "Globex"
        assert col(batch, "created_at")[1] == dt.datetime(2024, 1, 2)


def test_mixed_line_endings_with_a_bad_row_name_the_row_not_the_encoding(tmp_path):
    f = tmp_path / "m.csv"
    f.write_bytes(b"account_id,name,created_at\r\nA1,x,2024-01-01\r\nA2,y\n")
    with pytest.raises(SourceError) as e:
        read_source(f, "accounts")
    assert str(e.value) == f"{f}:3: has 2 fields, the header has 3"


def test_a_quote_never_closed_is_named_by_its_line(tmp_path):
    f = write(
        tmp_path / "a.csv", 'account_id,name,created_at\nA1,"Acme,2024-01-01\nA2,y,2024-01-02\n'
    )
    with pytest.raises(
        SourceError, match=msg(f"{f}:2: a quoted value opened on this line is never closed")
    ):
        read_source(f, "accounts")
    g = write(tmp_path / "b.csv", 'account_id,name,created_at\nA1,"Acme "Big" Inc",2024-01-01\n')
    with pytest.raises(SourceError, match=msg(f"{g}:2: a quote inside a quoted value")):
        read_source(g, "accounts")


def test_quoted_values_keep_no_quotes_beside_a_literal_inch_mark(tmp_path):
    f = write(
        tmp_path / "a.csv",
        'account_id,name,created_at\nA1,"Acme, Inc",2024-01-01\nA2,5" Co,2024-01-01\n',
    )
    assert col(read_source(f, "accounts"), "name") == ["Acme, Inc", '5" Co']


def test_row_numbers_count_blank_lines_as_a_spreadsheet_does(tmp_path):
    f = write(
        tmp_path / "u.csv",
        'user_id,account_id,created_at\nU1,A1,2024-01-01\n\nU2,A1,"2024-01-02"\n\n\n'
        "U3,A1,soon\nU1,A1,2024-01-01\n",
    )
    with pytest.raises(SourceError) as e:
        read_source(f, "users")
    assert [(p.row, p.column) for p in e.value.problems] == [(7, "created_at"), (8, "user_id")]
    assert "duplicate user_id, first seen at row 2" in str(e.value)
    batch = read_source(f, "users", allow_rejects=True)
    assert batch.reject_rows.column("_row").to_pylist() == [7, 8]


def test_header_only_file_gives_an_empty_batch(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,created_at,plan_tier\n")
    batch = read_source(f, "accounts")
    assert batch.rows_read == 0 and batch.data.num_rows == 0
    assert batch.data.column_names == [
        "account_id", "name", "segment", "csm", "created_at", "plan_tier"
    ]  # fmt: skip


def test_a_file_without_a_header_is_an_error(tmp_path):
    f = write(tmp_path / "a.csv", "")
    with pytest.raises(SourceError, match=msg(f"{f}: the file is empty (0 bytes): no header row")):
        read_source(f, "accounts")
    j = write(tmp_path / "a.jsonl", "")
    with pytest.raises(SourceError, match=msg(f"{j}: the file is empty (0 bytes); hint:")):
        read_source(j, "accounts")
    b = write(tmp_path / "b.csv", "\ufeff\n \r\n\n")
    with pytest.raises(SourceError, match=msg(f"{b}: the file holds only blank lines: no header")):
        read_source(b, "accounts")
    h = write(tmp_path / "h.csv", "\naccount_id,created_at\nA1,2024-01-01\n")
    with pytest.raises(SourceError, match=msg(f"{h}:1: the first line is blank")):
        read_source(h, "accounts")


# ------------------------------------------------------------------- columns, mapping


def test_mapping_renames_columns(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,account_name,signup_date\nA1,Acme,2024-03-01\n")
    batch = read_source(f, "accounts", {"account_name": "name", "signup_date": "created_at"})
    assert col(batch, "name") == ["Acme"]
    assert col(batch, "created_at") == [dt.datetime(2024, 3, 1)]
    assert "signup_date" not in batch.data.column_names


def test_mapping_a_column_not_in_the_file_names_it_and_lists_columns(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,signup_date\nA1,2024-03-01\n")
    with pytest.raises(SourceError) as e:
        read_source(f, "accounts", {"signup": "created_at"})
    assert str(e.value) == (
        f"{f}: `mapping` names column not in the file (columns found: account_id, signup_date):\n"
        f"  {f}: `mapping` signup=created_at: the file has no column 'signup' "
        "(expected one of account_id, signup_date)"
    )


def test_mapping_onto_a_column_the_file_already_has_is_an_error(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,created_at,signup_date\nA1,2024-01-01,2024-03-01\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}: two columns are named 'created_at' (after `mapping`): "
            "'created_at' and 'signup_date'"
        ),
    ):
        read_source(f, "accounts", {"signup_date": "created_at"})


def test_missing_required_column_lists_columns_found_and_hints_map(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,name,signup_date\nA1,Acme,2024-03-01\n")
    with pytest.raises(SourceError) as e:
        read_source(f, "accounts")
    assert str(e.value) == (
        f"{f}: missing required column for table accounts (created_at); "
        "columns found: account_id, name, signup_date:\n"
        f"  {f}: created_at: required column is missing; "
        "hint: use `mapping` source=canonical, e.g. `mapping` <column>=created_at"
    )
    assert [p.column for p in e.value.problems] == ["created_at"]


def test_missing_required_columns_are_all_listed_with_close_names_suggested(tmp_path):
    f = write(tmp_path / "t.csv", "ticket,account,opened\nT1,A1,2024-03-01\n")
    with pytest.raises(SourceError) as e:
        read_source(f, "tickets")
    text = str(e.value)
    assert text.startswith(
        f"{f}: missing required columns for table tickets (ticket_id, account_id, opened_at); "
        "columns found: ticket, account, opened:"
    )
    assert "e.g. `mapping` ticket=ticket_id" in text and "e.g. `mapping` opened=opened_at" in text


def test_other_tables_without_their_key_column_report_it_missing(tmp_path):
    f = write(tmp_path / "u.csv", "account_id,created_at\nA1,2024-03-01\n")
    with pytest.raises(SourceError, match=msg("missing required column for table users (user_id)")):
        read_source(f, "users")


def test_column_names_are_stripped_and_canonical_ones_matched_ignoring_case(tmp_path):
    f = write(tmp_path / "a.csv", " account_id ,Created_At\nA1,2024-03-01\n")
    assert col(read_source(f, "accounts"), "created_at") == [dt.datetime(2024, 3, 1)]
    batch = read_source(f, "accounts", {" Created_At ": "created_at"})
    assert col(batch, "account_id") == ["A1"]


def test_optional_canonical_columns_missing_are_null(tmp_path):
    f = write(tmp_path / "s.csv", "subscription_id,account_id,start_date\nS1,A1,2024-01-01\n")
    batch = read_source(f, "subscriptions")
    assert col(batch, "seats") == [None] and col(batch, "auto_renew") == [None]
    types = {f.name: f.type for f in batch.data.schema}
    assert types["seats"] == pa.float64() and types["billing_period_months"] == pa.int64()
    assert types["auto_renew"] == pa.bool_() and types["end_date"] == pa.timestamp("us")


def test_extra_columns_are_kept(tmp_path):
    f = write(
        tmp_path / "a.csv",
        "account_id,created_at,seats,arr,industry,is_trial,renews_on,code\n"
        "A1,2024-03-01,9,1200.5, EdTech ,False,2025-03-01,001\n"
        "A2,2024-03-02,18,,,True,,A7\n",
    )
    batch = read_source(f, "accounts")
    assert batch.data.column_names[5:] == [
        "seats", "arr", "industry", "is_trial", "renews_on", "code"
    ]  # fmt: skip
    assert col(batch, "seats") == [9, 18]
    assert col(batch, "arr") == [1200.5, None]
    assert col(batch, "industry") == ["EdTech", None]
    assert col(batch, "is_trial") == [False, True]
    assert col(batch, "renews_on") == [dt.datetime(2025, 3, 1), None]
    assert col(batch, "code") == ["001", "A7"]


def test_extra_column_that_only_looks_numeric_at_first_stays_text(tmp_path):
    rows = "".join(f"A{i},2024-03-01,{i}\n" for i in range(30_000)) + "B,2024-03-01,n/a\n"
    f = write(tmp_path / "a.csv", "account_id,created_at,ext\n" + rows)
    batch = read_source(f, "accounts")
    assert batch.data.schema.field("ext").type == pa.string()
    assert col(batch, "ext")[-2:] == ["29999", "n/a"]


def test_ravenstack_accounts_load_with_mapping():
    path = RAVENSTACK / "ravenstack_accounts.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    mapping = parse_mapping(["account_name=name", "signup_date=created_at", "plan_tier=segment"])
    batch = read_source(path, "accounts", mapping)
    assert batch.data.num_rows == 500 and batch.rows_read == 500
    assert "seats" in batch.data.column_names
    assert batch.data.schema.field("seats").type == pa.int64()
    assert batch.data.schema.field("created_at").type == pa.timestamp("us")
    assert set(col(batch, "segment")) <= {"Basic", "Pro", "Enterprise"}


def test_parse_mapping_reads_source_equals_canonical():
    assert parse_mapping(["signup_date=created_at", " a = b "]) == {
        "signup_date": "created_at",
        "a": "b",
    }
    assert parse_mapping([]) == {} and parse_mapping(None) == {}


@pytest.mark.parametrize(
    "items, message",
    [
        (["signup_date"], "`mapping` 'signup_date': expected source=canonical"),
        (["=created_at"], "`mapping` '=created_at': expected source=canonical"),
        (["a=b=c"], "`mapping` 'a=b=c': expected source=canonical"),
        (["a=x", "b=x"], "`mapping` 'b=x': 'a' is already mapped to 'x'"),
    ],
)
def test_parse_mapping_names_the_bad_item(items, message):
    with pytest.raises(SourceError, match=msg(message)):
        parse_mapping(items)


def test_parse_mapping_of_one_source_to_several_columns_keeps_their_order():
    assert parse_mapping(["id=account_id", "id=outcome_id", "id=account_id", "x=y"]) == {
        "id": ["account_id", "outcome_id"],
        "x": "y",
    }


# ------------------------------------------------------- one column, several columns

STATUS = "Customer ID,Customer Status,Churn Reason\nC1,Churned,Price\nC2,Stayed,\n"


def test_one_column_feeds_two_canonical_columns(tmp_path):
    f = write(tmp_path / "status.csv", STATUS)
    mapping = parse_mapping(
        ["Customer ID=account_id", "Customer ID=outcome_id", "Customer Status=kind"]
    )
    batch = read_source(f, "outcomes", mapping, constants={"ts": "2022-09-30"}, allow_rejects=True)
    assert [p.reason for p in batch.rejects] == ["unknown value"]  # Stayed is not a kind
    assert col(batch, "account_id") == ["C1"] and col(batch, "outcome_id") == ["C1"]
    assert batch.data.column_names == [
        "outcome_id", "account_id", "ts", "kind", "arr_delta", "Churn Reason"
    ]  # fmt: skip
    assert batch.reject_rows.column_names == [
        "_row", "_reason", "Customer ID", "Customer Status", "Churn Reason"
    ]  # fmt: skip


def test_one_parquet_or_json_column_feeds_two_canonical_columns(tmp_path):
    rows = {"id": [7, 8], "status": ["churned", "renewed"], "ts": ["2024-01-01"] * 2}
    pq.write_table(pa.table(rows), tmp_path / "o.parquet")
    write_jsonl(tmp_path / "o.jsonl", pa.table(rows).to_pylist())
    mapping = {"id": ["account_id", "outcome_id"], "status": "kind"}
    for name in ("o.parquet", "o.jsonl"):
        batch = read_source(tmp_path / name, "outcomes", mapping)
        assert col(batch, "outcome_id") == ["7", "8"] == col(batch, "account_id")


def test_further_names_of_a_column_must_be_canonical(tmp_path):
    f = write(tmp_path / "status.csv", STATUS)
    with pytest.raises(
        SourceError,
        match=msg("`mapping` Customer ID=outcome: 'outcome' is not a column of outcomes; did you "),
    ):
        read_source(f, "outcomes", {"Customer ID": ["account_id", "outcome"]})
    with pytest.raises(
        SourceError, match=msg("`mapping` Customer ID=account_id: 'Customer ID' is mapped to")
    ):
        read_source(f, "outcomes", {"Customer ID": ["account_id", "account_id"]})


def test_a_further_name_the_file_already_has_is_an_error(tmp_path):
    f = write(tmp_path / "o.csv", "id,outcome_id,kind,ts\nA1,O1,churned,2024-01-01\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}: two columns are named 'outcome_id' (after `mapping`): 'outcome_id' and 'id'"
        ),
    ):
        read_source(f, "outcomes", {"id": ["account_id", "outcome_id"]})


# ---------------------------------------------------------------------- coercion


def test_whitespace_is_stripped_and_empty_values_are_null(tmp_path):
    f = write(
        tmp_path / "s.csv",
        "subscription_id,account_id,start_date,plan,seats,auto_renew\n"
        '  S1 , A1 , 2024-01-01 , " pro ",  , \n'
        'S2,A1,2024-01-01,"",,""\n',
    )
    batch = read_source(f, "subscriptions")
    assert col(batch, "subscription_id") == ["S1", "S2"]
    assert col(batch, "plan") == ["pro", None]
    assert col(batch, "seats") == [None, None]
    assert col(batch, "auto_renew") == [None, None]


def test_tabs_and_no_break_spaces_are_stripped_too(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\n\tU1\u00a0,A1 ,\u00a0\n")
    batch = read_source(f, "users")
    assert batch.data.to_pylist() == [{"user_id": "U1", "account_id": "A1", "created_at": None}]


def test_every_kind_of_edge_space_is_stripped_from_a_parquet_text_column_and_no_other(tmp_path):
    """Parquet text keeps its type, so its values are trimmed by SQL (the edges compared
    character by character): each whitespace character at either edge goes; a form
    feed, or whitespace inside, stays."""
    values = [" a", "b\t", "\nc", "d\r", "\u00a0e", "f\ufeff", "g h", "\fi", "j\f", " \t "]
    f = tmp_path / "u.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [f"U{i}" for i in range(len(values))],
                "account_id": ["A1"] * len(values),
                "role": values,
            }
        ),
        f,
    )
    assert col(read_source(f, "users"), "role") == [
        "a", "b", "c", "d", "e", "f", "g h", "\fi", "j\f", None
    ]  # fmt: skip


def test_integer_ids_of_a_parquet_file_derive_the_event_ids_a_csv_of_the_same_events_does(
    tmp_path,
):
    """A Parquet file's integer account and user ids are read as their text (no
    normalisation or text checks are needed for digits): the derived event ids are the
    ones the same events get from a CSV, negative numbers included."""
    rows = {
        "account_id": pa.array([42, -7, 42], pa.int32()),
        "user_id": pa.array([1, 2, 1], pa.int64()),
        "event": ["login", "export", "login"],
        "ts": pa.array(
            [dt.datetime(2025, 3, 1, 9), dt.datetime(2025, 3, 2), dt.datetime(2025, 3, 1, 9)]
        ),
    }
    pq.write_table(pa.table(rows), tmp_path / "e.parquet")
    write(
        tmp_path / "e.csv",
        "account_id,user_id,event,ts\n42,1,login,2025-03-01 09:00:00\n"
        "-7,2,export,2025-03-02\n42,1,login,2025-03-01 09:00:00\n",
    )
    parquet, text = (
        read_source(tmp_path / "e.parquet", "usage_events"),
        read_source(tmp_path / "e.csv", "usage_events"),
    )

    def rows(batch):
        return sorted(batch.data.select(["account_id", "user_id", "event_id"]).to_pylist(), key=str)

    assert rows(parquet) == rows(text)
    assert sorted(col(parquet, "account_id")) == ["-7", "42", "42"]
    assert sorted(col(parquet, "user_id")) == ["1", "1", "2"]
    ids = col(parquet, "event_id")
    assert len(set(ids)) == 3  # the repeated row is numbered apart


def test_windows_line_endings_are_read(tmp_path):
    f = tmp_path / "u.csv"
    f.write_bytes(b"user_id,account_id,created_at\r\nU1,A1,2024-03-01\r\n")
    assert col(read_source(f, "users"), "created_at") == [dt.datetime(2024, 3, 1)]


def test_booleans_in_common_spellings(tmp_path):
    spellings = ["true", "FALSE", "t", "F", "Yes", "no", "Y", "n", "1", "0", ""]
    rows = "".join(f"P{i},A1,2024-01-01,{v}\n" for i, v in enumerate(spellings))
    f = write(tmp_path / "t.csv", "touchpoint_id,account_id,ts,executive\n" + rows)
    assert col(read_source(f, "touchpoints"), "executive") == [
        True, False, True, False, True, False, True, False, True, False, None
    ]  # fmt: skip


def test_unknown_boolean_is_reported(tmp_path):
    f = write(tmp_path / "t.csv", "touchpoint_id,account_id,ts,executive\nP1,A1,2024-01-01,maybe\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}:2: executive: not a boolean "
            "(got 'maybe', expected true/false, yes/no, y/n, t/f or 1/0)"
        ),
    ):
        read_source(f, "touchpoints")


def test_numbers_are_parsed(tmp_path):
    # a negative amount parses too, and is then out of the amount's domain (see domains)
    f = write(
        tmp_path / "i.csv",
        "invoice_id,account_id,due_at,amount\n"
        "I1,A1,2024-01-01,1234.5\nI2,A1,2024-01-01,-0\nI3,A1,2024-01-01,1e3\n"
        "I4,A1,2024-01-01,.5\nI5,A1,2024-01-01,+7\n",
    )
    assert col(read_source(f, "invoices"), "amount") == [1234.5, 0.0, 1000.0, 0.5, 7.0]


def amounts(tmp_path, *values: str) -> Path:
    rows = "".join(f'I{i},A1,2024-01-01,"{v}"\n' for i, v in enumerate(values, start=1))
    return write(tmp_path / "i.csv", "invoice_id,account_id,due_at,amount\n" + rows)


def test_a_lone_thousands_comma_is_refused_and_the_hint_names_both_formats(tmp_path):
    f = amounts(tmp_path, "1,234", "$6,000")
    with pytest.raises(SourceError) as e:
        read_source(f, "invoices")
    assert (
        f"{f}:2: amount: not a number: ',' could separate thousands or decimals (got '1,234', "
        "expected a number like 1234.5); hint: no number in amount shows whether ',' "
        "separates thousands or decimals (row 2: '1,234'): pass `number_format` 1,234.56 "
        "(thousands) or 1.234,56 (decimals)"
    ) in str(e.value)
    assert col(read_source(f, "invoices", number_format="1,234.56"), "amount") == [1234, 6000]
    assert col(read_source(f, "invoices", number_format="1.234,56"), "amount") == [1.234, 6.0]


def test_money_as_people_write_it_loads_with_its_number_format(tmp_path):
    us = amounts(tmp_path, "$6,000", "1,234.5", "$1,234.50", "USD 12", " 7 ")
    got = col(read_source(us, "invoices", number_format="1,234.56"), "amount")
    assert got == [6000, 1234.5, 1234.5, 12, 7]
    eu = amounts(tmp_path, "6.000,00 €", "12,5", "EUR 1.234.567,8", "3")
    got = col(read_source(eu, "invoices", number_format="1.234,56"), "amount")
    assert got == [6000, 12.5, 1234567.8, 3]
    # a negative amount is read as a number, then refused by the column's domain
    neg = amounts(tmp_path, "-$1,234.50")
    with pytest.raises(SourceError, match=r"amount: out of range \(got '-\$1,234.50'"):
        read_source(neg, "invoices", number_format="1,234.56")
    fr = amounts(tmp_path, "6 000,00 €", "1\u202f234,5", "12")
    assert col(read_source(fr, "invoices", number_format="1 234,56"), "amount") == [
        6000,
        1234.5,
        12,
    ]


def test_numbers_that_show_their_format_load_by_default(tmp_path):
    f = amounts(tmp_path, "1,234.5", "$500", "£1,234,567", "$12.50")
    assert col(read_source(f, "invoices"), "amount") == [1234.5, 500, 1234567, 12.5]


def test_a_column_written_the_european_way_asks_for_its_format(tmp_path):
    f = amounts(tmp_path, "12", "6.000,00 €")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}:3: amount: not a number (got '6.000,00 €', expected a number like 1234.5); "
            "hint: amount writes numbers as 1.234,56 (row 3: '6.000,00 €'): pass "
            "`number_format` 1.234,56"
        ),
    ):
        read_source(f, "invoices")


def test_a_column_mixing_two_number_formats_is_refused(tmp_path):
    f = amounts(tmp_path, "6,000.00", "6.000,00")
    with pytest.raises(SourceError, match=msg("amount mixes numbers written 1,234.56 (row 2:")):
        read_source(f, "invoices")


def test_a_number_not_in_the_given_format_is_refused(tmp_path):
    f = amounts(tmp_path, "1.5")
    with pytest.raises(
        SourceError,
        match=msg("amount: not a number written 1.234,56 (got '1.5', expected a number written"),
    ):
        read_source(f, "invoices", number_format="1.234,56")
    with pytest.raises(SourceError, match=msg("`number_format` '1,2' is not a number format")):
        read_source(f, "invoices", number_format="1,2")


@pytest.mark.parametrize("value", ["inf", "-Infinity", "NaN", "1e999"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    f = write(
        tmp_path / "i.csv", f"invoice_id,account_id,due_at,amount\nI1,A1,2024-01-01,{value}\n"
    )
    with pytest.raises(SourceError, match=msg(f"{f}:2: amount: not a finite number (got")):
        read_source(f, "invoices")


def test_text_in_a_number_column_is_refused(tmp_path):
    f = write(tmp_path / "i.csv", "invoice_id,account_id,due_at,amount\nI1,A1,2024-01-01,12 kg\n")
    with pytest.raises(SourceError, match=msg(f"{f}:2: amount: not a number (got '12 kg'")):
        read_source(f, "invoices")


def test_whole_number_columns_refuse_fractions(tmp_path):
    f = write(
        tmp_path / "s.csv",
        "subscription_id,account_id,start_date,billing_period_months\n"
        "S1,A1,2024-01-01,12\nS2,A1,2024-01-01,12.0\nS3,A1,2024-01-01,1.5\n",
    )
    batch = read_source(f, "subscriptions", allow_rejects=True)
    assert col(batch, "billing_period_months") == [12, 12]
    assert str(batch.rejects[0]) == (
        f"{f}:4: billing_period_months: not a whole number "
        "(got '1.5', expected a whole number like 42)"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-03-01", dt.datetime(2024, 3, 1)),
        ("2024-03-01 12:00:00", dt.datetime(2024, 3, 1, 12)),
        ("2024-03-01T12:00:00", dt.datetime(2024, 3, 1, 12)),
        ("2024-03-01T12:00:00Z", dt.datetime(2024, 3, 1, 12)),
        ("2024-03-01T12:00", dt.datetime(2024, 3, 1, 12)),
        ("2024-03-01 12:00:00.250", dt.datetime(2024, 3, 1, 12, 0, 0, 250000)),
        ("2024/03/01", dt.datetime(2024, 3, 1)),
        ("2024/03/01 08:15:00", dt.datetime(2024, 3, 1, 8, 15)),
        ("2024-03-01t12:00:00z", dt.datetime(2024, 3, 1, 12)),
        ("2024-03-01 12:00:00 +02:00", dt.datetime(2024, 3, 1, 10)),
        ("2024-03-01 12:00:00 UTC", dt.datetime(2024, 3, 1, 12)),
    ],
)
def test_iso_dates_and_times_are_read(tmp_path, text, expected):
    f = write(tmp_path / "u.csv", f"user_id,account_id,created_at\nU1,A1,{text}\n")
    assert col(read_source(f, "users"), "created_at") == [expected]


def test_offset_timestamps_are_converted_to_utc(tmp_path):
    f = write(
        tmp_path / "u.csv",
        "user_id,account_id,created_at\n"
        "U1,A1,2024-03-01T12:00:00+02:00\n"
        "U2,A1,2024-03-01T12:00:00-0530\n"
        "U3,A1,2024-03-01 01:00:00+03\n"
        "U4,A1,2024-03-01T12:00:00.5+01:00\n",
    )
    assert col(read_source(f, "users"), "created_at") == [
        dt.datetime(2024, 3, 1, 10),
        dt.datetime(2024, 3, 1, 17, 30),
        dt.datetime(2024, 2, 29, 22),
        dt.datetime(2024, 3, 1, 11, 0, 0, 500000),
    ]


def test_bad_date_is_reported_with_file_row_and_column(tmp_path):
    f = write(
        tmp_path / "u.csv",
        "user_id,account_id,created_at\nU1,A1,2024-03-01\nU2,A1,2024-02-30\nU3,A1,soon\n",
    )
    with pytest.raises(SourceError) as e:
        read_source(f, "users")
    expected = "expected an ISO 8601 date or time like 2024-03-01 or 2024-03-01T12:00:00Z"
    assert str(e.value) == (
        f"{f}: 2 invalid rows, nothing loaded:\n"
        f"  {f}:3: created_at: not a date or timestamp (got '2024-02-30', {expected})\n"
        f"  {f}:4: created_at: not a date or timestamp (got 'soon', {expected})"
    )
    p = e.value.problems[0]
    assert (p.file, p.row, p.column, p.got) == (str(f), 3, "created_at", "2024-02-30")


def test_day_month_dates_the_file_cannot_order_are_refused_naming_both_formats(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\nU1,A1,03/04/2024\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}:2: created_at: not a date or timestamp (got '03/04/2024', expected an ISO "
            "8601 date or time like 2024-03-01 or 2024-03-01T12:00:00Z); "
            "hint: no date in created_at has a field above 12, so the file cannot tell "
            "whether '03/04/2024' (row 2: '03/04/2024') is day first or month first: pass "
            "`date_format` %d/%m/%Y (day first) or %m/%d/%Y (month first)"
        ),
    ):
        read_source(f, "users")


@pytest.mark.parametrize(
    ("dates", "hint"),
    [
        (["03/15/2025", "01/02/2024"], "created_at has its month first (row 2: '03/15/2025'): "
         "pass `date_format` %m/%d/%Y"),
        (["01/02/2024", "15/03/2025"], "created_at has its day first (row 3: '15/03/2025'): "
         "pass `date_format` %d/%m/%Y"),
        # a two-digit year with no field above 31 may come first
        (["01.02.24 09:30", "15.03.25 10:00"], "pass `date_format` %y.%m.%d %H:%M (year "
         "first) or %d.%m.%y %H:%M (day first)"),
        (["15/03/2025", "03/15/2025"], "created_at mixes day-first (row 2: '15/03/2025') and "
         "month-first (row 3: '03/15/2025') dates"),
    ],
)  # fmt: skip
def test_the_date_format_hint_is_drawn_from_the_columns_evidence(tmp_path, dates, hint):
    rows = "".join(f"U{i},A1,{d}\n" for i, d in enumerate(dates))
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\n" + rows)
    with pytest.raises(SourceError) as e:
        read_source(f, "users")
    assert all(hint in p.hint for p in e.value.problems), str(e.value)
    assert "%d/%m/%Y" not in str(e.value) or "day" in hint


def test_date_format_reads_day_first_or_month_first_dates(tmp_path):
    f = write(
        tmp_path / "u.csv", "user_id,account_id,created_at\nU1,A1,03/04/2024\nU2,A1,2024-05-06\n"
    )
    day_first = read_source(f, "users", date_format="%d/%m/%Y")
    assert col(day_first, "created_at") == [dt.datetime(2024, 4, 3), dt.datetime(2024, 5, 6)]
    month_first = read_source(f, "users", date_format="%m/%d/%Y")
    assert col(month_first, "created_at") == [dt.datetime(2024, 3, 4), dt.datetime(2024, 5, 6)]


def test_date_not_in_the_given_format_is_reported_with_that_format(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\nU1,A1,31/31/2024\n")
    with pytest.raises(
        SourceError,
        match=msg("(got '31/31/2024', expected a date in %d/%m/%Y or ISO 8601 like 2024-03-01)"),
    ):
        read_source(f, "users", date_format="%d/%m/%Y")


def test_invalid_date_format_is_reported(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\nU1,A1,2024-03-01\n")
    with pytest.raises(SourceError, match=msg("`date_format` '%Q' is not a valid strptime format")):
        read_source(f, "users", date_format="%Q")


# ----------------------------------------------------------------------- row checks


def test_required_value_empty_is_reported(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id\nU1,A1\nU2, \n")
    with pytest.raises(SourceError, match=msg(f"{f}:3: account_id: required value is empty")):
        read_source(f, "users")


def test_enum_values_are_checked_and_stored_lower_cased(tmp_path):
    f = write(
        tmp_path / "s.csv",
        "response_id,account_id,ts,kind,score\n"
        "R1,A1,2024-01-01, NPS ,9\nR2,A1,2024-01-01,Csat,4\nR3,A1,2024-01-01,ces,3\n",
    )
    with pytest.raises(
        SourceError, match=msg(f"{f}:4: kind: unknown value (got 'ces', expected one of nps, csat)")
    ):
        read_source(f, "surveys")
    batch = read_source(f, "surveys", allow_rejects=True)
    assert col(batch, "kind") == ["nps", "csat"]


def test_closed_before_opened_is_rejected(tmp_path):
    f = write(
        tmp_path / "t.csv",
        TICKETS_HEAD + "T1,A1,2024-03-01,2024-03-01,high\nT2,A1,2024-03-05,2024-03-04 23:00,low\n",
    )
    with pytest.raises(SourceError) as e:
        read_source(f, "tickets")
    assert str(e.value) == (
        f"{f}: 1 invalid row, nothing loaded:\n"
        f"  {f}:3: closed_at: is before opened_at "
        "(got '2024-03-04 23:00', expected at or after opened_at '2024-03-05')"
    )


def test_duplicate_key_in_file_names_both_rows(tmp_path):
    f = write(
        tmp_path / "t.csv",
        TICKETS_HEAD
        + "T1,A1,2024-03-01,,\nT2,A1,2024-03-01,,\nT1,A2,2024-03-02,,\nT1,A3,2024-03-03,,\n",
    )
    with pytest.raises(SourceError) as e:
        read_source(f, "tickets")
    assert str(e.value) == (
        f"{f}: 2 invalid rows, nothing loaded:\n"
        f"  {f}:4: ticket_id: duplicate ticket_id, first seen at row 2 (got 'T1')\n"
        f"  {f}:5: ticket_id: duplicate ticket_id, first seen at row 2 (got 'T1')"
    )


def test_more_than_20_problems_are_capped(tmp_path):
    rows = "".join(f"U{i},A1,not-a-date\n" for i in range(25))
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\n" + rows)
    with pytest.raises(SourceError) as e:
        read_source(f, "users")
    lines = str(e.value).splitlines()
    assert lines[0] == f"{f}: 25 invalid rows, nothing loaded:"
    assert lines[1].startswith(f"  {f}:2: created_at: not a date or timestamp")
    assert lines[20].startswith(f"  {f}:21: created_at:")
    assert lines[21:] == ["  ... and 5 more"]
    assert len(e.value.problems) == 25


def test_json_lines_problems_use_line_numbers(tmp_path):
    f = write_jsonl(
        tmp_path / "u.jsonl",
        [
            {"user_id": "U1", "account_id": "A1"},
            None,
            {"user_id": "U2", "account_id": "A1", "created_at": "yesterday"},
            None,
            {"user_id": "U1", "account_id": "A2"},
        ],
    )
    with pytest.raises(SourceError) as e:
        read_source(f, "users")
    assert [str(p) for p in e.value.problems] == [
        f"{f}:3: created_at: not a date or timestamp (got 'yesterday', expected an ISO 8601 "
        "date or time like 2024-03-01 or 2024-03-01T12:00:00Z)",
        f"{f}:5: user_id: duplicate user_id, first seen at row 1 (got 'U1')",
    ]
    batch = read_source(f, "users", allow_rejects=True)
    assert batch.reject_rows.column("_row").to_pylist() == [3, 5]


def test_json_extra_fields_keep_their_types(tmp_path):
    f = write_jsonl(
        tmp_path / "u.jsonl",
        [
            {"user_id": "U1", "account_id": "A1", "age_days": 3, "admin": True, "tags": ["a"]},
            {"user_id": "U2", "account_id": "A1", "age_days": 5, "admin": False, "tags": []},
        ],
    )
    batch = read_source(f, "users")
    assert col(batch, "age_days") == [3, 5]
    assert col(batch, "admin") == [True, False]
    assert col(batch, "tags") == [["a"], []]


def test_parquet_problems_use_one_based_row_index(tmp_path):
    f = tmp_path / "u.parquet"
    pq.write_table(pa.table({"user_id": ["U1", "U2", None], "account_id": ["A1", None, "A1"]}), f)
    with pytest.raises(SourceError) as e:
        read_source(f, "users")
    assert [str(p) for p in e.value.problems] == [
        f"{f}:2: account_id: required value is empty",
        f"{f}:3: user_id: required value is empty",
    ]


def test_parquet_native_values_are_checked(tmp_path):
    f = tmp_path / "i.parquet"
    pq.write_table(
        pa.table(
            {
                "invoice_id": ["I1", "I2"],
                "account_id": ["A1", "A1"],
                "due_at": pa.array([dt.date(2024, 1, 1), dt.date(2024, 2, 1)]),
                "amount": [10.0, float("nan")],
            }
        ),
        f,
    )
    with pytest.raises(SourceError, match=msg(f"{f}:2: amount: not a finite number (got 'nan'")):
        read_source(f, "invoices")


# ----------------------------------------------------------------------- rejects


def test_rejects_mode_keeps_valid_rows_and_returns_invalid_with_reasons(tmp_path):
    f = write(
        tmp_path / "t.csv",
        TICKETS_HEAD
        + "T1,A1,2024-03-01,,high\n"
        + "T2,,someday,,low\n"
        + "T3,A1,2024-03-05,2024-03-06,low\n"
        + "T4,A1,2024-03-05,2024-03-01,low\n",
    )
    batch = read_source(f, "tickets", allow_rejects=True)
    assert col(batch, "ticket_id") == ["T1", "T3"]
    assert batch.rows_read == 4
    assert [(p.row, p.column) for p in batch.rejects] == [
        (3, "account_id"),
        (3, "opened_at"),
        (5, "closed_at"),
    ]
    rows = batch.reject_rows.to_pylist()
    assert [r["_row"] for r in rows] == [3, 5]
    assert rows[0]["_reason"] == (
        "account_id: required value is empty; opened_at: not a date or timestamp (got "
        "'someday', expected an ISO 8601 date or time like 2024-03-01 or 2024-03-01T12:00:00Z)"
    )
    assert rows[0]["ticket_id"] == "T2" and rows[0]["opened_at"] == "someday"
    assert batch.reject_rows.schema.field("_row").type == pa.int64()


def test_reject_rows_keep_the_file_column_names_and_text(tmp_path):
    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [1, 2], "signup": ["2024-01-01", "bad"], "seats": [3, 4]}), f)
    batch = read_source(
        f, "accounts", {"id": "account_id", "signup": "created_at"}, allow_rejects=True
    )
    assert batch.reject_rows.column_names == ["_row", "_reason", "id", "signup", "seats"]
    assert batch.reject_rows.to_pylist()[0]["seats"] == "4"
    assert col(batch, "seats") == [3]


def test_write_rejects_writes_csv_with_reason(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id,created_at\nU1,A1,\nU2,A1,31/12/2024\n")
    batch = read_source(f, "users", allow_rejects=True)
    out = tmp_path / "rejects.csv"
    assert write_rejects(batch, out) == 1
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {
            "_row": "3",
            "_reason": "created_at: not a date or timestamp (got '31/12/2024', expected an ISO "
            "8601 date or time like 2024-03-01 or 2024-03-01T12:00:00Z); "
            "hint: created_at has its day first (row 3: '31/12/2024'): pass `date_format` %d/%m/%Y",
            "user_id": "U2",
            "account_id": "A1",
            "created_at": "31/12/2024",
        }
    ]


def test_write_rejects_with_no_rejects_leaves_an_empty_file(tmp_path):
    f = write(tmp_path / "u.csv", "user_id,account_id\nU1,A1\n")
    out = write(tmp_path / "rejects.csv", "stale\n")
    assert write_rejects(read_source(f, "users", allow_rejects=True), out) == 0
    assert out.read_text().strip() == '"_row","_reason"'  # the one CSV writer quotes text


# ---------------------------------------------------------------- derived event ids


EVENTS = (
    "account_id,user_id,event,ts,quantity\n"
    "A1,U1,login,2024-03-01T10:00:00Z,\n"
    "A1,U1,login,2024-03-01T10:00:00Z,\n"
    "A1,U2,export,2024-03-01 11:00:00,2.5\n"
)


def test_derived_event_ids_are_stable_across_reads(tmp_path):
    f = write(tmp_path / "e.csv", EVENTS)
    first = read_source(f, "usage_events")
    again = read_source(f, "usage_events")
    ids = sorted(col(first, "event_id"))
    assert ids == sorted(col(again, "event_id"))
    assert len(set(ids)) == 3  # the exact duplicate rows stay distinct


def test_derived_event_id_is_md5_of_canonical_text_and_occurrence(tmp_path):
    f = write(tmp_path / "e.csv", EVENTS)
    got = set(col(read_source(f, "usage_events"), "event_id"))

    def md5(*parts):
        return hashlib.md5("\x1f".join(parts).encode()).hexdigest()

    assert got == {
        md5("A1", "U1", "login", "2024-03-01 10:00:00", "", "1"),
        md5("A1", "U1", "login", "2024-03-01 10:00:00", "", "2"),
        md5("A1", "U2", "export", "2024-03-01 11:00:00", "2.5", "1"),
    }


def test_identical_events_are_numbered_in_file_order_among_the_valid_rows(tmp_path):
    """Only repeated rows are numbered (the rest are occurrence 1): the numbers follow the
    file's order, across other rows and past a rejected row."""
    f = write(
        tmp_path / "e.csv",
        "account_id,user_id,event,ts,note\n"
        "A1,U1,login,2024-03-01T10:00:00Z,first\n"
        "A2,U1,login,2024-03-01T10:00:00Z,other\n"
        "A1,U1,login,not a date,rejected\n"
        "A1,U1,login,2024-03-01 10:00:00,second\n"
        "A1,U1, login ,2024-03-01T10:00:00Z,third\n",
    )
    batch = read_source(f, "usage_events", allow_rejects=True)
    ids = dict(zip(col(batch, "note"), col(batch, "event_id"), strict=True))

    def md5(account, occurrence):
        text = "\x1f".join([account, "U1", "login", "2024-03-01 10:00:00", "", occurrence])
        return hashlib.md5(text.encode()).hexdigest()

    assert ids == {
        "first": md5("A1", "1"),
        "other": md5("A2", "1"),
        "second": md5("A1", "2"),
        "third": md5("A1", "3"),
    }


def test_a_rejected_row_does_not_count_as_a_repeat_of_a_valid_one(tmp_path):
    """Rows differing only in an extra column: the one whose extra value is out of its
    declared domain is rejected, and the valid row with the same values stays the first
    (occurrence 1), while two valid identical rows are numbered 1 and 2."""
    f = write(
        tmp_path / "e.csv",
        "account_id,user_id,event,ts,score\n"
        "A1,U1,login,2024-03-01T10:00:00Z,99\n"
        "A1,U1,login,2024-03-01T10:00:00Z,5\n"
        "A2,U1,login,2024-03-01T10:00:00Z,1\n"
        "A2,U1,login,2024-03-01T10:00:00Z,2\n",
    )
    batch = read_source(f, "usage_events", allow_rejects=True, domains={"score": (0, 10)})
    assert [p.row for p in batch.rejects] == [2]
    ids = dict(zip(col(batch, "score"), col(batch, "event_id"), strict=True))

    def md5(account, occurrence):
        text = "\x1f".join([account, "U1", "login", "2024-03-01 10:00:00", "", occurrence])
        return hashlib.md5(text.encode()).hexdigest()

    assert ids == {5: md5("A1", "1"), 1: md5("A2", "1"), 2: md5("A2", "2")}


def test_derived_event_ids_do_not_depend_on_file_format(tmp_path):
    csv_ids = set(col(read_source(write(tmp_path / "e.csv", EVENTS), "usage_events"), "event_id"))
    f = tmp_path / "e.parquet"
    pq.write_table(
        pa.table(
            {
                "account_id": ["A1", "A1", "A1"],
                "user_id": ["U1", "U1", "U2"],
                "event_name": ["login", "login", "export"],
                "ts": pa.array(
                    [dt.datetime(2024, 3, 1, 10)] * 2 + [dt.datetime(2024, 3, 1, 11)],
                    pa.timestamp("us"),
                ),
                "quantity": [None, None, 2.5],
            }
        ),
        f,
    )
    batch = read_source(f, "usage_events", {"event_name": "event"})
    assert set(col(batch, "event_id")) == csv_ids


def test_given_event_ids_are_kept_and_empty_ones_derived(tmp_path):
    f = write(
        tmp_path / "e.csv",
        "event_id,account_id,ts\nE1,A1,2024-03-01\n,A1,2024-03-02\n",
    )
    ids = col(read_source(f, "usage_events"), "event_id")
    assert ids[0] == "E1" or ids[1] == "E1"
    assert all(i and len(i) in (2, 32) for i in ids)


def test_given_event_ids_must_be_unique(tmp_path):
    f = write(tmp_path / "e.csv", "event_id,account_id,ts\nE1,A1,2024-03-01\nE1,A1,2024-03-02\n")
    with pytest.raises(SourceError, match=msg(f"{f}:3: event_id: duplicate event_id")):
        read_source(f, "usage_events")


# ------------------------------------------------------------------ account lookup (account_from)


SUBSCRIPTION_ACCOUNTS = ("subscription_id", {"S1": "A1", "S2": "A2"})


def test_account_is_looked_up_by_another_tables_key(tmp_path):
    f = write(
        tmp_path / "u.csv",
        "usage_id,subscription_id,usage_date,feature_name\n"
        "U1,S1,2024-03-01,export\nU2, S2 ,2024-03-02,search\n",
    )
    batch = read_source(
        f,
        "usage_events",
        {"usage_id": "event_id", "usage_date": "ts", "feature_name": "event"},
        account_lookup=SUBSCRIPTION_ACCOUNTS,
    )
    assert col(batch, "account_id") == ["A1", "A2"]
    assert col(batch, "subscription_id") == ["S1", "S2"]
    assert batch.data.column_names[:6] == [
        "event_id", "account_id", "user_id", "event", "ts", "quantity"
    ]  # fmt: skip


def test_key_with_no_account_is_an_invalid_row(tmp_path):
    f = write(tmp_path / "u.csv", "subscription_id,ts\nS1,2024-03-01\nS9,2024-03-01\n,2024-03-01\n")
    with pytest.raises(SourceError) as e:
        read_source(f, "usage_events", account_lookup=SUBSCRIPTION_ACCOUNTS)
    assert str(e.value) == (
        f"{f}: 2 invalid rows, nothing loaded:\n"
        f"  {f}:3: subscription_id: unknown subscription_id: no account found for it "
        "(got 'S9'); hint: load the rows that define each subscription_id and its account_id "
        "first\n"
        f"  {f}:4: subscription_id: required value is empty; "
        "hint: the account is looked up by subscription_id"
    )
    batch = read_source(f, "usage_events", account_lookup=SUBSCRIPTION_ACCOUNTS, allow_rejects=True)
    assert col(batch, "account_id") == ["A1"]
    assert batch.reject_rows.column("subscription_id").to_pylist() == ["S9", None]


def test_account_lookup_needs_the_key_column(tmp_path):
    f = write(tmp_path / "u.csv", "sub,ts\nS1,2024-03-01\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}: no column 'subscription_id' to look the account up by (columns found: sub, "
            "ts); hint: use `mapping` source=canonical, e.g. `mapping` <column>=subscription_id"
        ),
    ):
        read_source(f, "usage_events", account_lookup=SUBSCRIPTION_ACCOUNTS)
    batch = read_source(
        f, "usage_events", {"sub": "subscription_id"}, account_lookup=SUBSCRIPTION_ACCOUNTS
    )
    assert col(batch, "account_id") == ["A1"]


def test_account_lookup_refuses_a_file_that_has_account_id(tmp_path):
    f = write(tmp_path / "u.csv", "account_id,subscription_id,ts\nA1,S1,2024-03-01\n")
    with pytest.raises(
        SourceError, match=msg(f"{f}: has an account_id column; `account_from` is for files")
    ):
        read_source(f, "usage_events", account_lookup=SUBSCRIPTION_ACCOUNTS)


def test_set_gives_a_missing_column_one_checked_value(tmp_path):
    f = tmp_path / "churn.csv"
    f.write_text("outcome_id,account_id,ts\nO1,A1,2024-05-01\nO2,A2,2024-06-01\n")
    batch = read_source(f, "outcomes", constants={"kind": "Churned"})
    assert batch.data.column("kind").to_pylist() == ["churned", "churned"]
    with pytest.raises(SourceError, match=r"churn.csv:2: kind: unknown value \(got 'lost'"):
        read_source(f, "outcomes", constants={"kind": "lost"})
    with pytest.raises(SourceError, match="the file already has a column 'ts'"):
        read_source(f, "outcomes", constants={"ts": "2024-01-01", "kind": "churned"})
    with pytest.raises(SourceError, match="'colour' is not a column of outcomes"):
        read_source(f, "outcomes", constants={"colour": "red", "kind": "churned"})


def test_map_target_typo_suggests_the_canonical_column(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("company_id,created_at\nX,2024-01-01\n")
    with pytest.raises(
        SourceError, match="'acount_id' is not a column of accounts; did you mean 'account_id'"
    ):
        read_source(f, "accounts", {"company_id": "acount_id"})


def test_headers_differing_from_canonical_only_by_case_are_matched(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("Account_ID,Created_At,Segment\nX,2024-01-01,smb\n")
    batch = read_source(f, "accounts")
    assert batch.data.column("segment").to_pylist() == ["smb"]
    assert batch.data.column("account_id").to_pylist() == ["X"]


def test_two_columns_differing_only_by_case_are_refused(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("account_id,created_at,owner,Owner\nX,2024-01-01,a,b\n")
    with pytest.raises(SourceError, match="columns 'owner' and 'Owner' differ only by case"):
        read_source(f, "accounts")


# -------------------------------------------------------------------- value maps

KINDS = {"Churned": "churned", "Stayed": "renewed", "Joined": None}
OUTCOMES_MAP = {"Customer ID": ["account_id", "outcome_id"], "Customer Status": "kind"}
TS = {"ts": "2022-09-30"}


def test_values_are_recoded_before_they_are_checked_and_rows_sent_to_nothing_skipped(tmp_path):
    f = write(
        tmp_path / "status.csv",
        "Customer ID,Customer Status\nC1,Churned\nC2, Joined \nC3,Stayed\nC4,Joined\n",
    )
    batch = read_source(
        f, "outcomes", OUTCOMES_MAP, constants=TS, values={"Customer Status": KINDS}
    )
    assert col(batch, "outcome_id") == ["C1", "C3"]
    assert col(batch, "kind") == ["churned", "renewed"]
    assert (batch.rows_read, batch.skipped) == (4, 2)
    assert batch.skip_reason == "Customer Status maps to nothing (Joined)"


def test_skipped_rows_keep_the_row_numbers_of_the_others(tmp_path):
    f = write(
        tmp_path / "status.csv",
        "Customer ID,Customer Status,ts\nC1,Joined,2022-09-30\nC2,Churned,someday\n",
    )
    with pytest.raises(SourceError, match=msg(f"{f}:3: ts: not a date or timestamp")):
        read_source(f, "outcomes", OUTCOMES_MAP, values={"Customer Status": KINDS})


def test_an_unmapped_value_passes_through_and_is_checked_as_usual(tmp_path):
    f = write(tmp_path / "status.csv", "Customer ID,Customer Status\nC1,Churned\nC2,Paused\n")
    with pytest.raises(
        SourceError, match=msg(f"{f}:3: kind: unknown value (got 'Paused', expected one of")
    ):
        read_source(f, "outcomes", OUTCOMES_MAP, constants=TS, values={"Customer Status": KINDS})


def test_value_keys_match_the_stripped_text_exactly(tmp_path):
    f = write(tmp_path / "status.csv", "Customer ID,Customer Status\nC1, Churned \nC2,churned\n")
    batch = read_source(
        f, "outcomes", OUTCOMES_MAP, constants=TS, values={"Customer Status": {"Churned": "lost"}},
        allow_rejects=True,
    )  # fmt: skip
    # 'churned' is not the key 'Churned': it passes through, and is a valid kind
    assert col(batch, "kind") == ["churned"]
    assert [(p.row, p.got) for p in batch.rejects] == [(2, "lost")]


def test_a_value_sent_to_nothing_in_an_optional_column_is_null(tmp_path):
    f = write(
        tmp_path / "a.csv", "account_id,created_at,segment\nA1,2024-01-01,n/a\nA2,2024-01-01,smb\n"
    )
    batch = read_source(f, "accounts", values={"segment": {"n/a": None}})
    assert col(batch, "segment") == [None, "smb"] and batch.skipped == 0


def test_rejects_show_values_as_read_before_recoding(tmp_path):
    f = write(tmp_path / "status.csv", "Customer ID,Customer Status\nC1,Churned\nC2,Paused\n")
    batch = read_source(
        f, "outcomes", OUTCOMES_MAP, constants=TS, values={"Customer Status": KINDS},
        allow_rejects=True,
    )  # fmt: skip
    assert batch.reject_rows.column("Customer Status").to_pylist() == ["Paused"]


def test_recoded_extra_columns_are_typed_by_their_new_values(tmp_path):
    f = write(
        tmp_path / "a.csv",
        "account_id,created_at,phone,plan,score,renewal,note\n"
        "A1,2024-01-01,Yes,Basic,low,soon,x\n"
        "A2,2024-01-01,No,Pro,high,later,\n"
        "A3,2024-01-01,,Basic,,,y\n",
    )
    values = {
        "phone": {"Yes": True, "No": False},
        "plan": {"Basic": 1, "Pro": 2},
        "score": {"low": 0.5, "high": "1e3"},
        "renewal": {"soon": "2025-01-01", "later": "2026-01-01"},
        "note": {"x": None, "y": None},
    }
    values = {
        k: {a: None if b is None else str(b).lower() for a, b in v.items()}
        for k, v in values.items()
    }
    batch = read_source(f, "accounts", values=values)
    types = {f.name: f.type for f in batch.data.schema}
    assert types["phone"] == pa.bool_() and col(batch, "phone") == [True, False, None]
    assert types["plan"] == pa.int64() and col(batch, "plan") == [1, 2, 1]
    assert types["score"] == pa.float64() and col(batch, "score") == [0.5, 1000.0, None]
    assert types["renewal"] == pa.timestamp("us")
    assert types["note"] == pa.string() and col(batch, "note") == [None, None, None]


def test_a_recoded_extra_column_with_some_values_left_as_they_are_stays_text(tmp_path):
    f = write(
        tmp_path / "a.csv", "account_id,created_at,phone\nA1,2024-01-01,Yes\nA2,2024-01-01,Maybe\n"
    )
    batch = read_source(f, "accounts", values={"phone": {"Yes": "true", "No": "false"}})
    assert col(batch, "phone") == ["true", "Maybe"]


def test_value_maps_read_parquet_and_json_values_as_text(tmp_path):
    rows = {
        "id": ["C1", "C2", "C3"],
        "churn": [1, 0, None],
        "phone": [True, False, True],
        "ts": ["2024-01-01"] * 3,
    }
    pq.write_table(pa.table(rows), tmp_path / "o.parquet")
    write_jsonl(tmp_path / "o.jsonl", pa.table(rows).to_pylist())
    values = {"churn": {"1": "churned", "0": "renewed"}, "phone": {"true": "Y", "false": "N"}}
    mapping = {"id": ["account_id", "outcome_id"], "churn": "kind"}
    for name in ("o.parquet", "o.jsonl"):
        batch = read_source(tmp_path / name, "outcomes", mapping, values=values, allow_rejects=True)
        assert col(batch, "kind") == ["churned", "renewed"], name
        assert col(batch, "phone") == ["Y", "N"], name
        assert [(p.row, p.column) for p in batch.rejects] == [(3, "kind")], name


def test_a_value_map_of_a_column_not_in_the_file_is_an_error(tmp_path):
    f = write(tmp_path / "a.csv", "account_id,created_at\nA1,2024-01-01\n")
    with pytest.raises(
        SourceError,
        match=msg(
            f"{f}: values name column not in the file (columns found: account_id, created_at):\n"
            f"  {f}: values of 'Status': the file has no column 'Status'"
        ),
    ):
        read_source(f, "accounts", values={"Status": {"a": "b"}})


def test_a_fraction_after_the_sniffed_rows_makes_a_number_column_not_a_rounded_one(tmp_path):
    # DuckDB sniffs types from a sample of rows; a 1.5 far below it used to be cast to 2
    rows = "".join(f"A{i},2024-03-01,{i % 7}\n" for i in range(30_000))
    f = tmp_path / "accounts.csv"
    f.write_text("account_id,created_at,seats_used\n" + rows + "A-last,2024-03-01,1.5\n")
    batch = read_source(f, "accounts")
    col = batch.data.column("seats_used")
    assert pa.types.is_floating(col.type)
    assert col.to_pylist()[-1] == 1.5 and col.to_pylist()[:3] == [0.0, 1.0, 2.0]


# ------------------------------------------------------------------------- domains


@pytest.mark.parametrize(
    "table, head, row, message",
    [
        (
            "subscriptions",
            "subscription_id,account_id,start_date,seats,mrr,arr",
            "S1,A1,2024-01-01,-3,100,1200",
            "seats: out of range (got '-3', expected at least 0)",
        ),
        (
            "subscriptions",
            "subscription_id,account_id,start_date,seats,mrr,arr",
            "S1,A1,2024-01-01,3,100,-1200",
            "arr: out of range (got '-1200', expected at least 0)",
        ),
        (
            "usage_events",
            "event_id,account_id,ts,quantity",
            "E1,A1,2024-01-01,-2.5",
            "quantity: out of range (got '-2.5', expected at least 0)",
        ),
        (
            "invoices",
            "invoice_id,account_id,due_at,amount",
            "I1,A1,2024-01-01,-10",
            "amount: out of range (got '-10', expected at least 0)",
        ),
        (
            "surveys",
            "response_id,account_id,ts,kind,score",
            "R1,A1,2024-01-01,NPS,-5",
            "score: out of range (got '-5', expected between 0 and 10 where kind = 'nps')",
        ),
        (
            "surveys",
            "response_id,account_id,ts,kind,score",
            "R1,A1,2024-01-01,csat,7",
            "score: out of range (got '7', expected between 1 and 5 where kind = 'csat'); "
            "hint: CSAT is read on a 1-5 scale",
        ),
        (
            "tickets",
            "ticket_id,account_id,opened_at,csat",
            "T1,A1,2024-01-01,0",
            "csat: out of range (got '0', expected between 1 and 5)",
        ),
        (
            "usage_events",
            "event_id,account_id,ts",
            "E1,A1,0001-01-01",
            "ts: date out of range (got '0001-01-01', expected a year from 1900 to 2999)",
        ),
        (
            "subscriptions",
            "subscription_id,account_id,start_date,end_date",
            "S1,A1,2024-01-01,9999-12-31",
            "end_date: date out of range (got '9999-12-31', expected a year from 1900 to 2999)",
        ),
    ],
    ids=["seats", "arr", "quantity", "amount", "nps", "csat-survey", "csat-ticket", "y1", "y9999"],
)
def test_values_outside_a_columns_domain_are_invalid_rows(tmp_path, table, head, row, message):
    f = write(tmp_path / f"{table}.csv", f"{head}\n{row}\n")
    with pytest.raises(SourceError) as e:
        read_source(f, table)
    assert f"{f}: 1 invalid row, nothing loaded:\n  {f}:2: {message}" in str(e.value)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_holding_a_nul_character_is_an_invalid_row_naming_its_column(tmp_path, suffix):
    # no store keeps a NUL in text (PostgreSQL refuses it, DuckDB's SQL text ends at it):
    # an account id with one could never be read back by id
    f = tmp_path / f"accounts{suffix}"
    rows = [("A\x001", "Acme", ""), ("A2", "Glo\x00bex", "x\x00")]
    if suffix == ".csv":
        text = "".join(f"{a},{n},2024-01-01,{x}\n" for a, n, x in rows)
        f.write_text("account_id,name,created_at,note\n" + text)
    else:
        keys = ("account_id", "name", "note")
        lines = [
            json.dumps({**dict(zip(keys, r, strict=True)), "created_at": "2024-01-01"})
            for r in rows
        ]
        f.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as e:
        read_source(f, "accounts")
    first = 2 if suffix == ".csv" else 1  # the line of the first row
    found = [(p.row - first, p.column, p.got) for p in e.value.problems]
    assert found == [(0, "account_id", "A\x001"), (1, "name", "Glo\x00bex"), (1, "note", "x\x00")]
    assert "holds a NUL character (U+0000)" in str(e.value)


def test_an_id_of_more_than_1000_characters_is_an_invalid_row_not_a_key(tmp_path):
    # a column of ids holding pages of text (a shifted column, a pasted document) loaded
    # as keys; the error shows the start of the value, not all of it
    f = write(
        tmp_path / "usage_events.csv",
        "event_id,account_id,user_id,ts,event\n"
        f"E1,A1,{'u' * 1001},2024-01-01,login\n"
        f"E2,{'é' * 1000},U1,2024-01-01,login\n"  # 1,000 characters (2,000 bytes): an id
        f"E3,A1,U1,2024-01-01,{'x' * 5000}\n",  # an event name is no id
    )
    batch = read_source(f, "usage_events", allow_rejects=True)
    assert col(batch, "event_id") == ["E2", "E3"]
    assert [(p.row, p.column, p.reason, p.got) for p in batch.rejects] == [
        (2, "user_id", "1,001 characters; an id is at most 1,000", "u" * 40 + "...")
    ]


def test_values_at_the_edge_of_their_domain_load(tmp_path):
    f = write(
        tmp_path / "surveys.csv",
        "response_id,account_id,ts,kind,score\n"
        "R1,A1,1900-01-01,nps,0\nR2,A1,2999-12-31,nps,10\nR3,A1,2024-01-01,csat,1\n"
        "R4,A1,2024-01-01,csat,5\n",
    )
    batch = read_source(f, "surveys", allow_rejects=True)
    assert batch.rejects == [] and col(batch, "score") == [0, 10, 1, 5]


def test_out_of_domain_rows_go_to_rejects_with_the_others(tmp_path):
    f = write(
        tmp_path / "subscriptions.csv",
        "subscription_id,account_id,start_date,seats\n"
        "S1,A1,2024-01-01,10\nS2,A1,2024-01-01,-1\nS3,A1,2024-01-01,x\n",
    )
    batch = read_source(f, "subscriptions", allow_rejects=True)
    assert col(batch, "subscription_id") == ["S1"]
    assert [(p.row, p.reason) for p in batch.rejects] == [
        (3, "out of range"),
        (4, "not a number"),
    ]
    out = tmp_path / "rejects.csv"
    write_rejects(batch, out)
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["_reason"] == "seats: out of range (got '-1', expected at least 0)"


def test_an_extra_number_that_is_not_finite_is_an_invalid_row(tmp_path):
    # canonical numbers refused NaN and infinity, extra columns took them (a Parquet
    # double, a CSV's nan): a `{column: ...}` metric then scored NaN as the best value
    parquet = tmp_path / "accounts.parquet"
    pq.write_table(
        pa.table(
            {
                "account_id": ["A1", "A2", "A3"],
                "created_at": ["2024-01-01"] * 3,
                "discount": [0.1, float("nan"), float("-inf")],
            }
        ),
        parquet,
    )
    text = tmp_path / "accounts.csv"
    text.write_text(
        "account_id,created_at,discount,nickname\n"
        "A1,2024-01-01,0.1,nan\nA2,2024-01-01,inf,Infinity\nA3,2024-01-01,,x\n"
    )
    for f, bad in ((parquet, {2: "nan", 3: "-inf"}), (text, {3: "inf"})):
        with pytest.raises(SourceError) as e:
            read_source(f, "accounts")
        found = {p.row: (p.column, p.reason, p.got) for p in e.value.problems}
        assert found == {r: ("discount", "not a finite number", got) for r, got in bad.items()}
    # text that reads "nan" is text: only numbers are held to being finite
    batch = read_source(text, "accounts", allow_rejects=True)
    assert batch.data.column("nickname").to_pylist() == ["nan", "x"]
