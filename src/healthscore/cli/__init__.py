"""The `healthscore` command: one Typer command per capability, thin over the API.

Each command parses its options, calls one API function and prints the result. Our
errors (:class:`~healthscore.errors.HealthscoreError`) are caught at this boundary and
printed as ``Error: ...`` with exit code 1, never a traceback; usage errors exit 2.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from healthscore import api
from healthscore.errors import DurationError, HealthscoreError
from healthscore.model import default_model_text, json_schema, load_model

app = typer.Typer(
    help="Explainable customer health scores: load data, score accounts, see why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Work with model files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
flag_app = typer.Typer(help="CSM flags: qualitative signals on accounts.", no_args_is_help=True)
app.add_typer(flag_app, name="flag")

out = Console()
err = Console(stderr=True)

DEFAULT_MODEL = "healthscore.yaml"
BAND_STYLE = {"green": "green", "yellow": "yellow", "red": "red"}

# shared options, defined once
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="store URL or DuckDB file [env HEALTHSCORE_DB; default healthscore.duckdb]"
    ),
]
ModelOpt = Annotated[
    Path | None, typer.Option("--model", "-m", help="model file [default: ./healthscore.yaml]")
]
AsOfOpt = Annotated[
    str | None, typer.Option("--as-of", help="score as of this date/time (UTC) [default: now]")
]
ScorecardOpt = Annotated[
    str | None,
    typer.Option("--scorecard", "-s", help="which scorecard of the model [default: health]"),
]


def _fail(e: HealthscoreError) -> None:
    if isinstance(e, DurationError):  # a malformed duration option is a usage error
        raise typer.BadParameter(str(e)) from None
    err.print(f"[bold red]Error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(1)


def _model_path(model: Path | None) -> Path | None:
    if model is not None:
        return model
    return Path(DEFAULT_MODEL) if Path(DEFAULT_MODEL).exists() else None


def _open(db, model, scorecard: str | None = None):
    """The store and the model (seen through ``scorecard`` when given)."""
    from healthscore.store import connect

    return connect(db, create=False), load_model(_model_path(model)).scorecard(scorecard)


def _warn_freshness(store, model, as_of) -> None:
    for w in store.freshness(model, as_of):
        err.print(f"[yellow]Warning:[/] {w}", highlight=False)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="project folder")] = Path("."),
    force: Annotated[bool, typer.Option(help="overwrite an existing model file")] = False,
) -> None:
    """Write a starter project: healthscore.yaml (the default model) and an empty store."""
    from healthscore.store import connect

    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / DEFAULT_MODEL
        if target.exists() and not force:
            err.print(f"{target} exists; keeping it (use --force to overwrite)")
        else:
            target.write_text(default_model_text(), encoding="utf-8")
            out.print(f"wrote {target}")
        db = directory / "healthscore.duckdb"
        connect(db)
        out.print(f"store ready: {db}")
        out.print("next: healthscore load accounts accounts.csv   (see `healthscore load --help`)")
    except HealthscoreError as e:
        _fail(e)


@app.command()
def load(
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
            help="a YAML load spec holding map:, set:, date_format: and value maps "
            "(see docs/data.md); --map, --set and --date-format add to it and win"
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(help="load the valid rows and write invalid ones with reasons to this CSV"),
    ] = None,
    date_format: Annotated[
        str | None, typer.Option(help="strptime format for ambiguous dates, e.g. %d/%m/%Y")
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
    from healthscore.sources import LoadSpec, parse_constants, parse_mapping, read_spec
    from healthscore.store import connect

    try:
        plan = read_spec(spec, table) if spec else LoadSpec()
        plan = plan.with_flags(parse_mapping(map_ or []), parse_constants(set_ or []), date_format)
        store = connect(db)
        result = api.load_file(
            store,
            table,
            file,
            plan.mapping,
            date_format=plan.date_format,
            rejects=rejects,
            account_from=account_from,
            constants=plan.constants,
            values=plan.values,
        )
        out.print(str(result))
        for warning in result.warnings:
            err.print(f"[yellow]Warning:[/] {escape(warning)}", highlight=False)
        if result.rejected:
            err.print(f"[yellow]Warning:[/] {result.rejected} invalid rows written to {rejects}")
        if result.unknown_accounts:
            err.print(
                f"[yellow]Warning:[/] {result.unknown_accounts} rows refer to accounts that are "
                "not in the accounts table (yet); they count once those accounts are loaded",
                highlight=False,
            )
    except HealthscoreError as e:
        _fail(e)


@app.command()
def validate(model: Annotated[Path | None, typer.Argument(help="model file")] = None) -> None:
    """Check a model file; report each problem with its line and key path."""
    try:
        m = load_model(_model_path(model))
    except HealthscoreError as e:
        _fail(e)
    n_metrics = len(m.spec.metrics)
    out.print(
        f"{m.file}: OK - {n_metrics} metrics in {len(m.spec.pillars)} pillars, "
        f"{len(m.segment_names())} segment overrides; version {m.version[:12]}"
    )
    for name in m.unfitted_percentiles():
        err.print(
            f"[yellow]Note:[/] {name} uses percentile normalisation that is not fitted yet; "
            "run `healthscore model fit-percentiles --as-of <date>` before scoring",
            highlight=False,
        )


@model_app.command("schema")
def model_schema() -> None:
    """Print the JSON Schema of the model file (for editor completion)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@model_app.command("fit-percentiles")
