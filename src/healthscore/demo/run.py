"""The demo: generate a book of business, load it, score it, store history, explain the
rapid declines and write the portfolio report, in a folder of its own.

Place in the flow: apart, above the views (it writes the report) and below the API,
which offers it as :func:`healthscore.api.run_demo`. The data itself comes from
:mod:`healthscore.demo.book`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from dateutil.relativedelta import relativedelta

from healthscore.core.files import make_folder, model_target, write_text_atomic
from healthscore.core.limits import MAX_DEMO_MONTHS
from healthscore.core.tables import TABLES
from healthscore.core.time import today
from healthscore.demo import book
from healthscore.engine import asof, trends
from healthscore.engine.explain import Change
from healthscore.errors import OutputError, SourceError, StoreError
from healthscore.model import Model, default_model_text, load_model
from healthscore.store import LoadResult, connect
from healthscore.views.report import write_report


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
    declines: list[Change] = field(default_factory=list)  # rapid declines, why
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

    if not 0 <= int(history_months) <= MAX_DEMO_MONTHS:  # before any work, not after it
        raise SourceError(
            f"demo: history months must be from 0 to {MAX_DEMO_MONTHS} (got {history_months})"
        )
    directory = make_folder(directory, param="directory")
    if report and (directory / "report.html").is_dir():  # before the store is built
        raise OutputError(
            f"cannot write the demo's report {directory / 'report.html'}: it is a folder",
            hint="move the folder away, or run the demo in another folder (`directory`)",
            path=directory / "report.html",
        )
    model_path = directory / "healthscore.yaml"
    if model_target(model_path, force=False):
        write_text_atomic(model_path, default_model_text())
    model = load_model(model_path)
    db_path = directory / "healthscore.duckdb"
    if db_path.exists():
        existing = connect(db_path)
        is_demo = existing.meta().get("demo") == "true"
        existing.close()
        if not is_demo:
            raise StoreError(
                f"{db_path} exists and holds data that is not demo data; not replacing it",
                hint="run the demo in another folder with --dir",
            )
        db_path.unlink()
    end = end or today()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    note = progress or (lambda step, frac: None)
    tables = book.generate(accounts=accounts, months=months, seed=seed, end=end, progress=note)
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
    scores = asof.score(store, model, end)
    seconds["score"] = time.perf_counter() - t0
    result = DemoResult(directory, db_path, model_path, model, end, loads, scores, seconds)
    if history_months:
        t0 = time.perf_counter()
        start = end - relativedelta(months=history_months)
        result.history = asof.backfill(store, model, start, end, "1w", progress=progress)
        result.declines = trends.rapid_declines(store, model, end)
        seconds["history"] = time.perf_counter() - t0
    if report:
        t0 = time.perf_counter()
        note("writing the report", 0.0)
        result.report_path = write_report(store, model, directory / "report.html", end).path
        seconds["report"] = time.perf_counter() - t0
    return result
