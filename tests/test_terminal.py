"""What a CS ops person reads in a terminal: the account list, labels and units, tables
that fit 80 columns without cutting a number, and piped output that is never wrapped.

Runs the `healthscore` command on the session's demo project through Typer's runner;
``COLUMNS=80`` stands for an 80-column terminal, no ``COLUMNS`` for a pipe.
"""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

import fixtures
from healthscore.cli import app

AS_OF = f"{fixtures.DEMO_END:%Y-%m-%d}"
runner = CliRunner()


_seen: dict[tuple, str] = {}


def run(project, *args, columns: int | None = None):
    """The command's stdout; each command is run once per module (scoring is slow)."""
    key = (project.db_path, args, columns)
    if key not in _seen:
        base = ["--db", project.db_path, "--model", project.model_path, "--as-of", AS_OF]
        env = {"COLUMNS": str(columns) if columns else None}  # None: unset (a pipe)
        result = runner.invoke(app, [str(a) for a in (*args, *base)], env=env)
        assert result.exit_code == 0, result.output
        _seen[key] = result.stdout
    return _seen[key]


def as_json(project, *args):
    return json.loads(run(project, *args, "--format", "json"))


def table_rows(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if re.match(r"ACC-\d+ ", ln)]


# --- item 8: which of my accounts are at risk? -----------------------------------------------


def test_score_lists_name_csm_arr_renewal_and_band_riskiest_first(demo_project):
    everyone = as_json(demo_project, "score")
    scores = [r["score"] for r in everyone]
    assert scores == sorted(scores)  # lowest score first, in every format
    rows = everyone[:8]
    assert all(r["account_name"] and r["arr_in_force"] for r in rows)
    out = run(demo_project, "score", "--limit", "8")
    header = next(ln for ln in out.splitlines() if ln.startswith("account"))
    assert header.split()[:6] == ["account", "name", "CSM", "ARR", "renewal", "score"]
    lines = table_rows(out)
    assert [ln.split()[0] for ln in lines] == [r["account_id"] for r in rows]
    first = rows[0]
    assert first["account_name"] in lines[0] and first["csm"] in lines[0]
    assert first["renewal_date"][:10] in lines[0] and first["band"] in lines[0]
    assert out.splitlines()[0].startswith(f"8 of {len(everyone):,} accounts")


def test_score_filters_by_band_segment_and_csm_and_sorts_by_arr(demo_project):
    everyone = as_json(demo_project, "score")
    csm = everyone[0]["csm"]
    rows = as_json(
        demo_project, "score", "--band", "red,yellow", "--segment", "SMB ", "--csm", csm.upper()
    )
    expected = {
        r["account_id"]
        for r in everyone
        if r["band"] in ("red", "yellow") and r["segment"] == "smb" and r["csm"] == csm
    }
    assert expected and {r["account_id"] for r in rows} == expected
    by_arr = as_json(demo_project, "score", "--sort", "arr", "--limit", "5")
    arr = [r["arr_in_force"] for r in by_arr]
    assert arr == sorted(arr, reverse=True)
    assert arr[0] == max(r["arr_in_force"] or 0 for r in everyone)


def test_an_unknown_band_or_segment_is_an_error_naming_the_choices(demo_project):
    base = ["--db", demo_project.db_path, "--model", demo_project.model_path, "--as-of", AS_OF]
    bad = runner.invoke(app, ["score", "--band", "purple", *map(str, base)])
    assert bad.exit_code == 2 and "--band purple" in bad.output and "yellow" in bad.output
    seg = runner.invoke(app, ["score", "--segment", "entreprise", *map(str, base)])
    assert seg.exit_code == 1
    assert "--segment 'entreprise'" in seg.output and "enterprise, mid-market, smb" in seg.output


def test_expansion_lists_the_readiest_first_in_its_own_band_names(demo_project):
    rows = as_json(demo_project, "score", "-s", "expansion", "--limit", "5")
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and rows[0]["band"] == "green"
    out = run(demo_project, "score", "-s", "expansion", "--band", "ready", "--limit", "5")
    lines = table_rows(out)
    assert lines and all(" ready " in ln for ln in lines)
    assert "highest score first" in out.splitlines()[0]


# --- item 10: human names and units -----------------------------------------------------------


def test_explain_shows_labels_and_units_not_metric_keys(demo_project):
    worst = as_json(demo_project, "score")[0]["account_id"]
    out = run(demo_project, "explain", worst)
    assert "Late invoices (90 days)" in out and "late_invoices_90d" not in out
    assert re.search(r"Days since last use +[\d.]+ days", out)
    assert re.search(r"Seat activation +-?\d+(\.\d)?%", out)


# --- item 11: readable in a terminal ----------------------------------------------------------


def test_at_80_columns_score_rows_stay_on_one_line_with_every_number_intact(demo_project):
    rows = as_json(demo_project, "score")
    out = run(demo_project, "score", columns=80)
    lines = table_rows(out)
    assert all(len(ln) <= 80 for ln in out.splitlines())
    assert [ln.split()[0] for ln in lines] == [r["account_id"] for r in rows]  # one line each
    for r, ln in zip(rows, lines, strict=True):
        assert f" {r['score']:.1f} " in ln, ln
        assert f" {r['coverage']:.0%}" in ln, ln
    assert "left out to fit 80 columns" in out


