"""The Python API: the facade the CLI (and the coming service) is a thin layer over.

Place in the flow: the top of the library, below only ``cli/`` and ``service/``. One
function per capability; each takes a store and a model (or paths) and returns a result
object or an Arrow table, prints nothing, and holds no logic beyond calling the layer
that owns the job: ``engine`` scores and explains, ``evaluate`` judges, ``views`` render
files, ``demo`` builds a book of business. Its messages name Python parameters in
backticks (`` `train_until` ``); a front end translates them into its own words.

Start-up is kept cheap: the heavy layers (Ibis, pandas, scikit-learn, Plotly) are
imported inside the functions that use them, and the names this module re-exports from
the layer that owns them (:data:`_OWNERS`) are imported on first use, so
``import healthscore.api`` (and ``healthscore --help``) loads none of them.

>>> import healthscore.api as api
>>> api.parse_as_of("2025-01-01")
datetime.datetime(2025, 1, 1, 0, 0)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthscore.errors import HealthscoreError

if TYPE_CHECKING:  # the lazily re-exported names, for readers and type checkers
    import pyarrow as pa

    from healthscore.core.files import disk_error
    from healthscore.core.signals import interruptible, interruption
    from healthscore.core.time import parse_as_of, today
    from healthscore.demo.run import DemoResult, run_demo
    from healthscore.engine.asof import Evidence, explain, explain_change, score, score_expr
    from healthscore.engine.explain import Change, Explanation
    from healthscore.engine.flags import add_flag, list_flags, resolve_flag
    from healthscore.engine.history import BackfillResult
    from healthscore.engine.inputs import check_scorable, tables_needed
    from healthscore.engine.trends import rapid_declines
    from healthscore.evaluate.backtest import BacktestResult
    from healthscore.evaluate.calibrate import CalibrationResult
    from healthscore.evaluate.challenger import ChallengerResult
    from healthscore.evaluate.compare import Comparison
    from healthscore.evaluate.observations import ObservationPlan
    from healthscore.evaluate.probability import ProbabilityFit
    from healthscore.evaluate.snapshot import SnapshotCalibration
    from healthscore.evaluate.suggest import Suggestion
    from healthscore.model import Model, json_schema, load_model
    from healthscore.sources import LoadSpec
    from healthscore.sources.load import load_file
    from healthscore.store import LoadResult, Store, connect, store_file
    from healthscore.views.backtest_report import BacktestReportResult
    from healthscore.views.report import write_report

__all__ = [
    "ArgumentError",
    "BacktestRun",
    "Calibration",
    "Change",
    "Comparison",
    "ComparisonRun",
    "DemoResult",
    "Evidence",
    "ExplainResult",
    "Explanation",
    "InitResult",
    "LoadSpec",
    "Model",
    "ProbabilityRun",
    "Project",
    "ScoreResult",
    "Store",
    "TrendsResult",
    "add_flag",
    "account_trends",
    "calibrate_model",
    "check_against_store",
    "check_scorable",
    "compare_versions",
    "connect",
    "disk_error",
    "interruptible",
    "interruption",
    "explain",
    "explain_account",
    "explain_change",
    "fit_percentiles",
    "fit_probability_curve",
    "history",
    "init_project",
    "json_schema",
    "list_flags",
    "load_file",
    "load_model",
    "load_plan",
    "load_table",
    "model_path",
    "observation_plan",
    "open_connections",
    "open_project",
    "parse_as_of",
    "rapid_declines",
    "resolve_flag",
    "run_backtest",
    "run_demo",
    "score",
    "score_accounts",
    "suggest_model",
    "score_expr",
    "store_file",
    "tables_needed",
    "today",
    "validate_model",
    "write_predictions",
    "write_report",
]

#: name -> (module that owns it, its name there), imported on first use (PEP 562)
_OWNERS: dict[str, tuple[str, str]] = {
    "disk_error": ("healthscore.core.files", "disk_error"),
    "interruptible": ("healthscore.core.signals", "interruptible"),
    "interruption": ("healthscore.core.signals", "interruption"),
    "store_file": ("healthscore.store", "store_file"),
    "parse_as_of": ("healthscore.core.time", "parse_as_of"),
    "today": ("healthscore.core.time", "today"),
    "Model": ("healthscore.model", "Model"),
    "load_model": ("healthscore.model", "load_model"),
    "json_schema": ("healthscore.model", "json_schema"),
    "Store": ("healthscore.store", "Store"),
    "connect": ("healthscore.store", "connect"),
    "LoadSpec": ("healthscore.sources", "LoadSpec"),
    "load_file": ("healthscore.sources.load", "load_file"),
    "score": ("healthscore.engine.asof", "score"),
    "score_expr": ("healthscore.engine.asof", "score_expr"),
    "explain": ("healthscore.engine.asof", "explain"),
    "explain_change": ("healthscore.engine.asof", "explain_change"),
    "Explanation": ("healthscore.engine.explain", "Explanation"),
    "Evidence": ("healthscore.engine.asof", "Evidence"),
    "Change": ("healthscore.engine.explain", "Change"),
    "check_scorable": ("healthscore.engine.inputs", "check_scorable"),
    "tables_needed": ("healthscore.engine.inputs", "tables_needed"),
    "rapid_declines": ("healthscore.engine.trends", "rapid_declines"),
    "add_flag": ("healthscore.engine.flags", "add_flag"),
    "resolve_flag": ("healthscore.engine.flags", "resolve_flag"),
    "list_flags": ("healthscore.engine.flags", "list_flags"),
    "Comparison": ("healthscore.evaluate.compare", "Comparison"),
    "write_report": ("healthscore.views.report", "write_report"),
    "DemoResult": ("healthscore.demo.run", "DemoResult"),
    "run_demo": ("healthscore.demo.run", "run_demo"),
}

DEFAULT_MODEL = "healthscore.yaml"
DEFAULT_STORE = "healthscore.duckdb"

Progress = Callable[[str, float], None]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _OWNERS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNERS))


class ArgumentError(HealthscoreError):
    """Arguments that do not go together (e.g. `train_until` without `challenger`).

    A front end reports it as a usage error (the CLI: exit code 2).
    """


# --- projects ----------------------------------------------------------------------------


@dataclass
class Project:
    """An open store and the model seen through one scorecard."""

    store: Store
    model: Model


def model_path(model: str | Path | None = None) -> Path | None:
    """The model file to use: ``model``, else ``./healthscore.yaml`` when it exists,
    else None (the built-in default model)."""
    if model is not None:
        return Path(model)
    return Path(DEFAULT_MODEL) if Path(DEFAULT_MODEL).exists() else None


def open_connections() -> int:
    """How many store connections this process has open (see
    :func:`healthscore.store.open_connections`); none before a store was first opened."""
    if "healthscore.store" not in sys.modules:  # no store opened: do not import one
        return 0
    from healthscore.store import open_connections

    return open_connections()


def open_project(
    db: str | Path | None = None,
    model: str | Path | None = None,
    scorecard: str | None = None,
    *,
    read_only: bool = False,
) -> Project:
    """Open the existing store at ``db`` and the model file ``model`` (see
    :func:`model_path`), seen through ``scorecard`` (default: ``health``).

    ``read_only`` (for a capability that only reads: scoring without storing, explain,
    trends, compare, the report) opens a DuckDB store read-only, so it works where the
    user may not write and beside other readers."""
    from healthscore.model import load_model
    from healthscore.store import connect

    store = connect(db, create=False, read_only=read_only)
    return Project(store, load_model(model_path(model)).scorecard(scorecard))


@dataclass
class InitResult:
    """What :func:`init_project` wrote: the model file (or kept it) and the store."""

    model_file: Path
    kept: bool  # the model file existed and was kept
    db_path: Path


def init_project(directory: str | Path = ".", *, force: bool = False) -> InitResult:
    """Write a starter project: the default model (kept if present, unless ``force``)
    and an empty store."""
    from healthscore.core.files import make_folder, model_target, write_text_atomic
    from healthscore.model import default_model_text
    from healthscore.store import connect

    directory = make_folder(directory, param="directory")
    target = directory / DEFAULT_MODEL
    kept = not model_target(target, force=force)
    if not kept:
        write_text_atomic(target, default_model_text())
    db = directory / DEFAULT_STORE
    connect(db).close()
    return InitResult(target, kept, db)


def validate_model(model: str | Path | None = None) -> Model:
    """Load and check the model file (see :func:`model_path`); raises a ``ModelError``
    listing every problem with its line and key path."""
    from healthscore.model import load_model

    return load_model(model_path(model))


def check_against_store(model: Model, db: str | Path | None = None) -> list[str]:
    """What the store ``db`` (default: ./healthscore.duckdb or $HEALTHSCORE_DB, when it
    exists) would make of ``model`` as of today: its tables with no rows and the category
    values the model does not name. Nothing when there is no store.

    The scores run as the plan ``healthscore score`` keeps in the user's cache
    (:class:`~healthscore.engine.snapshot.Snapshot`): validating a model and scoring
    with it compile its query once between them."""
    from healthscore.core.time import today
    from healthscore.engine.asof import evidence
    from healthscore.engine.snapshot import Snapshot
    from healthscore.store import connect, resolve_url

    url = resolve_url(db)
    if url.startswith("duckdb://") and not Path(url.removeprefix("duckdb://")).exists():
        if db is None:
            return []
    store = connect(db, create=False, read_only=True)  # it only reads
    try:
        if model.unfitted_percentiles():
            return []
        d = today()
        plans = Snapshot(store, model)
        return evidence(store, model, d, plans.scores(d), plans=plans).warnings
    finally:
        store.close()


# --- loading -----------------------------------------------------------------------------


def load_plan(
    table: str,
    spec: str | Path | None = None,
    mapping: list[str] | tuple[str, ...] = (),
    constants: list[str] | tuple[str, ...] = (),
    date_format: str | None = None,
    number_format: str | None = None,
    key: str | None = None,
) -> LoadSpec:
    """How to load a file into ``table``: the load spec file ``spec`` with ``mapping``
    (``source=canonical`` items), ``constants`` (``column=value`` items),
    ``date_format``, ``number_format`` and ``key`` (``col,col``) added; where they
    disagree the arguments win."""
    from healthscore.sources import LoadSpec, parse_constants, parse_key, parse_mapping, read_spec

    plan = read_spec(spec, table) if spec else LoadSpec()
    return plan.with_flags(
        parse_mapping(mapping),
        parse_constants(constants),
        date_format,
        number_format=number_format,
        key=parse_key(key),
    )


def load_table(
    store: Store,
    table: str,
    file: str | Path,
    plan: LoadSpec | None = None,
    *,
    rejects: str | Path | None = None,
    account_from: str | None = None,
    progress: Progress | None = None,
    raw: bool = False,
) -> LoadResult:
    """Load ``file`` into ``table`` following ``plan`` (see :func:`load_plan`);
    ``progress(step, fraction)`` hears of each step of a long load. Invalid rows go to
    the CSV file ``rejects`` when given (written as they are with ``raw``, else with
    formula-like text neutralized for spreadsheets)."""
    from healthscore.sources import LoadSpec
    from healthscore.sources.load import load_file

    plan = plan or LoadSpec()
    return load_file(
        store,
        table,
        file,
        plan.mapping,
        date_format=plan.date_format,
        number_format=plan.number_format,
        key=plan.key,
        rejects=rejects,
        account_from=account_from,
        constants=plan.constants,
        values=plan.values,
        progress=progress,
        domains=plan.domains,
        raw=raw,
    )


# --- scoring and explaining --------------------------------------------------------------


def _freshness(store: Store, models, as_of: datetime) -> list[str]:
    """The stale-table warnings of every model, each once."""
    return list(dict.fromkeys(str(w) for m in models for w in store.freshness(m, as_of)))


def _empty_tables(store: Store, model: Model) -> list[str]:
    """The warning naming the model's tables that hold no row (none when all have rows)."""
    from healthscore.engine.inputs import empty_tables, empty_tables_note

    note = empty_tables_note(model, empty_tables(store, model))
    return [note] if note else []


