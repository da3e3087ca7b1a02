"""Who may do what in the live service, over real HTTP on loopback: the whole route
contract against no credentials, read / ingest / segment / admin tokens and viewer /
member / admin logins (each refusal writes nothing); logins (throttling, cookie flags,
CSRF, no open redirect); the API docs served from the package; and one owner of the
store: CLI commands while ``healthscore serve`` runs (a real subprocess) go through it or
fail with a clear message, and work directly again once it stops.

Cells of routes not on this branch (other parts of the service are built in parallel)
are skipped, naming the route; select cells with ``-k``, e.g. ``-k "v1/tokens"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import fixtures
from service_support import free_port, light_password_hashing, running_service

PASSWORD = "correct horse battery staple"
ROLES = ("viewer", "member", "admin")
TOKENS = ("read", "ingest", "segment", "admin")
PRINCIPALS = ("nobody", *(f"token:{t}" for t in TOKENS), *(f"login:{r}" for r in ROLES))


# --- the contract ---
#
# (method, path template, who may, body, whether the body's shape is known on this branch)
# who may: "open"; "scope:<s>" a bearer token allowing s; "segment" the token as the
# HTTP Basic user; "docs" a token allowing read or any login; "role:<r>" a login of r.

ROUTES = [
    ("GET", "/health", "open", None, True),
    ("GET", "/v1/accounts", "scope:read", None, True),
    ("GET", "/v1/accounts/{account_id}", "scope:read", None, True),
    ("GET", "/v1/accounts/{account_id}/history", "scope:read", None, True),
    (
        "GET",
        "/v1/accounts/{account_id}/why?from=2025-06-01&to=2025-07-01",
        "scope:read",
        None,
        True,
    ),
    ("GET", "/v1/portfolio", "scope:read", None, True),
    ("GET", "/v1/status", "scope:read", None, True),
    ("GET", "/v1/flags", "scope:read", None, True),
    ("GET", "/v1/feedback", "scope:read", None, True),
    ("POST", "/v1/flags", "scope:ingest:flags", "new_flag", False),
    ("POST", "/v1/flags/{flag_id}/resolve", "scope:ingest:flags", {}, False),
    ("GET", "/v1/ingest/rejects", "scope:read", None, True),
    ("GET", "/v1/ingest/pending", "scope:read", None, True),
    ("POST", "/v1/ingest/usage_events", "scope:ingest:usage_events", "usage_rows", True),
    ("POST", "/v1/batch", "segment", "segment_batch", False),
    ("POST", "/v1/track", "segment", "segment_track", False),
    ("POST", "/v1/identify", "segment", "segment_identify", False),
    ("POST", "/v1/group", "segment", "segment_group", False),
    ("GET", "/v1/tokens", "scope:admin", None, True),
    ("POST", "/v1/tokens", "scope:admin", {"name": "matrix", "scopes": ["read"]}, True),
    ("DELETE", "/v1/tokens/{token_id}", "scope:admin", None, True),
    ("GET", "/v1/users", "scope:admin", None, True),
    ("POST", "/v1/users", "scope:admin", "new_user", True),
    ("DELETE", "/v1/users/{username}", "scope:admin", None, True),
    ("GET", "/openapi.json", "docs", None, True),
    ("GET", "/docs", "docs", None, True),
    ("GET", "/login", "open", None, True),
    ("POST", "/logout", "open", {}, True),
    ("GET", "/static/htmx.min.js", "open", None, True),
    ("GET", "/", "role:viewer", None, True),
    ("GET", "/accounts", "role:viewer", None, True),
    ("GET", "/accounts/{account_id}", "role:viewer", None, True),
    ("GET", "/model", "role:viewer", None, True),
    ("GET", "/model/feedback.csv", "role:viewer", None, True),
    ("POST", "/accounts/{account_id}/flags", "role:member", "form_flag", True),
    ("POST", "/flags/{flag_id}/resolve", "role:member", {}, True),
    ("POST", "/accounts/{account_id}/feedback", "role:member", "form_feedback", False),
    ("GET", "/admin", "role:admin", None, True),
    ("POST", "/admin/users", "role:admin", "form_user", True),
    ("POST", "/admin/tokens", "role:admin", {"name": "matrix", "scopes": "read"}, True),
    ("POST", "/admin/tokens/{token_id}/revoke", "role:admin", {}, True),
]


def expected(rule: str, who: str, method: str) -> int | str:
    """The status a principal gets: a code, or "ok" (allowed: 2xx/3xx, or for a body
    whose shape this branch cannot know, anything but 401/403/404)."""
    kind, _, name = who.partition(":")
    if rule == "open":
        return "ok"
    if rule == "docs":
        if kind == "login" or (kind == "token" and name in ("read", "admin")):
            return "ok"
        return 403 if kind == "token" else 401
    if rule.startswith("role:"):
        need = rule.removeprefix("role:")
        if kind != "login":  # a token is no session
            return 303 if method == "GET" else 401
        return "ok" if ROLES.index(name) >= ROLES.index(need) else 403
    if kind != "token":  # /v1 takes tokens only; a session never counts
        return 401
    if rule == "segment":
        return "ok" if name in ("segment", "admin") else 403
    scope = rule.removeprefix("scope:").partition(":")[0]
    return "ok" if name in ("admin", scope) else 403


CELLS = [
    pytest.param(route, who, id=f"{route[0]} {route[1].split('?')[0]} as {who}")
    for route in ROUTES
    for who in PRINCIPALS
]


# --- fixtures ---


@pytest.fixture(scope="module", autouse=True)
def _light_passwords():
    """Cheap argon2id for this module's many users and logins (see service_support)."""
    with light_password_hashing():
        yield


