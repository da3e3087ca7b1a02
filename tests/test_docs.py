"""Docs kept true: every model key and CLI command is documented."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel

from healthscore import model as model_mod
from healthscore.cli import app, flag_app, model_app

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = DOCS.parent / "README.md"


def _keys(cls: type[BaseModel]) -> set[str]:
    return {f.alias or n for n, f in cls.model_fields.items()}


MODEL_KEYS = sorted(
    set().union(
        *(
            _keys(c)
            for c in (
                model_mod.ModelSpec,
                model_mod.MetricSpec,
                model_mod.MetricUse,
                model_mod.Pillar,
                model_mod.Segments,
                model_mod.Bands,
                model_mod.Percentile,
                model_mod.Probability,
                model_mod.Trends,
                model_mod.RapidDecline,
                model_mod.Slope,
                model_mod.StableHigh,
                model_mod.Rule,
                model_mod.Scorecard,
            )
        )
    )
)


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_every_model_key_is_documented(key):
    assert f"`{key}`" in (DOCS / "model.md").read_text(), f"docs/model.md does not mention `{key}`"


def _commands():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    names += [f"model {c.name or c.callback.__name__}" for c in model_app.registered_commands]
    names += [f"flag {c.name or c.callback.__name__}" for c in flag_app.registered_commands]
    return names


@pytest.mark.parametrize("command", _commands())
def test_every_cli_command_is_documented(command):
    assert f"healthscore {command}" in (DOCS / "cli.md").read_text()


def test_the_demo_prints_account_ids_to_try_and_the_readme_sends_readers_there(demo_project):
    """The demo's book ends on the day it runs, so an id written in the README may have
    churned by the time someone reads it: the README names none, and the demo's own
    `try:` lines explain an account that is scored."""
    from rich.console import Console
    from typer.testing import CliRunner

    from healthscore.views import terminal

    console = Console(record=True, width=200)
    terminal.render_portfolio(console, demo_project, "healthscore")
    tries = [
        line.removeprefix("try: ").split(" && ")[-1]
        for line in console.export_text().splitlines()
        if line.startswith("try: ")
    ]
    explain = shlex.split(next(t for t in tries if " explain " in t))
    account = explain[2]
    assert re.fullmatch(r"ACC-\d{5}", account)
    project = ["--db", str(demo_project.db_path), "--model", str(demo_project.model_path)]
    res = CliRunner().invoke(app, [*explain[1:], *project], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert account in res.output and "Warning" not in res.output
    readme = README.read_text()
    assert re.findall(r"ACC-\d{5}", readme) == [], "the README names a demo account id"
    assert "an id from the try: lines" in readme
