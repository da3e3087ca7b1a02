"""Who may do what: API tokens for ``/v1``, and (below) dashboard users and sessions.

Place in the flow: under the routes of ``service/``; the token and user tables are
written through the store like any other table.

API tokens look like ``hs_<id>_<secret>``. The secret is shown once, when the token is
made; the store keeps only its SHA-256, looked up by the id and compared in constant
time. A token has scopes:

- ``read``: the read API;
- ``ingest``: ``POST /v1/ingest/{table}``, for every input table or only those listed
  (``ingest:usage_events,tickets``);
- ``segment``: only the Segment-compatible routes (a Segment write key sits in browser
  and mobile code, so it is public: it may add events and nothing else);
- ``admin``: everything, including tokens and users.

Requests name the token as ``Authorization: Bearer hs_...``; the Segment routes take
it as the HTTP Basic user name, as Segment's clients send their write key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from fastapi import Depends, HTTPException, Request

from healthscore.core.limits import NUL
from healthscore.errors import HealthscoreError
from healthscore.store import Store

TOKENS = "api_tokens"
TOKEN_COLUMNS = {
    "token_id": "string",
    "name": "string",
    "secret_sha256": "string",
    "scopes": "string",  # space-separated, e.g. "read ingest:usage_events,tickets"
    "created_at": "timestamp",
    "expires_at": "timestamp",
    "revoked_at": "timestamp",
}
SCOPES = ("read", "ingest", "segment", "admin")


class AuthError(HealthscoreError):
    """A token or login that cannot be made or used as asked."""


class NotFound(AuthError):
    """No token or user by that name (HTTP 404)."""

    status = 404


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_tables(store: Store) -> None:
    """Create the service's own tables when the store lacks them."""
    if not store.has_table(TOKENS):
        store.create_table(TOKENS, TOKEN_COLUMNS)
    _ensure_users(store)
    _ensure_sessions(store)


# --- scopes --------------------------------------------------------------------------


def parse_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """Check scope words (``read``, ``ingest``, ``ingest:usage_events,tickets``, ``segment``,
    ``admin``); returns them normalised."""
    from healthscore.core.tables import TABLES

    out = []
    for raw in scopes:
        for word in raw.split():
            name, listed, tables = word.partition(":")
            name = name.strip().lower()
            if name not in SCOPES:
                raise AuthError(f"unknown scope {word!r}", hint="scopes: " + ", ".join(SCOPES))
            # "ingest:" with no table after it lists none: never every table
            if listed:
                if name != "ingest":
                    raise AuthError(f"scope {name!r} takes no table list (got {word!r})")
                names = [t.strip() for t in tables.split(",") if t.strip()]
                bad = [t for t in names if t not in TABLES or t == "scores"]
                if bad or not names:
                    what = f"not an input table: {', '.join(bad)}" if bad else "lists no table"
                    raise AuthError(
                        f"scope {word!r}: {what}",
                        hint="tables: " + ", ".join(t for t in TABLES if t != "scores"),
                    )
                word = "ingest:" + ",".join(names)
            else:
                word = name
            out.append(word)
    if not out:
        raise AuthError("a token needs at least one scope", hint="scopes: " + ", ".join(SCOPES))
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Token:
    """A token as the store knows it (never its secret)."""

    token_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, scope: str, table: str | None = None) -> bool:
        """Whether this token may do what ``scope`` (and, for ingest, ``table``) covers."""
        if "admin" in self.scopes:
            return True
        for s in self.scopes:
            name, _, tables = s.partition(":")
            if name != scope:
                continue
            if scope == "ingest" and tables and table is not None:
                if table not in tables.split(","):
                    continue
            return True
        return False

    def to_dict(self) -> dict:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _token(row: dict) -> Token:
    return Token(
        row["token_id"],
        row["name"],
        tuple(row["scopes"].split()),
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
    )


@dataclass
class NewToken:
    """A token just made: its one-time full text (``hs_<id>_<secret>``) and its record."""

    text: str
    token: Token = field(repr=False)