def test_at_80_columns_explain_numbers_are_never_cut(demo_project):
    worst = as_json(demo_project, "score")[0]["account_id"]
    e = as_json(demo_project, "explain", worst)
    out = run(demo_project, "explain", worst, columns=80)
    assert all(len(ln) <= 80 for ln in out.splitlines() if "biggest drags" not in ln)
    for m in e["metrics"]:
        line = next(ln for ln in out.splitlines() if ln.startswith(f"  {m['label']} "))
        assert f"{m['contribution']:.2f}" in line and f"{m['weight']:.1%}" in line, line
        if m["normalized"] is not None:
            assert f"{m['normalized']:.1f}" in line, line
    assert not re.search(r"\d…", out)


def test_piped_output_is_not_wrapped_at_80_columns(demo_project):
    rows = as_json(demo_project, "score")
    out = run(demo_project, "score")  # no COLUMNS, not a terminal
    lines = table_rows(out)
    assert len(lines) == len(rows)
    assert max(len(ln) for ln in lines) > 80  # every column, each row on its one line
    for r, ln in zip(rows, lines, strict=True):
        assert ln.rstrip().endswith(f"{r['pillars']['financial']:.1f}"), ln
        assert r["account_name"] in ln
    assert "left out" not in out


def test_the_width_is_read_when_printing_not_when_the_module_is_imported():
    """A COLUMNS set when the views were first imported (by an earlier command in the
    same process) must not fix the width of later output that goes to a pipe."""
    import subprocess
    import sys

    from healthscore.views.terminal import UNWRAPPED

    code = (
        "import os; os.environ['COLUMNS'] = '40'\n"
        "from healthscore.views import terminal\n"
        "del os.environ['COLUMNS']\n"
        "print(terminal.stdout.width)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == UNWRAPPED


# --- bands read as the scorecard names them --------------------------------------------------


def test_the_demo_portfolio_and_rule_effects_name_bands_as_the_scorecard_does(demo_project):
    import dataclasses

    from rich.console import Console

    from healthscore.engine.explain import rule_effect
    from healthscore.model import Model, Rule
    from healthscore.model.schema import BandNames
    from healthscore.views.terminal import render_portfolio

    names = BandNames(green="healthy", yellow="watch", red="at risk")
    spec = demo_project.model.spec.model_copy(update={"band_names": names})
    named = Model(spec, demo_project.model.file)
    console = Console(record=True, width=200)
    render_portfolio(console, dataclasses.replace(demo_project, model=named))
    table = console.export_text().split("portfolio by band")[1].split("riskiest")[0]
    assert "healthy" in table and "at risk" in table, table
    assert not re.search(r"\b(green|yellow|red)\b", table), table
    # a rule that forces a band says the band in the scorecard's words
    forces = Rule(when="seats >= 0", band="red")
    assert rule_effect(forces, named.scorecard("onboarding")) == "band stalled"
    assert rule_effect(forces, named) == "band at risk" and rule_effect(forces) == "band red"


# --- hostile text cannot reorder what follows it ---------------------------------------------


def test_a_right_to_left_override_in_a_name_is_isolated_in_every_table_and_line():
    """An account named with U+202E (right-to-left override) would show the rest of its row
    (and of the line) reversed in a terminal: the printed name is closed off in an
    isolate (U+2068 ... U+2069); ordinary names print as they are."""
    import io

    from rich.table import Table

    from healthscore.views.terminal import _Console

    out = io.StringIO()
    console = _Console(file=out, width=120)
    table = Table("account", "name", "score")
    table.add_row("ACC-1", "\u202eevil corp", "42.0")
    table.add_row("ACC-2", "Acme", "77.0")
    console.print(table)
    console.print("note: \u202eleft-to-right no more", highlight=False)
    text = out.getvalue()
    row = next(ln for ln in text.splitlines() if "ACC-1" in ln)
    note = next(ln for ln in text.splitlines() if "no more" in ln)
    for line in (row, note):  # opened before the override, closed after it
        assert line.index("\u2068") < line.index("\u202e") < line.index("\u2069")
    # the isolate closes before the score, so 42.0 reads in its own column
    assert row.index("\u2069") < row.index("42.0")
    assert "\u2068" not in next(ln for ln in text.splitlines() if "ACC-2" in ln)


def test_emoji_codes_in_names_and_errors_print_as_written(tmp_path):
    """Rich reads ``:smile:`` or ``:-1:`` as an emoji code by default: an account named
    ``ACME :-1:`` showed as ``ACME 👎`` in tables and lines, and an error about the store
    ``:smile:.duckdb`` named a file that does not exist. Text prints as written."""
    import io

    from rich.table import Table

    from healthscore.views.terminal import _Console

    out = io.StringIO()
    console = _Console(file=out, width=120)
    table = Table("account", "name")
    table.add_row("ACC-1", "ACME :-1: :smile:")
    console.print(table)
    console.print("note: :thumbs_up:", markup=False, highlight=False)
    text = out.getvalue()
    assert "ACME :-1: :smile:" in text and "note: :thumbs_up:" in text

    r = runner.invoke(app, ["score", "--db", str(tmp_path / ":smile:.duckdb")])
    assert r.exit_code == 1
    assert ":smile:.duckdb" in r.stderr.replace("\n", "")
