"""The `healthscore` command end to end, through Typer's runner on real files."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from healthscore.cli import app

runner = CliRunner()


def run(*args, cwd: Path | None = None):
    import os

    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


@pytest.fixture
def project(tmp_path, fixture_db):
    """A project folder with the default model and a copy of the fixture store."""
    import shutil

    result = run("init", tmp_path)
    assert result.exit_code == 0, result.output
    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    return tmp_path


def test_init_writes_a_commented_default_model_and_an_empty_store(tmp_path):
    result = run("init", tmp_path / "p")
    assert result.exit_code == 0, result.output
    model = (tmp_path / "p" / "healthscore.yaml").read_text()
    assert model.startswith("# healthscore model")
    assert "seat_activation" in model
    assert (tmp_path / "p" / "healthscore.duckdb").exists()
    again = run("init", tmp_path / "p")
    assert "exists; keeping it" in again.output


def test_load_reports_counts_and_reload_is_harmless(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text("id,company,created\nX1,Acme,2024-01-05\nX2,Bolt,05/02/2024\n")
    db = tmp_path / "s.duckdb"
    args = [
        "load",
        "accounts",
        csv,
        "--map",
        "id=account_id",
        "--map",
        "company=name",
        "--map",
        "created=created_at",
        "--date-format",
        "%d/%m/%Y",
        "--db",
        db,
    ]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "accounts: 2 inserted, 0 updated, 0 unchanged, 0 rejected" in first.output
    second = run(*args)
    assert "accounts: 0 inserted, 0 updated, 2 unchanged, 0 rejected" in second.output


def test_load_with_a_bad_row_loads_nothing_and_names_file_row_and_column(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text("account_id,created_at\nX1,2024-01-05\nX2,not a date\n")
    db = tmp_path / "s.duckdb"
    result = run("load", "accounts", csv, "--db", db)
    assert result.exit_code == 1
    assert result.output.startswith("Error:")
    assert "acc.csv:3: created_at:" in result.output
    assert "Traceback" not in result.output
    count = run("score", "--db", db, "--as-of", "2025-01-01", "--format", "csv")
    assert count.stdout.count("\n") == 1  # header only: nothing was loaded


def test_load_with_rejects_keeps_valid_rows_and_writes_the_bad_ones(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text("account_id,created_at\nX1,2024-01-05\nX2,not a date\n")
    rejects = tmp_path / "rejects.csv"
    result = run("load", "accounts", csv, "--rejects", rejects, "--db", tmp_path / "s.duckdb")
    assert result.exit_code == 0, result.output
    assert "1 inserted" in result.output and "1 rejected" in result.output
    rows = pacsv.read_csv(rejects).to_pylist()
    assert rows[0]["account_id"] == "X2"
    assert "created_at" in rows[0]["_reason"]


def test_validate_reports_ok_or_each_problem(tmp_path):
    ok = run("validate", Path(__file__).parent / "models" / "valid" / "definitions.yaml")
    assert ok.exit_code == 0 and "OK" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "metrics: {}\npillars:\n  p: {weight: 1, metrics: {x: {weight: 1, bad: 0, good: 1}}}\n"
    )
    result = run("validate", bad)
    assert result.exit_code == 1
    assert "bad.yaml:3: pillars.p.metrics.x: unknown metric 'x'" in result.output


def test_model_schema_prints_json_schema():
    result = run("model", "schema")
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "healthscore model"


def test_score_formats_agree(project):
    common = ["--as-of", "2025-01-01"]
    table = run("score", *common, cwd=project)
    assert table.exit_code == 0, table.output
    assert "A1" in table.output and "enterprise" in table.output
    as_json = json.loads(run("score", *common, "--format", "json", cwd=project).stdout)
    # every format lists the accounts at risk first, as the table does
    assert sorted(r["account_id"] for r in as_json) == ["A1", "A2", "A3"]
    assert [r["score"] for r in as_json] == sorted(r["score"] for r in as_json)
    lines = as_json[0]["lines"]
    assert abs(sum(ln["contribution"] for ln in lines) - as_json[0]["score"]) < 1e-9
    out = project / "scores.parquet"
    assert run("score", *common, "--format", "parquet", "--out", out, cwd=project).exit_code == 0
    wide = pq.read_table(out).to_pylist()
    assert [r["score"] for r in wide] == [r["score"] for r in as_json]
    csv_out = run("score", *common, "--format", "csv", cwd=project).stdout
    assert csv_out.splitlines()[0].startswith('"account_id","as_of","segment","csm","score"')


def test_score_warns_when_data_is_stale(project):
    result = run("score", "--as-of", "2025-03-01", "--format", "csv", cwd=project)
    assert result.exit_code == 0
    assert "Warning: usage_events is stale" in result.output


def test_explain_shows_pillars_metrics_and_missing_data(project):
    result = run("explain", "A2", "--as-of", "2025-01-01", cwd=project)
    assert result.exit_code == 0, result.output
    assert "A2 as of 2025-01-01 00:00 UTC" in result.output
    assert "Late invoices (90 days)" in result.output  # the metric's label, not its key
    assert "NPS (latest): no data; scored 50 by the neutral policy" in result.output
    as_json = json.loads(
        run("explain", "A2", "--as-of", "2025-01-01", "-f", "json", cwd=project).stdout
    )
    assert as_json["segment_weights_used"] == "smb"
    points = [m["contribution"] for m in as_json["metrics"] + as_json["rules"]]
    assert abs(sum(points) - as_json["score"]) < 1e-9
    assert as_json["signals"] == ["champion_left"]  # A2's flag is active at D
    assert "champion_left" in result.output and "add -10" in result.output


def test_explain_unknown_account_is_an_error_not_a_traceback(project):
    result = run("explain", "NOPE", "--as-of", "2025-01-01", cwd=project)
    assert result.exit_code == 1
    assert "Error: unknown account 'NOPE'" in result.output


def test_bad_as_of_and_bad_format_are_reported(project):
    bad_date = run("score", "--as-of", "yesterday-ish", cwd=project)
    assert bad_date.exit_code == 1 and "--as-of 'yesterday-ish' is not a date" in bad_date.output
    bad_format = run("score", "--format", "xml", cwd=project)
    assert bad_format.exit_code == 2


def test_score_without_a_store_says_how_to_make_one(tmp_path):
    result = run("score", "--db", tmp_path / "none.duckdb")
    assert result.exit_code == 1
    assert "no store at" in result.output and "healthscore init" in result.output


def test_demo_builds_a_store_every_command_can_use(tmp_path):
    result = run("demo", "--accounts", 60, "--months", 6, "--seed", 3, "--dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "portfolio by band" in result.output
    assert "10 riskiest accounts" in result.output
    assert "weekly dates stored" in result.output and "rapid declines" in result.output
    assert (tmp_path / "report.html").stat().st_size > 1_000_000  # plotly.js is inside
    for band in ("green", "yellow", "red"):
        assert band in result.output
    today = datetime.utcnow().strftime("%Y-%m-%d")
    scores = json.loads(run("score", "--as-of", today, "--format", "json", cwd=tmp_path).stdout)
    assert len(scores) > 30
    first = scores[0]["account_id"]
    assert run("explain", first, "--as-of", today, cwd=tmp_path).exit_code == 0
    # running the demo again replaces its own store, and refuses to replace anything else
    # (the replacing is what is tested: no history or report this time)
    again = ["--history-months", 0, "--no-report"]
    assert run("demo", "--accounts", 60, "--months", 6, *again, "--dir", tmp_path).exit_code == 0


def test_a_clean_load_with_rejects_overwrites_an_old_rejects_file(tmp_path):
    csv = tmp_path / "acc.csv"
    csv.write_text("account_id,created_at\nX1,2024-01-05\n")
    rejects = tmp_path / "rejects.csv"
    rejects.write_text("_row,_reason\n3,old problem\n")
    result = run("load", "accounts", csv, "--rejects", rejects, "--db", tmp_path / "s.duckdb")
    assert result.exit_code == 0, result.output
    assert "old problem" not in rejects.read_text()


def test_load_warns_about_rows_for_unknown_accounts(project):
    csv = project / "tickets.csv"
    csv.write_text("ticket_id,account_id,opened_at\nT50,A1,2024-01-01\nT51,NOPE,2024-01-02\n")
    result = run("load", "tickets", csv, cwd=project)
    assert result.exit_code == 0, result.output
    assert "2 inserted" in result.output
    assert "Warning: 1 rows refer to accounts that are not in the accounts table" in result.output


def test_explain_vs_shows_why_the_score_moved(project):
    result = run("explain", "A1", "--as-of", "2025-01-01", "--vs", "2024-12-01", cwd=project)
    assert result.exit_code == 0, result.output
    assert "A1: " in result.output and "why it moved" in result.output
    data = run(
        "explain", "A1", "--as-of", "2025-01-01", "--vs", "2024-12-01", "-f", "json", cwd=project
    )
    change = json.loads(data.stdout)
    assert abs(sum(ln["effect"] for ln in change["lines"]) - change["delta"]) < 1e-9
    assert change["summary"].startswith("A1 ")


def test_trends_lists_classes_after_history(project):
    assert (
        run(
            "history", "--from", "2024-10-01", "--to", "2025-01-01", "--every", "1w", cwd=project
        ).exit_code
        == 0
    )
    result = run("trends", "--as-of", "2025-01-01", "-f", "json", cwd=project)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {r["account_id"] for r in rows} == {"A1", "A2", "A3"}
    assert all(
        r["trend"] in ("rapid_decline", "gradual_decline", "improving", "stable_high", "stable")
        for r in rows
    )
    none = run("trends", "--as-of", "2024-01-01", cwd=project)
    assert none.exit_code == 1 and "no stored scores as of 2024-01-01" in none.output


def test_bad_steps_formats_and_folders_are_errors_not_hangs_or_tracebacks(project):
    zero = run(
        "history", "--from", "2024-12-01", "--to", "2025-01-01", "--every", "0d", cwd=project
    )
    assert zero.exit_code == 2 and "longer than 0" in zero.output
    missing = project / "no" / "such" / "x.csv"
    res = run("score", "--as-of", "2025-01-01", "-f", "csv", "--out", missing, cwd=project)
    assert res.exit_code == 1 and "does not exist" in res.output
    assert not missing.parent.exists()
    res = run("explain", "A1", "--as-of", "2025-01-01", "-f", "yaml", cwd=project)
    # the format is an enum: Typer lists the choices and names the bad value
    assert res.exit_code == 2 and "'yaml' is not one of" in res.output
    res = run("trends", "--as-of", "2025-01-01", "--scorecard", "onboarding", cwd=project)
    assert res.exit_code == 1 and "--scorecard onboarding" in res.output


def test_explain_trends_and_compare_write_their_format_to_out_like_score(project):
    common = ["--as-of", "2025-01-01"]
    printed = json.loads(run("explain", "A2", *common, "-f", "json", cwd=project).stdout)
    out = project / "a2.json"
    res = run("explain", "A2", *common, "-f", "json", "--out", out, cwd=project)
    assert res.exit_code == 0 and res.stdout == ""
    assert json.loads(out.read_text()) == printed
    text = project / "a2.txt"
    assert run("explain", "A2", *common, "--out", text, cwd=project).exit_code == 0
    assert "A2 as of 2025-01-01 00:00 UTC" in text.read_text()
    run("history", "--from", "2024-10-01", "--to", "2025-01-01", cwd=project)
    rows = project / "trends.csv"
    assert run("trends", *common, "-f", "csv", "--out", rows, cwd=project).exit_code == 0
    assert {r["account_id"] for r in pacsv.read_csv(rows).to_pylist()} == {"A1", "A2", "A3"}
    model = project / "healthscore.yaml"
    both = project / "compare.json"
    res = run("compare", "--vs", model, *common, "-f", "json", "--out", both, cwd=project)
    assert res.exit_code == 0, res.output
    assert json.loads(both.read_text())["summary"]
    missing = project / "nowhere" / "a2.json"
    res = run("explain", "A2", *common, "-f", "json", "--out", missing, cwd=project)
    assert res.exit_code == 1 and f"Error: --out {missing}: the folder" in res.output


def test_library_messages_are_told_in_the_commands_flags(project):
    res = run("backtest", "--snapshot", "--from", "2024-01-01", cwd=project)
    assert res.exit_code == 2
    assert "--snapshot scores once: --from/--to, --challenger and --out" in res.output
    assert "`" not in res.output.split("scores once")[1].split("do not apply")[0]


def test_translate_maps_parameters_to_flags_and_leaves_other_backticks():
    from healthscore.cli import COMMANDS, app
    from healthscore.cli.common import translate
    from healthscore.cli.outcomes import backtest_command

    command = typer.main.get_command(app).commands["backtest"]
    assert COMMANDS[app]["backtest"] is backtest_command
    text = "`train_until` goes with `challenger`; `reps` and `start`; see `probability:`"
    assert translate(text, command) == (
        "--train-until goes with --challenger; --bootstrap and --from; see `probability:`"
    )


def test_a_command_built_alone_reads_and_fails_as_in_the_whole_tree(tmp_path):
    """`healthscore X` builds only X (startup): its help and its usage errors are those
    of the whole tree, for every command; arguments naming no command get the whole tree."""
    from healthscore.cli import TREE, build, command_path

    for group, commands in TREE.items():
        for name in commands:
            path = (*group, name)
            assert command_path([*path, "--help"]) == path
            for args in ([*path, "--help"], [*path, "--no-such-option"]):
                alone = runner.invoke(build(path)[()], args, env={"COLUMNS": "120"})
                whole = runner.invoke(app, args, env={"COLUMNS": "120"})
                assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args
    for args in ([], ["--help"], ["model"], ["auth", "user"], ["no-such-command"], ["--", "score"]):
        assert command_path(args) is None


def test_the_help_listing_reads_and_fails_as_the_whole_tree(tmp_path):
    """`healthscore --help`, a group's help and a name that is no command list the
    commands by name and help without building their options (startup): the same output
    and exit code as the whole tree, and `--` before a command still runs it."""
    import os
    import subprocess
    import sys

    from healthscore.cli import build

    listing = build(listing=True)[()]
    cases = [[], ["--help"], ["model"], ["model", "--help"], ["auth"], ["auth", "user"]]
    cases += [["flag", "--help"], ["ingest"], ["no-such-command"], ["scor"], ["--bogus"]]
    for args in cases:
        for columns in ("60", "120"):
            alone = runner.invoke(listing, args, env={"COLUMNS": columns})
            whole = runner.invoke(app, args, env={"COLUMNS": columns})
            assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args
    assert "Score every account as of a date" in runner.invoke(listing, ["--help"]).output
    # `--` ends the options: what follows is a command, run as in the whole tree
    env = {**os.environ, "HEALTHSCORE_DB": str(tmp_path / "none.duckdb")}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "healthscore.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    score = cli("--", "score")
    assert score.returncode == 1 and score.stderr.startswith("Error: no store at"), score.stderr
    schema = cli("model", "--", "schema")
    assert schema.returncode == 0 and '"$defs"' in schema.stdout, schema.stderr


def test_a_flag_that_does_not_apply_is_a_usage_error_not_ignored(project):
    res = run("backtest", "--snapshot", "--horizon", "30d", cwd=project)
    assert res.exit_code == 2 and "--horizon does not apply with --snapshot" in res.output
    res = run("calibrate", "--train-until", "2025-01-01", "--folds", "3", cwd=project)
    assert res.exit_code == 2 and "--folds does not apply without --snapshot" in res.output


# --- real-world files through `healthscore load` (issues 13 and 15) ----------------------


def load(tmp_path, table, name, content: str | bytes, *flags):
    f = tmp_path / name
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    return run("load", table, f, *flags, "--db", tmp_path / "s.duckdb")


def stored(tmp_path, table, column):
    import healthscore as hs

    return hs.connect(tmp_path / "s.duckdb").table(table)[column].to_pyarrow().to_pylist()


def test_load_of_an_empty_file_is_an_error_not_zero_rows(tmp_path):
    result = load(tmp_path, "accounts", "accounts.csv", "")
    assert result.exit_code == 1
    assert "accounts.csv: the file is empty (0 bytes): no header row" in result.output


def test_load_of_a_file_mixing_crlf_and_lf_line_ends_loads_every_row(tmp_path):
    text = b"account_id,name,created_at\r\nA1,Acme,2024-01-01\r\nA2,Bolt,2024-01-02\n"
    result = load(tmp_path, "accounts", "accounts.csv", text)
    assert result.exit_code == 0, result.output
    assert "accounts: 2 inserted" in result.output
    assert sorted(stored(tmp_path, "accounts", "name")) == ["Acme", "Bolt"]


def test_load_names_the_spreadsheet_row_when_blank_lines_come_before_it(tmp_path):
    text = "account_id,created_at\nA1,2024-01-01\n\n\nA2,someday\n"
    result = load(tmp_path, "accounts", "accounts.csv", text)
    assert result.exit_code == 1
    assert "accounts.csv:5: created_at: not a date or timestamp (got 'someday'" in result.output


def test_load_proposes_the_date_format_the_column_shows(tmp_path):
    text = "account_id,created_at\nA1,03/15/2025\nA2,01/02/2024\n"
    result = load(tmp_path, "accounts", "accounts.csv", text)
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert (
        "hint: created_at has its month first (row 2: '03/15/2025'): pass --date-format %m/%d/%Y"
        in out
    )
    assert "%d/%m/%Y" not in out
    again = load(tmp_path, "accounts", "accounts.csv", text, "--date-format", "%m/%d/%Y")
    assert again.exit_code == 0, again.output
    assert sorted(map(str, stored(tmp_path, "accounts", "created_at"))) == [
        "2024-01-02 00:00:00",
        "2025-03-15 00:00:00",
    ]


def test_load_refuses_dates_the_file_cannot_order_and_asks_for_a_format(tmp_path):
    result = load(tmp_path, "accounts", "a.csv", "account_id,created_at\nA1,01/02/2024\n")
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "no date in created_at has a field above 12" in out
    assert "pass --date-format %d/%m/%Y (day first) or %m/%d/%Y (month first)" in out


def test_load_reads_money_as_people_write_it_with_number_format(tmp_path):
    load(tmp_path, "accounts", "a.csv", "account_id,created_at\nA1,2024-01-01\n")
    text = 'subscription_id,account_id,start_date,arr\nS1,A1,2024-01-01,"$6,000"\n'
    refused = load(tmp_path, "subscriptions", "s.csv", text)
    assert refused.exit_code == 1
    out = " ".join(refused.output.split())
    assert "s.csv:2: arr: not a number: ',' could separate thousands or decimals" in out
    assert "pass --number-format 1,234.56 (thousands) or 1.234,56 (decimals)" in out
    ok = load(tmp_path, "subscriptions", "s.csv", text, "--number-format", "1,234.56")
    assert ok.exit_code == 0, ok.output
    assert stored(tmp_path, "subscriptions", "arr") == [6000.0]
    eu = 'subscription_id;account_id;start_date;arr\nS1;A1;2024-01-01;"6.000,00 €"\n'
    again = load(tmp_path, "subscriptions", "s.csv", eu, "--number-format", "1.234,56")
    assert "0 inserted, 0 updated, 1 unchanged" in again.output
    spec = tmp_path / "spec.yaml"
    spec.write_text('number_format: "1,234.56"\n')
    us = 'subscription_id,account_id,start_date,arr\nS1,A1,2024-01-01,"1,234.5"\n'
    with_spec = load(tmp_path, "subscriptions", "s.csv", us, "--spec", spec)
    assert "1 updated" in with_spec.output
    assert stored(tmp_path, "subscriptions", "arr") == [1234.5]


def test_load_of_outcomes_without_an_id_derives_one_and_reloading_inserts_nothing(tmp_path):
    text = "account_id,ts,kind,arr_delta\nA1,2024-03-01,renewed,100\nA2,2024-03-02,churned,\n"
    first = load(tmp_path, "outcomes", "renewals.csv", text)
    assert first.exit_code == 0, first.output
    assert "outcomes: 2 inserted" in first.output
    again = load(tmp_path, "outcomes", "renewals.csv", text)
    assert "outcomes: 0 inserted, 0 updated, 2 unchanged" in again.output
    # a later export correcting arr_delta updates the row instead of adding one
    fixed = load(tmp_path, "outcomes", "renewals.csv", text.replace(",100", ",120"))
    assert "outcomes: 0 inserted, 1 updated, 1 unchanged" in fixed.output


def test_load_builds_the_id_from_the_columns_named_by_key(tmp_path):
    text = "account_id,ts,kind\nA1,2024-03-01,renewed\nA1,2024-03-01,churned\n"
    first = load(
        tmp_path,
        "touchpoints",
        "t.csv",
        text.replace("renewed", "call").replace("churned", "email"),
        "--key",
        "account_id,ts,kind",
    )
    assert first.exit_code == 0, first.output
    assert len(set(stored(tmp_path, "touchpoints", "touchpoint_id"))) == 2
    dup = load(tmp_path, "outcomes", "o.csv", text, "--key", "account_id,ts")
    assert dup.exit_code == 1
    assert (
        "o.csv:3: account_id, ts: duplicate key (account_id, ts), first seen at row 2"
        in " ".join(dup.output.split())
    )
    refused = load(
        tmp_path, "accounts", "a.csv", "name,created_at\nX,2024-01-01\n", "--key", "name"
    )
    assert "accounts rows are identified by their account_id" in refused.output


def test_load_names_a_column_renamed_away_as_the_cause(tmp_path):
    text = "account_id,ts,kind\nA1,2024-03-01,churned\n"
    result = load(tmp_path, "outcomes", "o.csv", text, "--map", "account_id=outcome_id")
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "columns found: account_id (renamed outcome_id), ts, kind" in out
    assert "--map account_id=outcome_id renamed the file's account_id away" in out


@pytest.mark.parametrize("out", ["made/.", "made/..", "made/"])
def test_an_out_file_whose_last_part_is_dot_names_a_folder(project, out):
    """`--out made/.` wrote a file named `made` (Path drops a trailing `.`): a name whose
    last part is `.` or `..` names a folder, a usage error like `made/`, nothing written."""
    (project / "made").mkdir()
    before = sorted(p.name for p in project.iterdir())
    res = run("score", "--format", "csv", "--out", out, cwd=project)
    assert res.exit_code == 2, res.output
    assert "names a folder" in " ".join(res.output.replace("│", " ").split()), res.output
    assert sorted(p.name for p in project.iterdir()) == before


def test_help_shows_the_defaults_written_in_option_help():
    """`--help` reads option help as Rich markup, where `[default: health]` is a tag: the
    defaults written in the help (and `$HEALTHSCORE_DB`) vanished from it."""
    for args, text in (
        (["score", "--help"], "[default: health]"),
        (["score", "--help"], "[env HEALTHSCORE_DB; default healthscore.duckdb]"),
        (["score", "--help"], "[default: today 00:00 UTC"),
        (["calibrate", "--help"], "at least 0.05 and at most 0.20]"),
        (["model", "fit-percentiles", "--help"], "[default: in place]"),
        (["token", "create", "--help"], "[default: never]"),
    ):
        res = runner.invoke(app, args, env={"COLUMNS": "500"})
        assert res.exit_code == 0, res.output
        assert text in " ".join(res.output.replace("│", " ").split()), (args, text)


@pytest.mark.parametrize(
    "args",
    [
        ["load", "accounts", "bad.csv", "--rejects", "nope/rejects.csv"],
        ["backtest", "--from", "2024-01-01", "--to", "2024-12-01", "--challenger"]
        + ["--predictions", "nope/held_out.csv"],
    ],
    ids=["load --rejects", "backtest --predictions"],
)
def test_a_file_to_write_in_a_missing_folder_fails_before_any_work(project, args):
    """`--rejects` and `--predictions` into a folder that does not exist failed only when
    the file was written, after the whole load or backtest and challenger had run (`cannot
    write ...: No such file or directory`): now, like `--out`, before any work."""
    (project / "bad.csv").write_text("account_id,created_at\nX1,not a date\n")
    res = run(*args, cwd=project)
    assert res.exit_code == 1, res.output
    flag, file = args[-2], args[-1]
    assert f"Error: {flag} {file}: the folder nope does not exist" in res.output, res.output


def test_predictions_naming_a_folder_is_a_usage_error(project):
    """`--predictions out/` would have written a file named `out`, like `--out out/` did."""
    args = ["--from", "2024-01-01", "--to", "2024-12-01", "--challenger", "--predictions"]
    res = run("backtest", *args, "made/", cwd=project)
    assert res.exit_code == 2, res.output
    assert "names a folder" in " ".join(res.output.replace("│", " ").split()), res.output


def test_the_command_list_gives_each_command_its_first_paragraph_as_one_line():
    # the docstring's own line breaks showed in the listing: "... With a store" then
    # "(--db, or ./healthscore.duckdb ...)" on the next line, with room left on the first
    for group in ([], ["model"], ["auth", "user"], ["flag"], ["token"]):
        out = runner.invoke(app, [*group, "--help"], env={"COLUMNS": "100"}).output
        panel = out[out.index("─ Commands ─") :].splitlines()[1:]
        rows = [ln[1:-1] for ln in panel[: next(i for i, ln in enumerate(panel) if ln[0] == "╰")]]
        for above, row in zip(rows, rows[1:], strict=False):
            if row[1] == " ":  # a continuation: wrapped only where the next word did not fit
                room = len(above) - len(above.rstrip())
                assert room <= len(row.split()[0]) + 1, f"{above}\n{row}"