def login(url: str, username: str, password: str, **kw) -> httpx.Response:
    """Log in as a browser does: the form page (its CSRF cookie and field), then POST
    (the cookie sent back by hand: a Secure one too, as a browser would over HTTPS)."""
    page = httpx.get(url + "/login", timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    data = {"username": username, "password": password, "csrf_token": csrf, **kw}
    cookie = f"hs_login_csrf={page.cookies['hs_login_csrf']}"
    return httpx.post(url + "/login", data=data, headers={"Cookie": cookie}, timeout=30)


@pytest.fixture(scope="module")
def service(demo_project):
    """The conftest's service, its rescorer not warmed up: no test here times a
    micro-batch, and the plans of small batches built at start took a fifth of this
    module's CPU (a batch builds the plan it needs on first use instead)."""
    with running_service(demo_project.db_path, demo_project.model_path, warm_up=False) as s:
        yield s


@pytest.fixture(scope="module")
def people(service):
    """A token per scope and a logged-in session per role."""
    from healthscore.service.auth import add_user, read_session

    out = {f"token:{t}": service.token(t, name=f"matrix {t}") for t in TOKENS}
    for role in ROLES:
        with service.state.store_access() as store:
            add_user(store, f"matrix-{role}", PASSWORD, role, csm="Maria Lopez")
        r = login(service.url, f"matrix-{role}", PASSWORD)
        assert r.status_code == 303, r.text
        cookie = r.cookies["hs_session"]
        out[f"login:{role}"] = (cookie, read_session(service.state, cookie)[1])
    return out


def own_session(state, username: str) -> tuple[str, str]:
    """A new session of ``username``: its cookie and CSRF token."""
    from healthscore.service.auth import get_user, read_session, start_session

    with state.store_access() as store:
        user = get_user(store, username)
    cookie = start_session(state, user)
    return cookie, read_session(state, cookie)[1]


@pytest.fixture(scope="module")
def routes_here():
    """The routes the app has on this branch (an app not started: only its table)."""
    from healthscore.service import Settings
    from healthscore.service.app import create_app

    return create_app(Settings()).routes


def has_route(routes, method: str, template: str) -> bool:
    """Whether ``method template`` is a route of the app (not merely any path)."""
    from starlette.routing import Match

    path = re.sub(r"\{[^}]*\}", "x1", template.split("?")[0])
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return any(r.matches(scope)[0] == Match.FULL for r in routes)


def fingerprint(state) -> tuple:
    """Every table but the scores (the rescorer's to write): its row count and the sum of
    its rows' hashes (order-free: any row added, removed or changed moves it), in one
    query of the store's own SQL. (Through Ibis, a count and every row per table, twice
    per writing cell, it was a quarter of this module's CPU.)"""
    with state.store_access() as store:
        names = [
            n
            for n in sorted(store.list_tables())
            if not n.startswith(("score", "current_score", "_healthscore"))
        ]
        sql = " UNION ALL ".join(
            f"SELECT '{n}' AS name, count(*) AS n, sum(hash(t)::HUGEINT)::VARCHAR AS h"
            f' FROM "{n}" AS t'
            for n in names
        )
        return tuple(sorted(map(tuple, (r.values() for r in store.execute_sql(sql).to_pylist()))))


def one_account(state) -> str:
    with state.store_access() as store:
        t = store.stored("accounts")
        return store.execute(t.select("account_id").order_by("account_id").limit(1))["account_id"][
            0
        ].as_py()


def bodies(name, account: str):
    now = fixtures.DEMO_END.isoformat()
    made = {
        "new_flag": {"account_id": account, "kind": "champion_left", "note": "matrix"},
        "usage_rows": {
            "rows": [
                {
                    "event_id": f"matrix-{uuid.uuid4().hex}",
                    "account_id": account,
                    "ts": now,
                    "event": "login",
                }
            ]
        },
        "segment_track": {"userId": "u1", "event": "login", "context": {"groupId": account}},
        "segment_identify": {"userId": "u1", "traits": {"email": "u1@example.com"}},
        "segment_group": {"userId": "u1", "groupId": account},
        "segment_batch": {
            "batch": [{"type": "track", "userId": "u1", "event": "login", "timestamp": now}]
        },
        "new_user": {"username": "matrix-new", "password": PASSWORD, "role": "viewer"},
        "form_flag": {"kind": "champion_left", "note": "matrix"},
        "form_feedback": {"verdict": "agree", "reason": "matrix"},
        "form_user": {"username": "matrix-form", "password": PASSWORD, "role": "viewer"},
    }
    return made.get(name, name) if isinstance(name, str) else name


def fill(template: str, state, account: str) -> str:
    """The path with real ids: a throwaway token, user and flag for each cell."""
    from healthscore import api
    from healthscore.service.auth import add_user, create_token

    with state.store_access() as store:
        if "{token_id}" in template:
            tid = create_token(store, "throwaway", ["read"]).token.token_id
            template = template.replace("{token_id}", tid)
        if "{username}" in template:
            add_user(store, "throwaway", PASSWORD, "viewer")
            template = template.replace("{username}", "throwaway")
        if "{flag_id}" in template:
            row = api.add_flag(store, account, "budget_freeze", at=fixtures.DEMO_END)
            template = template.replace("{flag_id}", row["flag_id"])
    return template.replace("{account_id}", account)


# --- the matrix ---


@pytest.fixture(scope="module")
def account(service) -> str:
    """The account the cells write about: the first by id (no cell adds one)."""
    return one_account(service.state)


@pytest.mark.parametrize(("route", "who"), CELLS)
def test_access(service, people, routes_here, account, route, who):
    method, template, rule, body, shape_known = route
    # every route of the contract exists: a route gone is a failure, not a skipped cell
    assert has_route(routes_here, method, template), f"{method} {template} is not served"
    path = fill(template, service.state, account)
    want = expected(rule, who, method)
    headers, cookies, auth = {}, {}, None
    kind, _, _ = who.partition(":")
    if kind == "token":
        if rule == "segment":
            auth = (people[who], "")
        else:
            headers["Authorization"] = f"Bearer {people[who]}"
    elif kind == "login":
        cookie, csrf = people[who]
        if template == "/logout":  # it ends the session: log out of a session of its own
            cookie, csrf = own_session(service.state, f"matrix-{who.partition(':')[2]}")
        cookies["hs_session"] = cookie
        headers["X-CSRF-Token"] = csrf
    data = bodies(body, account)
    form = template.startswith(("/accounts", "/flags", "/admin", "/logout"))
    writes = method != "GET" and template != "/logout"
    before = fingerprint(service.state) if writes else None
    with httpx.Client(base_url=service.url, timeout=60, cookies=cookies) as c:
        r = c.request(
            method,
            path,
            headers=headers,
            auth=auth,
            json=None if form or data is None else data,
            data=data if form and data is not None else None,
            follow_redirects=False,
        )
    if want == "ok":
        if shape_known:
            assert r.status_code < 400, (r.status_code, r.text[:300])
            if writes:  # the fingerprint sees writes: an allowed one changes it
                assert fingerprint(service.state) != before
        else:
            assert r.status_code not in (401, 403, 404), (r.status_code, r.text[:300])
        return
    assert r.status_code == want, (r.status_code, r.text[:300])
    if want == 303:
        assert r.headers["location"].startswith("/login?next=")
    if want == 401 and (rule.startswith("scope:") or rule == "docs"):
        assert r.headers.get("www-authenticate", "").lower().startswith(("bearer", "basic"))
    if before is not None:
        assert fingerprint(service.state) == before, "a refused request wrote to the store"


def test_a_rescorer_not_warmed_up_builds_a_batchs_plan_on_first_use(service):
    """``warm_up`` off (this module's services): nothing is left to build, nothing was
    built at start, and a write's account is rescored all the same."""
    from healthscore.store import current

    state = service.state
    account = one_account(state)
    flag = {"account_id": account, "kind": "champion_left", "note": "first use"}
    with service.client() as api:
        st = api.get("/v1/status").json()["rescorer"]
        assert st["warm"] is False and st["plans_to_build"] == 0 and st["last_error"] is None
        done = st["accounts_rescored"]
        assert api.post("/v1/flags", json=flag).status_code == 201
        deadline = time.monotonic() + 120
        while api.get("/v1/status").json()["rescorer"]["accounts_rescored"] == done:
            assert time.monotonic() < deadline, "the write's account was never rescored"
            time.sleep(0.05)
        assert api.get("/v1/status").json()["rescorer"]["last_error"] is None
    with state.store_access() as store:
        rows = store.execute(current.of_model(store, state.model.version, "health"))
    assert account in rows["account_id"].to_pylist()


def test_the_matrix_covers_every_route_of_the_contract():
    """Every row of the contract is a row of ROUTES (written from the contract, so a
    route missing here is one nobody checks)."""
    contract = {
        "GET /v1/accounts", "GET /v1/accounts/{}", "GET /v1/accounts/{}/history",
        "GET /v1/accounts/{}/why", "GET /v1/portfolio", "GET /v1/status", "GET /v1/flags",
        "POST /v1/flags", "POST /v1/flags/{}/resolve", "GET /v1/ingest/rejects",
        "GET /v1/ingest/pending", "POST /v1/ingest/{}", "POST /v1/batch", "POST /v1/track",
        "POST /v1/identify", "POST /v1/group", "GET /v1/tokens", "POST /v1/tokens",
        "DELETE /v1/tokens/{}", "GET /v1/users", "POST /v1/users", "DELETE /v1/users/{}",
        "GET /openapi.json", "GET /docs", "GET /health", "GET /login", "POST /logout",
        "GET /v1/feedback", "GET /model/feedback.csv",
        "GET /", "GET /accounts", "GET /accounts/{}", "GET /model",
        "POST /accounts/{}/flags", "POST /flags/{}/resolve", "POST /accounts/{}/feedback",
        "GET /admin", "POST /admin/users", "POST /admin/tokens",
        "POST /admin/tokens/{}/revoke", "GET /static/{}",
    }  # fmt: skip
    ours = set()
    for method, template, *_ in ROUTES:
        path = re.sub(r"\{[^}]*\}", "{}", template.split("?")[0])
        if method == "POST":
            path = re.sub(r"^/v1/ingest/\w+$", "/v1/ingest/{}", path)
        ours.add(f"{method} {re.sub(r'^/static/.+$', '/static/{}', path)}")
    assert ours == contract


# --- logins ---


@pytest.fixture(scope="module")
def strict(demo_project, tmp_path_factory):
    """A second service (its own store copy) with Secure cookies and a short login window."""
    d = tmp_path_factory.mktemp("strict")
    shutil.copy2(demo_project.db_path, d / "strict.duckdb")
    with running_service(
        d / "strict.duckdb",
        demo_project.model_path,
        secure_cookies=True,
        login_failures=5,
        login_window=10,
        warm_up=False,
    ) as running:
        from healthscore.service.auth import add_user
        from healthscore.service.login import Throttle

        with running.state.store_access() as store:
            for name in ("ana", "ben", "cy"):
                add_user(store, name, PASSWORD, "member")
        # the app's throttle, made from the settings at the first login, then on the
        # monotonic clock plus what the tests skipped: waiting out a lock is
        # ``skip(retry_after)``, not a sleep of up to 11 s
        assert login(running.url, "cy", PASSWORD).status_code == 303
        gate = running.app.state.login_throttle
        assert isinstance(gate, Throttle) and (gate.limit, gate.window) == (5, 10)
        skipped = [0.0]
        gate.clock = lambda: time.monotonic() + skipped[0]
        running.skip = lambda seconds: skipped.__setitem__(0, skipped[0] + seconds)
        yield running


def test_five_failures_lock_a_user_out_for_a_while_and_success_resets(strict):
    for _ in range(4):
        assert login(strict.url, "ana", "wrong password!!").status_code == 401
    assert login(strict.url, "ana", PASSWORD).status_code == 303  # resets the count
    for _ in range(5):
        r = login(strict.url, "ana", "wrong password!!")
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    locked = login(strict.url, "ana", PASSWORD)  # even the right password, for a while
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 11
    assert "hs_session" not in locked.cookies
    strict.skip(int(locked.headers["retry-after"]))  # as long as it says, no less
    assert login(strict.url, "ana", PASSWORD).status_code == 303


def test_five_failures_from_one_address_lock_other_users_too(strict):
    for name in ("x1", "x2", "x3", "x4", "x5"):  # guessing user names from one address
        assert login(strict.url, name, "wrong password!!").status_code == 401
    r = login(strict.url, "ben", PASSWORD)
    assert r.status_code == 429 and "Too many failed logins" in r.text
    strict.skip(int(r.headers["retry-after"]))
    assert login(strict.url, "ben", PASSWORD).status_code == 303


def test_a_forwarded_for_header_does_not_pass_the_per_address_limit(strict):
    """Uvicorn took the client's address from ``X-Forwarded-For`` when sent from
    127.0.0.1, so a program on the machine naming a new address at each attempt was
    never limited (found by the service probe of the tenth session)."""
    for i, name in enumerate(("f1", "f2", "f3", "f4", "f5")):
        page = httpx.get(strict.url + "/login", timeout=30)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = httpx.post(
            strict.url + "/login",
            data={"username": name, "password": "wrong password!!", "csrf_token": csrf},
            headers={
                "Cookie": f"hs_login_csrf={page.cookies['hs_login_csrf']}",
                "X-Forwarded-For": f"203.0.113.{i + 1}",
            },
            timeout=30,
        )
        assert r.status_code == 401, r.text
    r = login(strict.url, "ben", PASSWORD)
    assert r.status_code == 429, r.text
    strict.skip(int(r.headers["retry-after"]))


def test_the_session_cookie_is_httponly_lax_and_secure_when_asked(service, strict):
    from healthscore.service.auth import add_user

    with service.state.store_access() as store:
        add_user(store, "cookie", PASSWORD, "viewer")
    for running, user, secure in ((service, "cookie", False), (strict, "cy", True)):
        r = login(running.url, user, PASSWORD)
        assert r.status_code == 303
        (cookie,) = [v for v in r.headers.get_list("set-cookie") if v.startswith("hs_session=")]
        attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
        assert "httponly" in attrs and attrs["samesite"].strip().lower() == "samesite=lax"
        assert ("secure" in attrs) is secure
        assert attrs["path"].strip() == "Path=/"


def test_login_without_its_csrf_token_or_from_another_origin_is_refused(service):
    from healthscore.service.auth import add_user

    with service.state.store_access() as store:
        add_user(store, "csrf", PASSWORD, "member")
    with httpx.Client(base_url=service.url, timeout=30) as c:
        page = c.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = {"username": "csrf", "password": PASSWORD}
        assert c.post("/login", data=form).status_code == 403  # no field
        assert c.post("/login", data={**form, "csrf_token": "forged"}).status_code == 403
        evil = c.post(
            "/login", data={**form, "csrf_token": csrf}, headers={"Origin": "http://evil.test"}
        )
        assert evil.status_code == 403 and "hs_session" not in evil.cookies
        # the field without its cookie (a forged cross-site form) is refused too
    with httpx.Client(base_url=service.url, timeout=30) as bare:
        r = bare.post("/login", data={**form, "csrf_token": csrf})
        assert r.status_code == 403 and "hs_session" not in r.cookies
    # logging out is a write: the session's CSRF token is needed
    r = login(service.url, "csrf", PASSWORD)
    session = r.cookies["hs_session"]
    from healthscore.service.auth import read_session

    token = read_session(service.state, session)[1]
    with httpx.Client(base_url=service.url, timeout=30, cookies={"hs_session": session}) as c:
        assert c.post("/logout").status_code == 403
        assert c.post("/logout", headers={"X-CSRF-Token": "forged"}).status_code == 403
        cross = {"X-CSRF-Token": token, "Origin": "http://evil.test"}
        assert c.post("/logout", headers=cross).status_code == 403
        assert c.get("/accounts", follow_redirects=False).status_code == 200
        ok = c.post("/logout", headers={"X-CSRF-Token": token, "Origin": service.url})
        assert ok.status_code == 303 and 'hs_session=""' in ok.headers["set-cookie"]


def test_a_forged_csrf_token_beyond_ascii_is_refused_not_a_server_error(service, people):
    """A CSRF token holding a character beyond ASCII ("é" in the form, byte 0xE9 in the
    header) is refused like any wrong token, with nothing written; comparing it was a
    500 (``hmac.compare_digest`` takes text of ASCII only)."""
    cookie, _ = people["login:member"]
    before = fingerprint(service.state)
    flag = {"kind": "champion_left"}
    with httpx.Client(base_url=service.url, timeout=30, cookies={"hs_session": cookie}) as c:
        refused = [
            c.post("/accounts/ACC-00001/flags", data={**flag, "csrf_token": "\u00e9"}),
            c.post(
                "/accounts/ACC-00001/flags",
                data=flag,
                headers={"X-CSRF-Token": b"\xe9", "Origin": service.url},
            ),
            c.post("/logout", data={"csrf_token": "caf\u00e9"}),
        ]
    # the login form's token: a forged field beside its genuine cookie, and a cookie of
    # such a character beside the genuine field
    genuine = httpx.get(service.url + "/login", timeout=30).cookies["hs_login_csrf"]
    for field, jar in (("\u00e9", genuine.encode()), (genuine, b"\xe9")):
        refused.append(
            httpx.post(
                service.url + "/login",
                data={"username": "matrix-member", "password": PASSWORD, "csrf_token": field},
                headers={"Cookie": b"hs_login_csrf=" + jar},
                timeout=30,
            )
        )
    assert [r.status_code for r in refused] == [403] * 5, [r.text[:200] for r in refused]
    assert all("hs_session" not in r.cookies for r in refused[3:])
    assert fingerprint(service.state) == before


def _replayed(url: str, cookie: str, csrf: str) -> tuple[int, int]:
    """A copied session cookie sent again: (GET /accounts, POST a flag) status codes."""
    with httpx.Client(base_url=url, timeout=30, cookies={"hs_session": cookie}) as c:
        page = c.get("/accounts", follow_redirects=False)
        write = c.post(
            "/accounts/ACC-00001/flags",
            data={"kind": "champion_left", "csrf_token": csrf},
            follow_redirects=False,
        )
    return page.status_code, write.status_code


def test_a_copied_cookie_stops_working_at_logout(service):
    """Logout ends the session on the server, not only in the browser: the cookie sent
    again (a copy taken before) opens nothing, while another session of the user lives."""
    from healthscore.service.auth import add_user, read_session

    with service.state.store_access() as store:
        add_user(store, "leaver", PASSWORD, "member")
    cookie = login(service.url, "leaver", PASSWORD).cookies["hs_session"]
    other = login(service.url, "leaver", PASSWORD).cookies["hs_session"]
    csrf = read_session(service.state, cookie)[1]
    assert _replayed(service.url, cookie, "wrong")[0] == 200
    with httpx.Client(base_url=service.url, timeout=30, cookies={"hs_session": cookie}) as c:
        out = c.post("/logout", headers={"X-CSRF-Token": csrf, "Origin": service.url})
    assert out.status_code == 303
    page, write = _replayed(service.url, cookie, csrf)
    assert page == 303 and write == 401
    assert read_session(service.state, cookie) is None
    assert read_session(service.state, other) is not None  # only that session ended
    # logging out again with the dead cookie is harmless
    with httpx.Client(base_url=service.url, timeout=30, cookies={"hs_session": cookie}) as c:
        assert c.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 303


def test_removing_or_demoting_a_user_ends_their_sessions(service, people):
    from healthscore.service.auth import add_user, read_session

    with service.state.store_access() as store:
        add_user(store, "demoted", PASSWORD, "admin")
        add_user(store, "removed", PASSWORD, "member")
    demoted = login(service.url, "demoted", PASSWORD).cookies["hs_session"]
    removed = login(service.url, "removed", PASSWORD).cookies["hs_session"]
    assert _replayed(service.url, demoted, "x")[0] == _replayed(service.url, removed, "x")[0] == 200
    with service.client() as api:  # the admin API, as `auth user add/remove` sends it
        r = api.post(
            "/v1/users", json={"username": "demoted", "password": PASSWORD, "role": "viewer"}
        )
        assert r.status_code == 201
        assert api.delete("/v1/users/removed").status_code == 200
    assert _replayed(service.url, demoted, "x")[0] == 303
    assert _replayed(service.url, removed, "x")[0] == 303
    # the demoted user logs in again, as a viewer
    again = login(service.url, "demoted", PASSWORD).cookies["hs_session"]
    assert read_session(service.state, again)[0].role == "viewer"
    # nobody else lost a session
    assert read_session(service.state, people["login:admin"][0]) is not None


@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("/accounts?band=red", "/accounts?band=red"),
        ("//evil.test/x", "/"),
        ("https://evil.test/x", "/"),
        ("/\\evil.test", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_next_only_goes_to_a_path_of_this_server(service, target, lands):
    from healthscore.service.auth import add_user

    with service.state.store_access() as store:
        add_user(store, "nexter", PASSWORD, "viewer")
    r = login(service.url, "nexter", PASSWORD, next=target)
    assert r.status_code == 303 and r.headers["location"] == lands
    with httpx.Client(base_url=service.url, timeout=30) as c:
        page = c.get("/login", params={"next": target})
        assert f'name="next" value="{lands}"' in page.text.replace("&amp;", "&")


def test_a_wrong_password_and_an_unknown_user_read_the_same(service):
    a = login(service.url, "nobody-at-all", "wrong password!!")
    b = login(service.url, "matrix-viewer", "wrong password!!")
    assert a.status_code == b.status_code == 401
    assert "Wrong user name or password" in a.text and "Wrong user name or password" in b.text


# --- the API docs ---


def test_docs_load_everything_from_the_server_itself(service):
    read = service.token("read")
    with service.client(read) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        urls += re.findall(r"https?://[^\s\"'<>]+", page.text)
        assert urls and all(not urlsplit(u).netloc for u in urls), urls
        for u in urls:
            asset = c.get(u)
            assert asset.status_code == 200 and len(asset.content) > 500, u
        schema = c.get("/openapi.json").json()
        assert "/v1/tokens" in schema["paths"]
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        # the page's Swagger UI (4.x, from swagger-ui-bundle) reads OpenAPI 3.0
        old = c.get("/docs/openapi-3.0.json")
        assert old.json()["openapi"] == "3.0.3" and '"type":"null"' not in old.text
        assert old.json()["paths"].keys() == schema["paths"].keys()
    with service.client(token="") as anon:
        assert anon.get("/docs/assets/swagger-ui-bundle.js").status_code == 401
        assert anon.get("/docs/assets/index.html").status_code == 401
    with service.client(read) as c:
        assert c.get("/docs/assets/index.html").status_code == 404  # only what the page uses


def test_docs_render_in_chromium_with_nothing_from_another_host(service, people, browser):
    host = urlsplit(service.url).netloc
    elsewhere = []
    ctx = browser.new_context()
    try:
        cookie, _ = people["login:viewer"]
        ctx.add_cookies([{"name": "hs_session", "value": cookie, "url": service.url}])
        page = ctx.new_page()

        def route(r):
            if urlsplit(r.request.url).netloc != host:
                elsewhere.append(r.request.url)
                return r.abort()
            return r.continue_()

        page.route("**/*", route)
        page.goto(service.url + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_inner_texts()
        assert any(p.replace("\u200b", "") == "/v1/tokens" for p in paths), paths
        assert page.locator(".opblock").count() >= 6  # the admin routes at least
    finally:
        ctx.close()
    assert elsewhere == []


# --- tokens: made, used, revoked, expired ---


def cli(*args: str, cwd: Path | None = None, stdin: str | None = None, timeout: float = 120):
    """``healthscore ...`` as a real process, from this checkout's sources."""
    import healthscore

    env = {**os.environ, "PYTHONPATH": str(Path(healthscore.__file__).parents[1])}
    env["COLUMNS"] = "200"  # tables whole: a narrow terminal wraps names across lines
    env.pop("HEALTHSCORE_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "healthscore.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        input=stdin,
        timeout=timeout,
    )


def command(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``healthscore ...`` run in this process (Typer's runner), for tests of what a
    command does to the store rather than of the process: the same exit code, stdout and
    stderr as :func:`cli` without a process's start-up; an exception the command did not
    turn into an error message is raised here (a process would print its traceback)."""
    from typer.testing import CliRunner

    from healthscore.cli import app

    # tables whole (a narrow terminal wraps names across lines); no store from the env
    env = {"COLUMNS": "200", "HEALTHSCORE_DB": None}
    r = CliRunner().invoke(app, list(args), input=stdin, env=env)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def store_copy(demo_project, tmp_path) -> Path:
    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(demo_project.db_path, db)
    shutil.copy2(demo_project.model_path, tmp_path / "healthscore.yaml")
    return db


def test_a_token_made_by_the_cli_works_until_revoked_or_expired(store_copy):
    made = command(
        "token", "create", "--name", "CRM sync", "--scope", "read", "--db", str(store_copy)
    )
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip()
    assert re.fullmatch(r"hs_[0-9a-f]{12}_[\w-]{40,}", text)
    assert "shown once" in made.stderr
    listed = command("token", "list", "--db", str(store_copy))
    assert "CRM sync" in listed.stdout and text.split("_", 2)[2] not in listed.stdout
    bad = command("token", "create", "--name", "x", "--scope", "root", "--db", str(store_copy))
    assert bad.returncode == 1 and "unknown scope 'root'" in bad.stderr
    assert "Traceback" not in bad.stderr
    past = command(
        "token", "create", "--name", "x", "--scope", "read", "--expires", "2020-01-01",
        "--db", str(store_copy),
    )  # fmt: skip
    assert past.returncode == 1 and "not in the future" in past.stderr

    from healthscore.service.auth import create_token

    with running_service(store_copy, warm_up=False) as running:
        now = datetime.utcnow().replace(microsecond=0)
        with running.state.store_access() as store:
            # a minute is ample on a loaded machine; the expired one lapsed a second ago
            soon = create_token(
                store, "short-lived", ["read"], expires_at=now + timedelta(seconds=60)
            )
            gone = create_token(store, "lapsed", ["read"], expires_at=now - timedelta(seconds=1))
        with running.client(text) as c:
            assert c.get("/openapi.json").status_code == 200
            assert c.get("/v1/tokens").status_code == 403  # read is not admin
        with running.client(soon.text) as c:
            assert c.get("/openapi.json").status_code == 200
        with running.client(gone.text) as c:
            assert c.get("/openapi.json").status_code == 401
        with running.client() as admin:
            token_id = text.split("_")[1]
            assert admin.delete(f"/v1/tokens/{token_id}").json()["revoked_at"]
            assert admin.delete("/v1/tokens/nosuchtoken").status_code == 404
        with running.client(text) as c:
            assert c.get("/openapi.json").status_code == 401


def test_auth_user_add_takes_the_password_from_stdin_never_the_command_line(store_copy):
    r = command(
        "auth", "user", "add", "maria", "--role", "member", "--csm", "Maria Lopez",
        "--password-stdin", "--db", str(store_copy), stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    listed = command("auth", "user", "list", "--db", str(store_copy))
    assert re.search(r"maria\s+member\s+Maria Lopez", listed.stdout)
    short = command(
        "auth", "user", "add", "bo", "--password-stdin", "--db", str(store_copy), stdin="short\n"
    )
    assert short.returncode == 1 and "12 characters" in short.stderr
    assert (
        command("auth", "user", "add", "x", "--password", "p", "--db", str(store_copy)).returncode
        == 2
    )
    with running_service(store_copy, warm_up=False) as running:
        assert login(running.url, "maria", PASSWORD).status_code == 303
    gone = command("auth", "user", "remove", "maria", "--db", str(store_copy))
    assert gone.returncode == 0
    again = command("auth", "user", "remove", "maria", "--db", str(store_copy))
    assert again.returncode == 1 and "no user 'maria'" in again.stderr


# --- one owner of the store ---


#: seconds to wait on a served subprocess: while it starts it rescores everyone holding
#: the store, and under a loaded machine (tests of other sessions beside these) a request
#: waiting for the store, its start or its stop takes far longer than httpx's default 5
#: seconds; what is asserted is the same, only the patience differs (the CLI waits as
#: long, see service.local)
PATIENCE = 180


class Served:
    """``healthscore serve`` as a real subprocess (``--no-idle-builds``: building the
    plans of large batches while idle took most of the CPU of a server of these tests'
    seconds)."""

    def __init__(self, db: Path):
        self.db, self.port = db, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.owner_file = db.with_name(db.name + ".service") / "owner.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "healthscore.cli", "serve", "--db", str(db),
             "--model", str(db.parent / "healthscore.yaml"), "--port", str(self.port),
             "--admin-user", "admin", "--no-idle-builds"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": cli_path()},
        )  # fmt: skip
        deadline = time.monotonic() + PATIENCE
        while not self.owner_file.exists() or not self._up():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("healthscore serve did not start: " + self.proc.stderr.read())
            time.sleep(0.1)

    def _up(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, token: str) -> httpx.Client:
        """An HTTP client of this server with a bearer token, as patient as the CLI."""
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=PATIENCE)

    def stop(self, sig=signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=PATIENCE)
        return out + err


def cli_path() -> str:
    import healthscore

    return str(Path(healthscore.__file__).parents[1])


def test_cli_writes_go_through_the_running_server_and_others_say_it_owns_the_store(
    store_copy, routes_here
):
    db = str(store_copy)
    served = Served(store_copy)
    try:
        first_lines = served.proc.stdout.readline() + served.proc.stdout.readline()
        owner = json.loads(served.owner_file.read_text())
        assert owner["pid"] == served.proc.pid and owner["url"] == served.url
        assert oct(served.owner_file.stat().st_mode & 0o777) == "0o600"
        assert served.url in first_lines

        # token create goes through the server (DuckDB would refuse a second process)
        made = command("token", "create", "--name", "while serving", "--scope", "read", "--db", db)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        with served.client(token) as c:
            assert c.get("/openapi.json").status_code == 200
            # --no-idle-builds: at most the plans of the smallest batches left to build
            from healthscore.model import load_model
            from healthscore.service.rescorer import WARM_SLOTS

            cards = load_model(store_copy.parent / "healthscore.yaml").scorecard_names()
            plans = c.get("/v1/status").json()["rescorer"]["plans_to_build"]
            assert plans <= len(WARM_SLOTS) * len(cards), plans
        listed = command("token", "list", "--db", db)
        assert "while serving" in listed.stdout and "local CLI of the server" in listed.stdout
        revoked = command("token", "revoke", token.split("_")[1], "--db", db)
        assert revoked.returncode == 0, revoked.stderr
        with served.client(token) as c:
            assert c.get("/openapi.json").status_code == 401

        # flag add goes through POST /v1/flags when this branch has it
        if has_route(routes_here, "POST", "/v1/flags"):
            flagged = command("flag", "add", "ACC-00001", "champion_left", "--db", db)
            assert flagged.returncode == 0, flagged.stderr
            assert re.match(r"flag FLG-\w+: champion_left on ACC-00001", flagged.stdout)

        # every other command: refused with the server named, no traceback, nothing done
        csv = store_copy.parent / "accounts.csv"
        csv.write_text("account_id,name,created_at\nNEW-1,New Co,2025-01-01\n")
        for args in (
            ["load", "accounts", str(csv), "--db", db],
            ["score", "--db", db],
            ["history", "--from", "2025-06-01", "--to", "2025-07-01", "--db", db],
            ["flag", "list", "--db", db],
        ):
            r = command(*args)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            assert r.stderr.startswith(
                f"Error: the store {store_copy} is in use by the healthscore server at "
                f"{served.url} (pid {served.proc.pid}); `healthscore {args[0]}"
            ), r.stderr
            assert "Traceback" not in r.stderr and "IO Error" not in r.stderr
        # a command without --db that opens the store anyway: DuckDB's lock, named too
        r = command("init", str(store_copy.parent))
        assert r.returncode == 1 and f"in use by the healthscore server at {served.url}" in (
            r.stderr
        )
        # a second server on the same store
        second = cli("serve", "--db", db, "--port", str(free_port()))
        assert second.returncode == 1 and "in use by the healthscore server" in second.stderr
    finally:
        log = served.stop()
    assert "Traceback" not in log
    assert not served.owner_file.exists()
    # the server is gone: the CLI works directly again, and the local token was revoked
    after = command("token", "list", "--db", db)
    assert after.returncode == 0, after.stderr
    local_rows = [line for line in after.stdout.splitlines() if "local CLI" in line]
    assert local_rows and all(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d\s*$", r) for r in local_rows)
    loaded = command("load", "accounts", str(csv), "--db", db)
    assert loaded.returncode == 0 and "1 inserted" in loaded.stdout, loaded.stderr


def test_a_killed_servers_owner_file_is_ignored_and_its_token_revoked_at_next_start(store_copy):
    db = str(store_copy)
    served = Served(store_copy)
    local_token = json.loads(served.owner_file.read_text())["token"]
    served.stop(signal.SIGKILL)
    assert served.owner_file.exists()  # nobody removed it: stale
    r = command("auth", "user", "list", "--db", db)
    assert r.returncode == 0 and "admin" in r.stdout, r.stderr
    assert not served.owner_file.exists()  # the stale file is cleared
    again = Served(store_copy)
    try:
        with again.client(local_token) as c:
            assert c.get("/v1/tokens").status_code == 401  # the killed server's token
    finally:
        again.stop()


def test_serve_on_a_port_in_use_says_so_before_starting(store_copy):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = cli("serve", "--db", str(store_copy), "--port", str(port))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert not (store_copy.parent / "healthscore.duckdb.service" / "owner.json").exists()


def test_postgres_stores_have_no_owner(tmp_path):
    from healthscore.service import owner

    assert owner.default_state_dir("postgres://u@127.0.0.1/db") is None
    assert owner.find("postgres://u@127.0.0.1/db") is None
    assert owner.default_state_dir(tmp_path / "a.duckdb") == tmp_path / "a.duckdb.service"


def test_parked_messages_are_listed_by_the_cli_through_the_server_and_directly(store_copy):
    """`ingest rejects` and `ingest pending`: through the running server's API while it
    owns the store, from the store (read-only) once it stops; the same JSON either way;
    what a sender wrote is printed as text, never as markup."""
    db = str(store_copy)
    served = Served(store_copy)
    try:
        made = command("token", "create", "--name", "web", "--scope", "segment", "--db", db)
        key = made.stdout.strip()
        batch = {
            "batch": [
                {"type": "page", "userId": "[bold]u1[/bold]", "messageId": "cli-page"},
                {"type": "track", "userId": "cli-nobody", "event": "login",
                 "messageId": "cli-wait"},
            ]
        }  # fmt: skip
        r = httpx.post(served.url + "/v1/batch", json=batch, auth=(key, ""), timeout=PATIENCE)
        assert r.status_code == 200, r.text
        table = command("ingest", "rejects", "--db", db)
        assert table.returncode == 0, table.stderr
        assert "1 rejected messages" in table.stdout
        line = next(ln for ln in table.stdout.splitlines() if "cli-page" in ln)
        assert "'page' is not used" in line and "[bold]u1[/bold]" in line
        out = store_copy.parent / "pending.json"
        written = command("ingest", "pending", "--format", "json", "--out", str(out), "--db", db)
        assert written.returncode == 0, written.stderr
        served_json = json.loads(out.read_text())
        assert served_json["total"] == 1 and served_json["items"][0]["user_id"] == "cli-nobody"
        rejects_json = json.loads(command("ingest", "rejects", "-f", "json", "--db", db).stdout)
        with served.client(json.loads(served.owner_file.read_text())["token"]) as c:
            assert c.get("/v1/ingest/rejects").json() == rejects_json
    finally:
        served.stop()
    # no server: the store itself, opened read-only, says the same
    direct = command("ingest", "pending", "--format", "json", "--db", db)
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout) == served_json
    assert json.loads(command("ingest", "rejects", "-f", "json", "--db", db).stdout) == rejects_json
    paged = json.loads(
        command("ingest", "rejects", "-f", "json", "--offset", "1", "--db", db).stdout
    )
    assert paged == {"total": 1, "items": []}
    assert command("ingest", "rejects", "--limit", "0", "--db", db).returncode == 2


def test_a_token_name_past_200_characters_is_refused_saying_so(store_copy):
    """A name of thousands of characters was stored and printed in every listing."""
    r = command("token", "create", "--name", "n" * 201, "--scope", "read", "--db", str(store_copy))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a token name is at most 200 characters (got 201)" in " ".join(r.stderr.split())
    listed = command("token", "list", "--db", str(store_copy))
    assert "n" * 201 not in listed.stdout
    ok = command("token", "create", "--name", "n" * 200, "--scope", "read", "--db", str(store_copy))
    assert ok.returncode == 0, ok.stderr


def test_an_unpaired_surrogate_in_a_json_field_is_422_naming_it_and_nothing_written(
    service, people, account
):
    # JSON may spell half of a surrogate pair ("\ud800"): no store can keep that text (nor
    # can an error echoing it be sent), and a token, user or flag holding one was a 500
    half = "\ud800"
    admin = {"Authorization": f"Bearer {service.admin_token}"}
    flags = {"Authorization": f"Bearer {service.token('ingest:flags', name='flags')}"}
    cases = [
        ("/v1/tokens", admin, {"name": "crm" + half, "scopes": ["read"]}, "body.name"),
        ("/v1/tokens", admin, {"name": "crm", "scopes": ["read" + half]}, "body.scopes.0"),
        ("/v1/tokens", admin, {"name": "crm", "scopes": ["read"], "expires": half}, "body.expires"),
        ("/v1/users", admin, {"username": "sur" + half, "password": PASSWORD}, "body.username"),
        ("/v1/users", admin, {"username": "sur", "password": PASSWORD + half}, "body.password"),
        ("/v1/users", admin, {"username": "sur", "password": PASSWORD, "csm": half}, "body.csm"),
        ("/v1/flags", flags, {"account_id": account, "kind": "x" + half}, "body.kind"),
        ("/v1/flags", flags, {"account_id": account, "kind": "x", "note": half}, "body.note"),
        ("/v1/flags", flags, {"account_id": account + half, "kind": "x"}, "body.account_id"),
    ]  # fmt: skip
    before = fingerprint(service.state)
    with httpx.Client(base_url=service.url, timeout=30) as c:
        for path, headers, body, key in cases:
            r = c.post(
                path,
                content=json.dumps(body),  # ASCII, the surrogate as its escape
                headers={**headers, "content-type": "application/json"},
            )
            assert r.status_code == 422, (path, body, r.status_code, r.text[:300])
            problem = r.json()["problems"][0]
            assert problem["key"] == key, r.text
            # (pydantic's words for a field with a length limit, else healthscore's)
            assert "unicode" in problem["reason"].lower(), r.text
    assert fingerprint(service.state) == before


@pytest.mark.parametrize("scope", ["ingest:", "ingest:,", "ingest: read"])
def test_an_ingest_scope_listing_no_table_is_refused_never_every_table(service, scope):
    # "ingest:" (a script joining an empty list of tables) made a token for every input
    # table, as "ingest" without a list does
    before = fingerprint(service.state)
    with service.client() as api:
        r = api.post("/v1/tokens", json={"name": "crm", "scopes": [scope]})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("scope 'ingest:")
    assert "lists no table" in r.json()["error"]
    assert fingerprint(service.state) == before
