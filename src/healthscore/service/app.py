"""The FastAPI app: the routers of ``service/`` over one :class:`ServiceState`.

Place in the flow: the top of ``service/``; :func:`healthscore.service.run` serves it.
While the app runs it owns the store (opened on start-up, closed on shut-down; a DuckDB
store's owner file says so to CLI commands, see :mod:`healthscore.service.owner`), runs
the rescorer, and answers:

- ``GET /health``: the only route open to anyone;
- ``/v1/...``: the API, bearer tokens only (see :mod:`healthscore.service.auth`);
- ``/docs`` and ``/openapi.json``: the API's documentation, from assets installed with
  the package (never a CDN), for tokens with read access and logged-in users;
- ``/login``, ``/logout``: dashboard logins (:mod:`healthscore.service.login`);
- everything else: the dashboard, session cookies only.

Library errors become JSON ``{"error": ..., "hint": ..., "problems": [...]}`` with a
4xx status, and so do the framework's own (a refused request, an unknown path, a body
that does not fit the route's shape: ``problems`` then names each field); nothing a
client sends produces a traceback. Bodies other than ingestion batches and Segment
messages (which read theirs within ``max_body_bytes``) are refused past
``max_form_bytes`` (413) before a route reads them.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from healthscore.core.limits import NUL
from healthscore.errors import HealthscoreError
from healthscore.service import auth as auth_mod
from healthscore.service.settings import Settings
from healthscore.service.state import ServiceState


def error_body(e: HealthscoreError) -> dict:
    """A library error as JSON: its message, hint and located problems."""
    body: dict = {"error": e.message or str(e)}
    if e.hint:
        body["hint"] = e.hint
    if e.problems:
        body["problems"] = [p.to_dict() for p in e.problems]
    return body


def create_app(settings: Settings, state: ServiceState | None = None) -> FastAPI:
    """The app for ``settings``; ``state`` (an open store and model) is opened on
    start-up when not given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = state is None
        from healthscore.service import parked
        from healthscore.service.ingest import INPUT_TABLES
        from healthscore.service.rescorer import Rescorer

        try:
            app.state.service = state or ServiceState.open(settings)
            with app.state.service.store_access() as store:
                # it keeps password and token hashes: owner-only, as the session secret
                store.make_owner_only()
                auth_mod.ensure_tables(store)
                parked.ensure_tables(store)
                # the key indexes the ingest route's appends use: made here, once per
                # store (a minute on 10 M events), not by the first batch while it holds
                # the store
                store.prepare_appends(INPUT_TABLES)
            claimed = _claim_store(app.state.service)
        except (HealthscoreError, OSError) as e:  # a full disk, a store gone: see run()
            app.state.startup_error = e
            raise
        rescorer = app.state.rescorer = Rescorer(app.state.service)
        rescorer.start()
        try:
            yield
        finally:
            rescorer.stop()
            _release_store(app.state.service, claimed)
            if own:
                app.state.service.close()

    app = FastAPI(
        title="healthscore",
        summary="Explainable customer health scores: ingest data, read scores and why.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # the default pages load Swagger UI from a CDN
        redoc_url=None,
        openapi_url=None,  # served below, behind read access
    )

    app.add_middleware(LimitBody, limit=settings.max_form_bytes)
    app.add_middleware(RefuseNul)

    @app.exception_handler(HealthscoreError)
    async def library_error(request: Request, e: HealthscoreError) -> JSONResponse:
        return JSONResponse(error_body(e), status_code=getattr(e, "status", 400))

    @app.exception_handler(HTTPException)
    async def refused(request: Request, e: HTTPException) -> JSONResponse:
        # the framework's {"detail"} in the shape of every other error; one raised for a
        # library error (a body that is not JSON, see bodies.JSONRoute) as that error
        if isinstance(e.__cause__, HealthscoreError):
            return JSONResponse(error_body(e.__cause__), status_code=e.status_code)
        text = e.detail if isinstance(e.detail, str) else str(e.detail)
        return JSONResponse({"error": text}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def not_the_shape(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "key": ".".join(str(p) for p in err.get("loc", ())),
                "reason": err.get("msg", "not valid"),
            }
            for err in e.errors()
        ]
        # as a library error's located problems (``Problem.key``: where in the request)
        first = problems[0] if problems else {"key": "body", "reason": "not valid"}
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return JSONResponse(
            {
                "error": f"{first['key']}: {first['reason']}{more}",
                "hint": "GET /openapi.json describes each route's body and parameters",
                "problems": problems,
            },
            status_code=422,
        )

    @app.exception_handler(auth_mod.LoginRequired)
    async def login_first(request: Request, e: auth_mod.LoginRequired) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Whether the service is up (open to anyone; says nothing about the data)."""
        return {"status": "ok"}

    # HEAD too: uptime monitors often check with it (a 405 reads as the service down);
    # a route of its own, out of the schema (one operation per path and method there)
    @app.head("/health", include_in_schema=False)
    def health_head() -> Response:
        return Response(status_code=200)

    from healthscore.service import admin, dashboard, docs, ingest, login, read, segment

    app.include_router(ingest.router)
    app.include_router(segment.router)
    app.include_router(read.router)
    app.include_router(admin.router)
    app.include_router(docs.router)
    app.include_router(login.router)
    app.include_router(dashboard.router)
    return app


#: the routes that read their own bodies within ``max_body_bytes`` (ingestion batches,
#: Segment messages): the smaller form limit is not theirs
OWN_BODY_LIMIT = ("/v1/ingest/", "/v1/batch", "/v1/track", "/v1/identify", "/v1/group")


class LimitBody:
    """413 for a request body past ``limit`` bytes (declared or as read), before any
    route reads it: FastAPI reads a JSON or form body whole into memory, so a flag,
    token, user or login of megabytes would otherwise cost its size (and a password
    its hashing time). Ingestion and Segment routes keep their own, larger limit. A
    compressed body is 415 here: the routes would read the compressed bytes as the body."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(OWN_BODY_LIMIT):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"", b"identity"):  # else read as the compressed bytes
            response = JSONResponse(
                {
                    "error": f"Content-Encoding {encoding.decode('latin-1')!r} is not "
                    "accepted by this route (its body is a few fields, sent as is)",
                    "hint": "gzip is accepted by POST /v1/ingest/{table} and the Segment routes",
                },
                status_code=415,
            )
            await response(scope, receive, send)
            return
        messages, size = [], 0
        while True:  # read it all (at most the limit) before the route does
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = JSONResponse(
            {
                "error": f"the request body is larger than {self.limit:,} bytes",
                "hint": "this route takes a few fields; batches of rows go to "
                "POST /v1/ingest/{table}",
            },
            status_code=413,
        )
        await response(scope, receive, send)


