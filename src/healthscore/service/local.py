"""What CLI commands do to a store a running server may own: through the server's API
while it runs, directly otherwise.

Place in the flow: between ``cli/`` and the store, beside the routes. A DuckDB file has
one writer process; while ``healthscore serve`` runs it owns the store (its owner file
says so, see :mod:`healthscore.service.owner`). Then:

- the commands that have an API route (``token create/list/revoke``, ``auth user
  add/list/remove``, ``flag add/resolve``, ``ingest rejects/pending``) send it to the
  server, as the local admin token of the owner file, and get the same answer;
- every other command is refused before it starts by :func:`check_free`, with a message
  naming the server (never DuckDB's lock error).

With no server (or on PostgreSQL, which has many writers) the same functions open the
store and call :mod:`healthscore.service.auth` or :mod:`healthscore.api` directly.
Results are plain dicts shaped like the API's JSON, whichever way they came.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healthscore.errors import HealthscoreError, Problem, StoreError, StoreInUseError
from healthscore.service import owner as owner_mod

Db = str | os.PathLike | None


def in_use_error(o: owner_mod.Owner, what: str | None = None) -> StoreInUseError:
    """The error of a command that cannot run while ``o`` owns the store."""
    doing = (
        f"`{what}` cannot run while it does" if what else "this command cannot run while it does"
    )
    error = StoreInUseError(
        f"the store {o.store} is in use by {o.describe()}; {doing} (a DuckDB store has one "
        "writer process)",
        hint="stop the server (Ctrl-C where `healthscore serve` runs) and run the command "
        "again, or do it through the server's API",
        path=o.store,
        pid=o.pid,
    )
    error.server = o
    return error


def check_free(db: Db, what: str | None = None) -> None:
    """Refuse (``StoreInUseError``) when a running server owns the DuckDB store ``db``."""
    o = owner_mod.find(db)
    if o is not None:
        raise in_use_error(o, what)


def explain_in_use(e: StoreInUseError, what: str | None = None) -> StoreInUseError:
    """DuckDB's "in use" error, naming the healthscore server when it is the holder."""
    if getattr(e, "server", None) is not None:  # already says so
        return e
    o = owner_mod.find_by_pid(e.path, e.pid) if e.path else None
    return in_use_error(o, what) if o is not None else e


@dataclass
class Serving:
    """A store about to be served: where it is, and a dashboard admin's new password."""

    store: str
    username: str | None = None
    password: str | None = None


def prepare_serving(
    db: Db,
    admin_user: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Any = None,
) -> Serving:
    """Before ``healthscore serve``: the store must exist and be free, and the address
    free to listen on; the session secret in the private folder of ``settings`` (a
    :class:`~healthscore.service.settings.Settings`) whole, made now if there is none;
    with ``admin_user``, that dashboard admin gets a new random password (returned, to
    be shown once)."""
    import secrets

    from healthscore.service import auth

    check_free(db, "healthscore serve")
    check_address(host, port)
    if settings is not None:
        auth.session_secret(settings.resolved_state_dir())
    with _store(db) as store:
        location = store.location
        if admin_user is None:
            return Serving(location)
        password = secrets.token_urlsafe(15)
        auth.add_user(store, admin_user, password, "admin")
    return Serving(location, admin_user, password)


def check_address(host: str, port: int) -> None:
    """That a server can listen on ``host``:``port`` now; if not, why, in words, and
    what to do (a name that does not resolve, an address of another machine, a port
    in use or below 1024 without the privilege)."""
    import errno
    import socket

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not 0 < port < 65536:
        raise HealthscoreError(
            f"cannot listen on {where}: a port is a number from 1 to 65535", hint="pass --port"
        )
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise HealthscoreError(
            f"cannot listen on {where}: {host!r} is not an address of this machine ({reason})",
            hint="pass --host with an address such as 127.0.0.1, ::1 or 0.0.0.0",
        ) from None
    family, *_, address = found[0]
    try:
        with socket.create_server(address[:2], family=family):
            pass
    except OSError as e:
        hint = {
            errno.EADDRINUSE: "another program uses that port: pass --port",
            errno.EADDRNOTAVAIL: "that address is not one of this machine's: pass --host",
            errno.EACCES: "ports below 1024 need privileges: pass --port 8000 or above",
        }.get(e.errno)
        raise HealthscoreError(
            f"cannot listen on {where}: {os.strerror(e.errno) if e.errno else e}", hint=hint
        ) from None


# --- the two ways --------------------------------------------------------------------


@contextmanager
def _store(db: Db, *, read_only: bool = False) -> Iterator[Any]:
    from healthscore.store import connect

    store = connect(db, create=False, read_only=read_only)
    try:
        yield store
    finally:
        store.close()


def _request(o: owner_mod.Owner, method: str, path: str, body: dict | None = None) -> Any:
    """Call the owning server's API as its local admin; its errors become ours."""
    import httpx

    try:
        r = httpx.request(
            method,
            o.url + path,
            json=body,
            headers={"Authorization": f"Bearer {o.token}"},
            timeout=120,
            trust_env=False,  # loopback: never through a proxy
        )
    except httpx.HTTPError as e:
        raise StoreError(
            f"the store {o.store} is in use by {o.describe()}, which does not answer ({e})",
            hint="wait for it to start, or stop it and run the command again",
        ) from None
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code >= 400:
        raise _server_error(o, r.status_code, data, r.text)
    return data


