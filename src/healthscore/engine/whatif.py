"""What if: one account's score with some of its metric values changed.

Place in the flow: beside ``asof``, over ``scoring``. :func:`what_if` takes the account's
scored row (its raw metric values, as :func:`healthscore.engine.asof.score` returns them),
puts the changed values in, re-evaluates the model's rules over them, and runs the
model's own scoring steps (:func:`healthscore.engine.scoring.score_metrics`: normalize,
weigh, contribute, rules, band) over that one row in the store, so a what-if score is
computed exactly as a real one. The row is scored as literals over the account's own
``accounts`` row, so the store runs it like any other query.

A rule's condition is re-evaluated over the metric values (and, when given, the flags in
force); a condition that reads something else (an account column) keeps whether it held
when the row was scored, and the result names it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import ibis
import pyarrow as pa

from healthscore import expressions as ex
from healthscore.core.limits import quoted
from healthscore.engine.explain import Explanation, from_row
from healthscore.engine.metrics import COVERED, RULE
from healthscore.engine.scoring import MISSING, score_metrics
from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store


@dataclass
class WhatIf:
    """The explanation a changed row would have, and the rules whose condition could not
    be re-evaluated (they keep whether they held)."""

    explanation: Explanation
    rules_kept: list[str] = field(default_factory=list)


def what_if(
    store: Store,
    model: Model,
    row: dict,
    values: dict[str, object],
    flags: set[str] | None = None,
) -> WhatIf:
    """What ``row`` (one scored account) would score with ``values`` (metric -> raw value;
    None: no data) in place of its own; ``flags``: the kinds of the account's flags in
    force (None: unknown, so a rule reading ``has_flag`` keeps whether it held).

    Raises a :class:`ScoringError` naming a metric the model does not score, a value
    that is not a number where the metric needs one, a negative count, or a category
    the metric's map does not hold (it would score as missing data, not as that value).
    """
    scored = {m: use for _, m, use in model.scored_metrics()}
    for m in values:
        if m not in scored:
            raise ScoringError(
                f"`values`: {m!r} is not a metric this scorecard scores",
                hint="metrics: " + ", ".join(scored),
            )
    as_of: datetime = row["as_of"]
    raw: dict[str, object] = {
        "account_id": row["account_id"],
        "csm": row.get("csm"),
        "segment": row.get("segment"),
        "as_of": as_of,
    }
    kinds = {
        "account_id": pa.string(),
        "csm": pa.string(),
        "segment": pa.string(),
        "as_of": pa.timestamp("us"),
    }
    for m in model.spec.metrics:
        use = scored.get(m)
        if m in values:
            v = values[m]
            if v is not None and use.map is None:
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ScoringError(f"`values`: {m} = {v!r} is not a number") from None
                if not math.isfinite(v):  # "nan" scored as the best value there is
                    raise ScoringError(f"`values`: {m} = {values[m]!r} is not a finite number")
                if v < 0 and _counts(model, m):  # a count of -3 scores as nothing real
                    raise ScoringError(f"`values`: {m} = {values[m]!r}: a count is never negative")
            elif v is not None:  # a category the map does not hold would score as missing
                known = {k.strip().lower() for k in use.map}
                if str(v).strip().lower() not in known:
                    raise ScoringError(
                        f"`values`: {m} = {v!r} is not one of its categories",
                        hint="categories: " + ", ".join(use.map),
                    )
            covered = v is not None
        else:
            v = row.get(m)
            # a value the model filled in (policy "fill") or left missing is not data
            covered = v is not None and (use is None or row.get(m + MISSING) is None)
        if use is not None:
            kind = pa.string() if use.map is not None else pa.float64()
            v = None if v is None else (str(v) if use.map is not None else float(v))
        else:  # shown beside the score, not scored: as it was
            kind = pa.float64() if v is None else pa.scalar(v).type
        raw[m], raw[m + COVERED] = v, covered
        kinds[m], kinds[m + COVERED] = kind, pa.bool_()
    # the row as literals over the account's own row: one row on every backend, no
    # temporary table (the store runs expressions as SQL)
    acc = store.table("accounts")
    one = acc.filter(acc.account_id == row["account_id"]).limit(1)
    t = one.select(**{c: _literal(raw[c], k) for c, k in kinds.items()})
    rules, kept = {}, []
    for name, rule in model.spec.rules.items():
        try:
            holds = ex.compile_row(
                rule.when,
                _metrics_of(t, model),
                as_of=ibis.literal(as_of, type="timestamp"),
                has_flag=_flags(flags),
            )
            rules[RULE + name] = holds.fill_null(False)
        except ex.ExpressionError:
            rules[RULE + name] = ibis.literal(bool(row.get(RULE + name)))
            kept.append(name)
    t = t.mutate(**rules)
    out = store.execute(score_metrics(t, model)).to_pylist()
    if not out:
        raise ScoringError(f"unknown account {quoted(str(row['account_id']))}")
    return WhatIf(from_row(model, out[0]), kept)


def _metrics_of(t, model: Model):
    def resolve(name, qualifier=None):
        if qualifier is None and name in model.spec.metrics:
            return t[name]
        raise KeyError("a what-if knows the metrics only")

    return resolve


def _flags(flags: set[str] | None):
    def has_flag(kind: str):
        if flags is None:
            raise ex.ExpressionError("the account's flags are not known here")
        return ibis.literal(kind.strip().lower() in flags)

    return has_flag


def _counts(model: Model, metric: str) -> bool:
    """Whether ``metric`` is a count (``count()``, ``count_distinct(...)`` over a window,
    not a change): its value is never negative."""
    spec = model.spec.metrics[metric]
    aggregate = (spec.aggregate or "").replace(" ", "")
    return spec.change_vs is None and aggregate.startswith(("count(", "count_distinct("))


def _literal(value, kind: pa.DataType):
    """A typed literal; a float goes in as text cast to float (DuckDB reads a float
    literal as a DECIMAL of the digits written, which later arithmetic can overflow)."""
    dtype = ibis.dtype(kind)
    if value is not None and dtype.is_floating():
        return ibis.literal(repr(float(value))).cast(dtype)
    return ibis.literal(value, type=dtype)
