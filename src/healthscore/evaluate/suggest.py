"""A first model from the data: the metrics a CS analyst would write by hand, proposed.

Place in the flow: ``evaluate``, beside ``calibrate`` (which learns the weights of the
model this writes). It reads the loaded tables and the outcomes up to a date D
(``until``) through the store, computes candidate metrics with the engine's timeline
(:mod:`healthscore.engine.timeline`), and writes a normal, validated, commented model
file through :mod:`healthscore.core.modelfile`.

What it proposes, each only where its table has rows (an empty table is no evidence):

- **usage_events**: per event type, the 28-day count and its change vs the previous
  28 days; all events, active users, seat activation (active users / seats), feature
  breadth, days since last activity;
- **subscriptions** (in force at D): MRR, ARR, seats, billing period, extra numeric
  columns (e.g. a discount), days to renewal, ARR change vs 90 days before;
- **tickets**, **invoices**, **surveys** (per kind), **touchpoints**: the usual counts,
  recencies and latest answers; **accounts**: tenure, and every extra account column
  (numbers and yes/no as they are, text with few values as a category);

then, for each candidate:

- **anchors from the data's percentiles**: ``bad``/``good`` are the 10th and 90th
  percentiles of the values at D (:func:`healthscore.evaluate.percentiles.fit_points`);
  a category's ``map`` scores each value by its outcome rate;
- **its univariate ROC AUC** against the outcome (default churn within 90 days) at
  observation dates every 4 weeks back from D whose horizon closed by D (``snapshot``:
  every account once at D, labelled by whether it has the outcome on file by D),
  labelled as backtest and calibrate label them; the direction is the
  one the AUC supports (or the metric's natural one when there are no outcomes) and
  the weight grows with the AUC's distance from 0.5;
- **strongly correlated metrics** (|Spearman ρ| ≥ 0.9 on the observations): the one
  with the weaker AUC is scored with weight 0 and a comment naming the metric it moves
  with. It is counted once (the suggested score is the same as without it), and
  ``calibrate`` gives it weight only where it tells something the other does not: a
  near-duplicate can still carry a difference that matters (having any dependents
  beside how many; total charges beside tenure, i.e. the price paid), which a
  non-negative weighted sum can only use when both are in it.

Outcomes dated after D are never read: the file depends only on the data and the
outcomes up to D (the same inputs give the same bytes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from healthscore.core.limits import MAX_NAME_CHARS
from healthscore.core.modelfile import (
    block_map,
    dump_document,
    flow_map,
    number,
    save_model_text,
)
from healthscore.core.tables import TABLES
from healthscore.core.time import dates_between, parse_duration, shift, today
from healthscore.engine.timeline import raw_expr
from healthscore.errors import ScoringError
from healthscore.evaluate.observations import label_observations, outcome_kind
from healthscore.evaluate.percentiles import fit_points
from healthscore.evaluate.snapshot import RISKS
from healthscore.evaluate.stats import rank_roc_auc
from healthscore.model import Model, load_model_text
from healthscore.model.schema import SCORE_COLUMNS
from healthscore.store import Store

#: the window of the per-event-type counts and of their change
WINDOW = "28d"
#: the window of the sparser tables (tickets, invoices, touchpoints)
SLOW = "90d"
#: event types proposed at most (the most frequent)
MAX_EVENT_TYPES = 30
#: distinct values a text column may have to be proposed as a category
MAX_CATEGORIES = 12
#: |Spearman ρ| from which two metrics count as one
MERGE_RHO = 0.9
#: the percentiles the anchors come from
ANCHOR_QUANTILES = (0.1, 0.9)
#: metrics that predict the outcome by its timing rather than by health: said in the file
TIMING = {
    "days_to_renewal": "churn happens at a renewal, so a near renewal predicts churn within "
    "the horizon by timing,\nnot by health: remove this line to score health alone (it "
    "stays beside the score)",
}
#: the share of the accounts at D the suggested bands put in red, and in green
RED_SHARE, GREEN_SHARE = 0.15, 0.4
#: observation dates at most (monthly back from D minus the horizon)
MAX_DATES = 12
#: the order of the pillars in the file
PILLARS = {
    "usage": "Usage: what the customer does with the product",
    "relationship": "Relationship: how long, how often we talk, what they tell us",
    "support": "Support: tickets",
    "financial": "Financial: contract terms and invoices",
    "profile": "Profile: the account's own columns",
}


@dataclass
class Candidate:
    """A proposed metric before the data has judged it."""

    name: str
    spec: dict
    pillar: str
    healthy: str  # higher | lower | category
    missing: str | None = None  # a missing-data policy other than reweight
    note: str | None = None


@dataclass
class SuggestedMetric:
    """A candidate as the data judged it."""

    name: str
    pillar: str
    kind: str  # linear | map
    healthy: str  # higher | lower (linear), category (map)
    auc: float | None  # the metric read the healthy way, on the observations
    observed: int  # observations with a value
    bad: float | None = None
    good: float | None = None
    map: dict[str, float] | None = None
    weight: float = 1.0
    merged_into: str | None = None  # moves with this metric (weight 0)
    rho: float | None = None


@dataclass
class Suggestion:
    """The suggested model, what it was judged on, and what was left out and why."""

    model: Model
    text: str
    out: Path | None
    as_of: datetime
    outcome: str
    horizon: str
    snapshot: bool
    dates: list[datetime]
    observations: int
    positives: int
    metrics: list[SuggestedMetric]
    skipped: dict[str, str] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def scored(self) -> list[SuggestedMetric]:
        """The metrics weighted in the suggested score (the near-duplicates have weight 0)."""
        return [m for m in self.metrics if m.merged_into is None]

    def to_dict(self) -> dict:
        return {
            "out": str(self.out) if self.out else None,
            "version": self.model.version,
            "as_of": self.as_of.isoformat(),
            "outcome": self.outcome,
            "horizon": None if self.snapshot else self.horizon,
            "snapshot": self.snapshot,
            "observations": self.observations,
            "positives": self.positives,
            "metrics": [
                {
                    "metric": m.name,
                    "pillar": m.pillar,
                    "auc": m.auc,
                    "healthy": m.healthy,
                    "weight": m.weight if m.merged_into is None else 0,
                    "merged_into": m.merged_into,
                }
                for m in self.metrics
            ],
            "skipped": self.skipped,
            "empty_tables": self.empty,
            "notes": self.notes,
        }


# --- candidates -------------------------------------------------------------------------------


def _slug(text: str, room: int = MAX_NAME_CHARS) -> str:
    """The stem of a metric name for ``text``: lower-case letters, digits and single
    ``_``, starting with a letter, at most ``room`` characters (what the name's suffix
    leaves of :data:`~healthscore.core.limits.MAX_NAME_CHARS`); a longer one is cut and
    ends in a digest of the whole, so two that begin alike stay apart."""
    s = re.sub(r"[^a-z0-9]+", "_", str(text).strip().lower()).strip("_") or "x"
    s = s if s[0].isalpha() else f"x_{s}"
    if len(s) > room:
        digest = hashlib.sha1(s.encode()).hexdigest()[:6]
        s = f"{s[: room - 7].rstrip('_')}_{digest}"
    return s


def _label(column: str) -> str:
    text = column.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _distinct(store: Store, table: str, column: str, limit: int) -> list[tuple[str, int]]:
    """The most frequent non-null values of a column with their counts, most first."""
    t = store.table(table)
    expr = t.filter(t[column].notnull()).group_by(column).aggregate(n=lambda x: x.count())
    rows = store.execute(expr.order_by([expr.n.desc(), expr[column]]).limit(limit + 1))
    return list(zip(rows[column].to_pylist(), rows["n"].to_pylist(), strict=True))


def _non_null(store: Store, table: str, column: str) -> bool:
    t = store.table(table)
    n = store.execute(t.filter(t[column].notnull()).limit(1).count().name("n").as_table())
    return bool(n["n"][0].as_py())


def _agg(frm, aggregate, *, label, where=None, window=None, time=None, change=None, **kw):
    spec = {"label": label}
    spec.update({"from": frm})
    if where:
        spec["where"] = where
    spec["aggregate"] = aggregate
    if time:
        spec["time"] = time
    if window:
        spec["window"] = window
    if change:
        spec["change_vs"] = change
    spec.update(kw)
    return spec


def candidates(store: Store, loaded: set[str]) -> tuple[list[Candidate], dict, list[str]]:
    """The metrics worth proposing for the tables that hold rows; the extra account
    columns to declare; and notes on what was passed over."""
    out: list[Candidate] = []
    notes: list[str] = []
    columns: dict[str, dict[str, str]] = {}
    w, slow = WINDOW, SLOW

    def add(name, spec, pillar, healthy, **kw):
        while name in {c.name for c in out}:  # an account column named like a metric
            name += "_"
        out.append(Candidate(name, spec, pillar, healthy, **kw))

    if "usage_events" in loaded:
        add(
            "events_28d",
            _agg("usage_events", "count()", label="Events (28 days)", window=w),
            "usage",
            "higher",
        )
        add(
            "events_change_28d",
            _agg(
                "usage_events",
                "count()",
                label="Events change (28 days)",
                window=w,
                change="previous",
                if_previous_zero=1,
                unit="%",
            ),
            "usage",
            "higher",
        )
        if _non_null(store, "usage_events", "user_id"):
            add(
                "active_users_28d",
                _agg(
                    "usage_events",
                    "count_distinct(user_id)",
                    label="Active users (28 days)",
                    window=w,
                ),
                "usage",
                "higher",
            )
            if "subscriptions" in loaded and _non_null(store, "subscriptions", "seats"):
                add(
                    "seat_activation",
                    {
                        "label": "Seat activation",
                        "unit": "%",
                        "formula": "active_users_28d / seats_in_force",
                    },
                    "usage",
                    "higher",
                )
        add(
            "days_since_activity",
            _agg(
                "usage_events",
                "days_since(max(ts))",
                label="Days since last use",
                unit="days",
                fill=365,
            ),
            "usage",
            "lower",
        )
        types = _distinct(store, "usage_events", "event", MAX_EVENT_TYPES)
        if types:
            add(
                "event_types_28d",
                _agg(
                    "usage_events",
                    "count_distinct(event)",
                    label="Event types used (28 days)",
                    window=w,
                ),
                "usage",
                "higher",
            )
        if len(types) > MAX_EVENT_TYPES:
            notes.append(
                f"usage_events has more than {MAX_EVENT_TYPES} event types: the "
                f"{MAX_EVENT_TYPES} most frequent get metrics"
            )
        seen: set[str] = set()
        room = MAX_NAME_CHARS - len("_change_28d")
        for value, _ in types[:MAX_EVENT_TYPES]:
            slug, n = _slug(value, room), 1
            while slug in seen:  # two event names alike once slugged: "View", "view"
                n += 1
                slug = _slug(f"{value} {n}", room)
            seen.add(slug)
            where = f"event = {_quote(value)}"
            add(
                f"{slug}_28d",
                _agg("usage_events", "count()", label=f"{value} (28 days)", where=where, window=w),
                "usage",
                "higher",
            )
            add(
                f"{slug}_change_28d",
                _agg(
                    "usage_events",
                    "count()",
                    label=f"{value} change (28 days)",
                    where=where,
                    window=w,
                    change="previous",
                    if_previous_zero=1,
                    unit="%",
                ),
                "usage",
                "higher",
            )
    if "subscriptions" in loaded:
        have = store.columns("subscriptions")
        for col, label, unit in [
            ("mrr", "MRR", "USD"),
            ("arr", "ARR", "USD"),
            ("seats", "Seats", None),
        ]:
            if _non_null(store, "subscriptions", col):
                name = "seats_in_force" if col == "seats" else col
                spec = _agg("subscriptions", f"sum({col})", label=label)
                if unit:
                    spec["unit"] = unit
                add(name, spec, "financial", "higher")
        if _non_null(store, "subscriptions", "billing_period_months"):
            add(
                "billing_period_months",
                _agg(
                    "subscriptions",
                    "max(billing_period_months)",
                    label="Billing period",
                    unit="months",
                ),
                "financial",
                "higher",
            )
        if _non_null(store, "subscriptions", "end_date"):
            add(
                "days_to_renewal",
                _agg(
                    "subscriptions",
                    "days_until(min(end_date))",
                    label="Days to renewal",
                    unit="days",
                ),
                "financial",
                "higher",
            )
        if _non_null(store, "subscriptions", "arr"):
            add(
                "arr_change_90d",
                _agg(
                    "subscriptions",
                    "sum(arr)",
                    label="ARR change (90 days)",
                    change="90d",
                    unit="%",
                ),
                "financial",
                "higher",
                missing="neutral",
            )
        canonical = TABLES["subscriptions"].columns
        for col, typ in have.items():
            if col in canonical or not _numeric(typ) or not _non_null(store, "subscriptions", col):
                continue
            columns.setdefault("subscriptions", {})[col] = _declared(typ)
            add(
                f"sub_{_slug(col, MAX_NAME_CHARS - 4)}",
                _agg("subscriptions", f"avg({col})", label=col.replace("_", " ").capitalize()),
                "financial",
                "higher",
            )
    if "tickets" in loaded:
        add("open_tickets", _agg("tickets", "count()", label="Open tickets"), "support", "lower")
        add(
            "tickets_90d",
            _agg("tickets", "count()", label="Tickets (90 days)", window=slow),
            "support",
            "lower",
        )
        if _non_null(store, "tickets", "priority"):
            add(
                "urgent_tickets_90d",
                _agg(
                    "tickets",
                    "count()",
                    label="High or urgent tickets (90 days)",
                    where="priority IN ('high', 'urgent', 'critical')",
                    window=slow,
                ),
                "support",
                "lower",
            )
        if _non_null(store, "tickets", "escalated_at"):
            add(
                "escalations_90d",
                _agg(
                    "tickets",
                    "count()",
                    label="Escalations (90 days)",
                    where="escalated_at IS NOT NULL",
                    window=slow,
                ),
                "support",
                "lower",
            )
        if _non_null(store, "tickets", "closed_at"):
            add(
                "median_resolution_hours_90d",
                _agg(
                    "tickets",
                    "median(hours_between(opened_at, closed_at))",
                    label="Median time to resolve (90 days)",
                    unit="hours",
                    time="closed_at",
                    window=slow,
                ),
                "support",
                "lower",
            )
        if _non_null(store, "tickets", "csat"):
            add(
                "ticket_csat_180d",
                _agg("tickets", "avg(csat)", label="Ticket CSAT (180 days)", window="180d"),
                "support",
                "higher",
            )
    if "invoices" in loaded:
        add(
            "late_invoices_90d",
            _agg(
                "invoices",
                "count()",
                label="Late invoices (90 days)",
                where="paid_at IS NULL OR paid_at > due_at",
                window=slow,
            ),
            "financial",
            "lower",
        )
        add(
            "days_late_90d",
            _agg(
                "invoices",
                "avg(days_between(due_at, coalesce(paid_at, due_at)))",
                label="Average days paid late (90 days)",
                unit="days",
                window=slow,
            ),
            "financial",
            "lower",
        )
    if "surveys" in loaded:
        for kind, _ in _distinct(store, "surveys", "kind", MAX_CATEGORIES)[:MAX_CATEGORIES]:
            slug = _slug(kind, MAX_NAME_CHARS - len("_latest"))
            add(
                f"{slug}_latest",
                _agg(
                    "surveys",
                    "last(score)",
                    label=f"{str(kind).upper()} (latest, 180 days)",
                    where=f"kind = {_quote(kind)}",
                    window="180d",
                ),
                "relationship",
                "higher",
                missing="neutral",
            )
    if "touchpoints" in loaded:
        add(
            "days_since_touchpoint",
            _agg(
                "touchpoints",
                "days_since(max(ts))",
                label="Days since last touchpoint",
                unit="days",
                fill=365,
            ),
            "relationship",
            "lower",
        )
        add(
            "touchpoints_90d",
            _agg("touchpoints", "count()", label="Touchpoints (90 days)", window=slow),
            "relationship",
            "higher",
        )
        if _non_null(store, "touchpoints", "executive"):
            add(
                "exec_touchpoints_90d",
                _agg(
                    "touchpoints",
                    "count()",
                    label="Executive touchpoints (90 days)",
                    where="executive",
                    window=slow,
                ),
                "relationship",
                "higher",
            )
    add(
        "tenure_days",
        {"label": "Tenure", "unit": "days", "formula": "days_since(created_at)"},
        "relationship",
        "higher",
    )
    canonical = TABLES["accounts"].columns
    for col, typ in store.columns("accounts").items():
        if col in canonical:
            continue
        name = _slug(col)
        if name in SCORE_COLUMNS:  # an account column named "score": not a metric's name
            name = _slug(f"account {col}")
        if _numeric(typ) or typ == "boolean":
            columns.setdefault("accounts", {})[col] = _declared(typ)
            add(name, {"label": _label(col), "column": col}, "profile", "higher")
        elif typ == "string":
            values = _distinct(store, "accounts", col, MAX_CATEGORIES)
            if 2 <= len(values) <= MAX_CATEGORIES:
                columns.setdefault("accounts", {})[col] = "string"
                add(name, {"label": _label(col), "column": col}, "profile", "category")
            else:
                many = "more than " if len(values) > MAX_CATEGORIES else ""
                notes.append(
                    f"accounts.{col}: {many}{min(len(values), MAX_CATEGORIES)} distinct "
                    "values: not proposed as a category"
                )
    return out, columns, notes


def _numeric(typ: str) -> bool:
    return typ.startswith(("int", "float", "decimal", "uint"))


def _declared(typ: str) -> str:
    return (
        "boolean"
        if typ == "boolean"
        else "int64"
        if typ.startswith(("int", "uint"))
        else ("float64")
    )


# --- observations ------------------------------------------------------------------------------


def _default_until(store: Store, loaded: set[str]) -> datetime:
    """The day after the latest usage event or outcome on file (today at the latest)."""
    latest = []
    for name in ("usage_events", "outcomes"):
        if name in loaded:
            t = store.table(name)
            v = store.execute(t.aggregate(last=t.ts.max()))["last"][0].as_py()
            if v is not None:
                latest.append(v)
    if not latest:
        return today()
    d = max(latest)
    return min(datetime(d.year, d.month, d.day) + timedelta(days=1), today())


def _outcomes(store: Store, until: datetime):
    """The outcomes table up to ``until`` (later rows are filtered in the store: never read)."""
    t = store.table("outcomes")
    expr = t.filter(t.ts <= until).select("account_id", "ts", "kind")
    df = store.execute(expr).to_pandas()
    return df.sort_values(["account_id", "ts", "kind"], kind="stable").reset_index(drop=True)


def _first(store: Store, table: str):
    t = store.table(table)
    time = TABLES[table].time
    return store.execute(t.aggregate(first=t[time].min()))["first"][0].as_py()


def _observation_dates(store, loaded, events, until, horizon, every):
    """The observation dates (up to :data:`MAX_DATES`, each ``every`` back from D, whose
    ``horizon`` closes by D, not before the first usage event or outcome) and the dates to
    compute: those and D. With a step in days or weeks every computed date lies on one
    grid back from D, which the timeline computes in one pass (the dates in between are
    computed too: cheaper than dates off the grid)."""
    first = [f for f in (_first(store, n) for n in loaded & {"usage_events"}) if f]
    if events is not None:
        first.append(events["ts"].min().to_pydatetime())
    n, unit = parse_duration(every)
    start = shift(shift(until, horizon, -1), f"{n * (MAX_DATES - 1)}{unit}", -1)
    if first:
        start = max(start, min(first))
    if start > until:
        return [], [until]
    steps = dates_between(start, until, every)  # until, until - every, ... back to start
    dates = [d for d in steps if shift(d, horizon, +1) <= until][-MAX_DATES:]
    if unit == "mo":  # calendar months are not evenly spaced: compute only what is used
        return dates, sorted({*dates, until})
    return dates, [d for d in steps if not dates or d >= dates[0]]


# --- suggest ---------------------------------------------------------------------------------


def _probe_model(cands: list[Candidate], columns: dict) -> Model:
    """The candidates as one model (every metric scored, weight 1) to compute them with."""
    doc = block_map([("name", "probe")])
    if columns:
        doc["columns"] = block_map((t, flow_map(c.items())) for t, c in columns.items())
    doc["metrics"] = block_map((c.name, flow_map(c.spec.items())) for c in cands)
    uses = []
    for c in cands:
        if c.healthy == "category":
            uses.append((c.name, flow_map([("weight", 1), ("map", flow_map([("x", 50)]))])))
        else:
            uses.append((c.name, flow_map([("weight", 1), ("bad", 0), ("good", 1)])))
    doc["pillars"] = block_map([("all", block_map([("weight", 1), ("metrics", block_map(uses))]))])
    return load_model_text(dump_document(doc), "<suggest>")


def suggest(
    store: Store,
    *,
    until: datetime | None = None,
    outcome: str = "churned",
    horizon: str = "90d",
    every: str = "4w",
    snapshot: bool = False,
    out: str | Path | None = None,
) -> Suggestion:
    """Propose a model from the loaded tables, judged against ``outcome`` up to ``until``."""
    import pandas as pd

    outcome = outcome_kind(outcome)
    names = [n for n in TABLES if n not in ("accounts", "users", "flags")]
    empty = set(store.empty_tables(["accounts", *names]))
    if "accounts" in empty:
        raise ScoringError("the accounts table is empty: load accounts first")
    loaded = {n for n in names if n not in empty}
    empty_list = [n for n in names if n in empty and n != "outcomes"]
    until = until or _default_until(store, loaded)
    cands, columns, notes = candidates(store, loaded)
    probe = _probe_model(cands, columns)

    events = _outcomes(store, until) if "outcomes" in loaded else None
    if events is not None and events.empty:
        events = None
    if snapshot:
        dates, grid = [until], [until]
    else:
        dates, grid = _observation_dates(store, loaded, events, until, horizon, every)
    rows = store.execute(raw_expr(store, probe, grid)).to_pandas()
    rows = rows.sort_values(["account_id", "as_of"], kind="stable").reset_index(drop=True)
    at_d = rows[rows["as_of"] == pd.Timestamp(until)].reset_index(drop=True)
    if at_d.empty:
        raise ScoringError(f"no account is in the population as of {until:%Y-%m-%d}")

    obs = None
    if events is not None and dates:
        if snapshot:
            obs = at_d.copy()
            has = set(events.loc[events["kind"] == outcome, "account_id"])
            obs["label"] = obs["account_id"].isin(has).to_numpy(bool)
        else:
            obs = rows[rows["as_of"].isin([pd.Timestamp(d) for d in dates])].reset_index(drop=True)
            obs = obs.assign(score=0.0)
            obs, _ = label_observations(obs, events, horizon, outcome)
        if obs.empty or obs["label"].all() or not obs["label"].any():
            notes.append(
                f"the outcomes up to {until:%Y-%m-%d} give no {outcome} and non-{outcome} "
                "observations to compare: directions and weights are the metrics' natural ones"
            )
            obs = None
    elif events is None:
        notes.append(
            f"no outcome on file by {until:%Y-%m-%d}: no AUC; directions are the metrics' "
            "natural ones and the weights equal"
        )
    y = obs["label"].to_numpy(bool) if obs is not None else None
    risk = outcome in RISKS  # a low score predicts the outcome

    judged: list[SuggestedMetric] = []
    skipped: dict[str, str] = {}
    for c in cands:
        now = at_d[c.name]
        if c.healthy == "category":
            m = _judge_category(c, now, obs, y, risk)
        else:
            m = _judge_linear(c, now, obs, y, risk)
        if isinstance(m, str):
            skipped[c.name] = m
        else:
            judged.append(m)
    _merge(judged, obs)
    bands = _bands(judged, at_d)
    model_text = _write(
        judged,
        cands,
        columns,
        until,
        outcome,
        horizon,
        snapshot,
        obs,
        dates,
        empty_list,
        skipped,
        bands,
        every,
    )
    model = save_model_text(model_text, out, load_model_text, name="suggested.yaml")
    return Suggestion(
        model=model,
        text=model_text,
        out=Path(out) if out is not None else None,
        as_of=until,
        outcome=outcome,
        horizon=horizon,
        snapshot=snapshot,
        dates=dates if obs is not None else [],
        observations=0 if obs is None else len(obs),
        positives=0 if y is None else int(y.sum()),
        metrics=judged,
        skipped=skipped,
        empty=empty_list,
        notes=notes,
    )


def _values(series) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in series.tolist()], dtype=float)


def _judge_linear(c: Candidate, now, obs, y, risk: bool) -> SuggestedMetric | str:
    x_now = _values(now)
    if np.isnan(x_now).all():
        return "no account has a value at the date"
    healthy, auc, observed = c.healthy, None, 0
    if obs is not None:
        x = _values(obs[c.name])
        ok = ~np.isnan(x)
        observed = int(ok.sum())
        a = rank_roc_auc(y[ok], x[ok]) if observed else None  # higher value -> outcome
        if a is not None:
            healthy = "lower" if (a > 0.5) == risk else "higher"
            auc = max(a, 1 - a)
    for qs in (ANCHOR_QUANTILES, (0.05, 0.95), (0.0, 1.0)):
        pts = fit_points(x_now, list(qs), "higher")
        if len(pts) == 2:
            break
    else:
        return "the same value for every account: nothing to tell accounts apart"
    lo, hi = _round(pts[0][0]), _round(pts[1][0])
    if lo == hi:
        lo, hi = pts[0][0], pts[1][0]
    bad, good = (lo, hi) if healthy == "higher" else (hi, lo)
    return SuggestedMetric(
        c.name,
        c.pillar,
        "linear",
        healthy,
        auc,
        observed,
        bad=bad,
        good=good,
        weight=_weight(auc),
    )


def _judge_category(c: Candidate, now, obs, y, risk: bool) -> SuggestedMetric | str:
    values = sorted({str(v) for v in now.tolist() if v is not None})
    if len(values) < 2:
        return "one value for every account: nothing to tell accounts apart"
    scores = {v: 50.0 for v in values}
    auc, observed = None, 0
    if obs is not None:
        text = np.array([None if v is None else str(v) for v in obs[c.name].tolist()], object)
        ok = np.array([t is not None for t in text])
        observed = int(ok.sum())
        if observed:
            rates = {}
            base = float(y[ok].mean())
            for v in values:
                sel = text == v
                n = int(sel.sum())
                # shrunk toward the overall rate: a rare value does not get an extreme score
                rates[v] = (float(y[sel].sum()) + 10 * base) / (n + 10)
            lo, hi = min(rates.values()), max(rates.values())
            span = (hi - lo) or 1.0
            for v, r in rates.items():
                s = (r - lo) / span  # 0: the lowest outcome rate
                scores[v] = round(100 * (1 - s) if risk else 100 * s)
            health = np.array([scores.get(t, np.nan) if t else np.nan for t in text], float)
            a = rank_roc_auc(y[ok], -health[ok])
            auc = a
    return SuggestedMetric(
        c.name, c.pillar, "map", "category", auc, observed, map=scores, weight=_weight(auc)
    )


def _weight(auc: float | None) -> float:
    """A starting weight from the AUC's distance from 0.5 (calibrate learns the real one)."""
    if auc is None:
        return 1.0
    return max(round(200 * (auc - 0.5)), 1)


