"""The recipes (examples/ravenstack/load.sh, examples/telco/load.sh) run as documented;
on IBM's Telco snapshot, the model `healthscore model suggest` makes of it."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthscore.cli import app
from healthscore.store import connect as hs_connect

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECIPE = EXAMPLES / "ravenstack"
TELCO = EXAMPLES / "telco"


def _commands(data: Path, db: Path, recipe: Path = RECIPE) -> list[list[str]]:
    subst = {
        "$DATA": str(data),
        "$DB": str(db),
        "$MODEL": str(recipe / "healthscore.yaml"),
        "$HERE": str(recipe),
    }
    out = []
    for line in (recipe / "load.sh").read_text().splitlines():
        if line.startswith("healthscore "):
            for k, v in subst.items():
                line = line.replace(k, v)
            out.append(shlex.split(line)[1:])
    return out


def test_ravenstack_recipe_loads_and_scores(ravenstack_dir, tmp_path):
    runner = CliRunner()
    db = tmp_path / "rs.duckdb"
    commands = _commands(ravenstack_dir, db)
    assert [c[0] for c in commands] == ["load"] * 5 + ["score", "backtest"]
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        outputs = []
        for args in commands[:5]:
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
        scored = runner.invoke(app, [*commands[5], "--format", "json"])
        assert scored.exit_code == 0, scored.output
        # the recipe's backtest as documented (200 replicates: cheap now that they are vectorised)
        backtest = runner.invoke(app, commands[6], env={"COLUMNS": "200"})
        assert backtest.exit_code == 0, backtest.output
        again = runner.invoke(app, commands[2])  # reloading usage changes nothing
    finally:
        os.chdir(old)
    assert "accounts: 500 inserted" in outputs[0]
    assert "subscriptions: 5000 inserted" in outputs[1]
    assert "usage_events: 24979 inserted, 0 updated, 0 unchanged, 21 rejected" in outputs[2]
    assert "tickets: 2000 inserted" in outputs[3]
    assert "outcomes: 600 inserted" in outputs[4]
    assert "usage_events: 0 inserted, 0 updated, 24979 unchanged, 21 rejected" in again.output
    rejects = (tmp_path / "ravenstack_usage_rejects.csv").read_text()
    assert "duplicate event_id, first seen at row" in rejects
    rows = json.loads(scored.stdout)
    assert len(rows) == 500
    assert {r["band"] for r in rows} == {"green", "yellow", "red"}
    for r in rows:
        assert abs(sum(ln["contribution"] for ln in r["lines"]) - r["score"]) < 1e-9
    # RavenStack's behaviour tables carry almost no churn signal (its SOURCE.md): an honest
    # backtest says the score does not beat chance instead of inventing signal
    assert "does not predict churned better than chance" in backtest.output
    assert "includes 0.5" in backtest.output


@pytest.fixture(scope="module")
def telco(telco_dir, tmp_path_factory):
    """The Telco recipe's commands, run once for the module (in the folder of its
    files): each command's result by name, the folder and the store. Its tests only
    read them."""
    runner = CliRunner()
    here = tmp_path_factory.mktemp("telco")
    db = here / "telco.duckdb"
    commands = _commands(telco_dir, db, TELCO)
    assert [c[0] for c in commands] == ["load"] * 3 + ["backtest", "calibrate", "model"] + [
        "calibrate"
    ]
    old = os.getcwd()
    os.chdir(here)
    try:
        ran = {}
        for i, args in enumerate(commands[:3]):
            ran[f"load {i}"] = runner.invoke(app, args)
            assert ran[f"load {i}"].exit_code == 0, ran[f"load {i}"].output
        ran["again"] = runner.invoke(app, commands[1])  # reloading merges nothing new
        ran["backtest"] = runner.invoke(
            app, [*commands[3], "--bootstrap", "50"], env={"COLUMNS": "200"}
        )
        ran["calibrate"] = runner.invoke(
            app, [*commands[4], "--bootstrap", "50", "--format", "json"]
        )
        ran["suggest"] = runner.invoke(app, commands[5])
        quick = ["--bootstrap", "20", "--no-challenger", "--format", "json"]
        ran["from suggested"] = runner.invoke(app, [*commands[6], *quick])
    finally:
        os.chdir(old)
    return here, db, ran


def test_telco_recipe_loads_a_snapshot_and_calibrates_level_with_a_free_logistic_fit(telco):
    """IBM Telco (legitimate columns only): the calibrated non-negative weighted score's
    cross-validated ROC AUC, from the hand-written model and from the suggested one, is
    level with an unconstrained logistic regression on the hand-written columns (0.902);
    the challenger is reported beside them.

    "Level" allows 0.002: the documented folds (seed 0) give 0.903 for both starting
    points, but over fold seeds 0-4 the calibrated score minus the regression ranged from
    -0.0009 to +0.0007 (docs/recipes/telco.md), so a shortfall up to twice that is the
    folds' noise, not a gap."""
    here, db, ran = telco
    for name in ("backtest", "calibrate", "suggest", "from suggested"):
        assert ran[name].exit_code == 0, ran[name].output
    outputs = [ran[f"load {i}"].output for i in range(3)]
    assert "accounts: 7043 inserted" in outputs[0]
    assert "accounts: 0 inserted, 7043 updated" in outputs[1]  # services merge into them
    assert "outcomes: 6589 inserted" in outputs[2] and "skipped 454" in outputs[2]
    assert "accounts: 0 inserted, 0 updated, 7043 unchanged" in ran["again"].output
    assert "on snapshot data" in ran["backtest"].output
    r = json.loads(ran["calibrate"].output)
    assert r["observations"] == 7043 and r["positives"] == 1869
    auc = {k: v["value"] for k, v in r["roc_auc"].items()}
    lr = auc["logistic regression (out of fold)"]
    calibrated = auc["calibrated (out of fold)"]
    assert 0.88 < lr < 0.93
    assert calibrated >= lr - 0.002
    assert calibrated > auc["current model"]
    suggested = json.loads(ran["from suggested"].output)["roc_auc"]
    assert suggested["calibrated (out of fold)"]["value"] >= lr - 0.002
    assert 0.85 < auc["gradient boosting challenger (out of fold)"] < 0.95
    written = here / "telco-calibrated.yaml"
    assert written.exists() and "stratified cross-validation" in written.read_text()
    # the leakage columns stayed on the outcome rows, out of the accounts metrics read
    store = hs_connect(db)
    leaks = {"Satisfaction Score", "Churn Score", "Churn Category", "Churn Reason"}
    assert leaks <= set(store.columns("outcomes"))
    assert not leaks & set(store.columns("accounts"))
    assert {"tenure_months", "gender", "contract"} <= set(store.columns("accounts"))


