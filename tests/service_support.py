"""A real healthscore service on loopback for the service tests.

:func:`running_service` starts the app under Uvicorn in a thread of the test process,
on a free port of 127.0.0.1, over a copy of a demo store; the tests talk to it over real
HTTP (httpx). The service's clock is frozen at the demo's end, so scores are the same
on every run.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import fixtures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    """A service under test: where it listens, its state, and an admin token."""

    url: str
    state: object  # healthscore.service.state.ServiceState
    admin_token: str
    app: object = None  # the FastAPI app served

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        """An HTTP client for the service, sending ``token`` (default: the admin's)
        as a bearer token; ``token=""`` sends none."""
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def token(self, *scopes: str, name: str = "test") -> str:
        """A new token with ``scopes`` (made through the running service's store)."""
        from healthscore.service.auth import create_token

        with self.state.store_access() as store:
            return create_token(store, name, list(scopes)).text


@contextmanager
def running_service(db: Path, model: Path | None = None, **settings) -> Iterator[Running]:
    """Serve the store ``db`` (and model) on a free loopback port until the block ends."""
    import uvicorn

    from healthscore.service import Settings, server_config
    from healthscore.service.app import create_app
    from healthscore.service.auth import create_token
    from healthscore.service.state import ServiceState

    settings.setdefault("now", fixtures.DEMO_END)
    settings.setdefault("daily_rescore", False)
    # no plans of larger batches built while idle: CPU taken from the other test worker
    # (test_rescorer drives warm_one_more itself)
    settings.setdefault("idle_builds", False)
    s = Settings(
        db=str(db),
        model=str(model) if model else None,
        port=free_port(),
        state_dir=Path(db).parent / "service-state",
        **settings,
    )
    state = ServiceState.open(s)
    from healthscore.service.auth import ensure_tables

    ensure_tables(state.store)
    admin = create_token(state.store, "test admin", ["admin"]).text
    app = create_app(s, state)
    server = uvicorn.Server(server_config(app, s))  # the service's own, as `serve` runs it
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test service did not start")
        time.sleep(0.02)
    try:
        yield Running(s.base_url, state, admin, app)
    finally:
        server.should_exit = True
        thread.join(30)
        state.close()


def login_cookies(url: str, username: str, password: str) -> dict[str, str]:
    """The session cookie of ``username`` logged in as a browser does (the form's CSRF
    cookie and field, then POST)."""
    import re

    page = httpx.get(url + "/login", timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = httpx.post(
        url + "/login",
        data={"username": username, "password": password, "csrf_token": csrf},
        headers={"Cookie": f"hs_login_csrf={page.cookies['hs_login_csrf']}"},
        timeout=30,
    )
    assert r.status_code == 303, r.text
    return {"hs_session": r.cookies["hs_session"]}


@contextmanager
def light_password_hashing() -> Iterator[None]:
    """Argon2id with its lightest parameters for the ``with`` block, in this process.

    For modules that make and check many passwords (users, logins) to test who may do
    what, not what a hash costs: the library's defaults (64 MiB, 3 passes, 4 lanes) took
    about 0.25 s of CPU per hash or check. The hashes are argon2id all the same, checked
    by the same code (a hash names its parameters); test_service_app checks the
    service's own hasher."""
    from argon2 import PasswordHasher

    from healthscore.service import auth

    real, dummy = auth._hasher, auth._DUMMY  # the unknown user's hash: made again, light
    auth._hasher = lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    auth._DUMMY = None
    try:
        yield
    finally:
        auth._hasher, auth._DUMMY = real, dummy


#: the demo book's account the service tests send events of
DEMO_ACCOUNT = "ACC-00102"


def demo_event(event_id: str, **extra) -> dict:
    """One usage event of :data:`DEMO_ACCOUNT` as ``POST /v1/ingest/usage_events`` takes
    it, with ``extra`` columns."""
    return {"event_id": event_id, "account_id": DEMO_ACCOUNT, "event": "search",
            "ts": "2025-06-30T09:15:00Z", **extra}  # fmt: skip


def stored_events(running: Running, column: str) -> dict:
    """``{event_id: value}`` of the stored usage events whose ``column`` is set (none
    when the table has no such column)."""
    with running.state.store_access() as store:
        t = store.table("usage_events")
        if column not in t.columns:
            return {}
        rows = store.execute(t.filter(t[column].notnull()).select("event_id", column))
    return {r["event_id"]: r[column] for r in rows.to_pylist()}
