"""Score history: point-in-time scores stored per account, as-of date and model version.

Place in the flow: after ``scoring``; it runs the scoring expression at a series of
as-of dates, turns each wide score row into a ``scores`` row and its long
``score_lines`` (one per metric, pillar and rule line), and has the store write them
(:mod:`healthscore.store.history` owns the tables: ``scores``, ``score_lines``,
``score_models``, their schemas and every write). ``trends``, ``explain --vs``,
calibration and the service read them back.

A backfill computes only the dates missing for that model version (``rebuild`` forces
them); two model versions coexist. Each date, or each chunk of dates scored together,
is written in one transaction. History is never rewritten by later data: a row loaded
afterwards changes stored scores only when they are rebuilt.

The table names and schemas are re-exported here (``SCORES``, ``LINES``, ``MODELS``,
``SCHEMAS``, ``ensure_tables``) for the modules that read history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from healthscore.engine.metrics import RULE
from healthscore.engine.scoring import (
    CLAMP,
    CONTRIB,
    MISSING,
    NORM,
    PILLAR,
    WEIGHT,
    probability,
)
from healthscore.model import Model
from healthscore.store import Store
from healthscore.store.history import (
    LINES,
    MODELS,
    SCHEMAS,
    SCORES,
    ensure_tables,
    remember_model,
    stored_dates,
    stored_rows,
    write_dates,
)

__all__ = [
    "CHUNK_ROWS",
    "LINES",
    "MODELS",
    "SCHEMAS",
    "SCORES",
    "BackfillResult",
    "backfill",
    "ensure_tables",
    "stored_dates",
    "stored_explanations",
]

#: scores (accounts x dates) computed together in a backfill: bounds its memory
CHUNK_ROWS = 1_000_000


@dataclass
class BackfillResult:
    model_version: str
    computed: list[datetime] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)
    rows: int = 0
    # what the last date's scores rest on (accounts left out and why), warnings first
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(
            [
                f"history for model {self.model_version[:12]}: {len(self.computed)} dates "
                f"computed ({self.rows:,} scores), {len(self.skipped)} already stored",
                *self.notes,
            ]
        )


def backfill(
    store: Store,
    model: Model,
    dates: list[datetime],
    scorer: Callable[[datetime], pa.Table],
    *,
    rebuild: bool = False,
    progress: Callable[[str, float], None] | None = None,
    score_dates: Callable[[list[datetime]], pa.Table] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> BackfillResult:
    """Store the scores ``scorer(d)`` of every account at each date not stored yet.

    With ``score_dates`` (scores of every account at a list of dates, with ``as_of``),
    the missing dates are scored together, in chunks of about ``chunk_rows`` scores
    (accounts x dates) to bound memory; each chunk is written in one transaction
    (without ``score_dates``, each date).
    """
    ensure_tables(store)
    remember_model(store, model)
    have = set() if rebuild else stored_dates(store, model)
    result = BackfillResult(model.version)
    todo = [d for d in dates if d not in have]
    result.skipped = [d for d in dates if d in have]
    if score_dates is None:
        chunks = [[d] for d in todo]
    else:
        n = store.count("accounts") or 1
        size = max(1, chunk_rows // n)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    done = 0
    for chunk in chunks:
        if progress:
            span = f"{chunk[0]:%Y-%m-%d}" + (f" to {chunk[-1]:%Y-%m-%d}" if len(chunk) > 1 else "")
            progress(f"scoring {span}", done / max(len(todo), 1))
        wide = scorer(chunk[0]) if score_dates is None else score_dates(chunk)
        scores, lines = _long(model, wide)
        write_dates(store, model, chunk, scores, lines)  # all of the chunk's dates, or none
        result.computed += chunk
        result.rows += scores.num_rows
        done += len(chunk)
    if progress:
        progress("history done", 1.0)
    return result


def _const(value, n: int, type=pa.string()) -> pa.Array:
    """``n`` copies of one value, built by Arrow (not a Python list of ``n`` items)."""
    return pa.repeat(pa.scalar(value, type), n)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _long(model: Model, wide: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Wide score rows -> the ``scores`` rows and the long ``score_lines`` rows."""
    n = wide.num_rows
    key = {
        "account_id": wide["account_id"],
        "as_of": wide["as_of"],
        "model_version": _const(model.version, n),
        "scorecard": _const(model.scorecard_name, n),
    }
    scores = pa.table(
        {
            **key,
            "score": wide["score"],
            "band": wide["band"],
            "coverage": wide["coverage"],
            "probability": (
                wide["probability"]
                if "probability" in wide.column_names
                else pa.nulls(n, pa.float64())
            ),
            "segment": wide["segment"],
            "csm": wide["csm"],
            "signals": wide["signals"] if model.spec.rules else pa.nulls(n, pa.string()),
            "computed_at": _const(_now(), n, pa.timestamp("us")),
        }
    )
    parts = []
    for p in model.spec.pillars:
        parts.append(_lines(key, n, "pillar", p, p, None, wide[PILLAR + p]))
    for p, m, _ in model.scored_metrics():
        parts.append(_lines(key, n, "metric", m, p, wide, None))
    for r in model.spec.rules:
        parts.append(_rule_lines(key, n, r, wide[RULE + r], wide[RULE + r + CONTRIB]))
    if CLAMP in wide.column_names:
        parts.append(_rule_lines(key, n, "clamp", pa.nulls(n, pa.bool_()), wide[CLAMP]))
    return scores, pa.concat_tables(parts)


