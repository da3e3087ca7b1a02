"""Commands that judge the model against outcomes: ``backtest`` and ``calibrate``.

Place in the flow: ``cli/``, over :mod:`healthscore.api` (run_backtest, which also
trains the challenger and writes the HTML report; calibrate_model). Both print tables
or ``--format json`` to stdout; their ``--out`` names a file they write besides: the
backtest's HTML report, the calibrated model file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthscore import api
from healthscore.cli.common import (
    FORMAT,
    DbOpt,
    ModelOpt,
    ScorecardOpt,
    TableFormat,
    edits_model,
    file_to_write,
    reject_options,
    write_output,
)
from healthscore.views import terminal

ANNIVERSARIES_HELP = (
    "observe each account LEAD before each anniversary of its first contract, every "
    "this long (e.g. 12mo), instead of a grid"
)
PAIRS_HELP = "observe the (account, date) pairs of this file (columns account_id, as_of)"


def check_plan(ctx: typer.Context, anniversaries, pairs) -> None:
    """A usage error when the grid's step goes with another plan, or two plans are given."""
    if anniversaries is not None and pairs is not None:
        raise typer.BadParameter("--anniversaries and --pairs do not go together: choose one")
    if anniversaries is not None or pairs is not None:
        reject_options(ctx, ["every"], "with --anniversaries or --pairs (it is the grid's step)")


def backtest_command(
    ctx: typer.Context,
    from_: Annotated[
        str | None, typer.Option("--from", help="first observation date (UTC)")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="last observation date (UTC), included")
    ] = None,
    every: Annotated[str, typer.Option(help="step between observation dates")] = "1mo",
    horizon: Annotated[str, typer.Option(help="an outcome within this long counts")] = "90d",
    lead: Annotated[str, typer.Option(help="judge the score this long before the outcome")] = "30d",
    vs: Annotated[
        Path | None, typer.Option("--vs", help="a second model file, measured side by side")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the intervals")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
    model: ModelOpt = None,
    db: DbOpt = None,
    scorecard: ScorecardOpt = None,
    format: Annotated[TableFormat, FORMAT] = TableFormat.table,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="also write a self-contained HTML report here (the figures still print)",
            parser=file_to_write,
        ),
    ] = None,
    challenger: Annotated[
        bool, typer.Option(help="train and measure a learned challenger (challenger only)")
    ] = False,
    train_until: Annotated[
        str | None,
        typer.Option(help="challenger trains on horizons closed by then [default: mid-way]"),
    ] = None,
    snapshot: Annotated[
        bool,
        typer.Option(help="data with no history: score once, label by the outcomes on file"),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(help="--snapshot: the snapshot date [default: day after the last outcome]"),
    ] = None,
    outcome: Annotated[str, typer.Option(help="--snapshot: the outcome to predict")] = "churn",
    anniversaries: Annotated[str | None, typer.Option(help=ANNIVERSARIES_HELP)] = None,
    pairs: Annotated[Path | None, typer.Option(help=PAIRS_HELP)] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="--challenger: write its held-out predictions here (.csv, .parquet)",
            parser=file_to_write,
        ),
    ] = None,
) -> None:
    """How well the model's point-in-time scores would have predicted churn (and expansion)."""
    if snapshot:
        reject_options(
            ctx,
            ["every", "horizon", "lead", "anniversaries", "pairs"],
            "with --snapshot (it scores once)",
        )
    else:
        reject_options(ctx, ["outcome"], "without --snapshot (churn and expansion are judged)")
    if not challenger:
        reject_options(ctx, ["predictions"], "without --challenger")
    check_plan(ctx, anniversaries, pairs)
    project = api.open_project(db, model, scorecard)
    other = api.load_model(vs).scorecard(scorecard) if vs is not None else None
    with terminal.progress_bar(terminal.stderr) as progress:
        run = api.run_backtest(
            project.store,
            project.model,
            from_,
            to,
            every=every,
            horizon=horizon,
            lead=lead,
            vs=other,
            reps=bootstrap,
            seed=seed,
            challenger=challenger,
            train_until=train_until,
            report=out_file,
            snapshot=snapshot,
            as_of=as_of,
            outcome=outcome,
            progress=progress,
            anniversaries=anniversaries,
            pairs=pairs,
            predictions=predictions,
        )

    def render(console) -> None:
        terminal.render_backtest(console, run.result, model=project.model)
        labels = project.model.metric_label  # the features read as the model's labels
        for line in run.challenger.lines(labels) if run.challenger is not None else []:
            terminal.say(console, line)
        if run.report is not None:
            terminal.say(console, run.report)
        if run.predictions is not None:
            terminal.say(console, f"challenger predictions written to {run.predictions}")

    write_output(format, None, run, render=render)