#: the longest token name (shown in every token listing)
MAX_TOKEN_NAME = 200
#: the longest CSM name a login may carry (the accounts' CSM it stands for)
MAX_CSM_NAME = 200


def _no_nul(text: str, what: str) -> None:
    """Refuse a name holding a NUL character: no store keeps one in text."""
    if NUL in text:
        raise AuthError(f"{what} holds a NUL character (U+0000), which no name may hold")


def _shown(text: str, what: str) -> None:
    """Refuse a name holding a character that does not show as itself
    (:func:`~healthscore.core.limits.unshown`): a login form cannot type it, a listing
    cannot show it, or it reads as another name."""
    from healthscore.core.limits import unshown

    _no_nul(text, what)
    found = unshown(text)
    if found:
        raise AuthError(
            f"{what} holds {found}, which no name may hold",
            hint="letters, digits, spaces and punctuation",
        )


def create_token(
    store: Store, name: str, scopes: list[str], *, expires_at: datetime | None = None
) -> NewToken:
    """Make a token; its full text is in the result and nowhere else."""
    name = name.strip()
    if not name:
        raise AuthError("a token needs a name (who or what uses it)")
    if len(name) > MAX_TOKEN_NAME:
        raise AuthError(
            f"a token name is at most {MAX_TOKEN_NAME} characters (got {len(name):,})",
            hint="name who or what uses it, e.g. 'CRM sync'",
        )
    _shown(name, "a token name")
    words = parse_scopes(scopes)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = {
        "token_id": token_id,
        "name": name,
        "secret_sha256": _sha256(secret),
        "scopes": " ".join(words),
        "created_at": _now(),
        "expires_at": expires_at,
        "revoked_at": None,
    }
    ensure_tables(store)
    store.insert(TOKENS, _rows([row]))
    return NewToken(f"hs_{token_id}_{secret}", _token(row))


def parse_expiry(text: str | None, now: datetime | None = None) -> datetime | None:
    """When a token made ``now`` expires: ``30d``/``4w``/``3mo`` from now, or a date or
    ISO timestamp (UTC), which must be in the future; None: never."""
    from healthscore.core.time import DURATION, parse_as_of, shift

    if text is None or not str(text).strip():
        return None
    now = now or _now()
    text = str(text).strip()
    when = shift(now, text, +1) if DURATION.match(text) else parse_as_of(text, "expires")
    if when <= now:
        raise AuthError(
            f"expires: {text} is not in the future", hint="e.g. 30d, 12mo or 2027-01-01"
        )
    return when


def _rows(rows: list[dict]) -> pa.Table:
    types = {"string": pa.string(), "timestamp": pa.timestamp("us")}
    schema = pa.schema([(c, types[t]) for c, t in TOKEN_COLUMNS.items()])
    return pa.Table.from_pylist(rows, schema=schema)


def _token_rows(store: Store, token_id: str | None = None) -> list[dict]:
    ensure_tables(store)
    t = store.stored(TOKENS)
    if token_id is not None:
        t = t.filter(t.token_id == token_id)
    return store.execute(t.order_by("created_at")).to_pylist()


def list_tokens(store: Store) -> list[Token]:
    """Every token, oldest first, revoked ones included."""
    return [_token(r) for r in _token_rows(store)]


def revoke_token(store: Store, token_id: str) -> Token:
    """Revoke a token by its id (the part after ``hs_``); revoking twice is harmless."""
    token_id = token_id.removeprefix("hs_").split("_")[0]
    rows = _token_rows(store, token_id)
    if not rows:
        raise NotFound(f"no token {token_id!r}", hint="`healthscore token list` shows them")
    row = rows[0]
    if row["revoked_at"] is None:
        row["revoked_at"] = _now()
        with store.transaction():
            store.delete_rows(TOKENS, {"token_id": token_id})
            store.insert(TOKENS, _rows([row]))
    _forget(token_id)
    return _token(row)