@dataclass
class ScoreResult:
    """Every account's score as of a date (one wide row each), with warnings (stale or
    empty tables, category values the model does not name), what the scores rest on
    (``evidence``: accounts left out and why) and, when asked, the accounts left out."""

    scores: pa.Table
    model: Model
    as_of: datetime
    warnings: list[str] = field(default_factory=list)
    total: int | None = None  # accounts scored before the filters (None: not filtered)
    sort: str = "score"
    evidence: Evidence | None = None
    #: with include_unscored: account_id, name, reason (and segment, csm in a listing)
    unscored: pa.Table | None = None

    def to_dict(self) -> list[dict]:
        """One nested object per account: its lines per metric and rule, and its name,
        ARR in force and renewal date when the list has them; then, when asked for, one
        ``{account_id, name, segment, csm, left_out}`` object per account left out."""
        from healthscore.engine.explain import long_rows
        from healthscore.portfolio import FACTS

        out = []
        for r in self.scores.to_pylist():
            row = long_rows(self.model, r)
            facts = {k: r[k] for k in FACTS if k in r}
            if "renewal_date" in facts and facts["renewal_date"] is not None:
                facts["renewal_date"] = facts["renewal_date"].isoformat()
            out.append({**row, **facts})
        return out + [
            {**{k: v for k, v in r.items() if k != "reason"}, "left_out": r["reason"]}
            for r in (self.unscored.to_pylist() if self.unscored is not None else [])
        ]

    def rows(self) -> pa.Table:
        """One row per account (csv, parquet): the scores, then the accounts left out
        (when asked for) with no score and their ``left_out`` reason."""
        if self.unscored is None:
            return self.scores
        import pyarrow as pa

        names = self.unscored.column_names
        out = self.unscored.rename_columns([n if n != "reason" else "left_out" for n in names])
        return pa.concat_tables([self.scores, out], promote_options="default")


