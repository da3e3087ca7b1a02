"""Churn probability: the score calibrated against real outcomes, and ARR at risk.

Place in the flow: after ``backtest`` (it reads the stored point-in-time scores of one
model version at a series of observation dates, computing the missing dates first, and
the ``outcomes`` table) and before scoring with the fitted model:

- :func:`fit` turns (score, outcome) pairs into a compact piecewise-linear curve
  score -> probability: ``isotonic`` (scikit-learn's ``IsotonicRegression`` over the
  observations grouped into about 20 score bins, so each knot averages many
  observations) or ``platt`` (a logistic regression on the score, sampled every 5
  points). For a risk such as churn the curve never rises with the score.
- :func:`fit_probability` fits it out of sample: only observations whose horizon had
  closed by ``until`` are used, and only outcomes up to ``until`` are read, so nothing
  later can leak into the fit; the result is the model file's ``probability:`` section.
  The observations follow an :class:`~healthscore.evaluate.observations.ObservationPlan`
  (by default the grid every ``every``), the same plan a backtest or calibration takes.
- :func:`write_probability` writes that section into the model file (comments kept).
- :func:`arr_at_risk` sums, per segment or CSM, the expected churns (Σ p) and the ARR
  at risk (Σ p × ARR) of a scored table.

Scoring reads the section in :func:`healthscore.engine.scoring.probability`: the probability is
piecewise linear in the final score, flat beyond the first and last points.

Examples
--------
>>> fit([10, 10, 20, 20, 80, 80], [1, 0, 1, 0, 0, 0])
[[0.0, 0.5], [20.0, 0.5], [80.0, 0.0], [100.0, 0.0]]
>>> rows = [{"segment": "smb", "probability": 0.5, "arr": 1000.0},
...         {"segment": "smb", "probability": 0.1, "arr": 5000.0}]
>>> r = arr_at_risk(rows, "segment")[0]
>>> (r.group, r.accounts, r.expected, r.arr, r.arr_at_risk)
('smb', 2, 0.6, 6000.0, 1000.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import numpy as np
import pyarrow as pa

from healthscore.core.modelfile import (
    block_map,
    date_text,
    edit_model_text,
    flow_list,
    save_model_text,
)
from healthscore.core.time import dates_between, parse_as_of, parse_duration, shift
from healthscore.engine import asof
from healthscore.errors import DurationError, ModelError, ScoringError
from healthscore.model import (
    HEALTH,
    RISK_OUTCOMES,
    Model,
    Probability,
    load_model_text,
)
from healthscore.store import Store

if TYPE_CHECKING:  # ``score`` imports this module for percent(): pandas only where used
    import pandas as pd

METHODS = ("isotonic", "platt")
#: about this many score bins (isotonic) or knots (platt) per fitted curve
KNOTS = 20
#: observation dates reach back this far before the last one, by default
LOOKBACK = "24mo"


# --- the curve -----------------------------------------------------------------------------


def fit(
    scores: Iterable[float],
    labels: Iterable[bool],
    method: str = "isotonic",
    *,
    decreasing: bool = True,
    knots: int = KNOTS,
) -> list[list[float]]:
    """Points ``[[score, probability], ...]`` of the calibrated curve, score ascending.

    Parameters
    ----------
    scores, labels
        One pair per observation: the score (0-100) and whether the outcome followed.
    method
        ``isotonic``: observations are grouped into about ``knots`` bins of consecutive
        scores (ties never split), and a weighted isotonic regression through the bins'
        mean scores and outcome rates gives the knots; ``platt``: a logistic regression
        on the score (unpenalised), sampled at 0, 5, ... 100. A Platt slope of the wrong
        sign gives the overall rate everywhere.
    decreasing
        The probability never rises with the score (a risk, such as churn); False for
        an outcome a high score predicts (expansion).

    Returns
    -------
    list
        2+ points within [0, 100] x [0, 1], from score 0 to 100, monotone; linear in
        between (points on a straight line between their neighbours are dropped).
    """
    x = np.asarray(list(scores), dtype=float)
    y = np.asarray(list(labels), dtype=float)
    if x.shape != y.shape:
        raise ScoringError(f"{x.size} scores but {y.size} labels")
    keep = ~np.isnan(x)
    x, y = np.clip(x[keep], 0.0, 100.0), y[keep]
    if x.size == 0:
        raise ScoringError("no scored observation to fit a probability on")
    if method == "isotonic":
        grid, values = _isotonic(x, y, decreasing, knots)
    elif method == "platt":
        grid, values = _platt(x, y, decreasing, knots)
    else:
        raise ScoringError(f"unknown method {method!r}", hint="use isotonic or platt")
    return _compact(grid, values)


def _isotonic(x, y, decreasing: bool, knots: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    values, first, counts = np.unique(x, return_inverse=True, return_counts=True)
    # consecutive distinct scores into bins of about n / knots observations
    before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    _, bin_of_value = np.unique(np.floor(before * knots / x.size), return_inverse=True)
    bins = bin_of_value[first]
    n = np.bincount(bins).astype(float)
    xbar = np.bincount(bins, weights=x) / n
    ybar = np.bincount(bins, weights=y) / n
    iso = IsotonicRegression(increasing=not decreasing, y_min=0.0, y_max=1.0)
    fitted = iso.fit(xbar, ybar, sample_weight=n).predict(xbar)
    return xbar, fitted


def _platt(x, y, decreasing: bool, knots: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    grid = np.linspace(0.0, 100.0, knots + 1)
    rate = float(y.mean())
    if rate in (0.0, 1.0) or np.std(x) == 0:
        return grid, np.full(grid.size, rate)
    mu, sd = x.mean(), x.std()
    lr = LogisticRegression(C=1e6, max_iter=1000)  # Platt scaling: no real penalty
    lr.fit(((x - mu) / sd).reshape(-1, 1), y.astype(int))
    slope = float(lr.coef_[0, 0])
    if slope == 0 or (slope > 0) == decreasing:
        return grid, np.full(grid.size, rate)
    return grid, lr.predict_proba(((grid - mu) / sd).reshape(-1, 1))[:, 1]


def _compact(xs: np.ndarray, ys: np.ndarray) -> list[list[float]]:
    """Rounded points from score 0 to 100 (flat beyond the fitted ones), no redundant knot."""
    pts: list[list[float]] = []
    for x, y in zip(xs, ys, strict=True):
        x, y = round(float(x), 2), float(f"{min(max(float(y), 0.0), 1.0):.6g}")
        if not pts or x > pts[-1][0]:
            pts.append([x, y])
    if pts[0][0] > 0:
        pts.insert(0, [0.0, pts[0][1]])
    if pts[-1][0] < 100:
        pts.append([100.0, pts[-1][1]])
    out = [pts[0]]
    for i in range(1, len(pts) - 1):
        (x0, y0), (x1, y1), (x2, y2) = out[-1], pts[i], pts[i + 1]
        if abs(y0 + (x1 - x0) * (y2 - y0) / (x2 - x0) - y1) > 1e-12:
            out.append(pts[i])
    out.append(pts[-1])
    return out


def evaluate_points(points: list[list[float]], scores) -> np.ndarray:
    """The curve at ``scores``: linear between the points, flat beyond the ends."""
    xs, ys = zip(*points, strict=True)
    return np.interp(np.asarray(scores, dtype=float), xs, ys)


# --- fitting on stored history --------------------------------------------------------------


@dataclass
class ProbabilityFit:
    """A fitted ``probability:`` section with what it was fitted on."""

    probability: Probability
    observations: pd.DataFrame  # account_id, as_of, score, segment, label, predicted
    dates: list[datetime]
    notes: list[str] = field(default_factory=list)


def fit_probability(
    store: Store,
    model: Model,
    until,
    *,
    outcome: str = "churned",
    horizon: str = "90d",
    every: str = "1mo",
    start=None,
    method: str = "isotonic",
    progress: Callable[[str, float], None] | None = None,
    plan=None,
) -> Probability:
    """The model's ``probability:`` section, fitted on observations closed by ``until``.

    Observation dates run every ``every`` back from ``until`` to ``start`` (default:
    two years before the last one, not before the first outcome on file), keeping
    those whose ``horizon`` ends by ``until``. Their point-in-time scores come from
    stored history (missing dates are computed first, with the model's scoring
    sections; an existing ``probability:`` section plays no part); an observation's
    label is whether ``outcome`` followed within ``horizon``, read from the outcomes
    up to ``until`` only. See :func:`fit_probability_details` for the observations.
    """
    return fit_probability_details(
        store,
        model,
        until,
        outcome=outcome,
        horizon=horizon,
        every=every,
        start=start,
        method=method,
        progress=progress,
        plan=plan,
    ).probability


def fit_probability_details(
    store: Store,
    model: Model,
    until,
    *,
    outcome: str = "churned",
    horizon: str = "90d",
    every: str = "1mo",
    start=None,
    method: str = "isotonic",
    progress: Callable[[str, float], None] | None = None,
    plan=None,
) -> ProbabilityFit:
    """:func:`fit_probability`, also returning the observations, dates and notes.

    ``plan`` (an :class:`~healthscore.evaluate.observations.ObservationPlan`) says which
    (account, date) pairs are observed; the grid every ``every`` by default."""
    from healthscore.engine import timeline
    from healthscore.engine.history import backfill, ensure_tables
    from healthscore.evaluate.observations import observations, outcome_kind

    if method not in METHODS:
        raise ScoringError(f"unknown method {method!r}", hint="use isotonic or platt")
    grid = plan is None or plan.how == "grid"
    every = plan.every if plan is not None and grid else every
    for name, value in (("horizon", horizon), ("every", every)):
        try:
            parse_duration(value)
        except DurationError as e:
            raise DurationError(f"`{name}`: {e}") from None
    outcome = outcome_kind(outcome)
    until = parse_as_of(until, "until")
    if grid:  # the latest date on the grid back from `until` whose horizon has closed by then
        recent = dates_between(shift(shift(until, horizon), every), until, every)
        last = max(d for d in recent if _closed(d, horizon, until))
    else:
        last = shift(until, horizon)
    start = parse_as_of(start, "start") if start is not None else _default_start(store, last, until)
    if start > last:
        raise ScoringError(
            f"no observation date from {start:%Y-%m-%d} has its {horizon} horizon closed by "
            f"{until:%Y-%m-%d}",
            hint=f"pass `start` on or before {last:%Y-%m-%d}",
        )
    pairs, planned = None, []
    if grid:
        dates = [d for d in dates_between(start, until, every) if _closed(d, horizon, until)]
    else:
        seen = plan.observed(store, start, last)
        dates = [d for d in seen.dates if _closed(d, horizon, until)]
        if not dates:
            raise ScoringError(
                f"{plan.describe()}: no observation from {start:%Y-%m-%d} has its {horizon} "
                f"horizon closed by {until:%Y-%m-%d}",
                hint="choose an earlier `start` or a later `until`",
            )
        pairs, planned = seen.only(dates).pairs, list(seen.notes)
    base = _without_probability(model)
    ensure_tables(store)
    backfill(
        store,
        base,
        dates,
        lambda d: asof.score(store, base, d),
        progress=progress,
        score_dates=lambda ds: timeline.score_dates(store, base, ds),
    )
    t = store.table("outcomes")
    known = t.filter(t.kind == outcome, t.ts <= ibis.literal(until, type="timestamp")).count()
    if not store.execute(known.as_table())[0][0].as_py():
        raise ScoringError(
            f"the outcomes table has no {outcome} up to {until:%Y-%m-%d}; nothing to calibrate "
            "against",
            hint="load the outcomes table, or fit until a later date",
        )
    obs, notes = observations(store, base, dates, horizon, outcome, until=until, pairs=pairs)
    notes = planned + notes  # what the plan left out (accounts without a contract ...)
    if obs.empty:
        raise ScoringError(
            f"no scored observation from {dates[0]:%Y-%m-%d} to {dates[-1]:%Y-%m-%d} whose "
            f"{horizon} horizon closed by {until:%Y-%m-%d}; nothing to fit",
            hint="; ".join(notes) or None,
        )
    y = obs["label"].to_numpy(bool)
    if not y.any():
        raise ScoringError(
            f"none of the {len(obs):,} observations was followed by {outcome} within "
            f"{horizon} (outcomes up to {until:%Y-%m-%d}); nothing to calibrate against",
            hint="try a longer `horizon` or a later `until`",
        )
    points = fit(obs["score"], y, method, decreasing=outcome in RISK_OUTCOMES)
    obs = obs.assign(predicted=evaluate_points(points, obs["score"]))
    if y.sum() < 20:
        notes.append(
            f"only {int(y.sum())} observations were followed by {outcome}: too few for a "
            "reliable probability"
        )
    fitted = Probability(
        outcome=outcome,
        horizon=horizon,
        method=method,
        fitted_until=date_text(until),
        observations=len(obs),
        events=int(y.sum()),
        points=points,
    )
    return ProbabilityFit(fitted, obs, dates, notes)


def _closed(d: datetime, horizon: str, until: datetime) -> bool:
    return shift(d, horizon, +1) <= until


def _default_start(store: Store, last: datetime, until: datetime) -> datetime:
    """Two years before ``last``, but not before the first outcome on file: earlier
    observations (often before any data was collected) could never see an outcome."""
    t = store.table("outcomes")
    t = t.filter(t.ts <= ibis.literal(until, type="timestamp"))
    first = store.execute(t.select(first=t.ts.min()))["first"][0].as_py()
    start = shift(last, LOOKBACK)
    return max(start, first) if first is not None else start


def _without_probability(model: Model) -> Model:
    """The same scores without the ``probability:`` section: the history a fit reads is
    the one the unfitted model (and every refit) shares."""
    if model.spec.probability is None:
        return model
    spec = model.spec.model_copy(update={"probability": None})
    base = Model(spec, file=model.file, scorecard=model.scorecard_name)
    if model._root is not model:
        base._root = model._root
    return base


def write_probability(
    path: str | Path, probability: Probability, out: str | Path, *, scorecard: str | None = None
) -> Model:
    """Write ``probability`` as the ``probability:`` section of the model at ``path``
    (or of its scorecard ``scorecard``) into ``out``, keeping comments and key order."""

    def edit(doc) -> None:
        target = doc
        if scorecard not in (None, HEALTH):
            cards = doc.get("scorecards") or {}
            if scorecard not in cards:
                raise ModelError(
                    f"{path}: no scorecard {scorecard!r}", hint="scorecards: " + ", ".join(cards)
                )
            target = cards[scorecard]
        fields = probability.model_dump(mode="json", exclude_none=True)
        section = block_map((k, flow_list(v) if k == "points" else v) for k, v in fields.items())
        new = "probability" not in target
        target["probability"] = section
        if new:
            target.yaml_set_comment_before_after_key(
                "probability",
                before="score -> probability of the outcome; refit with "
                "`healthscore model fit-probability --until <date>`",
                indent=0 if target is doc else 4,
            )

    text = edit_model_text(Path(path).read_text(encoding="utf-8"), edit)
    return save_model_text(text, out, load_model_text).scorecard(scorecard)


# --- ARR at risk -----------------------------------------------------------------------------


@dataclass
class RiskRow:
    """One segment's or CSM's expected outcomes and ARR at risk."""

    group: str | None
    accounts: int  # scored rows in the group
    expected: float  # Σ probability: the expected number of accounts with the outcome
    arr: float | None  # Σ ARR (None when no ARR is known)
    arr_at_risk: float | None  # Σ probability x ARR

    @property
    def share(self) -> float | None:
        """ARR at risk as a share of the group's ARR."""
        return self.arr_at_risk / self.arr if self.arr else None


