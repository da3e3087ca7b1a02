"""Backtesting: how well a model's past scores would have predicted real outcomes.

Place in the flow: after ``history``; it reads the stored point-in-time scores of one
model version (computing the missing observation dates first, so nothing is scored
with hindsight) and the ``outcomes`` table, and measures:

- **Observations** are (account, observation date) pairs at ``start``, ``start + every``
  ... ``end``; the label is whether the outcome (default ``churned``) happens within
  ``horizon`` after the date. Accounts whose outcome came on or before the date are left
  out, and so are observations whose label window ends after the last outcome on file.
- **Churn recall** (what CS teams call churn prediction accuracy): of the churn events,
  the share whose account's latest stored score at or before churn - ``lead`` was red;
  and the share that was green then.
- **False-positive rate**: red observations without the outcome / observations without
  it; **precision of red**; **red but renewed**: red observations followed by a renewal
  within the horizon.
- **ROC AUC** and **PR AUC** of the score (lower score = more risk), **lift** per
  decile (riskiest first), **correlation** of score and outcome.
- **Median lead time**: for churners red at churn - lead, how long before the churn
  their uninterrupted red run began.
- The same for ``expanded`` (green predicts it) when expansion outcomes exist.

Confidence intervals come from a seeded bootstrap over accounts (an account's
observations are correlated, so accounts are resampled, not observations). With a
second model, both are measured on the same observations and the difference gets its
own paired interval. Weak evidence is said in words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from healthscore.core.time import dates_between, shift
from healthscore.engine import asof
from healthscore.engine.history import SCORES, ensure_tables
from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store

#: outcomes a score predicts by being low (red) and by being high (green)
RISK, GOOD = "churned", "expanded"
MIN_EVENTS = 20  # below this many outcome events, the evidence is called weak


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
class Metrics:
    """What a model achieved on one set of observations."""

    observations: int
    accounts: int
    positives: int  # observations with the outcome in their horizon
    events: int  # outcome events judged by recall
    recall: Estimate  # churn: red at event - lead; expansion: green
    opposite_share: Estimate  # churn: green at event - lead; expansion: red
    false_positive_rate: Estimate
    precision: Estimate
    roc_auc: Estimate
    pr_auc: Estimate
    correlation: Estimate
    base_rate: float | None
    lift: list[float | None] = field(default_factory=list)  # per decile, riskiest first
    median_lead_days: float | None = None
    flagged_but_renewed: int = 0  # red observations followed by a renewal (churn only)
    flagged_but_renewed_share: float | None = None


@dataclass
class Evaluation:
    """One model's metrics, overall and per segment, for one outcome."""

    outcome: str
    overall: Metrics
    segments: dict[str, Metrics] = field(default_factory=dict)


@dataclass
class Difference:
    """New minus current on the same observations, with a paired bootstrap interval."""

    metric: str
    value: Estimate


@dataclass
class BacktestResult:
    model_label: str
    model_version: str
    start: datetime
    end: datetime
    every: str
    horizon: str
    lead: str
    evaluations: dict[str, Evaluation]
    vs_label: str | None = None
    vs_evaluations: dict[str, Evaluation] | None = None
    differences: dict[str, list[Difference]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    snapshot: bool = False  # one observation per account at ``start``; labels without dates

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("start", "end"):
            d[k] = getattr(self, k).isoformat()
        return d


# --- data -----------------------------------------------------------------------------------


def stored_scores(store: Store, model: Model) -> pd.DataFrame:
    t = store.stored(SCORES)
    t = t.filter(
        t.model_version == model.version,
        t.scorecard == model.scorecard_name,
        t.score.notnull(),
    )
    df = store.execute(t.select("account_id", "as_of", "score", "band", "segment")).to_pandas()
    return df.sort_values(["account_id", "as_of"], kind="stable").reset_index(drop=True)


def outcome_events(store: Store) -> pd.DataFrame:
    df = store.execute(store.table("outcomes").select("account_id", "ts", "kind")).to_pandas()
    return df.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)


