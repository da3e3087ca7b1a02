"""Docs kept true: every model key and CLI command is documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from healthscore import model as model_mod
from healthscore.cli import app, flag_app, model_app

DOCS = Path(__file__).resolve().parents[1] / "docs"


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