def _round(x: float) -> float:
    """Three significant digits: anchors are a starting point, not a measurement."""
    if x == 0 or not np.isfinite(x):
        return float(x)
    return float(f"{x:.3g}")


def _merge(metrics: list[SuggestedMetric], obs) -> None:
    """Mark the weaker of two metrics that move together (weight 0 in the file)."""
    if obs is None:
        return
    import pandas as pd

    linear = [m for m in metrics if m.kind == "linear"]
    frame = pd.DataFrame({m.name: _values(obs[m.name]) for m in linear})
    if frame.empty:
        return
    # Spearman's rho as the Pearson correlation of ranks (pairwise complete): pandas'
    # own spearman re-ranks every pair, minutes on 50,000 observations x 70 metrics
    rho = frame.rank().corr(method="pearson", min_periods=30).to_numpy()
    strength = {m.name: (m.auc or 0.5) for m in linear}
    order = sorted(range(len(linear)), key=lambda i: (-strength[linear[i].name], i))
    kept: list[int] = []
    for i in order:
        hit = next(
            (k for k in kept if np.isfinite(rho[i, k]) and abs(rho[i, k]) >= MERGE_RHO), None
        )
        if hit is None:
            kept.append(i)
        else:
            linear[i].merged_into = linear[hit].name
            linear[i].rho = float(rho[i, hit])