#: seconds a verified token is trusted without reading the store again. A revocation
#: made through this process (the API, the dashboard, the CLI through a running
#: service) drops it at once; one made by another process on the same store (a shared
#: PostgreSQL database) counts within this time.
TOKEN_CACHE_SECONDS = 5.0
_verified: dict[tuple[str, str], tuple[Token, float]] = {}  # (store, sha256 of text)
_verified_lock = threading.Lock()


def cached_token(store: Store, text: str | None) -> Token | None:
    """The token ``text`` names when this process verified it against ``store`` less
    than :data:`TOKEN_CACHE_SECONDS` ago and it has not expired since; else None (ask
    :func:`verify_token`). Reads no table: a request checks its token without waiting
    for the store."""
    if not text:
        return None
    key = (store.url, _sha256(text))
    with _verified_lock:
        hit = _verified.get(key)
    if hit is None or time.monotonic() - hit[1] >= TOKEN_CACHE_SECONDS:
        return None
    token = hit[0]
    if token.expires_at is not None and token.expires_at <= _now():
        return None
    return token


def _remember(store: Store, text: str, token: Token) -> None:
    with _verified_lock:
        if len(_verified) > 10_000:  # tokens come and go; keep the memory bounded
            _verified.clear()
        _verified[(store.url, _sha256(text))] = (token, time.monotonic())


def _forget(token_id: str) -> None:
    with _verified_lock:
        for key in [k for k, (t, _) in _verified.items() if t.token_id == token_id]:
            del _verified[key]


def verify_token(store: Store, text: str | None) -> Token | None:
    """The token ``text`` names when it is genuine, unexpired and not revoked; else None.

    The lookup is by id; the secret's hash is compared in constant time. A genuine
    token is remembered for :func:`cached_token`."""
    if not text or not text.startswith("hs_"):
        return None
    token_id, sep, secret = text[3:].partition("_")
    if not sep or not token_id or not secret or len(text) > 200 or NUL in text:
        return None  # (a NUL, e.g. from a Basic write key, would end the lookup's SQL)
    rows = _token_rows(store, token_id)
    if not rows:
        hmac.compare_digest(_sha256(secret), _sha256(""))  # same work either way
        return None
    row = rows[0]
    if not hmac.compare_digest(row["secret_sha256"], _sha256(secret)):
        return None
    if row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= _now():
        return None
    token = _token(row)
    _remember(store, text, token)
    return token


# --- FastAPI dependencies -------------------------------------------------------------


def bearer_text(request: Request) -> str | None:
    """The token a request names in ``Authorization: Bearer ...``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def require(scope: str, *, table_param: str | None = None) -> Callable[..., Token]:
    """A dependency: the request's bearer token, which must allow ``scope`` (for
    ingest, the table named by the path parameter ``table_param``). 401 without a valid
    token, 403 with one that does not allow it; a cookie never counts on ``/v1``."""

    def dependency(request: Request) -> Token:
        state = request.app.state.service
        text = bearer_text(request)
        if text is None:
            raise HTTPException(
                401, "a bearer token is needed", headers={"WWW-Authenticate": "Bearer"}
            )
        token = cached_token(state.store, text)
        if token is None:
            with state.store_access() as store:
                token = verify_token(store, text)
        if token is None:
            raise HTTPException(
                401,
                "the token is unknown, revoked or expired",
                headers={"WWW-Authenticate": "Bearer"},
            )
        table = request.path_params.get(table_param) if table_param else None
        if not token.allows(scope, table):
            what = f"{scope} {table}" if table else scope
            raise HTTPException(403, f"token {token.name!r} does not allow {what}")
        request.state.token = token
        known_query(request)
        return token

    return Depends(dependency)


#: route -> the query parameters it takes (read from the route once)
_QUERY_NAMES: dict[int, frozenset[str]] = {}


def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take (422, naming them and those it
    takes): a client that asks for ``?as_of=2025-01-01`` where no such parameter
    exists would otherwise get today's figures as if they were that date's. Checked
    after the token, so that only a client allowed to call the route learns its
    parameters."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = _QUERY_NAMES.get(id(route))
    if names is None:  # the route's own and its dependencies' query parameters
        found, todo = set(), [dependant]
        while todo:
            d = todo.pop()
            found.update(p.alias for p in d.query_params)
            todo.extend(d.dependencies)
        names = _QUERY_NAMES[id(route)] = frozenset(found)
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        takes = ", ".join(sorted(names)) or "none"
        raise HTTPException(
            422,
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; this route takes: {takes}",
        )


# --- dashboard users -------------------------------------------------------------------

USERS = "app_users"
USER_COLUMNS = {
    "username": "string",
    "password_hash": "string",  # argon2id, with its parameters and salt
    "role": "string",  # admin | member | viewer
    "csm": "string",  # the CSM name in the data this login is ("my accounts")
    "created_at": "timestamp",
}
#: what each role may do, each including the ones before it
ROLES = ("viewer", "member", "admin")


@dataclass(frozen=True)
class User:
    """A dashboard login (never its password)."""

    username: str
    role: str
    csm: str | None = None

    def may(self, role: str) -> bool:
        """Whether this user has ``role`` or a stronger one."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id, the library's vetted default parameters


