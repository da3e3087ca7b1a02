"""A third hostile-input and access probe of the live service, over real HTTP on loopback:
account ids holding a ``/``, JSON objects naming a key twice, small JSON bodies the
framework could not read, user names with control characters, a flag list filtered by
an account that does not exist, and an ingestion body with fields it does not take.
Each answer is a 4xx naming what and where, and nothing is written."""

from __future__ import annotations

import base64
import gzip
import re

import httpx
import pytest

from service_support import demo_event, light_password_hashing, login_cookies

ACC = "ACC-00102"
SLASHED = "ACC/X9"
PASSWORD = "correct horse battery staple"


def _events(service, event_ids: list[str]) -> list[dict]:
    with service.state.store_access() as store:
        t = store.table("usage_events")
        return store.execute(t.filter(t.event_id.isin(event_ids))).to_pylist()


def _raw(client: httpx.Client, path: str, body: str | bytes, **headers) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json", **headers})


# --- 1. an account id holding a slash ---------------------------------------------------


@pytest.fixture(scope="module")
def slashed(api):
    """An account whose id holds a ``/`` (as ``healthscore load`` and ingestion take it),
    with a subscription, so it is scored."""
    rows = [{"account_id": SLASHED, "name": "Slash Co", "created_at": "2024-01-01",
             "segment": "smb", "csm": "Maya Patel"}]  # fmt: skip
    assert api.post("/v1/ingest/accounts", json={"rows": rows}).status_code == 200
    sub = [{"subscription_id": "S-X9", "account_id": SLASHED, "plan": "pro", "mrr": 100,
            "start_date": "2024-01-01"}]  # fmt: skip
    assert api.post("/v1/ingest/subscriptions", json={"rows": sub}).status_code == 200
    listed = api.get("/v1/accounts", params={"q": "Slash Co"}).json()["items"]
    assert [i["account_id"] for i in listed] == [SLASHED]
    return SLASHED


def test_an_account_whose_id_holds_a_slash_is_read_through_the_api(api, slashed):
    """It was listed, but asking for it (``/v1/accounts/ACC%2FX9``: a client quoting the
    id, or ``/v1/accounts/ACC/X9``) was a bare 404 "Not Found": the router read the
    decoded ``/`` as the end of the id."""
    for path in ("ACC%2FX9", "ACC/X9"):
        r = api.get(f"/v1/accounts/{path}")
        assert r.status_code == 200, r.text
        assert r.json()["account_id"] == slashed
        r = api.get(f"/v1/accounts/{path}/history")
        assert r.status_code == 200 and r.json()["account_id"] == slashed, r.text
        r = api.get(f"/v1/accounts/{path}/why", params={"from": "2025-05-01"})
        assert r.status_code == 200 and r.json()["account_id"] == slashed, r.text
    # an id that is not there is still the read API's 404, naming it
    r = api.get("/v1/accounts/ACC%2FNOPE")
    assert r.status_code == 404 and "ACC/NOPE" in r.json()["error"], r.text
    assert api.get(f"/v1/accounts/{ACC}/history").json()["account_id"] == ACC


def _browser(service, username: str, role: str) -> httpx.Client:
    """A dashboard client logged in as a new user ``username`` of ``role``."""
    from healthscore.service import auth

    with light_password_hashing():
        with service.state.store_access() as store:
            auth.add_user(store, username, PASSWORD, role)
        cookies = login_cookies(service.url, username, PASSWORD)
    return httpx.Client(base_url=service.url, cookies=cookies, timeout=30)


def _link(browser: httpx.Client, name: str) -> str:
    """The link of the one account the dashboard's list finds searching ``name``."""
    listing = browser.get("/accounts", params={"q": name})
    [link] = re.findall(r'href="(/accounts/[^"?#]*)"', listing.text)
    return link


def test_an_account_whose_id_holds_a_slash_opens_in_the_dashboard(service, slashed):
    with _browser(service, "probe3-member", "member") as browser:
        link = _link(browser, "Slash Co")
        page = browser.get(link)
        assert page.status_code == 200 and "Slash Co" in page.text, page.text[:300]
        assert browser.get("/accounts/ACC%2FX9").status_code == 200
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        r = browser.post(f"{link}/flags", data={"kind": "champion_left", "csrf_token": csrf})
        assert r.status_code == 303, r.text[:300]
    with service.state.store_access() as store:
        t = store.table("flags")
        flags = store.execute(t.filter(t.account_id == slashed)).to_pylist()
    assert [f["kind"] for f in flags] == ["champion_left"]