# --- the file ----------------------------------------------------------------------------------


def _bands(judged: list[SuggestedMetric], at_d) -> dict[str, float]:
    """Thresholds that put about :data:`RED_SHARE` of the accounts at D in red and the
    healthiest :data:`GREEN_SHARE` in green, from the weighted mean of the normalised
    metrics (the suggested model has no rules and flat pillars, so that is its score)."""
    total = np.zeros(len(at_d))
    weight = np.zeros(len(at_d))
    for m in judged:
        if m.merged_into is not None:
            continue
        if m.kind == "linear":
            x = _values(at_d[m.name])
            n = np.clip((x - m.bad) / (m.good - m.bad), 0, 1) * 100
        else:
            n = np.array(
                [
                    m.map.get(str(v), np.nan) if v is not None else np.nan
                    for v in at_d[m.name].tolist()
                ],
                float,
            )
        ok = ~np.isnan(n)
        total[ok] += m.weight * n[ok]
        weight[ok] += m.weight
    score = total[weight > 0] / weight[weight > 0]
    if score.size == 0:
        return {"green": 70, "yellow": 40}
    yellow = float(np.floor(np.quantile(score, RED_SHARE)))
    green = float(np.ceil(np.quantile(score, 1 - GREEN_SHARE)))
    if green <= yellow:
        green = yellow + 1
    return {"green": min(green, 100), "yellow": max(min(yellow, 99), 0)}


