"""Scores as of a date: build the expression, run it through the store, explain it.

Place in the flow: the engine's entry point. It asks :mod:`healthscore.engine.inputs`
what the model reads, :mod:`~healthscore.engine.metrics` and
:mod:`~healthscore.engine.scoring` for the expression, the store to run it, and
:mod:`~healthscore.engine.explain` to turn a row into lines. Many dates at once go
through :mod:`~healthscore.engine.timeline` and are stored by
:mod:`~healthscore.engine.history`. Functions return Arrow tables or result objects
and print nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import ibis.expr.types as ir
import pyarrow as pa

from healthscore.core.time import dates_between, parse_as_of
from healthscore.engine import explain as explain_mod
from healthscore.engine import history as hist
from healthscore.engine import timeline
from healthscore.engine.inputs import check_scorable, tables_needed
from healthscore.engine.metrics import MetricBuilder
from healthscore.engine.scoring import score_metrics
from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store


def score_expr(store: Store, model: Model, as_of=None, account_ids=None) -> ir.Table:
    """The Ibis expression scoring every account (or ``account_ids``) as of ``as_of``."""
    d = parse_as_of(as_of)
    check_scorable(store, model)
    raw = MetricBuilder(model, store.tables(tables_needed(model))).build(d, account_ids)
    return score_metrics(raw, model)


def score(store: Store, model: Model, as_of=None, account_ids=None) -> pa.Table:
    """Score every account in the population at ``as_of``; one row per account.

    Columns: see :mod:`healthscore.engine.scoring`. Rows are ordered by account id, so
    the same data and model give identical output.
    """
    return store.execute(score_expr(store, model, as_of, account_ids))


def explain(store: Store, model: Model, account_id: str, as_of=None) -> explain_mod.Explanation:
    """One account's score, pillar by pillar and metric by metric."""
    d = parse_as_of(as_of)
    rows = score(store, model, d, [account_id]).to_pylist()
    if not rows:
        raise ScoringError(
            f"account {account_id!r} is not scored as of {d:%Y-%m-%d %H:%M}: "
            + why_not_scored(store, account_id, d)
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
        raise ScoringError("explaining a change needs the earlier date (vs)")
    d2, d1 = parse_as_of(as_of), parse_as_of(vs, "vs")
    if stored:
        seen = hist.stored_explanations(store, model, [account_id], [d1, d2])
        if (account_id, d1) in seen and (account_id, d2) in seen:
            return explain_mod.decompose(seen[(account_id, d1)], seen[(account_id, d2)])
    rows = {}
    for d in (d1, d2):
        for r in score(store, model, d, [account_id]).to_pylist():
            rows[r["as_of"]] = r
    for d in (d1, d2):
        if d not in rows:
            raise ScoringError(
                f"account {account_id!r} is not scored as of {d:%Y-%m-%d %H:%M}: "
                + why_not_scored(store, account_id, d)
            )
    before = explain_mod.from_row(model, rows[d1])
    after = explain_mod.from_row(model, rows[d2])
    return explain_mod.decompose(before, after)


def why_not_scored(store: Store, account_id: str, d: datetime) -> str:
    """In words, why an account has no score at ``d`` (raises for an unknown account)."""
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


def backfill(
    store: Store,
    model: Model,
    start,
    end,
    every: str = "1w",
    *,
    rebuild: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> hist.BackfillResult:
    """Store point-in-time scores from ``start`` to ``end`` every ``every``.

    Only dates not stored yet for this model version are computed (``rebuild`` forces
    them); many dates are scored in one shared pass (:mod:`healthscore.engine.timeline`).
    """
    dates = dates_between(parse_as_of(start, "start"), parse_as_of(end, "end"), every)
    return backfill_dates(store, model, dates, rebuild=rebuild, progress=progress)


def backfill_dates(
    store: Store,
    model: Model,
    dates: list[datetime],
    *,
    rebuild: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> hist.BackfillResult:
    """Store point-in-time scores at each of ``dates`` (only those not stored yet)."""
    return hist.backfill(
        store,
        model,
        dates,
        lambda d: score(store, model, d),
        rebuild=rebuild,
        progress=progress,
        score_dates=lambda ds: timeline.score_dates(store, model, ds),
    )
