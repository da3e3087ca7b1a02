"""Scoring plans compiled once and run many times: the real-time path of rescoring.

Place in the flow: beside :mod:`healthscore.engine.asof`, over the same
:class:`~healthscore.engine.metrics.MetricBuilder` and :mod:`~healthscore.engine.scoring`
steps. Building and compiling the scoring expression costs far more than running it for
a few accounts (about 0.25 s at 10,000 accounts, against tens of milliseconds), so it is
built with the as-of date, the dates moved back from it (windows, lags: a
:class:`ParamClock`) and the account ids as parameters
(:func:`healthscore.store.parameter`), compiled once per process and kept there by the
store (:meth:`~healthscore.engine.snapshot.Snapshot.score_plan`, what
:func:`~healthscore.engine.asof.score` runs too). Each run binds the values
(:meth:`~healthscore.store.Store.run_prepared`). A :class:`ScorePlan` (the rescorer's)
also has its store keep the plan as a statement planned once per connection
(``Prepared.kept``: DuckDB's binding and optimizer were two thirds of a one-account run
at 10,000 accounts). The rows are exactly those of the expression
:func:`healthscore.engine.asof.score_expr` builds for the same accounts and date (the
tests check it).

A plan is kept per number of account slots (1, 4, 16, 64, 256; a batch is padded with
its last id), plus one for every account. What the expression depends on besides the
model is checked before each run and takes another plan when it changed: the tables
that hold no row at all (an empty table is no evidence, so its metrics read as missing).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from healthscore.core.time import parse_as_of
from healthscore.engine.inputs import empty_tables
from healthscore.engine.metrics import Clock
from healthscore.engine.snapshot import SLOTS as SLOTS  # the slots of the plans
from healthscore.engine.snapshot import Snapshot, bind_dates, bind_ids, slots_for
from healthscore.model import Model
from healthscore.store import Prepared, Store, parameter


class ParamClock(Clock):
    """A clock whose dates are parameters, each with the recipe of its value."""

    def __init__(self):
        super().__init__(datetime(2000, 1, 1))  # never read: every date is a parameter
        #: parameter -> its recipe as data (see :func:`~healthscore.engine.snapshot.bind_dates`)
        self.recipes: dict[str, list] = {}

    def at(self, *durations: str):
        key = "_".join(["at", *durations])
        self.recipes[key] = [list(durations)]
        return parameter(key, "timestamp")

    def earliest(self, chains: list[tuple[str, ...]]):
        chains = sorted(set(chains))
        key = "min_" + "__".join("_".join(c) for c in chains)
        self.recipes[key] = [list(c) for c in chains]
        return parameter(key, "timestamp")

    def values(self, as_of: datetime) -> dict[str, datetime]:
        return bind_dates(self.recipes, as_of)


class ScorePlan:
    """The scoring query of one model (one scorecard of one version), compiled once and
    run as statements its store's connection keeps (the rescorer's)."""

    def __init__(self, model: Model):
        self.model = model
        self._plans: dict[tuple, tuple[Prepared, dict[str, list]]] = {}
        #: how many plans this one made ready: compiled, or found compiled by another
        #: (the process keeps compiled plans: :meth:`~healthscore.store.Store.cached_plan`)
        self.builds = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.model.version, self.model.scorecard_name)

    def prepare(self, store: Store, slots: int | None) -> None:
        """Build and compile the plan for ``slots`` accounts (None: every account) now,
        before a run needs it; for a number of slots, the store also plans its kept
        statement now (a run of no account: hundreds of milliseconds on the first run
        otherwise)."""
        self._prepared(store, slots)
        if slots is not None:
            self._run_empty(store, slots)

    def refresh(self, store: Store) -> None:
        """Have the store plan again, now, the kept statements of the slots prepared
        before (a run of no account each): a statement prepared since (its values
        table) or a table made since changed the catalog they were planned on, and
        the store plans such a statement again at its next run
        (:meth:`~healthscore.store.Store.run_prepared`), better while idle than in a
        micro-batch."""
        for slots in sorted({k[0] for k in self._plans if k[0] is not None}):
            self._run_empty(store, slots)

    def _run_empty(self, store: Store, slots: int) -> None:
        prepared, recipes = self._prepared(store, slots)
        values: dict[str, object] = dict(bind_dates(recipes, datetime(2000, 1, 1)))
        values.update(bind_ids([], slots))
        store.run_prepared(prepared, values)

    def _prepared(self, store: Store, slots: int | None) -> tuple[Prepared, dict[str, list]]:
        empty = tuple(empty_tables(store, self.model))
        key = (slots, empty)
        found = self._plans.get(key)
        if found is None:
            shared, recipes = Snapshot(store, self.model).score_plan(slots)
            # a copy of its own: kept as a statement planned once per connection (most
            # of a small run), which the shared plan is not
            prepared = Prepared(shared.tree, shared.schema, shared.keys, shared.parts)
            prepared.kept = True
            found = self._plans[key] = (prepared, recipes)
            self.builds += 1
        return found

    def run(self, store: Store, as_of=None, account_ids: Iterable[str] | None = None) -> pa.Table:
        """Scores as of ``as_of`` of ``account_ids`` (None: every account), the rows and
        columns :func:`healthscore.engine.asof.score` gives, ordered by account id."""
        d = parse_as_of(as_of)
        ids = None if account_ids is None else sorted(set(account_ids))
        slots = slots_for(ids)
        prepared, recipes = self._prepared(store, slots)
        values: dict[str, object] = dict(bind_dates(recipes, d))
        if slots is not None:
            values.update(bind_ids(ids, slots))
        result = store.run_prepared(prepared, values)
        if slots is None and ids is not None:
            result = result.filter(pc.is_in(result["account_id"], pa.array(ids, pa.string())))
        return result