def _write(
    judged,
    cands,
    columns,
    until,
    outcome,
    horizon,
    snapshot,
    obs,
    dates,
    empty,
    skipped,
    bands,
    every,
) -> str:
    by_name = {c.name: c for c in cands}
    keep = {m.name for m in judged}
    # a formula needs the metrics it reads: keep them (unscored) when they were skipped
    doc = block_map([("name", "suggested model")])
    doc["bands"] = flow_map((k, number(bands[k])) for k in ("green", "yellow"))
    doc.yaml_add_eol_comment(
        f"about {RED_SHARE:.0%} of the accounts red and {GREEN_SHARE:.0%} green at "
        f"{until:%Y-%m-%d}; calibrate learns them",
        "bands",
    )
    if columns:
        used = {by_name[n].spec.get("column") for n in keep}
        cols = block_map()
        for t, cs in columns.items():
            mine = {c: typ for c, typ in cs.items() if t != "accounts" or c in used}
            if mine:
                cols[t] = flow_map(mine.items())
        if cols:
            doc["columns"] = cols
    metrics = block_map()
    needed = set()
    for n in keep:
        f = by_name[n].spec.get("formula", "")
        needed |= {m for m in by_name if re.search(rf"\b{m}\b", f)}
    for c in cands:
        if c.name in keep or c.name in needed:
            metrics[c.name] = flow_map(c.spec.items())
    doc["metrics"] = metrics
    pillars = block_map()
    for p in PILLARS:
        mine = [m for m in judged if m.pillar == p]
        if not mine:
            continue
        uses = block_map()
        for m in mine:
            entry = [("weight", number(_file_weight(m)))]
            if m.kind == "map":
                entry.append(("map", flow_map((k, number(v)) for k, v in m.map.items())))
            else:
                entry += [("bad", number(m.bad)), ("good", number(m.good))]
            if by_name[m.name].missing:
                entry.append(("missing", by_name[m.name].missing))
            uses[m.name] = flow_map(entry)
            said = _evidence(m, obs)
            if m.merged_into is not None:
                said += (
                    f"; weight 0: moves with {m.merged_into} (Spearman rho {m.rho:+.2f}), "
                    f"counted once; calibrate weighs it where it adds to {m.merged_into}"
                )
            uses.yaml_add_eol_comment(said, m.name)
            if m.name in TIMING:
                uses.yaml_set_comment_before_after_key(m.name, before=TIMING[m.name], indent=6)
        total = sum(_file_weight(m) for m in mine)
        pillars[p] = block_map([("weight", number(total)), ("metrics", uses)])
        pillars.yaml_set_comment_before_after_key(p, before=PILLARS[p], indent=2)
    if not pillars:
        raise ScoringError("no metric could be proposed: load accounts with data first")
    doc["pillars"] = pillars
    doc.yaml_set_start_comment(
        _header(until, outcome, horizon, every, snapshot, obs, dates, empty, skipped)
    )
    return dump_document(doc)


