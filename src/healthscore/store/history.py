"""The history tables of the store: their schemas, and every write and keyed read of them.

Place in the flow: inside ``store``, under ``engine.history``, which turns scores into
these rows and runs backfills; readers (``engine.trends``, ``evaluate``,
``views.report``) query the tables through ``store.stored(SCORES)``. Three tables:

- ``scores``: one row per (account_id, as_of, model_version, scorecard) with score,
  band, coverage, probability (when the model has a ``probability:`` section: the curve
  in force when the row was written; readers derive it again from the score and the
  current curve, since refitting the curve keeps the version), segment, CSM and the
  signals rules raised;
- ``score_lines``: one row per metric, pillar and rule line of each score (raw value,
  normalized value, weight, contribution, missing-data treatment), so any stored score
  can be explained and its lines add up to it;
- ``score_models``: each model version seen, with its human label and its scoring
  sections, so a stored version can be told apart from the current file.

Rows belong to a model version and scorecard (``model.version``,
``model.scorecard_name``); two versions coexist. The rows of a set of dates are replaced
together, in one transaction (:func:`write_dates`).

Examples
--------
>>> import healthscore as hs
>>> from healthscore.store import connect
>>> s, model = connect("duckdb://"), hs.load_model()
>>> ensure_tables(s)
>>> stored_dates(s, model)
set()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import ibis
import pyarrow as pa

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from healthscore.model import Model
    from healthscore.store import Store

SCORES, LINES, MODELS = "scores", "score_lines", "score_models"

SCHEMAS = {
    SCORES: {
        "account_id": "string",
        "as_of": "timestamp",
        "model_version": "string",
        "scorecard": "string",
        "score": "float64",
        "band": "string",
        "coverage": "float64",
        "probability": "float64",
        "segment": "string",
        "csm": "string",
        "signals": "string",  # signals raised by rules, comma-separated
        "computed_at": "timestamp",
    },
    LINES: {
        "account_id": "string",
        "as_of": "timestamp",
        "model_version": "string",
        "scorecard": "string",
        "kind": "string",  # metric | pillar | rule (a rule's points, floor or cap; or clamp)
        "name": "string",
        "pillar": "string",
        "raw": "string",  # as text: metrics may be categorical
        "raw_value": "float64",  # the same when it is a number
        "normalized": "float64",
        "weight": "float64",
        "contribution": "float64",
        "missing": "string",
    },
    MODELS: {
        "model_version": "string",
        "label": "string",
        "file": "string",
        "spec": "string",
        "first_seen": "timestamp",
    },
}


def ensure_tables(store: Store) -> None:
    """Create the history tables the store does not have yet."""
    existing = set(store.list_tables())
    for name, schema in SCHEMAS.items():
        if name not in existing:
            store.create_table(name, schema)


def stored_dates(store: Store, model: Model) -> set[datetime]:
    """As-of dates stored for this model version and scorecard."""
    t = _of_model(store, SCORES, model)
    return set(store.execute(t.select("as_of").distinct())["as_of"].to_pylist())


def write_dates(
    store: Store, model: Model, dates: Sequence[datetime], scores: pa.Table, lines: pa.Table
) -> None:
    """Replace what is stored at ``dates`` for this model version by ``scores`` and ``lines``.

    One transaction: every date is stored, or none (on a backend without transactions,
    a date half-written is replaced when it is written again).
    """
    with store.transaction():
        where = {"model_version": model.version, "scorecard": model.scorecard_name}
        for table in (SCORES, LINES):
            store.delete_rows(table, {**where, "as_of": list(dates)})
        if scores.num_rows:
            store.insert(SCORES, scores)
            store.insert(LINES, lines)


def remember_model(store: Store, model: Model) -> None:
    """Record this model version, its label, file and scoring sections, once."""
    t = store.stored(MODELS)
    if store.execute(t.filter(t.model_version == model.version).limit(1)).num_rows:
        return
    spec = model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    now = datetime.now(UTC).replace(tzinfo=None)
    store.insert(
        MODELS,
        pa.table(
            {
                "model_version": [model.version],
                "label": [model.label],
                "file": [model.file],
                "spec": [json.dumps(spec, sort_keys=True)],
                "first_seen": pa.array([now], pa.timestamp("us")),
            }
        ),
    )


def stored_rows(
    store: Store,
    model: Model,
    account_ids: Iterable[str],
    dates: Iterable[datetime],
    scores_view: Callable[[ir.Table], ir.Table] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """The ``scores`` and ``score_lines`` rows of these accounts at these dates, for this
    model version and scorecard (pairs not stored are simply absent); ``scores_view``
    derives columns of the ``scores`` rows before they are read (the probability)."""
    ensure_tables(store)
    ids, when = list(account_ids), [ibis.literal(d, type="timestamp") for d in dates]
    out = []
    for name in (SCORES, LINES):
        t = _of_model(store, name, model)
        t = t.filter(t.account_id.isin(ids), t.as_of.isin(when))
        if name == SCORES and scores_view is not None:
            t = scores_view(t)
        out.append(store.execute(t))
    return out[0], out[1]


def _of_model(store: Store, name: str, model: Model):
    t = store.stored(name)
    return t.filter(t.model_version == model.version, t.scorecard == model.scorecard_name)
