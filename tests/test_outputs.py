"""Files healthscore writes are never damaged, and nothing it exports attacks the reader.

Real files, a real DuckDB store, a real full disk (a small tmpfs, where this machine lets
us mount one; else a file size limit on a subprocess), a real read-only disk (a
read-only bind mount), and the CLI end to end.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import healthscore as hs
from test_cli import run

SRC = Path(__file__).resolve().parents[1] / "src"
AS_OF = ["--as-of", "2025-01-01"]
HOSTILE = {  # account: name, CSM, segment, created_at (as in the fixture)
    "A1": ('=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "enterprise", "2023-01-01"),
    "A2": ("@SUM(1+1)*cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "smb", "2024-06-01"),
    "A3": ("\tTab name", "\r=cr csm", "=1+2 segment", "2024-12-15"),
}
RISKY = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def run_limited(args, cwd: Path, limit: int) -> subprocess.CompletedProcess:
    """The CLI in a subprocess that may not write any file beyond ``limit`` bytes: a write
    past it fails with EFBIG (SIGXFSZ ignored), as on a disk that is full."""

    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "healthscore.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit_files,
        timeout=120,
    )


def _mount(*args: str) -> str | None:
    """Run mount; the reason it failed, or None."""
    if shutil.which("mount") is None:
        return "no mount command"
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB disk (tmpfs); skipped where this process may not mount one."""
    d = tmp_path / "disk"
    d.mkdir()
    why = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d))
    if why:
        pytest.skip(f"cannot mount a small tmpfs here ({why}); needs root or CAP_SYS_ADMIN")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (65536, 1):
            try:
                while f.write(b"\0" * chunk):
                    pass
            except OSError as e:
                assert e.errno == errno.ENOSPC


@pytest.fixture
def project(tmp_path, fixture_db):
    """A project folder with the default model and a copy of the fixture store."""
    assert run("init", tmp_path).exit_code == 0
    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    return tmp_path


@pytest.fixture
def hostile(project):
    """The fixture project whose accounts have names and CSMs a spreadsheet would run."""
    rows = io.StringIO()
    w = csv.writer(rows)
    w.writerow(["account_id", "name", "csm", "segment", "created_at"])
    for account, row in HOSTILE.items():
        w.writerow([account, *row])
    (project / "hostile.csv").write_text(rows.getvalue())
    res = run("load", "accounts", project / "hostile.csv", cwd=project)
    assert res.exit_code == 0, res.output
    return project


def one_line_error(output: str) -> str:
    assert "Traceback" not in output
    # warnings and notes about the data (empty tables, accounts left out) may come first;
    # the error is one line, and the last
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], output
    return errors[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- a full disk never damages a file ------------------------------------------------------


def test_report_over_an_old_report_on_a_full_disk_keeps_the_old_one(project, small_disk):
    old = small_disk / "report.html"
    old.write_bytes(b"<html>the good report of last week</html>\n")
    res = run("report", "--out", old, "--as-of", "2025-01-01", cwd=project)
    assert res.exit_code == 1
    line = one_line_error(res.output)
    assert f"cannot write {old}: the disk is full" in line and "--out" in line
    assert old.read_bytes() == b"<html>the good report of last week</html>\n"
    assert leftovers(small_disk) == []
    new = small_disk / "new.html"  # no earlier file: none is left, not an empty one
    res = run("report", "--out", new, "--as-of", "2025-01-01", cwd=project)
    assert res.exit_code == 1 and not new.exists() and leftovers(small_disk) == []


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "table"])
def test_score_out_on_a_full_disk_keeps_the_old_file(project, small_disk, fmt):
    out = small_disk / f"scores.{fmt}"
    assert run("score", *AS_OF, "-f", fmt, "--out", out, cwd=project).exit_code == 0
    before = out.read_bytes()
    assert before
    fill(small_disk)
    res = run("score", *AS_OF, "-f", fmt, "--out", out, cwd=project)
    assert res.exit_code == 1
    assert f"cannot write {out}: the disk is full" in one_line_error(res.output)
    assert out.read_bytes() == before
    assert leftovers(small_disk) == []


