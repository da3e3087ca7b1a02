"""Statistics of evaluation: ranking figures, the account bootstrap and its intervals.

Place in the flow: under every evaluation (``backtest``, ``snapshot``, ``calibrate``,
``challenger``); it knows arrays, not stores or models. Observations come from
:mod:`healthscore.evaluate.observations`; the figures measured on them come here:

- **Ranking figures**: ROC AUC and PR AUC (average precision) of a risk (higher = more
  likely to have the outcome), None when the labels hold one class only.
- **The account bootstrap**: an account's observations are correlated (the same account
  at monthly dates), so resamples draw accounts with replacement and take all their
  rows, every replicate at once (as counts per account: :func:`weighted_draws`). The
  resamples are seeded: the same seed gives the same intervals, and two models
  measured with the same seed on the same observations are resampled alike, which is
  what makes a paired difference's interval meaningful.
- **Intervals**: the 2.5 and 97.5 percentiles of the resampled figures, given only when
  at least :data:`MIN_DRAWS` resamples could compute the figure.

Examples
--------
>>> y, risk = np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])
>>> roc_auc(y, risk), rank_roc_auc(y, risk)
(0.75, 0.75)
>>> accounts = np.array(["a", "b"])
>>> rows = account_index(accounts, ["a", "a", "b", "b"])  # two rows per account
>>> draws = weighted_draws(lambda w: {"auc": weighted_roc_auc(y, risk, w[:, rows])},
...                        2, reps=200, seed=0)
>>> str(interval(0.75, draws["auc"]))
'0.750 [0.750, 0.750]'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: fewer resamples than this that could compute a figure: no interval
MIN_DRAWS = 20


@dataclass
class Estimate:
    """A figure with its bootstrap interval (``lo``/``hi`` are None when not computable)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    def __str__(self) -> str:
        if self.value is None:
            return "-"
        if self.lo is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


@dataclass
class Difference:
    """One figure of model A minus model B on the same observations, with a paired
    bootstrap interval."""

    metric: str
    value: Estimate


# --- ranking figures ---------------------------------------------------------------------------


def roc_auc(y: np.ndarray, risk: np.ndarray) -> float | None:
    """ROC AUC of ``risk`` for labels ``y`` (scikit-learn's ``roc_auc_score``).

    The backtest's and snapshot's figures; :func:`rank_roc_auc` gives the same value to
    1e-12, faster, but not to the last bit, and the published figures stay as they were.
    """
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, risk)) if 0 < y.sum() < len(y) else None


def average_precision(y: np.ndarray, risk: np.ndarray) -> float | None:
    """PR AUC of ``risk`` for labels ``y`` (scikit-learn's ``average_precision_score``)."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, risk)) if 0 < y.sum() < len(y) else None


def rank_roc_auc(y: np.ndarray, risk: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count half): :func:`roc_auc`'s value to
    1e-12, several times faster (the challenger's many resamples use it).

    >>> rank_roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    import pandas as pd

    y = np.asarray(y, dtype=bool)  # a 0/1 integer array would index by position
    n1 = int(y.sum())
    n0 = len(y) - n1
    if not n1 or not n0:
        return None
    ranks = pd.Series(risk).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def step_average_precision(y: np.ndarray, risk: np.ndarray) -> float | None:
    """Average precision over distinct thresholds: :func:`average_precision`'s value to
    1e-12, faster.

    >>> step_average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.8333333333333333
    """
    n1 = int(y.sum())
    if not n1 or n1 == len(y):
        return None
    order = np.argsort(-risk, kind="stable")
    r, yy = risk[order], y[order]
    last = np.r_[np.flatnonzero(r[1:] != r[:-1]), len(r) - 1]  # end of each tied run
    tp = np.cumsum(yy)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / n1
    return float(np.sum(recall_step * precision))


def ratio(a: float, b: float) -> float | None:
    """``a / b`` as a float, None when ``b`` is 0 (a rate with nothing to count)."""
    return float(a / b) if b else None


# --- the account bootstrap, every replicate at once ------------------------------------------
#
# Drawing an account k times is the same as counting its rows k times: a replicate is a
# vector of weights per account (how often it was drawn), and each figure is a weighted
# sum over the rows, computed for all replicates with array operations; each equals the
# figure computed on the concatenated resample.

#: replicates evaluated together (bounds the memory of the weight matrices)
CHUNK = 64


def bootstrap_counts(n_accounts: int, reps: int, seed: int) -> np.ndarray:
    """How often each account is drawn in each of ``reps`` seeded resamples with
    replacement, each as long as the population: an integer array ``reps x n_accounts``.

    >>> bootstrap_counts(3, 2, 0).sum(axis=1).tolist()
    [3, 3]
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((reps, n_accounts), dtype=np.int32)
    for r in range(reps):
        out[r] = np.bincount(rng.integers(0, n_accounts, n_accounts), minlength=n_accounts)
    return out


