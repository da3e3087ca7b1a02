"""Commands that set a project up: ``init``, ``load``, ``validate`` and ``demo``.

Place in the flow: ``cli/``, over :mod:`healthscore.api` (init_project, load_plan,
load_table, validate_model, run_demo); rendering comes from :mod:`healthscore.views`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from healthscore import api
from healthscore.cli.common import DbOpt, RawOpt, command_name, file_to_write
from healthscore.views import terminal


def init_command(
    directory: Annotated[Path, typer.Argument(help="project folder")] = Path("."),
    force: Annotated[bool, typer.Option(help="overwrite an existing model file")] = False,
) -> None:
    """Write a starter project: healthscore.yaml (the default model) and an empty store."""
    result = api.init_project(directory, force=force)
    if result.kept:
        terminal.say(
            terminal.stderr, f"{result.model_file} exists; keeping it (use --force to overwrite)"
        )
    else:
        terminal.say(terminal.stdout, f"wrote {result.model_file}")
    terminal.say(terminal.stdout, f"store ready: {result.db_path}")
    terminal.stdout.print(
        "next: healthscore load accounts accounts.csv   (see `healthscore load --help`)"
    )


def load_command(
    table: Annotated[str, typer.Argument(help="canonical table, e.g. accounts, usage_events")],
    file: Annotated[Path, typer.Argument(help="CSV, Parquet or JSON-lines file")],
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="rename a column: source_col=canonical_col (repeatable; a column mapped "
            "twice feeds two columns, e.g. --map 'Customer ID=account_id' "
            "--map 'Customer ID=outcome_id')",
        ),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option(
            help="a YAML load spec holding map:, set:, date_format:, number_format:, key: "
            "and value maps (see docs/data.md); the flags add to it and win"
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="load the valid rows and write invalid ones with reasons to this CSV",
            parser=file_to_write,
        ),
    ] = None,
    raw: RawOpt = False,
    date_format: Annotated[
        str | None, typer.Option(help="strptime format for ambiguous dates, e.g. %d/%m/%Y")
    ] = None,
    number_format: Annotated[
        str | None,
        typer.Option(
            help="how numbers are written: 1,234.56, 1.234,56, 1 234,56 or 1 234.56 "
            "(currency symbols and codes are dropped); needed when a column's numbers "
            "cannot tell, e.g. only $6,000"
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="the file has no id column: build it from these columns, e.g. "
            "--key account_id,ts,kind (event tables without one derive it from the row)"
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="a column the file lacks, same value on every row: col=value"),
    ] = None,
    account_from: Annotated[
        str | None,
        typer.Option(
            help="the file has no account_id: look it up in this table by its key "
            "(e.g. subscriptions: usage rows carrying subscription_id)"
        ),
    ] = None,
    db: DbOpt = None,
) -> None:
    """Load a file into a canonical table (idempotent: reloading changes nothing).

    Rows are matched by key: new ones are inserted, changed ones updated. Columns the
    file does not have keep their stored values, so several files with different
    columns about the same rows (accounts from a CRM export and a billing export) add
    up. A --spec file can also recode values (e.g. Churned -> churned); a row whose key
    or a required value is recoded to null is skipped and counted.
    """
    # the plan first: a bad spec or --map leaves no empty store behind
    if raw and rejects is None:
        raise typer.BadParameter("--raw is how the --rejects file is written; give --rejects")
    plan = api.load_plan(table, spec, map_ or [], set_ or [], date_format, number_format, key)
    store = api.connect(db)
    with terminal.progress_bar(terminal.stderr) as progress:
        result = api.load_table(
            store,
            table,
            file,
            plan,
            rejects=rejects,
            account_from=account_from,
            progress=progress,
            raw=raw,
        )
    terminal.stdout.print(str(result))
    for text in result.warnings:
        terminal.warning(text)
    if result.rejected:
        terminal.warning(f"{result.rejected} invalid rows written to {rejects}")
    if result.unknown_accounts:
        terminal.warning(
            f"{result.unknown_accounts} rows refer to accounts that are not in the accounts "
            "table (yet); they count once those accounts are loaded"
        )


def validate_command(
    model: Annotated[Path | None, typer.Argument(help="model file")] = None,
    db: DbOpt = None,
) -> None:
    """Check a model file; report each problem with its line and key path. With a store
    (--db, or ./healthscore.duckdb when present), also warn about its tables with no rows
    and the category values (segments, `map:`) the model does not name, as of today."""
    checked = api.validate_model(model)
    terminal.render_validation(terminal.stdout, checked)
    for text in api.check_against_store(checked, db):
        terminal.warning(text)


def demo_command(
    accounts: Annotated[int, typer.Option(help="number of accounts")] = 1000,
    months: Annotated[int, typer.Option(help="months of history")] = 18,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
    directory: Annotated[Path, typer.Option("--dir", help="working folder")] = Path("."),
    history_months: Annotated[
        int, typer.Option(help="months of weekly score history to store (0: none)")
    ] = 12,
    report: Annotated[bool, typer.Option(help="write report.html")] = True,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="then serve it (dashboard and API on 127.0.0.1:8000) until Ctrl-C, with "
            "a dashboard admin whose random password is printed once",
        ),
    ] = False,
) -> None:
    """Generate a realistic book of business, load it, score it, store weekly history,
    explain the rapid declines, write the portfolio report and summarise it."""
    with terminal.progress_bar(terminal.stdout) as progress:
        result = api.run_demo(
            directory,
            accounts=accounts,
            months=months,
            seed=seed,
            history_months=history_months,
            report=report,
            progress=progress,
        )
    terminal.render_portfolio(terminal.stdout, result, command_name())
    if serve:
        from healthscore.cli.service_cmds import serve_demo

        serve_demo(directory)
