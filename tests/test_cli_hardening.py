"""The command stops, filters and refuses as it says: Ctrl-C and SIGTERM on a DuckDB
store, ``score --include-unscored`` with the list's filters, and a store the user may
not read.

Real subprocesses on a real demo store (signals sent mid-run, the store read after),
the fixture store through the command, and a real permission check: a process without
root's right to read any file (``setpriv``), or the user's own when not root.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

import healthscore as hs
from healthscore import api
from test_cli import run

SRC = Path(__file__).resolve().parents[1] / "src"
# a year of daily dates ending on the demo's last day: one chunk of 366 dates, scored in
# one query of seconds, then written in one transaction
HISTORY = ["history", "--from", "2024-07-01", "--to", "2025-07-01", "--every", "1d"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # a terminal's colours and cursor moves
WEEKS = dict(start="2025-01-01", end="2025-07-01", every="1w")  # stored before


def _env(**extra) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HEALTHSCORE_DUCKDB_THREADS": "1",
        "COLUMNS": "100",
        **extra,
    }


def _as_from_a_terminal() -> None:
    """In the child: Ctrl-C delivered and handled as a terminal's shell leaves it (a test
    worker's signal mask and dispositions are inherited through exec)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _per_date(db: Path) -> dict:
    """as_of -> (scores rows, score_lines rows) stored in ``db``."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "scores" not in tables:
            return {}
        sql = "SELECT as_of, count(*) FROM {} GROUP BY as_of"
        scores = dict(con.execute(sql.format("scores")).fetchall())
        lines = dict(con.execute(sql.format("score_lines")).fetchall())
    finally:
        con.close()
    return {d: (scores.get(d, 0), lines.get(d, 0)) for d in scores.keys() | lines.keys()}


@pytest.fixture(scope="module")
def books(demo_project, tmp_path_factory):
    """The demo store with six months of weekly history stored (the store a user stops
    a longer history on), and the per-date rows of the year of daily history, complete."""
    d = tmp_path_factory.mktemp("stopped")
    base = d / "base.duckdb"
    shutil.copy2(demo_project.db_path, base)
    model = hs.load_model(demo_project.model_path)
    store = hs.connect(base)
    api.history(store, model, **WEEKS)
    store.close()
    full = d / "full.duckdb"
    shutil.copy2(base, full)
    store = hs.connect(full)
    api.history(store, model, *HISTORY[2:5:2], "1d")
    store.close()
    return base, _per_date(base), _per_date(full)


def _stopped_mid_run(db: Path, model: Path, sig: signal.Signals) -> tuple[int, str]:
    """``healthscore history`` on ``db``, sent ``sig`` a second into its scoring query
    (it draws its progress on a terminal: the step shows when the query starts)."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthscore.cli", *HISTORY, "--db", str(db), "--model", str(model)],
        cwd=db.parent,
        env=_env(TERM="xterm"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=child,
        preexec_fn=_as_from_a_terminal,
    )
    os.close(child)
    seen, scoring = bytearray(), threading.Event()

    def drain() -> None:  # read everything: a full terminal buffer would block the child
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)
            if b"scoring 2024-07-01" in seen:
                scoring.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert scoring.wait(120), "history never started scoring: " + seen.decode(errors="replace")
        time.sleep(1.0)
        assert proc.poll() is None, "history ended before it was stopped"
        proc.send_signal(sig)
        proc.communicate(timeout=120)
    finally:
        proc.kill()
        reader.join(5)
        os.close(main)
    return proc.returncode, ANSI.sub("", seen.decode(errors="replace"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_history_on_duckdb_says_so_and_leaves_no_half_written_date(
    books, demo_project, tmp_path, sig
):
    # DuckDB turned Ctrl-C under its query into "Error: ...: Query interrupted" (exit 1),
    # or a traceback from the insert; SIGTERM ended the process silently (143), with the
    # store's write-ahead log left behind for the next command to apply
    base, weekly, full = books
    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(base, db)
    code, err = _stopped_mid_run(db, demo_project.model_path, sig)
    assert code == 128 + sig, err
    assert f"Error: interrupted ({sig.name}): stopped, work in progress cancelled" in err
    assert "Traceback" not in err and "Query interrupted" not in err
    assert not db.with_name(db.name + ".wal").exists(), "the store was left to recover"
    stored = _per_date(db)
    assert weekly.items() <= stored.items()  # what was stored before is kept
    for day, rows in stored.items():  # a date is stored whole, or not at all
        assert rows == full[day], day
    again = subprocess.run(
        [sys.executable, "-m", "healthscore.cli", *HISTORY, "--model", demo_project.model_path],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert _per_date(db) == full


# --- score --include-unscored: the list's filters apply to the accounts left out ------------


@pytest.fixture
def project(tmp_path, fixture_db):
    """A project folder: the default model and a copy of the fixture store."""
    assert run("init", tmp_path).exit_code == 0
    shutil.copyfile(fixture_db, tmp_path / "healthscore.duckdb")
    return tmp_path


# the fixture's book as of 2025-01-01: scored A1 (enterprise, alice), A2 (smb, bob), A3
# (mid-market, alice); left out A4 (smb, bob: not yet created) and A5 (smb, bob: churned)
AS_OF = ("--as-of", "2025-01-01")


def _listed(cwd: Path, *args: str) -> tuple[list[str], list[str]]:
    """The accounts ``score --include-unscored`` lists: scored, left out."""
    result = run("score", *AS_OF, "--include-unscored", "-f", "json", *args, cwd=cwd)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    return (
        [r["account_id"] for r in rows if "left_out" not in r],
        [r["account_id"] for r in rows if "left_out" in r],
    )


def test_include_unscored_lists_only_the_accounts_left_out_that_the_filters_keep(project):
    assert _listed(project) == (["A2", "A3", "A1"], ["A4", "A5"])
    assert _listed(project, "--segment", "enterprise") == (["A1"], [])
    assert _listed(project, "--segment", " SMB ") == (["A2"], ["A4", "A5"])
    assert _listed(project, "--csm", "alice") == (["A3", "A1"], [])
    assert _listed(project, "--csm", "bob", "--segment", "smb") == (["A2"], ["A4", "A5"])
    # an account left out has no score, so no band
    assert _listed(project, "--band", "red,yellow,green") == (["A2", "A3", "A1"], [])


def test_include_unscored_counts_the_accounts_left_out_in_the_limit(project):
    assert _listed(project, "--limit", "2") == (["A2", "A3"], [])
    assert _listed(project, "--limit", "4") == (["A2", "A3", "A1"], ["A4"])
    assert _listed(project, "--csm", "bob", "--limit", "2") == (["A2"], ["A4"])
    csv = run("score", *AS_OF, "--include-unscored", "--limit", "4", "-f", "csv", cwd=project)
    assert csv.exit_code == 0, csv.output
    assert len(csv.stdout.strip().splitlines()) == 1 + 4
    table = run("score", *AS_OF, "--include-unscored", "--segment", "enterprise", cwd=project)
    assert "0 accounts left out" in table.stdout and "Dune" not in table.stdout


def test_accounts_left_out_keep_their_segment_and_csm_in_every_format(project):
    """A CSV or JSON of ``--include-unscored`` gave the accounts left out an empty segment
    and CSM (found after the ninth session): a CS team sorting the file by CSM lost them."""
    rows = json.loads(run("score", *AS_OF, "--include-unscored", "-f", "json", cwd=project).stdout)
    left = {r["account_id"]: (r["segment"], r["csm"]) for r in rows if "left_out" in r}
    assert left == {"A4": ("smb", "bob"), "A5": ("smb", "bob")}
    csv = run("score", *AS_OF, "--include-unscored", "-f", "csv", cwd=project)
    found = {r["account_id"]: r for r in __import__("csv").DictReader(csv.stdout.splitlines())}
    assert (found["A4"]["segment"], found["A4"]["csm"], found["A4"]["score"]) == ("smb", "bob", "")
    assert found["A5"]["left_out"] and found["A2"]["left_out"] == ""


def test_a_segment_only_accounts_left_out_have_lists_them_and_an_unknown_one_is_named(project):
    # a CSM whose only account is left out
    store = hs.connect(project / "healthscore.duckdb")
    store.con.con.execute("UPDATE accounts SET csm = 'carol' WHERE account_id = 'A5'")
    store.close()
    assert _listed(project, "--csm", "carol") == ([], ["A5"])
    plain = run("score", *AS_OF, "--csm", "carol", cwd=project)
    assert plain.exit_code == 1 and "no scored account has it" in plain.output
    unknown = run("score", *AS_OF, "--include-unscored", "--csm", "dave", cwd=project)
    assert unknown.exit_code == 1
    assert "--csm 'dave': no account, scored or left out, has it" in unknown.output
    assert "alice, bob, carol" in unknown.output


# --- a store the user may not read -----------------------------------------------------------


def _as_a_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI as a user who may not read or write a file its mode does not allow: this
    user when not root, else root without its right to read and write any file."""
    cmd = [sys.executable, "-m", "healthscore.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop root's file access")
        drop = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--bounding-set={drop}", "--inh-caps=-all", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def locked_store(project):
    """The project's store (a copy of the fixture's); the test sets its mode."""
    db = project / "healthscore.duckdb"
    yield db
    db.chmod(0o644)


def _error(r: subprocess.CompletedProcess) -> str:
    return " ".join(r.stderr.split())


def test_a_store_the_user_may_not_read_says_so_and_what_to_do(locked_store):
    locked_store.chmod(0o000)
    for args in (["score", *AS_OF], ["history", "--from", "2024-12-01", "--to", "2025-01-01"]):
        r = _as_a_user(args, locked_store.parent)
        assert r.returncode == 1, r.stdout + r.stderr
        said = _error(r)
        assert f"Error: cannot read the store {locked_store}: permission denied" in said, said
        assert "read" in said.split("hint:")[1] and "--db" in said
        assert "write to a folder" not in said and "Traceback" not in said


def test_a_store_the_user_may_read_but_not_write_names_what_writes_it(locked_store):
    locked_store.chmod(0o444)
    read = _as_a_user(["score", *AS_OF], locked_store.parent)
    assert read.returncode == 0, read.stderr
    r = _as_a_user(["history", "--from", "2024-12-01", "--to", "2025-01-01"], locked_store.parent)
    assert r.returncode == 1, r.stdout + r.stderr
    said = _error(r)
    assert f"cannot open the store {locked_store} for writing: permission denied" in said, said
    assert "it can be read, not written" in said and "write access" in said
    assert "write to a folder you may write to" not in said


def test_a_store_in_a_folder_the_user_may_not_write_cannot_be_made(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    (tmp_path / "a.csv").write_text("account_id,name\nX1,Acme\n")
    folder.chmod(0o555)
    try:
        r = _as_a_user(["load", "accounts", "a.csv", "--db", "shared/new.duckdb"], tmp_path)
    finally:
        folder.chmod(0o755)
    assert r.returncode == 1, r.stdout + r.stderr
    said = _error(r)
    assert f"cannot create the store {folder / 'new.duckdb'}: permission denied" in said, said
    assert "a folder you may write to (--db)" in said


def test_a_store_behind_a_folder_the_user_may_not_enter_says_it_cannot_be_read(tmp_path, project):
    # Path.exists() raised PermissionError there: the command said "cannot write <store>:
    # permission denied; hint: write to a folder..." for `score`, which writes nothing
    locked = tmp_path / "locked"
    locked.mkdir()
    shutil.copy(project / "healthscore.duckdb", locked / "healthscore.duckdb")
    locked.chmod(0o600)  # readable listing, but no entering (no x)
    try:
        r = _as_a_user(["score", *AS_OF, "--db", "locked/healthscore.duckdb"], tmp_path)
    finally:
        locked.chmod(0o755)
    assert r.returncode == 1, r.stdout + r.stderr
    said = _error(r)
    store = locked / "healthscore.duckdb"
    assert f"Error: cannot read the store {store}: permission denied" in said, said
    assert "may not be entered" in said and "(--db)" in said
    assert "write to a folder" not in said and "Traceback" not in said
