"""Calibration: learn a model's weights, anchors, directions and bands from outcomes.

Place in the flow: after ``backtest``. It reads the stored point-in-time history of the
current model (computing the missing dates first) and the ``outcomes`` table (through
:mod:`healthscore.evaluate.observations`), and writes a new model file through
:mod:`healthscore.core.modelfile`: still the same explainable weighted sum, with numbers
learned from what happened.

- **The time split.** Observations are the backtest's (account, date) pairs at
  ``start``, ``start + every`` ... up to ``train_until - horizon``: every label window
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
  (shrunk toward no effect for rare categories). ``points`` and ``percentile`` metrics
  keep their normalisation (their stored 0-100 value is the feature); only their weight
  is learned.
- **Refinement.** A metric judged alone can look predictive only through another (a
  long tenure and a long contract go together). After the first weight fit, each linear
  and map metric's normalisation is re-chosen given the others' fitted effect (the same
  candidates plus the data's range, the same margin), and the weights are refitted;
  ``REFINE_ROUNDS`` passes. The weights stay non-negative: a direction is carried by the
  anchors' orientation, so the result is still an explainable weighted sum.
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
- **Bands.** ``yellow`` (red below it) is the lowest whole-number threshold at which
  at least ``target_recall`` of the training observations followed by the outcome are
  red (after rules), i.e. the target recall at the lowest false-positive rate; ``green``
  keeps the share of green training observations the old model had. Segments with 20+
  positive training observations get a yellow threshold of their own when it differs
  (written to ``segments.bands``, green at least a point above it).
- **Held-out comparison.** The new model and the old are backtested on the observation
  dates from D on only, never on the training period; beside the backtest, the recall
  the new score reaches at the old model's false-positive rate on the same observations.

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
    flow_map,
    number,
    save_model_text,
)
from healthscore.core.tables import TABLES
from healthscore.core.time import dates_between, shift
from healthscore.engine import asof
from healthscore.engine.history import LINES, ensure_tables
from healthscore.errors import ScoringError
from healthscore.evaluate import backtest as bt
from healthscore.evaluate.observations import (
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
MAP_RIDGE = 1.0  # shrinks a category's learned effect toward none (pseudo-observations)
ANCHOR_GAIN = 2.0  # log-likelihood units per (observations per account) to move anchors
L2 = 1e-4  # penalty on the coefficients, on the mean log-loss (about scikit-learn C=1)
MIN_POSITIVES = 10  # fewer positive training observations: refuse to calibrate
MIN_SEGMENT_POSITIVES = bt.MIN_EVENTS  # a segment's own band suggestion needs this many
WARM_UP = "90d"  # default start: this long after the first event on file


@dataclass
class MetricChange:
    """One scored metric before and after calibration."""

    pillar: str
    metric: str
    kind: str  # linear | points | map | percentile
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
    note: str = ""

    @property
    def inverted(self) -> bool:
        return self.old_direction is not None and self.old_direction != self.new_direction


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
    wide = part.pivot_table(
        index=["account_id", "as_of"], columns="name", values=column, aggfunc="first", dropna=False
    )
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

    def normalized(self) -> np.ndarray:
        """0-1 per observation; NaN where the metric is left out (reweight)."""
        if self.kind == "linear":
            return _linear_feature(self.raw, self.value, self.bad, self.good)
        if self.kind == "map" and self.text is not None and self.map is not None:
            n = _map_feature(self.text, self.map)
        else:
            n = self.stored
        return n if self.value is None else np.where(np.isnan(n), self.value, n)

    def has_data(self) -> np.ndarray:
        """Observations where the metric has a value of its own (not a policy's)."""
        if self.kind == "linear":
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


def _nll(y: np.ndarray, z: np.ndarray) -> float:
    """Sum of the logistic log-loss with risk logit ``z``."""
    return float(np.sum(np.logaddexp(0.0, z) - y * z))


def _fit_one(n: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None) -> tuple[float, float]:
    """Logistic risk ~ offset + a + b·n by Newton steps: (negative log-likelihood, b)."""
    off = np.zeros(len(n)) if offset is None else offset
    a = 0.0 if offset is not None else math.log((y.mean() + 1e-9) / (1 - y.mean() + 1e-9))
    b = 0.0
    x = np.column_stack([np.ones_like(n), n])
    for _ in range(25):
        z = np.clip(off + a + b * n, -30.0, 30.0)
        p = 1.0 / (1.0 + np.exp(-z))
        g = x.T @ (p - y)
        h = (x * (p * (1 - p))[:, None]).T @ x + np.eye(2) * 1e-6
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return _nll(y, off + a + b * n), b


def _round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not np.isfinite(x):
        return 0.0
    return float(f"{x:.{digits}g}")


def _linear_feature(raw: np.ndarray, value: float | None, bad: float, good: float):
    n = np.where(np.isnan(raw), np.nan, _linear(np.nan_to_num(raw), bad, good))
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
        return _fit_one(_linear_feature(x, f.value, bad, good)[keep], yk)

    rate = yk.mean()
    null = _nll(yk, np.full(len(yk), math.log(rate / (1 - rate))))
    old_nll, old_b = fit(f.bad, f.good)
    wrong_way = old_b > 0 and old_nll < null - gain
    cands = sorted({_round_sig(v) for v in np.quantile(values, QUANTILES)} | {f.bad, f.good})
    best = (math.inf, f.bad, f.good)
    for i, lo in enumerate(cands):
        for hi in cands[i + 1 :]:
            value, b = fit(lo, hi)  # lo scores 0, hi 100: b < 0 when risk falls as it rises
            if value < best[0] - 1e-9:
                best = (value, lo, hi) if b <= 0 else (value, hi, lo)
    if wrong_way or (old_b <= 0 and best[0] < old_nll - gain):
        return best[1], best[2], True
    return f.bad, f.good, False


def _refit_anchors(
    f: _Feature, y: np.ndarray, offset: np.ndarray, gain: float
) -> tuple[float, float]:
    """Anchors of a linear metric given the other metrics' effect (``offset``).

    Candidates are the data's range and quantiles and the current pair; a pair (with its
    orientation) replaces the current one when it explains the outcome better by ``gain``.
    """
    keep = f.has_data() if f.value is None else np.ones(len(f.raw), bool)
    values = f.raw[~np.isnan(f.raw)]
    if values.size < 2 or np.unique(values).size < 2 or y[keep].all() or not y[keep].any():
        return f.bad, f.good
    yk, ok = y[keep], offset[keep]

    def fit(bad, good):
        return _fit_one(_linear_feature(f.raw, f.value, bad, good)[keep], yk, ok)

    current, current_b = fit(f.bad, f.good)
    wrong_way = current_b > 0 and current < _nll_offset(yk, ok) - gain
    qs = np.quantile(values, (0.0, *QUANTILES, 1.0))
    cands = sorted({_round_sig(v) for v in qs} | {f.bad, f.good})
    best = (math.inf, f.bad, f.good)
    for i, lo in enumerate(cands):
        for hi in cands[i + 1 :]:
            value, b = fit(lo, hi)
            if value < best[0] - 1e-9:
                best = (value, lo, hi) if b <= 0 else (value, hi, lo)
    if wrong_way or best[0] < current - gain:
        return best[1], best[2]
    return f.bad, f.good


def _nll_offset(y: np.ndarray, offset: np.ndarray) -> float:
    """The log-loss of ``offset`` plus a fitted intercept: no metric at all."""
    return _fit_one(np.zeros(len(y)), y, offset)[0]


def _category_effects(text: np.ndarray, y: np.ndarray, offset: np.ndarray) -> dict[str, float]:
    """Per category, its effect on the risk logit beyond ``offset`` (ridge-shrunk to 0)."""
    effects = {}
    for cat in sorted({t for t in text if t is not None}):
        rows = np.array([t == cat for t in text])
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
    if f.text is None or f.map is None:
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
) -> Learned:
    """Directions, anchors, category scores and non-negative weights from outcomes ``y``.

    First each metric alone (anchors and direction of linear metrics, category scores
    of map metrics); then the weights; then ``rounds`` passes that re-choose each
    metric's normalisation given the others' fitted effect, and refit the weights.
    ``feats`` are copied, not changed.
    """
    feats = [replace(f) for f in feats]
    pillars = list(model.spec.pillars)
    pillar_of = np.array([pillars.index(f.pillar) for f in feats])
    yf = y.astype(float)
    old_w = model.metric_weights()
    changes = []
    for f in feats:
        c = MetricChange(f.pillar, f.metric, f.kind, old_w[f.metric], 0.0)
        if f.kind == "linear":
            c.old_bad, c.old_good = f.bad, f.good
            c.old_direction = "higher" if f.good > f.bad else "lower"
            f.bad, f.good, _ = _anchors(f, yf, gain)
        elif f.kind == "map":
            c.old_map = dict(f.map or {})
            f.map = _refit_map(f, yf, None, gain)
        changes.append(c)
    n = np.column_stack([f.normalized() for f in feats])
    a, beta = _fit_weights(n, yf, pillar_of, len(pillars), l2, holds, model)
    for _ in range(rounds):
        if beta.sum() <= 0:
            break
        moved = False
        for j, f in enumerate(feats):
            if f.kind not in ("linear", "map"):
                continue
            filled = np.where(np.isnan(n), _column_means(n), n)
            offset = a - filled @ beta + beta[j] * filled[:, j]
            if f.kind == "linear":
                bad, good = _refit_anchors(f, yf, offset, gain)
                moved |= (bad, good) != (f.bad, f.good)
                f.bad, f.good = bad, good
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
        if f.kind == "linear":
            c.new_bad, c.new_good = f.bad, f.good
            c.new_direction = "higher" if f.good > f.bad else "lower"
            if c.inverted:
                c.note = f"direction learned: {c.new_direction} is better (inverted)"
            elif (c.old_bad, c.old_good) != (c.new_bad, c.new_good):
                c.note = "anchors re-estimated"
        elif f.kind == "map":
            c.new_map = dict(f.map or {})
            c.note = (
                "category scores learned" if c.new_map != c.old_map else "map kept; weight learned"
            )
        else:
            c.note = f"{f.kind} normalisation kept; weight learned"
        if w == 0:
            c.note = (c.note + "; " if c.note else "") + "fitted weight 0 (kept in the file)"
    zero = [c.metric for c in changes if c.new_weight == 0]
    if zero:
        notes.append(
            "fitted weight 0 (no predictive value beyond the other metrics, or it points "
            "the wrong way): " + ", ".join(zero) + "; they stay in the file with weight 0"
        )
    inverted = [c.metric for c in changes if c.inverted]
    if inverted:
        notes.append(
            "direction learned from data, opposite to the old model: " + ", ".join(inverted)
        )
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
        g = replace(f, bad=fitted.bad, good=fitted.good, map=fitted.map)
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
        score, dscore = _score01_grad(n, beta, pillar_of, pillars)
        base = np.nan_to_num(100.0 * score, nan=0.0)
        final, _ = _apply_rules(base, holds, model)
        # rules shift, floor, cap and clamp the base score: slope 1 or 0 per observation
        bumped, _ = _apply_rules(base + 1e-6, holds, model)
        slope = np.clip(np.round((bumped - final) / 1e-6), 0.0, 1.0)
        z = a - total * final / 100.0
        r = (1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))) - y) / count  # dL/dz
        dz = -(final[:, None] / 100.0 + total * slope[:, None] * dscore)  # dz/dβ
        grad[0] = r.sum()
        grad[1:] = r @ dz + 2.0 * l2 * beta
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
    free = np.array([f is None for f in forced])
    return np.where(free, score < yellow, forced == "red")


