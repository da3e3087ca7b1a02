"""The Segment-compatible routes, driven end to end by Segment's own Python client
(``segment-analytics-python``) over real HTTP: identify, group and track become users
and usage_events rows of the account; events of users not yet grouped wait in pending
and are attributed when the group call comes; invalid messages are parked with their
reason while the rest of the batch is taken; a re-sent message changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import segment.analytics as analytics
from segment.analytics.request import APIError


@pytest.fixture
def write_key(service) -> str:
    return service.token("segment", name="web app")


@pytest.fixture
def client(service, write_key):
    """Segment's client, queueing and sending batches (``flush``) as in production;
    errors it meets are collected."""
    errors: list = []
    c = analytics.Client(
        write_key,
        host=service.url,
        max_retries=0,
        gzip=True,
        on_error=lambda e, batch: errors.append(e),
    )
    c.errors = errors
    yield c
    c.join()


def _events(service, **where) -> list[dict]:
    with service.state.store_access() as store:
        t = store.table("usage_events")
        for column, values in where.items():
            t = t.filter(t[column].isin(values))
        return store.execute(t.order_by("event_id")).to_pylist()


def _user(service, user_id: str) -> dict | None:
    with service.state.store_access() as store:
        t = store.table("users")
        rows = store.execute(t.filter(t.user_id == user_id)).to_pylist()
    return rows[0] if rows else None


def _parked(service, which: str) -> list[dict]:
    with service.client(service.token("read")) as api:
        r = api.get(f"/v1/ingest/{which}", params={"limit": 500})
        assert r.status_code == 200, r.text
        return r.json()["items"]


def test_identify_group_track_become_rows_of_the_account(service, client):
    client.identify("seg-u1", {"email": "ana@example.com", "createdAt": "2025-03-01T10:00:00Z"})
    client.group("seg-u1", "ACC-00102", {"name": "Acme"})
    client.track("seg-u1", "report_viewed", {"quantity": 3}, message_id="seg-m1")
    client.track("seg-u1", "export_csv", message_id="seg-m2")
    client.flush()
    assert client.errors == []
    user = _user(service, "seg-u1")
    assert user["account_id"] == "ACC-00102"
    assert user["created_at"] == datetime(2025, 3, 1, 10)
    events = _events(service, event_id=["seg-m1", "seg-m2"])
    assert [(e["account_id"], e["user_id"], e["event"], e["quantity"]) for e in events] == [
        ("ACC-00102", "seg-u1", "report_viewed", 3.0),
        ("ACC-00102", "seg-u1", "export_csv", None),
    ]
    # the client's clock is today's; the service's is frozen at the demo's end: the
    # skew (receivedAt - sentAt) moves each event to when the service received it
    now = service.state.now()
    assert all(abs(e["ts"] - now) < timedelta(minutes=1) for e in events)


def test_a_track_before_group_waits_then_is_attributed(service, client):
    client.identify("seg-late", {"createdAt": "2025-02-01"}, message_id="seg-late-id")
    client.track("seg-late", "login", message_id="seg-late-1")
    client.flush()
    assert _events(service, event_id=["seg-late-1"]) == []
    assert _user(service, "seg-late") is None
    waiting = [p for p in _parked(service, "pending") if p["user_id"] == "seg-late"]
    assert sorted((p["message_id"], p["type"]) for p in waiting) == [
        ("seg-late-1", "track"),
        ("seg-late-id", "identify"),
    ]
    client.group("seg-late", "ACC-00148")
    client.flush()
    assert client.errors == []
    [event] = _events(service, event_id=["seg-late-1"])
    assert (event["account_id"], event["event"]) == ("ACC-00148", "login")
    user = _user(service, "seg-late")
    assert (user["account_id"], user["created_at"]) == ("ACC-00148", datetime(2025, 2, 1))
    assert [p for p in _parked(service, "pending") if p["user_id"] == "seg-late"] == []
    # a user moved to another account: later events count there
    client.group("seg-late", "ACC-00102")
    client.track("seg-late", "login", message_id="seg-late-2")
    client.flush()
    assert [e["account_id"] for e in _events(service, event_id=["seg-late-2"])] == ["ACC-00102"]
    assert _user(service, "seg-late")["created_at"] == datetime(2025, 2, 1)  # kept


def test_invalid_messages_are_parked_and_the_rest_of_the_batch_taken(service, write_key):
    sent = datetime.now(UTC).isoformat()
    batch = {
        "batch": [
            {"type": "group", "userId": "seg-b1", "groupId": "ACC-00102", "messageId": "b-g"},
            {"type": "track", "userId": "seg-b1", "event": "ok", "messageId": "b-ok",
             "timestamp": sent},
            {"type": "track", "userId": "seg-b1", "event": "bad qty", "messageId": "b-qty",
             "properties": {"quantity": "lots"}, "timestamp": sent},
            {"type": "track", "anonymousId": "anon-1", "event": "x", "messageId": "b-anon"},
            {"type": "track", "userId": "seg-b1", "event": "x", "messageId": "b-time",
             "timestamp": "yesterday"},
            {"type": "page", "userId": "seg-b1", "name": "Home", "messageId": "b-page"},
            "not a message",
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(write_key, ""))
    assert r.status_code == 200 and r.json() == {"success": True}
    assert [e["event_id"] for e in _events(service, user_id=["seg-b1"])] == ["b-ok"]
    reasons = {p["message_id"]: p["reason"] for p in _parked(service, "rejects")}
    assert "quantity" in reasons["b-qty"] and "not a number" in reasons["b-qty"]
    assert "no userId" in reasons["b-anon"]
    assert "timestamp: not an ISO 8601 time" in reasons["b-time"]
    assert "'page' is not used" in reasons["b-page"]
    assert any("must be a JSON object" in why for why in reasons.values())
    rejects = {p["message_id"]: p for p in _parked(service, "rejects")}
    assert rejects["b-qty"]["message"]["properties"] == {"quantity": "lots"}  # as received


def test_re_sent_messages_are_harmless(service, client):
    client.group("seg-again", "ACC-00102")
    for _ in range(3):
        client.track("seg-again", "search", message_id="seg-again-1")
        client.flush()
    assert client.errors == []
    assert len(_events(service, event_id=["seg-again-1"])) == 1


def test_a_time_far_in_the_future_is_parked_with_the_reason(service, write_key):
    c = analytics.Client(write_key, host=service.url, sync_mode=True, max_retries=0)
    c.group("seg-future", "ACC-00102")
    c.track(
        "seg-future",
        "login",
        timestamp=datetime.now(UTC) + timedelta(days=10),
        message_id="seg-future-1",
    )
    assert _events(service, event_id=["seg-future-1"]) == []
    [parked] = [p for p in _parked(service, "rejects") if p["message_id"] == "seg-future-1"]
    assert "more than 1 day after it was received" in parked["reason"]


def test_the_single_message_routes(service, write_key):
    for path, message in [
        ("/v1/group", {"userId": "seg-single", "groupId": "ACC-00148", "messageId": "s-g"}),
        ("/v1/track", {"userId": "seg-single", "event": "login", "messageId": "s-t"}),
    ]:
        r = httpx.post(service.url + path, json=message, auth=(write_key, ""))
        assert r.status_code == 200, r.text
    assert [e["account_id"] for e in _events(service, event_id=["s-t"])] == ["ACC-00148"]


def test_a_write_key_writes_segment_and_nothing_else(service, write_key):
    with service.client(write_key) as api:  # as a bearer token
        assert api.get("/v1/ingest/rejects").status_code == 403
        assert api.post("/v1/ingest/usage_events", json={"rows": []}).status_code == 403
        if any(getattr(r, "path", None) == "/v1/accounts" for r in _routes(service)):
            assert api.get("/v1/accounts").status_code == 403
    # a token without the segment scope, or none, cannot send
    reader = service.token("read")
    r = httpx.post(service.url + "/v1/batch", json={"batch": []}, auth=(reader, ""))
    assert r.status_code == 403
    r = httpx.post(service.url + "/v1/batch", json={"batch": []})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    c = analytics.Client("hs_nope_wrong", host=service.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError):
        c.track("seg-x", "login")


def _routes(service):
    import healthscore.service.read as read

    return read.router.routes


def test_nul_characters_are_parked_with_the_reason_not_a_failed_request(service, write_key):
    # a NUL in a user id, event name or message id cannot be stored (nor looked up)
    sent = datetime.now(UTC).isoformat()
    batch = {
        "batch": [
            {"type": "group", "userId": "seg-nul", "groupId": "ACC-00102", "messageId": "n-g"},
            {"type": "track", "userId": "seg-\x00nul", "event": "x", "messageId": "n-user",
             "timestamp": sent},
            {"type": "track", "userId": "seg-nul", "event": "x\x00", "messageId": "n-event",
             "timestamp": sent},
            {"type": "group", "userId": "seg-nul2", "groupId": "ACC\x00", "messageId": "n-grp"},
            {"type": "track", "userId": "seg-nul", "event": "x", "messageId": "n-\x00id",
             "timestamp": sent},
            {"type": "track", "userId": "seg-nul", "event": "ok", "messageId": "n-ok",
             "timestamp": sent},
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(write_key, ""))
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    assert [e["event_id"] for e in _events(service, user_id=["seg-nul"])] == ["n-ok"]
    reasons = {p["message_id"]: p["reason"] for p in _parked(service, "rejects")}
    assert (
        reasons["n-user"] == "userId: holds a NUL character (U+0000), which no text value may hold"
    )
    assert reasons["n-event"].startswith("event: holds a NUL character")
    assert reasons["n-grp"].startswith("groupId: holds a NUL character")
    # a message id the store cannot keep: the message gets one derived from its content
    assert any(
        key.startswith("md5-") and why.startswith("messageId: holds a NUL character")
        for key, why in reasons.items()
    )


def test_ids_and_event_names_of_megabytes_are_parked_not_stored_as_keys(service, write_key):
    # a userId, event name or messageId of megabytes was stored as a key of usage_events
    # (the body limit bounded it at 16 MB)
    sent = datetime.now(UTC).isoformat()
    long = "x" * 5_000
    batch = {
        "batch": [
            {"type": "group", "userId": "seg-long", "groupId": "ACC-00102", "messageId": "l-g"},
            {"type": "track", "userId": "seg-" + long, "event": "x", "messageId": "l-user",
             "timestamp": sent},
            {"type": "track", "userId": "seg-long", "event": long, "messageId": "l-event",
             "timestamp": sent},
            {"type": "track", "userId": "seg-long", "event": "x", "messageId": "l-" + long,
             "timestamp": sent},
            {"type": "track", "userId": "seg-long", "event": "ok", "messageId": "l-ok",
             "timestamp": sent, "properties": {"note": long}},
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(write_key, ""))
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    # a long property is no id: that message is taken
    assert [e["event_id"] for e in _events(service, user_id=["seg-long"])] == ["l-ok"]
    reasons = {p["message_id"]: p["reason"] for p in _parked(service, "rejects")}
    too_long = "5,004 characters; an id or event name is at most 1,000"
    assert reasons["l-user"] == f"userId: {too_long}"
    assert reasons["l-event"] == "event: 5,000 characters; an id or event name is at most 1,000"
    assert any(
        key.startswith("md5-")
        and why == "messageId: 5,002 characters; an id or event name is at most 1,000"
        for key, why in reasons.items()
    )


def test_a_request_whose_only_message_is_refused_is_200_and_the_message_parked(service, write_key):
    # a quantity that is an object (or not finite) made the whole request 400: the
    # message was neither written nor parked, and Segment's clients do not retry a 400
    client = analytics.Client(write_key, host=service.url, sync_mode=True, max_retries=0)
    client.group("seg-only", "ACC-00102")
    sent = datetime.now(UTC).isoformat()
    for mid, quantity in (("only-obj", {"n": 1}), ("only-big", 1e999)):
        message = {"type": "track", "userId": "seg-only", "event": "x", "messageId": mid,
                   "sentAt": sent,
                   "timestamp": sent, "properties": {"quantity": quantity}}  # fmt: skip
        body = json.dumps(message).replace("Infinity", "1e999")
        r = httpx.post(
            service.url + "/v1/track",
            content=body,
            headers={"content-type": "application/json"},
            auth=(write_key, ""),
        )
        assert r.status_code == 200 and r.json() == {"success": True}, r.text
    reasons = {p["message_id"]: p["reason"] for p in _parked(service, "rejects")}
    assert "quantity" in reasons["only-obj"] and "text, a number" in reasons["only-obj"]
    assert "not a finite number" in reasons["only-big"]
    assert _events(service, user_id=["seg-only"]) == []


def test_times_out_of_range_once_in_utc_are_parked_not_a_failed_request(service, write_key):
    # 0001-01-01 at +01:00 is before the first day there is in UTC (and 9999-12-31 at
    # -01:00 after the last): converting it raised, and the whole batch was a 500
    sent = datetime.now(UTC).isoformat()
    batch = {
        "batch": [
            {"type": "group", "userId": "seg-range", "groupId": "ACC-00102", "messageId": "r-g"},
            {"type": "track", "userId": "seg-range", "event": "x", "messageId": "r-first",
             "timestamp": "0001-01-01T00:00:00+01:00"},
            {"type": "track", "userId": "seg-range", "event": "x", "messageId": "r-last",
             "timestamp": "9999-12-31T23:59:59-01:00"},
            {"type": "track", "userId": "seg-range", "event": "x", "messageId": "r-sent",
             "timestamp": sent, "sentAt": "0001-01-01T00:30:00+02:00"},
            {"type": "track", "userId": "seg-range", "event": "ok", "messageId": "r-ok",
             "timestamp": sent},
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(write_key, ""))
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    assert [e["event_id"] for e in _events(service, user_id=["seg-range"])] == ["r-ok"]
    reasons = {p["message_id"]: p["reason"] for p in _parked(service, "rejects")}
    assert reasons["r-first"] == (
        "timestamp: out of range once in UTC (got '0001-01-01T00:00:00+01:00')"
    )
    assert reasons["r-last"].startswith("timestamp: out of range once in UTC")
    assert reasons["r-sent"].startswith("sentAt: out of range once in UTC")


def test_unpaired_surrogates_are_parked_with_the_reason_not_a_failed_request(service, write_key):
    # JSON may spell half of a surrogate pair ("\ud800"): no store can keep that text,
    # and a message holding one in any field (used or not) made the request a 500
    sent = datetime.now(UTC).isoformat()
    half = "\ud800"
    batch = {
        "batch": [
            {"type": "group", "userId": "seg-sur", "groupId": "ACC-00102", "messageId": "u-g"},
            {"type": "track", "userId": "seg-sur" + half, "event": "x", "messageId": "u-user",
             "timestamp": sent},
            {"type": "track", "userId": "seg-sur", "event": "x" + half, "messageId": "u-event",
             "timestamp": sent},
            {"type": "track", "userId": "seg-sur", "event": "x", "messageId": "u-qty",
             "timestamp": sent, "properties": {"quantity": "2" + half}},
            {"type": "identify", "userId": "seg-sur", "messageId": "u-created",
             "traits": {"createdAt": "2025-01-01" + half}},
            {"type": "group", "userId": "seg-sur2", "groupId": "ACC" + half, "messageId": "u-grp"},
            {"type": "track", "userId": "seg-sur", "event": "x", "messageId": "u-" + half,
             "timestamp": sent},
            {"type": "track", "userId": "seg-sur", "event": "ok", "messageId": "u-ok",
             "timestamp": sent, "properties": {"note": "kept " + half, "emoji": "\U0001f600"}},
            {"type": "page", "userId": "seg-sur", "messageId": "u-page", "name": half},
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(
        service.url + "/v1/batch",
        content=json.dumps(batch),  # ASCII, the surrogate as its escape
        headers={"content-type": "application/json"},
        auth=(write_key, ""),
    )
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    # a surrogate in a field no column takes is no obstacle: that message is taken
    assert [e["event_id"] for e in _events(service, user_id=["seg-sur"])] == ["u-ok"]
    assert _user(service, "seg-sur")["created_at"] is None
    rejects = {p["message_id"]: p for p in _parked(service, "rejects")}
    reasons = {k: p["reason"] for k, p in rejects.items()}
    why = "not valid Unicode text: an unpaired surrogate"
    assert reasons["u-user"] == f"userId: {why}"
    assert reasons["u-event"] == f"event: {why}"
    assert reasons["u-qty"] == f"properties.quantity: {why}"
    assert reasons["u-created"] == f"traits.createdAt: {why}"
    assert reasons["u-grp"] == f"groupId: {why}"
    assert any(k.startswith("md5-") and w == f"messageId: {why}" for k, w in reasons.items())
    # the parked copy shows the surrogate as U+FFFD (the listing could not be sent else)
    assert rejects["u-page"]["message"]["name"] == "\ufffd"
    assert rejects["u-event"]["message"]["event"] == "x\ufffd"


def test_a_write_key_holding_a_nul_character_is_401_like_any_unknown_key(service):
    # the Basic user is base64, so it can carry a NUL a Bearer header cannot: the token's
    # lookup then ended its SQL there (400, the parser's error) instead of a 401
    for key in ("hs_ab\x00cd_secret", "hs_abcdef012345_sec\x00ret"):
        r = httpx.post(
            service.url + "/v1/track", json={"userId": "u", "event": "x"}, auth=(key, "")
        )
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "the write key is unknown, revoked or expired"
        assert r.headers["www-authenticate"].startswith("Basic")


def test_a_type_that_is_not_text_is_parked_not_a_failed_request(service, write_key):
    # the refused message's type went into the rejects table as it was: a list or an
    # object there failed the insert, and with it the whole request (500)
    sent = datetime.now(UTC).isoformat()
    batch = {
        "batch": [
            {"type": ["track"], "userId": "seg-type", "event": "x", "messageId": "t-list"},
            {"type": {"t": "track"}, "userId": "seg-type", "event": "x", "messageId": "t-obj"},
            {"type": 7, "userId": "seg-type", "event": "x", "messageId": "t-num"},
            {"type": "x" * 5000, "userId": "seg-type", "event": "x", "messageId": "t-long"},
            {"type": "group", "userId": "seg-type", "groupId": "ACC-00102", "messageId": "t-g"},
            {"type": "track", "userId": "seg-type", "event": "ok", "messageId": "t-ok",
             "timestamp": sent},
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(write_key, ""))
    assert r.status_code == 200 and r.json() == {"success": True}, r.text
    assert [e["event_id"] for e in _events(service, user_id=["seg-type"])] == ["t-ok"]
    rejects = {p["message_id"]: p for p in _parked(service, "rejects")}
    assert rejects["t-list"]["type"] == '["track"]'
    assert (
        rejects["t-list"]["reason"]
        == "type ['track'] is not used (healthscore takes track, identify, group)"
    )
    assert rejects["t-obj"]["type"] == '{"t": "track"}'
    assert rejects["t-num"]["type"] == "7"
    assert rejects["t-long"]["type"] == "x" * 1000
    assert rejects["t-list"]["message"]["type"] == ["track"]  # the message as received


def test_the_parked_lists_refuse_a_page_past_what_a_store_can_bind(service):
    # an offset past a 64-bit integer reached the query: a 400 quoting DuckDB's
    # conversion error; a page past max_page was a 400 where GET /v1/accounts says 422
    with service.client(service.token("read")) as api:
        for which in ("rejects", "pending"):
            r = api.get(f"/v1/ingest/{which}", params={"offset": 2**64})
            assert r.status_code == 422, r.text
            assert r.json()["problems"][0]["key"] == "query.offset"
            r = api.get(f"/v1/ingest/{which}", params={"limit": 501})
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "`limit` 501 is more than a page holds (500)"
            assert api.get(f"/v1/ingest/{which}", params={"offset": 2**40}).json()["items"] == []


def test_a_write_key_adds_events_and_never_rewrites_one_by_its_id(service, write_key):
    # a track's messageId is its event_id: a (public) write key reusing the id of an
    # event written by another source moved that event to its own user and account
    row = {"event_id": "crm-e-1", "account_id": "ACC-00102", "user_id": "USR-crm",
           "event": "report_viewed", "ts": "2025-06-30T09:15:00", "quantity": 2}  # fmt: skip
    with service.client() as api:
        assert api.post("/v1/ingest/usage_events", json={"rows": [row]}).status_code == 200
    sent = datetime.now(UTC).isoformat()
    batch = {
        "batch": [
            {"type": "group", "userId": "seg-spoof", "groupId": "ACC-00148", "messageId": "sp-g"},
            {"type": "track", "userId": "seg-spoof", "event": "spoofed", "messageId": "crm-e-1",
             "properties": {"quantity": 999}, "timestamp": sent},
            {"type": "track", "userId": "seg-spoof", "event": "new", "messageId": "sp-new",
             "timestamp": sent},
        ],
        "sentAt": sent,
    }  # fmt: skip
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(write_key, ""))
    assert r.status_code == 200, r.text
    [kept] = _events(service, event_id=["crm-e-1"])
    assert {k: kept[k] for k in ("account_id", "user_id", "event", "quantity")} == {
        "account_id": "ACC-00102", "user_id": "USR-crm", "event": "report_viewed",
        "quantity": 2.0,
    }  # fmt: skip
    assert [e["event_id"] for e in _events(service, user_id=["seg-spoof"])] == ["sp-new"]
