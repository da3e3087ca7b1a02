"""A learned challenger: a gradient-boosted model measured beside the weighted score.

Place in the flow: after ``backtest``. It is a **challenger only**: the live score, its
bands, explanations and everything a CSM sees are always the explainable weighted
model. The challenger answers one question: would a learned model, given the same
point-in-time data, rank risk better? If it does by a clear margin, the weights deserve
a second look (``healthscore compare``); the challenger itself never scores accounts.

- **Features** are the stored raw metric values (``score_lines.raw_value`` of the
  model's scored metrics, ``kind = 'metric'``) at each observation date: exactly what
  the weighted model saw then, point-in-time. Categorical metrics (no number stored)
  and metrics never present in the training data are left out. A missing value stays
  missing (the booster routes it on its own).
- **Observations and labels** are the backtest's
  (:func:`healthscore.evaluate.observations.observations`). The challenger is trained on the
  observation dates whose horizon closes by ``train_until`` (so no label it learns
  from depends on anything after ``train_until``), and evaluated on the dates from
  ``train_until`` on, where the weighted model is measured on the very same
  observations: ROC AUC and PR AUC with a seeded bootstrap over accounts, and the
  paired difference (:mod:`healthscore.evaluate.stats`), and beside them the backtest's
  figure set for both (:class:`RankFigures`): recall in the riskiest 10 % and 20 % of the
  book at each date and lift per decile (tied values shared, as in
  :mod:`healthscore.evaluate.backtest`), and the flag list's recall, false-positive
  rate, precision and flagged-but-renewed share. The weighted model flags its red band;
  the challenger flags as many of the riskiest accounts at each date as the weighted
  model had red then (same list length, so the two lists compare). The held-out
  predictions (:attr:`ChallengerResult.predictions`) can be written to a file
  (``predictions``) and checked outside the tool. Observations follow an
  :class:`~healthscore.evaluate.observations.ObservationPlan`'s pairs when given.
- **Per-account explanations** are baseline Shapley values: the baseline is the
  training median of every feature; a feature's contribution is its average effect on
  the predicted probability of moving it from the baseline to the account's value,
  over all orders of moving the features (exact for up to 12 differing features, else
  averaged over seeded random orders). The contributions add up exactly to the
  account's probability minus the baseline's.

Everything is deterministic for a given seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from healthscore.core.time import shift
from healthscore.engine.history import LINES
from healthscore.errors import ScoringError
from healthscore.evaluate.backtest import MIN_EVENTS, RISKIEST, lift_by_decile, riskiest_share
from healthscore.evaluate.observations import GOOD, RISK, observations
from healthscore.evaluate.stats import (
    Difference,
    Estimate,
    Replicates,
    account_index,
    draws_of,
    interval,
    rank_roc_auc,
    ratio,
    step_average_precision,
)
from healthscore.model import Model
from healthscore.store import Store

CHALLENGER_ONLY = (
    "challenger only: the live score is always the explainable weighted model; "
    "the challenger is measured, never used to score accounts"
)
EXACT_MAX = 12  # up to this many differing features, Shapley values are exact (2^k rows)
ORDERS = 256  # random feature orders otherwise
MIN_TRAIN_POSITIVES = 5


@dataclass
class Driver:
    """One feature's part in a challenger prediction."""

    feature: str
    value: float | None  # the account's raw value (None: missing)
    baseline: float | None  # the training median it is compared against
    contribution: float  # change in predicted probability it accounts for


@dataclass
class ChallengerExplanation:
    """Why the challenger gives an account its probability: drivers sum to the gap."""

    account_id: str
    as_of: datetime
    probability: float
    baseline_probability: float  # the prediction for an account at every training median
    drivers: list[Driver]  # by |contribution|, largest first

    def summary(self, top: int = 3, name=None) -> str:
        """The ``top`` drivers in a line; ``name`` (e.g. ``Model.metric_label``) says
        what each feature is called, else its metric key."""
        parts = [
            f"{name(d.feature) if name else d.feature} = {_fmt(d.value)} "
            f"({d.contribution * 100:+.1f} pp)"
            for d in self.drivers[:top]
            if d.contribution
        ]
        return ", ".join(parts) or "every feature at its training median"