def _ensure_users(store: Store) -> None:
    if not store.has_table(USERS):
        store.create_table(USERS, USER_COLUMNS)


def _user_rows(store: Store, username: str | None = None) -> list[dict]:
    _ensure_users(store)
    t = store.stored(USERS)
    if username is not None:
        t = t.filter(t.username == username)
    return store.execute(t.order_by("username")).to_pylist()


def add_user(
    store: Store, username: str, password: str, role: str = "member", *, csm: str | None = None
) -> User:
    """Add a dashboard login (or replace the password and role of an existing one)."""
    username = username.strip()
    if not username or len(username) > 100:
        raise AuthError("a user name must be 1 to 100 characters")
    _shown(username, "a user name")
    if csm is not None:
        _no_nul(csm, "a CSM name")
        if len(csm) > MAX_CSM_NAME:
            raise AuthError(
                f"a CSM name is at most {MAX_CSM_NAME} characters (got {len(csm):,})",
                hint="the CSM's name as the accounts table has it",
            )
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}", hint="roles: " + ", ".join(ROLES))
    if len(password) < 12:
        raise AuthError("a password must be at least 12 characters")
    if len(password) > MAX_PASSWORD:
        raise AuthError(
            f"a password is at most {MAX_PASSWORD:,} characters (got {len(password):,})",
            hint="a passphrase of a few words is long enough",
        )
    row = {
        "username": username,
        "password_hash": _hasher().hash(password),
        "role": role,
        "csm": csm,
        "created_at": _now(),
    }
    types = {"string": pa.string(), "timestamp": pa.timestamp("us")}
    schema = pa.schema([(c, types[t]) for c, t in USER_COLUMNS.items()])
    _ensure_users(store)
    _ensure_sessions(store)
    with store.transaction():
        store.delete_rows(USERS, {"username": username})
        store.insert(USERS, pa.Table.from_pylist([row], schema=schema))
        # a new password or role: the sessions started with the old ones end
        store.delete_rows(SESSIONS, {"username": username})
    return User(username, role, csm)


def list_users(store: Store) -> list[User]:
    return [User(r["username"], r["role"], r["csm"]) for r in _user_rows(store)]


def remove_user(store: Store, username: str) -> None:
    """Remove a login; its sessions end with it."""
    if not _user_rows(store, username):
        raise NotFound(f"no user {username!r}", hint="`healthscore auth user list` shows them")
    _ensure_sessions(store)
    with store.transaction():
        store.delete_rows(USERS, {"username": username})
        store.delete_rows(SESSIONS, {"username": username})


def get_user(store: Store, username: str) -> User | None:
    rows = _user_rows(store, username)
    return User(rows[0]["username"], rows[0]["role"], rows[0]["csm"]) if rows else None


