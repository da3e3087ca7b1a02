"""What the dashboard's pages show, read from the store: the one place the pages get data.

Place in the flow: under the dashboard's routes, over :mod:`healthscore.api` and
:mod:`healthscore.portfolio`. Every function takes the :class:`ServiceState`, holds the
store through ``state.store_access()`` for its reads and computes scores live as of
``state.now()``. When the rescorer keeps a ``current_scores`` table, this module is what
switches to it; the routes and templates do not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from healthscore import api
from healthscore.engine.history import SCORES, stored_dates
from healthscore.engine.trends import CLASSES
from healthscore.errors import HealthscoreError
from healthscore.model import Model
from healthscore.portfolio import SORTS as ACCOUNT_SORTS
from healthscore.portfolio import ReportData, account_facts, gather
from healthscore.service.dashboard import feedback

#: how the account list sorts (the API's words); change: the largest fall first
#: the account list's orders: the portfolio's, and the 30-day change (biggest fall first)
SORTS = (*ACCOUNT_SORTS, "change")
TRENDS = CLASSES  # the trend classes, as the engine names them


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
class Portfolio:
    data: ReportData
    freshness: list[Freshness]


def portfolio(state) -> Portfolio:
    """The portfolio report's data as of now, and the freshness of every table."""
    with state.store_access() as store:
        d = state.now()
        data = gather(store, state.model, d)
        return Portfolio(data, _freshness(store, state.model, d))


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


# --- accounts ----------------------------------------------------------------------------


@dataclass
class AccountRow:
    account_id: str
    name: str | None
    score: float | None
    band: str | None
    coverage: float | None
    segment: str | None
    csm: str | None
    arr: float | None
    renewal_date: datetime | None
    trend: str | None = None
    change_30d: float | None = None


@dataclass
class AccountPage:
    as_of: datetime
    total: int  # rows after the filters
    scored: int  # accounts scored before the filters
    items: list[AccountRow]
    segments: list[str]
    csms: list[str]
    history_as_of: datetime | None  # the stored date trends and changes are read from
    warnings: list[str] = field(default_factory=list)


def accounts(
    state,
    *,
    band: str | None = None,
    segment: str | None = None,
    csm: str | None = None,
    trend: str | None = None,
    q: str | None = None,
    sort: str = "score",
    reverse: bool = False,
    limit: int = 50,
    offset: int = 0,
) -> AccountPage:
    """The scored accounts, filtered, searched (name or id contains ``q``), sorted and
    cut to one page; each with its trend and 30-day change when history is stored."""
    if sort not in SORTS:
        raise HealthscoreError(f"`sort` {sort!r}: not one of {', '.join(SORTS)}")
    if trend is not None and trend not in TRENDS:
        raise HealthscoreError(f"`trend` {trend!r}: not one of {', '.join(TRENDS)}")
    model = state.model
    with state.store_access() as store:
        d = state.now()
        segments, csms = _choices(store)
        # a segment or CSM no account has lists nothing (the API says why in its error)
        if (segment and segment not in segments) or (csm and csm not in csms):
            return AccountPage(d, 0, 0, [], segments, csms, None)
        result = api.score_accounts(
            store,
            model,
            d,
            sort="score" if sort == "change" else sort,
            bands=[band] if band else None,
            segment=segment or None,
            csm=csm or None,
        )
        trends, history_as_of = _trends(store, model, d)
    rows = []
    for r in result.scores.to_pylist():
        t = trends.get(r["account_id"], {})
        rows.append(
            AccountRow(
                r["account_id"],
                r["account_name"],
                r["score"],
                r["band"],
                r["coverage"],
                r["segment"],
                r["csm"],
                r["arr_in_force"],
                r["renewal_date"],
                t.get("trend"),
                t.get("change"),
            )
        )
    if trend:
        rows = [r for r in rows if r.trend == trend]
    if q:
        needle = " ".join(q.split()).casefold()
        rows = [r for r in rows if needle in f"{r.account_id} {r.name or ''}".casefold()]
    if sort == "change":
        rows.sort(key=lambda r: (r.change_30d is None, r.change_30d or 0.0, r.account_id))
    if reverse:
        have = [r for r in rows if _sort_value(r, sort) is not None]
        rows = have[::-1] + [r for r in rows if _sort_value(r, sort) is None]
    warnings = list(result.warnings)
    if history_as_of is None:
        warnings.append(
            "no stored history for this model version: trend and 30-day change are empty "
            "(healthscore history --from <date> --to <date> --every 1w stores it)"
        )
    return AccountPage(
        d,
        len(rows),
        result.total or 0,
        rows[offset : offset + limit],
        segments,
        csms,
        history_as_of,
        warnings,
    )


def _sort_value(r: AccountRow, sort: str):
    return {
        "score": r.score,
        "arr": r.arr,
        "renewal": r.renewal_date,
        "name": r.name,
        "change": r.change_30d,
    }[sort]


def _choices(store) -> tuple[list[str], list[str]]:
    """Every segment and CSM the accounts table names (the filters' options)."""
    acc = store.table("accounts")
    rows = store.execute(acc.select("segment", "csm").distinct()).to_pylist()
    seg = sorted({r["segment"] for r in rows if r["segment"]}, key=str.casefold)
    csm = sorted({r["csm"] for r in rows if r["csm"]}, key=str.casefold)
    return seg, csm


def _last_stored(store, model: Model, d: datetime) -> datetime | None:
    if SCORES not in store.list_tables():
        return None
    dates = [x for x in stored_dates(store, model) if x <= d]
    return max(dates) if dates else None


def _trends(store, model: Model, d: datetime) -> tuple[dict[str, dict], datetime | None]:
    """Trend class and change over the rapid-decline window (30 days by default) per
    account, from the latest stored history date at or before ``d``."""
    last = _last_stored(store, model, d)
    if last is None:
        return {}, None
    try:
        rows = api.account_trends(store, model, last).trends.to_pylist()
    except HealthscoreError:
        return {}, None
    return {r["account_id"]: r for r in rows}, last


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
    if start >= end:
        raise HealthscoreError("the first date must be before the second")
    with state.store_access() as store:
        return api.explain_account(store, model, account_id, end, vs=start).change


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
    backtest: object | None  # stored backtest figures of this version (none are stored yet)


def trust(state) -> Trust:
    """CSM agreement per model version, the most disputed accounts of the current one."""
    with state.store_access() as store:
        rows = feedback.rows(store)
        names = {}
        disputed = feedback.disagreements(rows, state.model.version)
        if disputed:
            acc = store.table("accounts")
            ids = [d["account_id"] for d in disputed]
            found = store.execute(acc.filter(acc.account_id.isin(ids)).select("account_id", "name"))
            names = {r["account_id"]: r["name"] for r in found.to_pylist()}
    for d in disputed:
        d["name"] = names.get(d["account_id"])
    # `healthscore backtest` writes a report and prints figures; it stores nothing yet
    return Trust(feedback.agreement(rows), disputed, None)


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
        return current is None or abs(float(text) - float(current)) > 1e-9
    except (TypeError, ValueError):
        return str(current) != text