def test_an_account_id_with_dot_segments_links_to_its_own_page(api, service):
    """The dashboard's links quoted an id with ``urlencode``, which keeps ``/``: the link
    of an account ``../x`` read ``/accounts/../x``, which a browser resolves to ``/x``
    (found by the output probe of the tenth session)."""
    from urllib.parse import urljoin, urlsplit

    rows = [{"account_id": "../dots", "name": "Dot Dot Co", "created_at": "2024-01-01"}]
    assert api.post("/v1/ingest/accounts", json={"rows": rows}).status_code == 200
    sub = [{"subscription_id": "S-DOTS", "account_id": "../dots", "plan": "pro", "mrr": 100,
            "start_date": "2024-01-01"}]  # fmt: skip
    assert api.post("/v1/ingest/subscriptions", json={"rows": sub}).status_code == 200
    with _browser(service, "probe3-dots", "viewer") as browser:
        link = _link(browser, "Dot Dot")
        resolved = urlsplit(urljoin(service.url + "/accounts", link)).path  # as a browser does
        assert resolved.startswith("/accounts/"), (link, resolved)
        page = browser.get(resolved)
        assert page.status_code == 200 and "Dot Dot Co" in page.text, page.text[:300]


# --- 2. a JSON object naming a key twice --------------------------------------------------


def test_an_ingested_row_naming_a_column_twice_is_refused_naming_row_and_column(api, service):
    """``healthscore load`` refuses a JSON lines row naming a key twice; the service took
    the last value silently (an event moved to another account, say)."""
    body = (
        '{"rows": [' + __import__("json").dumps(demo_event("p3-d0")) + ", "
        '{"event_id": "p3-d1", "account_id": "ACC-00102", "account_id": "ACC-00103", '
        '"event": "search", "ts": "2025-06-30"}]}'
    )
    r = _raw(api, "/v1/ingest/usage_events", body)
    assert r.status_code == 400, r.text
    [p] = r.json()["problems"]
    assert p["row"] == 1 and p["column"] == "account_id" and "twice" in p["reason"], p
    assert "nothing written" in r.json()["error"]
    assert _events(service, ["p3-d0", "p3-d1"]) == []
    # an object naming a key twice nested in a row is refused as any nested object is
    nested = '{"rows": [{"event_id": "p3-d2", "meta": {"a": 1, "a": 2}}]}'
    r = _raw(api, "/v1/ingest/usage_events", nested)
    assert r.status_code == 400, r.text
    [p] = [p for p in r.json()["problems"] if p["column"] == "meta"]
    assert p["got"] == "dict", p
    # the body's own keys too
    r = _raw(api, "/v1/ingest/usage_events", '{"rows": [], "rows": []}')
    assert r.status_code == 400 and "'rows'" in r.json()["error"], r.text


def test_a_segment_message_naming_a_key_twice_is_parked_with_the_reason(api, service):
    key = service.token("segment")
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    body = (
        '{"batch": [{"type": "track", "userId": "p3-u1", "userId": "p3-u2", '
        '"event": "search", "messageId": "p3-twice"}]}'
    )
    r = _raw(api, "/v1/batch", body, Authorization=auth)
    assert r.status_code == 200, r.text  # Segment's semantics: the message is parked
    rejects = api.get("/v1/ingest/rejects", params={"limit": 500}).json()["items"]
    [parked] = [m for m in rejects if m["message_id"] == "p3-twice"]
    assert "userId" in parked["reason"] and "twice" in parked["reason"], parked
    pending = api.get("/v1/ingest/pending", params={"limit": 500}).json()["items"]
    assert not [m for m in pending if m["message_id"] == "p3-twice"]


def test_a_small_body_naming_a_field_twice_is_422_naming_it(service):
    with service.client(service.token("ingest:flags")) as writer:
        body = '{"account_id": "ACC-00102", "kind": "p3_first", "kind": "p3_second"}'
        r = _raw(writer, "/v1/flags", body)
        assert r.status_code == 422, r.text
        assert "body.kind" in r.json()["error"] and "twice" in r.json()["error"], r.text
    with service.state.store_access() as store:
        t = store.table("flags")
        kinds = store.execute(t.select("kind"))["kind"].to_pylist()
    assert "p3_first" not in kinds and "p3_second" not in kinds