def model_fit_percentiles(
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="write the fitted model here [default: in place]"),
    ] = None,
) -> None:
    """Fit percentile normalisation once, as of a date, and store it in the model file."""
    from healthscore.store import connect

    path = _model_path(model)
    if path is None:
        raise typer.BadParameter("no model file: pass --model or run `healthscore init`")
    try:
        fitted = api.fit_percentiles(connect(db, create=False), path, as_of, out_file)
    except HealthscoreError as e:
        _fail(e)
    out.print(f"fitted percentiles written to {fitted.file}; new version {fitted.version[:12]}")


@model_app.command("fit-probability")
def model_fit_probability(
    until: Annotated[
        str, typer.Option(help="fit on observations whose horizon closed by this date (UTC)")
    ],
    outcome: Annotated[
        str, typer.Option(help="churned (churn), contracted, expanded (expansion) ...")
    ] = "churned",
    horizon: Annotated[str, typer.Option(help="the outcome within this long")] = "90d",
    method: Annotated[str, typer.Option(help="isotonic or platt")] = "isotonic",
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
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="write the fitted model here [default: in place]"),
    ] = None,
) -> None:
    """Fit the probability of churn within a horizon from the score, out of sample, and
    store it in the model file (then score, explain and report show it, and ARR at risk)."""
    from healthscore.evaluate import probability as prob
    from healthscore.views.terminal import progress_bar

    path = _model_path(model)
    if path is None:
        raise typer.BadParameter("no model file: pass --model or run `healthscore init`")
    if method not in prob.METHODS:
        raise typer.BadParameter(f"unknown method {method!r}; use isotonic or platt")
    try:
        store, m = _open(db, path, scorecard)
        with progress_bar(err) as progress:
            fit = prob.fit_probability_details(
                store,
                m,
                until,
                outcome=outcome,
                horizon=horizon,
                every=every,
                start=from_,
                method=method,
                progress=progress,
            )
        target = out_file or path
        fitted = prob.write_probability(path, fit.probability, target, scorecard=scorecard)
    except HealthscoreError as e:
        _fail(e)
    p = fit.probability
    out.print(
        f"probability of {p.describe()} ({p.method}) fitted on {p.observations:,} observations "
        f"at {len(fit.dates)} dates from {fit.dates[0]:%Y-%m-%d} to {fit.dates[-1]:%Y-%m-%d}, "
        f"{p.events:,} followed by {p.outcome} (outcomes up to {p.fitted_until})",
        highlight=False,
    )
    table = RichTable(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("score", justify="right")
    table.add_column(f"p({p.describe().split()[0]})", justify="right")
    for x, y in p.points:
        table.add_row(f"{x:g}", prob.percent(y))
    out.print(table)
    for note in fit.notes:
        err.print(f"[yellow]Note:[/] {note}", highlight=False, soft_wrap=True)
    out.print(f"written to {fitted.file}; new version {fitted.version[:12]}", highlight=False)


AtOpt = Annotated[str | None, typer.Option("--at", help="when (UTC) [default: now]")]


@flag_app.command("add")
def flag_add(
    account: Annotated[str, typer.Argument(help="account id")],
    kind: Annotated[str, typer.Argument(help="e.g. champion_left, budget_freeze, new_champion")],
    note: Annotated[str | None, typer.Option(help="what happened")] = None,
    author: Annotated[str | None, typer.Option(help="who raised it")] = None,
    at: AtOpt = None,
    db: DbOpt = None,
) -> None:
    """Raise a flag on an account (active until resolved; usable as has_flag('kind'))."""
    from healthscore.engine.flags import add_flag
    from healthscore.store import connect

    try:
        when = api.parse_as_of(at) if at else None
        row = add_flag(connect(db, create=False), account, kind, note=note, author=author, at=when)
    except HealthscoreError as e:
        _fail(e)
    out.print(f"flag {row['flag_id']}: {row['kind']} on {account} from {row['ts']:%Y-%m-%d %H:%M}")


@flag_app.command("resolve")
def flag_resolve(
    flag_id: Annotated[str, typer.Argument(help="the flag's id (see flag list)")],
    at: AtOpt = None,
    db: DbOpt = None,
) -> None:
    """Resolve a flag: it no longer counts from then on (history before is kept)."""
    from healthscore.engine.flags import resolve_flag
    from healthscore.store import connect

    try:
        when = api.parse_as_of(at) if at else None
        row = resolve_flag(connect(db, create=False), flag_id, at=when)
    except HealthscoreError as e:
        _fail(e)
    out.print(f"flag {flag_id} resolved on {row['resolved_at']:%Y-%m-%d %H:%M}")


@flag_app.command("list")
def flag_list(
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    all_: Annotated[bool, typer.Option("--all", help="include resolved flags")] = False,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
) -> None:
    """Flags active at a date (default now), newest first; --all for every flag."""
    from healthscore.engine.flags import list_flags
    from healthscore.store import connect

    try:
        d = api.parse_as_of(as_of) if as_of else None
        rows = list_flags(
            connect(db, create=False), account_id=account, as_of=d, include_resolved=all_
        )
    except HealthscoreError as e:
        _fail(e)
    table = RichTable(title=f"{len(rows)} flags", box=box.SIMPLE_HEAD)
    for col in ("flag", "account", "kind", "since", "resolved", "author"):
        table.add_column(col, no_wrap=True)
    table.add_column("note")
    for r in rows:
        table.add_row(
            r["flag_id"],
            r["account_id"],
            r["kind"],
            f"{r['ts']:%Y-%m-%d}",
            f"{r['resolved_at']:%Y-%m-%d}" if r["resolved_at"] else "",
            r["author"] or "",
            r["note"] or "",
        )
    out.print(table)


@app.command()
def score(
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help="table, json, csv or parquet")
    ] = "table",
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="write to this file")] = None,
    scorecard: ScorecardOpt = None,
    summary: Annotated[
        bool,
        typer.Option(
            "--summary", help="only the ARR at risk per segment and CSM (needs fit-probability)"
        ),
    ] = False,
) -> None:
    """Score every account as of a date (point-in-time) and print or write the scores."""
    if format not in ("table", "json", "csv", "parquet"):
        raise typer.BadParameter(f"unknown format {format!r}; use table, json, csv or parquet")
    if format == "parquet" and out_file is None:
        raise typer.BadParameter("parquet output needs --out FILE")
    if out_file is not None and not out_file.resolve().parent.is_dir():
        _fail(HealthscoreError(f"--out {out_file}: the folder {out_file.parent} does not exist"))
    if summary and format != "table":
        raise typer.BadParameter("--summary prints a table; leave out --format")
    try:
        store, m = _open(db, model, scorecard)
        if summary and m.spec.probability is None:
            raise HealthscoreError(
                f"{m.file}: no `probability:` section, so no ARR at risk",
                hint="run `healthscore model fit-probability --until <date>` first",
            )
        d = api.parse_as_of(as_of)
        _warn_freshness(store, m, d)
        result = api.score(store, m, d)
    except HealthscoreError as e:
        _fail(e)
    if summary:
        from healthscore.views.terminal import render_arr_at_risk

        console = Console(file=out_file.open("w"), width=200) if out_file else out
        render_arr_at_risk(console, result, m)
        return
    _write_scores(result, m, format, out_file)