@dataclass
class Challenger:
    """A fitted challenger and what it was trained on."""

    estimator: object
    features: list[str]
    baseline: np.ndarray  # training median per feature
    model_version: str
    outcome: str
    horizon: str
    train_until: datetime
    train_dates: list[datetime]
    train_observations: int
    train_positives: int
    train_accounts: int
    seed: int

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of the outcome within the horizon, per row of a feature frame."""
        with one_thread():
            return self.estimator.predict_proba(_matrix(frame, self.features))[:, 1]

    def explain(self, frame: pd.DataFrame) -> list[ChallengerExplanation]:
        """Baseline Shapley explanations of each row (``account_id``, ``as_of``, features)."""
        x = _matrix(frame, self.features)
        with one_thread():
            base = float(self.estimator.predict_proba(self.baseline[None, :])[0, 1])
        rng = np.random.default_rng(self.seed)
        out = []
        for i, r in enumerate(frame[["account_id", "as_of"]].itertuples(index=False)):
            with one_thread():
                phi, p = _shapley(self.estimator, x[i], self.baseline, rng)
            drivers = [
                Driver(f, _value_or_none(x[i, j]), _value_or_none(self.baseline[j]), float(phi[j]))
                for j, f in enumerate(self.features)
            ]
            drivers.sort(key=lambda d: (-abs(d.contribution), d.feature))
            out.append(ChallengerExplanation(r.account_id, r.as_of, p, base, drivers))
        return out


@dataclass
class RankFigures:
    """The backtest's figures for one ranking on the held-out observations."""

    #: of the observations with the outcome, the share in the riskiest 10 % / 20 % at
    #: their date (tied values shared)
    recall_riskiest: dict[str, Estimate]
    lift: list[float | None]  # outcome rate per decile over the overall rate, riskiest first
    flagged: float  # observations flagged (a tied run across the cut counts in part)
    recall: Estimate  # of the observations with the outcome, the share flagged
    false_positive_rate: Estimate
    precision: float | None
    flagged_but_renewed_share: float | None  # of the flagged, the share renewed (churn)

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d["recall_riskiest"] = {k: vars(v) for k, v in self.recall_riskiest.items()}
        d["recall"], d["false_positive_rate"] = vars(self.recall), vars(self.false_positive_rate)
        return d


