"""Calibration: learn a model's weights, anchors, directions and bands from outcomes.

Place in the flow: after ``backtest``. It reads the stored point-in-time history of the
current model (computing the missing dates first) and the ``outcomes`` table (through
:mod:`healthscore.evaluate.observations`), and writes a new model file through
:mod:`healthscore.core.modelfile`: still the same explainable weighted sum, with numbers
learned from what happened.

- **The time split.** Observations are the backtest's (account, date) pairs of the same
  :class:`~healthscore.evaluate.observations.ObservationPlan` (by default every account
  at ``start``, ``start + every`` ...) up to ``train_until - horizon``: every label window
  closes by ``train_until`` (D). Outcomes after D are not read at all (not even to decide
  which windows are closed), and every feature is a point-in-time score line at a date
  before D, so nothing after D can change the fit.
- **Features** are the stored raw metric values (``score_lines.raw_value``, after
  ``fill``) of the scored metrics. A linear metric (``bad``/``good``) is renormalised
  with anchors chosen from the training data: candidates are the old anchors and the
  1, 5, 10, 25, 50, 75, 90, 95 and 99 % quantiles; the pair (and its orientation, i.e. the
  metric's **direction**) whose one-metric logistic fit explains the outcome best wins
  when it beats the old anchors by more than 2 log-likelihood units per observation an
  account has on average (an account's observations are correlated); else the old
  anchors stay. A ``map`` metric's category scores are learned the same way: each
  category's effect on the outcome, scaled so the riskiest scores 0 and the safest 100
  (shrunk toward no effect for rare categories). ``percentile`` metrics keep their
  normalisation (their stored 0-100 value is the feature); only their weight is learned.
- **Refinement.** A metric judged alone can look predictive only through another (a
  long tenure and a long contract go together). After the first weight fit, each linear
  and map metric's normalisation is re-chosen given the others' fitted effect (the same
  candidates plus the data's range, the same margin), and the weights are refitted;
  ``REFINE_ROUNDS`` passes. The weights stay non-negative: a direction is carried by the
  anchors' orientation, so the result is still an explainable weighted sum.
- **Learned shapes.** In the first of them a linear or ``points`` metric may get a
  monotone piecewise-linear normalisation (``points``, :mod:`~healthscore.evaluate.shapes`:
  isotonic regression reduced to 3-5 points) instead of its clamp, adopted only when its
  log-loss on ``SHAPE_FOLDS`` held-out folds of the accounts beats the current
  normalisation's by the anchors' margin after a penalty of that margin per point
  beyond two (:func:`_refit_shape`); each is explained in words (:class:`Shape`).
- **Missing data** follows the metric's policy exactly as scoring does: ``neutral`` and
  ``penalty`` put their value in; ``reweight`` leaves the metric out of that
  observation, its pillar's other metrics carry its weight (and a pillar with no data
  gives its weight to the others). The fit uses this same score function, so the
  fitted weights are the ones the score will use.
- **Weights** come from a logistic model of the outcome on the score, risk logit =
  a − Σ β_m · n_m (n_m the 0-1 normalised value), with β_m ≥ 0 (L-BFGS-B, bounds
  (0, ∞)) and an L2 penalty on β: the score stays a weighted sum that rises with health.
  Weights are β normalised to sum 1 and written as percent of the score (rounded to
  0.1); a pillar's weight is the sum of its metrics'. A metric whose fitted weight is 0
  stays in the file with weight 0. Per-segment pillar weights of the old model are
  dropped: one set of weights is fitted for all accounts (the segment is still reported).
- **Directions.** A metric marked ``direction: fixed`` is never flipped: its anchors may
  move, only in the old orientation (a ``map`` keeps its scores); when its data points
  the other way its weight goes to 0. Every flip, every zeroed metric and every fixed
  metric held against its data is listed first (:func:`review`) with its evidence on the
  training observations (:class:`Evidence`: the AUC of the metric alone read the old
  way, n, the means).
- **Bands.** ``yellow`` (red below it) is the lowest whole-number threshold at which
  at least ``target_recall`` of the training observations followed by the outcome are
  red (after rules), i.e. the target recall at the lowest false-positive rate, unless
  more than the **red-share cap** of the training observations would be red: then the
  highest threshold within the cap (:func:`red_share_cap`: ``max_red_share``, default
  1.5 x the current model's red share, at least 5 % and at most 20 %), and a note says
  the cap bound and prints the trade-off (recall and red share at a few thresholds
  between the two) for the team to choose from. ``green`` keeps the share of green
  training observations the old model had, at least ``MIN_YELLOW_WIDTH`` (10) points
  above yellow. Segments
  with 20+ positive training observations get a yellow threshold of their own when it
  differs and reaches the target within the cap in the segment (written to
  ``segments.bands``, green at least a point above it).
- **Held-out comparison.** The new model and the old are backtested on the observation
  dates from D on only (the same plan, judged ``lead`` before each outcome), never on the
  training period; beside the backtest, the recall the new score reaches at the old
  model's false-positive rate on the same observations.

Everything is deterministic: the same data, model and options give the same file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from healthscore.core.modelfile import (
    block_map,
    dump_document,
    edit_model_text,
    flow_list,
    flow_map,
    number,
    save_model_text,
)
from healthscore.core.tables import TABLES
from healthscore.core.time import shift
from healthscore.engine import asof
from healthscore.engine.history import LINES, ensure_tables
from healthscore.errors import ScoringError
from healthscore.evaluate import backtest as bt
from healthscore.evaluate import shapes
from healthscore.evaluate.observations import (
    ObservationPlan,
    observations,
    outcome_events,
    outcome_kind,
    training_observations,
)
from healthscore.model import HEALTH, Model, default_model_text, load_model_text
from healthscore.store import Store

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
#: refinement passes: each metric's normalisation re-chosen given the others' fitted effect
REFINE_ROUNDS = 2
#: learned shapes (``points``) are judged on this many folds of the training accounts
SHAPE_FOLDS = 5
#: ... and tried in this many of the refinement passes (the first ones)
SHAPE_ROUNDS = 1
#: a count whose 99th percentile is this many times its median may get log-scaled
#: anchors (`scale: log`)
SKEWED = 10.0
#: a metric needs this many distinct values before a shape is tried instead of its clamp
SHAPE_MIN_VALUES = 5
MAP_RIDGE = 1.0  # shrinks a category's learned effect toward none (pseudo-observations)
ANCHOR_GAIN = 2.0  # log-likelihood units per (observations per account) to move anchors
L2 = 1e-4  # penalty on the coefficients, on the mean log-loss (about scikit-learn C=1)
MIN_POSITIVES = 10  # fewer positive training observations: refuse to calibrate
MIN_SEGMENT_POSITIVES = bt.MIN_EVENTS  # a segment's own band suggestion needs this many
WARM_UP = "90d"  # default start: this long after the first event on file
#: the calibrated red band holds at most this many times the current model's red share of
#: the training observations (a red list the team cannot work is no warning) ...
RED_CAP_FACTOR = 1.5
MIN_RED_CAP = 0.05  # ... and may always hold this share ...
MAX_RED_CAP = 0.20  # ... and never more than this, unless `max_red_share` says so
#: the calibrated yellow band is at least this many points wide (green - yellow), so an
#: account does not cross from green to red on a rounding
MIN_YELLOW_WIDTH = 10.0
#: thresholds shown in the recall / red-share trade-off when the cap binds
TRADEOFF_ROWS = 5


@dataclass
class MetricChange:
    """One scored metric before and after calibration."""

    pillar: str
    metric: str
    kind: str  # linear | points | map | percentile (before calibration)
    old_weight: float  # share of the whole score (0-1), default segment
    new_weight: float
    old_bad: float | None = None
    old_good: float | None = None
    new_bad: float | None = None
    new_good: float | None = None
    old_direction: str | None = None  # higher | lower (is better)
    new_direction: str | None = None
    old_map: dict[str, float] | None = None  # map metrics: category -> score 0-100
    new_map: dict[str, float] | None = None
    old_points: list[tuple[float, float]] | None = None  # points metrics: [raw, score]
    new_points: list[tuple[float, float]] | None = None  # a shape learned (or kept)
    shape: Shape | None = None  # the learned shape and what it gained on held-out folds
    old_scale: str | None = None  # linear metrics: `log` when read as ln(1 + x)
    new_scale: str | None = None
    note: str = ""
    fixed: bool = False  # `direction: fixed`: never flipped
    evidence: Evidence | None = None  # what the training data says of it alone

    @property
    def inverted(self) -> bool:
        return self.old_direction is not None and self.old_direction != self.new_direction

    @property
    def zeroed(self) -> bool:
        """Weighted before, weight 0 after calibration."""
        return self.old_weight > 0 and self.new_weight == 0

    @property
    def held(self) -> bool:
        """A ``fixed`` metric whose data alone points the other way: kept, not flipped."""
        e = self.evidence
        return self.fixed and e is not None and e.auc is not None and e.auc < 0.5


@dataclass
class Shape:
    """A monotone piecewise-linear normalisation learned for a metric, and its evidence."""

    points: list[tuple[float, float]]
    #: the held-out log-loss per observation minus that of the normalisation it replaced
    #: (negative: better), over ``SHAPE_FOLDS`` folds of the training observations
    gain: float
    replaced: str  # what it replaced: "clamp" or "points"

    def describe(self, metric: str) -> str:
        """``days_to_renewal: 85% of its effect between 0 and 60 (higher is healthier);
        3 points, held-out log-loss -0.0040 per observation vs the clamp``."""
        return (
            f"{metric}: {shapes.describe(self.points)}; {len(self.points)} points, held-out "
            f"log-loss {self.gain:+.4f} per observation vs the {self.replaced}"
        )


@dataclass
class Evidence:
    """What the training observations say of one metric alone, read the old model's way."""

    observations: int  # training observations where it has a value of its own
    positives: int  # of which followed by the outcome
    # the chance that an observation not followed by the outcome reads healthier than one
    # followed by it (ties count half): 0.5 is no signal, below 0.5 the data points the
    # other way
    auc: float | None
    mean_positive: float | None  # mean value (raw; 0-100 for map, points, percentile)
    mean_negative: float | None

    def describe(self, outcome: str) -> str:
        """``AUC 0.46 read the old way (0.5: chance) on 9,612 observations, 214 churned;
        mean -0.01 when churned vs 0.02 otherwise``."""
        if self.auc is None:
            return (
                f"no signal to measure on {self.observations:,} observations "
                f"({self.positives:,} {outcome})"
            )
        return (
            f"AUC {self.auc:.2f} read the old way (0.5: chance, below it the data points "
            f"the other way) on {self.observations:,} training observations, "
            f"{self.positives:,} {outcome}; mean {_g(self.mean_positive)} when {outcome} vs "
            f"{_g(self.mean_negative)} otherwise"
        )


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def metric_evidence(f: _Feature, y: np.ndarray) -> Evidence:
    """:class:`Evidence` of feature ``f`` (its old normalisation) for outcomes ``y``."""
    from sklearn.metrics import roc_auc_score

    has = f.has_data()
    if f.kind == "linear":
        value = f.raw
        healthy = value if f.good > f.bad else -value
    else:
        healthy = f.normalized() if f.kind == "map" else f.stored
        value = 100.0 * healthy
    yk = y[has].astype(bool)
    pos, neg = value[has][yk], value[has][~yk]
    auc = None
    if yk.any() and not yk.all() and np.unique(healthy[has]).size > 1:
        auc = float(roc_auc_score(~yk, healthy[has]))
    return Evidence(
        observations=int(has.sum()),
        positives=int(yk.sum()),
        auc=auc,
        mean_positive=float(pos.mean()) if pos.size else None,
        mean_negative=float(neg.mean()) if neg.size else None,
    )


