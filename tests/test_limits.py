"""Untrusted files cannot hang or fool the tool: the bounds of core/limits.py, end to end.

A YAML alias bomb, a file of megabytes, an absurd number of metrics, dates in year 1 or
9999 and durations of millennia each fail fast with an error naming the file (line,
key) or the option. The bombs run in a subprocess with a timeout and a memory limit, so
a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import healthscore as hs
from healthscore.core import limits
from healthscore.model import load_model_text

#: the issue's 342-byte "billion laughs": 9 aliases per level, 9 levels (~387 million values)
BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{n}: &{n} [{','.join(['*' + p] * 9)}]"
            for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "metrics: {x: *i}",
    ]
)

MODEL_TAIL = """\
pillars:
  usage: {weight: 1, metrics: {users: {weight: 1, bad: 0, good: 10}}}
"""
USERS = "  users: {from: usage_events, aggregate: count_distinct(user_id), window: 30d}\n"


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """The real command in a subprocess: 60 s at most and 3 GB of address space."""

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    return subprocess.run(
        [sys.executable, "-m", "healthscore.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=bounded,
        env={**os.environ, "COLUMNS": "200"},
    )


# --- YAML: aliases, size, depth ------------------------------------------------------------


def test_validate_refuses_a_yaml_alias_bomb_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB.encode()) < 400
    out = _cli("validate", path, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"Error: {path}:" in out.stderr
    assert "more than 50,000 values once alias *" in out.stderr
    assert "Traceback" not in out.stderr


def test_load_spec_alias_bomb_is_refused_before_the_file_is_read(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(BOMB.replace("metrics: {x: *i}", "set: {name: *i}"))
    data = tmp_path / "accounts.csv"
    data.write_text("account_id,created_at\nA1,2024-01-01\n")
    out = _cli(
        "load", "accounts", data, "--spec", spec, "--db", tmp_path / "x.duckdb", cwd=tmp_path
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"Error: {spec}:" in out.stderr and "once alias *" in out.stderr


def test_a_few_aliases_still_work():
    model = load_model_text(
        "metrics:\n"
        "  users: &count {from: usage_events, aggregate: count_distinct(user_id), window: 30d}\n"
        "  users_again: *count\n"
        "pillars:\n"
        "  usage: {weight: 1, metrics: {users: {weight: 1, bad: 0, good: 10}}}\n"
    )
    assert model.spec.metrics["users_again"].window == "30d"


def test_more_than_100_aliases_are_refused_naming_the_line():
    lines = ["base: &b 1"] + [f"k{i}: *b" for i in range(limits.MAX_YAML_ALIASES + 1)]
    with pytest.raises(hs.ModelError, match=r"m.yaml:102: more than 100 aliases \(\*b is one"):
        load_model_text("\n".join(lines) + "\n", "m.yaml")


def test_an_alias_inside_its_own_node_is_refused():
    with pytest.raises(hs.ModelError, match=r"m.yaml:1: alias \*a refers to a node that contains"):
        load_model_text("metrics: &a {x: *a}\n", "m.yaml")


def test_deep_nesting_is_refused():
    text = "metrics: " + "[" * 200 + "]" * 200 + "\n"
    with pytest.raises(hs.ModelError, match=r"m.yaml:1: nested more than 50 levels deep"):
        load_model_text(text, "m.yaml")


def test_model_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("metrics:\n" + USERS + "# padding\n" * 120_000 + MODEL_TAIL)
    assert path.stat().st_size > limits.MAX_YAML_BYTES
    with pytest.raises(hs.ModelError, match=r"huge.yaml: file is too large to read \(1.1 MB\)"):
        hs.load_model(path)


def test_model_file_not_in_utf8_is_an_error_not_a_traceback(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: café\n".encode("latin-1"))
    with pytest.raises(hs.ModelError, match=r"latin1.yaml: not UTF-8 text.*hint: save it as UTF-8"):
        hs.load_model(path)


@pytest.mark.parametrize("kind", ["device", "folder"])
def test_a_model_that_is_no_file_fails_at_once_naming_it(tmp_path, fixture_db, kind):
    # /dev/zero reports no size and never ends: it was read whole (until memory ran out);
    # a folder was an IsADirectoryError traceback
    if kind == "device":
        path, reason = Path("/dev/zero"), "file is too large to read"
    else:
        path, reason = tmp_path / "models", "a folder, not a file"
        path.mkdir()
    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    for args in (["validate", path], ["score", "--model", path]):
        res = _cli(*args, cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr
        assert f"Error: {path}: {reason}" in res.stderr


def test_a_json_lines_row_nested_deeply_is_refused_naming_its_line(tmp_path):
    # DuckDB's JSON reader crashed the process (SIGSEGV, its stack) on 100,000 levels
    deep = "[" * 100_000 + "]" * 100_000
    rows = [
        '{"account_id": "X1", "created_at": "2024-01-01", "name": "[[[[ text, not nesting"}',
        '{"account_id": "X2", "created_at": "2024-01-01", "tags": {"a": [1, [2, [3]]]}}',
        f'{{"account_id": "X3", "created_at": "2024-01-01", "tags": {deep}}}',
    ]
    data = tmp_path / "accounts.jsonl"
    data.write_text("\n".join(rows) + "\n")
    assert _cli("init", tmp_path, cwd=tmp_path).returncode == 0
    res = _cli("load", "accounts", data, cwd=tmp_path)
    assert res.returncode == 1, (res.returncode, res.stderr[-500:])
    assert f"Error: {data}:3: a value nested more than 100 levels deep" in res.stderr
    # the same rows without the deep one load, brackets inside text and all
    data.write_text("\n".join(rows[:2]) + "\n")
    res = _cli("load", "accounts", data, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "2 inserted" in res.stdout


# --- counts --------------------------------------------------------------------------------


def test_too_many_metrics_fail_at_once_with_the_count():
    n = limits.MAX_METRICS + 1
    metrics = "".join(f"  m{i}: {{formula: '1'}}\n" for i in range(n))
    with pytest.raises(hs.ModelError) as info:
        load_model_text("metrics:\n" + USERS + metrics + MODEL_TAIL, "big.yaml")
    assert str(info.value) == (
        f"big.yaml:1: metrics: {n + 1:,} metrics; a model may have at most 500 here; "
        "hint: see Limits in docs/model.md"
    )


def test_a_huge_map_is_refused_at_its_line():
    entries = ", ".join(f"c{i}: 50" for i in range(limits.MAX_MAP_ENTRIES + 1))
    text = (
        "metrics:\n  plan: {column: accounts.segment}\n"
        f"pillars:\n  p: {{weight: 1, metrics: {{plan: {{weight: 1, map: {{{entries}}}}}}}}}\n"
    )
    with pytest.raises(hs.ModelError, match=r"m.yaml:4: pillars.p.metrics.plan.map: 1,001 entries"):
        load_model_text(text, "m.yaml")


def test_too_many_values_overall_fail_before_the_whole_file_is_parsed(monkeypatch):
    # the budget made small so the file stays small: ruamel parses ~100 KB a second
    monkeypatch.setattr("healthscore.core.yamlio.MAX_YAML_NODES", 5_000)
    text = "metrics:\n" + "".join(f"  m{i}: {{formula: '1'}}\n" for i in range(2_000))
    with pytest.raises(hs.ModelError, match=r"m.yaml:1251: the document holds more than 5,000"):
        load_model_text(text, "m.yaml")


# --- dates and durations -------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, fixture_db):
    import shutil

    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "--as-of", "0001-01-01"], "Error: --as-of 0001-01-01 is out of range"),
        (["score", "--as-of", "9999-12-31"], "Error: --as-of 9999-12-31 is out of range"),
        (
            ["history", "--from", "0001-01-01", "--to", "2024-01-01"],
            "Error: --from 0001-01-01 is out of range",
        ),
        (
            ["history", "--from", "1900-01-01", "--to", "2999-01-01", "--every", "1d"],
            "Error: 1900-01-01 to 2999-01-01 every 1d is more than 20,000 dates",
        ),
        (
            ["flag", "add", "A1", "champion_left", "--at", "0001-01-01"],
            "Error: --at 0001-01-01 is out of range",
        ),
        (["flag", "resolve", "F1", "--at", "9999-12-31"], "Error: --at 9999-12-31 is out of range"),
    ],
    ids=[
        "as-of-year-1",
        "as-of-year-9999",
        "from-year-1",
        "a-million-dates",
        "flag-add-at-year-1",
        "flag-resolve-at-year-9999",
    ],
)
def test_dates_out_of_range_name_the_option(project, args, message):
    from typer.testing import CliRunner

    from healthscore.cli import app

    old = os.getcwd()
    os.chdir(project)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(old)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "years 1900 to 2999" in result.output or "--every" in result.output


def test_a_duration_of_millennia_is_refused_in_a_model():
    text = "metrics:\n" + USERS.replace("30d", "99999mo") + MODEL_TAIL
    with pytest.raises(hs.ModelError, match=r"m.yaml:2: metrics.users.window: a duration must be"):
        load_model_text(text, "m.yaml")


# --- counts given as options -----------------------------------------------------------------


def test_a_huge_limit_lists_every_account_instead_of_overflowing(project):
    # 10**20 rows: pyarrow's slice raised OverflowError (a traceback)
    from typer.testing import CliRunner

    from healthscore.cli import app

    old = os.getcwd()
    os.chdir(project)
    try:
        every = CliRunner().invoke(app, ["score", "--as-of", "2025-01-01", "-f", "csv"])
        huge = CliRunner().invoke(
            app, ["score", "--as-of", "2025-01-01", "-f", "csv", "--limit", str(10**20)]
        )
    finally:
        os.chdir(old)
    assert every.exit_code == 0 and huge.exit_code == 0, huge.output
    assert huge.stdout == every.stdout


@pytest.mark.parametrize("months", [str(10**20), "-1", "121"])
def test_demo_history_months_out_of_range_fail_before_any_work(tmp_path, months):
    # 10**20 was an OverflowError traceback after the book was generated and loaded
    res = _cli("demo", "--dir", tmp_path / "d", "--history-months", months, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert f"Error: demo: history months must be from 0 to 120 (got {months})" in res.stderr
    assert not (tmp_path / "d" / "healthscore.duckdb").exists()
