"""Issue 15, probed: every file healthscore writes and everything it exports.

Cases the first pass (tests/test_outputs.py) did not cover: an output file naming the
store or a file the command reads, an output naming a folder, a symbolic link into a
folder that is not there, the running server's owner file on a full disk, formula signs
behind leading spaces in a CSV cell, and a stray "pop directional isolate" in a name.
Real files, a real DuckDB store, a real full disk (a small tmpfs), the CLI end to end.
"""

from __future__ import annotations

import re
import shutil

import pytest

from test_cli import run
from test_outputs import (  # noqa: F401
    AS_OF,
    fill,
    leftovers,
    one_line_error,
    report_with_names,
    small_disk,
)


@pytest.fixture
def project(tmp_path, fixture_db):
    """A project folder with the default model and a copy of the fixture store."""
    assert run("init", tmp_path).exit_code == 0
    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    return tmp_path


def _said(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


# --- an output file never replaces what the command reads ------------------------------------


@pytest.mark.parametrize(
    "args, victim, what",
    [
        (
            ["score", *AS_OF, "-f", "csv", "--out", "healthscore.duckdb"],
            "healthscore.duckdb",
            "the store",
        ),
        (
            ["score", *AS_OF, "-f", "json", "--out", "./healthscore.yaml"],
            "healthscore.yaml",
            "the model file",
        ),
        (["report", *AS_OF, "--out", "healthscore.duckdb"], "healthscore.duckdb", "the store"),
        (
            ["score", *AS_OF, "-f", "parquet", "--db", "./s.duckdb", "--out", "s.duckdb"],
            "s.duckdb",
            "the store",
        ),
        (["load", "accounts", "bad.csv", "--rejects", "bad.csv"], "bad.csv", "the file it reads"),
        (
            ["load", "accounts", "bad.csv", "--rejects", "healthscore.duckdb"],
            "healthscore.duckdb",
            "the store",
        ),
        (
            ["model", "fit-percentiles", *AS_OF, "--out", "healthscore.duckdb"],
            "healthscore.duckdb",
            "the store",
        ),
        (
            ["score", *AS_OF, "-f", "csv", "--out", "healthscore.duckdb.wal"],
            "healthscore.duckdb.wal",
            "the store",
        ),
    ],
    ids=[
        "score over the store",
        "score over the model",
        "report over the store",
        "score over --db spelled otherwise",
        "rejects over the loaded file",
        "rejects over the store",
        "fitted model over the store",
        "score over the store's log",
    ],
)
def test_an_output_naming_the_store_or_an_input_is_refused_and_the_file_kept(
    project, args, victim, what
):
    # `score --format csv --out healthscore.duckdb` replaced the store with a CSV file:
    # every loaded table, the history and the tokens were gone, with no error
    shutil.copy(project / "healthscore.duckdb", project / "s.duckdb")
    (project / "bad.csv").write_text("account_id,created_at\nX1,not a date\n")
    (project / "healthscore.duckdb.wal").write_bytes(b"")
    before = (project / victim).read_bytes()
    res = run(*args, cwd=project)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert victim in error and what in error and "another file" in error, error
    assert (project / victim).read_bytes() == before
    assert leftovers(project) == []


def test_a_model_command_may_still_write_its_model_in_place(project):
    # calibrate, fit-percentiles and fit-probability rewrite the model they read: --out
    # naming it is what they do without --out, not a clash
    from test_percentiles import MODEL

    (project / "healthscore.yaml").write_text(MODEL)
    res = run("model", "fit-percentiles", *AS_OF, "--out", "healthscore.yaml", cwd=project)
    assert res.exit_code == 0, res.output
    assert "fitted_at" in (project / "healthscore.yaml").read_text()  # written in place


def _backtest(project, out: str, predictions: str):
    """``backtest --challenger`` of the fixture's second half of 2024, its report to
    ``out`` and its predictions to ``predictions``."""
    period = ("--from", "2024-06-01", "--to", "2024-12-01", "--challenger")
    return run("backtest", *period, "--out", out, "--predictions", predictions, cwd=project)


def test_two_outputs_of_one_command_naming_the_same_file_are_refused(project):
    res = _backtest(project, "same.csv", "same.csv")
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert "same.csv" in error and "--predictions" in error and "another file" in error, error
    assert not (project / "same.csv").exists()


def test_two_outputs_to_one_device_are_not_refused(project):
    """/dev/null for both outputs (or /dev/stdout beside /dev/stderr on one terminal) is
    no file to replace: the check that refuses two outputs to one file refused them
    (found by the review of the tenth session)."""
    (project / "p.csv").symlink_to("/dev/null")  # --predictions names its format
    res = _backtest(project, "/dev/null", "p.csv")
    # the command goes on to its work (which needs outcomes this store lacks)
    assert "the outcomes table is empty" in res.output, res.output
    assert (project / "p.csv").is_symlink()


# --- an output naming a folder, or through a link to nowhere ----------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["score", *AS_OF, "-f", "csv", "--out", "made"],
        ["score", *AS_OF, "-f", "json", "--out", "made"],
        ["score", *AS_OF, "-f", "parquet", "--out", "made"],
        ["report", *AS_OF, "--out", "made"],
        ["report", *AS_OF, "--out", "link"],
        ["load", "accounts", "bad.csv", "--rejects", "made"],
    ],
    ids=["csv", "json", "parquet", "report", "link to a folder", "rejects"],
)
def test_an_output_naming_an_existing_folder_says_so_and_what_to_do(project, args):
    # CSV went to pyarrow as if the folder were a device ("Expected file path, but made
    # is a directory"); the others said "Is a directory" with nothing to do
    (project / "bad.csv").write_text("account_id,created_at\nX1,not a date\n")
    (project / "made").mkdir()
    (project / "made" / "kept.txt").write_text("kept")
    (project / "link").symlink_to("made")
    res = run(*args, cwd=project)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert "is a folder" in error and "give the file's name in it" in error, error
    assert sorted(p.name for p in (project / "made").iterdir()) == ["kept.txt"]
    assert leftovers(project) == []