def review(changes: list[MetricChange], outcome: str) -> list[str]:
    """What a person should check before trusting a calibration, one line per metric:
    every direction flipped, every metric whose weight went to 0, every ``fixed`` metric
    whose data alone points the other way; each with its evidence."""
    lines = []
    for c in changes:
        why = c.evidence.describe(outcome) if c.evidence is not None else ""
        if c.inverted:
            alone = c.evidence is not None and c.evidence.auc is not None and c.evidence.auc > 0.5
            lines.append(
                f"flipped {c.metric}: {c.old_direction} was better, now {c.new_direction} is "
                f"(weight {100 * c.old_weight:.1f} % -> {100 * c.new_weight:.1f} %): {why}"
                + (
                    "; alone it agrees with the old direction: flipped only given the other metrics"
                    if alone
                    else ""
                )
                + "; if its meaning is unambiguous, mark it `direction: fixed`"
            )
    for c in changes:
        why = c.evidence.describe(outcome) if c.evidence is not None else ""
        if c.zeroed:
            reason = (
                "its data points the other way and its direction is fixed"
                if c.held
                else "no predictive value beyond the other metrics"
            )
            lines.append(
                f"zeroed {c.metric} (weight {100 * c.old_weight:.1f} % -> 0, kept in the file): "
                f"{reason}; {why}"
            )
        elif c.held and not c.inverted:
            lines.append(
                f"kept {c.metric} (direction: fixed) {c.old_direction} is better although the "
                f"data alone points the other way: {why}"
            )
    return lines


@dataclass
class EqualFPR:
    """Recall of both models at the old model's false-positive rate (held-out set)."""

    observations: int
    positives: int
    old_fpr: float | None
    old_recall: float | None
    new_threshold: float | None  # the new score below which an observation is flagged
    new_fpr: float | None
    new_recall: float | None


@dataclass
class CalibrationResult:
    """What calibration learned, wrote and measured."""

    model: Model
    yaml_text: str
    out: Path | None
    old_label: str
    old_version: str
    train_until: datetime
    outcome: str
    horizon: str
    every: str
    train_dates: list[datetime]
    observations: int
    positives: int
    events: int
    accounts: int
    metrics: list[MetricChange]
    pillars: dict[str, tuple[float, float]]  # pillar -> (old, new) share of the score
    old_bands: dict[str, float]
    new_bands: dict[str, float]
    train_recall: float | None
    train_fpr: float | None
    segment_bands: dict[str, float] = field(default_factory=dict)  # own yellow, in the file
    test_dates: list[datetime] = field(default_factory=list)
    backtest: bt.BacktestResult | None = None
    equal_fpr: EqualFPR | None = None
    notes: list[str] = field(default_factory=list)
    # the current model on the same training observations, and the red-share cap
    old_train_recall: float | None = None
    old_train_fpr: float | None = None
    old_red_share: float | None = None
    red_share: float | None = None  # share of the training observations red, new bands
    red_cap: float | None = None
    wanted_yellow: float | None = None  # the yellow the target recall needed, when capped
    lead: str = "30d"  # the held-out backtest judges this long before each outcome
    plan: ObservationPlan | None = None  # which (account, date) pairs are observed

    @property
    def review(self) -> list[str]:
        """Flips, zeroed metrics and held fixed directions, each with its evidence."""
        return review(self.metrics, self.outcome)

    def auc(self) -> tuple[float | None, float | None]:
        """Held-out ROC AUC for the outcome: (old, new)."""
        if self.backtest is None or self.outcome not in self.backtest.evaluations:
            return None, None
        new = self.backtest.evaluations[self.outcome].overall.roc_auc.value
        old = (self.backtest.vs_evaluations or {}).get(self.outcome)
        return (old.overall.roc_auc.value if old else None), new


# --- data ----------------------------------------------------------------------------------


def data_start(store: Store, model: Model) -> datetime | None:
    """From when every event table the model reads has data (None: no events).

    Interval tables (subscriptions, tickets) are left out: contracts signed years
    before the events were recorded would otherwise pull the start back.
    """
    firsts = []
    for name in model.tables_used():
        if TABLES[name].kind != "event":
            continue
        t = store.table(name)
        time = TABLES[name].time
        v = store.execute(t.aggregate(first=t[time].min()))["first"][0].as_py()
        if v is not None:
            firsts.append(v if isinstance(v, datetime) else datetime(v.year, v.month, v.day))
    return max(firsts) if firsts else None


def score_lines(store: Store, model: Model, dates: list[datetime]) -> pd.DataFrame:
    """Stored metric and rule lines at ``dates``, long: account, date, kind, name, values."""
    t = store.stored(LINES)
    t = t.filter(
        t.model_version == model.version,
        t.scorecard == model.scorecard_name,
        t.as_of.isin(list(dates)),
        t.kind.isin(["metric", "rule"]),
    )
    cols = ("account_id", "as_of", "kind", "name", "raw", "raw_value", "normalized", "missing")
    return store.execute(t.select(*cols)).to_pandas()


def _wide(lines: pd.DataFrame, obs: pd.DataFrame, kind: str, column: str, names: list[str]):
    part = lines[lines["kind"] == kind]
    key = ["account_id", "as_of", "name"]
    if part.duplicated(key).any():  # never in a stored history; the first value wins
        wide = part.pivot_table(
            index=key[:2], columns="name", values=column, aggfunc="first", dropna=False
        )
    else:  # one line per observation and name: a reshape (pivot_table groups: slower)
        wide = part.set_index(key)[column].unstack("name")
    wide = wide.reindex(columns=names)
    keys = pd.MultiIndex.from_frame(obs[["account_id", "as_of"]])
    return wide.reindex(keys)


# --- normalisation and the score in numpy ------------------------------------------------------


def _linear(x: np.ndarray, bad: float, good: float) -> np.ndarray:
    return np.clip((x - bad) / (good - bad), 0.0, 1.0)


