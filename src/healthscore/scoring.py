"""Raw metrics -> 0-100 scores with bands, coverage and exact contributions.

Place in the flow: takes the expression built by ``metrics`` and adds, as Ibis
expressions (nothing runs here), an ordered tuple of small table-to-table steps:

1. :func:`normalize` - each scored metric to 0-100 (linear clamp between ``bad`` and
   ``good``, piecewise ``points``, or a categorical ``map``); a missing value takes the
   metric's policy (``neutral``/``penalty`` value) or is left out (``reweight``);
2. :func:`weigh` - each metric's effective weight for the account's segment; weights
   of metrics left out are shared among the rest of their pillar, and a pillar with no
   data shares its weight among the other pillars;
3. :func:`contribute` - contribution = weight x normalized value; pillar scores;
   score = the sum of the contributions (so they add up exactly); coverage = the share of
   the model's weight backed by real data;
4. :func:`band` - green / yellow / red from the model's thresholds.

Output columns (wide, one row per account): ``account_id, as_of, segment, csm, score,
band, coverage``, then ``pillar__<p>`` per pillar and, per metric, ``<m>`` (raw),
``<m>__norm``, ``<m>__weight``, ``<m>__contribution`` and ``<m>__missing`` (the policy
applied, or NULL when the value came from data).
"""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir

from healthscore.metrics import COVERED
from healthscore.model import MetricUse, Model

NORM, WEIGHT, CONTRIB, MISSING, PILLAR = (
    "__norm",
    "__weight",
    "__contribution",
    "__missing",
    "pillar__",
)


def _normalized(x: ir.Value, use: MetricUse, segment=None) -> ir.FloatingValue:
    # NULL in, NULL out: least/greatest skip NULLs and CASE falls through to its ELSE
    segment = segment if segment is not None else ibis.literal(None, type="string")
    return ibis.ifelse(x.isnull(), ibis.null("float64"), _normalized_value(x, use, segment))


def _piecewise(x: ir.FloatingValue, pts) -> ir.FloatingValue:
    """Linear between the points, flat beyond the ends."""
    branches = [(x <= pts[0][0], ibis.literal(float(pts[0][1])))]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        branches.append((x <= x1, y0 + (x - x0) * ((y1 - y0) / (x1 - x0))))
    return ibis.cases(*branches, else_=ibis.literal(float(pts[-1][1])))


def _normalized_value(x: ir.Value, use: MetricUse, segment: ir.StringValue) -> ir.FloatingValue:
    if use.map is not None:
        return x.cast("string").substitute(use.map, else_=ibis.null("float64")).cast("float64")
    x = x.cast("float64")
    if use.points is not None:
        return _piecewise(x, use.points)
    if use.percentile is not None:
        pts = use.percentile.points
        special = [(segment == s, _piecewise(x, p)) for s, p in pts.items() if s != "*"]
        default = _piecewise(x, pts["*"])
        return ibis.cases(*special, else_=default) if special else default
    lo, hi = use.bad, use.good
    frac = (x - lo) / (hi - lo)
    return 100.0 * ibis.least(ibis.greatest(frac, 0.0), 1.0)


def normalize(t: ir.Table, model: Model) -> ir.Table:
    cols = {}
    for _, m, use in model.scored_metrics():
        n = _normalized(t[m], use, t.segment)
        missing = use.missing
        covered = t[m + COVERED] & n.notnull()
        if missing.policy == "reweight":
            cols[m + NORM] = n
        else:
            cols[m + NORM] = n.fill_null(float(missing.value))
        cols[m + MISSING] = ibis.cases(
            (covered, ibis.null("string")),
            (n.notnull(), ibis.literal("fill")),  # no data, the metric's `fill` value stood in
            else_=ibis.literal(missing.policy),
        )
        cols[m + COVERED] = covered
    return t.mutate(**cols)


def _by_segment(t: ir.Table, model: Model, per_segment: dict[str | None, float]) -> ir.Value:
    default = per_segment[None]
    special = {s: w for s, w in per_segment.items() if s is not None and w != default}
    if not special:
        return ibis.literal(default)
    return t.segment.substitute(special, else_=ibis.literal(default))