def test_a_dangling_link_into_a_missing_folder_names_that_folder(project):
    # the error named the link's own folder ("the folder . does not exist"), which is there
    (project / "dangling.csv").symlink_to("nowhere/scores.csv")
    res = run("score", *AS_OF, "-f", "csv", "--out", "dangling.csv", cwd=project)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert "nowhere" in error and "does not exist" in error, error
    assert "the folder . " not in error


def test_library_write_to_a_folder_is_an_output_error_naming_it(tmp_path):
    import pyarrow as pa

    from healthscore.errors import OutputError
    from healthscore.views import export

    (tmp_path / "made").mkdir()
    for fmt in ("csv", "parquet"):
        with pytest.raises(OutputError, match="is a folder") as e:
            export.write_rows(pa.table({"a": [1]}), fmt, tmp_path / "made")
        assert "give the file's name in it" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]


# --- the service's files on a full disk ------------------------------------------------------


def test_the_owner_file_on_a_full_disk_is_an_output_error_and_leaves_no_temp_file(
    small_disk,  # noqa: F811 (the fixture of test_outputs)
):
    # a server claiming its store wrote .owner.json.<pid>, and on a full disk left it
    # there and raised a bare OSError (the CLI said "cannot write standard output")
    from healthscore.errors import OutputError
    from healthscore.service import owner

    state = small_disk / "healthscore.duckdb.service"
    state.mkdir()
    fill(small_disk)
    with pytest.raises(OutputError) as e:
        owner.write(state, owner.Owner(1, "http://127.0.0.1:8000", "t" * 40, "s.duckdb"))
    assert str(state / "owner.json") in str(e.value) and "disk is full" in str(e.value)
    assert sorted(p.name for p in state.iterdir()) == []


# --- CSV cells a spreadsheet would run -------------------------------------------------------