def within_horizon(obs: pd.DataFrame, events: pd.DataFrame, horizon: str) -> np.ndarray:
    """For each observation (account, as_of): an event in (as_of, as_of + horizon]."""
    if events.empty or obs.empty:
        return np.zeros(len(obs), dtype=bool)
    ends = obs["as_of"].map(lambda d: shift(d, horizon, +1))
    m = obs[["account_id", "as_of"]].assign(_end=ends.values, _i=np.arange(len(obs)))
    j = m.merge(events[["account_id", "ts"]], on="account_id", how="inner")
    hit = j[(j["ts"] > j["as_of"]) & (j["ts"] <= j["_end"])]["_i"].unique()
    out = np.zeros(len(obs), dtype=bool)
    out[hit] = True
    return out


def observations(
    store: Store,
    model: Model,
    dates: list[datetime],
    horizon: str,
    outcome: str = RISK,
    until: datetime | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Scored (account, date) pairs with their label and whether a renewal followed.

    With ``until``, only outcomes up to then are read, as if the table ended there:
    observations whose horizon ends later are left out (a fit never sees later data).
    """
    notes = []
    stored = stored_scores(store, model)
    obs = stored[stored["as_of"].isin(dates)].reset_index(drop=True)
    out = outcome_events(store)
    if until is not None:
        out = out[out["ts"] <= until].reset_index(drop=True)
    events = out[out["kind"] == outcome]
    if out.empty:
        raise ScoringError("the outcomes table is empty: load renewals and churns first")
    if obs.empty:
        raise ScoringError(
            f"no account has a stored score at the {len(dates)} observation dates "
            f"({min(dates):%Y-%m-%d} .. {max(dates):%Y-%m-%d})",
            hint="choose dates when the accounts existed and had data",
        )
    last = out["ts"].max()
    open_window = obs["as_of"].map(lambda d: shift(d, horizon, +1) > last).astype(bool)
    if open_window.any():
        notes.append(
            f"{int(open_window.sum()):,} observations left out: their {horizon} horizon ends "
            f"after the last outcome on file ({last:%Y-%m-%d})"
        )
        obs = obs[~open_window.values].reset_index(drop=True)
    # an account whose outcome already happened is no longer a prediction target
    first = events.groupby("account_id")["ts"].min()
    done = np.zeros(len(obs), dtype=bool)
    if not events.empty:
        done = obs["account_id"].map(first).le(obs["as_of"]).fillna(False).to_numpy(bool)
    obs = obs[~done].reset_index(drop=True)
    obs["label"] = within_horizon(obs, events, horizon)
    obs["renewed"] = within_horizon(obs, out[out["kind"] == "renewed"], horizon)
    return obs, notes


# --- metrics ---------------------------------------------------------------------------------


def _auc(y: np.ndarray, risk: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, risk)) if 0 < y.sum() < len(y) else None


def _ap(y: np.ndarray, risk: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, risk)) if 0 < y.sum() < len(y) else None


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b else None


def _corr(score: np.ndarray, y: np.ndarray) -> float | None:
    if len(y) < 3 or y.all() or not y.any() or np.std(score) == 0:
        return None
    return float(np.corrcoef(score, y.astype(float))[0, 1])


def lift_by_decile(score: np.ndarray, y: np.ndarray, positive_low: bool) -> list[float | None]:
    if not len(y) or not y.any():
        return []
    order = np.argsort(score if positive_low else -score, kind="stable")
    base = y.mean()
    return [
        float(y[part].mean() / base) if len(part) else None for part in np.array_split(order, 10)
    ]


def _point_figures(obs: pd.DataFrame, flagged: np.ndarray, risk: np.ndarray) -> dict:
    y = obs["label"].to_numpy(bool)
    neg = ~y
    return {
        "false_positive_rate": _ratio((flagged & neg).sum(), neg.sum()),
        "precision": _ratio((flagged & y).sum(), flagged.sum()),
        "roc_auc": _auc(y, risk),
        "pr_auc": _ap(y, risk),
        "correlation": _corr(obs["score"].to_numpy(float), y),
    }


def _event_view(stored: pd.DataFrame, events: pd.DataFrame, lead: str, start, end) -> pd.DataFrame:
    """Per outcome event judged: the account's latest stored score at or before ts - lead."""
    ev = events.copy()
    ev["at"] = ev["ts"].map(lambda d: shift(d, lead))
    ev = ev[(ev["at"] >= start) & (ev["at"] <= end)]
    if ev.empty or stored.empty:
        return ev.assign(band=pd.Series(dtype=object), score=np.nan, lead_days=np.nan)
    left = ev.sort_values("at").reset_index(drop=True)
    right = stored.sort_values("as_of")[["account_id", "as_of", "band", "score"]]
    m = pd.merge_asof(left, right, left_on="at", right_on="as_of", by="account_id")
    return m


def _red_run_start(stored: pd.DataFrame, account: str, until: datetime, band: str):
    """When the account's uninterrupted run of ``band`` scores ending at ``until`` began."""
    s = stored[(stored["account_id"] == account) & (stored["as_of"] <= until)]
    start = None
    for d, b in zip(s["as_of"].to_numpy()[::-1], s["band"].to_numpy()[::-1], strict=True):
        if b != band:
            break
        start = d
    return start


def _evaluate(
    obs: pd.DataFrame,
    stored: pd.DataFrame,
    events: pd.DataFrame,
    outcome: str,
    lead: str,
    start: datetime,
    end: datetime,
    boot: list[np.ndarray],
    accounts: np.ndarray,
    judged: pd.DataFrame | None = None,
) -> Metrics:
    """One model's figures; ``judged`` (snapshot data) gives the events and the band each
    was judged by directly, instead of the stored score at event - lead (no lead time)."""
    risky = outcome != GOOD
    snapshot = judged is not None
    flag_band = "red" if risky else "green"
    opposite_band = "green" if risky else "red"
    flagged = (obs["band"] == flag_band).to_numpy(bool)
    score = obs["score"].to_numpy(float)
    risk = -score if risky else score
    figures = _point_figures(obs, flagged, risk)
    if judged is None:
        judged = _event_view(stored, events, lead, start, end)
        judged = judged[judged["band"].notna()] if "band" in judged else judged
    recall = _ratio((judged["band"] == flag_band).sum(), len(judged)) if len(judged) else None
    opposite = _ratio((judged["band"] == opposite_band).sum(), len(judged)) if len(judged) else None
    # bootstrap over accounts: the same resamples for every figure
    acc_index = {a: i for i, a in enumerate(accounts)}
    obs_acc = obs["account_id"].map(acc_index).to_numpy()
    ev_acc = judged["account_id"].map(acc_index).to_numpy() if len(judged) else np.array([])
    draws: dict[str, list[float]] = {k: [] for k in (*figures, "recall", "opposite")}
    obs_rows = rows_by_group(obs_acc, len(accounts))
    ev_rows = rows_by_group(ev_acc, len(accounts))
    for sample in boot:
        o = np.concatenate([obs_rows[i] for i in sample]) if len(obs) else np.array([], int)
        sub = obs.iloc[o]
        f = _point_figures(sub, flagged[o], risk[o])
        for k, v in f.items():
            if v is not None:
                draws[k].append(v)
        e = np.concatenate([ev_rows[i] for i in sample]) if len(judged) else np.array([], int)
        if len(e):
            bands = judged["band"].to_numpy()[e]
            draws["recall"].append(float((bands == flag_band).mean()))
            draws["opposite"].append(float((bands == opposite_band).mean()))

    def est(key, value):
        xs = draws[key]
        if value is None or len(xs) < 20:
            return Estimate(value)
        lo, hi = np.percentile(xs, [2.5, 97.5])
        return Estimate(value, float(lo), float(hi))

    leads = []
    if risky and len(judged) and not snapshot:
        for r in judged[judged["band"] == "red"].itertuples():
            began = _red_run_start(stored, r.account_id, r.as_of, "red")
            if began is not None:
                leads.append((r.ts - pd.Timestamp(began)).total_seconds() / 86_400)
    renewed = (flagged & obs["renewed"].to_numpy(bool)) if risky else np.zeros(len(obs), bool)
    y = obs["label"].to_numpy(bool)
    return Metrics(
        observations=len(obs),
        accounts=int(obs["account_id"].nunique()),
        positives=int(y.sum()),
        events=len(judged),
        recall=est("recall", recall),
        opposite_share=est("opposite", opposite),
        false_positive_rate=est("false_positive_rate", figures["false_positive_rate"]),
        precision=est("precision", figures["precision"]),
        roc_auc=est("roc_auc", figures["roc_auc"]),
        pr_auc=est("pr_auc", figures["pr_auc"]),
        correlation=est("correlation", figures["correlation"]),
        base_rate=float(y.mean()) if len(y) else None,
        lift=lift_by_decile(score, y, risky),
        median_lead_days=float(np.median(leads)) if leads else None,
        flagged_but_renewed=int(renewed.sum()),
        flagged_but_renewed_share=_ratio(renewed.sum(), flagged.sum()) if risky else None,
    )


def rows_by_group(groups: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def bootstrap_accounts(n_accounts: int, reps: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_accounts, n_accounts) for _ in range(reps)]


def evaluate(
    store: Store,
    model: Model,
    dates: list[datetime],
    *,
    outcome: str = RISK,
    horizon: str = "90d",
    lead: str = "30d",
    reps: int = 200,
    seed: int = 0,
    keep: pd.DataFrame | None = None,
) -> tuple[Evaluation, pd.DataFrame, list[str]]:
    """Measure one model on stored history at ``dates`` (history must be stored)."""
    obs, notes = observations(store, model, dates, horizon, outcome)
    if keep is not None:  # the same observations as another model
        obs = obs.merge(keep, on=["account_id", "as_of"], how="inner")
    stored = stored_scores(store, model)
    out = outcome_events(store)
    events = out[out["kind"] == outcome]
    start, end = min(dates), max(dates)
    accounts = np.array(sorted(obs["account_id"].unique()))
    boot = bootstrap_accounts(len(accounts), reps, seed)
    overall = _evaluate(obs, stored, events, outcome, lead, start, end, boot, accounts)
    segments = {}
    for seg, part in obs.groupby(obs["segment"].fillna("(none)"), sort=True):
        part = part.reset_index(drop=True)
        seg_accounts = np.array(sorted(part["account_id"].unique()))
        seg_events = events[events["account_id"].isin(seg_accounts)]
        seg_boot = bootstrap_accounts(len(seg_accounts), reps, seed)
        segments[str(seg)] = _evaluate(
            part, stored, seg_events, outcome, lead, start, end, seg_boot, seg_accounts
        )
    return Evaluation(outcome, overall, segments), obs, notes


def backtest(
    store: Store,
    model: Model,
    start: datetime,
    end: datetime,
    *,
    every: str = "1mo",
    horizon: str = "90d",
    lead: str = "30d",
    vs: Model | None = None,
    reps: int = 200,
    seed: int = 0,
    progress: Callable[[str, float], None] | None = None,
    scorer=None,
) -> BacktestResult:
    """Backtest ``model`` (and ``vs``) on point-in-time history from ``start`` to ``end``.

    Missing history dates are computed first (``scorer`` backfills a model over dates;
    by default :func:`healthscore.engine.asof.backfill`).
    """

    ensure_tables(store)
    dates = dates_between(start, end, every)
    backfill = scorer or (lambda m: asof.backfill(store, m, start, end, every, progress=progress))
    backfill(model)
    if vs is not None:
        backfill(vs)
    outcomes = set(outcome_events(store)["kind"])
    kinds = [RISK] + ([GOOD] if GOOD in outcomes else [])
    result = BacktestResult(
        model.label, model.version, start, end, every, horizon, lead, evaluations={}
    )
    for kind in kinds:
        ev, obs, notes = evaluate(
            store, model, dates, outcome=kind, horizon=horizon, lead=lead, reps=reps, seed=seed
        )
        result.notes += [n for n in notes if n not in result.notes]
        if vs is not None:
            ev_vs, obs_vs, _ = evaluate(
                store, vs, dates, outcome=kind, horizon=horizon, lead=lead, reps=reps, seed=seed
            )
            both = obs[["account_id", "as_of"]].merge(obs_vs[["account_id", "as_of"]])
            if len(both) < len(obs) or len(both) < len(obs_vs):
                ev, obs, _ = evaluate(
                    store,
                    model,
                    dates,
                    outcome=kind,
                    horizon=horizon,
                    lead=lead,
                    reps=reps,
                    seed=seed,
                    keep=both,
                )
                ev_vs, obs_vs, _ = evaluate(
                    store,
                    vs,
                    dates,
                    outcome=kind,
                    horizon=horizon,
                    lead=lead,
                    reps=reps,
                    seed=seed,
                    keep=both,
                )
            result.vs_label = vs.label
            result.vs_evaluations = result.vs_evaluations or {}
            result.vs_evaluations[kind] = ev_vs
            result.differences[kind] = _paired(obs, obs_vs, kind, reps, seed)
        result.evaluations[kind] = ev
        result.notes += _weak(ev, kind, model.label)
    return result


def _paired(
    a: pd.DataFrame, b: pd.DataFrame, outcome: str, reps: int, seed: int
) -> list[Difference]:
    """AUC and false-positive-rate differences (a - b) with a paired account bootstrap."""
    key = ["account_id", "as_of"]
    m = a[[*key, "score", "band", "label"]].merge(
        b[[*key, "score", "band"]], on=key, suffixes=("", "_b")
    )
    risky = outcome != GOOD
    sign = -1.0 if risky else 1.0
    flag = "red" if risky else "green"
    y = m["label"].to_numpy(bool)

    def figures(idx):
        yy = y[idx]
        auc_a = _auc(yy, sign * m["score"].to_numpy(float)[idx])
        auc_b = _auc(yy, sign * m["score_b"].to_numpy(float)[idx])
        neg = ~yy
        fpr_a = _ratio(((m["band"].to_numpy()[idx] == flag) & neg).sum(), neg.sum())
        fpr_b = _ratio(((m["band_b"].to_numpy()[idx] == flag) & neg).sum(), neg.sum())
        return {
            "roc_auc": None if auc_a is None or auc_b is None else auc_a - auc_b,
            "false_positive_rate": None if fpr_a is None or fpr_b is None else fpr_a - fpr_b,
        }

    point = figures(np.arange(len(m)))
    accounts = np.array(sorted(m["account_id"].unique()))
    rows = rows_by_group(
        m["account_id"].map({a: i for i, a in enumerate(accounts)}).to_numpy(), len(accounts)
    )
    draws = {k: [] for k in point}
    for sample in bootstrap_accounts(len(accounts), reps, seed):
        idx = np.concatenate([rows[i] for i in sample]) if len(m) else np.array([], int)
        for k, v in figures(idx).items():
            if v is not None:
                draws[k].append(v)
    out = []
    for k, v in point.items():
        if v is None or len(draws[k]) < 20:
            out.append(Difference(k, Estimate(v)))
        else:
            lo, hi = np.percentile(draws[k], [2.5, 97.5])
            out.append(Difference(k, Estimate(v, float(lo), float(hi))))
    return out


def _weak(ev: Evaluation, outcome: str, label: str) -> list[str]:
    """Plain words when the evidence does not support a claim."""
    m = ev.overall
    notes = []
    if m.events < MIN_EVENTS:
        notes.append(
            f"{outcome}: only {m.events} outcome events were judged; too few to trust these "
            "figures either way"
        )
    auc = m.roc_auc
    if auc.value is None:
        notes.append(f"{outcome}: no observation had the outcome in its horizon; nothing to judge")
    elif auc.lo is not None and auc.lo <= 0.5:
        notes.append(
            f"{outcome}: the score of {label!r} does not predict {outcome} better than chance "
            f"(ROC AUC {auc.value:.2f}, 95 % interval {auc.lo:.2f}-{auc.hi:.2f} includes 0.5)"
        )
    return notes