def _nan_none(values: np.ndarray) -> list[float]:
    return [float(v) for v in values if not np.isnan(v)]


def _tie_groups(risk: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """The order of the rows by risk and where each run of tied risks starts in it."""
    order = np.argsort(-risk if descending else risk, kind="stable")
    r = risk[order]
    starts = np.r_[0, np.flatnonzero(r[1:] != r[:-1]) + 1] if len(r) else np.array([], int)
    return order, starts


def weighted_roc_auc(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count half) for each row of weights ``w`` (replicates x rows); NaN
    where a replicate holds one class only.

    >>> y, risk = np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])
    >>> weighted_roc_auc(y, risk, np.ones((1, 4))).tolist()
    [0.75]
    """
    y = np.asarray(y, bool)
    if not len(y):
        return np.full(len(w), np.nan)
    order, starts = _tie_groups(risk, descending=False)
    wo, yo = w[:, order], y[order]
    pos = np.add.reduceat(wo * yo, starts, axis=1)
    neg = np.add.reduceat(wo * ~yo, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n1, n0 = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n1 * n0)
    auc[(n1 == 0) | (n0 == 0)] = np.nan
    return auc


def weighted_average_precision(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision over distinct thresholds (:func:`step_average_precision`) for each
    row of weights ``w``; NaN where a replicate holds one class only.

    >>> y, risk = np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])
    >>> weighted_average_precision(y, risk, np.ones((1, 4))).round(6).tolist()
    [0.833333]
    """
    y = np.asarray(y, bool)
    if not len(y):
        return np.full(len(w), np.nan)
    order, starts = _tie_groups(risk, descending=True)
    wo, yo = w[:, order], y[order]
    pos = np.add.reduceat(wo * yo, starts, axis=1)
    allw = np.add.reduceat(wo, starts, axis=1)
    tp, seen = np.cumsum(pos, axis=1), np.cumsum(allw, axis=1)
    n1, n = tp[:, -1], seen[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        ap = (pos * precision).sum(axis=1) / n1
    ap[(n1 == 0) | (n1 == n)] = np.nan
    return ap


def weighted_ratio(num: np.ndarray, den: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum(w * num) / sum(w * den)`` per replicate (boolean masks ``num`` and ``den``);
    NaN where nothing counts in the denominator."""
    d = w @ np.asarray(den, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (w @ np.asarray(num, float)) / d
    out[d == 0] = np.nan
    return out


def weighted_corr(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` per replicate; NaN where either is constant
    or fewer than 3 rows are drawn."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (w @ x) / n, (w @ y) / n
        cxy = (w @ (x * y)) / n - mx * my
        vx = (w @ (x * x)) / n - mx * mx
        vy = (w @ (y * y)) / n - my * my
        r = cxy / np.sqrt(vx * vy)
    bad = (n < 3) | (vx <= 1e-12 * np.maximum(1, mx * mx)) | (vy <= 1e-12)
    r[bad] = np.nan
    return r


def weighted_draws(
    figures: Callable[[np.ndarray], dict[str, np.ndarray]],
    n_accounts: int,
    reps: int,
    seed: int,
) -> dict[str, list[float]]:
    """Each figure over ``reps`` account resamples at once: ``figures(counts)`` gets a
    block of replicates as account counts (replicates x accounts, see
    :func:`bootstrap_counts`) and returns one array of values per figure (NaN: not
    computable, skipped)."""
    counts = bootstrap_counts(n_accounts, reps, seed)
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, reps, CHUNK):
        for k, v in figures(counts[lo : lo + CHUNK].astype(float)).items():
            parts.setdefault(k, []).append(np.asarray(v, float))
    return {k: _nan_none(np.concatenate(v)) for k, v in parts.items()}


def account_index(accounts: np.ndarray, ids) -> np.ndarray:
    """Per row of ``ids``, the position of its account in ``accounts`` (sorted ids)."""
    return np.searchsorted(accounts, np.asarray(ids, dtype=accounts.dtype))


def interval(value: float | None, draws: list[float]) -> Estimate:
    """``value`` with the 95 % percentile interval of its resampled ``draws`` (none when
    fewer than :data:`MIN_DRAWS` resamples could compute it)."""
    if value is None or len(draws) < MIN_DRAWS:
        return Estimate(value)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi))


__all__ = [
    "MIN_DRAWS",
    "Difference",
    "Estimate",
    "account_index",
    "average_precision",
    "bootstrap_counts",
    "interval",
    "rank_roc_auc",
    "ratio",
    "roc_auc",
    "step_average_precision",
    "weighted_average_precision",
    "weighted_corr",
    "weighted_draws",
    "weighted_ratio",
    "weighted_roc_auc",
]