def test_formula_signs_behind_leading_spaces_are_neutralized_in_the_rejects_file(project):
    # a rejected row is written as it was read: " =1+1" and " @x" went out as they were,
    # and a spreadsheet that trims leading spaces on import runs them
    bad = project / "bad.csv"
    bad.write_text("account_id,created_at,note\nX1, =1+1, @x\nX2,\u00a0+cmd|x,\u200b-2+3\n")
    rejects = project / "rejects.csv"
    res = run("load", "accounts", bad, "--rejects", rejects, cwd=project)
    assert res.exit_code == 0, res.output
    lines = rejects.read_text().splitlines()
    assert lines[1].endswith('"\' =1+1","\' @x"'), lines[1]
    assert lines[2].endswith('"\'\u00a0+cmd|x","\'\u200b-2+3"'), lines[2]


def test_numbers_with_spaces_around_stay_as_they_are():
    import pyarrow as pa

    from healthscore.core.csvout import csv_bytes

    cells = [" -3", " +1.5 ", "a =b", " ", "\t=1"]
    lines = csv_bytes(pa.table({"v": cells})).decode().splitlines()[1:]
    assert lines == ['" -3"', '" +1.5 "', '"a =b"', '" "', '"\'\t=1"']


# --- bidirectional text that escapes its isolation -------------------------------------------

_OPENERS = {"\u202a": "e", "\u202b": "e", "\u202d": "e", "\u202e": "e"}
_ISOLATES = {"\u2066", "\u2067", "\u2068"}


def _open_after(text: str) -> list[str]:
    """The directional embeddings, overrides and isolates still open at the end of
    ``text`` (Unicode's bidi algorithm, rules X1-X8, levels aside)."""
    stack: list[str] = []
    for c in text:
        if c in _OPENERS:
            stack.append(c)
        elif c in _ISOLATES:
            stack.append(c)
        elif c == "\u202c":  # PDF: ends the last embedding, not past an isolate
            if stack and stack[-1] not in _ISOLATES:
                stack.pop()
        elif c == "\u2069":  # PDI: ends the last isolate and all opened in it; else nothing
            if any(s in _ISOLATES for s in stack):
                while stack.pop() not in _ISOLATES:
                    pass
    return stack


def test_a_stray_pop_isolate_in_a_name_cannot_reverse_the_text_after_it(project, tmp_path):
    # isolate() wrapped the name in FSI ... PDI; a PDI inside the name closed the FSI
    # early, the U+202E after it stayed open, and reversed the rest of the line
    page = report_with_names(project, tmp_path / "report.html", "\u2069\u202eevil")
    from healthscore.views.charts import plotly_js

    page = page.replace(plotly_js(), "")
    texts = re.findall(r">([^<]*\u202e[^<]*)<", page)
    assert texts, "the names are on the page"
    for text in texts:  # each text node closes what it opens, <bdi> or not
        assert _open_after(text) == [], repr(text)
    res = run("score", *AS_OF, cwd=project)
    assert res.exit_code == 0, res.output
    for line in res.output.splitlines():
        assert _open_after(line) == [], repr(line)


def test_isolate_closes_isolates_a_name_opens_and_drops_the_pops_it_has_no_opener_for():
    from healthscore.views.format import isolate

    for name in ("\u2069\u202eevil", "\u2067abc", "a\u2069\u2069\u202ex\u2066", "\u202e\u2069"):
        shown = isolate(name)
        assert _open_after(shown) == [], repr(shown)
        assert shown.replace("\u2068", "").replace("\u2069", "") == name.replace(
            "\u2068", ""
        ).replace("\u2069", "")


# --- temporary files of a load ----------------------------------------------------------------


def test_a_bom_json_lines_copy_on_a_full_temp_disk_is_removed_and_named(
    project,
    small_disk,  # noqa: F811 (the fixture of test_outputs)
    monkeypatch,
):
    # a JSON lines file with a byte order mark is copied without it to the temporary
    # folder; on a full disk the partial copy stayed there, and the error said "cannot
    # write standard output"
    import json
    import tempfile

    data = project / "accounts.jsonl"
    with open(data, "wb") as f:
        f.write(b"\xef\xbb\xbf")
        for i in range(15_000):  # 1.3 MB: more than the 1 MB disk holds
            row = {"account_id": f"B{i}", "name": "x" * 40, "created_at": "2024-01-01"}
            f.write((json.dumps(row) + "\n").encode())
    monkeypatch.setenv("TMPDIR", str(small_disk))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    res = run("load", "accounts", data, cwd=project)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert "standard output" not in error, error
    assert str(small_disk) in error and "disk is full" in error and "TMPDIR" in error, error
    assert list(small_disk.iterdir()) == []


