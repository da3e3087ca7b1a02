"""The dashboard: server-rendered pages for CSMs (Jinja2 templates, HTMX, Plotly), with
their static files shipped in the package (nothing from a CDN).

Place in the flow: a router of ``service/``; cookie sessions only (see ``auth``). The
pages read their data through :mod:`healthscore.service.dashboard.data` (the account
list and the portfolio are :mod:`healthscore.service.accounts`'s, which the API reads
too: same accounts, scores and order) and render with the reports' Jinja2 environment
(:func:`healthscore.views.report.page_environment`: its filters, its escaping, its
partials) plus this package's ``templates/``; charts are the figures of
:mod:`healthscore.views.charts`, embedded as JSON beside plotly.js served from
``/static``.

Pages (role in brackets): ``/`` portfolio, ``/accounts`` the account list, ``/accounts/{id}``
one account, ``/model`` model and trust [viewer]; raising and resolving flags and
saying whether a score looks right [member]; ``/admin`` users and tokens [admin].
Nothing changes state on GET; every POST carries the session's CSRF token (a hidden
``csrf_token`` field, or the ``X-CSRF-Token`` header HTMX sends from ``hx-headers``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from healthscore.errors import HealthscoreError
from healthscore.service import auth

router = APIRouter(include_in_schema=False)

HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100)


# --- rendering ---------------------------------------------------------------------------


@cache
def environment():
    """The reports' environment (filters, autoescape, ``tojson`` for charts) with this
    package's templates first."""
    from jinja2 import ChoiceLoader, PackageLoader

    from healthscore.views.report import page_environment

    base = page_environment()
    env = base.overlay(
        loader=ChoiceLoader([PackageLoader("healthscore.service.dashboard"), base.loader])
    )
    # an id in a link's path as one segment: Jinja's ``urlencode`` keeps ``/``, so the
    # link of an account ``../x`` was ``/accounts/../x``, which a browser reads as ``/x``
    env.filters = {**base.filters, "path_part": _path}
    from healthscore.engine.explain import rule_effect
    from healthscore.evaluate.diagnostics import anchors

    env.globals.update(
        query=_query, band_color=_band_colors(), anchors=anchors, rule_effect=rule_effect
    )
    return env


def _band_colors() -> dict:
    from healthscore.views.charts import BAND_COLOR

    return BAND_COLOR


