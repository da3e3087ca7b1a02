"""The API refuses what a route does not take, in the shape of every other error
(``{"error", "hint", "problems"}``): query parameters it does not take, rather than
ignoring them (``GET /v1/accounts/A1?as_of=2025-01-01`` answered with today's score as if
it were that date's, ``/v1/portfolio?as_of=...`` likewise); bodies of the wrong shape;
bodies far larger than a few fields. Real HTTP on loopback over a copy of the fixture
store."""

from __future__ import annotations

import shutil

import pytest

from service_support import running_service


@pytest.fixture(scope="module")
def running(fixture_db, tmp_path_factory):
    db = tmp_path_factory.mktemp("query") / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    with running_service(db) as r:
        yield r


@pytest.mark.parametrize(
    "path, unknown, takes",
    [
        ("/v1/accounts/A1?as_of=2025-01-01", "'as_of'", "scorecard"),
        ("/v1/portfolio?as_of=2025-01-01&top=3", "'as_of'", "scorecard, top"),
        ("/v1/accounts?band=red&limt=5&page=2", "'limt', 'page'", "band, csm, limit"),
        ("/v1/accounts/A1/history?from=2024-01-01", "'from'", "scorecard"),
        ("/v1/status?verbose=1", "'verbose'", "none"),
    ],
)
def test_an_unknown_query_parameter_is_refused_naming_it_and_those_the_route_takes(
    running, path, unknown, takes
):
    with running.client() as c:
        r = c.get(path)
    assert r.status_code == 422, r.text
    detail = r.json()["error"]  # the shape of every error of the API
    assert "unknown query parameter" in detail and unknown in detail, detail
    assert f"this route takes: {takes}" in detail, detail


def test_known_parameters_still_work_and_auth_comes_first(running):
    with running.client() as c:
        assert c.get("/v1/accounts?band=red&limit=2").status_code == 200
        assert c.get("/v1/accounts/A1/why?from=2024-12-01&to=2025-01-01").status_code != 422
    with running.client(token="") as anonymous:  # no token: 401, whatever the query
        assert anonymous.get("/v1/accounts?nonsense=1").status_code == 401
    reader = running.token("read")
    with running.client(token=reader) as c:
        assert c.get("/v1/tokens?x=1").status_code == 403  # not allowed: not told more


def _flags(running) -> int:
    with running.client() as c:
        return len(c.get("/v1/flags?all=true").json()["items"])


def test_a_body_of_the_wrong_shape_names_each_field_in_the_errors_shape(running):
    """FastAPI answered ``{"detail": [...]}``, unlike every other error of the API."""
    with running.client() as c:
        r = c.post("/v1/flags", json={"kind": "champion_left", "note": 5})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"].startswith("body.account_id: Field required"), body
    fields = {p["key"] for p in body["problems"]}
    assert {"body.account_id", "body.note"} <= fields, body
    # a CLI command writing through the server reads it as a library error, located
    from healthscore.service.local import _server_error

    error = _server_error(None, r.status_code, body, r.text)
    assert [p.key for p in error.problems][:1] == ["body.account_id"], error.problems
    with running.client() as c:
        missing = c.get("/v1/no-such-route")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_a_flag_token_or_login_of_megabytes_is_413_before_anything_reads_it(running):
    """A flag's note, a token's name or a login form of megabytes was read whole (and a
    password of megabytes hashed): refused past 64 KB, nothing written."""
    before = _flags(running)
    huge = "x" * 200_000
    with running.client() as c:
        flag = c.post("/v1/flags", json={"account_id": "A1", "kind": "k", "note": huge})
        token = c.post("/v1/tokens", json={"name": huge, "scopes": ["read"]})
        login = c.post("/login", data={"username": "a", "password": huge, "csrf_token": "x"})
        # sent in pieces with no declared length: stopped once past the limit
        chunked = c.post(
            "/v1/flags",
            content=(b'{"note": "' + b"x" * 8192 for _ in range(16)),
            headers={"Content-Type": "application/json"},
        )
        small = c.post("/v1/flags", json={"account_id": "A1", "kind": "k", "note": "fine"})
    for r in (flag, token, login, chunked):
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "the request body is larger than 65,536 bytes"
    assert small.status_code == 201, small.text
    assert _flags(running) == before + 1