def _write_scores(result: pa.Table, m, format: str, out_file: Path | None) -> None:
    from healthscore.engine.explain import long_rows
    from healthscore.evaluate.probability import percent

    if format == "parquet":
        pq.write_table(result, out_file)
    elif format == "csv":
        if out_file:
            pacsv.write_csv(result, out_file)
        else:
            sink = pa.BufferOutputStream()
            pacsv.write_csv(result, sink)
            sys.stdout.write(sink.getvalue().to_pybytes().decode())
    elif format == "json":
        rows = [long_rows(m, r) for r in result.to_pylist()]
        text = json.dumps(rows, indent=1, default=str) + "\n"
        if out_file:
            out_file.write_text(text)
        else:
            sys.stdout.write(text)
    else:
        card = "" if m.scorecard_name == "health" else f" - scorecard {m.scorecard_name}"
        signals = any(r.signal for r in m.spec.rules.values())
        table = RichTable(
            title=f"{result.num_rows} accounts - model {m.label} ({m.version[:12]}){card}",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            pad_edge=False,
        )
        table.add_column("account", no_wrap=True, min_width=10)
        table.add_column("segment", no_wrap=True)
        table.add_column("score", justify="right", min_width=5)
        table.add_column("band", no_wrap=True, min_width=6)
        chance = "probability" in result.column_names
        if chance:
            what = m.spec.probability.describe().split()[0]
            table.add_column(f"p({what})", justify="right", no_wrap=True)
        for col in ["coverage", *m.spec.pillars]:
            table.add_column(col, justify="right", overflow="fold", min_width=5)
        if signals:
            table.add_column("signals", overflow="fold")
        for r in result.to_pylist():
            table.add_row(
                r["account_id"],
                r["segment"] or "",
                _num(r["score"]),
                f"[{BAND_STYLE.get(r['band'], 'dim')}]{r['band'] or 'no data'}[/]",
                *([percent(r["probability"])] if chance else []),
                f"{r['coverage']:.0%}",
                *[_num(r[f"pillar__{p}"]) for p in m.spec.pillars],
                *([r["signals"] or ""] if signals else []),
            )
        console = Console(file=out_file.open("w"), width=200) if out_file else out
        console.print(table)
        if chance:
            from healthscore.views.terminal import render_arr_at_risk

            render_arr_at_risk(console, result, m)


