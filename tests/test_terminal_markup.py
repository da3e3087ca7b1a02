"""Text from data, files and users prints as it is written: an account, segment, CSM, flag,
token or folder named with Rich's markup (``[/]``, ``[bold]``) is neither styled nor a crash,
and a line that holds a path is not broken inside the path at 80 columns.

Runs the `healthscore` command through Typer's runner on a small store written for the
module (the fixture book with hostile names), ``COLUMNS`` set as a terminal would.
"""

from __future__ import annotations

from datetime import datetime as D

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import fixtures
from healthscore.cli import app

runner = CliRunner()
AS_OF = ("--as-of", "2025-01-01")
ODD_ID = "[/]X"  # a closing tag with nothing to close: Rich raises MarkupError on it
NAME, SEGMENT, CSM = "[bold]Acme[/bold]", "[red]ent[/red]", "[link=x]ann"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from healthscore.api import init_project
    from healthscore.store import connect

    d = tmp_path_factory.mktemp("markup")
    init_project(d)
    store = connect(d / "healthscore.duckdb")
    for name, table in fixtures.tables().items():
        rows = table.to_pylist()
        if name == "accounts":
            rows[0].update(name=NAME, segment=SEGMENT, csm=CSM)
            rows.append({**rows[1], "account_id": ODD_ID, "name": ODD_ID, "csm": CSM})
        if name == "subscriptions":
            rows.append(
                {
                    **rows[2],
                    "subscription_id": "S9",
                    "account_id": ODD_ID,
                    "start_date": D(2024, 7, 1),
                }
            )
        store.load(name, pa.Table.from_pylist(rows, schema=table.schema))
    store.con.disconnect()
    return d


def run(project, *args, columns: int = 80):
    result = runner.invoke(
        app,
        [str(a) for a in args],
        env={"COLUMNS": str(columns), "HEALTHSCORE_DB": str(project / "healthscore.duckdb")},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def db(project):
    return ("--db", project / "healthscore.duckdb", "--model", project / "healthscore.yaml")


def test_names_in_the_score_table_and_explain_print_as_written(project):
    out = run(project, "score", *AS_OF, *db(project), columns=200)
    assert NAME in out and CSM in out and ODD_ID in out
    explained = run(project, "explain", ODD_ID, *AS_OF, *db(project), columns=200)
    assert f"{ODD_ID} as of 2025-01-01" in explained


def test_a_flag_on_an_oddly_named_account_prints_its_names(project):
    raised = run(project, "flag", "add", ODD_ID, "[/]kind", "--at", "2024-12-01", *db(project)[:2])
    assert f"[/]kind on {ODD_ID} from 2024-12-01" in raised
    flag_id = raised.split(":")[0].removeprefix("flag ")
    listed = run(project, "flag", "list", "--account", ODD_ID, *db(project)[:2], columns=200)
    row = next(ln for ln in listed.splitlines() if ln.lstrip().startswith(flag_id))
    assert ODD_ID in row and "[/]kind" in row
    resolved = run(project, "flag", "resolve", flag_id, *db(project)[:2])
    assert f"flag {flag_id} resolved on" in resolved


def test_a_token_named_with_markup_is_named_as_written(project):
    out = run(project, "token", "create", "--name", "[/]ci", "--scope", "read", *db(project)[:2])
    assert "for [/]ci" in out


def test_folders_named_with_markup_and_long_paths_print_whole(tmp_path):
    folder = tmp_path / "[/]clients" / ("a-rather-long-folder-name-" * 3) / "project"
    out = run(tmp_path, "init", folder, columns=60)
    lines = out.splitlines()
    assert f"wrote {folder / 'healthscore.yaml'}" in lines
    assert f"store ready: {folder / 'healthscore.duckdb'}" in lines
    valid = run(tmp_path, "validate", folder / "healthscore.yaml", columns=60)
    assert f"{folder / 'healthscore.yaml'}: OK" in valid