def test_a_model_file_rewritten_on_a_full_disk_is_kept(project, small_disk):
    from healthscore.core.modelfile import save_model_text
    from healthscore.errors import OutputError
    from healthscore.model import load_model_text

    model = small_disk / "model.yaml"
    text = (project / "healthscore.yaml").read_text()
    model.write_text(text)
    fill(small_disk)
    bigger = text + "\n".join(f"# fitted note {i}" for i in range(2000)) + "\n"
    with pytest.raises(OutputError, match="the disk is full"):
        save_model_text(bigger, model, load_model_text)
    assert model.read_text() == text and leftovers(small_disk) == []


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_a_full_device_written_in_place_is_an_error_and_stays_a_device(project, tmp_path, fmt):
    # a device is written in place (it cannot be replaced); pyarrow, named the file,
    # removed it when the write failed: `score -f parquet --out /dev/full` deleted /dev/full
    device = tmp_path / "full"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # as /dev/full
    except OSError as e:
        pytest.skip(f"cannot make a device node here ({e})")
    res = run("score", *AS_OF, "-f", fmt, "--out", device, cwd=project)
    assert res.exit_code == 1
    line = one_line_error(res.output)
    assert f"cannot write {device}: the disk is full" in line
    assert stat.S_ISCHR(device.stat().st_mode)


def test_load_into_a_store_on_a_full_disk_is_a_store_error(project, small_disk, tmp_path):
    db = small_disk / "s.duckdb"
    rows = "\n".join(f"X{i},2024-01-05,{'company name ' * 8}{i}" for i in range(20000))
    big = tmp_path / "big.csv"
    big.write_text("account_id,created_at,name\n" + rows + "\n")
    res = run("load", "accounts", big, "--db", db)
    assert res.exit_code == 1
    line = one_line_error(res.output)
    assert f"cannot write the store {db}: the disk is full" in line and "--db" in line


def test_score_out_past_a_file_size_limit_keeps_the_old_file(project):
    out = project / "scores.csv"
    assert run("score", *AS_OF, "-f", "csv", "--out", out, cwd=project).exit_code == 0
    before = out.read_bytes()
    res = run_limited(["score", *AS_OF, "-f", "csv", "--out", out], project, limit=200)
    assert res.returncode == 1, res.stderr
    line = one_line_error(res.stderr)
    assert f"cannot write {out}: the file would exceed the file size limit" in line
    assert out.read_bytes() == before and leftovers(project) == []


def test_load_past_a_file_size_limit_is_a_store_error_not_a_traceback(tmp_path):
    rows = "\n".join(f"X{i},2024-01-05,{'company name ' * 8}{i}" for i in range(20000))
    (tmp_path / "big.csv").write_text("account_id,created_at,name\n" + rows + "\n")
    assert run("init", tmp_path).exit_code == 0
    res = run_limited(["load", "accounts", "big.csv"], tmp_path, limit=300_000)
    assert res.returncode == 1, res.stdout + res.stderr
    line = one_line_error(res.stderr)
    store = tmp_path / "healthscore.duckdb"
    assert f"cannot write the store {store}: the file would exceed the file size limit" in line


# --- a store the user may not write ----------------------------------------------------------


@pytest.fixture
def read_only_project(project, tmp_path):
    """The project's folder seen through a read-only bind mount; skipped where this
    process may not mount (root ignores file modes, so chmod would prove nothing)."""
    run("history", "--from", "2024-11-01", "--to", "2025-01-01", cwd=project)
    view = tmp_path / "ro"
    view.mkdir()
    why = _mount("--bind", str(project), str(view))
    if why:
        pytest.skip(f"cannot bind-mount here ({why}); needs root or CAP_SYS_ADMIN")
    why = _mount("-o", "remount,ro,bind", str(view))
    if why:
        subprocess.run(["umount", "-l", str(view)], check=False)
        pytest.skip(f"cannot make a read-only bind mount here ({why})")
    yield view
    subprocess.run(["umount", "-l", str(view)], check=False)


def test_commands_that_only_read_work_on_a_read_only_store(read_only_project, tmp_path):
    with pytest.raises(OSError):  # the disk really is read-only
        (read_only_project / "probe").write_text("x")
    ro = read_only_project
    score = run("score", *AS_OF, "-f", "json", cwd=ro)
    assert score.exit_code == 0, score.output
    assert "A1" in score.output
    explain = run("explain", "A1", *AS_OF, cwd=ro)
    assert explain.exit_code == 0 and "A1 as of 2025-01-01" in explain.output
    trends = run("trends", *AS_OF, "-f", "json", cwd=ro)
    assert trends.exit_code == 0, trends.output
    report = tmp_path / "elsewhere.html"
    res = run("report", "--out", report, *AS_OF, cwd=ro)
    assert res.exit_code == 0, res.output
    assert report.stat().st_size > 100_000
    flags = run("flag", "list", cwd=ro)
    assert flags.exit_code == 0, flags.output
    # a command that writes says where and what to do, in one line
    loaded = run("history", "--from", "2024-12-01", "--to", "2025-01-01", cwd=ro)
    assert loaded.exit_code == 1
    assert "read-only" in one_line_error(loaded.output)
    out = ro / "scores.csv"
    res = run("score", *AS_OF, "-f", "csv", "--out", out, cwd=ro)
    assert res.exit_code == 1
    assert f"cannot write {out}: the disk is read-only" in one_line_error(res.output)