@edits_model  # --out may name the model it reads: in place is its default
def calibrate_command(
    ctx: typer.Context,
    train_until: Annotated[
        str | None,
        typer.Option("--train-until", help="learn only from outcome windows closed by D"),
    ] = None,
    outcome: Annotated[str, typer.Option(help="the outcome to predict: churn, ...")] = "churn",
    horizon: Annotated[str, typer.Option(help="an outcome within this long counts")] = "90d",
    every: Annotated[str, typer.Option(help="step between observation dates")] = "1mo",
    lead: Annotated[
        str, typer.Option(help="the held-out backtest judges the score this long before it")
    ] = "30d",
    anniversaries: Annotated[str | None, typer.Option(help=ANNIVERSARIES_HELP)] = None,
    pairs: Annotated[Path | None, typer.Option(help=PAIRS_HELP)] = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="first observation date [default: 90d after the first event]"),
    ] = None,
    target_recall: Annotated[
        float, typer.Option(help="share of outcomes the red band must catch (training)")
    ] = 0.85,
    max_red_share: Annotated[
        float | None,
        typer.Option(
            help="most of the training observations the red band may hold; wins over "
            "--target-recall [default: 1.5 x the current model's red share, at least 0.05 "
            "and at most 0.20]"
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="write the calibrated model file here (the figures still print)",
            parser=file_to_write,
        ),
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples, held-out test")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the held-out bootstrap")] = 0,
    model: ModelOpt = None,
    db: DbOpt = None,
    snapshot: Annotated[
        bool,
        typer.Option(help="data with no history: judge by stratified cross-validation"),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(help="--snapshot: the snapshot date [default: day after the last outcome]"),
    ] = None,
    folds: Annotated[int, typer.Option(help="--snapshot: cross-validation folds")] = 5,
    challenger: Annotated[
        bool, typer.Option(help="--snapshot: measure the gradient-boosted challenger too")
    ] = True,
    format: Annotated[TableFormat, FORMAT] = TableFormat.table,
) -> None:
    """Learn weights, anchors, directions and bands from outcomes up to D; test after D."""
    if snapshot:
        reject_options(
            ctx,
            ["horizon", "every", "lead", "anniversaries", "pairs"],
            "with --snapshot (no time to split on)",
        )
    else:
        reject_options(ctx, ["as_of", "folds", "challenger"], "without --snapshot")
    check_plan(ctx, anniversaries, pairs)
    project = api.open_project(db, model)
    with terminal.progress_bar(terminal.stderr) as progress:
        result = api.calibrate_model(
            project.store,
            project.model,
            train_until,
            outcome=outcome,
            horizon=horizon,
            every=every,
            start=from_,
            target_recall=target_recall,
            max_red_share=max_red_share,
            seed=seed,
            out=out_file,
            reps=bootstrap,
            snapshot=snapshot,
            as_of=as_of,
            folds=folds,
            challenger=challenger,
            progress=progress,
            lead=lead,
            anniversaries=anniversaries,
            pairs=pairs,
        )

    def render(console) -> None:
        if result.snapshot is not None:
            terminal.render_snapshot_calibration(console, result.snapshot)
        else:
            terminal.render_calibration(console, result.result)

    write_output(format, None, result, render=render)
