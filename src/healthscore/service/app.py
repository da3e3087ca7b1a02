"""The FastAPI app: the routers of ``service/`` over one :class:`ServiceState`.

Place in the flow: the top of ``service/``; :func:`healthscore.service.run` serves it.
While the app runs it owns the store (opened on start-up, closed on shut-down), runs
the rescorer, and answers:

- ``GET /health``: the only route open to anyone;
- ``/v1/...``: the API, bearer tokens only (see :mod:`healthscore.service.auth`);
- ``/docs`` and ``/openapi.json``: the API's documentation, from assets installed with
  the package (never a CDN), for tokens with read access;
- everything else: the dashboard, session cookies only.

Library errors become JSON ``{"error": ..., "hint": ..., "problems": [...]}`` with a
4xx status; nothing a client sends produces a traceback.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

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
        app.state.service = state or ServiceState.open(settings)
        from healthscore.service.rescorer import Rescorer

        with app.state.service.store_access() as store:
            auth_mod.ensure_tables(store)
        rescorer = app.state.rescorer = Rescorer(app.state.service)
        rescorer.start()
        try:
            yield
        finally:
            rescorer.stop()
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

    @app.exception_handler(HealthscoreError)
    async def library_error(request: Request, e: HealthscoreError) -> JSONResponse:
        return JSONResponse(error_body(e), status_code=getattr(e, "status", 400))

    @app.exception_handler(auth_mod.LoginRequired)
    async def login_first(request: Request, e: auth_mod.LoginRequired) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @app.get("/health", tags=["service"])
    def health() -> dict:
        """Whether the service is up (open to anyone; says nothing about the data)."""
        return {"status": "ok"}

    from healthscore.service import dashboard, ingest, read, segment

    app.include_router(ingest.router)
    app.include_router(segment.router)
    app.include_router(read.router)
    app.include_router(dashboard.router)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("healthscore")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