def _server_error(o: owner_mod.Owner, status: int, data: Any, text: str) -> HealthscoreError:
    if (
        status == 404
        and isinstance(data, dict)
        and "Not Found" in (data.get("error"), data.get("detail"))
    ):
        return StoreError(
            f"{o.describe()} owns the store {o.store} and has no API for this",
            hint="stop the server and run the command again",
        )
    if isinstance(data, dict) and "error" in data:
        problems = [Problem(**p) for p in data.get("problems", []) if isinstance(p, dict)]
        return HealthscoreError(data["error"], problems=problems, hint=data.get("hint"))
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}]
        detail = "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return HealthscoreError(f"the server refused it ({status}): {detail or text[:200]}")


def _either(
    db: Db,
    http: Callable[[owner_mod.Owner], Any],
    direct: Callable[[Any], Any],
    *,
    read_only: bool = False,
):
    o = owner_mod.find(db)
    if o is not None:
        return http(o)
    with _store(db, read_only=read_only) as store:
        return direct(store)


# --- tokens ----------------------------------------------------------------------------


def create_token(db: Db, name: str, scopes: list[str], expires: str | None = None) -> dict:
    """Make an API token; ``token`` in the result is its full text, shown this once."""
    from healthscore.service import admin, auth

    body = {"name": name, "scopes": scopes, "expires": expires}

    def direct(store):
        when = auth.parse_expiry(expires)
        auth.ensure_tables(store)
        return admin.new_token_dict(auth.create_token(store, name, scopes, expires_at=when))

    return _either(db, lambda o: _request(o, "POST", "/v1/tokens", body), direct)


def list_tokens(db: Db) -> list[dict]:
    from healthscore.service import auth

    return _either(
        db,
        lambda o: _request(o, "GET", "/v1/tokens")["items"],
        lambda store: [t.to_dict() for t in auth.list_tokens(store)],
        read_only=True,
    )


def revoke_token(db: Db, token_id: str) -> dict:
    from healthscore.service import auth

    token_id = token_id.removeprefix("hs_").split("_")[0]
    return _either(
        db,
        lambda o: _request(o, "DELETE", f"/v1/tokens/{_quote(token_id)}"),
        lambda store: auth.revoke_token(store, token_id).to_dict(),
    )


# --- dashboard users --------------------------------------------------------------------


def add_user(db: Db, username: str, password: str, role: str, csm: str | None) -> dict:
    from healthscore.service import admin, auth

    body = {"username": username, "password": password, "role": role, "csm": csm}
    return _either(
        db,
        lambda o: _request(o, "POST", "/v1/users", body),
        lambda store: admin.user_dict(auth.add_user(store, username, password, role, csm=csm)),
    )


def list_users(db: Db) -> list[dict]:
    from healthscore.service import admin, auth

    return _either(
        db,
        lambda o: _request(o, "GET", "/v1/users")["items"],
        lambda store: [admin.user_dict(u) for u in auth.list_users(store)],
        read_only=True,
    )


def remove_user(db: Db, username: str) -> dict:
    from healthscore.service import auth

    def direct(store):
        auth.remove_user(store, username)
        return {"username": username, "removed": True}

    return _either(db, lambda o: _request(o, "DELETE", f"/v1/users/{_quote(username)}"), direct)


# --- CSM flags -----------------------------------------------------------------------------


def add_flag(
    db: Db,
    account_id: str,
    kind: str,
    *,
    note: str | None = None,
    author: str | None = None,
    at: datetime | None = None,
) -> dict:
    """Raise a flag (``POST /v1/flags`` while a server owns the store)."""
    from healthscore import api

    body = {"account_id": account_id, "kind": kind, "note": note, "author": author}
    if at is not None:
        body["at"] = at.isoformat()
    return _flag_row(
        _either(
            db,
            lambda o: _request(o, "POST", "/v1/flags", body),
            lambda store: api.add_flag(store, account_id, kind, note=note, author=author, at=at),
        )
    )


def resolve_flag(db: Db, flag_id: str, *, at: datetime | None = None) -> dict:
    """Resolve a flag (``POST /v1/flags/{flag_id}/resolve`` while a server owns it)."""
    from healthscore import api

    body = {"at": at.isoformat()} if at is not None else {}
    return _flag_row(
        _either(
            db,
            lambda o: _request(o, "POST", f"/v1/flags/{_quote(flag_id)}/resolve", body),
            lambda store: api.resolve_flag(store, flag_id, at=at),
        )
    )


def _flag_row(row: dict) -> dict:
    """A flag row with its times as datetimes, whichever way it came."""
    row = dict(row.get("flag", row)) if isinstance(row, dict) else {}
    for key in ("ts", "resolved_at"):
        if isinstance(row.get(key), str):
            row[key] = datetime.fromisoformat(row[key].replace("Z", "+00:00")).replace(tzinfo=None)
    return row


# --- parked ingestion ----------------------------------------------------------------------

#: the parked tables by the name the CLI and the API give them
PARKED = {"rejects": "ingest_rejects", "pending": "ingest_pending"}


def list_parked(db: Db, kind: str, *, limit: int = 100, offset: int = 0) -> dict:
    """One page of the Segment messages parked as ``kind`` (``rejects`` or ``pending``),
    newest first: ``{"total", "items"}`` as ``GET /v1/ingest/{kind}`` gives it (through
    that route while a server owns the store; else the store opened read-only)."""
    from healthscore.service import parked

    if kind not in PARKED:
        raise HealthscoreError(f"no parked table {kind!r}", hint="rejects or pending")
    if limit < 1 or offset < 0:
        raise HealthscoreError("`limit` is at least 1 and `offset` at least 0")

    def direct(store):
        total, items = parked.listing(store, PARKED[kind], limit, offset)
        return {"total": total, "items": items}

    query = f"/v1/ingest/{kind}?limit={limit}&offset={offset}"
    return _either(db, lambda o: _request(o, "GET", query), direct, read_only=True)


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")