def weigh(t: ir.Table, model: Model) -> ir.Table:
    shares = model.metric_shares()
    segments = [None, *model.segment_names()]
    pillar_w = {p: {s: model.pillar_weights(s)[p] for s in segments} for p in model.spec.pillars}
    base_w, avail, pillar_avail = {}, {}, {}
    for p, pillar in model.spec.pillars.items():
        pw = _by_segment(t, model, pillar_w[p])
        terms = []
        for m, use in pillar.metrics.items():
            base_w[m] = pw * shares[p][m]
            avail[m] = (
                t[m + NORM].notnull() if use.missing.policy == "reweight" else ibis.literal(True)
            )
            terms.append(ibis.ifelse(avail[m], shares[p][m], 0.0))
        pillar_avail[p] = sum(terms[1:], terms[0])  # share of the pillar with a value
    cols = {}
    total_avail = cols["__total_avail"] = sum(
        (
            _by_segment(t, model, pillar_w[p]) * ibis.ifelse(pillar_avail[p] > 0, 1.0, 0.0)
            for p in model.spec.pillars
        ),
        ibis.literal(0.0),
    )
    for p, pillar in model.spec.pillars.items():
        pw = _by_segment(t, model, pillar_w[p])
        eff_pw = ibis.ifelse(pillar_avail[p] > 0, pw / total_avail.nullif(0), 0.0)
        for m in pillar.metrics:
            share = ibis.ifelse(avail[m], shares[p][m] / pillar_avail[p].nullif(0), 0.0)
            cols[m + WEIGHT] = (eff_pw * share).fill_null(0.0)
        cols[f"__avail_{p}"] = pillar_avail[p]
    cols["__base_weights"] = ibis.struct({m: w for m, w in base_w.items()})
    return t.mutate(**cols)


def contribute(t: ir.Table, model: Model) -> ir.Table:
    cols = {}
    for _, m, _use in model.scored_metrics():
        cols[m + CONTRIB] = t[m + WEIGHT] * t[m + NORM].fill_null(0.0)
    t = t.mutate(**cols)
    contribs = [t[m + CONTRIB] for _, m, _ in model.scored_metrics()]
    score = sum(contribs[1:], contribs[0])
    pillars = {}
    shares = model.metric_shares()
    for p, pillar in model.spec.pillars.items():
        parts = [
            ibis.ifelse(t[m + NORM].notnull(), shares[p][m] * t[m + NORM], 0.0)
            for m in pillar.metrics
        ]
        avail = t[f"__avail_{p}"]
        pillars[PILLAR + p] = ibis.ifelse(
            avail > 0, sum(parts[1:], parts[0]) / avail.nullif(0), ibis.null("float64")
        )
    has_data = t["__total_avail"] > 0  # some weight rests on a value (zero-weight pillars don't)
    cov = [
        ibis.ifelse(t[m + COVERED], t["__base_weights"][m], 0.0)
        for _, m, _ in model.scored_metrics()
    ]
    # weights that sum to 1 in floating point can overshoot by an ulp: keep 0 <= score <= 100
    # (the clamp moves it by < 1e-12, well inside the 1e-9 the contributions add up to)
    score = ibis.least(ibis.greatest(score, 0.0), 100.0)
    return t.mutate(
        score=ibis.ifelse(has_data, score, ibis.null("float64")),
        coverage=sum(cov[1:], cov[0]),
        **pillars,
    )


def band(t: ir.Table, model: Model) -> ir.Table:
    b = model.spec.bands
    label = ibis.cases(
        (t.score >= b.green, "green"),
        (t.score >= b.yellow, "yellow"),
        (t.score.notnull(), "red"),
        else_=ibis.null("string"),
    )
    return t.mutate(band=label)


STEPS = (normalize, weigh, contribute, band)


def score_expr(raw: ir.Table, model: Model, as_of: datetime) -> ir.Table:
    """Apply the scoring steps to a raw-metrics expression and select the output columns."""
    t = raw
    for step in STEPS:
        t = step(t, model)
    t = t.mutate(as_of=ibis.literal(as_of, type="timestamp"))
    return t.select(*output_columns(model)).order_by("account_id")


def output_columns(model: Model) -> list[str]:
    cols = ["account_id", "as_of", "segment", "csm", "score", "band", "coverage"]
    cols += [PILLAR + p for p in model.spec.pillars]
    scored = {m for _, m, _ in model.scored_metrics()}
    for m in model.spec.metrics:
        cols.append(m)
        if m in scored:
            cols += [m + NORM, m + WEIGHT, m + CONTRIB, m + MISSING]
    return cols