@dataclass
class ChallengerResult:
    """The challenger beside the weighted model on the same held-out observations."""

    model_label: str
    model_version: str
    outcome: str
    horizon: str
    train_until: datetime
    train_dates: list[datetime]
    test_dates: list[datetime]
    features: list[str]
    train_observations: int
    train_positives: int
    train_accounts: int
    observations: int
    positives: int
    accounts: int
    roc_auc: Estimate
    pr_auc: Estimate
    weighted_roc_auc: Estimate
    weighted_pr_auc: Estimate
    differences: list[Difference] = field(default_factory=list)  # challenger - weighted
    importance: list[tuple[str, float]] = field(default_factory=list)  # held-out AUC drop
    explanations: list[ChallengerExplanation] = field(default_factory=list)  # riskiest first
    explained_as_of: datetime | None = None
    split: str = ""  # how train_until was chosen, in words
    notes: list[str] = field(default_factory=list)
    # held-out rows: ids, segment, score, band, label, probability and the features
    predictions: pd.DataFrame | None = None
    challenger: Challenger | None = None
    #: the backtest's figure set, for ``challenger`` and ``weighted``
    figures: dict[str, RankFigures] = field(default_factory=dict)
    flag_band: str = "red"  # the weighted model's flag band; the challenger flags as many
    plan: str = ""  # the observation plan in words

    def to_dict(self) -> dict:
        skip = {"predictions", "challenger", "explanations", "figures"}
        d = {k: v for k, v in self.__dict__.items() if k not in skip}
        d["label"] = CHALLENGER_ONLY
        for k in ("roc_auc", "pr_auc", "weighted_roc_auc", "weighted_pr_auc"):
            d[k] = vars(d[k])
        d["differences"] = [{"metric": x.metric, **vars(x.value)} for x in self.differences]
        d["importance"] = [{"feature": f, "roc_auc_drop": v} for f, v in self.importance]
        d["figures"] = {k: v.to_dict() for k, v in self.figures.items()}
        d["explanations"] = [
            {
                "account_id": e.account_id,
                "as_of": e.as_of.isoformat(),
                "probability": e.probability,
                "baseline_probability": e.baseline_probability,
                "drivers": [vars(x) for x in e.drivers],
            }
            for e in self.explanations
        ]
        for k in ("train_until", "explained_as_of"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        for k in ("train_dates", "test_dates"):
            d[k] = [x.isoformat() for x in d[k]]
        return d

    def lines(self, name=None) -> list[str]:
        """The result in plain words, a line each (what the CLI prints); ``name`` (e.g.
        ``Model.metric_label``) says what each feature is called, else its metric key."""
        name = name or (lambda f: f)
        diff = {x.metric: x.value for x in self.differences}
        out = [
            f"challenger ({CHALLENGER_ONLY})",
            f"gradient-boosted trees on {len(self.features)} stored raw metric values; "
            f"{self.split}",
            f"trained on {self.train_observations:,} observations ({self.train_positives} "
            f"{self.outcome} within {self.horizon}) of {self.train_accounts} accounts at "
            f"{len(self.train_dates)} dates; held out: {self.observations:,} observations "
            f"({self.positives} {self.outcome}) of {self.accounts} accounts at "
            f"{len(self.test_dates)} dates from {self.train_until:%Y-%m-%d}",
            f"ROC AUC: challenger {self.roc_auc}, weighted {self.weighted_roc_auc}, "
            f"difference {diff.get('roc_auc', '-')}",
            f"PR AUC:  challenger {self.pr_auc}, weighted {self.weighted_pr_auc}, "
            f"difference {diff.get('pr_auc', '-')}",
        ]
        if self.figures:
            c, w = self.figures["challenger"], self.figures["weighted"]
            end = "riskiest" if self.outcome != GOOD else "healthiest"
            for key, value in c.recall_riskiest.items():
                out.append(
                    f"recall in the {end} {key}: challenger {value}, weighted "
                    f"{w.recall_riskiest[key]}"
                )
            out.append(
                f"lift, riskiest decile: challenger {_lift(c.lift)}, weighted {_lift(w.lift)}"
            )
            out.append(
                f"flag list ({self.flag_band} band; the challenger's {c.flagged:,.0f} riskiest "
                f"as many per date): recall challenger {c.recall}, weighted {w.recall}; "
                f"false-positive rate challenger {c.false_positive_rate}, weighted "
                f"{w.false_positive_rate}"
                + (
                    f"; flagged but renewed: challenger {_pct(c.flagged_but_renewed_share)}, "
                    f"weighted {_pct(w.flagged_but_renewed_share)}"
                    if w.flagged_but_renewed_share is not None
                    else ""
                )
            )
        if self.importance:
            top = ", ".join(f"{name(f)} {v:+.3f}" for f, v in self.importance[:5])
            out.append(f"what it relies on most (held-out ROC AUC lost when shuffled): {top}")
        for e in self.explanations[:5]:
            out.append(
                f"  {e.account_id} {e.probability:.0%} on {e.as_of:%Y-%m-%d} "
                f"(baseline {e.baseline_probability:.0%}): {e.summary(name=name)}"
            )
        out += [f"note: {n}" for n in self.notes]
        return out


# --- features --------------------------------------------------------------------------


def features(store: Store, model: Model, dates: list[datetime]) -> pd.DataFrame:
    """The stored raw value of every scored metric per (account, date): one column each.

    Reads ``score_lines`` of this model version and scorecard; the history must be
    stored at ``dates`` (the backtest stores it).
    """
    names = [m for _, m, _ in model.scored_metrics()]
    lines = store.stored(LINES)
    t = lines.filter(
        lines.model_version == model.version,
        lines.scorecard == model.scorecard_name,
        lines.kind == "metric",
        lines.as_of.isin(list(dates)),
    )
    long = store.execute(t.select("account_id", "as_of", "name", "raw_value")).to_pandas()
    if long.empty:
        return pd.DataFrame(columns=["account_id", "as_of", *names])
    wide = long.pivot_table(
        index=["account_id", "as_of"],
        columns="name",
        values="raw_value",
        aggfunc="first",
        dropna=False,
    )
    wide = wide.reindex(columns=names).reset_index()
    wide.columns.name = None
    return wide.sort_values(["account_id", "as_of"], kind="stable").reset_index(drop=True)


def _matrix(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    return frame[cols].to_numpy(dtype=float, na_value=np.nan)


def _value_or_none(v: float) -> float | None:
    """A feature value for people and JSON: None when missing (NaN)."""
    return None if v is None or np.isnan(v) else float(v)


def _lift(lift: list[float | None]) -> str:
    return "-" if not lift or lift[0] is None else f"{lift[0]:.2f}x"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _fmt(v: float | None) -> str:
    if v is None:
        return "missing"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"


# --- training ----------------------------------------------------------------------------


def gradient_boosting(seed: int, directions: list[int]):
    """The challenger's unfitted booster, each feature's effect constrained to
    ``directions`` (-1, 0 or +1 per feature; see :func:`directions`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    # shallow trees, slow learning, large leaves and each feature's direction fixed:
    # churn books have few events, and an unconstrained booster learns their noise
    return HistGradientBoostingClassifier(
        max_iter=150,
        learning_rate=0.05,
        max_depth=2,
        min_samples_leaf=40,
        l2_regularization=1.0,
        monotonic_cst=directions,
        early_stopping=False,
        random_state=seed,
    )


def directions(model: Model, names: list[str], outcome: str = RISK) -> list[int]:
    """Per feature, the direction the model's anchors give its effect on ``outcome``.

    A metric whose 0-100 value rises with the raw value (``good`` above ``bad``,
    ascending ``points``, ``percentile`` with ``better: higher``) lowers the risk of
    churn as it rises (-1) and raises the chance of expansion (+1); the opposite for
    falling ones; 0 (free) when the shape is not monotone or the metric is a ``map``.
    """
    uses = {m: u for _, m, u in model.scored_metrics()}
    sign = 1 if outcome == GOOD else -1
    out = []
    for name in names:
        u = uses[name]
        rising = 0
        if u.bad is not None and u.good is not None:
            rising = 1 if u.good > u.bad else -1
        elif u.points is not None:
            ys = [p[1] for p in u.points]
            steps = np.diff(ys)
            rising = 1 if (steps >= 0).all() and steps.any() else -1 if (steps <= 0).all() else 0
            rising = rising if steps.any() else 0
        elif u.percentile is not None:
            rising = 1 if u.percentile.better == "higher" else -1
        out.append(sign * rising)
    return out


def one_thread():
    """A context in which OpenMP runs one thread: small fits run fastest so (and do not
    fight other work for cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def train_challenger(
    store: Store,
    model: Model,
    train_until: datetime,
    *,
    dates: list[datetime],
    horizon: str = "90d",
    outcome: str = RISK,
    seed: int = 0,
    pairs: pd.DataFrame | None = None,
) -> Challenger:
    """Fit the challenger on the observations at ``dates`` whose horizon closes by ``train_until``.

    Parameters
    ----------
    store, model
        The store with the model's history stored at ``dates`` (see ``backtest``).
    train_until
        No observation whose horizon ends after it is used: every label the
        challenger learns from is settled by then.
    dates
        The observation dates (the backtest's); later ones are ignored.
    horizon, outcome
        As in the backtest: the label is ``outcome`` within ``horizon`` after the date.
    seed
        Seeds the booster (and the orders sampled for large explanations).
    pairs
        An observation plan's (account, date) pairs (None: every account at each date).

    Returns
    -------
    Challenger
        The fitted model with its features and training medians.
    """
    train_dates = [d for d in dates if shift(d, horizon, +1) <= train_until]
    if not train_dates:
        raise ScoringError(
            f"no observation date's {horizon} horizon closes by {train_until:%Y-%m-%d}: "
            "nothing to train the challenger on",
            hint="choose a later `train_until` or earlier `dates`",
        )
    # outcomes after train_until are not even read: the fit cannot depend on them
    obs, _ = observations(
        store, model, train_dates, horizon, outcome, until=train_until, pairs=pairs
    )
    feats = features(store, model, train_dates)
    data = obs[["account_id", "as_of", "label"]].merge(feats, on=["account_id", "as_of"])
    names = [m for _, m, _ in model.scored_metrics() if m in data.columns]
    names = [m for m in names if data[m].notna().any()]
    y = data["label"].to_numpy(bool)
    if not names:
        raise ScoringError("the stored history holds no numeric metric value to train on")
    if y.sum() < MIN_TRAIN_POSITIVES or y.all():
        raise ScoringError(
            f"only {int(y.sum())} of {len(y):,} training observations had {outcome} within "
            f"{horizon} by {train_until:%Y-%m-%d}: too few to train the challenger",
            hint="choose a later `train_until` or earlier `dates`",
        )
    x = _matrix(data, names)
    with one_thread():
        est = gradient_boosting(seed, directions(model, names, outcome)).fit(x, y)
    baseline = np.array([_median(x[:, j]) for j in range(x.shape[1])])
    return Challenger(
        estimator=est,
        features=names,
        baseline=baseline,
        model_version=model.version,
        outcome=outcome,
        horizon=horizon,
        train_until=train_until,
        train_dates=sorted(set(data["as_of"])),
        train_observations=len(data),
        train_positives=int(y.sum()),
        train_accounts=int(data["account_id"].nunique()),
        seed=seed,
    )


def _median(col: np.ndarray) -> float:
    col = col[~np.isnan(col)]
    return float(np.median(col)) if len(col) else np.nan


# --- explanations --------------------------------------------------------------------------


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def _shapley(est, x: np.ndarray, base: np.ndarray, rng) -> tuple[np.ndarray, float]:
    """Baseline Shapley values of one row; they sum to f(x) - f(base) exactly."""
    k_all = len(x)
    moved = [j for j in range(k_all) if not _same(x[j], base[j])]
    phi = np.zeros(k_all)
    k = len(moved)
    if k == 0:
        return phi, float(est.predict_proba(base[None, :])[0, 1])
    if k <= EXACT_MAX:
        # every coalition of moved features, as a bit mask over ``moved``
        masks = np.arange(2**k)
        bits = (masks[:, None] >> np.arange(k)) & 1
        rows = np.repeat(base[None, :], len(masks), axis=0)
        for i, j in enumerate(moved):
            rows[bits[:, i] == 1, j] = x[j]
        f = est.predict_proba(rows)[:, 1]
        size = bits.sum(axis=1)
        weight = np.array(
            [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
        )
        for i, j in enumerate(moved):
            without = masks[bits[:, i] == 0]
            phi[j] = float(np.sum(weight[size[without]] * (f[without | (1 << i)] - f[without])))
        return phi, float(f[-1])
    # many moved features: average the path effects over seeded random orders
    orders = [rng.permutation(k) for _ in range(ORDERS)]
    rows = []
    for order in orders:
        r = base.copy()
        rows.append(r.copy())
        for i in order:
            r[moved[i]] = x[moved[i]]
            rows.append(r.copy())
    f = est.predict_proba(np.array(rows))[:, 1].reshape(ORDERS, k + 1)
    for n, order in enumerate(orders):
        steps = np.diff(f[n])
        for pos, i in enumerate(order):
            phi[moved[i]] += steps[pos] / ORDERS
    return phi, float(f[0, -1])


# --- evaluation ----------------------------------------------------------------------------


def split_dates(
    dates: list[datetime], train_until: datetime | None
) -> tuple[datetime, str, list[datetime]]:
    """Where training ends, the split in words, and the held-out dates (on or after
    ``train_until``; without it, the second half of ``dates``). Every figure reported
    beside the challenger is measured on the held-out dates only.

    >>> from datetime import datetime as D
    >>> split_dates([D(2025, m, 1) for m in range(1, 7)], None)[2][0]
    datetime.datetime(2025, 4, 1, 0, 0)
    """
    dates = sorted(dates)
    if train_until is None:
        if len(dates) < 4:
            raise ScoringError(
                f"{len(dates)} observation dates are too few to split into training and "
                "held-out halves",
                hint="give more `dates` or a `train_until`",
            )
        train_until = dates[len(dates) // 2]
        split = (
            f"trained on the first half of the observation dates (horizon closed by "
            f"{train_until:%Y-%m-%d}), evaluated on the second half"
        )
    else:
        split = f"trained on observations whose horizon closed by {train_until:%Y-%m-%d}"
    test_dates = [d for d in dates if d >= train_until]
    if not test_dates:
        raise ScoringError(
            f"no observation date on or after `train_until` {train_until:%Y-%m-%d}: "
            "nothing to evaluate the challenger on",
            hint="choose an earlier `train_until` or later `dates`",
        )
    return train_until, split, test_dates


def challenge(
    store: Store,
    model: Model,
    dates: list[datetime],
    *,
    horizon: str = "90d",
    train_until: datetime | None = None,
    outcome: str = RISK,
    reps: int = 200,
    seed: int = 0,
    top: int = 10,
    pairs: pd.DataFrame | None = None,
) -> ChallengerResult:
    """Train the challenger and measure it beside ``model`` on the held-out observations.

    Without ``train_until`` the observation dates are split in half: the challenger
    learns from the first half whose horizon has closed by the first date of the second
    half, and both are measured on the second half. History must be stored at
    ``dates`` (:func:`healthscore.evaluate.backtest.backtest` stores it).

    Raises :class:`~healthscore.errors.ScoringError` naming the parameters to change
    (``dates``, ``train_until``) when the split leaves nothing to train or evaluate on.

    ``top`` riskiest accounts by the challenger at the last held-out date are explained.
    With ``pairs`` (an observation plan's), only those (account, date) pairs are
    observed, in training and held out.
    """
    dates = sorted(dates)
    train_until, split, test_dates = split_dates(dates, train_until)
    ch = train_challenger(
        store,
        model,
        train_until,
        dates=dates,
        horizon=horizon,
        outcome=outcome,
        seed=seed,
        pairs=pairs,
    )
    obs, notes = observations(store, model, test_dates, horizon, outcome, pairs=pairs)
    notes = [f"challenger: {n}" for n in notes]
    feats = features(store, model, test_dates)
    test = obs.merge(feats, on=["account_id", "as_of"], how="inner")
    if len(test) < len(obs):
        notes.append(
            f"challenger: {len(obs) - len(test):,} held-out observations have no stored metrics"
        )
    risky = outcome != GOOD
    test["probability"] = ch.predict(test) if len(test) else np.array([])
    y = test["label"].to_numpy(bool)
    prob = test["probability"].to_numpy(float)
    weighted = -test["score"].to_numpy(float) if risky else test["score"].to_numpy(float)
    figures, draws = _paired_figures(test, y, prob, weighted, reps, seed)
    flag_band = "red" if risky else "green"
    result = ChallengerResult(
        model_label=model.label,
        model_version=model.version,
        outcome=outcome,
        horizon=horizon,
        train_until=train_until,
        train_dates=ch.train_dates,
        test_dates=sorted(set(test["as_of"])),
        features=ch.features,
        train_observations=ch.train_observations,
        train_positives=ch.train_positives,
        train_accounts=ch.train_accounts,
        observations=len(test),
        positives=int(y.sum()),
        accounts=int(test["account_id"].nunique()),
        roc_auc=interval(figures["roc_auc"], draws.get("roc_auc", [])),
        pr_auc=interval(figures["pr_auc"], draws.get("pr_auc", [])),
        weighted_roc_auc=interval(figures["weighted_roc_auc"], draws.get("weighted_roc_auc", [])),
        weighted_pr_auc=interval(figures["weighted_pr_auc"], draws.get("weighted_pr_auc", [])),
        differences=[
            Difference("roc_auc", interval(figures["diff_roc_auc"], draws.get("diff_roc_auc", []))),
            Difference("pr_auc", interval(figures["diff_pr_auc"], draws.get("diff_pr_auc", []))),
        ],
        split=split,
        notes=notes,
        predictions=test[
            [
                "account_id",
                "as_of",
                "segment",
                "score",
                "band",
                "label",
                "renewed",
                "probability",
                *ch.features,
            ]
        ].reset_index(drop=True),
        challenger=ch,
        flag_band=flag_band,
    )
    if len(test):
        result.figures = rank_figures(test, prob, weighted, flag_band, risky, reps, seed)
    if len(test):
        result.importance = _importance(ch, test, y, seed)
        last = test[test["as_of"] == test["as_of"].max()]
        risky_first = np.lexsort((last["account_id"].to_numpy(), -last["probability"].to_numpy()))
        result.explained_as_of = last["as_of"].iloc[0]
        result.explanations = ch.explain(last.iloc[risky_first[:top]])
    result.notes += _verdict(result)
    return result


def rank_figures(
    test: pd.DataFrame,
    prob: np.ndarray,
    weighted: np.ndarray,
    flag_band: str,
    risky: bool,
    reps: int,
    seed: int,
) -> dict[str, RankFigures]:
    """The backtest's figure set for the challenger (risk ``prob``) and the weighted
    model (risk ``weighted``) on the same held-out rows, with the same account
    resamples. The weighted model flags its ``flag_band``; the challenger flags the
    same number of its riskiest at each date (a tied run across the cut in part)."""
    y = test["label"].to_numpy(bool)
    neg = ~y
    dates = test["as_of"].to_numpy()
    red = (test["band"] == flag_band).to_numpy(bool)
    red_share = pd.Series(red.astype(float)).groupby(dates).transform("mean").to_numpy()
    renewed = test["renewed"].to_numpy(bool) if risky else None
    accounts = np.array(sorted(test["account_id"].unique()))
    rep = Replicates(account_index(accounts, test["account_id"]), len(accounts), reps, seed)
    out = {}
    for who, risk, flagged in (
        ("challenger", prob, riskiest_share(dates, prob, red_share)),
        ("weighted", weighted, red.astype(float)),
    ):
        top = {f"{share:.0%}": riskiest_share(dates, risk, share) for share in RISKIEST}
        draws = draws_of(
            {
                **{key: rep.ratio(part * y, y) for key, part in top.items()},
                "recall": rep.ratio(flagged * y, y),
                "fpr": rep.ratio(flagged * neg, neg),
            }
        )
        out[who] = RankFigures(
            recall_riskiest={
                key: interval(ratio((part * y).sum(), y.sum()), draws[key])
                for key, part in top.items()
            },
            lift=lift_by_decile(risk, y, positive_low=False),
            flagged=float(flagged.sum()),
            recall=interval(ratio((flagged * y).sum(), y.sum()), draws["recall"]),
            false_positive_rate=interval(ratio((flagged * neg).sum(), neg.sum()), draws["fpr"]),
            precision=ratio((flagged * y).sum(), flagged.sum()),
            flagged_but_renewed_share=(
                ratio((flagged * renewed).sum(), flagged.sum()) if renewed is not None else None
            ),
        )
    return out


def _importance(ch: Challenger, test: pd.DataFrame, y: np.ndarray, seed: int):
    """Per feature: how much the held-out ROC AUC drops when its values are shuffled."""
    if y.all() or not y.any():
        return []
    with one_thread():
        imp = _permutation_importance(ch, test, y, seed)
    pairs = zip(ch.features, map(float, imp.importances_mean), strict=True)
    return sorted(pairs, key=lambda t: (-t[1], t[0]))


def _permutation_importance(ch: Challenger, test: pd.DataFrame, y: np.ndarray, seed: int):
    from sklearn.inspection import permutation_importance

    return permutation_importance(
        ch.estimator,
        _matrix(test, ch.features),
        y,
        scoring="roc_auc",
        n_repeats=5,
        random_state=seed,
        n_jobs=1,
    )


def _paired_figures(test, y, prob, weighted, reps, seed):
    """The challenger's and the weighted model's ranking figures and their differences,
    on the held-out observations and on paired account resamples of them."""

    def figures(idx):
        yy = y[idx]
        f = {
            "roc_auc": rank_roc_auc(yy, prob[idx]),
            "pr_auc": step_average_precision(yy, prob[idx]),
            "weighted_roc_auc": rank_roc_auc(yy, weighted[idx]),
            "weighted_pr_auc": step_average_precision(yy, weighted[idx]),
        }
        for k in ("roc_auc", "pr_auc"):
            a, b = f[k], f[f"weighted_{k}"]
            f[f"diff_{k}"] = None if a is None or b is None else a - b
        return f

    point = figures(np.arange(len(test)))
    accounts = np.array(sorted(test["account_id"].unique()))
    rep = Replicates(account_index(accounts, test["account_id"]), len(accounts), reps, seed)
    f = {
        "roc_auc": rep.roc_auc(y, prob),
        "pr_auc": rep.average_precision(y, prob),
        "weighted_roc_auc": rep.roc_auc(y, weighted),
        "weighted_pr_auc": rep.average_precision(y, weighted),
    }
    for k in ("roc_auc", "pr_auc"):
        f[f"diff_{k}"] = f[k] - f[f"weighted_{k}"]
    return point, draws_of(f)


def _verdict(r: ChallengerResult) -> list[str]:
    """The comparison in words, and weak evidence said as such."""
    notes = []
    if r.positives < MIN_EVENTS:
        notes.append(
            f"challenger: only {r.positives} held-out observations had {r.outcome} in their "
            "horizon; too few to trust the comparison either way"
        )
    auc = r.roc_auc
    if auc.value is None:
        notes.append("challenger: no held-out observation had the outcome; nothing to judge")
        return notes
    if auc.lo is not None and auc.lo <= 0.5:
        notes.append(
            f"challenger: does not predict {r.outcome} better than chance on the held-out "
            f"dates (ROC AUC {auc.value:.2f}, 95 % interval {auc.lo:.2f}-{auc.hi:.2f} "
            "includes 0.5)"
        )
    d = next((x.value for x in r.differences if x.metric == "roc_auc"), None)
    if d is not None and d.value is not None and d.lo is not None:
        if d.lo > 0:
            notes.append(
                f"challenger: ranks {r.outcome} better than the weighted model on the held-out "
                f"dates (ROC AUC +{d.value:.2f}, interval {d.lo:+.2f} to {d.hi:+.2f}): worth "
                "looking at which metrics and shapes it uses; the live score stays the weighted "
                "model"
            )
        elif d.hi < 0:
            notes.append(
                f"challenger: ranks {r.outcome} worse than the weighted model on the held-out "
                f"dates (ROC AUC {d.value:+.2f}, interval {d.lo:+.2f} to {d.hi:+.2f})"
            )
        else:
            notes.append(
                f"challenger: no clear difference from the weighted model on the held-out dates "
                f"(ROC AUC {d.value:+.2f}, interval {d.lo:+.2f} to {d.hi:+.2f} includes 0)"
            )
    return notes


__all__ = [
    "CHALLENGER_ONLY",
    "Challenger",
    "ChallengerExplanation",
    "ChallengerResult",
    "Driver",
    "RankFigures",
    "challenge",
    "features",
    "train_challenger",
]
