"""Backtesting: how well a model's past scores would have predicted real outcomes.

Place in the flow: after ``engine.history``; it stores the point-in-time scores of one
model version at the observation dates (computing the missing ones first, so nothing
is scored with hindsight), takes its observations from
:mod:`healthscore.evaluate.observations` and measures them with
:mod:`healthscore.evaluate.stats`:

- **Observations** are the (account, observation date) pairs of an
  :class:`~healthscore.evaluate.observations.ObservationPlan` from ``start`` to ``end``
  (by default every account at ``start``, ``start + every`` ... ``end``; or each account
  on its contract anniversaries, or a list of pairs); the label is whether the outcome
  (default ``churned``) happens within ``horizon`` after the date (see
  :func:`healthscore.evaluate.observations.observations`).
- **Churn recall** (what CS teams call churn prediction accuracy): of the churn events,
  the share whose account's latest stored score at or before churn - ``lead`` was red;
  and the share that was green then. With anniversaries or a list of pairs, only the
  plan's own observations of the account count as its scores.
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

from healthscore.core.time import dates_between, shift_each  # noqa: F401 (callers build grids)
from healthscore.engine import asof
from healthscore.engine.history import ensure_tables
from healthscore.evaluate.observations import (
    GOOD,
    RISK,
    ObservationPlan,
    Observed,
    observations,
    outcome_events,
    stored_scores,
)
from healthscore.evaluate.stats import (
    Difference,
    Estimate,
    Replicates,
    account_index,
    average_precision,
    draws_of,
    interval,
    ratio,
    roc_auc,
)
from healthscore.model import Model
from healthscore.store import Store

MIN_EVENTS = 20  # below this many outcome events, the evidence is called weak
#: the riskiest shares of the book whose recall is reported ("the riskiest 10 %")
RISKIEST = (0.1, 0.2)


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
    caught: int = 0  # events whose account was flagged at event - lead
    flagged_renewed_accounts: int = 0  # accounts flagged at an observation that renewed
    #: of the observations with the outcome, the share in the riskiest 10 % / 20 % of the
    #: book at their date (tied scores shared), whatever the bands
    recall_riskiest: dict[str, Estimate] = field(default_factory=dict)


@dataclass
class Evaluation:
    """One model's metrics, overall and per segment, for one outcome."""

    outcome: str
    overall: Metrics
    segments: dict[str, Metrics] = field(default_factory=dict)


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
    verdict: str = ""  # the figures a CS leader asks for first, in one plain paragraph
    plan: str = ""  # the observation plan in words ("every 1mo", ...)
    observed: Observed | None = None  # the plan's dates and pairs (not in to_dict)

    def to_dict(self) -> dict:
        observed, self.observed = self.observed, None
        try:
            d = asdict(self)
        finally:
            self.observed = observed
        d.pop("observed")
        for k in ("start", "end"):
            d[k] = getattr(self, k).isoformat()
        return d


# --- metrics ---------------------------------------------------------------------------------


def _corr(score: np.ndarray, y: np.ndarray) -> float | None:
    if len(y) < 3 or y.all() or not y.any() or np.std(score) == 0:
        return None
    return float(np.corrcoef(score, y.astype(float))[0, 1])


