"""snapshot: evaluate and calibrate a model on data with no history.

Place in the flow: beside ``backtest`` and ``calibrate``, for data sets that are one row
per customer with an outcome label and no event dates (a CRM export, IBM's Telco churn
sample). There is no time to split on, so:

- **Observations** are the accounts scored once, at the snapshot date ``as_of``
  (default: the day after the last outcome on file), stored in the history like any
  other date (:func:`healthscore.evaluate.observations.snapshot_observations`). The
  label is whether the account has the outcome (default ``churned``) in the outcomes
  table, whatever its date; an account with no outcome counts as not having it. Recall
  is the share of those accounts that are red at the snapshot; there is no lead time.
  The figures and intervals are the backtest's (:func:`healthscore.evaluate.backtest.measure`).
- **Calibration** is judged by stratified k-fold cross-validation (seeded): for each
  fold, :func:`healthscore.evaluate.calibrate.learn` fits anchors, directions, category scores
  and non-negative weights (and the bands) on the other folds only, and the fold is
  scored with them. The out-of-fold scores give the calibrated model's ROC AUC, and its
  bands the recall and false-positive rate, on accounts the fit never saw. The model
  file written is then fitted on all accounts.
- **One scale for the folds.** Each fold's scores come from a fit of their own (its
  anchors and weights), so a score of 40 in one fold is not the risk of a 40 in
  another. Before the folds are ranked together (ROC AUC, lift, the riskiest 10 %),
  each out-of-fold score is moved to the score the file's model gives at the same
  fitted risk: the logistic link of the outcome on the score
  (:func:`healthscore.evaluate.calibrate.score_link`), fitted on the fold's training
  accounts and on all accounts for the file. Within a fold the order is the fold's own
  score; the baselines' out-of-fold probabilities are pooled the same way (a
  probability is the same scale in every fold). Bands are the fold's own.
- **Baselines on the same folds and the same metrics:** an unconstrained logistic
  regression (each numeric metric standardised with a missing indicator, each
  categorical one one-hot; scikit-learn) shows what a free linear model reaches, and
  the gradient-boosted challenger what a non-linear one does. The current model, which
  learns nothing, is measured on all accounts.

Columns that give the answer away (a satisfaction score recorded after the churn, a
vendor's churn score, a churn reason) must not be metrics; the model decides what is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from healthscore.core.modelfile import save_model_text
from healthscore.errors import ScoringError
from healthscore.evaluate import backtest as bt
from healthscore.evaluate import calibrate as cal
from healthscore.evaluate.observations import (
    RISK,
    outcome_kind,
    snapshot_date,
    snapshot_observations,
)
from healthscore.evaluate.stats import (
    Estimate,
    Replicates,
    draws_of,
    interval,
    roc_auc,
)
from healthscore.model import HEALTH, Model, load_model_text
from healthscore.store import Store

FOLDS = 5
#: outcomes a health score is low before: the ones calibration can fit
RISKS = frozenset({"churned", "contracted"})
#: label of the observation step in reports
EVERY = "snapshot"


# --- evaluation -----------------------------------------------------------------------------


def _metrics(obs: pd.DataFrame, outcome: str, reps: int, seed: int) -> bt.Metrics:
    # every account with the outcome is judged by its band at the snapshot
    judged = obs[obs["label"]].reset_index(drop=True)
    start = obs["as_of"].min()
    return bt.measure(
        obs,
        obs,
        judged,
        outcome,
        "",
        start,
        start,
        reps=reps,
        seed=seed,
        judged=judged,
        snapshot=True,
    )


def evaluate_snapshot(
    obs: pd.DataFrame, outcome: str, *, reps: int = 200, seed: int = 0
) -> bt.Evaluation:
    """One model's figures on labelled snapshot observations, overall and per segment."""
    overall = _metrics(obs, outcome, reps, seed)
    segments = {}
    for seg, part in obs.groupby(obs["segment"].fillna("(none)"), sort=True):
        segments[str(seg)] = _metrics(part.reset_index(drop=True), outcome, reps, seed)
    return bt.Evaluation(outcome, overall, segments)


def _result(model, model_label, as_of, outcome, obs, reps, seed) -> bt.BacktestResult:
    r = bt.BacktestResult(
        model_label, model.version, as_of, as_of, EVERY, "-", "-", evaluations={}, snapshot=True
    )
    ev = evaluate_snapshot(obs, outcome, reps=reps, seed=seed)
    r.evaluations[outcome] = ev
    r.notes += bt.weak_evidence_notes(ev, outcome, model_label)
    r.verdict = bt.verdict(r.evaluations, model, snapshot=True)
    return r