def test_model_suggest_and_fit_percentiles_read_a_read_only_store(
    read_only_project, tmp_path, monkeypatch
):
    # both only read the store (they write a model file elsewhere): they opened it for
    # writing and stopped with "cannot open store ...: the disk is read-only"
    monkeypatch.setenv("COLUMNS", "80")  # as CI's terminal: a long path wrapped the line
    ro = read_only_project
    store = (ro / "healthscore.duckdb").read_bytes()
    suggested = tmp_path / "suggested.yaml"
    res = run("model", "suggest", "--until", "2025-01-01", "--out", suggested, cwd=ro)
    assert res.exit_code == 0, res.output
    assert "written to" in res.output and hs.load_model(suggested).spec.pillars
    model = tmp_path / "percentiles.yaml"
    model.write_text(PERCENTILE_MODEL)
    res = run("model", "fit-percentiles", *AS_OF, "--model", model, cwd=ro)
    assert res.exit_code == 0, res.output
    assert "fitted_at" in model.read_text()
    assert (ro / "healthscore.duckdb").read_bytes() == store


PERCENTILE_MODEL = """\
metrics:
  users_30d: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}
pillars:
  usage:
    weight: 1
    metrics:
      users_30d:
        weight: 1
        percentile: {better: higher, by_segment: false, quantiles: [0, 0.5, 1]}
"""


def test_a_read_only_store_without_history_tables_reads_as_no_history(tmp_path):
    from healthscore.store import connect

    db = tmp_path / "old.duckdb"
    connect(db).close()  # canonical tables only: history never stored
    s = connect(db, create=False, read_only=True)
    try:
        assert "scores" not in s.list_tables()
        from healthscore.store.history import ensure_tables

        ensure_tables(s)  # tables of this session only: the file is not written
        assert s.count("scores") == 0
    finally:
        s.close()
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    assert "scores" not in names


# --- CSV a spreadsheet cannot run -----------------------------------------------------------


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _runnable(cells: list[list[str]]) -> list[str]:
    return [c for row in cells for c in row if c.startswith(RISKY) and not NUMBER.match(c)]


def test_score_csv_neutralizes_text_cells_and_keeps_numbers(hostile):
    raw = run("score", *AS_OF, "-f", "csv", "--raw", cwd=hostile)
    assert raw.exit_code == 0, raw.output
    assert len(_runnable(_cells(raw.stdout))) == 6  # the hostile names, CSMs and segment, raw
    res = run("score", *AS_OF, "-f", "csv", cwd=hostile)
    assert res.exit_code == 0, res.output
    cells = _cells(res.stdout)
    assert _runnable(cells) == []
    header, rows = cells[0], cells[1:]
    by_id = {r[header.index("account_id")]: dict(zip(header, r, strict=True)) for r in rows}
    assert by_id["A1"]["csm"] == "'+cmd|' /C calc'!A0"
    assert by_id["A2"]["csm"] == "'-2+3+cmd|' /C calc'!A0"
    assert by_id["A3"]["csm"] == "'=cr csm"  # the loader trims the leading CR
    assert by_id["A3"]["segment"] == "'=1+2 segment"
    assert '\'=HYPERLINK("http://x","y")' in by_id["A1"].values()  # the name
    # numbers stay numbers: the scores read back as the JSON's
    import json

    scores = {
        r["account_id"]: r["score"]
        for r in json.loads(run("score", *AS_OF, "-f", "json", cwd=hostile).stdout)
    }
    assert {k: float(v["score"]) for k, v in by_id.items()} == pytest.approx(scores)
    out = hostile / "scores.csv"
    assert run("score", *AS_OF, "-f", "csv", "--out", out, cwd=hostile).exit_code == 0
    assert out.read_bytes().decode() == res.stdout


