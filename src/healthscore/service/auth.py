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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
from fastapi import Depends, HTTPException, Request

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


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_tables(store: Store) -> None:
    """Create the service's own tables when the store lacks them."""
    if not store.has_table(TOKENS):
        store.create_table(TOKENS, TOKEN_COLUMNS)


# --- scopes --------------------------------------------------------------------------


def parse_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """Check scope words (``read``, ``ingest``, ``ingest:usage_events,tickets``, ``segment``,
    ``admin``); returns them normalised."""
    from healthscore.core.tables import TABLES

    out = []
    for raw in scopes:
        for word in raw.split():
            name, _, tables = word.partition(":")
            name = name.strip().lower()
            if name not in SCOPES:
                raise AuthError(f"unknown scope {word!r}", hint="scopes: " + ", ".join(SCOPES))
            if tables:
                if name != "ingest":
                    raise AuthError(f"scope {name!r} takes no table list (got {word!r})")
                names = [t.strip() for t in tables.split(",") if t.strip()]
                bad = [t for t in names if t not in TABLES or t == "scores"]
                if bad or not names:
                    raise AuthError(
                        f"scope {word!r}: not an input table: {', '.join(bad) or '(none)'}",
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


def create_token(
    store: Store, name: str, scopes: list[str], *, expires_at: datetime | None = None
) -> NewToken:
    """Make a token; its full text is in the result and nowhere else."""
    name = name.strip()
    if not name:
        raise AuthError("a token needs a name (who or what uses it)")
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
        raise AuthError(f"no token {token_id!r}", hint="`healthscore token list` shows them")
    row = rows[0]
    if row["revoked_at"] is None:
        row["revoked_at"] = _now()
        with store.transaction():
            store.delete_rows(TOKENS, {"token_id": token_id})
            store.insert(TOKENS, _rows([row]))
    return _token(row)


def verify_token(store: Store, text: str | None) -> Token | None:
    """The token ``text`` names when it is genuine, unexpired and not revoked; else None.

    The lookup is by id; the secret's hash is compared in constant time."""
    if not text or not text.startswith("hs_"):
        return None
    token_id, sep, secret = text[3:].partition("_")
    if not sep or not token_id or not secret or len(text) > 200:
        return None
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
    return _token(row)


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
        return token

    return Depends(dependency)
