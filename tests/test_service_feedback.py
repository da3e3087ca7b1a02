"""CSMs' verdicts on scores are exported for calibration: ``GET /v1/feedback`` (JSON or
a CSV download) and the model page's download. Real HTTP on loopback over a copy of the
fixture store; the verdicts are stored as the dashboard stores them."""

from __future__ import annotations

import csv
import io
import re
import shutil
from datetime import datetime

import httpx
import pytest

from service_support import login_cookies, running_service

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def running(fixture_db, tmp_path_factory):
    from healthscore.service.auth import add_user
    from healthscore.service.dashboard import feedback

    db = tmp_path_factory.mktemp("feedback") / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    with running_service(db) as r:
        with r.state.store_access() as store:
            add_user(store, "vic", PASSWORD, "viewer")
            for i, (acc, version, verdict, reason) in enumerate(
                [
                    ("A1", "v-old", "too_high", "churned last month"),
                    ("A2", "v-new", "agree", ""),
                    ("A3", "v-new", "too_low", '=HYPERLINK("http://evil","x")'),
                ]
            ):
                feedback.add(
                    store,
                    account_id=acc,
                    model_version=version,
                    scorecard="health",
                    score=40.0 + i,
                    verdict=verdict,
                    reason=reason,
                    username="csm1",
                    at=datetime(2025, 6, 1 + i),
                )
        yield r


def test_every_verdict_newest_first_and_by_model_version(running):
    with running.client() as c:
        every = c.get("/v1/feedback").json()
        new = c.get("/v1/feedback", params={"model_version": "v-new"}).json()
    assert every["total"] == 3
    assert [r["account_id"] for r in every["items"]] == ["A3", "A2", "A1"]
    first = every["items"][0]
    assert first["verdict"] == "too_low" and first["score"] == 42.0
    assert first["created_at"] == "2025-06-03T00:00:00" and first["username"] == "csm1"
    assert [r["account_id"] for r in new["items"]] == ["A3", "A2"]


def test_the_csv_is_a_download_whose_text_cannot_run_as_a_formula(running):
    with running.client() as c:
        r = c.get("/v1/feedback", params={"format": "csv"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="score_feedback.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["account_id"] for x in rows] == ["A3", "A2", "A1"]
    assert rows[0]["reason"] == '\'=HYPERLINK("http://evil","x")'
    assert rows[2]["reason"] == "churned last month" and rows[0]["score"] == "42"


def test_the_model_page_links_the_same_file_for_a_logged_in_viewer(running):
    cookies = login_cookies(running.url, "vic", PASSWORD)
    model = httpx.get(running.url + "/model", cookies=cookies, timeout=60)
    assert 'href="/model/feedback.csv"' in model.text
    got = httpx.get(running.url + "/model/feedback.csv", cookies=cookies, timeout=30)
    with running.client() as c:
        api = c.get("/v1/feedback", params={"format": "csv"})
    assert got.status_code == 200 and got.text == api.text
    anonymous = httpx.get(running.url + "/model/feedback.csv", timeout=30)
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]


def test_a_scorecard_the_model_does_not_have_is_404_not_another_shown_in_its_place(running):
    """`?card=nope` showed the health scorecard as if it were the one asked for."""
    cookies = login_cookies(running.url, "vic", PASSWORD)
    for path in ("/model?card=nope", "/accounts/A1?card=nope"):
        r = httpx.get(running.url + path, cookies=cookies, timeout=60)
        assert r.status_code == 404, (path, r.status_code)
        assert "no scorecard &#39;nope&#39;; this model has health" in r.text, path
    other = running.state.model.scorecard_names()[-1]
    shown = httpx.get(running.url + f"/model?card={other}", cookies=cookies, timeout=60)
    assert shown.status_code == 200 and f"scorecard {other}" in " ".join(
        re.sub("<[^>]+>", " ", shown.text).split()
    )


def test_a_reason_holding_a_nul_character_is_refused_and_nothing_stored(running):
    # no store keeps a NUL in text (PostgreSQL refuses it: a 500 there); DuckDB kept it
    from healthscore.service.auth import add_user

    with running.state.store_access() as store:
        add_user(store, "mem", PASSWORD, "member")
    cookies = login_cookies(running.url, "mem", PASSWORD)
    with httpx.Client(base_url=running.url, cookies=cookies, timeout=30) as c:
        page = c.get("/accounts/A1")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
        r = c.post(
            "/accounts/A1/feedback",
            data={"verdict": "too_high", "reason": "late\x00payer", "csrf_token": token},
        )
    assert r.status_code == 400, r.text[:300]
    assert "holds a NUL character" in r.text
    with running.client() as api:
        assert api.get("/v1/feedback").json()["total"] == 3