def _tied_spans(risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, where its run of tied risks starts and ends when the rows are ordered
    riskiest first (positions ``start <= p < end``)."""
    import pandas as pd

    r = pd.Series(-np.asarray(risk, float))
    return r.rank(method="min").to_numpy() - 1, r.rank(method="max").to_numpy()


def lift_by_decile(score: np.ndarray, y: np.ndarray, positive_low: bool) -> list[float | None]:
    """Outcome rate per tenth of the observations, riskiest first, over the overall rate.

    Tied scores are shared: a run of equal scores that straddles a tenth's edge counts in
    each tenth in proportion to its part there, so the figure does not depend on the
    order of the rows.

    >>> lift_by_decile(np.array([1.0] * 10 + [2.0] * 10), np.array([1] * 10 + [0] * 10), True)
    [2.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    >>> lift_by_decile(np.zeros(20), np.array([1] * 10 + [0] * 10), True)  # all tied
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    y = np.asarray(y, float)
    n = len(y)
    if not n or not y.any():
        return []
    start, end = _tied_spans(-np.asarray(score, float) if positive_low else score)
    edges = np.arange(11) * n / 10
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    part = np.clip(np.minimum(end[:, None], hi) - np.maximum(start[:, None], lo), 0, None)
    share = part / (end - start)[:, None]  # each row's share in each tenth
    rate = (share * y[:, None]).sum(axis=0) / (n / 10)
    return [round(float(x), 12) for x in rate / y.mean()]


def riskiest_share(dates: np.ndarray, risk: np.ndarray, share: float) -> np.ndarray:
    """Per observation, how much of it is in the riskiest ``share`` of the book at its
    date (1 inside, 0 outside; a run of tied risks across the cut is shared)."""
    import pandas as pd

    df = pd.DataFrame({"d": dates, "r": -np.asarray(risk, float)})
    g = df.groupby("d")["r"]
    start = g.rank(method="min").to_numpy() - 1
    end = g.rank(method="max").to_numpy()
    slots = share * g.transform("size").to_numpy()
    return np.clip(slots - start, 0, end - start) / (end - start)


def _point_figures(obs: pd.DataFrame, flagged: np.ndarray, risk: np.ndarray) -> dict:
    y = obs["label"].to_numpy(bool)
    neg = ~y
    return {
        "false_positive_rate": ratio((flagged & neg).sum(), neg.sum()),
        "precision": ratio((flagged & y).sum(), flagged.sum()),
        "roc_auc": roc_auc(y, risk),
        "pr_auc": average_precision(y, risk),
        "correlation": _corr(obs["score"].to_numpy(float), y),
    }


def judge_events(stored: pd.DataFrame, events: pd.DataFrame, lead: str, start, end) -> pd.DataFrame:
    """Per outcome event judged: the account's latest stored score at or before ts - lead
    (``as_of``, ``band``, ``score`` and the ``segment`` it was scored in then), for events
    whose ts - lead falls between ``start`` and ``end``; events with no score then are
    not judged."""
    ev = events.copy()
    ev["at"] = shift_each(ev["ts"], lead)
    ev = ev[(ev["at"] >= start) & (ev["at"] <= end)]
    if ev.empty or stored.empty:
        return ev.assign(
            band=pd.Series(dtype=object), score=np.nan, segment=pd.Series(dtype=object)
        ).iloc[0:0]
    left = ev.sort_values("at").reset_index(drop=True)
    right = stored.sort_values("as_of")[["account_id", "as_of", "band", "score", "segment"]]
    m = pd.merge_asof(left, right, left_on="at", right_on="as_of", by="account_id")
    return m[m["band"].notna()].reset_index(drop=True)


def _segment_key(segments: pd.Series) -> pd.Series:
    return segments.fillna("(none)").astype(str)


def _red_run_start(stored: pd.DataFrame, account: str, until: datetime, band: str):
    """When the account's uninterrupted run of ``band`` scores ending at ``until`` began."""
    s = stored[(stored["account_id"] == account) & (stored["as_of"] <= until)]
    start = None
    for d, b in zip(s["as_of"].to_numpy()[::-1], s["band"].to_numpy()[::-1], strict=True):
        if b != band:
            break
        start = d
    return start


def measure(
    obs: pd.DataFrame,
    stored: pd.DataFrame,
    events: pd.DataFrame,
    outcome: str,
    lead: str,
    start: datetime,
    end: datetime,
    *,
    reps: int,
    seed: int,
    judged: pd.DataFrame | None = None,
    snapshot: bool = False,
) -> Metrics:
    """One model's figures on labelled observations, with account-bootstrap intervals.

    Recall judges each outcome event in ``events`` by the account's latest ``stored``
    score at or before the event - ``lead`` (between ``start`` and ``end``); ``judged``
    gives the judged events directly instead (see :func:`judge_events`; with
    ``snapshot``, the band each was judged by at the snapshot, with no lead time).

    The bootstrap resamples every account the figures rest on: those observed and those
    whose events are judged, so an interval covers the same events as its estimate.
    """
    risky = outcome != GOOD
    flag_band = "red" if risky else "green"
    opposite_band = "green" if risky else "red"
    flagged = (obs["band"] == flag_band).to_numpy(bool)
    score = obs["score"].to_numpy(float)
    risk = -score if risky else score
    figures = _point_figures(obs, flagged, risk)
    if judged is None:
        judged = judge_events(stored, events, lead, start, end)
    recall = ratio((judged["band"] == flag_band).sum(), len(judged)) if len(judged) else None
    opposite = ratio((judged["band"] == opposite_band).sum(), len(judged)) if len(judged) else None
    # bootstrap over accounts, every replicate at once: the same resamples for every figure
    accounts = np.array(sorted(set(obs["account_id"]) | set(judged["account_id"])))
    rep = Replicates(account_index(accounts, obs["account_id"]), len(accounts), reps, seed)
    y_obs = obs["label"].to_numpy(bool)
    neg = ~y_obs
    resampled = {
        "false_positive_rate": rep.ratio(flagged & neg, neg),
        "precision": rep.ratio(flagged & y_obs, flagged),
        "roc_auc": rep.roc_auc(y_obs, risk),
        "pr_auc": rep.average_precision(y_obs, risk),
        "correlation": rep.correlation(score, y_obs),
    }
    top = {
        f"{share:.0%}": riskiest_share(obs["as_of"].to_numpy(), risk, share) for share in RISKIEST
    }
    for key, part in top.items():
        resampled[f"riskiest {key}"] = rep.ratio(part * y_obs, y_obs)
    if len(judged):
        ev = rep.of(account_index(accounts, judged["account_id"]))
        judged_bands = judged["band"].to_numpy()
        every = np.ones(len(judged), bool)
        resampled["recall"] = ev.ratio(judged_bands == flag_band, every)
        resampled["opposite"] = ev.ratio(judged_bands == opposite_band, every)
    draws = draws_of(resampled)

    def est(key, value):
        return interval(value, draws.get(key, []))

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
        flagged_but_renewed_share=ratio(renewed.sum(), flagged.sum()) if risky else None,
        caught=int((judged["band"] == flag_band).sum()),
        flagged_renewed_accounts=int(obs.loc[renewed, "account_id"].nunique()),
        recall_riskiest={
            key: est(f"riskiest {key}", ratio((part * y).sum(), y.sum()))
            for key, part in top.items()
        },
    )


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
    pairs: pd.DataFrame | None = None,
    span: tuple[datetime, datetime] | None = None,
) -> tuple[Evaluation, pd.DataFrame, list[str]]:
    """Measure one model on stored history at ``dates`` (history must be stored); with
    ``pairs`` (a plan's), only those (account, date) pairs are observed, and an event is
    judged by the account's latest planned observation. Events are judged when their
    date - ``lead`` falls in ``span`` (default: the first to the last of ``dates``)."""
    obs, notes = observations(store, model, dates, horizon, outcome, pairs=pairs)
    if keep is not None:  # the same observations as another model
        obs = obs.merge(keep, on=["account_id", "as_of"], how="inner")
    stored = stored_scores(store, model)
    if pairs is not None:
        stored = stored.merge(pairs[["account_id", "as_of"]], on=["account_id", "as_of"])
    out = outcome_events(store)
    events = out[out["kind"] == outcome]
    start, end = span or (min(dates), max(dates))
    judged = judge_events(stored, events, lead, start, end)
    if keep is not None:  # events of the accounts both models observe
        judged = judged[judged["account_id"].isin(obs["account_id"])].reset_index(drop=True)

    def measured(o: pd.DataFrame, j: pd.DataFrame) -> Metrics:
        return measure(o, stored, events, outcome, lead, start, end, reps=reps, seed=seed, judged=j)

    overall = measured(obs, judged)
    # an event counts in the segment its account was scored in when it was judged, so
    # the segments' events add up to the overall count
    seg_obs, seg_events = _segment_key(obs["segment"]), _segment_key(judged["segment"])
    segments = {
        seg: measured(
            obs[seg_obs == seg].reset_index(drop=True),
            judged[seg_events == seg].reset_index(drop=True),
        )
        for seg in sorted(set(seg_obs) | set(seg_events))
    }
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
    plan: ObservationPlan | None = None,
) -> BacktestResult:
    """Backtest ``model`` (and ``vs``) on point-in-time history from ``start`` to ``end``.

    ``plan`` says which (account, date) pairs are observed and the lead (default: the
    grid every ``every``, judged ``lead`` before the outcome; a plan wins over both).
    Missing history dates are computed first (``scorer`` backfills a model over dates;
    by default :func:`healthscore.engine.asof.backfill_dates`).
    """

    ensure_tables(store)
    plan = plan or ObservationPlan.grid(every, lead)
    every, lead = plan.every, plan.lead
    seen = plan.observed(store, start, end)
    dates = seen.dates
    backfill = scorer or (lambda m: asof.backfill_dates(store, m, dates, progress=progress))
    backfill(model)
    if vs is not None:
        backfill(vs)
    outcomes = set(outcome_events(store)["kind"])
    kinds = [RISK] + ([GOOD] if GOOD in outcomes else [])
    result = BacktestResult(
        model.label,
        model.version,
        start,
        end,
        every,
        horizon,
        lead,
        evaluations={},
        plan=plan.describe(),
        observed=seen,
        notes=list(seen.notes),
    )

    def measured(m: Model, kind: str, keep: pd.DataFrame | None = None):
        return evaluate(
            store,
            m,
            dates,
            outcome=kind,
            horizon=horizon,
            lead=lead,
            reps=reps,
            seed=seed,
            keep=keep,
            pairs=seen.pairs,
            # a plan's own dates need not reach the range's ends: judge over the range
            span=(start, end) if seen.pairs is not None else None,
        )

    for kind in kinds:
        ev, obs, notes = measured(model, kind)
        result.notes += [n for n in notes if n not in result.notes]
        if vs is not None:
            ev_vs, obs_vs, _ = measured(vs, kind)
            both = obs[["account_id", "as_of"]].merge(obs_vs[["account_id", "as_of"]])
            if len(both) < len(obs) or len(both) < len(obs_vs):
                # the two models scored different observations: measure both on the common ones
                ev, obs, _ = measured(model, kind, both)
                ev_vs, obs_vs, _ = measured(vs, kind, both)
            result.vs_label = vs.label
            result.vs_evaluations = result.vs_evaluations or {}
            result.vs_evaluations[kind] = ev_vs
            result.differences[kind] = paired_differences(obs, obs_vs, kind, reps, seed)
        result.evaluations[kind] = ev
        result.notes += weak_evidence_notes(ev, kind, model.label)
    result.verdict = verdict(result.evaluations, model)
    return result


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def verdict(evaluations: dict[str, Evaluation], model: Model, *, snapshot: bool = False) -> str:
    """What the backtest found, in the words a CS leader uses: how many churners the
    flag band caught and how early, how many flagged accounts renewed anyway, how much of
    the churn sat in the riskiest tenth of the book, and whether the ranking is worth
    anything (a ROC AUC whose interval includes 0.5 is called chance; one wholly below
    it, inverted)."""
    out = []
    for kind, ev in evaluations.items():
        m = ev.overall
        risky = kind != GOOD
        flag = model.band_name("red" if risky else "green")
        who = "accounts that churned" if risky else "expansions"
        if kind not in (RISK, GOOD):
            who = f"{kind} events"
        if m.events:
            first = f"{flag.capitalize()} caught {m.caught:,} of {m.events:,} {who}"
            if m.median_lead_days is not None and not snapshot:
                first += f", a median of {m.median_lead_days:.0f} days ahead"
        else:
            first = f"No {who} were judged"
        if risky:
            first += f"; {m.flagged_renewed_accounts:,} {flag} accounts renewed anyway"
        sentences = [first + "."]
        top = m.recall_riskiest
        if top.get("10%") is not None and top["10%"].value is not None:
            end = {RISK: "about to churn", GOOD: "about to expand"}.get(kind, f"with {kind}")
            sentences.append(
                f"Ranked by score, the {'riskiest' if risky else 'healthiest'} 10% of the "
                f"book held {_share(top['10%'].value)} of those {end}"
                + (f" (20%: {_share(top['20%'].value)})" if "20%" in top else "")
                + "."
            )
        auc = m.roc_auc
        if auc.value is not None:
            a = f"ROC AUC {auc.value:.2f}" + (
                f", 95 % interval {auc.lo:.2f}-{auc.hi:.2f}" if auc.lo is not None else ""
            )
            if auc.hi is not None and auc.hi < 0.5:
                words = f"The score is inverted for {kind} ({a}): do not act on it as it is."
            elif auc.lo is not None and auc.lo <= 0.5:
                words = f"The score ranks {kind} no better than chance ({a})."
            else:
                how = (
                    "strongly" if auc.value >= 0.8 else "usefully" if auc.value >= 0.7 else "weakly"
                )
                words = f"The score ranks {kind} {how} ({a})."
            sentences.append(words)
        out.append(" ".join(sentences))
    return " ".join(out)


