"""A command imports what it uses: `healthscore score` repeated on the same model and
store schema runs the plans kept in the cache (core/cache.py, Store.cached_plan, engine
snapshot) without importing Ibis, with the same rows; any change to the model or to the
store's schema compiles again. Each run is a fresh process, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

AS_OF = "2025-01-01"
PROBE = """
import json, sys
from healthscore.cli import main
sys.argv = ["healthscore", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
seen = {m: m in sys.modules for m in ("ibis", "sqlglot", "pandas", "pyarrow.compute", "rich.table")}
print("PROBE " + json.dumps({"code": code, **seen}), file=sys.stderr)
"""


def cli(project: Path, cache: Path | str, *args) -> dict:
    """Run `healthscore *args` in a fresh process in ``project`` with the cache
    ``cache``; its exit code, output and whether it imported Ibis, sqlglot, pandas,
    pyarrow.compute and Rich's tables."""
    env = {**os.environ, "HEALTHSCORE_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([str(a) for a in args])],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = next(x for x in out.stderr.splitlines() if x.startswith("PROBE "))
    found = json.loads(line.removeprefix("PROBE "))
    found["output"] = out.stdout + out.stderr
    assert found["code"] == 0, found["output"]
    return found


def score(project: Path, cache: Path | str, out: str) -> tuple[dict, pa.Table]:
    run = cli(project, cache, "score", "--as-of", AS_OF, "--format", "parquet", "--out", out)
    return run, pq.read_table(project / out)


def make_project(folder: Path, fixture_db: Path) -> Path:
    """A project folder: the default model as healthscore.yaml, a copy of the fixture store."""
    from healthscore.model import default_model_text

    (folder / "healthscore.yaml").write_text(default_model_text())
    shutil.copy(fixture_db, folder / "healthscore.duckdb")
    return folder


@pytest.fixture
def project(tmp_path, fixture_db):
    return make_project(tmp_path, fixture_db)


@pytest.fixture(scope="module")
def first(tmp_path_factory, fixture_db) -> tuple[dict, pa.Table, Path]:
    """The first score of the default model on the fixture store, in a fresh process
    with an empty cache: its run, its rows and the cache it filled (read only: a test
    copies it with :func:`kept`). A cache entry's key names the model, the columns of the
    store and the code, never the store's path, so the copy serves every test's own
    project as the cache of its own first run would: each test starting from a warm
    cache saves a compiling run (about 4 s of CPU) of its own."""
    folder = tmp_path_factory.mktemp("first")
    cache = folder / "cache"
    run, rows = score(make_project(folder, fixture_db), cache, "first.parquet")
    return run, rows, cache


def kept(first, tmp_path: Path) -> Path:
    """A private copy of the cache the first score filled."""
    cache = tmp_path / "cache"
    shutil.copytree(first[2], cache)
    return cache


def test_a_repeat_score_runs_the_kept_plan_without_ibis_and_gives_the_same_rows(
    project, tmp_path, first
):
    run, rows, _ = first
    assert run["ibis"]  # nothing kept yet: built and compiled
    again, rows_again = score(project, kept(first, tmp_path), "again.parquet")
    assert not again["ibis"], "the kept plan was not used"
    _, uncached = score(project, "off", "uncached.parquet")
    assert rows.num_rows > 0
    assert rows_again.equals(rows) and uncached.equals(rows)
    # the note and warnings a user reads are the same too
    assert again["output"].splitlines()[0] == run["output"].splitlines()[0]
    assert "scored" in again["output"]


def test_a_repeat_score_imports_no_pandas_whatever_it_writes(project, tmp_path, first):
    # pyarrow imports pandas (about half a second) on its first conversion of Python
    # values to Arrow; the account list, the category warnings and the writers do without
    cache = kept(first, tmp_path)  # the first run compiled and kept
    for args in (
        ["--format", "parquet", "--out", "s.parquet"],
        ["--format", "csv", "--out", "s.csv"],
        ["--format", "csv"],
        ["--format", "json", "--out", "s.json"],
        ["--sort", "name", "--band", "red,yellow,green"],
        ["--sort", "arr", "--limit", "2", "--format", "csv"],
    ):
        run = cli(project, cache, "score", "--as-of", AS_OF, *args)
        assert not run["pandas"], f"pandas imported by score {' '.join(args)}"
    assert pq.read_table(project / "s.parquet").num_rows > 0
    assert (project / "s.csv").read_text().startswith('"account_id"')


def test_a_repeat_score_lists_the_accounts_in_order_without_pyarrow_compute(project, tmp_path):
    # the facts (name, ARR in force, renewal) are joined and the list ordered by the kept
    # query itself: Arrow's take, sort_indices and cast import pyarrow.compute (about
    # 30 ms of a repeat). Two accounts with no data tie on every value and have no ARR
    # or renewal: the order puts them last where it sorts by those, and by id among
    # themselves (loaded in the other order). (Without the default model's rules: DuckDB
    # types their contributions as decimals, which the store casts with Arrow.)
    from healthscore.store import connect

    model = project / "healthscore.yaml"
    text = model.read_text()
    head, rules = text.split("\nrules:\n")
    model.write_text(head + "\n# More scores" + rules.split("\n# More scores")[1])
    store = connect(project / "healthscore.duckdb")
    for account in ("Z2", "Z1"):
        row = {"account_id": [account], "created_at": [datetime(2024, 1, 1)]}
        store.load("accounts", pa.table(row), columns=list(row))
    store.close()
    cache = tmp_path / "cache"

    def expected(rows: list[dict], column: str, descending: bool) -> list[str]:
        have = sorted((r for r in rows if r[column] is not None), key=lambda r: r["account_id"])
        have.sort(key=lambda r: r[column], reverse=descending)  # stable: ties by id
        rest = sorted((r for r in rows if r[column] is None), key=lambda r: r["account_id"])
        return [r["account_id"] for r in have + rest]

    for sort, column, descending in (
        ("score", "score", False),
        ("arr", "arr_in_force", True),
        ("renewal", "renewal_date", False),
    ):
        out = f"{sort}.parquet"
        args = ("score", "--as-of", AS_OF, "--sort", sort, "--format", "parquet", "--out", out)
        for _ in ("first", "repeat"):
            run = cli(project, cache, *args)
            rows = pq.read_table(project / out).to_pylist()
            assert len(rows) == 5 and {"Z1", "Z2"} <= {r["account_id"] for r in rows}
            assert [r["account_id"] for r in rows] == expected(rows, column, descending), sort
        assert not run["pyarrow.compute"], f"pyarrow.compute imported by a repeat --sort {sort}"
        assert not run["ibis"]
        assert not run["rich.table"]  # a file written: no table drawn
    ids = [r["account_id"] for r in rows]
    assert ids.index("Z1") + 1 == ids.index("Z2")  # tied, by id
    for args in (["--limit", "2", "--format", "parquet", "--out", "two.parquet"], []):
        run = cli(project, cache, "score", "--as-of", AS_OF, *args)
        assert not run["pyarrow.compute"], f"pyarrow.compute imported by score {' '.join(args)}"
    assert pq.read_table(project / "two.parquet").num_rows == 2
    assert "Z1" in run["output"]  # the table


def test_a_changed_model_is_never_scored_with_the_plan_of_the_old_one(project, tmp_path, first):
    _, before, _ = first
    cache = kept(first, tmp_path)
    model = project / "healthscore.yaml"
    text = model.read_text()
    assert "bands: {green: 80, yellow: 50}" in text
    model.write_text(text.replace("bands: {green: 80, yellow: 50}", "bands: {green: 5, yellow: 2}"))
    changed, after = score(project, cache, "after.parquet")
    assert changed["ibis"], "a changed model must be compiled again"
    _, uncached = score(project, "off", "uncached.parquet")
    assert after.equals(uncached)
    assert after["band"].to_pylist() != before["band"].to_pylist()
    assert set(after["band"].to_pylist()) <= {"green", None}
    # and the changed model, kept in its turn, is served from the cache the next time
    third, again = score(project, cache, "again.parquet")
    assert not third["ibis"] and again.equals(after)


def test_a_changed_store_schema_is_never_scored_with_the_plan_kept_before(project, tmp_path, first):
    from healthscore.store import connect

    cache = kept(first, tmp_path)  # the plan kept before
    store = connect(project / "healthscore.duckdb")
    row = {"account_id": ["Z9"], "created_at": [datetime(2024, 1, 1)], "region": ["EU"]}
    store.load("accounts", pa.table(row), columns=list(row))  # a new column, region
    store.close()
    changed, after = score(project, cache, "after.parquet")
    assert changed["ibis"], "a store whose columns changed must be compiled for again"
    _, uncached = score(project, "off", "uncached.parquet")
    assert after.equals(uncached)
    assert "Z9" in after["account_id"].to_pylist()


def test_a_model_with_problems_is_reported_every_time_and_a_clean_one_checked_once(
    project, tmp_path, first
):
    cache = kept(first, tmp_path)  # the clean model scored (and checked) once
    model = project / "healthscore.yaml"
    text = model.read_text()
    broken = text.replace("bands: {green: 80, yellow: 50}", "bands: {green: 50, yellow: 80}")
    assert broken != text
    model.write_text(broken)
    env = {**os.environ, "HEALTHSCORE_CACHE_DIR": str(cache)}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "healthscore.cli", "score", "--as-of", AS_OF],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 1
        assert "healthscore.yaml" in out.stderr and "green" in out.stderr
    checked = [p for p in cache.iterdir() if p.name.startswith("model-checked-")]
    assert len(checked) == 1  # the clean model only


def test_a_damaged_cache_entry_is_compiled_again(project, tmp_path, first):
    _, rows, _ = first
    cache = kept(first, tmp_path)
    for entry in cache.glob("plan-*.json"):
        entry.write_text('{"plan": {"parts": 3}}')
    again, rows_again = score(project, cache, "again.parquet")
    assert again["ibis"] and rows_again.equals(rows)


def test_help_imports_neither_the_data_libraries_nor_pydantic_nor_a_progress_bar(tmp_path):
    # `healthscore --help` lists the commands: Typer and Rich's help formatting, nothing
    # that reads data, validates a model or draws a progress bar (each import is start-up
    # time of every `--help`). (A group's help, `healthscore model --help`, imports
    # pydantic: Typer 0.29 converts the app's own `--help` flag through a pydantic
    # TypeAdapter once a group is named.)
    heavy = ("pydantic", "pyarrow", "numpy", "duckdb", "ibis", "pandas", "rich.progress")
    probe = (
        "import json, sys\n"
        "from healthscore.cli import main\n"
        "sys.argv = ['healthscore', *json.loads(sys.argv[1])]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"seen = [m for m in {heavy!r} if m in sys.modules]\n"
        "print('PROBE ' + json.dumps(seen), file=sys.stderr)\n"
    )
    for args in (["--help"], []):
        out = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(args)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = next(x for x in out.stderr.splitlines() if x.startswith("PROBE "))
        assert json.loads(line.removeprefix("PROBE ")) == [], (args, line)
        assert "Score every account as of a date" in out.stdout  # the listing


def test_open_connections_counts_the_stores_this_process_has_not_closed(tmp_path):
    import gc

    from healthscore import api

    # stores other tests left to the collector (in this process) go first, and none is
    # collected while counting
    gc.collect()
    gc.disable()
    try:
        before = api.open_connections()
        store = api.connect(tmp_path / "a.duckdb")
        reader = api.connect(tmp_path / "a.duckdb", read_only=True)
        assert api.open_connections() == before + 2
        reader.close()
        store.close()
        assert api.open_connections() == before
    finally:
        gc.enable()


def test_a_store_left_open_in_a_cycle_is_still_closed_whole_when_the_command_exits(tmp_path):
    # A finished command's objects are left out of the interpreter's collections at exit
    # (cli.main): the process exits sooner. A store connection still open then (here one
    # nothing references but a reference cycle) is closed by such a collection, which
    # writes DuckDB's last changes into the file: so then the exit stays as it was, and
    # the file alone (no write-ahead log beside it) holds what was written.
    db = tmp_path / "s.duckdb"
    probe = (
        "import gc, sys\n"
        "from healthscore import api\n"
        "from healthscore.cli import main\n"
        "gc.disable()  # no collection before the exit's finds the cycle\n"
        "store = api.connect(sys.argv[1])\n"
        "store.set_meta('probe', 'written')\n"
        "cycle = [store]\n"
        "cycle.append(cycle)\n"
        "del store, cycle\n"
        "sys.argv = ['healthscore', '--help']\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(db)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert not Path(f"{db}.wal").exists()
    shutil.copy(db, tmp_path / "copy.duckdb")
    from healthscore import api

    copy = api.connect(tmp_path / "copy.duckdb", create=False, read_only=True)
    try:
        assert copy.meta()["probe"] == "written"
    finally:
        copy.close()
