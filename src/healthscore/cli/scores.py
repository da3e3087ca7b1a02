"""Commands that read the scores: ``score``, ``explain``, ``history``, ``trends``,
``compare`` and ``report``.

Place in the flow: ``cli/``, over :mod:`healthscore.api` (score_accounts,
explain_account, history, account_trends, compare_versions, write_report); tables come
from :mod:`healthscore.views.terminal`. Every command with ``--format`` also takes
``--out``; ``json`` is the result's ``to_dict()`` and ``csv`` one row per account.
"""

from __future__ import annotations

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
    OutOpt,
    RawOpt,
    RowsFormat,
    ScorecardOpt,
    ScoreFormat,
    TableFormat,
    TextFormat,
    file_to_write,
    write_output,
)
from healthscore.views import terminal


class Sort(StrEnum):
    """How ``score`` orders the accounts."""

    score = "score"
    arr = "arr"
    renewal = "renewal"
    name = "name"


def score_command(
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    format: Annotated[ScoreFormat, FORMAT] = ScoreFormat.table,
    out_file: OutOpt = None,
    scorecard: ScorecardOpt = None,
    summary: Annotated[
        bool,
        typer.Option(
            "--summary", help="only the ARR at risk per segment and CSM (needs fit-probability)"
        ),
    ] = False,
    sort: Annotated[
        Sort,
        typer.Option(
            help="score: the accounts that need attention first (health: lowest score; "
            "a readiness scorecard such as expansion: highest); arr: largest first; "
            "renewal: soonest first; name: A-Z"
        ),
    ] = Sort.score,
    band: Annotated[
        str | None,
        typer.Option(
            help="only these bands, comma-separated: red,yellow (or the scorecard's names)"
        ),
    ] = None,
    segment: Annotated[str | None, typer.Option(help="only this segment")] = None,
    csm: Annotated[str | None, typer.Option(help="only this CSM's accounts")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N accounts")] = None,
    include_unscored: Annotated[
        bool,
        typer.Option(
            "--include-unscored",
            help="also list the accounts left out (not yet created, no subscription in "
            "force, outside the population) with the reason, after the scored ones: "
            "--segment and --csm apply to them, --band leaves them out (no score, no "
            "band), --limit counts them",
        ),
    ] = False,
    raw: RawOpt = False,
) -> None:
    """Score every account as of a date (point-in-time) and list them, those that need
    attention first: name, CSM, ARR, renewal, score and band (CSV, JSON and Parquet keep
    every column; the filters and the order apply to them too)."""
    if raw and format != ScoreFormat.csv:
        raise typer.BadParameter("--raw applies to --format csv")
    if format == ScoreFormat.parquet and out_file is None:
        raise typer.BadParameter("parquet output needs --out FILE")
    if summary and format != ScoreFormat.table:
        raise typer.BadParameter("--summary prints a table; leave out --format")
    project = api.open_project(db, model, scorecard, read_only=True)
    result = api.score_accounts(
        project.store,
        project.model,
        as_of,
        need_probability=summary,
        sort=sort.value,
        bands=[b for b in band.split(",") if b.strip()] if band is not None else None,
        segment=segment,
        csm=csm,
        limit=limit,
        include_unscored=include_unscored,
    )
    for text in result.warnings:
        terminal.warning(text)
    terminal.note(result.evidence.summary())
    if summary:
        with terminal.console_to(out_file) as console:
            terminal.render_arr_at_risk(console, result.scores, result.model)
        return
    write_output(
        format,
        out_file,
        result,
        rows=result.rows(),
        render=lambda console: _render_scores(console, result),
        raw=raw,
    )


def _render_scores(console, result: api.ScoreResult) -> None:
    """The account list, then (with --include-unscored) the accounts left out."""
    terminal.render_scores(
        console, result.scores, result.model, total=result.total, sort=result.sort
    )
    if result.unscored is not None:
        terminal.render_unscored(console, result.unscored, result.as_of)


def explain_command(
    account: Annotated[str, typer.Argument(help="account id")],
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    format: Annotated[TextFormat, FORMAT] = TextFormat.text,
    out_file: OutOpt = None,
    vs: Annotated[
        str | None, typer.Option("--vs", help="explain the change since this earlier date")
    ] = None,
    scorecard: ScorecardOpt = None,
) -> None:
    """Show why one account has its score (or, with --vs, why it moved)."""
    project = api.open_project(db, model, scorecard, read_only=True)
    result = api.explain_account(project.store, project.model, account, as_of, vs)
    for text in result.warnings:
        terminal.warning(text)

    def render(console) -> None:
        if result.change is not None:
            terminal.render_change(console, result.change)
        else:
            terminal.render_explanation(console, result.explanation)

    write_output(format, out_file, result, render=render)


def history_command(
    from_: Annotated[str, typer.Option("--from", help="first as-of date (UTC)")],
    to: Annotated[str, typer.Option("--to", help="last as-of date (UTC), included")],
    every: Annotated[str, typer.Option(help="step between dates: 1d, 1w, 1mo ...")] = "1w",
    rebuild: Annotated[bool, typer.Option(help="recompute dates already stored")] = False,
    model: ModelOpt = None,
    db: DbOpt = None,
    scorecard: ScorecardOpt = None,
) -> None:
    """Backfill point-in-time scores into the store's history (only missing dates)."""
    project = api.open_project(db, model, scorecard)
    with terminal.progress_bar(terminal.stderr) as progress:
        result = api.history(
            project.store, project.model, from_, to, every, rebuild=rebuild, progress=progress
        )
    terminal.stdout.print(str(result))


def trends_command(
    as_of: AsOfOpt = None,
    class_: Annotated[
        str | None,
        typer.Option(
            "--class",
            help="only this class: rapid_decline, gradual_decline, improving, stable_high, stable",
        ),
    ] = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    format: Annotated[RowsFormat, FORMAT] = RowsFormat.table,
    out_file: OutOpt = None,
    scorecard: ScorecardOpt = None,
    raw: RawOpt = False,
) -> None:
    """List accounts by trend (from stored history): class, score now and then, change."""
    if raw and format != RowsFormat.csv:
        raise typer.BadParameter("--raw applies to --format csv")
    project = api.open_project(db, model, scorecard, read_only=True)
    result = api.account_trends(project.store, project.model, as_of, class_)
    write_output(
        format,
        out_file,
        result,
        rows=result.trends,
        render=lambda console: terminal.render_trends(
            console, result.trends, result.as_of, project.model
        ),
        raw=raw,
    )


def compare_command(
    vs: Annotated[Path, typer.Option("--vs", help="the current model file, to compare against")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="the new model file [default: ./healthscore.yaml]"),
    ] = None,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
    scorecard: ScorecardOpt = None,
    top: Annotated[
        int, typer.Option(min=0, help="how many of the biggest score changes to show")
    ] = 10,
    format: Annotated[TableFormat, FORMAT] = TableFormat.table,
    out_file: OutOpt = None,
) -> None:
    """Compare a new model with the current one: band migration, biggest changes, history."""
    # both models are seen through --scorecard by the comparison itself
    project = api.open_project(db, model, read_only=True)
    result = api.compare_versions(
        project.store, project.model, vs, as_of, scorecard=scorecard, top=top
    )
    for text in result.warnings:
        terminal.warning(text)
    for text in terminal.left_out_notes(result.evidence):
        terminal.note(text)
    write_output(
        format,
        out_file,
        result,
        render=lambda console: terminal.render_comparison(console, result.comparison),
    )


def report_command(
    out_file: Annotated[
        Path, typer.Option("--out", "-o", help="the HTML file to write", parser=file_to_write)
    ],
    as_of: AsOfOpt = None,
    top: Annotated[int, typer.Option(min=1, help="how many movers and expansion candidates")] = 10,
    model: ModelOpt = None,
    db: DbOpt = None,
) -> None:
    """Write the portfolio report: one self-contained HTML file with charts, opens offline."""
    project = api.open_project(db, model, read_only=True)
    result = api.write_report(project.store, project.model, out_file, as_of, top=top)
    for text in result.warnings:
        terminal.warning(text)
    terminal.say(terminal.stdout, result)