# --- 3. a small body the framework could not read ----------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "words"),
    [
        ('{"account_id": 1' + "0" * 5000 + ', "kind": "k"}', {}, "digits"),
        ("[" * 30_000 + "]" * 30_000, {}, "too deeply"),
        (b'{"account_id": "ACC\xff", "kind": "k"}', {}, "UTF-8"),
        (gzip.compress(b'{"account_id": "ACC-00102", "kind": "k"}'),
         {"Content-Encoding": "gzip"}, "Content-Encoding"),
    ],
    ids=["a number of 5,000 digits", "nested 30,000 deep", "not UTF-8", "gzip"],
)  # fmt: skip
def test_a_small_body_that_cannot_be_read_says_why(service, body, headers, words):
    """These were all 400 "There was an error parsing the body" (the framework's words,
    naming nothing)."""
    with service.client() as admin:
        r = _raw(admin, "/v1/flags", body, **headers)
    assert 400 <= r.status_code < 500, r.text
    text = r.json()["error"]
    assert words in text and "There was an error" not in text, text
    assert len(r.text) < 2_000


def test_an_ingested_number_of_thousands_of_digits_is_named_without_pythons_advice(api):
    body = '{"rows": [{"event_id": "p3-n", "quantity": 1' + "0" * 5000 + "}]}"
    r = _raw(api, "/v1/ingest/usage_events", body)
    assert r.status_code == 400, r.text
    text = r.json()["error"]
    assert "digits" in text and "sys.set_int_max_str_digits" not in text, text


# --- 4. user names with control characters -------------------------------------------------


@pytest.mark.parametrize(
    "name", ["p3\nbob", "p3\x1b[31mbob", "p3\rbob", "p3bob\x7f", "p3\u202ebob", "\u200b"]
)
def test_a_user_name_with_a_control_or_invisible_character_is_refused(service, name):
    """Such a name cannot be typed into the login form (a newline), moves a terminal's
    cursor or colours in ``auth user list`` (an escape), or reads as another name (a
    right-to-left override, an invisible space): it was stored as sent."""
    with light_password_hashing(), service.client() as admin:
        r = admin.post("/v1/users", json={"username": name, "password": PASSWORD, "role": "viewer"})
        assert r.status_code in (400, 422), r.text
        assert "user name" in r.json()["error"] and "U+" in r.json()["error"], r.text
        listed = [u["username"] for u in admin.get("/v1/users").json()["items"]]
    assert name not in listed and name.strip() not in listed


# --- 5. the flag list of an account that does not exist -----------------------------------


def test_flags_of_an_unknown_account_are_404_not_an_empty_list(service):
    """``GET /v1/accounts/NOPE`` is a 404; ``GET /v1/flags?account_id=NOPE`` said "no
    flags", which a mistyped id also gets."""
    with service.client(service.token("read")) as reader:
        r = reader.get("/v1/flags", params={"account_id": "ACC-NOPE"})
        assert r.status_code == 404, r.text
        assert "ACC-NOPE" in r.json()["error"]
        assert reader.get("/v1/flags", params={"account_id": ACC}).status_code == 200


# --- 6. an ingestion body with fields it does not take -------------------------------------


def test_an_ingestion_body_with_a_field_it_does_not_take_is_refused_naming_it(api, service):
    """``{"rows": [...], "upsert": false}`` wrote the rows and ignored the field (the
    flag and token bodies refuse a field they do not take)."""
    r = api.post(
        "/v1/ingest/usage_events", json={"rows": [demo_event("p3-extra")], "upsert": False}
    )
    assert r.status_code == 400, r.text
    assert "'upsert'" in r.json()["error"], r.text
    assert _events(service, ["p3-extra"]) == []


def test_a_token_name_with_a_control_character_is_refused(service):
    with service.client() as admin:
        r = admin.post("/v1/tokens", json={"name": "p3\nsync", "scopes": ["read"]})
        assert r.status_code == 400, r.text
        assert "token name" in r.json()["error"] and "U+000A" in r.json()["error"]
        names = [t["name"] for t in admin.get("/v1/tokens").json()["items"]]
    assert "p3\nsync" not in names


# --- 7. user names and flag ids holding a slash ---------------------------------------------


def test_a_user_whose_name_holds_a_slash_is_removed_through_the_api(service):
    """Added, but ``DELETE /v1/users/ops%2Fana`` (what ``healthscore auth user remove``
    sends while a server owns the store) was a bare 404 "Not Found"."""
    with light_password_hashing(), service.client() as admin:
        made = admin.post(
            "/v1/users", json={"username": "ops/ana", "password": PASSWORD, "role": "viewer"}
        )
        assert made.status_code == 201, made.text
        r = admin.delete("/v1/users/ops%2Fana")
        assert r.status_code == 200 and r.json()["removed"] is True, r.text
        listed = [u["username"] for u in admin.get("/v1/users").json()["items"]]
    assert "ops/ana" not in listed


