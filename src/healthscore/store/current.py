"""The ``current_scores`` table: every account's latest score, kept up to date in place.

Place in the flow: inside ``store``, beside :mod:`healthscore.store.history`. The live
service's rescorer (``service.rescorer``, through ``engine.current``) writes one row per
account x model version x scorecard, replacing the row it had; the read API reads them.
A rescore of everyone marks the table complete for that version and scorecard (the
store's meta key ``current_scores:<scorecard>``): until then it holds only the accounts
rescored since, and readers list the book from live scores.
Unlike the history tables, nothing here is kept once it is superseded.

Each row holds what a reader needs without scoring again: the score, band, coverage and
the other columns of a ``scores`` row, the account's trend class and its change over the
trend window (from stored history), and the whole explanation as JSON text (the shape of
``healthscore explain --format json``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from healthscore.store import Store

CURRENT = "current_scores"

SCHEMA = {
    "account_id": "string",
    "model_version": "string",
    "scorecard": "string",
    "as_of": "timestamp",  # the moment the score is as of (the service's "now")
    "score": "float64",
    "band": "string",
    "coverage": "float64",
    "probability": "float64",
    "segment": "string",
    "csm": "string",
    "signals": "string",
    "band_forced_by": "string",
    "trend": "string",  # the trend class from stored history (None: no history)
    "change_30d": "float64",  # the score's change over the trend window
    "explanation": "string",  # JSON: the explanation (explain --format json)
    "computed_at": "timestamp",  # when the rescorer computed it (wall clock, UTC)
}


def arrow_schema() -> pa.Schema:
    types = {"string": pa.string(), "float64": pa.float64(), "timestamp": pa.timestamp("us")}
    return pa.schema([(c, types[t]) for c, t in SCHEMA.items()])


def ensure_table(store: Store) -> None:
    """Create ``current_scores`` when the store lacks it."""
    if not store.has_table(CURRENT):
        store.create_table(CURRENT, SCHEMA)


def of_model(store: Store, version: str, scorecard: str) -> ir.Table:
    """The current rows of one model version and scorecard."""
    ensure_table(store)
    t = store.stored(CURRENT)
    return t.filter(t.model_version == version, t.scorecard == scorecard)


def replace(
    store: Store,
    version: str,
    scorecard: str,
    rows: pa.Table,
    accounts: Iterable[str] | None,
    *,
    ensure: bool = True,
) -> None:
    """Replace the current rows of ``accounts`` (None: every account, and the rows of
    other model versions of this scorecard) by ``rows``, in one transaction: an account
    of ``accounts`` without a row in ``rows`` (no longer scored) loses its row.
    ``ensure=False``: the caller made the table (:func:`ensure_table`) already, so the
    catalog is not read again (a micro-batch's write)."""
    if ensure:
        ensure_table(store)
    with store.transaction():
        if accounts is None:
            store.delete_rows(CURRENT, {"scorecard": scorecard})
            store.set_meta(_complete_key(scorecard), version)
        else:
            ids = sorted(set(accounts))
            if ids:
                where = {"model_version": version, "scorecard": scorecard, "account_id": ids}
                store.delete_rows(CURRENT, where)
        if rows.num_rows:
            store.insert(CURRENT, rows.select(list(SCHEMA)).cast(arrow_schema()))


def _complete_key(scorecard: str) -> str:
    return f"{CURRENT}:{scorecard}"


def complete(store: Store, version: str, scorecard: str) -> bool:
    """Whether every account of this model version and scorecard has been written (a
    rescore of everyone), so the table lists the whole book, not only the accounts
    rescored since."""
    return store.meta().get(_complete_key(scorecard)) == version


def versions(store: Store, scorecard: str) -> dict[str, int]:
    """Model version -> current rows stored for ``scorecard``."""
    ensure_table(store)
    t = store.stored(CURRENT)
    t = t.filter(t.scorecard == scorecard)
    counts = store.execute(t.group_by("model_version").aggregate(n=t.count()))
    return dict(zip(counts["model_version"].to_pylist(), counts["n"].to_pylist(), strict=True))
