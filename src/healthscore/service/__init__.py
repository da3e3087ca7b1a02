"""The live service: an HTTP API and a dashboard over the same Python API the CLI uses.

Place in the flow: beside ``cli/``, above :mod:`healthscore.api` (nothing below imports
it; an import-linter contract checks it). ``healthscore serve`` runs :func:`run`: a
FastAPI app under Uvicorn that owns the store while it runs.

Modules, each owning one job:

- ``settings``  what a running service is configured with (:class:`Settings`)
- ``state``     the one open store, its lock, the model, the accounts waiting to be
                rescored (:class:`ServiceState`)
- ``auth``      API tokens (``hs_<id>_<secret>``), dashboard users, sessions, CSRF
- ``bodies``    JSON bodies read strictly (a key named twice is refused) and their
                errors worded, for every route that takes JSON
- ``ingest``    ``POST /v1/ingest/{table}``: canonical rows, validated as ``load`` does
- ``segment``   the Segment-compatible routes (``/v1/batch``, ``track``, ``identify``,
                ``group``)
- ``rescorer``  micro-batch rescoring of touched accounts into ``current_scores``, the
                daily rescore of everyone
- ``read``      the read API (accounts, one account, history, why, portfolio, flags)
- ``dashboard`` server-rendered pages (Jinja2 templates, HTMX, Plotly) for CSMs
- ``owner``     the running server's address file: how a CLI command finds the server
                that owns the store
- ``app``       the FastAPI app that puts them together (:func:`create_app`)
"""

from __future__ import annotations

from collections.abc import Callable

from healthscore.service.settings import Settings

__all__ = ["Settings", "run", "server_config"]


def server_config(app, settings: Settings):
    """Uvicorn's configuration of the service (``run``'s, and the tests' servers').

    ``proxy_headers`` off: Uvicorn otherwise takes the client's address from an
    ``X-Forwarded-For`` header sent from 127.0.0.1, so any program on the machine could
    name a new address at each login and pass the per-address login limit. Behind a
    reverse proxy every client has the proxy's address (docs/service.md)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


def run(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM): the app under Uvicorn on
    ``settings.host:settings.port``. A library or disk error while starting (a full
    disk, a store that cannot be written) is raised as itself, for the CLI's one-line
    ``Error: ...``, instead of Uvicorn's traceback and exit code 3. ``on_ready`` is
    called once the service has started and listens (the CLI says where it is then, so
    a start that fails never said "serving")."""
    import logging

    import uvicorn

    from healthscore.core.files import disk_error
    from healthscore.service.app import create_app

    app = create_app(settings)

    def quiet(record: logging.LogRecord) -> bool:  # the traceback Uvicorn would print
        return getattr(app.state, "startup_error", None) is None

    log = logging.getLogger("uvicorn.error")
    config = server_config(app, settings)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready()

    server = Server(config)  # after Config, which sets up Uvicorn's loggers
    log.addFilter(quiet)
    try:
        server.run()
    except SystemExit:  # Uvicorn's exit when the app failed to start
        error = getattr(app.state, "startup_error", None)
        if error is None:  # another reason, which Uvicorn logged
            raise
        raise (disk_error(error) or error) if isinstance(error, OSError) else error from None
    finally:
        log.removeFilter(quiet)
