"""Commands on model files: ``model schema``, ``model suggest``, ``model fit-percentiles``
and ``model fit-probability``.

Place in the flow: ``cli/``, over :mod:`healthscore.api` (json_schema, suggest_model,
fit_percentiles, fit_probability_curve); the fitted curve and the suggested metrics are
drawn by :mod:`healthscore.views.terminal`. Fitting writes into the model file (in place
unless ``--out``); ``suggest`` writes a new file (``--out``).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from healthscore import api
from healthscore.cli.common import (
    FORMAT,
    AsOfOpt,
    DbOpt,
    ModelOpt,
    ScorecardOpt,
    TableFormat,
    edits_model,
    file_to_write,
    model_file,
    reject_options,
    write_output,
)
from healthscore.views import terminal

ModelOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="write the fitted model here [default: in place]",
        parser=file_to_write,
    ),
]


class Method(StrEnum):
    """How the score is mapped to a probability."""

    isotonic = "isotonic"
    platt = "platt"


def schema_command() -> None:
    """Print the JSON Schema of the model file (for editor completion)."""
    sys.stdout.write(json.dumps(api.json_schema(), indent=2) + "\n")


def suggest_command(
    out_file: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="write the suggested model file here", parser=file_to_write
        ),
    ],
    until: Annotated[
        str | None,
        typer.Option(
            help="judge against outcomes up to this date (UTC), never later; anchors are "
            "the data's percentiles at it [default: the day after the last usage event "
            "or outcome]"
        ),
    ] = None,
    outcome: Annotated[
        str, typer.Option(help="churned (churn), contracted, expanded (expansion) ...")
    ] = "churned",
    horizon: Annotated[str, typer.Option(help="the outcome within this long")] = "90d",
    every: Annotated[str, typer.Option(help="step between observation dates")] = "4w",
    snapshot: Annotated[
        bool,
        typer.Option(
            help="data with no history: each account once at --until, labelled by whether "
            "it has the outcome on file"
        ),
    ] = False,
    db: DbOpt = None,
    format: Annotated[TableFormat, FORMAT] = TableFormat.table,
) -> None:
    """Propose a model from the loaded tables (metrics, anchors, AUCs, pillars); then
    `healthscore calibrate` learns its weights."""
    result = api.suggest_model(
        api.connect(db, create=False, read_only=True),  # it writes a model file, not the store
        out_file,
        until=until,
        outcome=outcome,
        horizon=horizon,
        every=every,
        snapshot=snapshot,
    )

    def render(console) -> None:
        terminal.render_suggestion(console, result)

    write_output(format, None, result, render=render)


@edits_model  # --out may name the model it reads: in place is its default
def fit_percentiles_command(
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    out_file: ModelOutOpt = None,
) -> None:
    """Fit percentile normalisation once, as of a date, and store it in the model file."""
    path = model_file(model)
    store = api.connect(db, create=False, read_only=True)  # it writes the model file only
    fitted = api.fit_percentiles(store, path, as_of, out_file)
    terminal.say(
        terminal.stdout,
        f"fitted percentiles written to {fitted.file}; new version {fitted.version[:12]}",
    )


@edits_model  # --out may name the model it reads: in place is its default
def fit_probability_command(
    ctx: typer.Context,
    until: Annotated[
        str, typer.Option(help="fit on observations whose horizon closed by this date (UTC)")
    ],
    outcome: Annotated[
        str, typer.Option(help="churned (churn), contracted, expanded (expansion) ...")
    ] = "churned",
    horizon: Annotated[str, typer.Option(help="the outcome within this long")] = "90d",
    method: Annotated[Method, typer.Option(help="how the score maps to a probability")] = (
        Method.isotonic
    ),
    every: Annotated[str, typer.Option(help="step between observation dates")] = "1mo",
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="first observation date [default: 2 years before the last one, not before "
            "the first outcome on file]",
        ),
    ] = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    scorecard: ScorecardOpt = None,
    out_file: ModelOutOpt = None,
    anniversaries: Annotated[
        str | None,
        typer.Option(
            help="observe each account --lead before each anniversary of its first "
            "contract, every this long (e.g. 12mo), instead of a grid"
        ),
    ] = None,
    lead: Annotated[
        str, typer.Option(help="--anniversaries: observe this long before each one")
    ] = "30d",
    pairs: Annotated[
        Path | None,
        typer.Option(help="observe the (account, date) pairs of this file (account_id, as_of)"),
    ] = None,
) -> None:
    """Fit the probability of churn within a horizon from the score, out of sample, and
    store it in the model file (then score, explain and report show it, and ARR at risk)."""
    if anniversaries is None:
        reject_options(ctx, ["lead"], "without --anniversaries")
    if anniversaries is not None or pairs is not None:
        reject_options(ctx, ["every"], "with --anniversaries or --pairs (it is the grid's step)")
    project = api.open_project(db, model_file(model), scorecard)
    with terminal.progress_bar(terminal.stderr) as progress:
        run = api.fit_probability_curve(
            project.store,
            project.model,
            until,
            outcome=outcome,
            horizon=horizon,
            every=every,
            start=from_,
            method=method.value,
            out=out_file,
            progress=progress,
            lead=lead,
            anniversaries=anniversaries,
            pairs=pairs,
        )
    terminal.render_probability_fit(terminal.stdout, run)