def test_negative_numbers_in_numeric_columns_stay_numbers():
    import pyarrow as pa

    from healthscore.core.csvout import csv_bytes

    t = pa.table({"delta": [-12.5, 3.0], "note": ["-12.5", "-x"]})
    assert _cells(csv_bytes(t).decode()) == [["delta", "note"], ["-12.5", "-12.5"], ["3", "'-x"]]


def test_rejects_file_neutralizes_values_and_header_unless_raw(project):
    bad = project / "bad.csv"
    bad.write_text('account_id,created_at,=evil()\nX1,2024-01-05,ok\nX2,=1+1,"@x"\n')
    rejects = project / "rejects.csv"
    res = run("load", "accounts", bad, "--rejects", rejects, cwd=project)
    assert res.exit_code == 0, res.output
    cells = _cells(rejects.read_bytes().decode())
    assert _runnable(cells) == []
    assert "'=evil()" in cells[0] and "'=1+1" in cells[1] and "'@x" in cells[1]
    res = run("load", "accounts", bad, "--rejects", rejects, "--raw", cwd=project)
    assert res.exit_code == 0, res.output
    assert "=1+1" in _cells(rejects.read_bytes().decode())[1]
    res = run("load", "accounts", bad, "--raw", cwd=project)
    assert res.exit_code == 2 and "--rejects" in res.output


def test_a_failed_load_leaves_the_old_rejects_file_as_it_was(project):
    # the rejects were written before the rows went in: a load the store refused left a
    # new rejects file (of rows nothing was loaded beside) over the old one
    ok = project / "ok.csv"
    ok.write_text("account_id,created_at,region\nX1,2024-01-05,eu\n")
    assert run("load", "accounts", ok, cwd=project).exit_code == 0
    clash = project / "clash.csv"  # Region differs from the stored region only by case
    clash.write_text("account_id,created_at,Region\nX2,2024-01-05,us\n,2024-01-05,us\n")
    rejects = project / "rejects.csv"
    rejects.write_text("the rejects of an earlier load\n")
    res = run("load", "accounts", clash, "--rejects", rejects, cwd=project)
    assert res.exit_code == 1
    assert "differs from the stored column 'region' only by case" in one_line_error(res.output)
    assert rejects.read_text() == "the rejects of an earlier load\n"
    assert leftovers(project) == []
    # the same file loaded once the clash is mapped away writes its rejects
    res = run(
        "load", "accounts", clash, "--map", "Region=region", "--rejects", rejects, cwd=project
    )
    assert res.exit_code == 0, res.output
    assert _cells(rejects.read_text())[1][:2] == ["3", "account_id: required value is empty"]


@pytest.mark.parametrize(
    "args",
    [
        ["score", "--format", "csv", "--out", "{name}/"],
        ["report", "--out", "{name}/"],
        ["model", "fit-percentiles", "--out", "{name}/"],
        ["load", "accounts", "bad.csv", "--rejects", "{name}/"],
        ["score", "--format", "csv", "--out", "."],
    ],
    ids=["score", "report", "fit-percentiles", "load rejects", "dot"],
)
def test_a_file_option_ending_in_a_separator_is_a_folder_not_a_file(project, args):
    """`--out scores/` wrote a file named `scores` (the separator dropped); now a usage
    error, before any work, and nothing is written."""
    (project / "bad.csv").write_text("account_id,created_at\nX1,not a date\n")
    before = sorted(p.name for p in project.iterdir())
    res = run(*(a.format(name="made") for a in args), cwd=project)
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.replace("│", " ").split())
    assert "names a folder; give the file's name in it" in said, res.output
    assert sorted(p.name for p in project.iterdir()) == before


def test_raw_applies_to_csv_only(project):
    res = run("score", *AS_OF, "--raw", cwd=project)
    assert res.exit_code == 2 and "--format csv" in res.output


# --- HTML that names cannot spoof -------------------------------------------------------------


def report_with_names(project: Path, out: Path, evil: str) -> str:
    """The portfolio report (written to ``out``) of a book whose account A1 has ``evil``
    in its name, CSM and segment."""
    (project / "bidi.csv").write_text(
        f"account_id,name,csm,segment,created_at\nA1,{evil} corp,{evil} csm,{evil} seg,2023-01-01\n"
    )
    assert run("load", "accounts", project / "bidi.csv", cwd=project).exit_code == 0
    res = run("report", "--out", out, *AS_OF, cwd=project)
    assert res.exit_code == 0, res.output
    return out.read_text()