def _query(params: dict, **changes) -> str:
    """``?a=1&b=2``: ``params`` with ``changes`` (None drops a key), empty values left out."""
    merged = {**params, **changes}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    # bands as the scorecard names them (a page about another scorecard passes its own)
    context.setdefault("band_name", _state(request).model.band_name)
    page = (
        environment()
        .get_template(template)
        .render(
            user=user,
            csrf=getattr(request.state, "csrf", ""),
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def _state(request: Request):
    return request.app.state.service


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- static files ------------------------------------------------------------------------


@cache
def _static_files() -> dict[str, Path]:
    return {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}


@cache
def _plotly_js() -> bytes:
    from healthscore.views.charts import plotly_js

    return plotly_js().encode()


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The dashboard's own files (stylesheet, htmx) and plotly.js as the plotly package
    ships it (the reports' copy); nothing else (no path is joined from the request)."""
    cached = {"Cache-Control": "public, max-age=3600"}
    if name == "plotly.min.js":
        return Response(_plotly_js(), media_type="text/javascript", headers=cached)
    path = _static_files().get(name)
    if path is None:
        raise HTTPException(404, "no such file")
    return FileResponse(path, headers=cached)


# --- portfolio ---------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def portfolio_page(request: Request, user=auth.require_user("viewer")):
    from healthscore.portfolio import NO_HISTORY
    from healthscore.service.dashboard import data
    from healthscore.views.report import portfolio_charts

    p = data.portfolio(_state(request))
    return render(
        request,
        "portfolio.html",
        data=p.data,
        freshness=p.freshness,
        parked=p.parked,
        parked_shown=data.PARKED_SHOWN,
        charts=portfolio_charts(p.data),
        no_history=NO_HISTORY,
        title="Portfolio",
    )


# --- accounts ----------------------------------------------------------------------------


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        return min(max(int(value), lo), hi) if value not in (None, "") else default
    except ValueError:
        return default


@router.get("/accounts", response_class=HTMLResponse)
def accounts_page(request: Request, user=auth.require_user("viewer")):
    from healthscore.service import accounts

    qp = request.query_params
    state = _state(request)
    params = {
        k: qp.get(k, "").strip()
        for k in ("band", "segment", "csm", "trend", "q", "sort", "dir", "mine", "limit")
    }
    mine = params["mine"] == "1"
    csm = params["csm"] or None
    note = None
    if mine:
        if user.csm:
            csm = user.csm
        else:
            note = f"{user.username} has no CSM name, so there are no accounts of yours to show"
    limit = _int(params["limit"], 50, 1, state.settings.max_page)
    offset = _int(qp.get("offset"), 0, 0, 10**9)
    sort = params["sort"] or "score"
    error = None
    try:
        page = accounts.page(
            state,
            band=params["band"] or None,
            segment=params["segment"] or None,
            csm=csm,
            trend=params["trend"] or None,
            q=params["q"] or None,
            sort=sort,
            reverse=params["dir"] == "rev",
            limit=limit,
            offset=offset,
        )
    except accounts.UnknownFilter as e:
        if mine and e.name == "csm":  # "my accounts" of a CSM no account names yet
            note = f"no account names {user.csm} as its CSM, so there are no accounts of yours"
        else:
            error = e.message or str(e)
        page = None
    except HealthscoreError as e:
        error, page = e.message or str(e), None
    if page is None or (mine and not user.csm):
        page = accounts.AccountPage(state.now(), None, "", 0, 0, [], [], [], None)
    context = dict(
        page=page,
        params=params,
        limit=limit,
        offset=offset,
        sort=sort,
        mine=mine,
        note=note,
        error=error,
        bands=("green", "yellow", "red"),
        trends=accounts.TRENDS,
        page_sizes=PAGE_SIZES,
        title="My accounts" if mine else "Accounts",
    )
    status = 400 if error else 200
    if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "account-list":
        return render(request, "_accounts_table.html", status, **context)
    return render(request, "accounts.html", status, **context)


def _card(state, name: str | None) -> str:
    """The scorecard a page's ``card`` names (default ``health``); one the model does not
    have is a 404 naming those it has, never another scorecard shown in its place."""
    from healthscore.service.dashboard import data

    card = name or "health"
    names = state.model.scorecard_names()
    if card not in names:
        raise data.NotFound(f"no scorecard {card!r}; this model has {', '.join(names)}")
    return card


def _date(text: str | None, what: str) -> datetime | None:
    if not text:
        return None
    from healthscore.core.time import parse_as_of

    return parse_as_of(text, what)


# the account id may hold a "/": the rest of the path (as the read API's routes take it);
# the POST routes below end in /flags and /feedback, which a GET never matches
@router.get("/accounts/{account_id:path}", response_class=HTMLResponse)
def account_page(request: Request, account_id: str, user=auth.require_user("viewer")):
    from healthscore.service.dashboard import data

    try:
        return _account(request, account_id, user)
    except data.NotFound as e:
        return render(request, "error.html", 404, message=e.message, title="Not found")


def _account(request: Request, account_id: str, user, *, error: str | None = None, status=200):
    from healthscore.service.dashboard import data

    state = _state(request)
    qp = request.query_params
    scorecard = _card(state, qp.get("card"))
    view = data.account(state, account_id, scorecard)
    end = view.as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    start_text, end_text = qp.get("from"), qp.get("to")
    why, why_error = None, None
    if start_text or end_text:
        try:
            start = _date(start_text, "from") or end
            why = data.why(state, account_id, start, _date(end_text, "to") or end, scorecard)
        except HealthscoreError as e:
            why_error = e.message or str(e)
    return render(
        request,
        "account.html",
        status,
        view=view,
        charts=_account_charts(view),
        why=why,
        why_error=why_error,
        why_from=start_text or f"{end - timedelta(days=30):%Y-%m-%d}",
        why_to=end_text or f"{end:%Y-%m-%d}",
        flag_kinds=flag_kinds(state.model),
        error=error,
        verdicts=_verdicts(),
        title=view.name or account_id,
    )


def _verdicts() -> dict:
    from healthscore.service.dashboard.feedback import VERDICTS

    return VERDICTS


def flag_kinds(model) -> list[str]:
    """The flag kinds the model's rules and metrics react to (``has_flag('kind')``)."""
    texts = []
    for name in model.scorecard_names():
        spec = model.scorecard(name).spec
        texts += [r.when for r in spec.rules.values()]
        texts += [m.formula for m in spec.metrics.values() if m.formula]
    found = re.findall(r"has_flag\(\s*'([^']+)'\s*\)", " ".join(texts))
    return sorted(dict.fromkeys(k.strip().lower() for k in found))


def _account_charts(view) -> dict:
    from healthscore.views import charts

    out = {}
    e = view.explanation
    segment = e.segment if e is not None else None
    if view.history:
        names = {b: view.model.band_name(b) for b in ("green", "yellow", "red")}
        title = f"{view.name or view.account_id}: {view.scorecard} score"
        out["history"] = charts.embed(
            charts.score_history(view.history, view.model.bands_for(segment), title, names),
            "score-history",
            height=320,
        )
    if e is not None and e.pillars:
        out["pillars"] = charts.embed(
            charts.pillar_bars([(p.pillar, p.score, p.weight) for p in e.pillars]),
            "pillars",
            height=80 + 36 * len(e.pillars),
        )
    return out


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/accounts/{account_id:path}/flags")
async def raise_flag(request: Request, account_id: str, user=auth.require_user("member")):
    from starlette.concurrency import run_in_threadpool

    from healthscore.service.dashboard import data

    form = await _form(request)
    kind = form.get("kind", "").strip()
    note = form.get("note", "").strip() or None
    try:
        if len(kind) > 100 or (note and len(note) > 2000):
            raise HealthscoreError("a flag's kind is at most 100 characters, its note 2000")
        await run_in_threadpool(
            data.raise_flag, _state(request), account_id, kind, note, user.username
        )
    except HealthscoreError as e:
        return await run_in_threadpool(
            _account, request, account_id, user, error=e.message or str(e), status=400
        )
    return _see_other(f"/accounts/{_path(account_id)}#flags")


# a flag id may hold a "/" (an ingested one): the path up to /resolve
@router.post("/flags/{flag_id:path}/resolve")
async def resolve_flag(request: Request, flag_id: str, user=auth.require_user("member")):
    from starlette.concurrency import run_in_threadpool

    from healthscore.service.dashboard import data

    try:
        row = await run_in_threadpool(data.resolve_flag, _state(request), flag_id)
    except HealthscoreError as e:
        status = getattr(e, "status", 400)
        return render(request, "error.html", status, message=e.message or str(e), title="Flag")
    return _see_other(f"/accounts/{_path(row['account_id'])}#flags")


@router.post("/accounts/{account_id:path}/feedback")
async def score_feedback(request: Request, account_id: str, user=auth.require_user("member")):
    from starlette.concurrency import run_in_threadpool

    from healthscore.service.dashboard import data

    form = await _form(request)
    card = form.get("card") or "health"
    try:
        if card not in _state(request).model.scorecard_names():
            raise HealthscoreError(f"no scorecard {card!r}")
        await run_in_threadpool(
            data.add_feedback,
            _state(request),
            account_id,
            card,
            form.get("verdict", ""),
            form.get("reason", ""),
            user,
        )
    except HealthscoreError as e:
        return await run_in_threadpool(
            _account, request, account_id, user, error=e.message or str(e), status=400
        )
    suffix = f"?card={card}" if card != "health" else ""
    return _see_other(f"/accounts/{_path(account_id)}{suffix}#feedback")


def _path(part) -> str:
    """``part`` (an account id, a flag or token id) quoted as one segment of a URL's path,
    ``/`` too; the templates' ``path_part``."""
    from urllib.parse import quote

    return quote(str(part), safe="")


# --- model and trust ---------------------------------------------------------------------


@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, user=auth.require_user("viewer")):
    from healthscore.service.dashboard import data

    state = _state(request)
    qp = request.query_params
    try:
        scorecard = _card(state, qp.get("card"))
    except data.NotFound as e:
        return render(request, "error.html", 404, message=e.message, title="Not found")
    model = state.model.scorecard(scorecard)
    account_id = (qp.get("account") or "").strip()
    whatif, whatif_error = None, None
    if account_id:
        values = {k[2:]: v for k, v in qp.items() if k.startswith("v_")}
        try:
            whatif = data.what_if(state, account_id, scorecard, values)
        except HealthscoreError as e:
            whatif_error = e.message or str(e)
    return render(
        request,
        "model.html",
        model=model,
        root=state.model,
        card=scorecard,
        trust=data.trust(state),
        account_id=account_id,
        whatif=whatif,
        whatif_error=whatif_error,
        flag_kinds=flag_kinds(state.model),
        title="Model and trust",
    )


@router.get("/model/feedback.csv")
def feedback_csv(request: Request, user=auth.require_user("viewer")):
    """Every verdict CSMs gave on a score, as a CSV file (``GET /v1/feedback?format=csv``)."""
    from healthscore.service.dashboard import feedback
    from healthscore.service.read import csv_response

    with _state(request).store_access() as store:
        table = feedback.export(store)
    return csv_response(table, "score_feedback.csv")


# --- admin -------------------------------------------------------------------------------


def _admin(request: Request, *, new_token=None, error=None, status=200, done=None):
    with _state(request).store_access() as store:
        users = auth.list_users(store)
        tokens = auth.list_tokens(store)
    return render(
        request,
        "admin.html",
        status,
        users=users,
        tokens=tokens,
        roles=auth.ROLES,
        scopes=auth.SCOPES,
        new_token=new_token,
        error=error,
        done=done,
        title="Admin",
    )


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, user=auth.require_user("admin")):
    return _admin(request)


@router.post("/admin/users")
async def admin_add_user(request: Request, user=auth.require_user("admin")) -> Response:
    from starlette.concurrency import run_in_threadpool

    form = await _form(request)

    def add():
        with _state(request).store_access() as store:
            return auth.add_user(
                store,
                form.get("username", ""),
                form.get("password", ""),
                form.get("role", "viewer"),
                csm=form.get("csm", "").strip() or None,
            )

    try:
        added = await run_in_threadpool(add)
    except HealthscoreError as e:
        return await run_in_threadpool(_admin, request, error=e.message or str(e), status=400)
    return await run_in_threadpool(
        _admin, request, done=f"user {added.username} saved ({added.role})"
    )


@router.post("/admin/tokens")
async def admin_add_token(request: Request, user=auth.require_user("admin")) -> Response:
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    scopes = [s for s in form.getlist("scopes") if isinstance(s, str)]
    extra = form.get("tables")
    if isinstance(extra, str) and extra.strip() and "ingest" in scopes:
        scopes = [s for s in scopes if s != "ingest"] + ["ingest:" + extra.strip()]
    name = form.get("name") if isinstance(form.get("name"), str) else ""

    def create():
        with _state(request).store_access() as store:
            return auth.create_token(store, name, scopes)

    try:
        made = await run_in_threadpool(create)
    except HealthscoreError as e:
        return await run_in_threadpool(_admin, request, error=e.message or str(e), status=400)
    return await run_in_threadpool(_admin, request, new_token=made)


@router.post("/admin/tokens/{token_id}/revoke")
async def admin_revoke_token(
    request: Request, token_id: str, user=auth.require_user("admin")
) -> Response:
    from starlette.concurrency import run_in_threadpool

    def revoke():
        with _state(request).store_access() as store:
            return auth.revoke_token(store, token_id)

    try:
        await run_in_threadpool(revoke)
    except HealthscoreError as e:
        return await run_in_threadpool(_admin, request, error=e.message or str(e), status=400)
    return _see_other("/admin#tokens")