def score_accounts(
    store: Store,
    model: Model,
    as_of=None,
    *,
    need_probability: bool = False,
    sort: str | None = None,
    bands: list[str] | None = None,
    segment: str | None = None,
    csm: str | None = None,
    limit: int | None = None,
    include_unscored: bool = False,
) -> ScoreResult:
    """Score every account as of ``as_of`` (default today 00:00 UTC); ``need_probability``
    fails early when the model has no fitted ``probability:`` section; with
    ``include_unscored`` the accounts left out are listed with their reason, after the
    scored ones: the filters below apply to them too (``bands`` leaves none, as an
    account left out has no band), and ``limit`` counts both lists.

    With any of ``sort`` (score, arr, renewal, name), ``bands`` (green/yellow/red or
    the scorecard's names for them), ``segment``, ``csm`` or ``limit``, the scores are
    the account list of :func:`healthscore.portfolio.account_list`: each row with its
    name, ARR in force and renewal date, filtered and sorted (score: the end that needs
    attention first); otherwise one row per account by account id.

    The queries run as plans kept in the user's cache
    (:class:`~healthscore.engine.snapshot.Snapshot`): a repeat on the same model and
    store schema builds and compiles nothing."""
    from healthscore.core.time import parse_as_of
    from healthscore.engine.asof import evidence
    from healthscore.engine.snapshot import Snapshot

    wanted = None
    if bands is not None:
        wanted = [model.band_of_name(b) for b in bands]
        if None in wanted:
            bad = [b for b, w in zip(bands, wanted, strict=True) if w is None]
            names = ", ".join(f"{model.band_name(b)}" for b in ("green", "yellow", "red"))
            raise ArgumentError(f"`bands` {', '.join(bad)}: not a band of this scorecard ({names})")

    if need_probability and model.spec.probability is None:
        raise HealthscoreError(
            f"{model.file}: no `probability:` section, so no ARR at risk",
            hint="run `healthscore model fit-probability --until <date>` first",
        )
    d = parse_as_of(as_of)
    plans = Snapshot(store, model)
    listing = not (
        sort is None and wanted is None and segment is None and csm is None and limit is None
    )
    if listing:  # the scores with their facts, in order: one query
        from healthscore.portfolio import listed_scores

        sort = sort or "score"
        scores = listed_scores(store, model, d, plans, sort)
    else:
        scores = plans.scores(d)
    book = evidence(store, model, d, scores, plans=plans)
    warnings = _freshness(store, [model], d) + book.warnings
    unscored = None
    if include_unscored:
        from healthscore.engine.asof import left_out

        unscored = left_out(store, model, d)
    if not listing:
        return ScoreResult(scores, model, d, warnings, evidence=book, unscored=unscored)
    from healthscore.portfolio import account_list, left_out_list, with_segment_and_csm

    filtered = not (wanted is None and segment is None and csm is None and limit is None)
    if unscored is not None:  # as the scored accounts have them: to filter, and to show
        unscored = with_segment_and_csm(store, model, unscored)
    listed = account_list(
        model,
        scores,
        sort=sort,
        bands=wanted,
        segment=segment,
        csm=csm,
        limit=limit,
        left_out=unscored if filtered else None,
    )
    if unscored is not None and filtered:  # the same filters; --limit counts both lists
        room = None if limit is None else limit - listed.num_rows
        unscored = left_out_list(unscored, bands=wanted, segment=segment, csm=csm, limit=room)
    return ScoreResult(
        listed,
        model,
        d,
        warnings,
        total=scores.num_rows,
        sort=sort,
        evidence=book,
        unscored=unscored,
    )


