"""What if: one account's score with some of its metric values changed.

Place in the flow: beside ``asof``, over ``scoring``. :func:`what_if` takes the account's
scored row (its raw metric values, as :func:`healthscore.engine.asof.score` returns them),
puts the changed values in, and runs the model's own scoring steps
(:func:`healthscore.engine.scoring.score_metrics`: normalize, weigh, contribute, rules,
band) over that one row in the store, so a what-if score is computed exactly as a real
one. Whether each rule holds is taken from the row as it was scored (a condition such as
``has_flag('champion_left')`` reads data the row does not carry), and the rule's
effect is applied to the new score. The row is scored as literals over the account's own
``accounts`` row, so the store runs it like any other query.
"""

from __future__ import annotations

from datetime import datetime

import ibis
import pyarrow as pa

from healthscore.engine.explain import Explanation, from_row
from healthscore.engine.metrics import COVERED, RULE
from healthscore.engine.scoring import MISSING, score_metrics
from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store


def what_if(store: Store, model: Model, row: dict, values: dict[str, object]) -> Explanation:
    """The explanation ``row`` (one scored account) would have with ``values`` (metric ->
    raw value; None: no data) in place of its own.

    Raises a :class:`ScoringError` naming a metric the model does not score or a value
    that is not a number where the metric needs one.
    """
    scored = {m: use for _, m, use in model.scored_metrics()}
    raw = {"account_id": row["account_id"], "csm": row.get("csm"), "segment": row.get("segment")}
    as_of: datetime = row["as_of"]
    fields = [
        pa.field("account_id", pa.string()),
        pa.field("csm", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("as_of", pa.timestamp("us")),
    ]
    raw["as_of"] = as_of
    for m in values:
        if m not in scored:
            raise ScoringError(
                f"`values`: {m!r} is not a metric this scorecard scores",
                hint="metrics: " + ", ".join(scored),
            )
    for m, use in scored.items():
        if m in values:
            v = values[m]
            if v is not None and use.map is None:
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    raise ScoringError(f"`values`: {m} = {v!r} is not a number") from None
            covered = v is not None
        else:
            v = row.get(m)
            # a value the model filled in (policy "fill") or left missing is not data
            covered = v is not None and row.get(m + MISSING) is None
        kind = pa.string() if use.map is not None else pa.float64()
        raw[m] = None if v is None else (str(v) if use.map is not None else float(v))
        raw[m + COVERED] = covered
        fields += [pa.field(m, kind), pa.field(m + COVERED, pa.bool_())]
    for m in model.spec.metrics:  # shown beside the score, not scored: as they were
        if m not in scored:
            v = row.get(m)
            raw[m], raw[m + COVERED] = v, v is not None
            kind = pa.float64() if v is None else pa.scalar(v).type
            fields += [pa.field(m, kind), pa.field(m + COVERED, pa.bool_())]
    for name in model.spec.rules:
        raw[RULE + name] = bool(row.get(RULE + name))
        fields.append(pa.field(RULE + name, pa.bool_()))
    # the row as literals over the account's own row: one row on every backend, no
    # temporary table (the store runs expressions as SQL)
    acc = store.table("accounts")
    one = acc.filter(acc.account_id == row["account_id"]).limit(1)
    literals = {f.name: _literal(raw[f.name], f.type) for f in fields}
    out = store.execute(score_metrics(one.select(**literals), model)).to_pylist()
    if not out:
        raise ScoringError(f"unknown account {row['account_id']!r}")
    return from_row(model, out[0])


def _literal(value, kind: pa.DataType):
    """A typed literal; a float goes in as text cast to float (DuckDB reads a float
    literal as a DECIMAL of the digits written, which later arithmetic can overflow)."""
    dtype = ibis.dtype(kind)
    if value is not None and dtype.is_floating():
        return ibis.literal(repr(float(value))).cast(dtype)
    return ibis.literal(value, type=dtype)