def test_bidi_override_in_names_is_isolated_in_the_report(project, tmp_path):
    evil = "\u202eevil\u202c"
    page = report_with_names(project, tmp_path / "report.html", evil)
    assert "\u202eevil\u202c csm" in page  # the CSM is on the page ...
    for m in re.finditer("\u202e", page):  # ... and every override is isolated
        before = page[: m.start()]
        in_bdi = before.rfind("<bdi>") > before.rfind("</bdi>")
        in_isolate = before.rfind("\u2068") > before.rfind("\u2069")
        assert in_bdi or in_isolate, page[m.start() - 80 : m.start() + 20]
    assert "<td><bdi>\u2068\u202eevil\u202c csm\u2069</bdi></td>" in page
    from healthscore.views.charts import plotly_js

    charts = page.replace(plotly_js(), "")  # plotly.js itself spells U+202E in its code
    assert "\\u202e" not in charts.lower()  # chart labels carry no override ...
    assert '"evil seg"' in charts  # ... the segment's label is there without it


def test_large_string_columns_are_neutralized_too():
    """pandas hands Arrow large_string columns (a frame written as CSV); they used to fail."""
    import pyarrow as pa

    from healthscore.core.csvout import csv_bytes

    table = pa.table({"name": pa.array(["=cmd()", "plain", None], pa.large_string())})
    assert csv_bytes(table).decode().splitlines() == ['"name"', '"\'=cmd()"', '"plain"', ""]


def test_full_width_formula_signs_are_neutralized_too():
    """A spreadsheet in an East Asian locale may take the full-width signs for the ASCII
    ones: a name starting with one is written as text like an ASCII one."""
    import pyarrow as pa

    from healthscore.core.csvout import csv_bytes

    names = ["\uff1dHYPERLINK(1)", "\uff0bcmd", "\uff0d1", "\uff20SUM(A1)", "a\uff1db"]
    lines = csv_bytes(pa.table({"name": names})).decode().splitlines()[1:]
    assert lines == [f'"\'{n}"' for n in names[:4]] + [f'"{names[4]}"']


def test_listing_tokens_users_and_parked_messages_and_validate_read_a_read_only_store(
    read_only_project,
):
    ro = read_only_project
    for command in (
        ["token", "list"],
        ["auth", "user", "list"],
        ["ingest", "rejects"],
        ["ingest", "pending"],
        ["validate"],  # with the store beside it: warns about it, as of today
    ):
        res = run(*command, cwd=ro)
        assert res.exit_code == 0, (command, res.output)
        assert "read-only" not in res.output, (command, res.output)


def test_bidi_override_in_joined_lists_is_isolated_item_by_item():
    # `join` returns escaped markup, which the templates pass as their own: the dashboard
    # joins a score's signals, the model's flag kinds and rule names with it
    from healthscore.service.dashboard import environment

    evil = "\u202eevil"
    page = environment().from_string("{{ xs|join(', ') }} | {{ rs|join(', ', 'rule') }}")
    text = page.render(xs=[evil, "<ok>"], rs=[{"rule": evil}])
    assert text == "\u2068\u202eevil\u2069, &lt;ok&gt; | \u2068\u202eevil\u2069"


def test_commands_that_only_read_apply_the_log_a_killed_writer_left(project):
    # a server or load killed mid-session leaves writes in healthscore.duckdb.wal; a
    # read-only open cannot replay them ("IO Error: Failure while replaying WAL file")
    db = project / "healthscore.duckdb"
    killed = (
        "import os, duckdb\n"
        f"c = duckdb.connect({str(db)!r})\n"
        "c.execute('CREATE TABLE left_by_a_killed_writer (x INTEGER)')\n"
        "c.execute('INSERT INTO left_by_a_killed_writer VALUES (1)')\n"
        "c.execute('CREATE INDEX killed_idx ON left_by_a_killed_writer (x)')\n"
        "os._exit(0)  # no close, no checkpoint: as after SIGKILL\n"
    )
    subprocess.run([sys.executable, "-c", killed], check=True)
    assert (project / "healthscore.duckdb.wal").exists()
    for command in (["score", *AS_OF, "-f", "json"], ["auth", "user", "list"]):
        res = run(*command, cwd=project)
        assert res.exit_code == 0, (command, res.output)
