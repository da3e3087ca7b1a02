"""The Python API the CLI and the service are thin layers over.

Place in the flow: glue, not logic. It parses as-of dates, asks ``store`` for the
tables, ``metrics`` and ``scoring`` for the expression, runs it, and hands results to
``explain``. Functions here take a store and a model and return Arrow tables or plain
data; they print nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from healthscore import explain as explain_mod
from healthscore.errors import ScoringError, StoreError
from healthscore.metrics import MetricBuilder
from healthscore.model import Model, load_model
from healthscore.scoring import score_expr as _score_steps
from healthscore.store import LoadResult, Store


def parse_as_of(value: str | date | datetime | None) -> datetime:
    """An as-of date as a naive UTC datetime; None means now.

    A date means 00:00 UTC of that day; a timestamp with an offset is converted to UTC.

    >>> parse_as_of("2025-01-01")
    datetime.datetime(2025, 1, 1, 0, 0)
    >>> parse_as_of("2025-01-01T12:30:00+02:00")
    datetime.datetime(2025, 1, 1, 10, 30)
    """
    if value is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if isinstance(value, datetime):
        d = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            d = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ScoringError(
                f"as-of date {text!r} is not a date",
                hint="use YYYY-MM-DD or an ISO timestamp such as 2025-01-01T12:00:00Z",
            ) from None
    if d.tzinfo is not None:
        d = d.astimezone(UTC).replace(tzinfo=None)
    return d


def score_expr(store: Store, model: Model, as_of=None, account_ids=None) -> ir.Table:
    """The Ibis expression scoring every account (or ``account_ids``) as of ``as_of``."""
    d = parse_as_of(as_of)
    check_scorable(store, model)
    raw = MetricBuilder(model, store.tables(tables_needed(model))).build(d, account_ids)
    return _score_steps(raw, model)


def tables_needed(model: Model) -> list[str]:
    """The store tables a model's expression reads."""
    names = [n for n in model.tables_used() if n != "subscriptions"] + ["subscriptions"]
    texts = [m.formula or "" for m in model.spec.metrics.values()]
    texts += [model.spec.population or ""] + [r.when for r in model.spec.rules.values()]
    if any("has_flag" in t for t in texts):
        names.append("flags")
    return names


def check_scorable(store: Store, model: Model) -> None:
    """Raise when the model cannot score this store: unfitted percentiles, missing columns."""
    unfitted = model.unfitted_percentiles()
    if unfitted:
        raise ScoringError(
            f"percentile normalisation of {', '.join(unfitted)} is not fitted yet",
            hint="run `healthscore model fit-percentiles --as-of <date>` once",
        )
    _check_declared_columns(store, model)


def _check_declared_columns(store: Store, model: Model) -> None:
    """Every extra column the model declares must be in the store, with a usable type."""
    problems = []
    for table, cols in model.spec.columns.items():
        have = store.columns(table)
        for col, typ in cols.items():
            if col not in have:
                problems.append(
                    f"{table}.{col} is declared in the model but the store has no such column "
                    "(load a file that has it)"
                )
            elif typ == "timestamp" and not have[col].startswith("timestamp"):
                problems.append(f"{table}.{col} is declared timestamp but stored as {have[col]}")
            elif typ == "string" and have[col] == "boolean":
                # a `map:` of Yes/No would then match nothing: every value would be missing
                problems.append(
                    f"{table}.{col} is declared string but stored as boolean (the file's "
                    "yes/no values were read as true/false): declare it boolean and "
                    "normalise it with bad: 0, good: 1"
                )
    if problems:
        raise ScoringError(f"{model.file}: " + "; ".join(problems))


def score(store: Store, model: Model, as_of=None, account_ids=None) -> pa.Table:
    """Score every account in the population at ``as_of``; one row per account.

    Columns: see :mod:`healthscore.scoring`. Rows are ordered by account id, so the same
    data and model give identical output.
    """
    return store.execute(score_expr(store, model, as_of, account_ids))


def explain(store: Store, model: Model, account_id: str, as_of=None) -> explain_mod.Explanation:
    """One account's score, pillar by pillar and metric by metric."""
    d = parse_as_of(as_of)
    rows = score(store, model, d, [account_id]).to_pylist()
    if not rows:
        raise ScoringError(
            f"account {account_id!r} is not scored as of {d:%Y-%m-%d %H:%M}: "
            + _why_not_scored(store, account_id, d)
        )
    return explain_mod.from_row(model, rows[0])