@dataclass
class _Feature:
    pillar: str
    metric: str
    kind: str
    policy: str
    value: float | None  # neutral/penalty value 0-1
    raw: np.ndarray  # raw values (NaN: none)
    stored: np.ndarray  # stored normalised 0-1 (NaN: none)
    bad: float | None = None
    good: float | None = None
    text: np.ndarray | None = None  # map metrics: the raw category per observation
    map: dict[str, float] | None = None  # map metrics: category -> score 0-100
    fixed: bool = False  # `direction: fixed`: which end is healthy is never flipped
    points: list[tuple[float, float]] | None = None  # a piecewise-linear normalisation
    scale: str | None = None  # `log`: anchors and values read as ln(1 + x)

    @property
    def higher_is_better(self) -> bool:
        if self.points is not None:
            return self.points[-1][1] > self.points[0][1]
        return self.good > self.bad

    def normalized(self) -> np.ndarray:
        """0-1 per observation; NaN where the metric is left out (reweight)."""
        if self.points is not None:
            n = shapes.normalized(self.raw, self.points)
            return n if self.value is None else np.where(np.isnan(n), self.value, n)
        if self.kind == "linear":
            return _linear_feature(self.raw, self.value, self.bad, self.good, self.scale)
        if self.kind == "map" and self.text is not None and self.map is not None:
            n = _map_feature(self.text, self.map)
        else:
            n = self.stored
        return n if self.value is None else np.where(np.isnan(n), self.value, n)

    def has_data(self) -> np.ndarray:
        """Observations where the metric has a value of its own (not a policy's)."""
        if self.kind == "linear" or self.points is not None:
            return ~np.isnan(self.raw)
        if self.kind == "map" and self.text is not None and self.map is not None:
            return ~np.isnan(_map_feature(self.text, self.map))
        return ~np.isnan(self.stored)

    def take(self, rows: np.ndarray) -> _Feature:
        """The same metric on a subset of the observations."""
        text = None if self.text is None else self.text[rows]
        return replace(self, raw=self.raw[rows], stored=self.stored[rows], text=text)


def _map_feature(text: np.ndarray, mapping: dict[str, float]) -> np.ndarray:
    """0-1 per observation from a category map; NaN for no category or an unmapped one."""
    return np.array(
        [np.nan if t is None or t not in mapping else mapping[t] / 100.0 for t in text], float
    )


def _score01(n: np.ndarray, w: np.ndarray, pillar_of: np.ndarray, pillars: int) -> np.ndarray:
    """The model's weighted sum (0-1) with reweighting of missing metrics and pillars.

    ``n`` is observations x metrics (NaN: left out), ``w`` the metric weights (any
    scale); a pillar's weight is the sum of its metrics' weights. NaN where nothing is
    known.
    """
    return _score01_grad(n, w, pillar_of, pillars)[0]


