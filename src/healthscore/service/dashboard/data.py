"""What the dashboard's pages show, read from the store: the one place the pages get data.

Place in the flow: under the dashboard's routes, over :mod:`healthscore.api`,
:mod:`healthscore.portfolio` and :mod:`healthscore.service.accounts`. Every function
takes the :class:`ServiceState` and holds the store through ``state.store_access()``
for its reads. The account list and the portfolio are those of
:mod:`healthscore.service.accounts`, the listing ``GET /v1/accounts`` and
``GET /v1/portfolio`` read (``current_scores``, kept by the rescorer); one account's
page, why it moved and the what-if are computed as of ``state.now()``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from healthscore import api
from healthscore.engine.history import SCORES
from healthscore.errors import HealthscoreError
from healthscore.model import Model
from healthscore.portfolio import ReportData, account_facts
from healthscore.service.dashboard import feedback


def card(state, name: str | None) -> Model:
    """The model seen through one of its scorecards (health by default)."""
    return state.model.scorecard(name)


# --- portfolio ---------------------------------------------------------------------------


@dataclass
class Freshness:
    """One table the model reads: its latest data and whether it is stale now."""

    table: str
    watermark: datetime | None
    expected: str | None  # the cadence in words; None: never judged stale
    stale: str | None  # the warning when stale


@dataclass
class Parked:
    """Segment messages the service parked (``rejects`` or ``pending``): how many, and
    the newest of them as ``GET /v1/ingest/{kind}`` lists them."""

    kind: str
    total: int
    items: list[dict]


@dataclass
class Portfolio:
    data: ReportData
    freshness: list[Freshness]
    parked: list[Parked] = field(default_factory=list)


#: how many of the newest parked messages the portfolio page shows of each kind
PARKED_SHOWN = 10


def portfolio(state) -> Portfolio:
    """The portfolio report's data over the scores the account list reads (those of
    ``GET /v1/portfolio``), the freshness of every table as of now, and the newest
    Segment messages parked as rejects and as pending."""
    from healthscore.service import parked
    from healthscore.service.accounts import portfolio as gather

    with state.store_access() as store:
        d = state.now()
        data = gather(store, state.model, d)
        held = [
            Parked(kind, *parked.listing(store, table, PARKED_SHOWN, 0))
            for kind, table in (("rejects", parked.REJECTS), ("pending", parked.PENDING))
        ]
        # inside the lock: another request's statement on the same connection would
        # take this one's result (a 500 when two portfolio pages were asked at once)
        fresh = _freshness(store, state.model, d)
    for p in held:
        for item in p.items:  # the message as one line of JSON, cut (the CLI shows it whole)
            m = item["message"]
            text = m if isinstance(m, str) else json.dumps(m, ensure_ascii=False)
            item["message_text"] = text if len(text) <= 300 else text[:297] + "..."
    return Portfolio(data, fresh, held)


def _freshness(store, model: Model, d: datetime) -> list[Freshness]:
    marks = store.watermarks()
    stale = {w.table: str(w) for w in store.freshness(model, d)}
    out = []
    for name in model.tables_used():
        cadence = model.cadence(name)
        out.append(
            Freshness(
                name,
                marks.get(name),
                cadence.describe(name) if cadence is not None else None,
                stale.get(name) or (None if name in marks else f"{name}: nothing loaded yet"),
            )
        )
    return out


# --- one account -------------------------------------------------------------------------


@dataclass
class AccountView:
    account_id: str
    name: str | None
    as_of: datetime
    scorecard: str
    model: Model
    arr: float | None
    renewal_date: datetime | None
    explanation: object | None  # api.Explanation; None when not scored now
    not_scored: str | None  # why, when it is not
    warnings: list[str]
    history: list[tuple[datetime, float | None, str | None]]  # stored dates, then now
    history_stored: int  # how many of them are stored history
    flags: list[dict]
    feedback: list[dict]


class NotFound(HealthscoreError):
    status = 404


def account(state, account_id: str, scorecard: str | None = None) -> AccountView:
    """One account now: its explanation on one scorecard, its score history, its active
    flags and what CSMs said about its score."""
    model = card(state, scorecard)
    with state.store_access() as store:
        d = state.now()
        acc = store.table("accounts")
        found = store.execute(
            acc.filter(acc.account_id == account_id).select("account_id", "name")
        ).to_pylist()
        if not found:
            raise NotFound(f"no account {account_id!r}")
        facts = account_facts(store, d).get(account_id, {})
        explanation, not_scored, warnings = None, None, []
        try:
            result = api.explain_account(store, model, account_id, d)
            explanation, warnings = result.explanation, result.warnings
        except HealthscoreError as e:
            not_scored = str(e.message or e)
        history, stored = _history(store, model, account_id, d, explanation)
        flags = api.list_flags(store, account_id=account_id, as_of=d)
        said = feedback.rows(store, account_id)
    return AccountView(
        account_id,
        found[0]["name"],
        d,
        model.scorecard_name,
        model,
        facts.get("arr_in_force"),
        facts.get("renewal_date"),
        explanation,
        not_scored,
        warnings,
        history,
        stored,
        flags,
        said,
    )


def _history(store, model: Model, account_id: str, d: datetime, now_explained):
    """(as_of, score, band) per stored date up to ``d`` (this model version and
    scorecard), then now. Nothing is scored live for past dates: the daily rescore and
    ``healthscore history`` store them, and scoring weeks on the fly would cost seconds."""
    import ibis

    points: dict[datetime, tuple] = {}
    if SCORES in store.list_tables():
        s = store.stored(SCORES)
        s = s.filter(
            s.model_version == model.version,
            s.scorecard == model.scorecard_name,
            s.account_id == account_id,
            s.as_of <= ibis.literal(d, type="timestamp"),
        )
        for r in store.execute(s.select("as_of", "score", "band")).to_pylist():
            points[r["as_of"]] = (r["as_of"], r["score"], r["band"])
    stored = len(points)
    if now_explained is not None:
        points[d] = (d, now_explained.score, now_explained.band)
    return [points[k] for k in sorted(points)], stored


def why(state, account_id: str, start: datetime, end: datetime, scorecard: str | None = None):
    """Why the account's score moved from ``start`` to ``end`` (an ``api.Change``)."""
    model = card(state, scorecard)
    with state.store_access() as store:  # `from` before `to`, as GET .../why says it
        return api.explain_account(
            store, model, account_id, end, vs=start, names=("from", "to")
        ).change