def explain_change(
    store: Store, model: Model, account_id: str, as_of=None, vs=None, *, stored: bool = True
) -> explain_mod.Change:
    """Why one account's score moved between ``vs`` and ``as_of``, line by line, exactly.

    When both scores are in the stored history of this model version (and ``stored``),
    the change is explained from what was stored then; otherwise both are scored live.
    """
    if vs is None:
        raise ScoringError("explaining a change needs the earlier date (--vs)")
    d2, d1 = parse_as_of(as_of), parse_as_of(vs)
    if stored:
        from healthscore.history import stored_explanations

        seen = stored_explanations(store, model, [account_id], [d1, d2])
        if (account_id, d1) in seen and (account_id, d2) in seen:
            return explain_mod.decompose(seen[(account_id, d1)], seen[(account_id, d2)])
    rows = {r["as_of"]: r for r in _score_dates(store, model, account_id, [d1, d2])}
    for d in (d1, d2):
        if d not in rows:
            raise ScoringError(
                f"account {account_id!r} is not scored as of {d:%Y-%m-%d %H:%M}: "
                + _why_not_scored(store, account_id, d)
            )
    before = explain_mod.from_row(model, rows[d1])
    after = explain_mod.from_row(model, rows[d2])
    return explain_mod.decompose(before, after)


def _score_dates(store: Store, model: Model, account_id: str, dates) -> list[dict]:
    out = []
    for d in dates:
        out += score(store, model, d, [account_id]).to_pylist()
    return out


def _why_not_scored(store: Store, account_id: str, d: datetime) -> str:
    acc = store.table("accounts")
    found = acc.filter(acc.account_id == account_id).select("created_at").to_pyarrow()
    if not found.num_rows:
        raise ScoringError(f"unknown account {account_id!r}")
    created = found["created_at"][0].as_py()
    if created is None or created >= d:
        return f"it was created on {created:%Y-%m-%d}, after that date"
    subs = store.table("subscriptions")
    subs = subs.filter((subs.account_id == account_id) & (subs.start_date <= d))
    ends = [r["end_date"] for r in subs.select("end_date").to_pyarrow().to_pylist()]
    if ends and all(e is not None and e <= d for e in ends):
        return (
            f"none of its subscriptions is in force then (the last ended on {max(ends):%Y-%m-%d})"
        )
    return "the model's `population:` filter leaves it out"


def load_file(
    store: Store,
    table: str,
    path: str | Path,
    mapping: dict[str, str | list[str]] | None = None,
    *,
    date_format: str | None = None,
    rejects: str | Path | None = None,
    account_from: str | None = None,
    constants: dict[str, str] | None = None,
    values: dict[str, dict[str, str | None]] | None = None,
) -> LoadResult:
    """Read, validate and load one file; with ``rejects`` invalid rows go to that CSV.

    ``mapping`` renames columns (a list of names feeds several columns from one).
    ``account_from`` names a canonical table (e.g. ``subscriptions``) whose primary key
    the file carries instead of ``account_id``; the account is looked up in the store.
    ``constants`` gives a column the file lacks one value on every row. ``values``
    recodes a source column's values (``{column: {text: new text or None}}``); rows whose
    key or a required value is recoded to None are skipped and counted. See
    :func:`healthscore.sources.read_source`; :func:`healthscore.sources.read_spec` reads
    all of these from a load spec file.

    Rows whose key is stored already keep the stored values of the columns this file
    does not supply, so files with different columns about the same rows add up.
    """
    from healthscore.sources import read_source, write_rejects
    from healthscore.tables import get_table

    lookup = None
    if account_from:
        key = get_table(account_from).primary_key
        ref = store.table(account_from).select(key, "account_id").to_pyarrow().to_pydict()
        if not ref[key]:
            raise StoreError(
                f"--account-from {account_from}: the store's {account_from} table is empty",
                hint=f"load {account_from} first",
            )
        lookup = (key, dict(zip(ref[key], ref["account_id"], strict=True)))
    batch = read_source(
        path,
        table,
        mapping,
        date_format=date_format,
        allow_rejects=rejects is not None,
        account_lookup=lookup,
        constants=constants,
        values=values,
    )
    n_rejected = 0
    if rejects is not None:  # written even when empty, so an old rejects file never lingers
        n_rejected = write_rejects(batch, rejects)
    result = store.load(
        table, batch.data, rejected=n_rejected, skipped=batch.skipped, columns=batch.supplied
    )
    result.skip_reason = batch.skip_reason
    result.warnings = list(batch.warnings)
    if table != "accounts" and "account_id" in batch.data.column_names:
        known = store.table("accounts").account_id.to_pyarrow()
        found = pc.is_in(batch.data["account_id"], value_set=known.combine_chunks())
        result.unknown_accounts = int(pc.sum(pc.invert(found)).as_py() or 0)
    return result