def _file_weight(m: SuggestedMetric) -> float:
    """The weight written: 0 for a metric that moves with a stronger one."""
    return 0 if m.merged_into is not None else m.weight


def _evidence(m: SuggestedMetric, obs) -> str:
    if m.auc is None:
        return "no outcomes to judge it" if obs is None else "AUC -: too few values"
    way = {"higher": "higher is healthier", "lower": "lower is healthier", "category": "by rate"}
    return f"AUC {m.auc:.3f} ({way[m.healthy]}; {m.observed:,} observations)"


def _header(until, outcome, horizon, every, snapshot, obs, dates, empty, skipped) -> str:
    lines = [
        f"Suggested by `healthscore model suggest` from the data as of {until:%Y-%m-%d}.",
        "Anchors (bad, good) are the 10th and 90th percentiles of each metric at that",
        "date; a category's map scores each value by its outcome rate.",
    ]
    if obs is None:
        lines.append("No outcomes to judge by: directions are the metrics' natural ones.")
    elif snapshot:
        lines += [
            f"Each metric's AUC is against {outcome} (on file by {until:%Y-%m-%d}) over",
            f"{len(obs):,} accounts at that date ({int(obs['label'].sum()):,} with {outcome}).",
        ]
    else:
        lines += [
            f"Each metric's AUC is against {outcome} within {horizon}, over {len(obs):,} "
            "observations",
            f"at {len(dates)} dates {min(dates):%Y-%m-%d} .. {max(dates):%Y-%m-%d}, every "
            f"{every} ({int(obs['label'].sum()):,} followed by {outcome});",
            f"outcomes are read up to {until:%Y-%m-%d} only.",
        ]
    lines += [
        "Directions follow the AUC; weights grow with it. A metric that moves with a",
        "stronger one (|Spearman rho| >= 0.9) has weight 0: counted once; calibrate",
        "weighs it only where it tells something the other does not.",
        "Next: `healthscore calibrate` learns the weights, anchors and bands.",
    ]
    if empty:
        lines.append(f"No rows in {', '.join(empty)}: no metric from them.")
    for k, v in skipped.items():
        lines.append(f"Left out {k}: {v}.")
    return "\n".join(lines)
