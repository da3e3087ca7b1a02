"""One date's scores of every account, and what they rest on, from plans kept in the
cache: what ``healthscore score`` runs.

Place in the flow: beside :mod:`healthscore.engine.plan` (whose parameter clock it
uses), under :func:`healthscore.api.score_accounts` and
:func:`healthscore.engine.asof.evidence`. Building and compiling the scoring expression
with Ibis, with Ibis's import, costs a command more than running it at 10,000 accounts;
the expressions only depend on the model, which of its tables are empty, the store's
tables and columns and healthscore's own code. So each query here (the scores, the
accounts left out counted by reason, and any query a caller builds with :meth:`run`) is
built with its dates as parameters (:class:`~healthscore.engine.plan.ParamClock`),
compiled once and kept in the user's cache by the store
(:meth:`healthscore.store.Store.cached_plan`), keyed by all of that; a repeat runs the
kept SQL with the dates bound, without importing Ibis. A change to the model (any
part of it), to the store's columns, to which tables are empty, or to healthscore's code
compiles again. The rows are those of :func:`healthscore.engine.asof.score` (the tests
check it).

This module imports nothing that builds expressions: the builders are imported by the
functions that build (on a miss).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from healthscore.core.time import shift
from healthscore.engine.inputs import empty_tables
from healthscore.model import Model
from healthscore.store import Store

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


class Snapshot:
    """The cached plans of one model (one scorecard) on one store."""

    def __init__(self, store: Store, model: Model):
        self.store = store
        self.model = model
        #: the tables the model's metrics read that hold no row (part of every key)
        self.empty = tuple(empty_tables(store, model))
        self._key = (
            model.spec.model_dump_json(by_alias=True),
            model.scorecard_name,
            ",".join(self.empty),
        )

    def run(self, name: str, build: Callable[[ParamClock], ir.Table], as_of: datetime) -> pa.Table:
        """Run the query ``build(clock)`` returns, at ``as_of``: ``name`` with the model,
        the empty tables and the store's schema is its key in the cache (``build``
        must depend on nothing else); ``clock.at(...)`` gives its dates as parameters."""

        def compiled():
            from healthscore.engine.plan import ParamClock

            clock = ParamClock()
            return build(clock), clock.recipes

        prepared, recipes = self.store.cached_plan((name, *self._key), compiled)
        return self.store.run_prepared(prepared, bind_dates(recipes, as_of))

    def scores(self, as_of: datetime) -> pa.Table:
        """Every account's scores as of ``as_of``, by account id (as ``asof.score``)."""

        def build(clock):
            from healthscore.engine.inputs import check_scorable, tables_needed
            from healthscore.engine.metrics import MetricBuilder
            from healthscore.engine.scoring import score_metrics

            check_scorable(self.store, self.model)
            tables = self.store.tables(tables_needed(self.model))
            raw = MetricBuilder(self.model, tables, self.empty).build(clock, None)
            return score_metrics(raw, self.model)

        return self.run("scores", build, as_of)

    def left_out_counts(self, as_of: datetime) -> pa.Table:
        """How many accounts are left out as of ``as_of``, by ``reason`` (``n``)."""

        def build(clock):
            from healthscore.engine.inputs import tables_needed
            from healthscore.engine.metrics import MetricBuilder

            tables = self.store.tables(tables_needed(self.model))
            out = MetricBuilder(self.model, tables, self.empty).left_out(clock)
            return out.group_by("reason").aggregate(n=out.count())

        return self.run("left_out_counts", build, as_of)