def fit_percentiles(
    store: Store, model_path: str | Path, as_of=None, out: str | Path | None = None
) -> Model:
    """Fit the model's percentile normalisations as of a date; write them into the file.

    Writes to ``out`` (default: the model file itself) and returns the fitted model,
    whose version differs from the unfitted one.
    """
    from healthscore.percentiles import fit_percentiles as fit
    from healthscore.percentiles import write_fitted_model

    d = parse_as_of(as_of)
    model = load_model(model_path)
    fitted = fit(store, model, d)
    if not fitted:
        raise ScoringError(
            f"{model_path}: no scored metric uses `percentile:` normalisation; nothing to fit"
        )
    return write_fitted_model(model_path, fitted, d, out or model_path)


def history(
    store: Store,
    model: Model,
    start,
    end,
    every: str = "1w",
    *,
    rebuild: bool = False,
    progress: Callable[[str, float], None] | None = None,
):
    """Backfill point-in-time scores from ``start`` to ``end`` every ``every``.

    Only dates not stored yet for this model version are computed (``rebuild`` forces
    them). Returns a :class:`healthscore.history.BackfillResult`.
    """
    from healthscore import history as hist
    from healthscore import timeline

    dates = hist.dates_between(parse_as_of(start), parse_as_of(end), every)
    return hist.backfill(
        store,
        model,
        dates,
        lambda d: score(store, model, d),
        rebuild=rebuild,
        progress=progress,
        score_dates=lambda ds: timeline.score_dates(store, model, ds),
    )


@dataclass
class DemoResult:
    """What ``healthscore demo`` built: where, what was loaded, and the scores."""

    directory: Path
    db_path: Path
    model_path: Path
    model: Model
    as_of: datetime
    loads: list[LoadResult]
    scores: pa.Table
    seconds: dict[str, float] = field(default_factory=dict)
    history: object = None  # history.BackfillResult of the weekly backfill
    declines: list[explain_mod.Change] = field(default_factory=list)  # rapid declines, why
    report_path: Path | None = None


def run_demo(
    directory: str | Path = ".",
    *,
    accounts: int = 1000,
    months: int = 18,
    seed: int = 7,
    end: datetime | None = None,
    history_months: int = 12,
    report: bool = True,
    progress: Callable[[str, float], None] | None = None,
) -> DemoResult:
    """Generate demo data, load it into a fresh store in ``directory``, score it, store
    ``history_months`` of weekly history, explain the rapid declines and write the report.

    Writes ``healthscore.yaml`` (the default model, unless one exists),
    ``healthscore.duckdb`` and ``report.html``. A store that does not hold demo data is
    never replaced.
    """
    from healthscore import demo
    from healthscore.model import default_model_text
    from healthscore.store import connect
    from healthscore.tables import TABLES

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "healthscore.yaml"
    if not model_path.exists():
        model_path.write_text(default_model_text(), encoding="utf-8")
    model = load_model(model_path)
    db_path = directory / "healthscore.duckdb"
    if db_path.exists():
        existing = connect(db_path)
        is_demo = existing.meta().get("demo") == "true"
        existing.con.disconnect()
        if not is_demo:
            raise StoreError(
                f"{db_path} exists and holds data that is not demo data; not replacing it",
                hint="run the demo in another folder with --dir",
            )
        db_path.unlink()
    end = end or datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    note = progress or (lambda step, frac: None)
    tables = demo.generate(accounts=accounts, months=months, seed=seed, end=end, progress=note)
    seconds["generate"] = time.perf_counter() - t0
    store = connect(db_path)
    store.set_meta("demo", "true")
    loads = []
    t0 = time.perf_counter()
    names = [n for n in TABLES if n in tables]
    for i, name in enumerate(names):
        note(f"loading {name}", i / len(names))
        loads.append(store.load(name, tables[name]))
    note("loaded", 1.0)
    seconds["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = score(store, model, end)
    seconds["score"] = time.perf_counter() - t0
    result = DemoResult(directory, db_path, model_path, model, end, loads, scores, seconds)
    if history_months:
        from dateutil.relativedelta import relativedelta

        t0 = time.perf_counter()
        start = end - relativedelta(months=history_months)
        result.history = history(store, model, start, end, "1w", progress=progress)
        result.declines = rapid_declines(store, model, end)
        seconds["history"] = time.perf_counter() - t0
    if report:
        from healthscore.report import write_report

        t0 = time.perf_counter()
        note("writing the report", 0.0)
        result.report_path = write_report(store, model, directory / "report.html", end).path
        seconds["report"] = time.perf_counter() - t0
    return result


def rapid_declines(store: Store, model: Model, as_of=None) -> list[explain_mod.Change]:
    """Accounts in rapid decline at ``as_of`` (from stored history), each with why:
    the change from its highest stored score of the decline window, steepest first."""
    from healthscore.trends import classify

    d = parse_as_of(as_of)
    rows = classify(store, model, d, "rapid_decline").to_pylist()
    changes = [explain_change(store, model, r["account_id"], d, r["peak_as_of"]) for r in rows]
    return sorted(changes, key=lambda c: (c.delta, c.account_id))
