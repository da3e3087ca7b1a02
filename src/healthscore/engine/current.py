"""Current scores: the rows of ``current_scores``, built from scored rows and trends.

Place in the flow: after :mod:`healthscore.engine.plan` (which scores the accounts) and
:mod:`healthscore.engine.trends` (their class from stored history); the store keeps the
rows (:mod:`healthscore.store.current`). The live service's rescorer calls these
functions in turn, holding the store only for the ones that read or write it:
:func:`trend_rows` (reads; after a rescore of everyone) or :func:`batch_trend_rows`
(reads; a micro-batch's accounts with their new scores), :func:`current_rows` (pure
Python), then :func:`healthscore.store.current.replace` (writes).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from healthscore.engine import explain as explain_mod
from healthscore.engine.history import SCORES, stored_dates
from healthscore.engine.snapshot import Snapshot
from healthscore.engine.trends import trends_expr
from healthscore.model import Model
from healthscore.store import Store
from healthscore.store.current import arrow_schema


def latest_stored(store: Store, model: Model, as_of: datetime) -> datetime | None:
    """The latest date of stored history at or before ``as_of`` (None: nothing stored)."""
    if not store.has_table(SCORES):
        return None
    dates = [d for d in stored_dates(store, model) if d <= as_of]
    return max(dates) if dates else None


def trend_rows(store: Store, model: Model, as_of: datetime) -> dict[str, dict]:
    """Per account: ``trend`` and ``change_30d`` (the change over the trend window) as
    of the latest stored history date at or before ``as_of``; empty without history."""
    at = latest_stored(store, model, as_of)
    if at is None:
        return {}
    rows = Snapshot(store, model).trends(at).select(["account_id", "trend", "change"])
    return {
        r["account_id"]: {"trend": r["trend"], "change_30d": r["change"]} for r in rows.to_pylist()
    }


def batch_trend_rows(
    store: Store, model: Model, wide: pa.Table, plan: BatchTrends | None = None
) -> dict[str, dict]:
    """Per account of ``wide`` (rows just scored, all as of one moment): ``trend`` and
    ``change_30d`` with that score as the latest point of its stored history, so a
    micro-batch's trend class moves with its score. Accounts without stored history in
    the trend windows get none. ``plan`` (kept by the caller for ``model``) runs the
    query compiled once (:class:`BatchTrends`); without it the query is built and
    compiled for this batch."""
    if not wide.num_rows:
        return {}
    # a plan built has read the history tables (and made them where missing)
    if not (plan is not None and plan.builds) and not store.has_table(SCORES):
        return {}
    if plan is not None:
        found = plan.run(store, wide)
        if found is not None:
            return found
    as_of = wide["as_of"][0].as_py()
    expr = trends_expr(store, model, as_of, latest=wide).select("account_id", "trend", "change")
    return _trend_dict(store.execute(expr))


def _trend_dict(rows: pa.Table) -> dict[str, dict]:
    return {
        r["account_id"]: {"trend": r["trend"], "change_30d": r["change"]} for r in rows.to_pylist()
    }


#: account slots of the compiled micro-batch trend queries (a batch is padded with NULL);
#: a larger batch runs the query whose accounts come as lists (:data:`MANY`). No 64 or
#: 256: DuckDB plans the query again at each run with its 3 values a slot bound, and
#: past 16 accounts the lists cost less (S store with 4 history dates, CPU ms p50 of 6,
#: slots against lists, load 5: 16 accounts 30 / 32, 40 accounts 74 / 39, 100 accounts
#: 236 / 37, 150 accounts 212 / 31; the same rows)
TREND_SLOTS = (1, 4, 16)
#: the plan of a batch of any size: its ids, scores and bands each one text parameter,
#: the values joined by :data:`_SEP` and split into rows by the query
MANY = None
#: what separates the values of a list parameter (an id holding it: built per batch)
_SEP = "\x1f"


class BatchTrends:
    """:func:`batch_trend_rows`'s query of one model (one scorecard of one version),
    built and compiled once per number of account slots, with the as-of date, the
    dates of the trend windows, and the accounts' ids, new scores and bands as
    parameters bound at each run (:meth:`~healthscore.store.Store.prepare`): a
    micro-batch pays for running the query, not for building it (75-100 ms; 0.5-1 s
    for the thousands of accounts of a batch under heavy ingest). A batch of more than
    ``TREND_SLOTS[-1]`` accounts (16) runs one plan whose accounts are a table made from
    three text parameters (the ids, scores and bands, each joined by one separator)."""

    def __init__(self, model: Model):
        self.model = model
        self._plans: dict[int | None, tuple] = {}
        self.builds = 0  # how many times the query was built and compiled

    def _prepared(self, store: Store, slots: int | None):
        from healthscore.engine.plan import ParamClock
        from healthscore.engine.trends import trends_of
        from healthscore.store import parameter

        found = self._plans.get(slots)
        if found is None:
            clock = ParamClock()
            if slots is MANY:
                latest = _listed(store)
            else:
                latest = (
                    [parameter(f"id{i}", "string") for i in range(slots)],
                    [parameter(f"score{i}", "float64") for i in range(slots)],
                    [parameter(f"band{i}", "string") for i in range(slots)],
                )
            expr = trends_of(store, self.model, clock.at, clock.earliest, latest)
            expr = expr.select("account_id", "trend", "change")
            found = self._plans[slots] = (store.prepare(expr), clock)
            self.builds += 1
        return found

    def prepare(self, store: Store, slots: int | None) -> None:
        """Build and compile the query for ``slots`` accounts (:data:`MANY`: any number
        past the largest slot) now, before a batch needs it."""
        if slots is not MANY:
            slots = next((n for n in TREND_SLOTS if n >= slots), MANY)
        self._prepared(store, slots)

    def run(self, store: Store, wide: pa.Table) -> dict[str, dict] | None:
        """:func:`batch_trend_rows` of ``wide``; None for a batch the compiled queries
        cannot carry (more than ``TREND_SLOTS[-1]`` accounts, one of whose ids holds
        the list separator: build the query for it)."""
        rows = wide.select(["account_id", "score", "band"]).to_pylist()
        slots = next((n for n in TREND_SLOTS if n >= len(rows)), MANY)
        values: dict[str, object] = {}
        if slots is MANY:
            scored = [r for r in rows if r["score"] is not None]  # no score, no point
            if not scored:
                return {}
            if any(_SEP in r["account_id"] or _SEP in (r["band"] or "") for r in scored):
                return None
            values["ids"] = _SEP.join(r["account_id"] for r in scored)
            values["scores"] = _SEP.join(float.__repr__(float(r["score"])) for r in scored)
            values["bands"] = _SEP.join(r["band"] or "" for r in scored)
        else:
            rows += [{"account_id": None, "score": None, "band": None}] * (slots - len(rows))
            for i, r in enumerate(rows):
                scored = r["score"] is not None  # an account without a score has no point
                values[f"id{i}"] = r["account_id"] if scored else None
                values[f"score{i}"] = r["score"] if scored else None
                values[f"band{i}"] = r["band"] if scored else None
        prepared, clock = self._prepared(store, slots)
        values.update(clock.values(wide["as_of"][0].as_py()))
        return _trend_dict(store.run_prepared(prepared, values))


def _listed(store: Store):
    """The table of a batch's ``account_id, score, band`` from the text parameters
    ``ids``, ``scores`` and ``bands`` (values joined by :data:`_SEP`, an empty band for
    none): each split into a list, the lists unnested side by side over a one-row
    table (an aggregate of at most one row of the scores table: one row even when it is
    empty)."""
    from healthscore.engine.history import SCORES
    from healthscore.store import parameter

    def listed(key: str):
        return parameter(key, "string").split(_SEP).unnest()

    head = store.stored(SCORES).limit(1)  # reads a row at most (a count would scan)
    one = head.aggregate(_rows=head.count())
    return one.select(
        account_id=listed("ids"),
        score=listed("scores").cast("float64"),
        band=listed("bands").nullif(""),
    )


def current_rows(
    model: Model, wide: pa.Table, trends: dict[str, dict], computed_at: datetime | None = None
) -> pa.Table:
    """The ``current_scores`` rows of scored ``wide`` rows (one per account)."""
    now = computed_at or datetime.now(UTC).replace(tzinfo=None)
    out = []
    static = explain_mod.Static(model)  # the model's parts, looked up once for the batch
    for r in wide.to_pylist():
        e = explain_mod.from_row(model, r, static)
        t = trends.get(r["account_id"], {})
        out.append(
            {
                "account_id": r["account_id"],
                "model_version": model.version,
                "scorecard": model.scorecard_name,
                "as_of": r["as_of"],
                "score": r["score"],
                "band": r["band"],
                "coverage": r["coverage"],
                "probability": r.get("probability"),
                "segment": r["segment"],
                "csm": r["csm"],
                "signals": r.get("signals"),
                "band_forced_by": r.get("band_forced_by"),
                "trend": t.get("trend"),
                "change_30d": t.get("change_30d"),
                "explanation": e.to_json(),
                "computed_at": now,
            }
        )
    return pa.Table.from_pylist(out, schema=arrow_schema())
