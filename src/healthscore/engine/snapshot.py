"""One date's queries of one model from plans compiled once: the scores of every account
or of a few (what :func:`healthscore.engine.asof.score`, ``explain`` and
``healthscore score`` run), the accounts left out, one date's trend classes, and what
they rest on.

Place in the flow: beside :mod:`healthscore.engine.plan` (whose parameter clock it
uses), under :func:`healthscore.engine.asof.score`, :func:`healthscore.api.score_accounts`
and :func:`healthscore.engine.asof.evidence`. Building and compiling the scoring
expression with Ibis costs far more than running it on a small book (about 1 s of CPU on
the tests' five accounts, against 0.2 s of DuckDB), and a command's start more still;
the expressions only depend on the model, which of its tables are empty, the columns of
the tables they read, the number of accounts asked for and healthscore's own code. So
each query here (and any query a caller builds with :meth:`Snapshot.run`) is built with
its dates (and account ids) as parameters (:class:`~healthscore.engine.plan.ParamClock`),
compiled once and kept by the store (:meth:`healthscore.store.Store.cached_plan`): in the
process, for any store whose tables have the same columns, and in the user's cache on
DuckDB, keyed by all of that; a repeat runs the kept SQL with the values bound, without
building anything (from the user's cache, without importing Ibis). A change to the model
(any part of it, not only its version), to the columns, to which tables are empty, or
to healthscore's code compiles again. The rows are those of the expressions built for
the date (:func:`healthscore.engine.asof.score_expr`; the tests check it).

This module imports nothing that builds expressions: the builders are imported by the
functions that build (on a miss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from healthscore.core.time import shift
from healthscore.engine.inputs import empty_tables, tables_needed
from healthscore.model import Model
from healthscore.store import Prepared, Store

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from healthscore.engine.plan import ParamClock


def bind_dates(recipes: dict[str, list], as_of: datetime) -> dict[str, datetime]:
    """The value of each date parameter at ``as_of``: its recipe is a list of chains of
    model durations, and the value the earliest of ``as_of`` moved back by each chain
    (one chain: simply the date moved back by it)."""

    def moved(chain) -> datetime:
        d = as_of
        for duration in chain:
            d = shift(d, duration)
        return d

    return {key: min(moved(c) for c in chains) for key, chains in recipes.items()}


#: account slots of the compiled plans for some accounts (a batch is padded with its
#: last id); more accounts than the largest run the plan of every account
SLOTS = (1, 4, 16, 64, 256)


def slots_for(ids: list[str] | None) -> int | None:
    """The account slots of the plan that scores ``ids`` (sorted, distinct; None: every
    account): the fewest that hold them, None past :data:`SLOTS`."""
    if ids is None or len(ids) > SLOTS[-1]:
        return None
    return next(n for n in SLOTS if n >= len(ids))


def bind_ids(ids: list[str], slots: int) -> dict[str, str | None]:
    """The values of the account parameters ``id0 ...`` of a plan of ``slots`` slots:
    ``ids`` padded with the last (no id at all: NULL, which matches no account)."""
    padded = ids + [ids[-1] if ids else None] * (slots - len(ids))
    return {f"id{i}": v for i, v in enumerate(padded)}


class Snapshot:
    """The cached plans of one model (one scorecard) on one store."""

    def __init__(self, store: Store, model: Model):
        self.store = store
        self.model = model
        #: the tables the model's metrics read that hold no row (part of every key)
        self.empty = tuple(empty_tables(store, model))
        #: the tables whose columns key the model's own queries: those they read, and
        #: those whose declared columns :func:`~.inputs.check_scorable` checks
        self.tables = tuple(dict.fromkeys([*tables_needed(model), *model.spec.columns]))
        self._key = (
            model.spec.model_dump_json(by_alias=True),
            model.scorecard_name,
            ",".join(self.empty),
        )

    def run(
        self,
        name: str,
        build: Callable[[ParamClock], ir.Table],
        as_of: datetime,
        *,
        tables: Sequence[str] | None = None,
        values: Mapping[str, object] | None = None,
    ) -> pa.Table:
        """Run the query ``build(clock)`` returns, at ``as_of``: ``name`` with the model,
        the empty tables and the columns of ``tables`` (None: of every table of the
        store) is its key in the cache (``build`` must depend on nothing else, and read
        no other table); ``clock.at(...)`` gives its dates as parameters, ``values`` the
        values of any other (:func:`~healthscore.store.parameter`)."""
        prepared, recipes = self.plan(name, build, tables)
        bound: dict[str, object] = dict(bind_dates(recipes, as_of))
        bound.update(values or {})
        return self.store.run_prepared(prepared, bound)

    def plan(
        self,
        name: str,
        build: Callable[[ParamClock], ir.Table],
        tables: Sequence[str] | None = None,
    ) -> tuple[Prepared, dict[str, list]]:
        """The compiled plan of :meth:`run`, and the recipes of its date parameters (see
        :func:`bind_dates`): shared, never change them."""

        def compiled():
            from healthscore.engine.plan import ParamClock

            clock = ParamClock()
            return build(clock), clock.recipes

        return self.store.cached_plan((name, *self._key), compiled, tables=tables)

    def score_plan(self, slots: int | None) -> tuple[Prepared, dict[str, list]]:
        """The compiled plan of the scores of ``slots`` accounts (None: every account),
        whose ids are the parameters ``id0 ...`` (:func:`bind_ids`); with the recipes of
        its dates. The plan of :func:`healthscore.engine.asof.score_expr`."""

        name = "scores" if slots is None else f"scores of {slots}"
        return self.plan(name, lambda clock: self.build_scores(clock, slots), self.tables)

    def build_scores(self, clock: ParamClock, slots: int | None = None) -> ir.Table:
        """The expression of the scores of ``slots`` accounts (None: every account), its
        dates from ``clock``, its account ids the parameters ``id0 ...``: what
        :meth:`score_plan` compiles, for a query built on it (whose :meth:`run` then
        reads :attr:`tables` too)."""
        from healthscore.engine.inputs import check_scorable
        from healthscore.engine.metrics import MetricBuilder
        from healthscore.engine.scoring import score_metrics
        from healthscore.store import parameter

        check_scorable(self.store, self.model)
        tables = self.store.tables(tables_needed(self.model))
        ids = None if slots is None else [parameter(f"id{i}", "string") for i in range(slots)]
        raw = MetricBuilder(self.model, tables, self.empty).build(clock, ids)
        return score_metrics(raw, self.model)

    def scores(self, as_of: datetime, account_ids: Iterable[str] | None = None) -> pa.Table:
        """The scores as of ``as_of`` of ``account_ids`` (None: every account), by
        account id: the rows and columns of :func:`healthscore.engine.asof.score_expr`.

        A plan per number of account slots (:data:`SLOTS`), the ids bound at each run;
        more accounts than the largest run the plan of every account, filtered."""
        ids = None if account_ids is None else sorted(set(account_ids))
        slots = slots_for(ids)
        prepared, recipes = self.score_plan(slots)
        values: dict[str, object] = dict(bind_dates(recipes, as_of))
        if slots is not None:
            values.update(bind_ids(ids, slots))
        result = self.store.run_prepared(prepared, values)
        if slots is None and ids is not None:
            import pyarrow.compute as pc

            result = result.filter(pc.is_in(result["account_id"], pa.array(ids, pa.string())))
        return result

    def left_out_counts(self, as_of: datetime) -> pa.Table:
        """How many accounts are left out as of ``as_of``, by ``reason`` (``n``)."""

        def build(clock):
            from healthscore.engine.metrics import MetricBuilder

            tables = self.store.tables(tables_needed(self.model))
            out = MetricBuilder(self.model, tables, self.empty).left_out(clock)
            return out.group_by("reason").aggregate(n=out.count())

        return self.run("left_out_counts", build, as_of, tables=self.tables)

    def left_out(self, as_of: datetime) -> pa.Table:
        """The accounts not scored as of ``as_of``: ``account_id, name, reason``, by id."""

        def build(clock):
            from healthscore.engine.metrics import MetricBuilder

            tables = self.store.tables(tables_needed(self.model))
            out = MetricBuilder(self.model, tables, self.empty).left_out(clock)
            return out.order_by("account_id")

        return self.run("left_out", build, as_of, tables=self.tables)

    def trends(self, as_of: datetime) -> pa.Table:
        """The trend class of every account with a stored score at ``as_of``: the rows of
        :func:`healthscore.engine.trends.trends_expr` (the history tables are made first
        where missing, as it makes them)."""
        from healthscore.engine.history import SCORES, ensure_tables

        ensure_tables(self.store)

        def build(clock):
            from healthscore.engine.trends import trends_of

            return trends_of(self.store, self.model, clock.at, clock.earliest)

        return self.run("trends", build, as_of, tables=[SCORES])