def backtest(
    store: Store,
    model: Model,
    *,
    as_of: datetime | None = None,
    outcome: str = RISK,
    vs: Model | None = None,
    reps: int = 200,
    seed: int = 0,
) -> bt.BacktestResult:
    """How well the model's snapshot scores separate the accounts with the outcome."""
    outcome = outcome_kind(outcome)
    as_of = as_of or snapshot_date(store)
    obs = snapshot_observations(store, model, as_of, outcome)
    result = _result(model, model.label, as_of, outcome, obs, reps, seed)
    if vs is not None:
        other = snapshot_observations(store, vs, as_of, outcome)
        key = ["account_id", "as_of"]
        both = obs[key].merge(other[key])
        obs = obs.merge(both, on=key)
        other = other.merge(both, on=key)
        result = _result(model, model.label, as_of, outcome, obs, reps, seed)
        result.vs_label = vs.label
        result.vs_evaluations = {outcome: evaluate_snapshot(other, outcome, reps=reps, seed=seed)}
        result.differences[outcome] = bt.paired_differences(obs, other, outcome, reps, seed)
    return result


# --- calibration ----------------------------------------------------------------------------


@dataclass
class SnapshotCalibration:
    """What snapshot calibration learned and how it did out of fold."""

    model: Model
    yaml_text: str
    out: Path | None
    old_label: str
    old_version: str
    as_of: datetime
    outcome: str
    folds: int
    seed: int
    observations: int
    positives: int
    metrics: list[cal.MetricChange]
    pillars: dict[str, tuple[float, float]]
    old_bands: dict[str, float]
    new_bands: dict[str, float]
    auc: dict[str, Estimate]  # current, calibrated (cv), logistic (cv), challenger (cv)
    backtest: bt.BacktestResult  # calibrated (out of fold) vs the current model
    notes: list[str] = field(default_factory=list)
    old_red_share: float | None = None  # share of the accounts red: current model
    red_share: float | None = None  # with the new bands (fitted on all accounts)
    red_cap: float | None = None
    wanted_yellow: float | None = None  # the yellow the target recall needed, when capped

    @property
    def review(self) -> list[str]:
        """Flips, zeroed metrics and held fixed directions, each with its evidence."""
        return cal.review(self.metrics, self.outcome)

    def to_dict(self) -> dict:
        return {
            "model": self.model.label,
            "version": self.model.version,
            "out": str(self.out) if self.out else None,
            "as_of": self.as_of.isoformat(),
            "outcome": self.outcome,
            "folds": self.folds,
            "observations": self.observations,
            "positives": self.positives,
            "roc_auc": {k: vars(v) for k, v in self.auc.items()},
            "bands": {"old": self.old_bands, "new": self.new_bands},
            "weights": {c.metric: {"old": c.old_weight, "new": c.new_weight} for c in self.metrics},
            "red_share": {"old": self.old_red_share, "new": self.red_share, "cap": self.red_cap},
            "review": self.review,
            "notes": self.notes,
        }


