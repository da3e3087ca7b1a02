"""The API's documentation: ``GET /openapi.json`` and the Swagger UI page ``GET /docs``.

Place in the flow: a router of ``service/``. FastAPI's default docs pages load Swagger UI
from a CDN, so they are off (see ``app``); this page loads the copy installed with the
``swagger-ui-bundle`` package, served from ``/docs/assets/``: nothing leaves the server.
That Swagger UI (4.x) reads OpenAPI 3.0, so the page reads ``/docs/openapi-3.0.json``,
the 3.1 schema of ``/openapi.json`` written as 3.0.

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


def as_openapi_30(node):
    """The schema as OpenAPI 3.0, which the Swagger UI of ``swagger-ui-bundle`` (4.x)
    reads; FastAPI writes 3.1. Nullable types (``anyOf`` with ``{"type": "null"}``)
    become ``nullable: true``, ``const`` a one-value ``enum``, a schema's ``examples``
    list its ``example``."""
    if isinstance(node, list):
        return [as_openapi_30(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_openapi_30(v) for k, v in node.items()}
    if "openapi" in out and isinstance(out["openapi"], str):
        out["openapi"] = "3.0.3"
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [x for x in any_of if x != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out = {**rest[0], **out}
        elif len(rest) == 1:
            out["allOf"] = rest
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("examples"), list) and ("type" in out or "$ref" in out):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    return out


@router.get("/openapi.json")
def openapi_json(request: Request) -> JSONResponse:
    """The API's OpenAPI (3.1) schema."""
    return JSONResponse(openapi_schema(request.app))


@router.get("/docs/openapi-3.0.json")
def openapi_30_json(request: Request) -> JSONResponse:
    """The same schema as OpenAPI 3.0, for the docs page's Swagger UI."""
    return JSONResponse(as_openapi_30(openapi_schema(request.app)))


@router.get("/docs")
def docs_page(request: Request) -> HTMLResponse:
    title = html.escape(request.app.title)
    config = json.dumps(
        {
            "url": "/docs/openapi-3.0.json",
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