def _score01_grad(
    n: np.ndarray, w: np.ndarray, pillar_of: np.ndarray, pillars: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_score01` (NaN where nothing is known) and its derivative by each weight.

    Per observation S = N / W with N = Σ_p pw_p · ps_p and W = Σ_p pw_p over the pillars
    with data, pw_p = Σ_{m in p} w_m and ps_p = Σ w_m n_m / Σ w_m over the metrics of p
    with data.
    """
    avail = ~np.isnan(n)
    filled = np.where(avail, n, 0.0)
    count, m = n.shape
    num = np.zeros(count)
    den = np.zeros(count)
    ps_of = np.zeros((count, m))  # the pillar score of each metric's pillar
    has_of = np.zeros((count, m), bool)
    a_of = np.ones((count, m))
    pw_of = np.zeros(m)
    for p in range(pillars):
        cols = pillar_of == p
        wp = w[cols]
        pw = wp.sum()
        a = avail[:, cols] @ wp
        s = filled[:, cols] @ wp
        has = a > 0
        ps = np.divide(s, a, out=np.zeros_like(s), where=has)
        num += np.where(has, pw * ps, 0.0)
        den += np.where(has, pw, 0.0)
        ps_of[:, cols] = ps[:, None]
        has_of[:, cols] = has[:, None]
        a_of[:, cols] = np.where(has, a, 1.0)[:, None]
        pw_of[cols] = pw
    known = den > 0
    score = np.divide(num, den, out=np.zeros(count), where=known)
    dps = np.where(avail, (filled - ps_of) / a_of, 0.0)
    dnum = np.where(has_of, ps_of + pw_of[None, :] * dps, 0.0)
    dden = has_of.astype(float)
    safe = np.where(known, den, 1.0)[:, None]
    dscore = np.where(known[:, None], (dnum - score[:, None] * dden) / safe, 0.0)
    return np.where(known, score, np.nan), dscore


class _WeightedSum:
    """:func:`_score01_grad` of fixed normalised values ``n`` for many weight vectors,
    as the weight fit needs them: the values split by pillar once, and the derivative
    only ever wanted summed against a vector over the observations
    (:meth:`score_and_pullback`), which needs no observations x metrics matrix."""

    def __init__(self, n: np.ndarray, pillar_of: np.ndarray, pillars: int):
        self.count, self.m = n.shape
        avail = ~np.isnan(n)
        filled = np.where(avail, n, 0.0)
        self.blocks = []
        for p in range(pillars):
            cols = np.flatnonzero(pillar_of == p)
            self.blocks.append(
                (
                    cols,
                    np.ascontiguousarray(avail[:, cols], dtype=float),
                    np.ascontiguousarray(filled[:, cols]),
                )
            )

    def score_and_pullback(self, w: np.ndarray):
        """The score (NaN where nothing is known) and ``v -> v @ dscore/dw``."""
        num = np.zeros(self.count)
        den = np.zeros(self.count)
        parts = []
        for (
            cols,
            av,
            fl,
        ) in self.blocks:
            wp = w[cols]
            pw = wp.sum()
            a = av @ wp
            s = fl @ wp
            has = a > 0
            ps = np.divide(s, a, out=np.zeros_like(s), where=has)
            num += np.where(has, pw * ps, 0.0)
            den += np.where(has, pw, 0.0)
            parts.append((cols, av, fl, pw, ps, has, np.where(has, a, 1.0)))
        known = den > 0
        score = np.divide(num, den, out=np.zeros(self.count), where=known)
        safe = np.where(known, den, 1.0)

        def pullback(v: np.ndarray) -> np.ndarray:
            # d score_i / d w_j, for j in pillar p with data at i (else 0):
            # (ps_i - score_i + pw_p (n_ij - ps_i) / a_i [n_ij known]) / den_i
            out = np.zeros(self.m)
            for cols, av, fl, pw, ps, has, a in parts:
                u = np.where(known & has, v / safe, 0.0)
                ua = u / a
                out[cols] = float(u @ (ps - score)) + pw * (ua @ fl - (ua * ps) @ av)
            return out

        return np.where(known, score, np.nan), pullback


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    """Sum of the logistic log-loss with risk logit ``z``."""
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def _fit_one(n: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None) -> tuple[float, float]:
    """Logistic risk ~ offset + a + b·n by Newton steps: (negative log-likelihood, b)."""
    nll, _, b = _fit_line(n, y, offset)
    return nll, b


def _fit_line(
    n: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None, ridge: float = 1e-6
) -> tuple[float, float, float]:
    """Logistic risk ~ offset + a + b·n by Newton steps: (negative log-likelihood, a, b)."""
    off = np.zeros(len(n)) if offset is None else offset
    a, b = shapes.logistic_line(n, y, offset, ridge)
    return _nll(y, off + a + b * n), float(a), float(b)


def score_link(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The logistic link of outcomes ``y`` on a 0-100 ``score``: (a, b) with risk logit
    a + b · score / 100 (b < 0 when a low score goes with the outcome). It puts the
    scores of two fits on one scale: the same fitted risk, the same place."""
    _, a, b = _fit_line(np.asarray(score, float) / 100.0, np.asarray(y, float))
    return a, b


def _round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not np.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def _linear_feature(
    raw: np.ndarray, value: float | None, bad: float, good: float, scale: str | None = None
):
    x = np.nan_to_num(raw)
    if scale == "log":  # as scoring reads it: ln(1 + x), a negative value as 0
        x, bad, good = np.log1p(np.maximum(x, 0.0)), math.log1p(bad), math.log1p(good)
    n = np.where(np.isnan(raw), np.nan, _linear(x, bad, good))
    return n if value is None else np.where(np.isnan(n), value, n)


def _anchors(f: _Feature, y: np.ndarray, gain: float) -> tuple[float, float, bool]:
    """Best (bad, good) for a linear metric; whether they differ from the old ones.

    Each candidate pair is judged by a one-metric logistic fit of the outcome on the
    normalised value; its sign gives the direction. New anchors must beat the old ones
    by ``gain`` log-likelihood units; the direction flips only when the old anchors' fit
    carries a signal (beats no metric at all by the same margin) that points the other way.
    """
    x = f.raw
    keep = ~np.isnan(x) if f.value is None else np.ones(len(x), bool)
    values = x[~np.isnan(x)]
    if values.size < 2 or np.unique(values).size < 2 or y[keep].all() or not y[keep].any():
        return f.bad, f.good, False
    yk = y[keep]

    def fit(bad, good):
        return _fit_one(_linear_feature(x, f.value, bad, good, f.scale)[keep], yk)

    rate = yk.mean()
    null = _nll(yk, np.full(len(yk), math.log(rate / (1 - rate))))
    old_nll, old_b = fit(f.bad, f.good)
    wrong_way = old_b > 0 and old_nll < null - gain and not f.fixed
    cands = sorted({_round_sig(v) for v in np.quantile(values, QUANTILES)} | {f.bad, f.good})
    best = _best_pair(f, cands, fit)
    if wrong_way or (old_b <= 0 and best[0] < old_nll - gain):
        return best[1], best[2], True
    return f.bad, f.good, False


def _best_pair(f: _Feature, cands: list[float], fit) -> tuple[float, float, float]:
    """(log-loss, bad, good) of the candidate pair that explains the outcome best; its
    orientation (the direction) from the fit, or, for a ``fixed`` metric, the old one
    only: a pair whose fit points the other way is then no candidate."""
    higher = f.good > f.bad
    best = (math.inf, f.bad, f.good)
    for i, lo in enumerate(cands):
        for hi in cands[i + 1 :]:
            value, b = fit(lo, hi)  # lo scores 0, hi 100: b < 0 when risk falls as it rises
            if f.fixed and (b <= 0) != higher:
                continue
            if value < best[0] - 1e-9:
                best = (value, lo, hi) if b <= 0 else (value, hi, lo)
    return best


def _refit_anchors(
    f: _Feature, y: np.ndarray, offset: np.ndarray, gain: float
) -> tuple[float, float, str | None]:
    """Anchors (and scale) of a linear metric given the other metrics' effect (``offset``).

    Candidates are the data's range and quantiles and the current pair; a pair (with its
    orientation) replaces the current one when it explains the outcome better by ``gain``.
    For a heavily skewed count (:func:`skewed`) the same pairs are tried on a log scale
    (``ln(1 + x)``), and the other scale wins only when it beats the best pair of the
    current one by ``gain`` too.
    """
    keep = f.has_data() if f.value is None else np.ones(len(f.raw), bool)
    values = f.raw[~np.isnan(f.raw)]
    if values.size < 2 or np.unique(values).size < 2 or y[keep].all() or not y[keep].any():
        return f.bad, f.good, f.scale
    yk, ok = y[keep], offset[keep]

    def fitter(scale):
        def fit(bad, good):
            return _fit_one(_linear_feature(f.raw, f.value, bad, good, scale)[keep], yk, ok)

        return fit

    current, current_b = fitter(f.scale)(f.bad, f.good)
    wrong_way = current_b > 0 and current < _nll_offset(yk, ok) - gain and not f.fixed
    qs = np.quantile(values, (0.0, *QUANTILES, 1.0))
    cands = sorted({_round_sig(v) for v in qs} | {f.bad, f.good})
    best = (*_best_pair(f, cands, fitter(f.scale)), f.scale)
    other = None if f.scale == "log" else "log"
    if f.scale == "log" or (skewed(values) and min(f.bad, f.good) >= 0):
        alt = _best_pair(f, [c for c in cands if c >= 0], fitter(other))
        if alt[0] < best[0] - gain:
            best = (*alt, other)
    if wrong_way or best[0] < current - gain:
        return best[1], best[2], best[3]
    return f.bad, f.good, f.scale


def skewed(values: np.ndarray) -> bool:
    """A heavily skewed count: never negative, and its 99th percentile more than
    ``SKEWED`` times its median (a median below 1 counts as 1).

    >>> skewed(np.array([0, 0, 1, 1, 2, 3, 50.0])), skewed(np.arange(10.0))
    (True, False)
    """
    if values.size < 3 or values.min() < 0:
        return False
    q50, q99 = np.quantile(values, (0.5, 0.99))
    return bool(q99 > SKEWED * max(q50, 1.0))


def _refit_shape(
    f: _Feature, y: np.ndarray, offset: np.ndarray, gain: float, fold: np.ndarray
) -> Shape | None:
    """A learned shape for a linear or points metric given the others' effect, or None.

    Candidates have 3 to ``shapes.MAX_POINTS`` points, found on the training part of
    each of the folds ``fold`` (an account's observations share a fold) in the metric's
    current direction. Each is judged, like the current normalisation, by its log-loss
    on the held-out fold of a one-metric fit beside ``offset``; every point beyond a
    clamp's two costs ``gain``, and the best candidate must beat the current
    normalisation by ``gain`` more: a straight line wins a tie.
    """
    has = ~np.isnan(f.raw)
    keep = has if f.value is None else np.ones(len(f.raw), bool)
    if np.unique(f.raw[has]).size < SHAPE_MIN_VALUES or y[keep].all() or not y[keep].any():
        return None
    higher = f.higher_is_better
    parts = [(fold != k, fold == k) for k in np.unique(fold)]
    if len(parts) < 2:
        return None

    def held_out(n_of) -> float:
        """The held-out log-loss summed over the folds; ``n_of(k)``: fold k's values."""
        total = 0.0
        for k, (train, test) in enumerate(parts):
            n = n_of(k)
            if n is None:
                return math.inf
            tr, te = keep & train, keep & test
            # the same small ridge for every candidate: a shape whose few riskiest
            # observations all had the outcome cannot claim an infinite slope
            _, a, b = _fit_line(n[tr], y[tr], offset[tr], shapes.RIDGE)
            total += _nll(y[te], offset[te] + a + b * n[te])
        return total

    current = held_out(lambda k: f.normalized())
    had = 2 if f.points is None else len(f.points)
    found = [
        shapes.shape_points(
            f.raw[has & train], y[has & train], higher_is_better=higher, offset=offset[has & train]
        )
        for train, _ in parts
    ]

    def fold_values(k: int, m: int) -> np.ndarray | None:
        fits = [c for c in found[k] if c <= m]
        if not fits:
            return None
        return replace(f, points=found[k][max(fits)]).normalized()

    best = (current + gain * (had - 2), None)
    for m in range(3, shapes.MAX_POINTS + 1):
        cost = held_out(lambda k, m=m: fold_values(k, m)) + gain * (m - 2)
        if cost < best[0] - gain - 1e-9:
            best = (cost, m)
    if best[1] is None:
        return None
    final = shapes.shape_points(f.raw[has], y[has], higher_is_better=higher, offset=offset[has])
    fits = [c for c in final if 3 <= c <= best[1]]
    if not fits:
        return None
    pts = final[max(fits)]
    if f.points is not None and pts == f.points:
        return None
    change = (best[0] - gain * (best[1] - 2) - current) / max(int(keep.sum()), 1)
    return Shape(pts, change, "clamp" if f.points is None else "points")


def shape_folds(groups: np.ndarray | None, count: int) -> np.ndarray:
    """The fold of each observation for judging shapes: an account's observations share
    one (``groups``: the account per observation; None: one observation per account).

    >>> shape_folds(None, 7).tolist(), shape_folds(np.array(["b", "a", "b"]), 3).tolist()
    ([0, 1, 2, 3, 4, 0, 1], [0, 1, 0])
    """
    codes = np.arange(count) if groups is None else pd.factorize(groups)[0]
    return codes % SHAPE_FOLDS


def _nll_offset(y: np.ndarray, offset: np.ndarray) -> float:
    """The log-loss of ``offset`` plus a fitted intercept: no metric at all."""
    return _fit_one(np.zeros(len(y)), y, offset)[0]


def _category_effects(text: np.ndarray, y: np.ndarray, offset: np.ndarray) -> dict[str, float]:
    """Per category, its effect on the risk logit beyond ``offset`` (ridge-shrunk to 0)."""
    effects = {}
    for cat in sorted({t for t in text if t is not None}):
        rows = text == cat
        t = 0.0
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-np.clip(offset[rows] + t, -30.0, 30.0)))
            g = (p - y[rows]).sum() + MAP_RIDGE * t
            h = (p * (1 - p)).sum() + MAP_RIDGE
            step = g / h
            t -= step
            if abs(step) < 1e-10:
                break
        effects[cat] = t
    return effects


def _refit_map(
    f: _Feature, y: np.ndarray, offset: np.ndarray | None, gain: float
) -> dict[str, float] | None:
    """Category scores of a map metric learned from the outcome, when that helps.

    Each category's effect on the risk (given ``offset``: the other metrics, or the base
    rate) is scaled so that the riskiest category scores 0 and the safest 100; categories
    of the old map not seen in the data keep their old score. The new map replaces the
    old when it explains the outcome better by ``gain``.
    """
    if f.text is None or f.map is None or f.fixed:
        return f.map
    has = np.array([t is not None for t in f.text])
    if has.sum() < 2 or y[has].all() or not y[has].any():
        return f.map
    yk = y[has]
    ok = (
        np.full(int(has.sum()), math.log(yk.mean() / (1 - yk.mean())))
        if offset is None
        else offset[has]
    )
    effects = _category_effects(f.text[has], yk, ok)
    lo, hi = min(effects.values()), max(effects.values())
    if hi - lo < 1e-9:
        return f.map
    learned = {c: round(100.0 * (hi - e) / (hi - lo), 1) for c, e in effects.items()}
    new = {**{c: v for c, v in f.map.items() if c not in learned}, **learned}
    keep = f.has_data() if f.value is None else np.ones(len(f.text), bool)
    keep_new = ~np.isnan(_map_feature(f.text, new)) if f.value is None else keep
    if not np.array_equal(keep, keep_new):  # compare on the same observations
        keep = keep & keep_new
    if keep.sum() < 2 or y[keep].all() or not y[keep].any():
        # the old map knows none of the categories seen: the learned one is all there is
        return new
    off = None if offset is None else offset[keep]
    old_nll, old_b = _fit_one(replace(f).normalized()[keep], y[keep], off)
    new_nll, _ = _fit_one(replace(f, map=new).normalized()[keep], y[keep], off)
    # the old scores point the wrong way (risk rises with them) and that is no noise
    null = _nll_offset(y[keep], np.zeros(int(keep.sum())) if off is None else off)
    wrong_way = old_b > 0 and old_nll < null - gain
    return new if wrong_way or new_nll < old_nll - gain else f.map


def _column_means(n: np.ndarray) -> np.ndarray:
    """Per column the mean of its values (0.5 for a column with none)."""
    have = ~np.isnan(n)
    total = np.where(have, n, 0.0).sum(axis=0)
    count = have.sum(axis=0)
    return np.divide(total, count, out=np.full(n.shape[1], 0.5), where=count > 0)


@dataclass
class Learned:
    """What :func:`learn` fitted: per metric its change, the weights, the features."""

    changes: list[MetricChange]
    weights: np.ndarray  # share of the score per metric, rounded to 0.1 %
    feats: list[_Feature]  # with the learned anchors and maps
    n: np.ndarray  # observations x metrics, 0-1 with the learned normalisations
    notes: list[str]


def learn(
    model: Model,
    feats: list[_Feature],
    holds: pd.DataFrame,
    y: np.ndarray,
    *,
    gain: float,
    l2: float = L2,
    rounds: int = REFINE_ROUNDS,
    groups: np.ndarray | None = None,
    shaped: bool = True,
) -> Learned:
    """Directions, anchors, category scores and non-negative weights from outcomes ``y``.

    First each metric alone (anchors and direction of linear metrics, category scores
    of map metrics); then the weights; then ``rounds`` passes that re-choose each
    metric's normalisation given the others' fitted effect, and refit the weights.
    In the first of them a linear or points metric may get a learned shape
    (:func:`_refit_shape`, unless ``shaped`` is False), judged on folds of the accounts
    ``groups`` (the account of each observation; None: one observation each).
    ``feats`` are copied, not changed.

    The fits run with one BLAS thread: their matrices are small (observations x 2 for
    the one-metric fits, a few dozen weights), so a second thread only waits for the
    first (busy, on a loaded machine) and the figures are the same.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _learn(model, feats, holds, y, gain, l2, rounds, groups, shaped)


def _learn(model, feats, holds, y, gain, l2, rounds, groups, shaped) -> Learned:
    """:func:`learn`, in the thread limit it sets."""
    feats = [replace(f) for f in feats]
    pillars = list(model.spec.pillars)
    pillar_of = np.array([pillars.index(f.pillar) for f in feats])
    yf = y.astype(float)
    old_w = model.metric_weights()
    changes = []
    for f in feats:
        c = MetricChange(f.pillar, f.metric, f.kind, old_w[f.metric], 0.0, fixed=f.fixed)
        c.evidence = metric_evidence(f, yf)
        if f.kind == "linear":
            c.old_bad, c.old_good, c.old_scale = f.bad, f.good, f.scale
            c.old_direction = "higher" if f.good > f.bad else "lower"
            f.bad, f.good, _ = _anchors(f, yf, gain)
        elif f.kind == "map":
            c.old_map = dict(f.map or {})
            f.map = _refit_map(f, yf, None, gain)
        elif f.points is not None:
            c.old_points = list(f.points)
            c.old_direction = "higher" if f.higher_is_better else "lower"
        changes.append(c)
    fold = shape_folds(groups, len(yf))
    n = np.column_stack([f.normalized() for f in feats])
    a, beta = _fit_weights(n, yf, pillar_of, len(pillars), l2, holds, model)
    for round_ in range(rounds):
        if beta.sum() <= 0:
            break
        moved = False
        for j, f in enumerate(feats):
            if f.kind not in ("linear", "map") and f.points is None:
                continue
            filled = np.where(np.isnan(n), _column_means(n), n)
            offset = a - filled @ beta + beta[j] * filled[:, j]
            if f.kind in ("linear", "points"):
                if f.points is None:
                    bad, good, scale = _refit_anchors(f, yf, offset, gain)
                    moved |= (bad, good, scale) != (f.bad, f.good, f.scale)
                    f.bad, f.good, f.scale = bad, good, scale
                try_shape = shaped and round_ < SHAPE_ROUNDS
                shape = _refit_shape(f, yf, offset, gain, fold) if try_shape else None
                if shape is not None:
                    f.points = shape.points
                    changes[j].shape = shape
                    moved = True
            else:
                new = _refit_map(f, yf, offset, gain)
                moved |= new != f.map
                f.map = new
            n[:, j] = f.normalized()
        if not moved:
            break
        a, beta = _fit_weights(n, yf, pillar_of, len(pillars), l2, holds, model)
    notes: list[str] = []
    if beta.sum() <= 0:
        return Learned(changes, np.zeros(len(feats)), feats, n, notes)
    pct = np.round(100.0 * beta / beta.sum(), 1)
    for c, f, w in zip(changes, feats, pct, strict=True):
        c.new_weight = float(w) / 100.0
        if f.points is not None:
            c.new_points = list(f.points)
            c.new_direction = "higher" if f.higher_is_better else "lower"
            if c.shape is not None:
                c.note = f"shape learned ({len(f.points)} points)"
                if c.inverted:
                    c.note += f"; direction learned: {c.new_direction} is better (inverted)"
                notes.append(f"learned shape for {c.shape.describe(c.metric)}")
            else:
                c.note = "points kept; weight learned"
        elif f.kind == "linear":
            c.new_bad, c.new_good, c.new_scale = f.bad, f.good, f.scale
            c.new_direction = "higher" if f.good > f.bad else "lower"
            if c.inverted:
                c.note = f"direction learned: {c.new_direction} is better (inverted)"
            elif (c.old_bad, c.old_good) != (c.new_bad, c.new_good):
                c.note = "anchors re-estimated"
            if c.new_scale != c.old_scale:
                said = (
                    "read on a log scale, ln(1 + x): a heavily skewed count"
                    if c.new_scale == "log"
                    else "read on a linear scale again"
                )
                c.note = f"{c.note}; {said}" if c.note else said
                notes.append(f"{c.metric}: {said} (bad {c.new_bad:g}, good {c.new_good:g})")
        elif f.kind == "map":
            c.new_map = dict(f.map or {})
            c.note = (
                "category scores learned" if c.new_map != c.old_map else "map kept; weight learned"
            )
        else:
            c.note = f"{f.kind} normalisation kept; weight learned"
        if w == 0:
            c.note = (c.note + "; " if c.note else "") + "fitted weight 0 (kept in the file)"
    return Learned(changes, pct / 100.0, feats, n, notes)


def learned_score(
    model: Model, learned: Learned, feats: list[_Feature], holds: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """The new score (0-100, rules applied) and forced bands of observations ``feats``
    (the same metrics, e.g. a held-out fold), with what ``learn`` fitted."""
    pillars = list(model.spec.pillars)
    pillar_of = np.array([pillars.index(f.pillar) for f in learned.feats])
    cols = []
    for f, fitted in zip(feats, learned.feats, strict=True):
        g = replace(
            f,
            bad=fitted.bad,
            good=fitted.good,
            map=fitted.map,
            points=fitted.points,
            scale=fitted.scale,
        )
        cols.append(g.normalized())
    n = np.column_stack(cols) if cols else np.zeros((len(holds), 0))
    base = 100.0 * _score01(n, learned.weights, pillar_of, len(pillars))
    return _apply_rules(np.nan_to_num(base, nan=0.0), holds, model)


def _fit_weights(
    n: np.ndarray,
    y: np.ndarray,
    pillar_of: np.ndarray,
    pillars: int,
    l2: float,
    holds: pd.DataFrame,
    model: Model,
) -> tuple[float, np.ndarray]:
    """Intercept and non-negative coefficients: risk logit = a - Σβ · score / 100.

    The score is the model's own (the weighted sum with reweighting, then its rules),
    with weights β / Σβ: without missing data and rules this is a - Σ β_m n_m.
    """
    from scipy.optimize import minimize

    m = n.shape[1]
    count = len(y)
    weighted = _WeightedSum(n, pillar_of, pillars)

    def objective(theta):
        a, beta = theta[0], theta[1:]
        total = beta.sum()
        grad = np.zeros(m + 1)
        if total <= 0:
            z = np.full(count, a)
            r = (1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))) - y) / count
            grad[0] = r.sum()
            # from no weight at all, weight on metric m alone makes the score n_m
            grad[1:] = -(r @ np.nan_to_num(n)) + 2.0 * l2 * beta
            return _nll(y, z) / count + l2 * float(beta @ beta), grad
        score, pullback = weighted.score_and_pullback(beta)
        base = np.nan_to_num(100.0 * score, nan=0.0)
        final, _ = _apply_rules(base, holds, model)
        # rules shift, floor, cap and clamp the base score: slope 1 or 0 per observation
        bumped, _ = _apply_rules(base + 1e-6, holds, model)
        slope = np.clip(np.round((bumped - final) / 1e-6), 0.0, 1.0)
        z = a - total * final / 100.0
        r = (1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))) - y) / count  # dL/dz
        # dz/dβ = -(final / 100 + total · slope · dscore/dβ), summed against r
        grad[0] = r.sum()
        grad[1:] = -(r @ final) / 100.0 - total * pullback(r * slope) + 2.0 * l2 * beta
        return _nll(y, z) / count + l2 * float(beta @ beta), grad

    base = math.log(y.mean() / (1 - y.mean()))
    x0 = np.concatenate([[base + 1.0], np.full(m, 2.0 / m)])
    bounds = [(None, None)] + [(0.0, None)] * m
    res = minimize(
        objective, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500}
    )
    return float(res.x[0]), np.where(res.x[1:] < 1e-6, 0.0, res.x[1:])


def _apply_rules(
    base: np.ndarray, holds: pd.DataFrame, model: Model
) -> tuple[np.ndarray, np.ndarray]:
    """Rules on top of a base score (0-100), as ``scoring.apply_rules`` does: score, band forced."""
    rules = model.spec.rules
    s = base.copy()
    forced = np.full(len(base), None, dtype=object)
    if not rules:
        return s, forced
    fired = {r: holds[r].to_numpy(float) == 1.0 for r in rules}
    for r, rule in rules.items():
        if rule.add is not None:
            s = s + np.where(fired[r], rule.add, 0.0)
    floors = [
        np.where(fired[r], rule.floor, -np.inf)
        for r, rule in rules.items()
        if rule.floor is not None
    ]
    if floors:
        s = np.maximum(s, np.max(floors, axis=0))
    caps = [
        np.where(fired[r], rule.cap, np.inf) for r, rule in rules.items() if rule.cap is not None
    ]
    if caps:
        s = np.minimum(s, np.min(caps, axis=0))
    if any(rule.add is not None for rule in rules.values()):
        s = np.clip(s, 0.0, 100.0)
    order = {"red": 0, "yellow": 1, "green": 2}
    for r, rule in rules.items():
        if rule.band is None:
            continue
        worse = np.array([f is None or order[rule.band] < order[f] for f in forced])
        forced = np.where(fired[r] & worse, rule.band, forced)
    return s, forced


def _red(score: np.ndarray, forced: np.ndarray, yellow: float) -> np.ndarray:
    return _red_at(forced)(score, yellow)


def _red_at(forced: np.ndarray):
    """``(score, yellow) -> red`` for the rule-``forced`` bands (None: free), which are
    read once: the thresholds tried in turn only compare scores."""
    free = np.array([f is None for f in forced], bool)
    forced_red = forced == "red"
    return lambda score, yellow: np.where(free, score < yellow, forced_red)


def _yellow_for(
    score: np.ndarray, forced: np.ndarray, y: np.ndarray, target: float
) -> tuple[float, bool]:
    """Lowest whole-number threshold with recall >= target (lowest FPR); reached?"""
    red_at = _red_at(forced)
    for t in range(1, 100):
        red = red_at(score, t)
        if y.sum() and red[y].mean() >= target:
            return float(t), True
    return 99.0, False


def red_share_cap(old_red_share: float, max_red_share: float | None = None) -> float:
    """The most of the training observations the calibrated red band may hold:
    ``max_red_share`` when given, else ``RED_CAP_FACTOR`` x the current model's red share
    on the same observations, at least ``MIN_RED_CAP`` and at most ``MAX_RED_CAP``.

    >>> red_share_cap(0.02), red_share_cap(0.10), red_share_cap(0.40), red_share_cap(0.4, 0.5)
    (0.05, 0.15000000000000002, 0.2, 0.5)
    """
    if max_red_share is not None:
        if not 0 < max_red_share <= 1:
            raise ScoringError(f"`max_red_share` must be within (0, 1] (got {max_red_share})")
        return float(max_red_share)
    return min(max(RED_CAP_FACTOR * old_red_share, MIN_RED_CAP), MAX_RED_CAP)


@dataclass
class BandFit:
    """Bands fitted to a new score: thresholds, what they reach, and whether the red-share
    cap bound them."""

    yellow: float
    green: float
    reached: bool  # the target recall was reached within the cap
    recall: float | None  # share of the positives red (training)
    red_share: float  # share of all observations red (training)
    cap: float | None  # the red-share cap applied (None: none)
    wanted: float | None = None  # the yellow the target recall needed, when the cap bound
    #: when the cap bound: (yellow, recall, red share) at thresholds from the chosen yellow
    #: to the wanted one, the trade-off a team chooses from
    tradeoff: list[tuple[float, float | None, float]] = field(default_factory=list)

    @property
    def capped(self) -> bool:
        return self.wanted is not None

    def tradeoff_text(self) -> str:
        """``yellow 58: recall 62 %, 20 % red; ...``"""
        return "; ".join(
            f"yellow {t:g}: recall {'-' if r is None else f'{r:.0%}'}, {share:.0%} red"
            for t, r, share in self.tradeoff
        )


def fit_bands(
    score: np.ndarray,
    forced: np.ndarray,
    y: np.ndarray,
    old_green_share: float,
    target_recall: float,
    red_cap: float | None = None,
    own_yellow: np.ndarray | None = None,
) -> BandFit:
    """The new bands from the new ``score`` (and rule-``forced`` bands) of observations
    labelled ``y``.

    Yellow (red below it) is the lowest whole number at which ``target_recall`` of the
    positives are red (99 when none is), then lowered, when more than ``red_cap`` of the
    observations would be red, to the highest whole number that keeps them within it
    (1 when rules alone force more red). Observations with a yellow of their own
    (``own_yellow``, a segment's; NaN: none) count with it. Green keeps the share of
    green observations the old model had, at least a point above yellow.
    """
    own = np.full(len(score), np.nan) if own_yellow is None else own_yellow
    red_at = _red_at(forced)

    def red(t: float) -> np.ndarray:
        return red_at(score, np.where(np.isnan(own), t, own))

    yellow, reached = _yellow_for(score, forced, y, target_recall)
    wanted = None
    tradeoff = []
    if red_cap is not None and len(score) and red(yellow).mean() > red_cap + 1e-12:
        wanted = yellow
        yellow = next(
            (float(t) for t in range(int(yellow) - 1, 0, -1) if red(t).mean() <= red_cap + 1e-12),
            1.0,
        )
        reached = False
        steps = np.unique(np.round(np.linspace(yellow, wanted, TRADEOFF_ROWS)))
        for t in steps:
            flagged_t = red(float(t))
            recall_t = float(flagged_t[y].mean()) if y.any() else None
            tradeoff.append((float(t), recall_t, float(flagged_t.mean())))
    green = float(np.ceil(np.quantile(score, 1.0 - old_green_share))) if old_green_share else 100.0
    flagged = red(yellow)
    return BandFit(
        yellow=yellow,
        green=min(max(green, yellow + MIN_YELLOW_WIDTH), 100.0),
        tradeoff=tradeoff,
        reached=reached,
        recall=float(flagged[y].mean()) if y.any() else None,
        red_share=float(flagged.mean()) if len(flagged) else 0.0,
        cap=red_cap,
        wanted=wanted,
    )


def check_target_recall(target_recall: float) -> None:
    """A recall to reach is a share of the positives: within (0, 1]."""
    if not 0 < target_recall <= 1:
        raise ScoringError(f"`target_recall` must be within (0, 1] (got {target_recall})")


def calibration_features(
    store: Store, model: Model, obs: pd.DataFrame, dates: list[datetime]
) -> tuple[list[_Feature], pd.DataFrame]:
    """Per scored metric its stored raw and normalised values at the observations, and
    whether each rule held (one column per rule)."""
    lines = score_lines(store, model, dates)
    scored = model.scored_metrics()
    names = [m for _, m, _ in scored]
    raw = _wide(lines, obs, "metric", "raw_value", names)
    text = _wide(lines, obs, "metric", "raw", names)
    norm = _wide(lines, obs, "metric", "normalized", names)
    holds = _wide(lines, obs, "rule", "raw_value", list(model.spec.rules))
    feats = []
    for p, m, use in scored:
        kind = (
            "linear"
            if use.bad is not None
            else "points"
            if use.points is not None
            else "map"
            if use.map is not None
            else "percentile"
        )
        pol = use.missing
        value = None if pol.policy == "reweight" else pol.value / 100.0
        stored = norm[m].to_numpy(float) / 100.0
        if pol.policy != "reweight":  # the stored value has the policy's value filled in
            stored = np.where(lines_missing(lines, obs, m) == pol.policy, np.nan, stored)
        categories = None
        if kind == "map":
            categories = np.array([None if pd.isna(t) else str(t) for t in text[m]], object)
        feats.append(
            _Feature(
                p,
                m,
                kind,
                pol.policy,
                value,
                raw[m].to_numpy(float),
                stored,
                use.bad,
                use.good,
                categories,
                dict(use.map) if use.map is not None else None,
                use.direction == "fixed",
                [tuple(p) for p in use.points] if use.points is not None else None,
                use.scale,
            )
        )
    return feats, holds


# --- calibrate --------------------------------------------------------------------------------


def calibrate(
    store: Store,
    model: Model,
    train_until: datetime,
    *,
    outcome: str = "churned",
    horizon: str = "90d",
    every: str = "1mo",
    start: datetime | None = None,
    target_recall: float = 0.85,
    max_red_share: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    reps: int = 200,
    l2: float = L2,
    held_out: bool = True,
    progress=None,
    lead: str = "30d",
    plan: ObservationPlan | None = None,
) -> CalibrationResult:
    """Fit the model's weights, anchors, directions and bands on data up to ``train_until``.

    Parameters
    ----------
    store, model
        The store with accounts, events and outcomes; the current model (its health
        scorecard is calibrated).
    train_until
        D: only observations whose ``horizon`` closes by D are learned from.
    outcome, horizon, every, start
        The label (``churn`` = ``churned``), its window, the step between observation
        dates and the first one (default: 90 days after the first event on file).
    target_recall
        Share of the training observations followed by the outcome that must be red.
    max_red_share
        The most of the training observations the new red band may hold (the cap wins
        over ``target_recall``); None: ``RED_CAP_FACTOR`` x the current model's red
        share, at least ``MIN_RED_CAP``.
    seed
        Seeds the held-out backtest's bootstrap (the fit itself is deterministic).
    out
        Where to write the new model file (None: not written; the text is returned).
    reps, l2
        Bootstrap resamples of the held-out backtest; the L2 penalty of the fit.
    held_out
        Backtest new vs old on the dates from ``train_until`` on (False: fit only).
    lead, plan
        The held-out backtest judges each outcome ``lead`` before it; ``plan`` says which
        (account, date) pairs are observed (default: the grid every ``every`` with
        ``lead``; a plan wins over both), in training and held out.

    Returns
    -------
    CalibrationResult
    """

    outcome = outcome_kind(outcome)
    check_target_recall(target_recall)
    red_share_cap(0.0, max_red_share)  # a bad cap fails before any work
    model = model.scorecard(HEALTH)
    ensure_tables(store)
    if start is None:
        first = data_start(store, model)
        if first is None:
            raise ScoringError("the store holds no events: nothing to calibrate on")
        start = shift(datetime(first.year, first.month, first.day) + timedelta(days=1), WARM_UP, +1)
    last_train = shift(train_until, horizon, -1)
    if last_train < start:
        raise ScoringError(
            f"no observation date between {start:%Y-%m-%d} and {last_train:%Y-%m-%d} "
            f"(`train_until` minus the {horizon} `horizon`)",
            hint="choose a later `train_until` or an earlier `start`",
        )
    plan = plan or ObservationPlan.grid(every, lead)
    seen = plan.observed(store, start, last_train)
    dates = [d for d in seen.dates if shift(d, horizon, +1) <= train_until]
    if not dates:
        raise ScoringError(
            f"{plan.describe()}: no observation from {start:%Y-%m-%d} whose {horizon} "
            f"horizon closes by {train_until:%Y-%m-%d}",
            hint="choose a later `train_until` or an earlier `start`",
        )
    seen = seen.only(dates)
    # the held-out backtest scores the old model at its dates too: stored here with the
    # training dates in one multi-date pass (one compile of the old model, not two)
    later = _held_out_dates(store, plan, train_until, horizon) if held_out else []
    asof.backfill_dates(store, model, sorted(set(dates) | set(later)), progress=progress)
    obs = training_observations(store, model, dates, horizon, outcome, train_until, seen.pairs)
    y = obs["label"].to_numpy(bool)
    if y.sum() < MIN_POSITIVES or y.all():
        raise ScoringError(
            f"only {int(y.sum())} of {len(y):,} training observations had {outcome} within "
            f"{horizon} by {train_until:%Y-%m-%d}: too few to calibrate on",
            hint="choose a later `train_until` or an earlier `start`",
        )
    notes: list[str] = list(seen.notes)  # what the plan left out
    feats, holds = calibration_features(store, model, obs, dates)
    pillars = list(model.spec.pillars)
    # an account's observations are correlated: demand the margin per account, not per row
    gain = ANCHOR_GAIN * len(obs) / max(obs["account_id"].nunique(), 1)
    fitted = learn(model, feats, holds, y, gain=gain, l2=l2, groups=obs["account_id"].to_numpy())
    if fitted.weights.sum() <= 0:
        raise ScoringError(
            f"no scored metric predicts {outcome} on the training observations: "
            "every fitted weight is 0; keeping the current model"
        )
    changes = fitted.changes
    notes += fitted.notes
    if model.spec.segments and model.spec.segments.weights:
        notes.append(
            "per-segment pillar weights of the old model were dropped: one set of weights "
            "is fitted for all accounts (segments are still reported)"
        )
    # the new score on the training observations, with the file's rounded numbers
    score, forced = learned_score(model, fitted, feats, holds)
    old_green_share = float((obs["band"] == "green").mean())
    old_red = (obs["band"] == "red").to_numpy()
    cap = red_share_cap(float(old_red.mean()), max_red_share)
    # a segment with enough outcomes gets its own yellow for the target recall, when it
    # reaches it without more than the cap of the segment's observations red
    segment_bands = {}
    segment = obs["segment"].map(lambda s: str(s) if pd.notna(s) else None).to_numpy(object)
    for seg in sorted({s for s in segment if s is not None}):
        part = segment == seg
        if y[part].sum() >= MIN_SEGMENT_POSITIVES:
            b = fit_bands(score[part], forced[part], y[part], 0.0, target_recall, cap)
            if b.reached:
                segment_bands[seg] = b.yellow
    own = np.array([segment_bands.get(s, np.nan) for s in segment], float)
    bands = fit_bands(score, forced, y, old_green_share, target_recall, cap, own)
    yellow, green = bands.yellow, bands.green
    segment_bands = {s: t for s, t in segment_bands.items() if t != yellow}
    if bands.capped:
        notes.append(
            f"the red-share cap bound the bands: {target_recall:.0%} recall needed yellow "
            f"{bands.wanted:g}, which makes more than {cap:.1%} of the training observations "
            f"red; yellow is {yellow:g} instead (recall {bands.recall:.1%}; set the cap "
            f"with `max_red_share`). The trade-off on the training observations: "
            f"{bands.tradeoff_text()}"
        )
    elif not bands.reached:
        notes.append(
            f"no band threshold reaches {target_recall:.0%} recall on the training "
            "observations; yellow set to 99"
        )
    if segment_bands:
        notes.append(
            f"segments with {MIN_SEGMENT_POSITIVES}+ positive training observations get a "
            f"yellow threshold of their own for {target_recall:.0%} recall (segments.bands): "
            + ", ".join(f"{s} {t:g}" for s, t in segment_bands.items())
        )
    red = _red(score, forced, np.where(np.isnan(own), yellow, own))
    train_recall = float(red[y].mean())
    train_fpr = float(red[~y].mean()) if (~y).any() else None
    events = int(obs.loc[y, "account_id"].nunique())
    header = (
        f"calibrated by `healthscore calibrate` from {model.label!r} ({model.version[:12]}):\n"
        f"outcome {outcome} within {horizon}, observations {plan.describe()} from "
        f"{dates[0]:%Y-%m-%d} to {dates[-1]:%Y-%m-%d}, trained until {train_until:%Y-%m-%d}\n"
        f"({len(obs):,} observations of {obs['account_id'].nunique():,} accounts, {int(y.sum())} "
        f"followed by {outcome}, {events} accounts with the outcome; nothing after "
        f"{train_until:%Y-%m-%d} was read).\n"
        "Weights are percent of the score (a pillar's weight is the sum of its metrics'), "
        f"fitted by a non-negative\nlogistic model; bands: yellow for {target_recall:.0%} "
        f"recall of the training observations with at most {cap:.1%} of them red,\ngreen "
        "keeps the old green share."
    )
    text = calibrated_model_text(
        model,
        changes,
        {"green": green, "yellow": yellow},
        header,
        train_until,
        {
            s: {"green": min(max(green, t + 1.0), 100.0), "yellow": t}
            for s, t in segment_bands.items()
        },
    )
    new = save_model_text(text, out, load_model_text, name="<calibrated model>")
    pillar_changes = {
        p: (model.pillar_weights()[p], sum(c.new_weight for c in changes if c.pillar == p))
        for p in pillars
    }
    result = CalibrationResult(
        model=new,
        yaml_text=text,
        out=Path(out) if out else None,
        old_label=model.label,
        old_version=model.version,
        train_until=train_until,
        outcome=outcome,
        horizon=horizon,
        every=plan.every,
        train_dates=dates,
        observations=len(obs),
        positives=int(y.sum()),
        events=events,
        accounts=int(obs["account_id"].nunique()),
        metrics=changes,
        pillars=pillar_changes,
        old_bands={"green": model.spec.bands.green, "yellow": model.spec.bands.yellow},
        new_bands={"green": green, "yellow": yellow},
        train_recall=train_recall,
        train_fpr=train_fpr,
        segment_bands=segment_bands,
        notes=notes,
        old_train_recall=float(old_red[y].mean()),
        old_train_fpr=float(old_red[~y].mean()) if (~y).any() else None,
        old_red_share=float(old_red.mean()),
        red_share=float(red.mean()),
        red_cap=cap,
        wanted_yellow=bands.wanted,
        lead=plan.lead,
        plan=plan,
    )
    if held_out:
        _held_out(store, model, result, reps=reps, seed=seed, progress=progress)
    return result


def lines_missing(lines: pd.DataFrame, obs: pd.DataFrame, metric: str) -> np.ndarray:
    """The stored missing-data treatment of one metric per observation (None: data)."""
    part = lines[(lines["kind"] == "metric") & (lines["name"] == metric)]
    s = part.set_index(["account_id", "as_of"])["missing"]
    keys = pd.MultiIndex.from_frame(obs[["account_id", "as_of"]])
    return s.reindex(keys).to_numpy(object)


def _held_out_end(store: Store, horizon: str) -> datetime | None:
    """The last observation date of the held-out backtest: the last outcome on file
    minus ``horizon`` (None: no outcome on file)."""
    out = outcome_events(store)
    if out.empty:
        return None
    return shift(out["ts"].max().to_pydatetime(), horizon, -1)


def _held_out_dates(
    store: Store, plan: ObservationPlan, train_until: datetime, horizon: str
) -> list[datetime]:
    """The dates the held-out backtest observes (:func:`_held_out`'s, as its backtest
    finds them)."""
    end = _held_out_end(store, horizon)
    if end is None or end < train_until:
        return []
    return plan.observed(store, train_until, end).dates


def _held_out(store: Store, old: Model, result: CalibrationResult, *, reps, seed, progress):
    """Backtest new vs old on the dates from train_until on; recall at the old FPR."""
    end = _held_out_end(store, result.horizon)
    if end is None:
        return
    d = result.train_until
    if end < d:
        result.notes.append(
            f"no held-out period: the last outcome on file leaves no {result.horizon} window "
            f"after {d:%Y-%m-%d} to test on"
        )
        return
    plan = result.plan or ObservationPlan.grid(result.every, result.lead)
    new = result.model
    result.backtest = bt.backtest(
        store,
        new,
        d,
        end,
        horizon=result.horizon,
        vs=old,
        reps=reps,
        seed=seed,
        progress=progress,
        plan=plan,
    )
    seen = result.backtest.observed
    result.test_dates = seen.dates
    result.equal_fpr = equal_fpr(
        store, old, new, seen.dates, result.horizon, result.outcome, pairs=seen.pairs
    )


def equal_fpr(
    store: Store,
    old: Model,
    new: Model,
    dates: list[datetime],
    horizon: str,
    outcome: str,
    pairs: pd.DataFrame | None = None,
) -> EqualFPR:
    """Recall of ``new`` at the false-positive rate of ``old``'s red band, same observations.

    The new model flags an observation when its score is below a threshold (or a rule
    forces red); the threshold is the highest whose false-positive rate does not exceed
    the old model's.
    """
    a, _ = observations(store, old, dates, horizon, outcome, pairs=pairs)
    b, _ = observations(store, new, dates, horizon, outcome, pairs=pairs)
    key = ["account_id", "as_of"]
    m = a[[*key, "band", "label"]].merge(
        b[[*key, "score", "band", "segment"]], on=key, suffixes=("", "_new")
    )
    y = m["label"].to_numpy(bool)
    if not y.any() or y.all():
        return EqualFPR(len(m), int(y.sum()), None, None, None, None, None)
    old_red = (m["band"] == "red").to_numpy()
    old_fpr = float(old_red[~y].mean())
    score = m["score"].to_numpy(float)
    yellow = m["segment"].map(lambda s: new.bands_for(None if pd.isna(s) else str(s)).yellow)
    forced = ((m["band_new"] == "red") & (score >= yellow.to_numpy(float))).to_numpy()
    best = (None, 0.0, 0.0)
    for t in np.unique(np.concatenate([score, [np.inf]])):
        flag = forced | (score < t)
        fpr = float(flag[~y].mean())
        if fpr <= old_fpr + 1e-12:
            best = (float(t), fpr, float(flag[y].mean()))
        else:
            break
    return EqualFPR(
        observations=len(m),
        positives=int(y.sum()),
        old_fpr=old_fpr,
        old_recall=float(old_red[y].mean()),
        new_threshold=best[0],
        new_fpr=best[1],
        new_recall=best[2],
    )


# --- the model file -------------------------------------------------------------------------


def _source_text(model: Model) -> str:
    """The model's text: its file, the default model, or its loaded document."""
    if model.file == "<default model>":
        return default_model_text()
    path = Path(model.file)
    if not model.file.startswith("<") and path.exists():
        return path.read_text(encoding="utf-8")
    return dump_document(model._root._doc)


def calibrated_model_text(
    model: Model,
    changes: list[MetricChange],
    bands: dict[str, float],
    header: str,
    fitted_until: datetime,
    segment_bands: dict[str, dict[str, float]] | None = None,
) -> str:
    """The text of ``model``'s file with new weights, anchors and bands; comments kept.

    ``segment_bands`` (segment -> green and yellow) replace ``segments.bands``; a model
    without a ``segments`` section gets one keyed by the account's ``segment`` column.
    The name says the model was calibrated with data until ``fitted_until``, and
    ``header`` becomes the comment at the top.
    """

    def edit(doc) -> None:
        name = doc.get("name") or "model"
        doc["name"] = (
            f"{str(name).split(' (calibrated')[0]} (calibrated until {fitted_until:%Y-%m-%d})"
        )
        if "bands" not in doc:
            doc["bands"] = flow_map()
        doc["bands"]["green"] = number(bands["green"])
        doc["bands"]["yellow"] = number(bands["yellow"])
        totals: dict[str, float] = {}
        for c in changes:
            use = doc["pillars"][c.pillar]["metrics"][c.metric]
            use["weight"] = number(round(100.0 * c.new_weight, 1))
            totals[c.pillar] = totals.get(c.pillar, 0.0) + round(100.0 * c.new_weight, 1)
            if c.new_points is not None and c.new_points != c.old_points:
                for key in ("bad", "good"):
                    if key in use:
                        del use[key]
                use["points"] = flow_list((number(x), number(v)) for x, v in c.new_points)
            elif c.kind == "linear":
                use["bad"], use["good"] = number(c.new_bad), number(c.new_good)
                if c.new_scale == "log":
                    use["scale"] = "log"
                elif "scale" in use:
                    del use["scale"]
            if c.kind == "map" and c.new_map is not None and c.new_map != c.old_map:
                use["map"] = flow_map((k, number(v)) for k, v in c.new_map.items())
            was = f"was weight {100 * c.old_weight:.1f} %"
            if c.kind == "linear" and (c.old_bad, c.old_good, c.old_scale) != (
                c.new_bad,
                c.new_good,
                c.new_scale,
            ):
                was += f", bad {c.old_bad:g}, good {c.old_good:g}"
                if c.old_scale != c.new_scale:
                    was += f", {c.old_scale or 'linear'} scale"
            if c.shape is not None:  # what the learned points say, in words
                was += f"; shape learned: {c.shape.describe(c.metric).split(': ', 1)[1]}"
            doc["pillars"][c.pillar]["metrics"].yaml_add_eol_comment(was, c.metric)
        for p, total in totals.items():
            doc["pillars"][p]["weight"] = number(round(total, 1))
        if "probability" in doc:  # fitted on the old scores; refit it for the new ones
            del doc["probability"]
        if doc.get("segments") and doc["segments"].get("weights"):
            doc["segments"]["weights"] = flow_map()
        if doc.get("segments") and "bands" in doc["segments"]:
            del doc["segments"]["bands"]
        if segment_bands:
            if not doc.get("segments"):
                doc["segments"] = block_map([("by", "segment")])
            own = block_map()
            for seg, b in segment_bands.items():
                own[seg] = flow_map(
                    [("green", number(b["green"])), ("yellow", number(b["yellow"]))]
                )
            doc["segments"]["bands"] = own

    return edit_model_text(_source_text(model), edit, header=header)


__all__ = [
    "CalibrationResult",
    "EqualFPR",
    "MetricChange",
    "calibrate",
    "calibrated_model_text",
    "calibration_features",
    "check_target_recall",
    "equal_fpr",
    "fit_bands",
    "outcome_kind",
    "score_link",
]
