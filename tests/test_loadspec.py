"""Load spec files (`healthscore load --spec`): names, value maps, constants, and their errors."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

import healthscore as hs
from healthscore.cli import app
from healthscore.errors import SourceError
from healthscore.sources import LoadSpec, read_source, read_spec

SPEC = """\
# healthscore load spec: how one file becomes rows of one table
map:
  Customer ID: [account_id, outcome_id]     # one column -> two
  Tenure in Months: tenure_months           # rename
  Customer Status:                          # rename and recode values
    to: kind
    values: {Churned: churned, Stayed: renewed, Joined: null}
  Phone Service:
    values: {"Yes": true, "No": false}      # recode only, name kept
set: {ts: 2022-09-30}
date_format: "%d/%m/%Y"
"""

STATUS = (
    "Customer ID,Customer Status,Tenure in Months,Phone Service\n"
    "C1,Churned,3,Yes\n"
    "C2,Joined,1,No\n"
    "C3,Stayed,40,No\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_line(text: str) -> str:
    """CLI output without the terminal's line wrapping."""
    return " ".join(text.split())


def test_spec_file_holds_names_value_maps_constants_and_date_format(tmp_path):
    spec = read_spec(write(tmp_path / "spec.yaml", SPEC), "outcomes")
    assert spec == LoadSpec(
        mapping={
            "Customer ID": ["account_id", "outcome_id"],
            "Tenure in Months": "tenure_months",
            "Customer Status": "kind",
        },
        values={
            "Customer Status": {"Churned": "churned", "Stayed": "renewed", "Joined": None},
            "Phone Service": {"Yes": "true", "No": "false"},
        },
        constants={"ts": "2022-09-30"},
        date_format="%d/%m/%Y",
    )


def test_yaml_scalars_are_read_as_the_text_a_csv_holds(tmp_path):
    f = write(
        tmp_path / "spec.yaml",
        "map:\n  flag:\n    values: {true: 1, 7: 1.5, 2.5: false, 2024-03-01: x, Yes: ok}\n"
        "set: {ts: 2024-03-01T12:00:00Z, seats: 3}\n",
    )
    spec = read_spec(f)
    assert spec.values == {
        "flag": {"true": "1", "7": "1.5", "2.5": "false", "2024-03-01": "x", "Yes": "ok"}
    }
    assert spec.constants == {"ts": "2024-03-01T12:00:00+00:00", "seats": "3"}


def test_a_spec_loads_a_file_renaming_recoding_and_skipping(tmp_path):
    s = hs.connect(tmp_path / "s.duckdb")
    spec = read_spec(write(tmp_path / "spec.yaml", SPEC), "outcomes")
    f = write(tmp_path / "status.csv", STATUS)
    result = hs.load_file(
        s, "outcomes", f, spec.mapping, values=spec.values, constants=spec.constants
    )
    assert (result.inserted, result.skipped) == (2, 1)
    assert str(result).endswith("; skipped 1 row whose Customer Status maps to nothing (Joined)")
    rows = s.table("outcomes").to_pyarrow().sort_by("outcome_id")
    assert rows.column("kind").to_pylist() == ["churned", "renewed"]
    assert rows.column("account_id").to_pylist() == ["C1", "C3"]
    assert rows.column("tenure_months").to_pylist() == [3, 40]
    assert rows.schema.field("Phone Service").type == pa.bool_()
    assert s.columns("outcomes")["Phone Service"] == "boolean"
    assert rows.column("Phone Service").to_pylist() == [True, False]


def test_a_value_a_spec_leaves_alone_is_still_checked_with_its_row(tmp_path):
    spec = read_spec(write(tmp_path / "spec.yaml", SPEC), "outcomes")
    f = write(tmp_path / "status.csv", STATUS + "C4,Paused,2,No\n")
    with pytest.raises(SourceError, match=re.escape(f"{f}:5: kind: unknown value (got 'Paused'")):
        hs.load_file(
            hs.connect(tmp_path / "s.duckdb"),
            "outcomes",
            f,
            spec.mapping,
            values=spec.values,
            constants=spec.constants,
        )