#: the longest password taken: hashing costs time in its length, so a login form posting
#: megabytes would make every attempt expensive (a longer one is refused unhashed)
MAX_PASSWORD = 1024

#: a hash of a password nobody has, checked when the user is unknown (same time either way)
_DUMMY = None


def check_password(store: Store, username: str, password: str) -> User | None:
    """The user when ``password`` is theirs, else None (unknown users cost the same)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    global _DUMMY
    if len(password) > MAX_PASSWORD:  # no user has one: refused before any hashing
        return None
    rows = [] if NUL in username else _user_rows(store, username)  # no user has one
    ph = _hasher()
    if not rows:
        _DUMMY = _DUMMY or ph.hash(secrets.token_urlsafe(16))
        try:
            ph.verify(_DUMMY, password)
        except VerificationError:
            pass
        return None
    try:
        ph.verify(rows[0]["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    return User(rows[0]["username"], rows[0]["role"], rows[0]["csm"])


# --- sessions and CSRF ------------------------------------------------------------------

SESSION_COOKIE = "hs_session"
SESSION_MAX_AGE = 12 * 3600
#: the sessions that have not ended: a signed cookie opens the dashboard only while its
#: session's row is here (logout, removing a user or changing their password or role
#: deletes it)
SESSIONS = "app_sessions"
SESSION_COLUMNS = {
    "session_sha256": "string",  # the SHA-256 of the session id the cookie carries
    "username": "string",
    "started_at": "timestamp",
}
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


#: a session secret shorter than this was not made whole by :func:`session_secret`
#: (it writes 64 characters): signing cookies with it would make them forgeable
MIN_SECRET = 32


def session_secret(state_dir) -> str:
    """The key that signs session cookies: a random secret in an owner-only file of the
    service's state folder, made on first use.

    The file appears whole or not at all (written beside it, then linked into place
    only if no other server made one meanwhile): a write cut short, e.g. on a full
    disk, leaves no file and says so. A file too short to be a secret is refused with
    what to do, never used.
    """
    import os
    from pathlib import Path

    from healthscore.core.files import output_error

    path = Path(state_dir) / "session_secret"
    if not path.exists():
        try:
            _make_secret(path)
        except OSError as e:
            raise output_error(path, e) from None
    try:
        if path.is_dir():  # read_text would say only "Is a directory"
            raise IsADirectoryError(21, "it is a folder, not the secret's file")
        os.chmod(path, 0o600)
        secret = path.read_text().strip()
    except OSError as e:
        raise HealthscoreError(
            f"cannot read the session secret {path}: {e.strerror or e}",
            hint="it must be a file this user may read and write; move what is there "
            "away and start the server again: a new secret is made (dashboard users sign "
            "in again)",
        ) from None
    if len(secret) < MIN_SECRET:
        raise HealthscoreError(
            f"{path}: the session secret holds {len(secret)} characters, not a secret "
            f"of at least {MIN_SECRET} (a write cut short?)",
            hint="delete the file and start the server again: a new secret is made "
            "(dashboard users sign in again)",
        )
    return secret


def _make_secret(path) -> None:
    """Write a new secret to ``path``, whole, unless a file is there already."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".session_secret.")  # owner-only
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another server made one meanwhile: use that
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _signer(state):
    from itsdangerous import URLSafeTimedSerializer

    secret = getattr(state, "_session_secret", None)
    if secret is None:
        secret = state._session_secret = session_secret(state.settings.resolved_state_dir())
    return URLSafeTimedSerializer(secret, salt="healthscore-session")


def _ensure_sessions(store: Store) -> None:
    if not store.has_table(SESSIONS):
        store.create_table(SESSIONS, SESSION_COLUMNS)


