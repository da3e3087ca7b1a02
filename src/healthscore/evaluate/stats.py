"""Statistics of evaluation: ranking figures, the account bootstrap and its intervals.

Place in the flow: under every evaluation (``backtest``, ``snapshot``, ``calibrate``,
``challenger``); it knows arrays, not stores or models. Observations come from
:mod:`healthscore.evaluate.observations`; the figures measured on them come here:

- **Ranking figures**: ROC AUC and PR AUC (average precision) of a risk (higher = more
  likely to have the outcome), None when the labels hold one class only.
- **The account bootstrap**: an account's observations are correlated (the same account
  at monthly dates), so resamples draw accounts with replacement and take all their
  rows. The resamples are seeded: the same seed gives the same intervals, and two
  models measured with the same seed on the same observations are resampled alike,
  which is what makes a paired difference's interval meaningful.
- **Intervals**: the 2.5 and 97.5 percentiles of the resampled figures, given only when
  at least :data:`MIN_DRAWS` resamples could compute the figure.

Examples
--------
>>> y, risk = np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])
>>> roc_auc(y, risk), rank_roc_auc(y, risk)
(0.75, 0.75)
>>> rows = rows_by_group(np.array([0, 0, 1, 1]), 2)
>>> draws = bootstrap(lambda s: {"auc": rank_roc_auc(y[take(rows, s)], risk[take(rows, s)])},
...                   2, reps=200, seed=0)
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


# --- the account bootstrap ---------------------------------------------------------------------


def bootstrap_accounts(n_accounts: int, reps: int, seed: int) -> list[np.ndarray]:
    """``reps`` seeded resamples of account positions ``0 .. n_accounts - 1``, with
    replacement, each as long as the population."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_accounts, n_accounts) for _ in range(reps)]


def rows_by_group(groups: np.ndarray, n: int) -> list[np.ndarray]:
    """Per group ``0 .. n - 1``, the positions of its rows in ``groups``."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def account_rows(accounts: np.ndarray, ids) -> list[np.ndarray]:
    """Per account of ``accounts`` (sorted ids), the positions of its rows in ``ids``
    (an id not among ``accounts`` is in no account's rows)."""
    import pandas as pd

    if not len(ids):
        return rows_by_group(np.array([]), len(accounts))
    index = {a: i for i, a in enumerate(accounts)}
    return rows_by_group(pd.Series(ids).map(index).to_numpy(), len(accounts))


def take(rows: list[np.ndarray], sample: np.ndarray) -> np.ndarray:
    """The rows of the resampled accounts ``sample``, an account's rows once per draw."""
    return np.concatenate([rows[i] for i in sample]) if len(sample) else np.array([], int)


def bootstrap(
    figures: Callable[[np.ndarray], dict[str, float | None]], n_accounts: int, reps: int, seed: int
) -> dict[str, list[float]]:
    """Each figure over ``reps`` account resamples: ``figures(sample)`` gets the resampled
    account positions and returns the figures; None (not computable) is skipped."""
    draws: dict[str, list[float]] = {}
    for sample in bootstrap_accounts(n_accounts, reps, seed):
        for k, v in figures(sample).items():
            draws.setdefault(k, [])
            if v is not None:
                draws[k].append(v)
    return draws


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
    "account_rows",
    "average_precision",
    "bootstrap",
    "bootstrap_accounts",
    "interval",
    "rank_roc_auc",
    "ratio",
    "roc_auc",
    "rows_by_group",
    "step_average_precision",
    "take",
]
