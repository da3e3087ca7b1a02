"""The read API: accounts, one account, its history, why it moved, the portfolio,
flags, and the service's status.

Place in the flow: a router of ``service/`` over :mod:`healthscore.api` (and the data
modules it re-exports); JSON shapes match the CLI's ``--format json``: an account is
``explain --format json`` (``Explanation.to_dict``), why it moved ``explain --vs``
(``Change.to_dict``), flags the rows of ``flag list``. The list and the portfolio
are those of :mod:`healthscore.service.accounts` (which the dashboard reads too): from
``current_scores`` (kept up to date by the rescorer) once a rescore of everyone wrote
it, else scored live as of the service's "now"; one account is read from
``current_scores`` when it holds the account, else explained live. Every answer says
what it is as of (``as_of``) and when it was computed (``scored_at``).

Routes (bearer token; scope in brackets): ``GET /v1/accounts``,
``/v1/accounts/{account_id}``, ``.../history``, ``.../why``, ``/v1/portfolio``,
``/v1/flags``, ``/v1/status`` [read]; ``POST /v1/flags`` and
``/v1/flags/{flag_id}/resolve`` [ingest:flags], which mark the account for the
rescorer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from healthscore import api
from healthscore.core.limits import NUL, quoted
from healthscore.errors import HealthscoreError
from healthscore.service import accounts, auth
from healthscore.service.bodies import JSONRoute

router = APIRouter(prefix="/v1", tags=["read"], route_class=JSONRoute)

READ = auth.require("read")


class NotFound(HealthscoreError):
    """What a request names does not exist (404)."""

    status = 404


def _state(request: Request):
    return request.app.state.service


def _card(request: Request, scorecard: str | None):
    """The model seen through ``scorecard`` (default health); one the model does not have
    is a 400 naming those it has (the model's own error names its file on the server)."""
    model = _state(request).model
    names = model.scorecard_names()
    if scorecard is not None and scorecard not in names:
        raise HealthscoreError(
            f"`scorecard` {scorecard!r}: not a scorecard of the model",
            hint="scorecards: " + ", ".join(names),
        )
    return model.scorecard(scorecard)


def _iso(v) -> str | None:
    return v.isoformat() if v is not None else None


def _date(value: str | None, name: str) -> datetime | None:
    """A date query parameter, its errors naming the parameter (400)."""
    return api.parse_as_of(value, name) if value not in (None, "") else None


def _known(store, account_id: str) -> None:
    acc = store.table("accounts")
    found = 0
    if NUL not in account_id:  # no stored id holds one (and SQL text ends at it)
        one = acc.filter(acc.account_id == account_id).select("account_id").limit(1)
        found = store.execute(one).num_rows
    if not found:
        raise NotFound(f"unknown account {quoted(account_id)}", hint="GET /v1/accounts lists them")


def _current(store, card, account_ids: list[str] | None = None):
    """The current rows of this scorecard (of ``account_ids``), as dicts by account."""
    from healthscore.store import current

    t = current.of_model(store, card.version, card.scorecard_name)
    if account_ids is not None:
        t = t.filter(t.account_id.isin(account_ids))
    return {r["account_id"]: r for r in store.execute(t).to_pylist()}


def _current_row(state, card, account_id: str) -> dict | None:
    """One account's committed current row, read through the requests' own connection
    (:meth:`~healthscore.service.state.ServiceState.request_reading`) by a query compiled
    once per scorecard with the id bound at each run; None when there is none (or no
    ``current_scores`` yet: the caller then reads through the store, as before). Built
    and compiled per request through Ibis, the read took 26-30 ms CPU, 9-10 ms so
    (S book, load 8): clients polling an account for its new score are a load of their
    own."""
    from healthscore.store import parameter
    from healthscore.store.current import CURRENT, of_model

    if NUL in account_id:  # no stored id holds one (and SQL text ends at it)
        return None
    key = ("current_row", card.version, card.scorecard_name)
    with state.request_reading() as reader:
        prepared = state.request_plans.get(key)
        if prepared is None:
            if not reader.has_table(CURRENT):  # (of_model would make it: not a reader's)
                return None
            t = of_model(reader, card.version, card.scorecard_name)
            one = t.filter(t.account_id == parameter("account_id", "string"))
            prepared = state.request_plans[key] = reader.prepare(one)
        try:
            rows = reader.run_prepared(prepared, {"account_id": account_id}).to_pylist()
        except Exception:  # noqa: BLE001 - e.g. the table gone: the store's path, as before
            state.request_plans.pop(key, None)
            return None
    return rows[-1] if rows else None  # (one row an account; _current keeps the last)


# --- accounts --------------------------------------------------------------------------


@router.get("/accounts")
def list_accounts(
    request: Request,
    band: Annotated[str | None, Query(description="green,yellow,red (or their names)")] = None,
    segment: str | None = None,
    csm: str | None = None,
    trend: Annotated[str | None, Query(description="a trend class, e.g. rapid_decline")] = None,
    q: Annotated[str | None, Query(description="part of the account's name or id")] = None,
    sort: Annotated[str, Query(description="score|arr|renewal|name|change")] = "score",
    limit: Annotated[int, Query(ge=1)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    scorecard: str | None = None,
    token=READ,
) -> dict:
    """Scored accounts, those that need attention first (``sort=score``), filtered and
    paginated (:mod:`healthscore.service.accounts`, the dashboard's list too):
    ``{as_of, scored_at, source, total, limit, offset, items}``."""
    state = _state(request)
    if limit > state.settings.max_page:
        raise HTTPException(
            422, f"`limit` {limit} is more than a page holds ({state.settings.max_page})"
        )
    if sort not in accounts.SORTS:
        raise HTTPException(422, f"`sort` {sort!r}: not one of {', '.join(accounts.SORTS)}")
    card = _card(request, scorecard)
    page = accounts.page(
        state,
        card,
        band=band,
        segment=segment,
        csm=csm,
        trend=trend,
        q=q,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    return {
        "as_of": _iso(page.as_of),
        "scored_at": _iso(page.scored_at),
        "model_version": card.version,
        "scorecard": card.scorecard_name,
        "source": page.source,
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "items": [i.to_dict() for i in page.items],
    }


#: an account id may hold a "/" (``ACC/9``, sent as ``ACC%2F9`` or as is: the router reads
#: the path decoded), so the account routes take the rest of the path as the id, and
#: ``.../history`` and ``.../why`` are declared before the account itself, which would
#: otherwise match them (an id ending in "/history" or "/why" is read as that route)


@router.get("/accounts/{account_id:path}/history")
def account_history(
    request: Request, account_id: str, scorecard: str | None = None, token=READ
) -> dict:
    """The account's stored scores (``healthscore history``), oldest first."""
    from healthscore.engine.history import account_history as stored

    state = _state(request)
    card = _card(request, scorecard)
    with state.store_access() as store:
        _known(store, account_id)
        rows = stored(store, card, account_id).to_pylist()
    for r in rows:
        r["as_of"] = _iso(r["as_of"])
        r["signals"] = r["signals"].split(",") if r["signals"] else []
    return {
        "account_id": account_id,
        "model_version": card.version,
        "scorecard": card.scorecard_name,
        "history": rows,
    }


@router.get("/accounts/{account_id:path}/why")
def why_it_moved(
    request: Request,
    account_id: str,
    from_: Annotated[str, Query(alias="from", description="the earlier date (UTC)")],
    to: Annotated[str | None, Query(description="the later date (UTC); default now")] = None,
    scorecard: str | None = None,
    token=READ,
) -> dict:
    """Why the score moved between ``from`` and ``to`` (``explain --vs --format json``)."""
    state = _state(request)
    card = _card(request, scorecard)
    if not from_.strip():  # else no earlier date: one explanation, not why it moved
        raise HealthscoreError("`from` is empty", hint="the earlier date, e.g. from=2025-05-01")
    start, end = _date(from_, "from"), _date(to, "to")
    with state.store_access() as store:
        _known(store, account_id)
        end = end or state.now()
        result = api.explain_account(store, card, account_id, end, start, names=("from", "to"))
    return {**result.to_dict(), "warnings": result.warnings}


@router.get("/accounts/{account_id:path}")
def get_account(request: Request, account_id: str, scorecard: str | None = None, token=READ):
    """One account's current score with its explanation (``explain --format json``),
    plus ``scored_at``, ``model_version``, ``trend`` and ``change_30d``."""
    state = _state(request)
    card = _card(request, scorecard)
    row = _current_row(state, card, account_id)  # not behind the writes queued on the store
    if row is None:  # as before: the table made where missing, else explained live
        with state.store_access() as store:
            row = _current(store, card, [account_id]).get(account_id)
            if row is None:
                _known(store, account_id)
                try:
                    result = api.explain_account(store, card, account_id, state.now())
                except HealthscoreError as e:
                    raise NotFound(e.message or str(e), hint=e.hint) from None
    if row is not None:
        out = json.loads(row["explanation"])
        out.update(
            scored_at=_iso(row["computed_at"]),
            source="current_scores",
            trend=row["trend"],
            change_30d=row["change_30d"],
        )
    else:
        out = result.to_dict()
        out.update(
            scored_at=_iso(datetime.now(UTC).replace(tzinfo=None)),
            source="live",
            warnings=result.warnings,
        )
    out["model_version"] = card.version
    out["scorecard"] = card.scorecard_name
    return out


# --- portfolio ---------------------------------------------------------------------------


@router.get("/portfolio")
def portfolio(
    request: Request,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
    scorecard: str | None = None,
    token=READ,
) -> dict:
    """The portfolio summary (the data of ``healthscore report``): bands with their
    ARR, ARR at risk (with the model's probability), movers, segments and CSMs."""
    state = _state(request)
    card = _card(request, scorecard)
    with state.store_access() as store:
        data = accounts.portfolio(store, card, state.now(), top=top)
    return data.to_dict()


# --- flags -------------------------------------------------------------------------------


def _flag(row: dict) -> dict:
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _flags_writer(request: Request, token=auth.require("ingest")):
    if not token.allows("ingest", "flags"):
        raise HTTPException(403, f"token {token.name!r} does not allow ingest flags")
    return token


FLAGS_WRITE = Depends(_flags_writer)


def _time_text(value, info: ValidationInfo):
    """A time field of a body: ISO 8601 text (a date, or a time with or without an
    offset), read as the query parameters' dates are. A number is refused: pydantic
    would read ``-1`` (or ``"-1"``) as seconds since 1970, a flag raised in 1969."""
    name = info.field_name
    if value is None:
        return None
    if not isinstance(value, str):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        why = "a number is not read as a time" if number else "only text is read as a time"
        raise ValueError(
            f"`{name}` must be an ISO 8601 date or time as text, e.g. 2025-06-30 or "
            f"2025-06-30T09:00:00Z (got {value!r}: {why})"
        )
    try:
        return api.parse_as_of(value, name)
    except HealthscoreError as e:
        raise ValueError(str(e)) from None


#: a time in a body: ISO 8601 text, never a number (see :func:`_time_text`)
BodyTime = Annotated[datetime | None, BeforeValidator(_time_text)]


class NewFlag(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored

    account_id: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=100, description="e.g. champion_left")
    note: str | None = Field(default=None, max_length=2000)
    author: str | None = Field(default=None, max_length=200)
    at: BodyTime = Field(default=None, description="when (ISO 8601, UTC); default now")


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: BodyTime = Field(default=None, description="when (ISO 8601, UTC); default now")


def _at(value: datetime | None, state) -> datetime:
    if value is None:
        return state.now()
    return api.parse_as_of(value, "at")


@router.get("/flags")
def list_flags(
    request: Request,
    account_id: str | None = None,
    all: Annotated[bool, Query(description="include resolved flags")] = False,  # noqa: A002
    token=READ,
) -> dict:
    """Flags active now (``all``: every flag), newest first (``flag list``); of an account
    the store does not hold, a 404 naming it (as ``GET /v1/accounts/{id}``), not the
    empty list a mistyped id would otherwise get."""
    state = _state(request)
    with state.store_access() as store:
        if account_id is not None:
            _known(store, account_id)
        now = state.now()
        rows = api.list_flags(store, account_id=account_id, as_of=now, include_resolved=all)
    return {"as_of": _iso(now), "items": [_flag(r) for r in rows]}


@router.get("/feedback")
def list_feedback(
    request: Request,
    model_version: str | None = None,
    format: Annotated[  # noqa: A002
        Literal["json", "csv"], Query(description="csv: a file for a spreadsheet")
    ] = "json",
    token=READ,
):
    """What CSMs said of scores (looks right / too high / too low, with the reason), every
    verdict newest first, of one ``model_version`` when given: the data behind the model
    page's agreement, exported for calibration. ``format=csv`` is a file download whose
    text cells are neutralized against spreadsheet formulas."""
    from healthscore.service.dashboard import feedback

    with _state(request).store_access() as store:
        table = feedback.export(store, model_version)
    if format == "csv":
        return csv_response(table, "score_feedback.csv")
    items = table.to_pylist()
    for r in items:
        r["created_at"] = _iso(r["created_at"])
    return {"total": len(items), "items": items}


def csv_response(table, filename: str) -> Response:
    """``table`` as a CSV download (text cells neutralized, see :mod:`healthscore.core.csvout`)."""
    from healthscore.core.csvout import csv_bytes

    return Response(
        csv_bytes(table),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.post("/flags", status_code=201)
def add_flag(request: Request, body: NewFlag, token=FLAGS_WRITE) -> dict:
    """Raise a flag on an account; its score is updated by the rescorer."""
    state = _state(request)
    at = _at(body.at, state)
    with state.store_access() as store:
        _known(store, body.account_id)
        row = api.add_flag(
            store, body.account_id, body.kind, note=body.note, author=body.author, at=at
        )
    state.touched([body.account_id])
    return _flag(row)


# a flag id may hold a "/" (an ingested one): the path up to /resolve
@router.post("/flags/{flag_id:path}/resolve")
def resolve_flag(
    request: Request, flag_id: str, body: Resolution | None = None, token=FLAGS_WRITE
) -> dict:
    """Resolve a flag (from ``at``, default now); the account's score is updated."""
    state = _state(request)
    at = _at(body.at if body else None, state)
    with state.store_access() as store:
        known = [f for f in api.list_flags(store, include_resolved=True) if f["flag_id"] == flag_id]
        if not known:
            raise NotFound(f"unknown flag {flag_id!r}", hint="GET /v1/flags?all=true lists them")
        row = api.resolve_flag(store, flag_id, at=at)
    state.touched([row["account_id"]])
    return _flag(row)


# --- status ------------------------------------------------------------------------------


@router.get("/status")
def status(request: Request, token=READ) -> dict[str, Any]:
    """The rescorer (queue, lag, last micro-batch, last error) and each table's
    freshness (its latest data, and whether the model's cadence calls it stale)."""
    state = _state(request)
    model = state.model
    with state.store_access() as store:
        now = state.now()
        marks = store.watermarks()
        stale = {w.table: str(w) for w in store.freshness(model, now)}
    rescorer = getattr(request.app.state, "rescorer", None)
    return {
        "now": _iso(now),
        "model_version": model.version,
        "scorecards": model.scorecard_names(),
        "rescorer": rescorer.status() if rescorer is not None else None,
        "freshness": {
            t: {"latest": _iso(m), "stale": t in stale, "warning": stale.get(t)}
            for t, m in sorted(marks.items())
        },
    }