@dataclass
class ExplainResult:
    """One account's explanation, or (with ``vs``) why its score moved; and warnings."""

    explanation: Explanation | None = None
    change: Change | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return (self.change or self.explanation).to_dict()


def explain_account(
    store: Store,
    model: Model,
    account_id: str,
    as_of=None,
    vs=None,
    *,
    names: tuple[str, str] = ("vs", "as_of"),
) -> ExplainResult:
    """Why ``account_id`` has its score as of ``as_of`` (default today 00:00 UTC), or with ``vs``
    (an earlier date) why it moved since then.

    ``vs`` must be before ``as_of``: a :class:`ScoringError` names both (as ``names``
    calls them: the service's ``from`` and ``to``) rather than explaining the change
    backwards."""
    from healthscore.core.time import parse_as_of
    from healthscore.engine.asof import explain, explain_change

    d = parse_as_of(as_of, names[1])
    if vs is not None:
        before = parse_as_of(vs, names[0])
        if before >= d:
            raise _dates_out_of_order(before, d, names)
    warnings = _freshness(store, [model], d) + _empty_tables(store, model)
    if vs is not None:
        return ExplainResult(
            change=explain_change(store, model, account_id, d, before), warnings=warnings
        )
    return ExplainResult(explanation=explain(store, model, account_id, d), warnings=warnings)