def _rule_lines(key, n, name, holds, contrib) -> pa.Table:
    """A rule's line: whether it held (raw) and the points it moved the score by."""
    return pa.table(
        {
            **key,
            "kind": _const("rule", n),
            "name": _const(name, n),
            "pillar": pa.nulls(n, pa.string()),
            "raw": holds.cast(pa.string()),
            "raw_value": holds.cast(pa.float64()),
            "normalized": pa.nulls(n, pa.float64()),
            "weight": pa.nulls(n, pa.float64()),
            "contribution": contrib,
            "missing": pa.nulls(n, pa.string()),
        }
    )


def _lines(key, n, kind, name, pillar, wide, pillar_score) -> pa.Table:
    if kind == "pillar":
        raw = pa.nulls(n, pa.string())
        raw_value = pa.nulls(n, pa.float64())
        normalized, weight, contrib = (
            pillar_score,
            pa.nulls(n, pa.float64()),
            pa.nulls(n, pa.float64()),
        )
        missing = pa.nulls(n, pa.string())
    else:
        col = wide[name]
        raw = col.cast(pa.string())
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        is_bool = pa.types.is_boolean(col.type)
        raw_value = col.cast(pa.float64()) if numeric or is_bool else pa.nulls(n, pa.float64())
        normalized, weight = wide[name + NORM], wide[name + WEIGHT]
        contrib, missing = wide[name + CONTRIB], wide[name + MISSING]
    return pa.table(
        {
            **key,
            "kind": _const(kind, n),
            "name": _const(name, n),
            "pillar": _const(pillar, n, pa.string()),
            "raw": raw,
            "raw_value": raw_value,
            "normalized": normalized,
            "weight": weight,
            "contribution": contrib,
            "missing": missing,
        }
    )


def account_history(store: Store, model: Model, account_id: str) -> pa.Table:
    """One account's stored scores of this model version and scorecard, oldest first:
    ``as_of, score, band, coverage, probability, segment, csm, signals``."""
    ensure_tables(store)
    t = store.stored(SCORES)
    t = t.filter(
        t.model_version == model.version,
        t.scorecard == model.scorecard_name,
        t.account_id == account_id,
    )
    view = current_probability(model)
    if view is not None:
        t = view(t)
    cols = ["as_of", "score", "band", "coverage", "probability", "segment", "csm", "signals"]
    return store.execute(t.select(*cols).order_by("as_of"))


def current_probability(model: Model):
    """A view of stored ``scores`` rows with the probability the model's current curve
    gives their score: the curve is refitted without changing the version, so the
    probability stored beside an older row may be another curve's (None: no curve)."""
    if model.spec.probability is None:
        return None
    return lambda t: probability(t.drop("probability") if "probability" in t.columns else t, model)


def stored_explanations(store: Store, model: Model, account_ids, dates) -> dict:
    """Stored scores as explanations, keyed by (account_id, as_of): what was seen then.

    Reads the ``scores`` and ``score_lines`` rows of this model version and scorecard;
    pairs not stored are simply absent from the result.
    """
    from healthscore.engine.explain import from_stored

    ids, when = list(account_ids), list(dates)
    if not ids or not when:
        return {}
    scores, score_lines = stored_rows(store, model, ids, when, current_probability(model))
    out = {}
    lines: dict[tuple, list[dict]] = {}
    for ln in score_lines.to_pylist():
        lines.setdefault((ln["account_id"], ln["as_of"]), []).append(ln)
    for row in scores.to_pylist():
        key = (row["account_id"], row["as_of"])
        out[key] = from_stored(model, row, lines.get(key, []))
    return out