# --- init and demo: the project folder --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["init", "{file}"],
        ["init", "{file}/sub"],
        ["demo", "--accounts", "20", "--months", "6", "--dir", "{file}"],
    ],
    ids=["init into a file", "init under a file", "demo into a file"],
)
def test_a_project_folder_that_is_a_file_is_a_one_line_error(tmp_path, args):
    # FileExistsError / NotADirectoryError came out as tracebacks
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    res = run(*(a.format(file=file) for a in args), cwd=tmp_path)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert str(file) in error and "not a folder" in error, error
    assert file.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_over_a_model_file_that_is_a_folder_says_so(tmp_path):
    # "healthscore.yaml exists; keeping it": the folder was taken for the model file
    (tmp_path / "healthscore.yaml").mkdir()
    res = run("init", tmp_path, cwd=tmp_path)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert "healthscore.yaml" in error and "is a folder" in error, error


# --- the terminal is a reader too -------------------------------------------------------------


def test_escape_sequences_in_names_are_shown_not_run_by_the_terminal(project):
    # an account named "Acme\x1b]0;pwned\x07\x1b[2J" set the terminal's title and cleared
    # the screen of whoever listed the scores: Rich drops BEL but prints ESC as it is
    import csv
    import io

    rows = io.StringIO()
    w = csv.writer(rows)
    w.writerow(["account_id", "name", "csm", "segment", "created_at"])
    w.writerow(["A1", "Acme\x1b]0;pwned\x07\x1b[2J", "\x1b[31mred\x9b1m", "seg", "2023-01-01"])
    (project / "esc.csv").write_text(rows.getvalue())
    assert run("load", "accounts", project / "esc.csv", cwd=project).exit_code == 0
    for args in (["score", *AS_OF], ["explain", "A1", *AS_OF], ["explain", "\x1b[2J", *AS_OF]):
        res = run(*args, cwd=project)
        assert "\x1b" not in res.output and "\x9b" not in res.output, repr(res.output)
    res = run("score", *AS_OF, cwd=project)
    assert "Acme\u241b]0;pwned" in res.output and "\u241b[31mred" in res.output


# --- the service's CSV download ---------------------------------------------------------------


def test_the_feedback_download_neutralizes_formulas_behind_leading_spaces(fixture_db, tmp_path):
    # a CSM's reason "\u200b@SUM(...)" went into the spreadsheet download as it was
    import csv
    import io
    from datetime import datetime

    from healthscore.service.dashboard import feedback
    from service_support import running_service

    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    reasons = [' =HYPERLINK("http://evil","x")', "\u200b@SUM(1+1)", "\n+cmd|' /C calc'!A0"]
    with running_service(db) as r:
        with r.state.store_access() as store:
            for i, reason in enumerate(reasons):
                feedback.add(
                    store,
                    account_id="A1",
                    model_version="v",
                    scorecard="health",
                    score=40.0,
                    verdict="too_high",
                    reason=reason,
                    username="csm1",
                    at=datetime(2025, 6, 1 + i),
                )
        with r.client() as c:
            got = c.get("/v1/feedback", params={"format": "csv"})
    assert got.status_code == 200, got.text
    cells = [row["reason"] for row in csv.DictReader(io.StringIO(got.text))]
    assert len(cells) == 3 and all(c.startswith("'") for c in cells), cells  # stored trimmed


def test_demo_with_a_folder_named_report_html_stops_before_any_work(tmp_path):
    # the demo built and loaded its store, then failed at the end on the report, with a
    # hint about an --out the demo does not have
    (tmp_path / "report.html").mkdir()
    res = run("demo", "--accounts", "20", "--months", "6", "--dir", tmp_path, cwd=tmp_path)
    assert res.exit_code == 1, res.output
    error = one_line_error(res.output)
    assert "report.html" in error and "is a folder" in error and "--out" not in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