class RefuseNul:
    """400 for a URL the service cannot read one way only, before any route reads it:
    - its path or query holds a NUL character (``%00``): no id, name or value may hold
      one (no store keeps it in text, and DuckDB's SQL text ends at it), so such a
      request could only fail deeper down;
    - its query names a parameter twice (``sort=score&sort=arr``): no parameter of the
      service takes a list, and reading the last one is a guess at what was meant."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        error = _url_error(scope) if scope["type"] == "http" else None
        if error is not None:
            await JSONResponse({"error": error}, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _url_error(scope) -> str | None:
    """What is wrong with the request's URL (see :class:`RefuseNul`), or None."""
    from urllib.parse import parse_qsl

    query = scope.get("query_string", b"")
    if NUL in scope["path"] or b"%00" in query:
        return "the URL holds a NUL character (%00), which no id, name or value may hold"
    if b"&" not in query:
        return None
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return (
                f"the query names {name!r} twice; a parameter takes one value (which one "
                "was meant would be a guess)"
            )
        seen.add(name)
    return None


#: the name of the admin token a server makes for local CLI commands (see owner.py)
LOCAL_TOKEN = "local CLI of the server"


def _claim_store(state: ServiceState) -> str | None:
    """Say that this process owns its DuckDB store: the owner file (pid, address, and a
    local admin token for CLI commands, made now) in the state folder. Returns the
    token's id; None for a store with many writers (PostgreSQL) or in memory."""
    import os

    from healthscore.service import owner
    from healthscore.store import store_file

    if store_file(state.store.url) is None:
        return None
    pid = os.getpid()
    with state.store_access() as store:
        for stale in auth_mod.list_tokens(store):  # of a server that was killed
            if stale.name.startswith(LOCAL_TOKEN) and stale.revoked_at is None:
                auth_mod.revoke_token(store, stale.token_id)
        new = auth_mod.create_token(store, f"{LOCAL_TOKEN} (pid {pid})", ["admin"])
    owner.write(
        state.settings.resolved_state_dir(),
        owner.Owner(pid, state.settings.base_url, new.text, state.store.location),
    )
    return new.token.token_id


def _release_store(state: ServiceState, token_id: str | None) -> None:
    """Undo :func:`_claim_store`: revoke the local token, remove the owner file."""
    import os

    from healthscore.service import owner

    if token_id is None:
        return
    owner.remove(state.settings.resolved_state_dir(), os.getpid())
    with state.store_access() as store:
        auth_mod.revoke_token(store, token_id)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("healthscore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