def test_telco_suggests_a_metric_per_account_column(telco):
    """Snapshot data with account columns only (`healthscore model suggest --snapshot`,
    the recipe's): every usable column becomes a metric (numbers and yes/no linear, text
    with few values a category scored by churn rate), constant columns and tables with no
    rows give none."""
    from healthscore import api

    here, db, ran = telco
    res = ran["suggest"]
    assert res.exit_code == 0, res.output
    assert "judged against churned on 7,043 accounts at 2022-10-01, 1,869 with churned" in (
        " ".join(res.output.split())
    )
    out = here / "telco-suggested.yaml"
    valid = CliRunner().invoke(app, ["validate", str(out), "--db", str(db)])
    assert valid.exit_code == 0, valid.output
    model = api.load_model(out)
    cols = model.spec.columns["accounts"]
    assert cols["contract"] == "string" and cols["tenure_months"] == "int64"
    assert cols["online_security"] == "boolean"
    use = {m: u for _, m, u in model.scored_metrics()}
    # a category is scored by its churn rate: month-to-month churns most, two-year least
    assert use["contract"].map["Month-to-Month"] == 0 and use["contract"].map["Two Year"] == 100
    assert use["tenure_months"].good > use["tenure_months"].bad  # long tenure churns less
    # a column whose name is not a metric name gets one (its column kept as it is)
    assert model.spec.metrics["under_30"].column == "Under 30"
    # no metric from tables that hold no rows, none from a constant column
    assert not [m for m in model.spec.metrics.values() if m.from_]
    assert "count" not in model.spec.metrics and "tenure_days" not in model.spec.metrics


def test_recipes_run_from_a_fresh_clone_with_the_command_in_venv(tmp_path):
    """A fresh clone after `make demo` has `healthscore` in .venv/bin, not on PATH: the
    scripts use it; without it they stop with a hint instead of `not found` mid-way."""
    import shutil
    import subprocess

    clone = tmp_path / "clone"
    for recipe in ("ravenstack", "telco"):
        shutil.copytree(EXAMPLES / recipe, clone / "examples" / recipe)
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = ["sh", "examples/ravenstack/load.sh", "data"]
    res = subprocess.run(run, cwd=clone, env=bare, capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout == ""
    assert f"healthscore not found: run `make demo` in {clone} first" in res.stderr
    venv = clone / ".venv" / "bin"
    venv.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    (venv / "healthscore").write_text(f'#!/bin/sh\necho "$1" >> {calls}\n')
    (venv / "healthscore").chmod(0o755)
    for recipe in ("ravenstack", "telco"):
        script = f"examples/{recipe}/load.sh"
        res = subprocess.run(["sh", script, "data"], cwd=clone, env=bare, capture_output=True)
        assert res.returncode == 0, res.stderr
    lines = calls.read_text().split()
    assert lines == [c[0] for c in _commands(Path("d"), Path("db"))] + [
        c[0] for c in _commands(Path("d"), Path("db"), TELCO)
    ]
