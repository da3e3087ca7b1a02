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
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import TYPE_CHECKING

import pyarrow as pa

from healthscore.core.limits import quoted
from healthscore.core.time import dates_between, parse_as_of
from healthscore.engine.inputs import (
    check_scorable,
    empty_tables_note,
    tables_needed,
)
from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from healthscore.engine import explain as explain_mod
    from healthscore.engine import history as hist
    from healthscore.engine.snapshot import Snapshot

# the modules that build Ibis expressions are imported by the functions that use them:
# `healthscore score` on a plan kept in the cache (:mod:`healthscore.engine.snapshot`)
# reads Evidence and the warnings from here without building anything


def score_expr(store: Store, model: Model, as_of=None, account_ids=None) -> ir.Table:
    """The Ibis expression scoring every account (or ``account_ids``) as of ``as_of``."""
    from healthscore.engine.inputs import empty_tables
    from healthscore.engine.metrics import MetricBuilder
    from healthscore.engine.scoring import score_metrics

    d = parse_as_of(as_of)
    check_scorable(store, model)
    tables = store.tables(tables_needed(model))
    raw = MetricBuilder(model, tables, empty_tables(store, model)).build(d, account_ids)
    return score_metrics(raw, model)


@dataclass
class Evidence:
    """What the scores of one date rest on: how many accounts were left out and why, the
    tables with no rows, and warnings about data the model cannot read as meant."""

    as_of: datetime
    accounts: int  # rows of the accounts table
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> accounts
    empty_tables: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return self.accounts - sum(self.left_out.values())

    def summary(self) -> str:
        """``scored 866 of 1,000 accounts as of 2025-07-01; left out: 120 not yet created,
        14 no subscription in force``."""
        text = f"scored {self.scored:,} of {self.accounts:,} accounts as of {self.as_of:%Y-%m-%d}"
        if self.as_of.time() != time(0):
            text += f" {self.as_of:%H:%M} UTC"
        if self.left_out:
            text += "; left out: " + ", ".join(f"{n:,} {why}" for why, n in self.left_out.items())
        return text

    def to_dict(self) -> dict:
        return {
            "as_of": self.as_of.isoformat(),
            "accounts": self.accounts,
            "scored": self.scored,
            "left_out": dict(self.left_out),
            "empty_tables": list(self.empty_tables),
            "warnings": list(self.warnings),
        }


def evidence(
    store: Store,
    model: Model,
    as_of=None,
    scores: pa.Table | None = None,
    *,
    plans: Snapshot | None = None,
) -> Evidence:
    """What scoring the whole book as of ``as_of`` rests on (see :class:`Evidence`);
    given the ``scores`` of that date, also the category values the model does not name.

    The accounts left out are counted by a plan kept in the cache (``plans``, the
    model's :class:`~healthscore.engine.snapshot.Snapshot` when the caller has one)."""
    from healthscore.engine.snapshot import Snapshot

    d = parse_as_of(as_of)
    plans = plans if plans is not None else Snapshot(store, model)
    empty = list(plans.empty)
    counts = plans.left_out_counts(d).to_pylist()
    order = {why: i for i, why in enumerate(LEFT_OUT_REASONS)}
    counts.sort(key=lambda r: order.get(r["reason"], len(order)))
    notes = [n for n in [empty_tables_note(model, empty)] if n]
    if scores is not None:
        notes += unmatched_categories(model, scores)
    return Evidence(d, store.count("accounts"), {r["reason"]: r["n"] for r in counts}, empty, notes)


def unmatched_categories(model: Model, scores: pa.Table) -> list[str]:
    """Warnings naming the values in ``scores`` (segments, ``map:`` metrics) that the
    model does not name, with how many accounts hold each: they are never defaulted
    silently. Values match whatever their case and surrounding spaces."""
    from collections import Counter

    def counted(values: pa.ChunkedArray, known: set[str]) -> str | None:
        # counted in Python (a column of one value per account): pyarrow.compute is
        # not imported for it on a repeat `score`, and no Python value goes to Arrow
        counts = Counter(values.to_pylist())
        found = sorted(
            (
                (v, n)
                for v, n in counts.items()
                if v is not None and str(v).strip().lower() not in known
            ),
            key=lambda vc: (-vc[1], str(vc[0])),
        )
        if not found:
            return None
        # quoted as written (repr would spell unusual characters as escapes)
        shown = ", ".join(f"'{v}' ({n:,} account{'s' if n != 1 else ''})" for v, n in found[:10])
        return shown + (f" and {len(found) - 10} more" if len(found) > 10 else "")

    out = []
    if model.spec.segments and "segment" in scores.column_names:
        names = model.named_segments()
        odd = counted(scores["segment"], {n.strip().lower() for n in names})
        named = ", ".join("'" + n + "'" for n in names)
        if odd:
            out.append(
                f"segment values the model does not name get the default weights and bands: "
                f"{odd}; the model names {named} (list a value "
                "under `segments: weights:` to name it, `{}` keeps the default weights)"
            )
    for _, m, use in model.scored_metrics():
        if use.map is None or m not in scores.column_names:
            continue
        odd = counted(scores[m], {k.strip().lower() for k in use.map})
        if odd:
            out.append(
                f"{m}: values its `map:` does not name count as missing data: {odd}; "
                "add them to the map"
            )
    return out


def left_out(store: Store, model: Model, as_of=None) -> pa.Table:
    """The accounts not scored as of ``as_of``: ``account_id, name, reason``, by id
    (a plan compiled once: :meth:`~healthscore.engine.snapshot.Snapshot.left_out`)."""
    from healthscore.engine.snapshot import Snapshot

    return Snapshot(store, model).left_out(parse_as_of(as_of))


#: why an account is not scored at a date, in the order they are checked
LEFT_OUT_REASONS = ("not yet created", "no subscription in force", "outside the population")


def score(store: Store, model: Model, as_of=None, account_ids=None) -> pa.Table:
    """Score every account in the population at ``as_of``; one row per account.

    Columns: see :mod:`healthscore.engine.scoring`. Rows are ordered by account id, so
    the same data and model give identical output.

    The query is the plan of :func:`score_expr` compiled once per model, store schema,
    empty tables and number of accounts, kept in the process
    (:meth:`~healthscore.engine.snapshot.Snapshot.scores`): a store whose tables have
    the same columns as one scored before, or another date, builds nothing.
    """
    from healthscore.engine.snapshot import Snapshot

    return Snapshot(store, model).scores(parse_as_of(as_of), account_ids)


def explain(store: Store, model: Model, account_id: str, as_of=None) -> explain_mod.Explanation:
    """One account's score, pillar by pillar and metric by metric."""
    from healthscore.engine import explain as explain_mod

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
    from healthscore.engine import explain as explain_mod
    from healthscore.engine import history as hist

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
        raise ScoringError(f"unknown account {quoted(account_id)}")
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
    """Store point-in-time scores at each of ``dates`` (only those not stored yet); the
    result's notes say what the last date's scores rest on."""
    from healthscore.engine import history as hist
    from healthscore.engine import timeline

    result = hist.backfill(
        store,
        model,
        dates,
        lambda d: score(store, model, d),
        rebuild=rebuild,
        progress=progress,
        score_dates=lambda ds: timeline.score_dates(store, model, ds),
    )
    if dates:
        book = evidence(store, model, max(dates))
        result.notes = [*book.warnings, book.summary()]
    return result