BAD_SPECS = [
    (
        "mapp: {}\n",
        "spec.yaml:1: mapp: unknown key 'mapp'; hint: allowed here: map, set, date_format",
    ),
    (
        "map:\n  Status:\n    too: kind\n",
        "spec.yaml:3: map.Status.too: unknown key 'too'; hint: allowed here: to, values",
    ),
    (
        "map:\n  Status:\n    to: kind\n    values: [churned]\n",
        "spec.yaml:4: map.Status.values: expected a map of file value: new value",
    ),
    (
        "map:\n  Status:\n    values: {Churned: [a, b]}\n",
        "spec.yaml:3: map.Status.values: 'Churned': a new value must be text, a number",
    ),
    ("map:\n  Status:\n", "spec.yaml:2: map.Status: expected a column name, a list of names"),
    ("date_format: 5\n", "spec.yaml:1: date_format: Input should be a valid string (got 5)"),
    ("set: [ts]\n", "spec.yaml:1: set: Input should be a valid dictionary"),
    ("- map\n- set\n", "spec.yaml:1: a load spec must be a YAML mapping (expected keys map,"),
    (
        "map:\n  Status:\n    to: knd\n",
        "spec.yaml:3: map.Status.to: 'knd' is not a column of outcomes; did you mean 'kind'?",
    ),
    (
        "map:\n  Id: [account_id, outcom_id]\n",
        "spec.yaml:2: map.Id[1]: 'outcom_id' is not a column of outcomes; did you mean",
    ),
    (
        "map:\n  Id: account_id\n  Ref: account_id\n",
        "spec.yaml:3: map.Ref: 'Id' is already mapped to 'account_id'",
    ),
    ("set: {tss: 2024-01-01}\n", "spec.yaml:1: set.tss: 'tss' is not a column of outcomes"),
    ('date_format: "%Q"\n', "spec.yaml:1: date_format: not a valid strptime format"),
    ("domains:\n  arr_delta: {}\n", "spec.yaml:2: domains.arr_delta: give `min:`, `max:`"),
    ("domains:\n  x: {min: 5, max: 1}\n", "spec.yaml:2: domains.x: min 5 is above max 1"),
    ("domains:\n  x: {low: 5}\n", "spec.yaml:2: domains.x.low: unknown key 'low'"),
    ("domains:\n  x: {min: .nan}\n", "spec.yaml:2: domains.x.min: Input should be a finite number"),
    ("domains:\n  x: {max: .inf}\n", "spec.yaml:2: domains.x.max: Input should be a finite number"),
    ("domains:\n  kind: {min: 0}\n", "spec.yaml:2: domains.kind: 'kind' holds string values"),
    ("map: {a: b\n", "spec.yaml:2: YAML syntax error"),
    ("map:\n  a: b\n  a: c\n", "spec.yaml:3: YAML syntax error: found duplicate key"),
    # a key merged in by `<<:` has no line of its own: the line of its mapping is given
    (
        "map:\n  A: &b {to: account_id}\n  Status:\n    <<: *b\n",
        "spec.yaml:3: map.Status.to: 'A' is already mapped to 'account_id'",
    ),
]


@pytest.mark.parametrize("text, message", BAD_SPECS, ids=[m.split(": ")[1] for _, m in BAD_SPECS])
def test_bad_spec_files_name_the_file_line_and_key(tmp_path, text, message):
    f = write(tmp_path / "spec.yaml", text)
    with pytest.raises(SourceError) as e:
        read_spec(f, "outcomes")
    assert str(e.value).replace(str(tmp_path) + "/", "").startswith(message)


def test_a_missing_spec_file_is_named(tmp_path):
    with pytest.raises(SourceError, match="nope.yaml: load spec not found"):
        read_spec(tmp_path / "nope.yaml")


def test_flags_add_to_the_spec_and_win_over_it():
    spec = LoadSpec(
        {"Id": ["account_id", "outcome_id"], "Status": "kind", "Tenure": "tenure"},
        {"Status": {"Lost": "churned"}},
        {"ts": "2022-09-30", "arr_delta": "0"},
        "%d/%m/%Y",
    )
    flags = spec.with_flags({"Ref": "outcome_id", "Tenure": "months"}, {"ts": "2022-12-31"})
    assert flags.mapping == {
        "Id": "account_id",
        "Status": "kind",
        "Ref": "outcome_id",
        "Tenure": "months",
    }
    assert flags.values == spec.values
    assert flags.constants == {"ts": "2022-12-31", "arr_delta": "0"}
    assert flags.date_format == "%d/%m/%Y"
    assert spec.with_flags(date_format="%m/%d/%Y").date_format == "%m/%d/%Y"


# ------------------------------------------------------------------------------ CLI


