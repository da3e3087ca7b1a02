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
        # hashing costs time in the length: a password of megabytes is refused, unhashed
        longest = "correct horse " * 73 + "ba"  # 1,024 characters: taken
        add_user(store, "long", longest, "viewer")
        assert check_password(store, "long", longest).username == "long"
        with pytest.raises(AuthError, match="at most 1,024 characters"):
            add_user(store, "longer", longest + "x", "viewer")
        assert check_password(store, "long", longest + "x" * 10_000_000) is None


def test_a_nul_character_in_a_url_is_400_naming_it_before_any_route_reads_it(service):
    # read as an id or filter, a NUL used to reach the store's SQL text (which ends at
    # it): a parser error worded as a failed scoring query, or a 500
    paths = [
        "/v1/accounts/ACC%0000102",
        "/v1/accounts/ACC%0000102/history",
        "/v1/flags?account_id=ACC%00",
        "/v1/accounts?csm=a%00b",
        "/v1/flags/FLG%00/resolve",
    ]
    with service.client() as api:
        for path in paths:
            method = api.post if path.endswith("resolve") else api.get
            r = method(path)
            assert r.status_code == 400, (path, r.text)
            assert "NUL character (%00)" in r.json()["error"], path
        r = api.delete("/v1/users/a%00b")
        assert r.status_code == 400 and "NUL character" in r.json()["error"]


def test_names_holding_a_nul_character_are_refused_in_bodies_and_the_login_form(service):
    import re

    with service.client() as api:
        r = api.post("/v1/tokens", json={"name": "feed\x00", "scopes": ["read"]})
        assert r.status_code == 400 and "NUL character" in r.json()["error"]
        user = {"username": "nul\x00user", "password": "p" * 12}
        r = api.post("/v1/users", json=user)
        assert r.status_code == 400 and "NUL character" in r.json()["error"]
        user = {"username": "csm-user", "password": "p" * 12}
        r = api.post("/v1/users", json={**user, "csm": "Maria\x00"})
        assert r.status_code == 400 and "NUL character" in r.json()["error"]
        r = api.post("/v1/users", json={**user, "csm": "M" * 201})
        assert r.status_code == 400 and "at most 200 characters" in r.json()["error"]
        flag = {"account_id": "ACC-00102", "kind": "champion_left"}
        r = api.post("/v1/flags", json={**flag, "account_id": "ACC-00102\x00"})
        assert r.status_code == 404 and "unknown account" in r.json()["error"]
        for field in ("kind", "note", "author"):
            r = api.post("/v1/flags", json={**flag, field: "x\x00"})
            assert r.status_code == 400, (field, r.text)
            assert r.json()["error"].startswith(f"`{field}` holds a NUL character"), r.text
        names = [u["username"] for u in api.get("/v1/users").json()["items"]]
        assert "csm-user" not in names
    # the login form, open to anyone: a wrong user name, not a store error
    page = httpx.get(service.url + "/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = httpx.post(
        service.url + "/login",
        data={"username": "admin\x00", "password": "p" * 12, "csrf_token": csrf},
        headers={"Cookie": f"hs_login_csrf={page.cookies['hs_login_csrf']}"},
    )
    assert r.status_code == 401 and "Wrong user name or password" in r.text
