"""Dashboard logins: ``GET/POST /login`` and ``POST /logout``, with login throttling.

Place in the flow: a router of ``service/`` over :mod:`healthscore.service.auth` (users,
passwords, signed sessions, the CSRF check). The login page is the template
``dashboard/templates/login.html``.

- The form carries a CSRF token, double-submitted: a random value in a short-lived
  cookie of its own (``hs_login_csrf``) and in the form; a POST without both, or with a
  foreign ``Origin``, is refused (403).
- A successful login sets the session cookie (HttpOnly, SameSite=Lax, Secure when
  ``settings.secure_cookies``) and goes to ``next``, which must be a path of this
  server (anything else goes to ``/``: no open redirect).
- After ``settings.login_failures`` failed logins (5) for one user name, or from one
  client address, within ``settings.login_window`` (15 min), logins for it are refused
  with 429 and a ``Retry-After`` until the oldest failure is that old; a successful
  login clears both counts. The counts live in the server's memory (a restart clears
  them).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from healthscore.service import auth

router = APIRouter(tags=["dashboard"], include_in_schema=False)

LOGIN_CSRF_COOKIE = "hs_login_csrf"
TEMPLATES = Path(__file__).parent / "dashboard" / "templates"


class Throttle:
    """Failed logins per key (a user name, a client address) in a sliding window."""

    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
        return q

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until a login for ``keys`` is allowed again; None: allowed now."""
        with self._lock:
            now = self.clock()
            waits = []
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.limit:
                    waits.append(q[-self.limit] + self.window - now)
            return max(1, int(max(waits)) + 1) if waits else None

    def failed(self, *keys: str) -> None:
        with self._lock:
            now = self.clock()
            for key in keys:
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def throttle(request: Request) -> Throttle:
    """The app's one throttle (made on first use from its settings)."""
    app = request.app
    found = getattr(app.state, "login_throttle", None)
    if found is None:
        s = app.state.service.settings
        found = app.state.login_throttle = Throttle(s.login_failures, s.login_window)
    return found


def local_path(target: str | None) -> str:
    """``target`` when it is a path of this server (``/accounts?band=red``), else ``/``."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _render(name: str, **context) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    return env.get_template(name).render(**context)


def _page(
    request: Request,
    next_: str,
    *,
    error: str | None = None,
    username: str = "",
    status: int = 200,
    headers: dict | None = None,
) -> HTMLResponse:
    """The login page with a fresh pre-session CSRF token (cookie and form field)."""
    csrf = secrets.token_urlsafe(24)
    html = _render("login.html", csrf=csrf, next=next_, error=error, username=username)
    response = HTMLResponse(html, status_code=status, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, csrf, max_age=3600)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int):
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.app.state.service.settings.secure_cookies,
    )


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    """The login form (or, with a session already, straight on to ``next``)."""
    target = local_path(next)
    state = request.app.state.service
    if auth.read_session(state, request.cookies.get(auth.SESSION_COOKIE)) is not None:
        return RedirectResponse(target, status_code=303)
    return _page(request, target)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the user name and password; on success start a session and go to ``next``."""
    form = await request.form()
    target = local_path(str(form.get("next") or "/"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected:  # a form from elsewhere, or cookies off
        return _page(
            request, target, error="The form had expired; please log in again.", status=403
        )
    try:
        await auth.check_csrf(request, expected)
    except HTTPException:
        return _page(
            request, target, error="The form had expired; please log in again.", status=403
        )
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    client = request.client.host if request.client else "unknown"
    keys = (f"user:{username.lower()}", f"ip:{client}")
    gate = throttle(request)
    wait = gate.retry_after(*keys)
    if wait is not None:
        return _page(
            request,
            target,
            error=f"Too many failed logins. Try again in {_minutes(wait)}.",
            username=username,
            status=429,
            headers={"Retry-After": str(wait)},
        )
    state = request.app.state.service
    user = None
    if username and password:
        with state.store_access() as store:
            user = auth.check_password(store, username, password)
    if user is None:
        gate.failed(*keys)
        return _page(
            request, target, error="Wrong user name or password.", username=username, status=401
        )
    gate.succeeded(*keys)
    response = RedirectResponse(target, status_code=303)
    _set_cookie(
        request,
        response,
        auth.SESSION_COOKIE,
        auth.start_session(state, user),
        max_age=auth.SESSION_MAX_AGE,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session on the server (with its CSRF token: a copy of the cookie no
    longer works either) and in the browser, and go to the login page."""
    from starlette.concurrency import run_in_threadpool

    state = request.app.state.service
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    found = await run_in_threadpool(auth.read_session, state, cookie)
    if found is not None:
        await auth.check_csrf(request, found[1])
        await run_in_threadpool(auth.end_session, state, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def _minutes(seconds: int) -> str:
    minutes = (seconds + 59) // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
