"""The service's frame: it starts on loopback, answers its health check to anyone, and
keeps everything else closed without a token."""

from __future__ import annotations

import httpx


def test_health_is_open_and_the_api_is_not(service):
    assert httpx.get(service.url + "/health").json() == {"status": "ok"}
    with service.client(token="") as anon:
        r = anon.get("/openapi.json")
        assert r.status_code == 401


def test_tokens_are_checked_by_hash_and_scope(service):
    from healthscore.service.auth import list_tokens, revoke_token, verify_token

    text = service.token("ingest:usage_events", name="feed")
    with service.state.store_access() as store:
        token = verify_token(store, text)
        assert token is not None and token.name == "feed"
        assert token.allows("ingest", "usage_events") and not token.allows("ingest", "tickets")
        assert not token.allows("read")
        # a wrong secret with a real id is refused; the secret itself is not stored
        token_id = text.split("_")[1]
        assert verify_token(store, f"hs_{token_id}_wrong") is None
        stored = store.execute(store.stored("api_tokens")).to_pylist()
        assert all(text.split("_", 2)[2] not in str(r) for r in stored)
        revoke_token(store, token_id)
        assert verify_token(store, text) is None
        assert [t.name for t in list_tokens(store) if t.revoked_at is not None] == ["feed"]


def test_a_dashboard_page_without_a_session_goes_to_login_and_a_token_is_no_session(service):
    with service.client() as api:  # an admin bearer token: not a dashboard session
        r = api.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_users_passwords_are_argon2id_and_checked(service):
    from healthscore.service.auth import AuthError, add_user, check_password

    with service.state.store_access() as store:
        add_user(store, "maria", "correct horse battery", "member", csm="Maria Lopez")
        stored = store.execute(store.stored("app_users")).to_pylist()
        assert [r["password_hash"][:10] for r in stored if r["username"] == "maria"] == [
            "$argon2id$"
        ]
        assert check_password(store, "maria", "correct horse battery").role == "member"
        assert check_password(store, "maria", "wrong horse battery!") is None
        assert check_password(store, "nobody", "correct horse battery") is None
        import pytest

        with pytest.raises(AuthError, match="12 characters"):
            add_user(store, "short", "tiny", "viewer")