def paired_differences(
    a: pd.DataFrame, b: pd.DataFrame, outcome: str, reps: int, seed: int
) -> list[Difference]:
    """ROC AUC and false-positive-rate of ``a`` minus ``b`` on the observations both have
    (labelled frames with ``score`` and ``band``), with a paired account bootstrap."""
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
        auc_a = roc_auc(yy, sign * m["score"].to_numpy(float)[idx])
        auc_b = roc_auc(yy, sign * m["score_b"].to_numpy(float)[idx])
        neg = ~yy
        fpr_a = ratio(((m["band"].to_numpy()[idx] == flag) & neg).sum(), neg.sum())
        fpr_b = ratio(((m["band_b"].to_numpy()[idx] == flag) & neg).sum(), neg.sum())
        return {
            "roc_auc": None if auc_a is None or auc_b is None else auc_a - auc_b,
            "false_positive_rate": None if fpr_a is None or fpr_b is None else fpr_a - fpr_b,
        }

    point = figures(np.arange(len(m)))
    accounts = np.array(sorted(m["account_id"].unique()))
    rep = Replicates(account_index(accounts, m["account_id"]), len(accounts), reps, seed)
    score_a, score_b = sign * m["score"].to_numpy(float), sign * m["score_b"].to_numpy(float)
    neg = ~y
    flag_a, flag_b = m["band"].to_numpy() == flag, m["band_b"].to_numpy() == flag
    draws = draws_of(
        {
            "roc_auc": rep.roc_auc(y, score_a) - rep.roc_auc(y, score_b),
            "false_positive_rate": rep.ratio(flag_a & neg, neg) - rep.ratio(flag_b & neg, neg),
        }
    )
    return [Difference(k, interval(v, draws.get(k, []))) for k, v in point.items()]


