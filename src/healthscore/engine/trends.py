"""Trend classes from stored score history: a 65 improving from 40 is not a 65 falling from 90.

Place in the flow: after ``history``; it reads the ``scores`` table of one model version
and builds (as an Ibis expression, run by the store) one row per account scored at D:

- ``rapid_decline``: the score is at least ``drop`` points below the highest stored score
  of the last ``within`` (default 20 points in 30 days);
- ``gradual_decline``: a line fitted to the stored scores of the last ``over`` (90 days),
  spanning at least ``min_span`` (60 days), falls by at least ``slope`` points per 30 days
  with R² of at least ``r2``: a consistent decline, not noise;
- ``improving``: the same line rises by at least ``slope`` points per 30 days;
- ``stable_high``: green at every stored date of the last ``for`` (60 days), with stored
  history reaching back at least that far, and moving at most ``max_range`` points: an
  expansion candidate;
- ``stable``: anything else.

The first class that applies wins, in that order. Thresholds live in the model's
``trends:`` section (part of the model version).
"""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from healthscore.core.time import parse_as_of, shift
from healthscore.engine.asof import explain_change
from healthscore.engine.explain import Change
from healthscore.engine.history import SCORES, ensure_tables
from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store

CLASSES = ("rapid_decline", "gradual_decline", "improving", "stable_high", "stable")
DAY = 86_400.0


def trends_expr(
    store: Store, model: Model, as_of: datetime, latest: pa.Table | None = None
) -> ir.Table:
    """One row per account with a stored score at ``as_of``: class, now, then, change.

    With ``latest`` (``account_id, score, band``: scores just computed as of ``as_of``,
    the live service's micro-batches), only those accounts, each with that score as its
    point at ``as_of`` in place of a stored one, and only when stored history holds a
    score of it in the trend windows (one point is no trend)."""

    def at(*durations: str) -> ir.Value:
        d = as_of
        for duration in durations:
            d = shift(d, duration)
        return ibis.literal(d, type="timestamp")

    def earliest(chains: list[tuple[str, ...]]) -> ir.Value:
        return ibis.literal(min(shift(as_of, c[0]) for c in chains), type="timestamp")

    if latest is not None:
        rows = [r for r in latest.select(["account_id", "score", "band"]).to_pylist()]
        rows = [r for r in rows if r["score"] is not None]
        latest = (
            [ibis.literal(r["account_id"], type="string") for r in rows],
            [ibis.literal(r["score"], type="float64") for r in rows],
            [ibis.literal(r["band"], type="string") for r in rows],
        )
    return trends_of(store, model, at, earliest, latest)


def trends_of(store: Store, model: Model, at, earliest, latest=None) -> ir.Table:
    """:func:`trends_expr` with its dates given by ``at(*durations)`` (the as-of date
    moved back by model durations; ``at()`` the as-of date) and ``earliest(chains)``
    (the earliest of several such dates), literals or parameters of a compiled plan
    (:class:`~healthscore.engine.plan.ParamClock`), and ``latest`` as three lists of
    values (account ids, scores, bands; None ids are left out) or as a table of
    ``account_id, score, band`` (one row per scored account)."""
    tr = model.spec.trends
    ensure_tables(store)
    D = at()
    s = store.stored(SCORES)
    s = s.filter(
        (s.model_version == model.version),
        (s.scorecard == model.scorecard_name),
        s.as_of <= D,
        s.as_of
        >= earliest(
            [
                (tr.rapid_decline.within,),
                (tr.gradual_decline.over,),
                (tr.improving.over,),
                (tr.stable_high.for_,),
            ]
        ),
        s.score.notnull(),
    )
    if isinstance(latest, ir.Table):
        s = _with_latest_rows(s, latest, D)
    elif latest is not None:
        s = _with_latest(s, *latest, D)
    days = (s.as_of.epoch_seconds() - D.epoch_seconds()) / DAY  # <= 0
    s = s.mutate(t=days)

    def since(duration: str) -> ir.BooleanValue:
        return s.as_of >= at(duration)

    rd, gd, im, sh = tr.rapid_decline, tr.gradual_decline, tr.improving, tr.stable_high
    then_at = at(rd.within)
    agg = s.group_by("account_id").aggregate(
        latest=s.as_of.max(),
        now=s.score.argmax(s.as_of),
        band=s.band.argmax(s.as_of),
        then=s.score.argmax(s.as_of, where=s.as_of <= then_at),
        then_at=s.as_of.max(where=s.as_of <= then_at),
        recent_max=s.score.max(where=since(rd.within)),
        peak_at=s.as_of.argmax(s.score, where=since(rd.within)),
        **_fit(s, since(gd.over), "gd"),
        **_fit(s, since(im.over), "im"),
        high_n=s.count(where=since(sh.for_)),
        high_green=s.count(where=since(sh.for_) & (s.band == "green")),
        high_min=s.score.min(where=since(sh.for_)),
        high_max=s.score.max(where=since(sh.for_)),
        first=s.t.min(),
    )
    agg = agg.filter(agg.latest == D)
    rapid = agg.now <= agg.recent_max - rd.drop
    gradual = _consistent(agg, "gd", gd, falling=True)
    improving = _consistent(agg, "im", im, falling=False)
    span_days = _days(sh.for_)
    stable_high = (
        (agg.high_n > 1)
        & (agg.high_green == agg.high_n)
        & (agg.first <= -span_days + 1e-9)  # stored history reaches back that far
        & (agg.high_max - agg.high_min <= sh.max_range)
    )
    cls = ibis.cases(
        (rapid, "rapid_decline"),
        (gradual, "gradual_decline"),
        (improving, "improving"),
        (stable_high, "stable_high"),
        else_="stable",
    )
    return agg.select(
        "account_id",
        trend=cls,
        score_now=agg.now,
        band=agg.band,
        score_then=agg.then,
        then_as_of=agg.then_at,
        change=agg.now - agg.then,
        peak=agg.recent_max,  # the highest stored score of the rapid-decline window
        peak_as_of=agg.peak_at,
        slope_per_30d=agg.gd_slope * 30.0,
        r2=agg.gd_r2,
    ).order_by(["trend", "change", "account_id"])