def test_a_flag_whose_id_holds_a_slash_is_resolved_through_the_api_and_the_dashboard(api, service):
    rows = [{"flag_id": f"FLG/P3-{i}", "account_id": ACC, "ts": "2025-06-01",
             "kind": "champion_left"} for i in (1, 2)]  # fmt: skip
    assert api.post("/v1/ingest/flags", json={"rows": rows}).status_code == 200
    r = api.post("/v1/flags/FLG%2FP3-1/resolve", json={})
    assert r.status_code == 200 and r.json()["flag_id"] == "FLG/P3-1", r.text
    with _browser(service, "probe3-flags", "member") as browser:
        page = browser.get(f"/accounts/{ACC}")
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        [action] = re.findall(r'action="(/flags/FLG[^"]*P3-2/resolve)"', page.text)
        r = browser.post(action, data={"csrf_token": csrf})
        assert r.status_code == 303, r.text[:300]
    with service.state.store_access() as store:
        t = store.table("flags")
        found = store.execute(t.filter(t.flag_id.isin(["FLG/P3-1", "FLG/P3-2"])))
    assert all(f["resolved_at"] is not None for f in found.to_pylist())


# --- 8. a Segment time out of the years a store keeps --------------------------------------


@pytest.mark.parametrize(
    ("message_id", "times"),
    [
        ("p3-old", {"timestamp": "1899-12-31T00:00:00Z"}),
        ("p3-skew", {"timestamp": "2025-06-30T00:00:00Z", "sentAt": "2999-01-01T00:00:00Z"}),
    ],
    ids=["a time before 1900", "a sender's clock 974 years fast"],
)
def test_a_segment_time_out_of_range_is_refused_at_once_not_left_pending(
    api, service, message_id, times
):
    """Such a message, of a user no group call had linked yet, waited in the pending list
    (``GET /v1/ingest/pending``) as if it could be taken later; it never could: the
    usage_events check refuses a time outside 1900-2999 once the user is linked."""
    key = service.token("segment")
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    message = {"type": "track", "userId": "p3-nobody", "event": "search",
               "messageId": message_id, **times}  # fmt: skip
    r = api.post("/v1/batch", json={"batch": [message]}, headers={"Authorization": auth})
    assert r.status_code == 200, r.text
    pending = api.get("/v1/ingest/pending", params={"limit": 500}).json()["items"]
    assert not [m for m in pending if m["message_id"] == message_id]
    rejects = api.get("/v1/ingest/rejects", params={"limit": 500}).json()["items"]
    [parked] = [m for m in rejects if m["message_id"] == message_id]
    assert "1900" in parked["reason"] and "2999" in parked["reason"], parked


# --- 9. a time field holding an object or a list -------------------------------------------


@pytest.mark.parametrize("at", [{"t": "2025-06-30"}, ["2025-06-30"]], ids=["object", "list"])
def test_a_flag_time_that_is_an_object_or_list_is_not_called_a_number(service, at):
    with service.client(service.token("ingest:flags")) as writer:
        r = writer.post("/v1/flags", json={"account_id": ACC, "kind": "p3_at", "at": at})
    assert r.status_code == 422, r.text
    text = r.json()["error"]
    assert "`at`" in text and "ISO 8601" in text and "a number" not in text, text


# --- 9. the URL itself (tenth session, after the probe) ----------------------------------


def test_a_query_parameter_given_twice_is_refused_naming_it(api, service):
    """``sort=score&sort=arr`` was read as its last value, silently: which one the client
    meant is a guess. No parameter of the service takes a list."""
    r = api.get("/v1/accounts", params=[("sort", "score"), ("sort", "arr")])
    assert r.status_code == 400, r.text
    assert "'sort'" in r.json()["error"] and "twice" in r.json()["error"], r.text
    assert api.get("/v1/accounts", params={"sort": "arr"}).status_code == 200


def test_head_of_the_health_check_answers_as_get_does(service):
    """Uptime monitors often check with HEAD; it was a 405, which reads as the service
    being down."""
    with httpx.Client(base_url=service.url, timeout=30) as anyone:
        r = anyone.head("/health")
        assert r.status_code == 200 and r.content == b""
        assert anyone.get("/health").json() == {"status": "ok"}


def test_an_unknown_long_account_id_is_named_by_its_start_and_length(api):
    """A 10,000-character id was repeated whole in the 404 (a 10 KB error)."""
    r = api.get("/v1/accounts/" + "A" * 10_000)
    assert r.status_code == 404
    error = r.json()["error"]
    assert len(error) < 200 and "10,000 characters" in error, error