def weak_evidence_notes(ev: Evaluation, outcome: str, label: str) -> list[str]:
    """Plain words when the evidence does not support a claim: too few events judged, no
    outcome at all, a ROC AUC whose interval includes chance, or one clearly below it (a
    score that ranks the wrong way round)."""
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
    elif auc.hi is not None and auc.hi < 0.5:
        likely = "higher" if outcome != GOOD else "lower"
        notes.append(
            f"{outcome}: the score of {label!r} is inverted: accounts with {likely} scores "
            f"were more likely to be {outcome} (ROC AUC {auc.value:.2f}, 95 % interval "
            f"{auc.lo:.2f}-{auc.hi:.2f}, all below 0.5); check the direction of its metrics "
            "(`good`/`bad` anchors swapped?) and the outcome's meaning before using it"
        )
    elif auc.lo is not None and auc.lo <= 0.5:
        notes.append(
            f"{outcome}: the score of {label!r} does not predict {outcome} better than chance "
            f"(ROC AUC {auc.value:.2f}, 95 % interval {auc.lo:.2f}-{auc.hi:.2f} includes 0.5)"
        )
    return notes


# --- the last run, kept -----------------------------------------------------------------------

#: every backtest run's figures, kept per model version (the dashboard shows the last)
RUNS = "backtest_runs"
RUN_COLUMNS = {
    "run_id": "string",
    "model_version": "string",
    "model_label": "string",
    "run_at": "timestamp",
    "start": "timestamp",
    "end": "timestamp",
    "figures": "string",  # BacktestResult.to_dict() as JSON
}