def _with_latest(
    s: ir.Table, ids: list[ir.Value], scores: list[ir.Value], bands: list[ir.Value], D: ir.Value
) -> ir.Table:
    """The stored scores ``s`` of the accounts ``ids`` before ``D``, and their latest
    score at ``D`` (``scores``, ``bands``: the same positions; accounts with none of
    ``s`` are left out). The new scores travel as arrays indexed by account (no table
    to upload: a micro-batch is small, and the store runs only compiled SQL)."""
    ids = ids or [ibis.literal("", type="string")]
    past = s.filter(s.as_of < D, s.account_id.isin(ids))
    past = past.select("account_id", "as_of", "score", "band")
    known = past.select("account_id").distinct()
    at = ibis.array(ids).index(known.account_id)
    scores = ibis.array(scores or [ibis.literal(0.0, type="float64")])
    bands = ibis.array(bands or [ibis.literal("", type="string")])
    now = known.select(
        "account_id", as_of=D.cast(past.as_of.type()), score=scores[at], band=bands[at]
    )
    return past.union(now)


def _with_latest_rows(s: ir.Table, latest: ir.Table, D: ir.Value) -> ir.Table:
    """:func:`_with_latest` with the accounts and their new scores as a table (a batch
    of any size, joined by account rather than looked up in arrays)."""
    past = s.filter(s.as_of < D).select("account_id", "as_of", "score", "band")
    past = past.semi_join(latest, "account_id")
    known = past.select("account_id").distinct()
    now = known.join(latest, "account_id").select(
        "account_id", as_of=D.cast(past.as_of.type()), score="score", band="band"
    )
    return past.union(now)


def _fit(s: ir.Table, where: ir.BooleanValue, p: str) -> dict[str, ir.Scalar]:
    """Least-squares slope (points per day) and R² of score over time, and the span."""
    return {
        f"{p}_n": s.count(where=where),
        f"{p}_span": s.t.max(where=where) - s.t.min(where=where),
        f"{p}_slope": s.t.cov(s.score, where=where, how="pop")
        / s.t.var(where=where, how="pop").nullif(0),
        f"{p}_r2": s.t.corr(s.score, where=where, how="pop") ** 2,
    }


def _consistent(agg: ir.Table, p: str, spec, falling: bool) -> ir.BooleanValue:
    slope30 = agg[f"{p}_slope"] * 30.0
    steep = slope30 <= -spec.slope if falling else slope30 >= spec.slope
    return (
        (agg[f"{p}_n"] >= 3)
        & (agg[f"{p}_span"] >= _days(spec.min_span) - 1e-9)
        & steep.fill_null(False)
        & (agg[f"{p}_r2"] >= spec.r2).fill_null(False)
    )


def _days(duration: str) -> float:
    ref = datetime(2000, 1, 1)
    return (ref - shift(ref, duration)).total_seconds() / DAY


def classify(store: Store, model: Model, as_of: datetime, trend: str | None = None):
    """Run :func:`trends_expr`; with ``trend``, only that class. Raises if nothing is stored."""
    if trend is not None and trend not in CLASSES:
        raise ScoringError(f"unknown trend class {trend!r}", hint="classes: " + ", ".join(CLASSES))
    from healthscore.engine.snapshot import Snapshot

    result = Snapshot(store, model).trends(as_of)  # trends_expr's rows, compiled once
    if result.num_rows == 0:
        raise ScoringError(
            f"no stored scores as of {as_of:%Y-%m-%d} for model {model.version[:12]}",
            hint="store them first: healthscore history --from <date> --to "
            f"{as_of:%Y-%m-%d} --every 1w"
            + ("" if model.scorecard_name == "health" else f" --scorecard {model.scorecard_name}"),
        )
    if trend is not None:
        import pyarrow.compute as pc

        result = result.filter(pc.equal(result["trend"], trend))
    return result


def rapid_declines(store: Store, model: Model, as_of=None) -> list[Change]:
    """Accounts in rapid decline at ``as_of`` (from stored history), each with why:
    the change from its highest stored score of the decline window, steepest first."""
    d = parse_as_of(as_of)
    rows = classify(store, model, d, "rapid_decline").to_pylist()
    changes = [explain_change(store, model, r["account_id"], d, r["peak_as_of"]) for r in rows]
    return sorted(changes, key=lambda c: (c.delta, c.account_id))
