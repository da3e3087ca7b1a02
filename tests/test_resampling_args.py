"""Counts and seeds of the evaluation commands and the demo are checked before any work:
a negative ``--seed`` or ``--bootstrap`` was a NumPy traceback, ``--folds 1`` a misleading
"too few outcomes", and a huge ``--bootstrap`` or ``--accounts`` ran until the memory
was full. Typer's runner over a copy of the fixture store (each refusal comes before the
store is read)."""

from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

from healthscore.cli import app

RANGE = ["--from", "2024-06-01", "--to", "2024-12-01"]


@pytest.fixture(scope="module")
def db(fixture_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("resampling") / "healthscore.duckdb"
    shutil.copy2(fixture_db, path)
    return str(path)


def run(*args: str):
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "HEALTHSCORE_DB": None})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # what a user would see as a traceback
    return r.exit_code, re.sub(r"[│╭╮╰╯─\s]+", " ", r.stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["backtest", *RANGE, "--bootstrap", "-5"], "--bootstrap must be from 0 to 10,000 (got -5"),
        (["backtest", *RANGE, "--bootstrap", "1000000"], "--bootstrap must be from 0 to 10,000"),
        (["backtest", *RANGE, "--seed", "-1"], "--seed must be 0 or more (got -1)"),
        (["calibrate", "--train-until", "2024-09-01", "--seed", "-1"], "--seed must be 0 or more"),
        (["calibrate", "--train-until", "2024-09-01", "--bootstrap", "-1"], "--bootstrap must be"),
        (["calibrate", "--snapshot", "--folds", "1"], "--folds must be from 2 to 100 (got 1)"),
        (["calibrate", "--snapshot", "--folds", "-3"], "--folds must be from 2 to 100 (got -3)"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_an_unusable_count_or_seed_is_a_usage_error_naming_the_flag(db, args, message):
    code, err = run(*args, "--db", db)
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "seed must be 0 or more (got -1)"),
        (["--accounts", "100000000"], "accounts must be from 1 to 100,000 (got 100000000)"),
        (["--months", "100000"], "months must be from 1 to 120 (got 100000)"),
    ],
)
def test_a_demo_out_of_bounds_is_refused_before_it_is_generated(tmp_path, args, message):
    code, err = run("demo", "--dir", str(tmp_path / "demo"), *args)
    assert code == 1, err
    assert message in err, err
    assert not (tmp_path / "demo" / "healthscore.duckdb").exists()
