"""Statistics of evaluation: ranking figures, the account bootstrap and its intervals.

Place in the flow: under every evaluation (``backtest``, ``snapshot``, ``calibrate``,
``challenger``); it knows arrays, not stores or models. Observations come from
:mod:`healthscore.evaluate.observations`; the figures measured on them come here:

- **Ranking figures**: ROC AUC and PR AUC (average precision) of a risk (higher = more
  likely to have the outcome), None when the labels hold one class only.
- **The account bootstrap**: an account's observations are correlated (the same account
  at monthly dates), so resamples draw accounts with replacement and take all their
  rows, every replicate at once (as counts per account: :class:`Replicates`). The
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
>>> draws = draws_of({"auc": Replicates(rows, 2, reps=200, seed=0).roc_auc(y, risk)})
>>> str(interval(0.75, draws["auc"]))
'0.750 [0.750, 0.750]'
"""

from __future__ import annotations

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
# Drawing an account k times is the same as counting its rows k times. A replicate is a
# vector of counts per account (how often it was drawn); every figure is a sum over rows
# weighted by their account's count, so it is the replicates' counts (reps x accounts)
# times per-account sums of the rows, one matrix product for all replicates. Each figure
# equals the one computed on the concatenated resample.


def bootstrap_counts(n_accounts: int, reps: int, seed: int) -> np.ndarray:
    """How often each account is drawn in each of ``reps`` seeded resamples with
    replacement, each as long as the population: an array ``reps x n_accounts``.

    >>> bootstrap_counts(3, 2, 0).sum(axis=1).tolist()
    [3.0, 3.0]
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((reps, n_accounts))
    for r in range(reps):
        out[r] = np.bincount(rng.integers(0, n_accounts, n_accounts), minlength=n_accounts)
    return out


class Replicates:
    """``reps`` seeded account resamples of rows that belong to accounts, evaluated all at
    once: each method returns one value per replicate (NaN where it is not computable).

    ``rows`` gives each row's account as a position in ``0 .. n_accounts - 1`` (see
    :func:`account_index`).

    >>> y, risk = np.array([0, 0, 1, 1], bool), np.array([0.1, 0.4, 0.35, 0.8])
    >>> r = Replicates(np.array([0, 1, 2, 3]), 4, reps=1, seed=0)
    >>> r.counts = np.ones((1, 4))  # the rows as they are
    >>> r.roc_auc(y, risk).tolist(), r.average_precision(y, risk).round(6).tolist()
    ([0.75], [0.833333])
    """

    def __init__(self, rows: np.ndarray, n_accounts: int, reps: int, seed: int):
        self.rows = np.asarray(rows, dtype=np.int64)
        self.n = n_accounts
        self.counts = bootstrap_counts(n_accounts, reps, seed)

    def total(self, values) -> np.ndarray:
        """Per replicate, the sum of ``values`` (one per row) over the resampled rows."""
        per_account = np.bincount(self.rows, weights=np.asarray(values, float), minlength=self.n)
        return self.counts @ per_account

    def ratio(self, num, den) -> np.ndarray:
        """``sum(num) / sum(den)`` over the resampled rows (masks or numbers per row)."""
        d = self.total(den)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.total(num) / d
        out[d == 0] = np.nan
        return out

    def _by_risk(self, y: np.ndarray, risk: np.ndarray, descending: bool):
        """Per replicate and per distinct risk (ascending, or descending), the resampled
        counts of rows with and without the outcome."""
        from scipy.sparse import csr_matrix

        values, group = np.unique(risk, return_inverse=True)
        if descending:
            group = len(values) - 1 - group
        shape = (self.n, len(values))
        y = np.asarray(y, bool)
        pos = csr_matrix((y.astype(float), (self.rows, group)), shape=shape)
        neg = csr_matrix(((~y).astype(float), (self.rows, group)), shape=shape)
        return (pos.T @ self.counts.T).T, (neg.T @ self.counts.T).T

    def roc_auc(self, y: np.ndarray, risk: np.ndarray) -> np.ndarray:
        """ROC AUC of ``risk`` (ties count half), :func:`roc_auc` on each resample."""
        if not len(y):
            return np.full(len(self.counts), np.nan)
        pos, neg = self._by_risk(y, risk, descending=False)
        below = np.cumsum(neg, axis=1) - neg
        n1, n0 = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n1 * n0)
        auc[(n1 == 0) | (n0 == 0)] = np.nan
        return auc

    def average_precision(self, y: np.ndarray, risk: np.ndarray) -> np.ndarray:
        """Average precision over distinct thresholds, :func:`average_precision` on each
        resample."""
        if not len(y):
            return np.full(len(self.counts), np.nan)
        pos, neg = self._by_risk(y, risk, descending=True)
        tp, seen = np.cumsum(pos, axis=1), np.cumsum(pos + neg, axis=1)
        n1, n = tp[:, -1], seen[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(seen > 0, tp / seen, 0.0)
            ap = (pos * precision).sum(axis=1) / n1
        ap[(n1 == 0) | (n1 == n)] = np.nan
        return ap

    def correlation(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pearson correlation of ``x`` and ``y``; NaN where either is constant or fewer
        than 3 rows are drawn."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        n = self.total(np.ones(len(x)))
        with np.errstate(invalid="ignore", divide="ignore"):
            mx, my = self.total(x) / n, self.total(y) / n
            cxy = self.total(x * y) / n - mx * my
            vx = self.total(x * x) / n - mx * mx
            vy = self.total(y * y) / n - my * my
            r = cxy / np.sqrt(vx * vy)
        bad = (n < 3) | (vx <= 1e-12 * np.maximum(1, mx * mx)) | (vy <= 1e-12)
        r[bad] = np.nan
        return r

    def of(self, rows: np.ndarray) -> Replicates:
        """The same resamples for other rows of the same accounts (``rows``: their
        account positions)."""
        other = Replicates.__new__(Replicates)
        other.rows, other.n, other.counts = np.asarray(rows, np.int64), self.n, self.counts
        return other


def draws_of(figures: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """The replicates' values per figure, the ones not computable (NaN) left out."""
    return {
        k: [float(v) for v in np.asarray(a, float) if not np.isnan(v)] for k, a in figures.items()
    }


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
    "draws_of",
    "Replicates",
    "interval",
    "rank_roc_auc",
    "ratio",
    "roc_auc",
    "step_average_precision",
]
