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
4. :func:`band` - green / yellow / red from the model's thresholds;
5. :func:`probability` - when the model has a ``probability:`` section, the calibrated
   probability of its outcome within its horizon, piecewise linear in the final score.

Output columns (wide, one row per account): ``account_id, as_of, segment, csm, score,
band, coverage`` (and ``probability`` when the model has that section), then
``pillar__<p>`` per pillar and, per metric, ``<m>`` (raw), ``<m>__norm``, ``<m>__weight``,
``<m>__contribution`` and ``<m>__missing`` (the policy applied, or NULL when the value
came from data).
"""

from __future__ import annotations

import math

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir

from healthscore import expressions as ex
from healthscore.engine.metrics import COVERED, RULE
from healthscore.model import BAND_NAMES, MetricUse, Model

NORM, WEIGHT, CONTRIB, MISSING, PILLAR = (
    "__norm",
    "__weight",
    "__contribution",
    "__missing",
    "pillar__",
)
CLAMP = "clamp__contribution"  # what the 0-100 clamp took after rules added points


def _normalized(x: ir.Value, use: MetricUse, segment=None) -> ir.FloatingValue:
    # NULL in, NULL out: least/greatest skip NULLs and CASE falls through to its ELSE
    segment = segment if segment is not None else ibis.literal(None, type="string")
    return ibis.ifelse(x.isnull(), ibis.null("float64"), _normalized_value(x, use, segment))


def _piecewise(x: ir.FloatingValue, pts) -> ir.FloatingValue:
    """Linear between the points, flat beyond the ends."""
    branches = [(x <= pts[0][0], ibis.literal(float(pts[0][1])))]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        # the share of the way from x0 to x1 first (0-1): a slope (y1 - y0) / (x1 - x0)
        # overflows when the points are a subnormal apart; halves when x1 - x0 overflows
        if math.isinf(x1 - x0):
            frac = (x * 0.5 - x0 * 0.5) / (x1 * 0.5 - x0 * 0.5)
        else:
            frac = (x - x0) / (x1 - x0)
        branches.append((x <= x1, y0 + (y1 - y0) * frac))
    return ibis.cases(*branches, else_=ibis.literal(float(pts[-1][1])))


def _normalized_value(x: ir.Value, use: MetricUse, segment: ir.StringValue) -> ir.FloatingValue:
    if use.map is not None:  # keys are categories: case and surrounding spaces do not matter
        keys = {k.strip().lower(): v for k, v in use.map.items()}
        value = ex.category(x.cast("string"))
        return value.substitute(keys, else_=ibis.null("float64")).cast("float64")
    if x.type().is_boolean():  # true 1, false 0: PostgreSQL casts no boolean to a float
        x = x.cast("int32")
    x = x.cast("float64")
    if use.points is not None:
        return _piecewise(x, use.points)
    if use.percentile is not None:
        pts = use.percentile.points
        special = [
            (ex.category(segment) == s.strip().lower(), _piecewise(x, p))
            for s, p in pts.items()
            if s != "*"
        ]
        default = _piecewise(x, pts["*"])
        return ibis.cases(*special, else_=default) if special else default
    lo, hi = use.bad, use.good
    if use.scale == "log":  # a heavily skewed count: ln(1 + x), a negative value as 0
        x = (ibis.greatest(x, 0.0) + 1.0).ln()
        lo, hi = math.log1p(lo), math.log1p(hi)
    # a falling scale (bad above good) divides by a positive span too: (x - lo) / (hi - lo)
    # is -0.0 at x = lo there, shown as "-0.0" (the same value, the sign of zero aside)
    frac = (x - lo) / (hi - lo) if hi >= lo else (lo - x) / (lo - hi)
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
        # a sum of weight literals, which DuckDB types DECIMAL: the float it is declared,
        # cast in the SQL (as an operation: Ibis drops a cast to the type it already sees)
        coverage=ops.Cast(sum(cov[1:], cov[0]), to=dt.float64).to_expr(),
        **pillars,
    )


def apply_rules(t: ir.Table, model: Model) -> ir.Table:
    """The model's rules, in a fixed order: add points, then floor, then cap, then clamp.

    Each step that changes the score is its own contribution line, so the lines still add
    up to the score: ``rule__<name>__contribution`` (its points, or how far its floor
    lifted or its cap cut the score; when several floors or caps hold, the highest floor
    and the lowest cap bind, the first in file order among equals) and
    ``clamp__contribution`` (what the 0-100 clamp took after points were added).
    """
    rules = model.spec.rules
    if not rules:
        return t
    base = t.score
    fired = {n: t[RULE + n] & base.notnull() for n in rules}
    contrib = {n: ibis.literal(0.0) for n in rules}
    s = base
    for n, r in rules.items():
        if r.add is not None:
            c = ibis.ifelse(fired[n], float(r.add), 0.0)
            contrib[n] = contrib[n] + c
            s = s + c

    def binding(kind: str, pick):
        """(value, rule name) of the binding floor or cap among the rules that hold."""
        values = {n: getattr(r, kind) for n, r in rules.items()}
        have = [(n, float(v)) for n, v in values.items() if v is not None]
        if not have:
            return None, []
        value = ibis.null("float64")
        for n, v in have:
            value = ibis.ifelse(fired[n] & (value.isnull() | pick(v, value)), v, value)
        chosen, taken = [], ibis.literal(False)
        for n, v in have:  # the first rule holding the binding value gets the line
            this = fired[n] & (value == v) & ~taken
            chosen.append((n, this))
            taken = taken | this
        return value, chosen

    floor, chosen = binding("floor", lambda v, cur: v > cur)
    if floor is not None:
        lift = ibis.greatest(floor - s, 0.0).fill_null(0.0)
        for n, this in chosen:
            contrib[n] = contrib[n] + ibis.ifelse(this, lift, 0.0)
        s = s + lift
    cap, chosen = binding("cap", lambda v, cur: v < cur)
    if cap is not None:
        cut = ibis.least(cap - s, 0.0).fill_null(0.0)
        for n, this in chosen:
            contrib[n] = contrib[n] + ibis.ifelse(this, cut, 0.0)
        s = s + cut
    cols = {RULE + n + CONTRIB: contrib[n] for n in rules}
    if any(r.add is not None for r in rules.values()):
        clamped = ibis.least(ibis.greatest(s, 0.0), 100.0)
        cols[CLAMP] = (clamped - s).fill_null(0.0)
        s = clamped
    signals = [
        ibis.ifelse(fired[n], ibis.literal(r.signal), ibis.null("string"))
        for n, r in rules.items()
        if r.signal
    ]
    # concat_ws skips NULLs: the names of the signals raised, in file order
    joined = ibis.literal(",").join(signals).nullif("") if signals else ibis.null("string")
    forced = ibis.null("string")
    forced_by = ibis.null("string")
    for b in BAND_NAMES:  # built inside out: red, the worst, is checked first
        for n, r in reversed(list(rules.items())):
            if r.band == b:
                forced = ibis.ifelse(fired[n], ibis.literal(b), forced)
                forced_by = ibis.ifelse(fired[n], ibis.literal(n), forced_by)
    return t.mutate(
        base_score=base,
        score=s,
        signals=joined,
        band_forced_by=forced_by,
        __forced_band=forced,
        **cols,
    )


def band(t: ir.Table, model: Model) -> ir.Table:
    b = model.spec.bands
    green, yellow = ibis.literal(b.green), ibis.literal(b.yellow)
    own = model.spec.segments.bands if model.spec.segments else {}
    if own:  # segments with thresholds of their own
        green = t.segment.substitute({s: v.green for s, v in own.items()}, else_=green)
        yellow = t.segment.substitute({s: v.yellow for s, v in own.items()}, else_=yellow)
    label = ibis.cases(
        (t.score >= green, "green"),
        (t.score >= yellow, "yellow"),
        (t.score.notnull(), "red"),
        else_=ibis.null("string"),
    )
    if model.spec.rules:
        label = ibis.ifelse(t.score.notnull(), t["__forced_band"].fill_null(label), label)
    return t.mutate(band=label)


def probability(t: ir.Table, model: Model) -> ir.Table:
    """The calibrated probability of the model's outcome, from the final score."""
    spec = model.spec.probability
    if spec is None:
        return t
    p = _piecewise(t.score.cast("float64"), spec.points)
    return t.mutate(probability=ibis.ifelse(t.score.isnull(), ibis.null("float64"), p))


STEPS = (normalize, weigh, contribute, apply_rules, band, probability)


def score_metrics(raw: ir.Table, model: Model) -> ir.Table:
    """Apply the scoring steps to a raw-metrics expression and select the output columns."""
    t = raw
    for step in STEPS:
        t = step(t, model)
    return t.select(*output_columns(model)).order_by("account_id", "as_of")


def output_columns(model: Model) -> list[str]:
    cols = ["account_id", "as_of", "segment", "csm", "score", "band", "coverage"]
    if model.spec.probability is not None:
        cols.append("probability")
    cols += [PILLAR + p for p in model.spec.pillars]
    if model.spec.rules:
        cols += ["base_score", "signals", "band_forced_by"]
        for n in model.spec.rules:
            cols += [RULE + n, RULE + n + CONTRIB]
        if any(r.add is not None for r in model.spec.rules.values()):
            cols.append(CLAMP)
    scored = {m for _, m, _ in model.scored_metrics()}
    for m in model.spec.metrics:
        cols.append(m)
        if m in scored:
            cols += [m + NORM, m + WEIGHT, m + CONTRIB, m + MISSING]
    return cols