def start_session(state, user: User) -> str:
    """The signed cookie value of a new session for ``user``, with its CSRF token; the
    session is kept in the store (by the SHA-256 of its id) until it ends."""
    session_id = secrets.token_urlsafe(24)
    now = _now()
    row = {"session_sha256": _sha256(session_id), "username": user.username, "started_at": now}
    types = {"string": pa.string(), "timestamp": pa.timestamp("us")}
    schema = pa.schema([(c, types[t]) for c, t in SESSION_COLUMNS.items()])
    with state.store_access() as store:
        _ensure_sessions(store)
        with store.transaction():
            # sessions past their age are gone whatever the cookie says: drop their rows
            t = store.stored(SESSIONS)
            old = t.filter(t.started_at < now - timedelta(seconds=SESSION_MAX_AGE))
            expired = store.execute(old.select("session_sha256"))["session_sha256"].to_pylist()
            if expired:
                store.delete_rows(SESSIONS, {"session_sha256": expired})
            store.insert(SESSIONS, pa.Table.from_pylist([row], schema=schema))
    return _signer(state).dumps(
        {"u": user.username, "s": session_id, "c": secrets.token_urlsafe(24)}
    )


def _session_data(state, cookie: str | None) -> dict | None:
    from itsdangerous import BadSignature

    if not cookie:
        return None
    try:
        data = _signer(state).loads(cookie, max_age=SESSION_MAX_AGE)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in "usc"):
        return None  # a cookie of an older format: log in again
    return data


def read_session(state, cookie: str | None) -> tuple[User, str] | None:
    """The user and CSRF token of a genuine, unexpired session cookie whose session has
    not ended (logout, the user removed, or given a new password or role) and whose user
    still exists (with the role the store has now); else None."""
    data = _session_data(state, cookie)
    if data is None:
        return None
    with state.store_access() as store:
        _ensure_sessions(store)
        t = store.stored(SESSIONS)
        found = store.execute(
            t.filter(t.session_sha256 == _sha256(data["s"])).select("username").limit(1)
        )["username"].to_pylist()
        if found != [data["u"]]:
            return None
        user = get_user(store, data["u"])
    return (user, data["c"]) if user is not None else None


def end_session(state, cookie: str | None) -> bool:
    """End the session of ``cookie`` on the server: the cookie (and any copy of it) no
    longer opens anything. Whether there was one to end."""
    data = _session_data(state, cookie)
    if data is None:
        return False
    with state.store_access() as store:
        _ensure_sessions(store)
        store.delete_rows(SESSIONS, {"session_sha256": [_sha256(data["s"])]})
    return True


class LoginRequired(Exception):
    """A dashboard page asked for without a session (the app sends the browser to
    ``/login``)."""


def require_user(role: str = "viewer") -> Callable[..., User]:
    """A dependency for dashboard routes: the session's user, who must have ``role``.

    Cookie only (a bearer token does not count here). Without a session: a GET is sent to
    the login page, anything else gets 401; a user without the role gets 403. Unsafe
    methods must carry the session's CSRF token (``X-CSRF-Token`` header, as HTMX sends
    it, or the ``csrf_token`` form field) and, when the browser sends one, an ``Origin``
    of this server."""

    async def dependency(request: Request) -> User:
        state = request.app.state.service
        found = read_session(state, request.cookies.get(SESSION_COOKIE))
        if found is None:
            if request.method in ("GET", "HEAD"):
                raise LoginRequired()
            raise HTTPException(401, "log in first")
        user, csrf = found
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            await check_csrf(request, csrf)
        if not user.may(role):
            raise HTTPException(403, f"{user.username} is a {user.role}; this needs {role}")
        request.state.user = user
        request.state.csrf = csrf
        return user

    return Depends(dependency)


async def check_csrf(request: Request, expected: str) -> None:
    """403 unless the request carries the session's CSRF token and comes from this
    origin."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _own_origin(request):
        raise HTTPException(403, "cross-origin request refused")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        sent = form.get(CSRF_FIELD)
    # compared as bytes: compare_digest refuses str holding anything but ASCII, and a
    # header or form field may hold any character
    if not isinstance(sent, str) or not hmac.compare_digest(_bytes(sent), _bytes(expected)):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _own_origin(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"