def _band(score, forced, yellow, green) -> np.ndarray:
    free = np.where(score < yellow, "red", np.where(score < green, "yellow", "green"))
    return np.array([f if f is not None else b for f, b in zip(forced, free, strict=True)])


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    k = min(folds, int(y.sum()), int((~y).sum()))
    if k < 2:
        raise ScoringError(
            f"{int(y.sum())} of {len(y):,} accounts have the outcome: too few for cross-validation"
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def design(feats: list, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The metrics as a free linear model sees them, fitted on ``train`` rows: numeric
    ones standardised with a missing indicator, categorical ones one-hot."""
    cols_all = []
    for f in feats:
        if f.kind == "map" and f.text is not None:
            text = np.array(["(none)" if t is None else t for t in f.text], object)
            for cat in sorted(set(text[train]))[1:]:  # the first category is the reference
                col = (text == cat).astype(float)
                cols_all.append(col)
        else:
            x = f.raw if f.kind == "linear" or not np.isnan(f.raw).all() else f.stored
            miss = np.isnan(x)
            fill = np.nanmedian(x[train]) if (~miss[train]).any() else 0.0
            v = np.where(miss, fill, x)
            sd = v[train].std() or 1.0
            cols_all.append((v - v[train].mean()) / sd)
            if miss[train].any():
                cols_all.append(miss.astype(float))
    m = np.column_stack(cols_all) if cols_all else np.zeros((len(feats[0].raw), 0))
    return m[train], m


def _challenger_matrix(feats: list) -> tuple[np.ndarray, list[bool]]:
    cols, categorical = [], []
    for f in feats:
        if f.kind == "map" and f.text is not None:
            cats = sorted({t for t in f.text if t is not None})
            code = {c: i for i, c in enumerate(cats)}
            cols.append(np.array([np.nan if t is None else code[t] for t in f.text], float))
            categorical.append(True)
        else:
            cols.append(f.raw if not np.isnan(f.raw).all() else f.stored)
            categorical.append(False)
    return np.column_stack(cols), categorical


def _auc_estimate(y: np.ndarray, risk: np.ndarray, reps: int, seed: int) -> Estimate:
    """ROC AUC with its bootstrap interval: one observation per account, so the rows are
    the accounts resampled."""
    value = roc_auc(y, risk)
    if value is None:
        return Estimate(None)
    draws = draws_of({"auc": Replicates(np.arange(len(y)), len(y), reps, seed).roc_auc(y, risk)})
    return interval(value, draws.get("auc", []))


def calibrate(
    store: Store,
    model: Model,
    *,
    as_of: datetime | None = None,
    outcome: str = "churned",
    folds: int = FOLDS,
    target_recall: float = 0.85,
    max_red_share: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    reps: int = 200,
    challenger: bool = True,
    l2: float = cal.L2,
) -> SnapshotCalibration:
    """Calibrate ``model`` on snapshot data; judge it by stratified cross-validation.

    Returns the model fitted on all accounts (written to ``out`` when given) with the
    out-of-fold ROC AUC of the calibrated score beside the current model's and the
    baselines' (logistic regression and, with ``challenger``, gradient boosting). The
    bands keep the red share within ``max_red_share`` (see :func:`calibrate.red_share_cap`).
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from healthscore.evaluate.challenger import gradient_boosting, one_thread

    outcome = outcome_kind(outcome)
    if outcome not in RISKS:
        raise ScoringError(
            f"snapshot calibration fits a score that is low before a loss, and {outcome!r} "
            f"is not one: use {' or '.join(sorted(RISKS))}",
            hint="a snapshot backtest measures any outcome",
        )
    cal.check_target_recall(target_recall)
    cal.red_share_cap(0.0, max_red_share)  # a bad cap fails before any work
    model = model.scorecard(HEALTH)
    as_of = as_of or snapshot_date(store)
    obs = snapshot_observations(store, model, as_of, outcome)
    y = obs["label"].to_numpy(bool)
    if y.sum() < cal.MIN_POSITIVES or y.all():
        raise ScoringError(
            f"only {int(y.sum())} of {len(y):,} accounts have the outcome {outcome}: too few "
            "to calibrate on"
        )
    feats, holds = cal.calibration_features(store, model, obs, [as_of])
    gain = cal.ANCHOR_GAIN  # one observation per account
    old_green = float((obs["band"] == "green").mean())
    old_red_share = float((obs["band"] == "red").mean())
    cap = cal.red_share_cap(old_red_share, max_red_share)
    splits = _folds(y, folds, seed)
    oof = np.zeros(len(y))
    oof_risk = np.zeros(len(y))  # the fitted risk logit of each fold's own link
    oof_band = np.empty(len(y), dtype=object)
    lr = np.zeros(len(y))
    boost = np.zeros(len(y))
    xb, categorical = _challenger_matrix(feats)
    # the folds' fits run with one BLAS thread (as :func:`calibrate.learn`'s): their
    # matrices are small, a second thread only waits, and the figures are the same
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in splits:
            part = [f.take(train) for f in feats]
            hold_tr = holds.iloc[train].reset_index(drop=True)
            fitted = cal.learn(model, part, hold_tr, y[train], gain=gain, l2=l2)
            s_tr, f_tr = cal.learned_score(model, fitted, part, hold_tr)
            fold_bands = cal.fit_bands(s_tr, f_tr, y[train], old_green, target_recall, cap)
            yellow, green = fold_bands.yellow, fold_bands.green
            hold_te = holds.iloc[test].reset_index(drop=True)
            s_te, f_te = cal.learned_score(model, fitted, [f.take(test) for f in feats], hold_te)
            oof[test] = s_te
            a, b = cal.score_link(s_tr, y[train])
            oof_risk[test] = a + b * s_te / 100.0
            oof_band[test] = _band(s_te, f_te, yellow, green)
            x_tr, x_all = design(feats, train)
            clf = LogisticRegression(max_iter=5000)
            clf.fit(x_tr, y[train])
            lr[test] = clf.predict_proba(x_all[test])[:, 1]
            if challenger:
                est = gradient_boosting(seed, [0] * xb.shape[1])
                est.set_params(categorical_features=categorical)
                with one_thread():
                    est.fit(xb[train], y[train])
                    boost[test] = est.predict_proba(xb[test])[:, 1]
    # the file: fitted on every account
    fitted = cal.learn(model, feats, holds, y, gain=gain, l2=l2)
    if fitted.weights.sum() <= 0:
        raise ScoringError(
            f"no scored metric predicts {outcome}: every fitted weight is 0; keeping the "
            "current model"
        )
    score, forced = cal.learned_score(model, fitted, feats, holds)
    a, b = cal.score_link(score, y)
    if b < 0:  # the out-of-fold scores on the file's scale: the same fitted risk
        oof = 100.0 * (oof_risk - a) / b
    else:  # the file's score does not fall with the risk: no common scale to move to
        oof = -oof_risk
    bands = cal.fit_bands(score, forced, y, old_green, target_recall, cap)
    yellow, green = bands.yellow, bands.green
    notes = list(fitted.notes)
    if model.spec.segments and model.spec.segments.weights:
        notes.append(
            "per-segment pillar weights of the old model were dropped: one set of weights "
            "is fitted for all accounts (segments are still reported)"
        )
    if bands.capped:
        notes.append(
            f"the red-share cap bound the bands: {target_recall:.0%} recall needed yellow "
            f"{bands.wanted:g}, which makes more than {cap:.1%} of the accounts red; yellow "
            f"is {yellow:g} instead (recall {bands.recall:.1%}; set the cap with "
            f"`max_red_share`). The trade-off: {bands.tradeoff_text()}"
        )
    elif not bands.reached:
        notes.append(f"no band threshold reaches {target_recall:.0%} recall; yellow set to 99")
    header = (
        f"calibrated by `healthscore calibrate --snapshot` from {model.label!r} "
        f"({model.version[:12]}):\noutcome {outcome} (on file, undated) of {len(y):,} accounts "
        f"scored at {as_of:%Y-%m-%d}, {int(y.sum())} with the outcome; judged by {len(splits)}-"
        f"fold stratified cross-validation (seed {seed}).\nWeights are percent of the score "
        "(a pillar's weight is the sum of its metrics'), fitted by a non-negative\nlogistic "
        f"model; bands: yellow for {target_recall:.0%} recall with at most {cap:.1%} of the "
        "accounts red,\ngreen keeps the old green share."
    )
    text = cal.calibrated_model_text(
        model, fitted.changes, {"green": green, "yellow": yellow}, header, as_of
    )
    new = save_model_text(text, out, load_model_text, name="<calibrated model>")
    auc = {
        "current model": _auc_estimate(y, -obs["score"].to_numpy(float), reps, seed),
        "calibrated (out of fold)": _auc_estimate(y, -oof, reps, seed),
        "logistic regression (out of fold)": _auc_estimate(y, lr, reps, seed),
    }
    if challenger:
        auc["gradient boosting challenger (out of fold)"] = _auc_estimate(y, boost, reps, seed)
    gap = auc["logistic regression (out of fold)"].value - auc["calibrated (out of fold)"].value
    notes.append(
        f"the calibrated weighted score is {gap:+.3f} ROC AUC below an unconstrained logistic "
        "regression on the same metrics"
        if gap > 0
        else f"the calibrated weighted score matches or beats an unconstrained logistic "
        f"regression on the same metrics ({-gap:.3f} ROC AUC above it)"
    )
    calibrated = obs.assign(score=oof, band=oof_band)
    result = _result(new, new.label + " (out of fold)", as_of, outcome, calibrated, reps, seed)
    result.vs_label = model.label
    result.vs_evaluations = {outcome: evaluate_snapshot(obs, outcome, reps=reps, seed=seed)}
    result.differences[outcome] = bt.paired_differences(calibrated, obs, outcome, reps, seed)
    pillars = list(model.spec.pillars)
    return SnapshotCalibration(
        model=new,
        yaml_text=text,
        out=Path(out) if out else None,
        old_label=model.label,
        old_version=model.version,
        as_of=as_of,
        outcome=outcome,
        folds=len(splits),
        seed=seed,
        observations=len(y),
        positives=int(y.sum()),
        metrics=fitted.changes,
        pillars={
            p: (
                model.pillar_weights()[p],
                sum(c.new_weight for c in fitted.changes if c.pillar == p),
            )
            for p in pillars
        },
        old_bands={"green": model.spec.bands.green, "yellow": model.spec.bands.yellow},
        new_bands={"green": green, "yellow": yellow},
        auc=auc,
        backtest=result,
        notes=notes,
        old_red_share=old_red_share,
        red_share=bands.red_share,
        red_cap=cap,
        wanted_yellow=bands.wanted,
    )


__all__ = [
    "SnapshotCalibration",
    "backtest",
    "calibrate",
    "design",
    "evaluate_snapshot",
]
