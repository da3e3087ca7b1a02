"""The API refuses query parameters a route does not take, rather than ignoring them:
``GET /v1/accounts/A1?as_of=2025-01-01`` answered with today's score as if it were that
date's, ``/v1/portfolio?as_of=...`` likewise. Real HTTP on loopback over a copy of the
fixture store."""

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
    detail = r.json()["detail"]
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