def _num(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


@app.command()
def history(
    from_: Annotated[str, typer.Option("--from", help="first as-of date (UTC)")],
    to: Annotated[str, typer.Option("--to", help="last as-of date (UTC), included")],
    every: Annotated[str, typer.Option(help="step between dates: 1d, 1w, 1mo ...")] = "1w",
    rebuild: Annotated[bool, typer.Option(help="recompute dates already stored")] = False,
    model: ModelOpt = None,
    db: DbOpt = None,
    scorecard: ScorecardOpt = None,
) -> None:
    """Backfill point-in-time scores into the store's history (only missing dates)."""
    from healthscore.views.terminal import progress_bar

    try:
        store, m = _open(db, model, scorecard)
        with progress_bar(err) as progress:
            result = api.history(store, m, from_, to, every, rebuild=rebuild, progress=progress)
    except HealthscoreError as e:
        _fail(e)
    except ValueError as e:  # a malformed --every
        raise typer.BadParameter(str(e)) from None
    out.print(str(result))


@app.command()
def trends(
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
    format: Annotated[str, typer.Option("--format", "-f", help="table, json or csv")] = "table",
    scorecard: ScorecardOpt = None,
) -> None:
    """List accounts by trend (from stored history): class, score now and then, change."""
    from healthscore.engine import trends as trends_mod

    if format not in ("table", "json", "csv"):
        raise typer.BadParameter(f"unknown format {format!r}; use table, json or csv")
    try:
        store, m = _open(db, model, scorecard)
        d = api.parse_as_of(as_of) if as_of else _midnight_today()
        result = trends_mod.classify(store, m, d, class_)
    except HealthscoreError as e:
        _fail(e)
    if format == "json":
        sys.stdout.write(json.dumps(result.to_pylist(), indent=1, default=str) + "\n")
    elif format == "csv":
        sink = pa.BufferOutputStream()
        pacsv.write_csv(result, sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
    else:
        table = RichTable(title=f"trends as of {d:%Y-%m-%d}", box=box.SIMPLE_HEAD)
        for col in ("account", "trend", "score now", "then", "change"):
            table.add_column(
                col, justify="right" if col in ("score now", "then", "change") else "left"
            )
        for r in result.to_pylist():
            table.add_row(
                r["account_id"],
                r["trend"],
                _num(r["score_now"]),
                _num(r["score_then"]),
                "-" if r["change"] is None else f"{r['change']:+.1f}",
            )
        out.print(table)


@app.command()
def backtest(
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
    format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="also write a self-contained HTML report")
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
) -> None:
    """How well the model's point-in-time scores would have predicted churn (and expansion)."""
    from healthscore.evaluate import backtest as bt
    from healthscore.views.terminal import progress_bar, render_backtest

    if format not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {format!r}; use table or json")
    if train_until is not None and not challenger:
        raise typer.BadParameter("--train-until goes with --challenger")
    if snapshot:
        if from_ or to or challenger or out_file:
            raise typer.BadParameter(
                "--snapshot scores once: --from/--to, --challenger and --out do not apply "
                "(calibrate --snapshot measures the challenger)"
            )
    elif from_ is None or to is None:
        raise typer.BadParameter("give --from and --to (or --snapshot for data with no history)")
    elif as_of is not None:
        raise typer.BadParameter("--as-of goes with --snapshot")
    extra, written = None, None
    try:
        store, m = _open(db, model, scorecard)
        other = load_model(vs).scorecard(scorecard) if vs is not None else None
        if snapshot:
            from healthscore.evaluate import snapshot as snap

            result = snap.backtest(
                store,
                m,
                as_of=api.parse_as_of(as_of) if as_of else None,
                outcome=outcome,
                vs=other,
                reps=bootstrap,
                seed=seed,
            )
            if format == "json":
                sys.stdout.write(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
            else:
                render_backtest(out, result)
            return
        with progress_bar(err) as progress:
            result = bt.backtest(
                store,
                m,
                api.parse_as_of(from_),
                api.parse_as_of(to),
                every=every,
                horizon=horizon,
                lead=lead,
                vs=other,
                reps=bootstrap,
                seed=seed,
                progress=progress,
            )
        if challenger:
            from healthscore.core.time import dates_between
            from healthscore.evaluate.challenger import challenge

            extra = challenge(
                store,
                m,
                dates_between(result.start, result.end, every),
                horizon=horizon,
                train_until=api.parse_as_of(train_until) if train_until else None,
                reps=bootstrap,
                seed=seed,
            )
        if out_file is not None:
            from healthscore.views import backtest_report as br

            models = (m, other) if other is not None else (m,)
            written = br.write_backtest_report(
                result,
                br.report_observations(store, result, models),
                out_file,
                models=models,
                challenger=extra,
            )
    except HealthscoreError as e:
        _fail(e)
    except ValueError as e:  # a malformed duration
        raise typer.BadParameter(str(e)) from None
    if format == "json":
        d = result.to_dict()
        if extra is not None:
            d["challenger"] = extra.to_dict()
        if written is not None:
            d["report"] = str(written.path)
        sys.stdout.write(json.dumps(d, indent=1, default=str) + "\n")
        return
    render_backtest(out, result)
    for line in extra.lines() if extra is not None else []:
        out.print(line, highlight=False, soft_wrap=True, markup=False)
    if written is not None:
        out.print(str(written), highlight=False, soft_wrap=True, markup=False)


@app.command()
def calibrate(
    train_until: Annotated[
        str | None,
        typer.Option("--train-until", help="learn only from outcome windows closed by D"),
    ] = None,
    outcome: Annotated[str, typer.Option(help="the outcome to predict: churn, ...")] = "churn",
    horizon: Annotated[str, typer.Option(help="an outcome within this long counts")] = "90d",
    every: Annotated[str, typer.Option(help="step between observation dates")] = "1mo",
    from_: Annotated[
        str | None,
        typer.Option("--from", help="first observation date [default: 90d after the first event]"),
    ] = None,
    target_recall: Annotated[
        float, typer.Option(help="share of outcomes the red band must catch (training)")
    ] = 0.85,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write the calibrated model file here")
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
    format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Learn weights, anchors, directions and bands from outcomes up to D; test after D."""
    from healthscore.evaluate import calibrate as cal
    from healthscore.views.terminal import progress_bar

    if format not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {format!r}; use table or json")
    if snapshot:
        if train_until or from_:
            raise typer.BadParameter(
                "--snapshot has no time to split on: --train-until and --from do not apply"
            )
        from healthscore.evaluate import snapshot as snap

        try:
            store, m = _open(db, model)
            r = snap.calibrate(
                store,
                m,
                as_of=api.parse_as_of(as_of) if as_of else None,
                outcome=outcome,
                folds=folds,
                target_recall=target_recall,
                seed=seed,
                out=out_file,
                reps=bootstrap,
                challenger=challenger,
            )
        except HealthscoreError as e:
            _fail(e)
        if format == "json":
            sys.stdout.write(json.dumps(r.to_dict(), indent=1, default=str) + "\n")
        else:
            from healthscore.views.terminal import render_snapshot_calibration

            render_snapshot_calibration(out, r)
        return
    if train_until is None:
        raise typer.BadParameter("give --train-until (or --snapshot for data with no history)")
    try:
        store, m = _open(db, model)
        with progress_bar(err) as progress:
            result = cal.calibrate(
                store,
                m,
                api.parse_as_of(train_until),
                outcome=outcome,
                horizon=horizon,
                every=every,
                start=api.parse_as_of(from_) if from_ else None,
                target_recall=target_recall,
                seed=seed,
                out=out_file,
                reps=bootstrap,
                progress=progress,
            )
    except HealthscoreError as e:
        _fail(e)
    except ValueError as e:  # a malformed duration
        raise typer.BadParameter(str(e)) from None
    from healthscore.views.terminal import render_calibration

    render_calibration(out, result)


def _midnight_today():
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)


@app.command()
def explain(
    account: Annotated[str, typer.Argument(help="account id")],
    as_of: AsOfOpt = None,
    model: ModelOpt = None,
    db: DbOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", help="text or json")] = "text",
    vs: Annotated[
        str | None, typer.Option("--vs", help="explain the change since this earlier date")
    ] = None,
    scorecard: ScorecardOpt = None,
) -> None:
    """Show why one account has its score (or, with --vs, why it moved)."""
    if format not in ("text", "json"):
        raise typer.BadParameter(f"unknown format {format!r}; use text or json")
    try:
        store, m = _open(db, model, scorecard)
        d = api.parse_as_of(as_of)
        _warn_freshness(store, m, d)
        if vs is not None:
            change = api.explain_change(store, m, account, d, vs)
        else:
            e = api.explain(store, m, account, d)
    except HealthscoreError as ex:
        _fail(ex)
    if vs is not None:
        if format == "json":
            sys.stdout.write(json.dumps(change.to_dict(), indent=1, default=str) + "\n")
            return
        from healthscore.views.terminal import render_change

        render_change(out, change)
        return
    if format == "json":
        sys.stdout.write(json.dumps(e.to_dict(), indent=1, default=str) + "\n")
        return
    from healthscore.views.terminal import render_explanation

    render_explanation(out, e)


@app.command()
def compare(
    vs: Annotated[Path, typer.Option("--vs", help="the current model file, to compare against")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="the new model file [default: ./healthscore.yaml]"),
    ] = None,
    as_of: AsOfOpt = None,
    db: DbOpt = None,
    scorecard: ScorecardOpt = None,
    top: Annotated[int, typer.Option(help="how many of the biggest score changes to show")] = 10,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Compare a new model with the current one: band migration, biggest changes, history."""
    from healthscore.evaluate.compare import compare_models

    if format not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {format!r}; use table or json")
    if top < 0:
        raise typer.BadParameter(f"--top must be 0 or more (got {top})")
    try:
        store, new = _open(db, model)
        current = load_model(vs)
        d = api.parse_as_of(as_of)
        both = (new.scorecard(scorecard), current.scorecard(scorecard))
        for w in dict.fromkeys(str(w) for m in both for w in store.freshness(m, d)):
            err.print(f"[yellow]Warning:[/] {w}", highlight=False)
        result = compare_models(store, new, current, d, scorecard=scorecard, top=top)
    except HealthscoreError as e:
        _fail(e)
    if format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=1, default=str) + "\n")
        return
    from healthscore.views.terminal import render_comparison

    render_comparison(out, result)


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="number of accounts")] = 1000,
    months: Annotated[int, typer.Option(help="months of history")] = 18,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
    directory: Annotated[Path, typer.Option("--dir", help="working folder")] = Path("."),
    history_months: Annotated[
        int, typer.Option(help="months of weekly score history to store (0: none)")
    ] = 12,
    report: Annotated[bool, typer.Option(help="write report.html")] = True,
) -> None:
    """Generate a realistic book of business, load it, score it, store weekly history,
    explain the rapid declines, write the portfolio report and summarise it."""
    from healthscore.views.terminal import progress_bar, render_portfolio

    try:
        with progress_bar(out) as progress:
            result = api.run_demo(
                directory,
                accounts=accounts,
                months=months,
                seed=seed,
                history_months=history_months,
                report=report,
                progress=progress,
            )
        render_portfolio(out, result, _command_name())
    except HealthscoreError as e:
        _fail(e)


@app.command()
def report(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="report as of this date/time (UTC) [default: today 00:00]"),
    ] = None,
    top: Annotated[int, typer.Option(help="how many movers and expansion candidates")] = 10,
    model: ModelOpt = None,
    db: DbOpt = None,
) -> None:
    """Write the portfolio report: one self-contained HTML file with charts, opens offline."""
    from healthscore.views.report import write_report

    if top < 1:
        raise typer.BadParameter(f"--top must be at least 1 (got {top})")
    try:
        store, m = _open(db, model)
        result = write_report(store, m, out_file, as_of, top=top)
    except HealthscoreError as e:
        _fail(e)
    for w in result.warnings:
        err.print(f"[yellow]Warning:[/] {w}", highlight=False)
    out.print(str(result), highlight=False, soft_wrap=True)


def _command_name() -> str:
    """How the user can call this program again: plain `healthscore` when it is on PATH."""
    exe = Path(sys.argv[0])
    if exe.name != "healthscore":
        return "healthscore"
    found = shutil.which("healthscore")
    if found and Path(found).resolve() == exe.resolve():
        return "healthscore"
    return str(exe.resolve())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