def _yellow_for(
    score: np.ndarray, forced: np.ndarray, y: np.ndarray, target: float
) -> tuple[float, bool]:
    """Lowest whole-number threshold with recall >= target (lowest FPR); reached?"""
    for t in range(1, 100):
        red = _red(score, forced, t)
        if y.sum() and red[y].mean() >= target:
            return float(t), True
    return 99.0, False


def fit_bands(
    score: np.ndarray,
    forced: np.ndarray,
    y: np.ndarray,
    old_green_share: float,
    target_recall: float,
) -> tuple[float, float, bool]:
    """The new bands from the new ``score`` (and rule-``forced`` bands) of observations
    labelled ``y``: (yellow, green, whether the target recall was reached).

    Yellow (red below it) is the lowest whole number at which ``target_recall`` of the
    positives are red (99 when none is); green keeps the share of green observations
    the old model had, at least a point above yellow.
    """
    yellow, reached = _yellow_for(score, forced, y, target_recall)
    green = float(np.ceil(np.quantile(score, 1.0 - old_green_share))) if old_green_share else 100.0
    return yellow, min(max(green, yellow + 1.0), 100.0), reached


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
    seed: int = 0,
    out: str | Path | None = None,
    reps: int = 200,
    l2: float = L2,
    held_out: bool = True,
    progress=None,
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
    seed
        Seeds the held-out backtest's bootstrap (the fit itself is deterministic).
    out
        Where to write the new model file (None: not written; the text is returned).
    reps, l2
        Bootstrap resamples of the held-out backtest; the L2 penalty of the fit.
    held_out
        Backtest new vs old on the dates from ``train_until`` on (False: fit only).

    Returns
    -------
    CalibrationResult
    """

    outcome = outcome_kind(outcome)
    check_target_recall(target_recall)
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
    dates = [
        d for d in dates_between(start, last_train, every) if shift(d, horizon, +1) <= train_until
    ]
    asof.backfill(store, model, dates[0], dates[-1], every, progress=progress)
    obs = training_observations(store, model, dates, horizon, outcome, train_until)
    y = obs["label"].to_numpy(bool)
    if y.sum() < MIN_POSITIVES or y.all():
        raise ScoringError(
            f"only {int(y.sum())} of {len(y):,} training observations had {outcome} within "
            f"{horizon} by {train_until:%Y-%m-%d}: too few to calibrate on",
            hint="choose a later `train_until` or an earlier `start`",
        )
    notes: list[str] = []
    feats, holds = calibration_features(store, model, obs, dates)
    pillars = list(model.spec.pillars)
    # an account's observations are correlated: demand the margin per account, not per row
    gain = ANCHOR_GAIN * len(obs) / max(obs["account_id"].nunique(), 1)
    fitted = learn(model, feats, holds, y, gain=gain, l2=l2)
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
    yellow, green, reached = fit_bands(score, forced, y, old_green_share, target_recall)
    if not reached:
        notes.append(
            f"no band threshold reaches {target_recall:.0%} recall on the training "
            "observations; yellow set to 99"
        )
    segment_bands = {}
    for seg in sorted(obs["segment"].dropna().unique()):
        part = (obs["segment"] == seg).to_numpy()
        if y[part].sum() >= MIN_SEGMENT_POSITIVES:
            t, ok = _yellow_for(score[part], forced[part], y[part], target_recall)
            if ok and t != yellow:
                segment_bands[str(seg)] = t
    if segment_bands:
        notes.append(
            f"segments with {MIN_SEGMENT_POSITIVES}+ positive training observations get a "
            f"yellow threshold of their own for {target_recall:.0%} recall (segments.bands): "
            + ", ".join(f"{s} {t:g}" for s, t in segment_bands.items())
        )
    own = obs["segment"].map(lambda s: segment_bands.get(str(s), yellow) if pd.notna(s) else yellow)
    red = _red(score, forced, own.to_numpy(float))
    train_recall = float(red[y].mean())
    train_fpr = float(red[~y].mean()) if (~y).any() else None
    events = int(obs.loc[y, "account_id"].nunique())
    header = (
        f"calibrated by `healthscore calibrate` from {model.label!r} ({model.version[:12]}):\n"
        f"outcome {outcome} within {horizon}, observations every {every} from "
        f"{dates[0]:%Y-%m-%d} to {dates[-1]:%Y-%m-%d}, trained until {train_until:%Y-%m-%d}\n"
        f"({len(obs):,} observations of {obs['account_id'].nunique():,} accounts, {int(y.sum())} "
        f"followed by {outcome}, {events} accounts with the outcome; nothing after "
        f"{train_until:%Y-%m-%d} was read).\n"
        "Weights are percent of the score (a pillar's weight is the sum of its metrics'), "
        f"fitted by a non-negative\nlogistic model; bands: yellow for {target_recall:.0%} "
        "recall of the training observations, green keeps the old green share."
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
        every=every,
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


def _held_out(store: Store, old: Model, result: CalibrationResult, *, reps, seed, progress):
    """Backtest new vs old on the dates from train_until on; recall at the old FPR."""
    out = outcome_events(store)
    if out.empty:
        return
    end = shift(out["ts"].max().to_pydatetime(), result.horizon, -1)
    d = result.train_until
    if end < d:
        result.notes.append(
            f"no held-out period: the last outcome on file leaves no {result.horizon} window "
            f"after {d:%Y-%m-%d} to test on"
        )
        return
    dates = dates_between(d, end, result.every)
    result.test_dates = dates
    new = result.model
    result.backtest = bt.backtest(
        store,
        new,
        d,
        end,
        every=result.every,
        horizon=result.horizon,
        vs=old,
        reps=reps,
        seed=seed,
        progress=progress,
    )
    result.equal_fpr = equal_fpr(store, old, new, dates, result.horizon, result.outcome)


def equal_fpr(
    store: Store, old: Model, new: Model, dates: list[datetime], horizon: str, outcome: str
) -> EqualFPR:
    """Recall of ``new`` at the false-positive rate of ``old``'s red band, same observations.

    The new model flags an observation when its score is below a threshold (or a rule
    forces red); the threshold is the highest whose false-positive rate does not exceed
    the old model's.
    """
    a, _ = observations(store, old, dates, horizon, outcome)
    b, _ = observations(store, new, dates, horizon, outcome)
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
            if c.kind == "linear":
                use["bad"], use["good"] = number(c.new_bad), number(c.new_good)
            if c.kind == "map" and c.new_map is not None and c.new_map != c.old_map:
                use["map"] = flow_map((k, number(v)) for k, v in c.new_map.items())
            was = f"was weight {100 * c.old_weight:.1f} %"
            if c.kind == "linear" and (c.old_bad, c.old_good) != (c.new_bad, c.new_good):
                was += f", bad {c.old_bad:g}, good {c.old_good:g}"
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
]