def raise_flag(state, account_id: str, kind: str, note: str | None, author: str) -> dict:
    """Raise a flag on an account and mark it for the rescorer.

    A flag is in force strictly after it is raised (interval tables, see ``core.tables``),
    so it is stamped one second before the service's "now": the score as of now counts
    it at once, also under a clock frozen for a demo or a test."""
    with state.store_access() as store:
        row = api.add_flag(
            store, account_id, kind, note=note, author=author, at=_just_before(state.now())
        )
    state.touched([account_id])
    return row


def resolve_flag(state, flag_id: str) -> dict:
    """Resolve a flag (no longer in force as of now) and mark its account."""
    with state.store_access() as store:
        t = store.table("flags")
        found = store.execute(t.filter(t.flag_id == flag_id).select("flag_id", "ts")).to_pylist()
        if not found:
            raise NotFound(f"no flag {flag_id!r}")
        flag = found[0]
        row = api.resolve_flag(store, flag_id, at=max(_just_before(state.now()), flag["ts"]))
    state.touched([row["account_id"]])
    return row


def _just_before(d: datetime) -> datetime:
    return d - timedelta(seconds=1)


def add_feedback(state, account_id: str, scorecard: str | None, verdict: str, reason: str, user):
    """Store a CSM's verdict on the account's current score on a scorecard."""
    model = card(state, scorecard)
    with state.store_access() as store:
        try:
            score = api.explain_account(store, model, account_id, state.now()).explanation.score
        except HealthscoreError as e:
            raise HealthscoreError(f"no score to judge: {e.message or e}") from e
        return feedback.add(
            store,
            account_id=account_id,
            model_version=model.version,
            scorecard=model.scorecard_name,
            score=score,
            verdict=verdict,
            reason=reason,
            username=user.username,
        )


# --- model and trust ---------------------------------------------------------------------


@dataclass
class Trust:
    agreement: list[feedback.Agreement]
    disputed: list[dict]  # feedback.disagreements, with the account's name
    backtest: dict | None  # the last backtest of this version (BacktestResult.to_dict())


def trust(state) -> Trust:
    """CSM agreement per model version, the most disputed accounts of the current one,
    and the figures of the current version's last backtest."""
    from healthscore.evaluate.backtest import last_run

    with state.store_access() as store:
        rows = feedback.rows(store)
        backtest = last_run(store, state.model.version)
        names = {}
        disputed = feedback.disagreements(rows, state.model.version)
        if disputed:
            acc = store.table("accounts")
            ids = [d["account_id"] for d in disputed]
            found = store.execute(acc.filter(acc.account_id.isin(ids)).select("account_id", "name"))
            names = {r["account_id"]: r["name"] for r in found.to_pylist()}
    for d in disputed:
        d["name"] = names.get(d["account_id"])
    return Trust(feedback.agreement(rows), disputed, backtest)


@dataclass
class WhatIf:
    account_id: str
    scorecard: str
    now: object  # api.Explanation as scored now
    then: object | None  # the explanation with the changed values
    changed: dict[str, object]
    rules_kept: list[str] = field(default_factory=list)  # not re-evaluated


def what_if(state, account_id: str, scorecard: str | None, values: dict[str, str]) -> WhatIf:
    """The account's score now and with ``values`` (metric -> raw value text; empty: no
    data) in place of its own, scored by the engine's own steps with the rules
    re-evaluated over the new values and the flags in force."""
    from healthscore.engine.explain import from_row
    from healthscore.engine.whatif import what_if as score_what_if

    model = card(state, scorecard)
    with state.store_access() as store:
        d = state.now()
        rows = api.score(store, model, d, [account_id]).to_pylist()
        if not rows:
            raise NotFound(f"account {account_id!r} is not scored on {model.scorecard_name} now")
        now = from_row(model, rows[0])
        changed = {m: (None if v.strip() == "" else v.strip()) for m, v in values.items()}
        changed = {m: v for m, v in changed.items() if _differs(rows[0].get(m), v)}
        then = None
        if changed:
            flags = api.list_flags(store, account_id=account_id, as_of=d)
            kinds = {" ".join(f["kind"].split()).lower() for f in flags if f["kind"]}
            then = score_what_if(store, model, rows[0], changed, kinds)
    return WhatIf(
        account_id,
        model.scorecard_name,
        now,
        then.explanation if then else None,
        changed,
        then.rules_kept if then else [],
    )


def _differs(current, text) -> bool:
    if text is None:
        return current is not None
    try:
        number = float(text)
        # "nan" and "inf" differ from anything: the engine then refuses them, by name
        return current is None or not math.isfinite(number) or abs(number - float(current)) > 1e-9
    except (TypeError, ValueError):
        return str(current) != text
