"""The admin API: API tokens and dashboard users (``/v1/tokens``, ``/v1/users``).

Place in the flow: a router of ``service/`` over :mod:`healthscore.service.auth`, which
owns tokens and users; admin tokens only. ``healthscore token ...`` and
``healthscore auth user ...`` use these routes while a server owns the store (see
:mod:`healthscore.service.local`), so both paths give the same JSON.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from healthscore.service import auth
from healthscore.service.bodies import JSONRoute
from healthscore.service.text import StoredText

router = APIRouter(prefix="/v1", tags=["admin"], route_class=JSONRoute)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StoredText = Field(description="who or what uses the token")
    scopes: list[StoredText] = Field(
        description="read, ingest, ingest:<table>,<table>, segment or admin",
        examples=[["read"], ["ingest:usage_events,tickets"]],
    )
    expires: StoredText | None = Field(
        None, description="30d, 12mo, or a date/ISO timestamp (UTC); none: never"
    )


class UserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: StoredText
    password: StoredText = Field(description="at least 12 characters; stored as an argon2id hash")
    role: StoredText = Field("member", description="viewer, member or admin")
    csm: StoredText | None = Field(None, description="the CSM name this login is in the data")


def user_dict(user: auth.User) -> dict:
    return {"username": user.username, "role": user.role, "csm": user.csm}


def new_token_dict(new: auth.NewToken) -> dict:
    """A token just made, with its one-time full text under ``token``."""
    return {"token": new.text, **new.token.to_dict()}


@router.get("/tokens", dependencies=[auth.require("admin")])
def list_tokens(request: Request) -> dict:
    """Every API token (never their secrets), revoked ones included."""
    with request.app.state.service.store_access() as store:
        return {"items": [t.to_dict() for t in auth.list_tokens(store)]}


@router.post("/tokens", status_code=201, dependencies=[auth.require("admin")])
def create_token(request: Request, body: TokenRequest) -> dict:
    """Make a token; its full text (``token``) is in this answer and nowhere else."""
    expires_at = auth.parse_expiry(body.expires)
    with request.app.state.service.store_access() as store:
        return new_token_dict(
            auth.create_token(store, body.name, body.scopes, expires_at=expires_at)
        )


@router.delete("/tokens/{token_id}", dependencies=[auth.require("admin")])
def revoke_token(request: Request, token_id: str) -> dict:
    """Revoke a token (revoking twice is harmless); it is refused from now on."""
    with request.app.state.service.store_access() as store:
        return auth.revoke_token(store, token_id).to_dict()


@router.get("/users", dependencies=[auth.require("admin")])
def list_users(request: Request) -> dict:
    """The dashboard logins and their roles."""
    with request.app.state.service.store_access() as store:
        return {"items": [user_dict(u) for u in auth.list_users(store)]}


@router.post("/users", status_code=201, dependencies=[auth.require("admin")])
def add_user(request: Request, body: UserRequest) -> dict:
    """Add a dashboard login (or set the password and role of an existing one)."""
    with request.app.state.service.store_access() as store:
        return user_dict(
            auth.add_user(store, body.username, body.password, body.role, csm=body.csm)
        )


# a user name may hold a "/" (ops/ana, sent as ops%2Fana): the rest of the path
@router.delete("/users/{username:path}", dependencies=[auth.require("admin")])
def remove_user(request: Request, username: str) -> dict:
    """Remove a dashboard login; its sessions end with it."""
    with request.app.state.service.store_access() as store:
        user = auth.get_user(store, username)
        auth.remove_user(store, username)
    return {**user_dict(user), "removed": True} if user else {"username": username}