def test_cli_load_with_a_spec_reports_skipped_rows_and_flags_override(tmp_path):
    runner = CliRunner()
    spec = write(tmp_path / "spec.yaml", SPEC)
    f = write(tmp_path / "status.csv", STATUS)
    db = tmp_path / "s.duckdb"
    args = ["load", "outcomes", str(f), "--spec", str(spec), "--db", str(db)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert one_line(first.output).startswith(
        "outcomes: 2 inserted, 0 updated, 0 unchanged, 0 rejected; "
        "skipped 1 row whose Customer Status maps to nothing (Joined)"
    )
    again = runner.invoke(app, [*args, "--set", "ts=2022-12-31"])
    assert "0 inserted, 2 updated, 0 unchanged" in one_line(again.output)
    store = hs.connect(db)
    assert {str(t) for t in store.table("outcomes").ts.to_pyarrow().to_pylist()} == {
        "2022-12-31 00:00:00"
    }


def test_cli_load_with_a_bad_spec_prints_the_error_without_a_traceback(tmp_path):
    spec = write(tmp_path / "spec.yaml", "map:\n  Customer Status:\n    to: knd\n")
    f = write(tmp_path / "status.csv", STATUS)
    result = CliRunner().invoke(
        app, ["load", "outcomes", str(f), "--spec", str(spec), "--db", str(tmp_path / "s.db")]
    )
    assert result.exit_code == 1
    assert one_line(result.output).startswith(
        f"Error: {spec}:3: map.Customer Status.to: 'knd' is not a column of outcomes"
    )
    assert "Traceback" not in result.output


# ------------------------------------------------------------------- real data: Telco


def test_telco_files_load_into_accounts_and_outcomes(telco_dir, tmp_path):
    """../shared/data/ibm-telco-churn-v11 (``telco_dir`` in conftest.py skips without it)."""
    accounts = write(
        tmp_path / "accounts.yaml",
        "map: {Customer ID: account_id}\nset: {created_at: 2022-07-01}\n",
    )
    status = write(
        tmp_path / "status.yaml",
        "map:\n"
        "  Customer ID: [account_id, outcome_id]\n"
        "  Customer Status:\n"
        "    to: kind\n"
        "    values: {Churned: churned, Stayed: renewed, Joined: null}\n"
        "set: {ts: 2022-09-30}\n",
    )
    s = hs.connect(tmp_path / "telco.duckdb")

    def load(table: str, name: str, spec_file: Path):
        spec = read_spec(spec_file, table)
        return hs.load_file(
            s,
            table,
            telco_dir / f"Telco_customer_churn_{name}.csv",
            spec.mapping,
            values=spec.values,
            constants=spec.constants,
        )

    assert load("accounts", "demographics", accounts).inserted == 7043
    assert load("accounts", "services", accounts).updated == 7043  # adds its columns
    outcomes = load("outcomes", "status", status)
    assert (outcomes.inserted, outcomes.skipped) == (6589, 454)
    assert "skipped 454 rows whose Customer Status maps to nothing (Joined)" in str(outcomes)

    acc = s.table("accounts").to_pyarrow()
    assert acc.num_rows == 7043
    for column in ("Gender", "Age", "Tenure in Months", "Contract", "Monthly Charge"):
        assert acc.column(column).null_count == 0, column  # both files' columns are kept
    kinds = pc.value_counts(s.table("outcomes").kind.to_pyarrow()).to_pylist()
    assert {k["values"]: k["counts"] for k in kinds} == {"churned": 1869, "renewed": 4720}

    for name in ("services", "demographics"):  # reloading, in the other order
        again = load("accounts", name, accounts)
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 7043), name


def test_a_value_map_key_no_row_holds_is_a_warning_naming_what_the_column_holds(tmp_path):
    # YAML reads an unquoted 007 as the number 7: the file's "007" is then never matched
    spec = write(
        tmp_path / "spec.yaml",
        "map:\n  Customer ID: [account_id, outcome_id]\n"
        "  Status:\n    to: kind\n    values: {Lost: churned, Lots: churned, Kept: renewed}\n"
        '  Plan:\n    values: {007: gold, "008": silver}\n'
        'set: {ts: "2024-03-01"}\n',
    )
    f = write(tmp_path / "s.csv", "Customer ID,Status,Plan\nC1,Lost,007\nC2,Kept,008\n")
    run = CliRunner().invoke(
        app, ["load", "outcomes", str(f), "--spec", str(spec), "--db", str(tmp_path / "d.db")]
    )
    assert run.exit_code == 0, run.output
    text = one_line(run.output)
    assert "outcomes: 2 inserted" in text
    assert "values of 'Status': 'Lots' match no value in the file; it holds 'Kept', 'Lost'" in text
    assert "values of 'Plan': '7' match no value in the file; it holds '007', '008'" in text
    store = hs.connect(tmp_path / "d.db")
    rows = store.execute(store.table("outcomes").select("outcome_id", "Plan")).to_pylist()
    plans = {r["outcome_id"]: r["Plan"] for r in rows}
    assert plans == {"C1": "007", "C2": "silver"}  # the quoted key matched; 007 did not