def record_run(store: Store, result: BacktestResult, *, at: datetime | None = None) -> None:
    """Keep ``result``'s figures in the store (table ``backtest_runs``), so that the
    dashboard's model page shows the last backtest of the version it serves."""
    import json
    import uuid
    from datetime import UTC

    import pyarrow as pa

    if not store.has_table(RUNS):
        store.create_table(RUNS, RUN_COLUMNS)
    row = {
        "run_id": uuid.uuid4().hex[:12],
        "model_version": result.model_version,
        "model_label": result.model_label,
        "run_at": at or datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        "start": result.start,
        "end": result.end,
        "figures": json.dumps(result.to_dict(), default=str, allow_nan=False),
    }
    types = {"string": pa.string(), "timestamp": pa.timestamp("us")}
    schema = pa.schema([(c, types[t]) for c, t in RUN_COLUMNS.items()])
    store.insert(RUNS, pa.Table.from_pylist([row], schema=schema))


def last_run(store: Store, model_version: str) -> dict | None:
    """The figures of the latest backtest of ``model_version`` (``to_dict``'s shape, plus
    ``run_at``), or None when none was kept."""
    import json

    if not store.has_table(RUNS):
        return None
    t = store.stored(RUNS)
    t = t.filter(t.model_version == model_version).order_by(t.run_at.desc()).limit(1)
    found = store.execute(t).to_pylist()
    if not found:
        return None
    figures = json.loads(found[0]["figures"])
    figures["run_at"] = found[0]["run_at"].isoformat()
    return figures
