"""The API's documentation: ``GET /openapi.json`` and the Swagger UI page ``GET /docs``.

Place in the flow: a router of ``service/``. FastAPI's default docs pages load Swagger UI
from a CDN, so they are off (see ``app``); this page loads the copy installed with the
``swagger-ui-bundle`` package, served from ``/docs/assets/``: nothing leaves the server.

Who may read them: a bearer token with ``read`` (or ``admin``), or a logged-in
dashboard session of any role, so a CSM can open ``/docs`` in the browser they are
logged in with. Everyone else gets 401. The page's "Authorize" button takes a token,
which ``/v1`` routes need (a session never counts there).
"""

from __future__ import annotations

import html
import json
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from healthscore.service import auth

#: the Swagger UI files the page uses (the bundle's other files are not served)
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")


def _reader(request: Request) -> None:
    """A bearer token allowing ``read``, or a dashboard session; else 401/403."""
    if auth.bearer_text(request) is None:
        state = request.app.state.service
        if auth.read_session(state, request.cookies.get(auth.SESSION_COOKIE)) is not None:
            return
    # no session: the bearer token decides (401 without one, 403 without read)
    auth.require("read").dependency(request)


router = APIRouter(include_in_schema=False, dependencies=[Depends(_reader)])


def _assets_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def openapi_schema(app) -> dict:
    """The app's OpenAPI schema, with bearer tokens declared for ``/v1``."""
    if app.openapi_schema is None:
        schema = app.openapi()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API token, hs_<id>_<secret> (`healthscore token create`)",
        }
        for path, ops in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op.setdefault("security", [{"bearer": []}])
        app.openapi_schema = schema
    return app.openapi_schema


@router.get("/openapi.json")
def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi_schema(request.app))


@router.get("/docs")
def docs_page(request: Request) -> HTMLResponse:
    title = html.escape(request.app.title)
    config = json.dumps(
        {
            "url": "/openapi.json",
            "dom_id": "#swagger-ui",
            "deepLinking": True,
            "persistAuthorization": False,
        }
    )
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} API</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
const config = {config};
config.presets = [SwaggerUIBundle.presets.apis];
config.layout = "BaseLayout";
window.ui = SwaggerUIBundle(config);
</script>
</body>
</html>
"""
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "no such file")
    path = _assets_dir() / name
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=86400"})