# -------------------------------------------------------------------------- domains


def test_a_spec_declares_the_domain_of_an_extra_column_and_the_csat_scale(tmp_path):
    spec = write(
        tmp_path / "spec.yaml",
        "domains:\n  tenure_months: {min: 0, max: 1200}\n  score: {min: 1, max: 10}\n",
    )
    f = write(
        tmp_path / "surveys.csv",
        "response_id,account_id,ts,kind,score,tenure_months\n"
        "R1,A1,2024-01-01,csat,7,12\n"  # a 1-10 CSAT scale: fine with the spec
        "R2,A1,2024-01-01,csat,11,12\n"
        "R3,A1,2024-01-01,nps,-1,12\n"  # NPS keeps its 0-10
        "R4,A1,2024-01-01,nps,9,-3\n"
        "R5,A1,2024-01-01,nps,9,many\n",
    )
    plan = read_spec(spec, "surveys")
    assert plan.domains == {"tenure_months": (0.0, 1200.0), "score": (1.0, 10.0)}
    with pytest.raises(SourceError) as e:
        read_source(f, "surveys", domains=plan.domains)
    assert str(e.value).replace(str(f), "f.csv").splitlines()[1:] == [
        "  f.csv:3: score: out of range (got '11', expected between 1 and 10 where kind = 'csat'); "
        "hint: CSAT is read on a 1-10 scale; declare yours in a load spec, e.g. "
        "`domains: {score: {min: 1, max: 10}}`",
        "  f.csv:4: score: out of range (got '-1', expected between 0 and 10 where kind = 'nps')",
        "  f.csv:5: tenure_months: out of range (got '-3', expected between 0 and 1200)",
        "  f.csv:6: tenure_months: not a number (got 'many', expected between 0 and 1200)",
    ]


@pytest.mark.parametrize(
    ("name", "said"),
    [("TENURE_MONTHS", "did you mean 'tenure_months'"), ("nosuch", "columns of the file")],
)
def test_a_domain_of_a_column_the_file_does_not_have_is_refused(tmp_path, name, said):
    """A spec's domain on a name the file has no column of bounded nothing, with no word
    (found by the model probe of the tenth session): a user read the column as bounded."""
    f = write(
        tmp_path / "surveys.csv",
        "response_id,account_id,ts,kind,score,tenure_months\nR1,A1,2024-01-01,nps,9,-3\n",
    )
    with pytest.raises(SourceError) as e:
        read_source(f, "surveys", domains={name: (0.0, 1200.0)})
    text = str(e.value)
    assert f"domain of {name!r}" in text and said in text, text


def test_cli_load_sets_out_of_domain_rows_aside_with_rejects(tmp_path):
    spec = write(tmp_path / "spec.yaml", "domains:\n  discount: {max: 1}\n")
    f = write(
        tmp_path / "subs.csv",
        "subscription_id,account_id,start_date,seats,discount\n"
        "S1,A1,2024-01-01,10,0.2\nS2,A1,2024-01-01,-10,0.2\nS3,A1,2024-01-01,10,1.5\n",
    )
    db, rejects = tmp_path / "s.duckdb", tmp_path / "rejects.csv"
    result = CliRunner().invoke(
        app,
        ["load", "subscriptions", str(f), "--spec", str(spec), "--db", str(db)]
        + ["--rejects", str(rejects)],
    )
    assert result.exit_code == 0, result.output
    assert "1 inserted, 0 updated, 0 unchanged, 2 rejected" in one_line(result.output)
    reasons = [r["_reason"] for r in csv.DictReader(rejects.open())]
    assert reasons == [
        "seats: out of range (got '-10', expected at least 0)",
        "discount: out of range (got '1.5', expected at most 1)",
    ]