def arr_at_risk(
    scores, by: str | None = "segment", arr: dict[str, float] | None = None
) -> list[RiskRow]:
    """Expected outcomes (Σ p) and ARR at risk (Σ p x ARR) per ``by`` group.

    Parameters
    ----------
    scores
        Scored rows (a pyarrow Table or a list of row dicts) with ``probability``.
    by
        ``segment``, ``csm`` (any column), or None for one row over all accounts.
    arr
        ARR per account id; default: the rows' ``arr`` column (the model's ``arr``
        metric, ARR in force at the as-of date) when there is one, else no ARR.

    Returns
    -------
    list of RiskRow
        By ARR at risk (expected outcomes without ARR), largest first. An account
        without a probability (no score) counts in ``accounts`` and adds nothing.
    """
    if isinstance(scores, pa.Table):
        cols = [c for c in ("account_id", by, "probability", "arr") if c in scores.column_names]
        rows = scores.select(list(dict.fromkeys(cols))).to_pylist()
        names = set(scores.column_names)
    else:
        rows = list(scores)
        names = set(rows[0]) if rows else {"probability"}
    if "probability" not in names:
        raise ScoringError(
            "the scores have no probability: the model has no `probability:` section",
            hint="run `healthscore model fit-probability --until <date>` first",
        )
    known = arr is not None or "arr" in names
    groups: dict[str | None, RiskRow] = {}
    for r in rows:
        key = r.get(by) if by is not None else None
        zero = 0.0 if known else None
        g = groups.setdefault(key, RiskRow(key, 0, 0.0, zero, zero))
        g.accounts += 1
        p = r.get("probability")
        a = (arr.get(r.get("account_id"), 0.0) if arr is not None else r.get("arr")) or 0.0
        if known:
            g.arr += a
        if p is not None:
            g.expected += p
            if known:
                g.arr_at_risk += p * a
    return sorted(
        groups.values(), key=lambda g: (-(g.arr_at_risk or 0.0), -g.expected, str(g.group))
    )


def percent(p: float | None) -> str:
    """A probability for people: ``12 %``, ``0.4 %``.

    >>> [percent(p) for p in (0.123, 0.0456, 0.004, None)]
    ['12 %', '4.6 %', '0.4 %', '-']
    """
    if p is None:
        return "-"
    return f"{p * 100:.0f} %" if p >= 0.1 else f"{p * 100:.1f} %"
