"""The backtest's diagnostics as plain data: what the backtest report (and the dashboard) draws.

Place in the flow: in ``evaluate``, after :mod:`healthscore.evaluate.backtest`, below the
views. From a backtest's dates and the stored history it gives the churn observations of
each model as drawn (with the stored calibrated probability), the points of the ROC,
precision-recall and reliability curves, the churn rate per score bin, and the effective
weight changes between two models. Numbers only: :mod:`healthscore.views.charts` and
:mod:`healthscore.views.backtest_report` turn them into figures and a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from healthscore.core.time import dates_between
from healthscore.engine.history import SCORES, current_probability
from healthscore.evaluate import backtest as bt
from healthscore.model import Model
from healthscore.store import Store


@dataclass
class WeightChange:
    """One metric's effective weight (pillar weight x share) in the old and new model."""

    metric: str
    pillar: str | None
    old: float | None  # None: not scored by that model
    new: float | None
    anchors_old: str
    anchors_new: str
    segments: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def change(self) -> float:
        return (self.new or 0.0) - (self.old or 0.0)

    @property
    def changed(self) -> bool:
        """Whether its weight (overall or in a segment) or its anchors differ."""
        moved = any(
            _rounded(o) != _rounded(n) for o, n in [(self.old, self.new), *self.segments.values()]
        )
        return moved or self.anchors_old != self.anchors_new


@dataclass
class RankingCurve:
    """A ROC or precision-recall curve: its points and the area under it (AUC or AP)."""

    x: np.ndarray
    y: np.ndarray
    area: float


# --- observations ---------------------------------------------------------------------------


def report_observations(
    store: Store, result: bt.BacktestResult, models: list[Model] | tuple[Model, ...]
) -> list[pd.DataFrame]:
    """The churn observations of each model at the backtest's dates, as the report draws them.

    With two models, only the (account, date) pairs both have are kept (as the backtest
    measures them). A ``probability`` column holds the stored calibrated probability
    (empty when the model has no ``probability:`` section).
    """
    seen = result.observed
    dates = (
        seen.dates if seen is not None else dates_between(result.start, result.end, result.every)
    )
    pairs = seen.pairs if seen is not None else None
    frames = [
        bt.observations(store, m, dates, result.horizon, bt.RISK, pairs=pairs)[0] for m in models
    ]
    if len(frames) > 1:
        key = ["account_id", "as_of"]
        both = frames[0][key]
        for f in frames[1:]:
            both = both.merge(f[key])
        frames = [f.merge(both, on=key).reset_index(drop=True) for f in frames]
    return [with_probability(store, m, f) for m, f in zip(models, frames, strict=True)]


def with_probability(store: Store, model: Model, obs: pd.DataFrame) -> pd.DataFrame:
    """``obs`` with the calibrated probability of each (account, date)'s stored score by
    the model's current curve (refitting it keeps the version), or NaN."""
    view = current_probability(model)
    if view is None or obs.empty:
        return obs.assign(probability=np.nan)
    t = store.stored(SCORES)
    t = view(t.filter(t.model_version == model.version, t.scorecard == model.scorecard_name))
    t = t.filter(t.probability.notnull())
    p = store.execute(t.select("account_id", "as_of", "probability")).to_pandas()
    return obs.merge(p, on=["account_id", "as_of"], how="left")


# --- curves ---------------------------------------------------------------------------------


def _ranks_both(y: np.ndarray) -> bool:
    """A curve needs both classes: some positives and some negatives."""
    return bool(0 < y.sum() < len(y))


def roc_points(y: np.ndarray, risk: np.ndarray) -> RankingCurve | None:
    """False- against true-positive rate over every threshold of ``risk``; None without both
    classes."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if not _ranks_both(y):
        return None
    fpr, tpr, _ = roc_curve(y, risk)
    return RankingCurve(fpr, tpr, float(roc_auc_score(y, risk)))


def pr_points(y: np.ndarray, risk: np.ndarray) -> RankingCurve | None:
    """Recall against precision over every threshold of ``risk``; None without both classes."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    if not _ranks_both(y):
        return None
    precision, recall, _ = precision_recall_curve(y, risk)
    return RankingCurve(recall, precision, float(average_precision_score(y, risk)))


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10):
    """Mean predicted and observed rate per bin of (about) equal size, lowest first.

    >>> reliability(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1]), bins=2)
    ([0.15000000000000002, 0.35], [0.0, 1.0], [2, 2])
    """
    order = np.argsort(p, kind="stable")
    parts = [part for part in np.array_split(order, min(bins, len(p))) if len(part)]
    return (
        [float(p[part].mean()) for part in parts],
        [float(y[part].mean()) for part in parts],
        [len(part) for part in parts],
    )


def rate_per_bin(obs: pd.DataFrame):
    """Bin centre, churn rate and observations per 10-point score bin that has any."""
    score = obs["score"].to_numpy(float)
    y = obs["label"].to_numpy(bool)
    idx = np.clip((score // 10).astype(int), 0, 9)
    x, rate, n = [], [], []
    for b in range(10):
        mask = idx == b
        if mask.any():
            x.append(b * 10 + 5)
            rate.append(float(y[mask].mean()))
            n.append(int(mask.sum()))
    return x, rate, n


# --- weight changes -------------------------------------------------------------------------


def weight_changes(new: Model, old: Model) -> list[WeightChange]:
    """Each metric scored by either model: effective weights old -> new, overall and per segment."""
    pillar_of = {m: p for p, m, _ in old.scored_metrics()}
    pillar_of.update({m: p for p, m, _ in new.scored_metrics()})
    uses_old = {m: u for _, m, u in old.scored_metrics()}
    uses_new = {m: u for _, m, u in new.scored_metrics()}
    w_old, w_new = old.metric_weights(), new.metric_weights()
    segments = list(dict.fromkeys([*old.segment_names(), *new.segment_names()]))
    seg_old = {s: old.metric_weights(s) for s in segments}
    seg_new = {s: new.metric_weights(s) for s in segments}
    out = []
    for m in dict.fromkeys([*uses_new, *uses_old]):
        out.append(
            WeightChange(
                metric=m,
                pillar=pillar_of.get(m),
                old=w_old.get(m),
                new=w_new.get(m),
                anchors_old=anchors(uses_old.get(m)),
                anchors_new=anchors(uses_new.get(m)),
                segments={s: (seg_old[s].get(m), seg_new[s].get(m)) for s in segments},
            )
        )
    out.sort(key=lambda c: (-abs(c.change), c.metric))
    return out


def anchors(use) -> str:
    """How a metric becomes 0-100, in short: ``bad 0, good 20``, ``points``, ``map`` ..."""
    if use is None:
        return "not scored"
    if use.bad is not None:
        return f"bad {use.bad:g}, good {use.good:g}"
    if use.points is not None:
        return "points " + " ".join(f"{x:g}:{y:g}" for x, y in use.points)
    if use.map is not None:
        return "map " + ", ".join(f"{k}:{v:g}" for k, v in use.map.items())
    return f"percentile ({use.percentile.better} is better)"


def _rounded(x: float | None) -> float | None:
    # weights are normalised shares: a difference below 1e-9 is rounding, not a change
    return None if x is None else round(x, 9)