def _dates_out_of_order(before: datetime, after: datetime, names: tuple[str, str]):
    from healthscore.errors import ScoringError

    def when(d: datetime) -> str:
        return f"{d:%Y-%m-%d}" if d.time() == datetime.min.time() else f"{d:%Y-%m-%d %H:%M}"

    first, second = names
    how = "is the same moment as" if before == after else "is after"
    return ScoringError(
        f"`{first}` {when(before)} {how} `{second}` {when(after)}",
        hint=f"why a score moved is read from the earlier date (`{first}`) to the later "
        f"(`{second}`)",
    )


def history(
    store: Store,
    model: Model,
    start,
    end,
    every: str = "1w",
    *,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> BackfillResult:
    """Store point-in-time scores from ``start`` to ``end`` every ``every`` into the
    store's history; only dates missing for this model version are computed unless
    ``rebuild``."""
    from healthscore.engine.asof import backfill

    return backfill(store, model, start, end, every, rebuild=rebuild, progress=progress)


@dataclass
class TrendsResult:
    """Accounts by trend class from stored history, as of a date."""

    trends: pa.Table
    as_of: datetime

    def to_dict(self) -> list[dict]:
        return self.trends.to_pylist()


def account_trends(
    store: Store, model: Model, as_of=None, trend: str | None = None
) -> TrendsResult:
    """Accounts by trend class (only ``trend`` when given) as of ``as_of`` (default:
    today 00:00 UTC, the last date stored history usually has)."""
    from healthscore.core.time import parse_as_of
    from healthscore.engine.trends import classify

    d = parse_as_of(as_of)
    return TrendsResult(classify(store, model, d, trend), d)


# --- model files -------------------------------------------------------------------------


def fit_percentiles(
    store: Store, model_path: str | Path, as_of=None, out: str | Path | None = None
) -> Model:
    """Fit the model's percentile normalisations as of a date; write them into the file.

    Writes to ``out`` (default: the model file itself) and returns the fitted model,
    whose version differs from the unfitted one.
    """
    from healthscore.core.time import parse_as_of
    from healthscore.errors import ScoringError
    from healthscore.evaluate import percentiles
    from healthscore.model import load_model

    d = parse_as_of(as_of)
    fitted = percentiles.fit_percentiles(store, load_model(model_path), d)
    if not fitted:
        raise ScoringError(
            f"{model_path}: no scored metric uses `percentile:` normalisation; nothing to fit"
        )
    return percentiles.write_fitted_model(model_path, fitted, d, out or model_path)


def suggest_model(
    store: Store,
    out: str | Path | None = None,
    *,
    until=None,
    outcome: str = "churn",
    horizon: str = "90d",
    every: str = "4w",
    snapshot: bool = False,
) -> Suggestion:
    """Propose a model from the loaded tables: metrics per table with rows, anchors from
    the data's percentiles, each metric's AUC against ``outcome`` (outcomes up to
    ``until`` only), grouped into pillars, strongly correlated metrics left out of the
    score; the validated, commented file is written to ``out`` when given."""
    from healthscore.core.time import parse_as_of
    from healthscore.evaluate.suggest import suggest

    return suggest(
        store,
        until=parse_as_of(until, "until") if until is not None else None,
        outcome=outcome,
        horizon=horizon,
        every=every,
        snapshot=snapshot,
        out=out,
    )


@dataclass
class ProbabilityRun:
    """A fitted ``probability:`` section, what it was fitted on, and the model written."""

    fit: ProbabilityFit
    model: Model  # the model file written


def fit_probability_curve(
    store: Store,
    model: Model,
    until,
    *,
    outcome: str = "churned",
    horizon: str = "90d",
    every: str = "1mo",
    start=None,
    method: str = "isotonic",
    out: str | Path | None = None,
    progress: Progress | None = None,
    lead: str = "30d",
    anniversaries: str | None = None,
    pairs: str | Path | None = None,
) -> ProbabilityRun:
    """Fit the probability of ``outcome`` within ``horizon`` from the score, out of
    sample, and write it into the model file (``out``; default: in place) under the
    model's scorecard. Observations as :func:`observation_plan` says (``every``,
    ``anniversaries`` with ``lead``, or ``pairs``)."""
    from healthscore.evaluate import probability

    plan = observation_plan(store, every, lead, anniversaries, pairs)
    fit = probability.fit_probability_details(
        store,
        model,
        until,
        outcome=outcome,
        horizon=horizon,
        every=every,
        start=start,
        method=method,
        progress=progress,
        plan=plan,
    )
    written = probability.write_probability(
        model.file, fit.probability, out or model.file, scorecard=model.scorecard_name
    )
    return ProbabilityRun(fit, written)


# --- evaluation --------------------------------------------------------------------------


def observation_plan(
    store: Store,
    every: str = "1mo",
    lead: str = "30d",
    anniversaries: str | None = None,
    pairs: str | Path | None = None,
) -> ObservationPlan:
    """Which (account, date) pairs an evaluation observes: every account every ``every``
    (the default), each account ``lead`` before each ``anniversaries`` period of its
    first contract, or the pairs of the file ``pairs`` (columns ``account_id``,
    ``as_of``). ``lead`` is also how long before an outcome the score is judged."""
    from healthscore.evaluate.observations import ObservationPlan

    if anniversaries is not None and pairs is not None:
        raise ArgumentError("give `anniversaries` or `pairs`, not both")
    if (anniversaries is not None or pairs is not None) and every != "1mo":
        raise ArgumentError(
            "`every` is the grid's step: it does not go with `anniversaries` or `pairs`"
        )
    if anniversaries is not None:
        return ObservationPlan.anniversaries(anniversaries, lead)
    if pairs is not None:
        return ObservationPlan.read_pairs(store, pairs, lead)
    return ObservationPlan.grid(every, lead)


@dataclass
class BacktestRun:
    """A backtest with, when asked, the challenger, the HTML report and the challenger's
    held-out predictions written to a file."""

    result: BacktestResult
    challenger: ChallengerResult | None = None
    report: BacktestReportResult | None = None
    predictions: Path | None = None

    def to_dict(self) -> dict:
        d = self.result.to_dict()
        if self.challenger is not None:
            d["challenger"] = self.challenger.to_dict()
        if self.report is not None:
            d["report"] = str(self.report.path)
        if self.predictions is not None:
            d["predictions"] = str(self.predictions)
        return d


def _predictions_format(path: Path) -> str:
    """``csv`` or ``parquet`` by the file's extension (anything else is refused)."""
    fmt = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(path.suffix.lower())
    if fmt is None:
        raise ArgumentError(
            f"`predictions` {path.name}: name a .csv or .parquet file", hint="e.g. predictions.csv"
        )
    return fmt


def write_predictions(challenger: ChallengerResult, path: str | Path) -> Path:
    """The challenger's held-out predictions (account, date, segment, the weighted
    model's score and band, the label, renewed, the probability and every feature) as
    CSV (text safe in a spreadsheet) or Parquet, by ``path``'s extension, written whole
    or not at all."""
    import pyarrow as pa

    from healthscore.views.export import write_rows

    path = Path(path)
    fmt = _predictions_format(path)
    frame = challenger.predictions
    write_rows(pa.Table.from_pandas(frame, preserve_index=False), fmt, path, param="predictions")
    return path


def run_backtest(
    store: Store,
    model: Model,
    start=None,
    end=None,
    *,
    every: str = "1mo",
    horizon: str = "90d",
    lead: str = "30d",
    vs: Model | None = None,
    reps: int = 200,
    seed: int = 0,
    challenger: bool = False,
    train_until=None,
    report: str | Path | None = None,
    snapshot: bool = False,
    as_of=None,
    outcome: str = "churn",
    progress: Progress | None = None,
    anniversaries: str | None = None,
    pairs: str | Path | None = None,
    predictions: str | Path | None = None,
) -> BacktestRun:
    """How well ``model``'s point-in-time scores (beside ``vs``) would have predicted
    the outcomes, from ``start`` to ``end``; with ``challenger`` a learned challenger is
    measured beside it (trained on horizons closed by ``train_until``; ``predictions``
    names a .csv or .parquet file for its held-out predictions), with ``report`` the
    HTML report is written there. The observations are :func:`observation_plan`'s
    (``every``; or ``anniversaries``; or ``pairs``, whose dates give the default
    ``start`` and ``end``). With ``snapshot`` (data with no history) every account is
    scored once, as of ``as_of``, and labelled by ``outcome``."""
    from healthscore.core.time import parse_as_of

    _check_resampling(reps, seed)
    if train_until is not None and not challenger:
        raise ArgumentError("`train_until` goes with `challenger`")
    if predictions is not None and not challenger:
        raise ArgumentError("`predictions` are the challenger's: they go with `challenger`")
    if predictions is not None:
        _predictions_format(Path(predictions))  # before the work, not after
    if snapshot:
        if anniversaries is not None or pairs is not None:
            raise ArgumentError("`snapshot` scores once: `anniversaries` and `pairs` do not apply")
        if start or end or challenger or report:
            raise ArgumentError(
                "`snapshot` scores once: `start`/`end`, `challenger` and `report` do not apply "
                "(calibrate with `snapshot` measures the challenger)"
            )
        from healthscore.evaluate import snapshot as snap
        from healthscore.evaluate.backtest import record_run

        d = parse_as_of(as_of) if as_of else None
        result = snap.backtest(store, model, as_of=d, outcome=outcome, vs=vs, reps=reps, seed=seed)
        record_run(store, result)
        return BacktestRun(result)
    if as_of is not None:
        raise ArgumentError("`as_of` goes with `snapshot`")
    plan = observation_plan(store, every, lead, anniversaries, pairs)
    span = plan.span()
    if span is not None:  # a list of pairs: its own dates by default
        start = start if start is not None else span[0]
        end = end if end is not None else span[1]
    if start is None or end is None:
        raise ArgumentError("give `start` and `end` (or `snapshot` for data with no history)")
    from healthscore.evaluate import backtest

    start, end = parse_as_of(start, "start"), parse_as_of(end, "end")
    held_out = None
    if challenger:  # every model is reported on the challenger's held-out dates only
        from healthscore.engine.asof import backfill_dates
        from healthscore.evaluate.challenger import split_dates

        asked = parse_as_of(train_until, "train_until") if train_until else None
        seen = plan.observed(store, start, end)
        dates = seen.dates
        train_until, _, test_dates = split_dates(dates, asked)
        for m in (model, vs) if vs is not None else (model,):  # the training dates too
            backfill_dates(store, m, dates, progress=progress)
        held_out = (start, test_dates[0])
    result = backtest.backtest(
        store,
        model,
        held_out[1] if held_out else start,
        end,
        horizon=horizon,
        vs=vs,
        reps=reps,
        seed=seed,
        progress=progress,
        plan=plan,
    )
    backtest.record_run(store, result)  # the dashboard's model page shows the last one
    run = BacktestRun(result)
    if challenger:
        from healthscore.evaluate.challenger import challenge

        result.notes.insert(
            0,
            f"held out: every figure is measured on the observation dates from "
            f"{result.start:%Y-%m-%d} to {result.end:%Y-%m-%d}; the challenger learned from "
            f"earlier dates (from {held_out[0]:%Y-%m-%d}) whose horizon closed by "
            f"{train_until:%Y-%m-%d}",
        )
        run.challenger = challenge(
            store,
            model,
            dates,
            horizon=horizon,
            train_until=asked,
            reps=reps,
            seed=seed,
            pairs=seen.pairs,
        )
        run.challenger.plan = plan.describe()
        if predictions is not None:
            run.predictions = write_predictions(run.challenger, predictions)
    if report is not None:
        from healthscore.views import backtest_report

        models = (model, vs) if vs is not None else (model,)
        run.report = backtest_report.write_backtest_report(
            result,
            backtest_report.report_observations(store, result, models),
            report,
            models=models,
            challenger=run.challenger,
        )
    return run


@dataclass
class Calibration:
    """A calibration on history (``result``) or on snapshot data (``snapshot``)."""

    result: CalibrationResult | None = None
    snapshot: SnapshotCalibration | None = None

    def to_dict(self) -> dict:
        if self.snapshot is not None:
            return self.snapshot.to_dict()
        r = self.result
        old, new = r.auc()
        return {
            "model": r.model.label,
            "version": r.model.version,
            "out": str(r.out) if r.out else None,
            "train_until": r.train_until.isoformat(),
            "outcome": r.outcome,
            "horizon": r.horizon,
            "every": r.every,
            "lead": r.lead,
            "plan": r.plan.describe() if r.plan is not None else None,
            "observations": r.observations,
            "positives": r.positives,
            "accounts": r.accounts,
            "roc_auc": {"old": old, "new": new},
            "bands": {"old": r.old_bands, "new": r.new_bands},
            "weights": {c.metric: {"old": c.old_weight, "new": c.new_weight} for c in r.metrics},
            "training": {
                "old": {"recall": r.old_train_recall, "fpr": r.old_train_fpr},
                "new": {"recall": r.train_recall, "fpr": r.train_fpr},
            },
            "red_share": {"old": r.old_red_share, "new": r.red_share, "cap": r.red_cap},
            "review": r.review,
            "notes": r.notes,
        }


def _check_resampling(reps: int, seed: int, folds: int | None = None) -> None:
    """That ``reps`` (0: figures without intervals), ``seed`` and ``folds`` can be used:
    a negative seed or count was a NumPy traceback, a huge ``reps`` a matrix of ``reps``
    x accounts filling the memory."""
    from healthscore.core.limits import MAX_FOLDS, MAX_REPS

    if not 0 <= reps <= MAX_REPS:
        raise ArgumentError(f"`reps` must be from 0 to {MAX_REPS:,} (got {reps})")
    if seed < 0:
        raise ArgumentError(f"`seed` must be 0 or more (got {seed})")
    if folds is not None and not 2 <= folds <= MAX_FOLDS:
        raise ArgumentError(f"`folds` must be from 2 to {MAX_FOLDS} (got {folds})")


def calibrate_model(
    store: Store,
    model: Model,
    train_until=None,
    *,
    outcome: str = "churn",
    horizon: str = "90d",
    every: str = "1mo",
    start=None,
    target_recall: float = 0.85,
    max_red_share: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    reps: int = 200,
    snapshot: bool = False,
    as_of=None,
    folds: int = 5,
    challenger: bool = True,
    progress: Progress | None = None,
    lead: str = "30d",
    anniversaries: str | None = None,
    pairs: str | Path | None = None,
) -> Calibration:
    """Learn weights, anchors, directions and bands from the outcomes whose window
    closed by ``train_until`` and test after it; with ``snapshot`` (data with no
    history) judge by stratified cross-validation in ``folds``. The red band holds at
    most ``max_red_share`` of the training observations (default: 1.5 x the current
    model's red share, at least 5 %). The calibrated model file is written to ``out``
    when given. The observations are :func:`observation_plan`'s (``every``,
    ``anniversaries`` or ``pairs``); the held-out backtest judges ``lead`` before each
    outcome."""
    from healthscore.core.time import parse_as_of

    _check_resampling(reps, seed, folds if snapshot else None)
    if snapshot:
        if train_until or start or anniversaries is not None or pairs is not None:
            raise ArgumentError(
                "`snapshot` has no time to split on: `train_until`, `start`, `anniversaries` "
                "and `pairs` do not apply"
            )
        from healthscore.evaluate import snapshot as snap

        return Calibration(
            snapshot=snap.calibrate(
                store,
                model,
                as_of=parse_as_of(as_of) if as_of else None,
                outcome=outcome,
                folds=folds,
                target_recall=target_recall,
                max_red_share=max_red_share,
                seed=seed,
                out=out,
                reps=reps,
                challenger=challenger,
            )
        )
    if train_until is None:
        raise ArgumentError("give `train_until` (or `snapshot` for data with no history)")
    from healthscore.evaluate import calibrate

    plan = observation_plan(store, every, lead, anniversaries, pairs)
    if start is None and plan.span() is not None:
        start = plan.span()[0]

    return Calibration(
        result=calibrate.calibrate(
            store,
            model,
            parse_as_of(train_until, "train_until"),
            outcome=outcome,
            horizon=horizon,
            every=every,
            start=parse_as_of(start, "start") if start else None,
            target_recall=target_recall,
            max_red_share=max_red_share,
            seed=seed,
            out=out,
            reps=reps,
            progress=progress,
            lead=lead,
            plan=plan,
        )
    )


@dataclass
class ComparisonRun:
    """A comparison of two models, with the stale-data warnings of both and what each
    model's scores rest on (``evidence``: ``new`` and ``current``, accounts left out and
    why)."""

    comparison: Comparison
    warnings: list[str] = field(default_factory=list)
    evidence: dict[str, Evidence] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = self.comparison.to_dict()
        out["evidence"] = {name: book.to_dict() for name, book in self.evidence.items()}
        return out


def compare_versions(
    store: Store,
    new: Model,
    current: str | Path,
    as_of=None,
    *,
    scorecard: str | None = None,
    top: int = 10,
) -> ComparisonRun:
    """Compare the model ``new`` with the current model file ``current`` as of
    ``as_of`` (default today 00:00 UTC): band migration, biggest changes, stored history,
    and how many accounts each model leaves out (not scored) and why."""
    from healthscore.core.time import parse_as_of
    from healthscore.engine.asof import evidence
    from healthscore.evaluate.compare import compare_models
    from healthscore.model import load_model

    current_model = load_model(current)
    d = parse_as_of(as_of)
    both = (new.scorecard(scorecard), current_model.scorecard(scorecard))
    books = {"new": evidence(store, both[0], d), "current": evidence(store, both[1], d)}
    warnings = _freshness(store, both, d)
    for book in books.values():  # empty tables: once, though both models read them
        warnings += [w for w in book.warnings if w not in warnings]
    result = compare_models(store, new, current_model, d, scorecard=scorecard, top=top)
    return ComparisonRun(result, warnings, books)
