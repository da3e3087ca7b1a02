"""The dashboard in a real browser (headless Chromium through Playwright) against a
running service on 127.0.0.1, and over real HTTP (httpx) for what a browser would not
send: a viewer's POST, a forged one.

One browser for the session (conftest); each user is a browser context with their session cookie
(set directly, as the login page would). Every request a page makes is recorded, and
anything not for the service is aborted.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import urlparse

import httpx
import pytest

from service_support import light_password_hashing, running_service

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
EVIL_ID = "ACC-EVIL"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", autouse=True)
def _light_passwords():
    """Cheap argon2id for this module's many users and logins (see service_support)."""
    with light_password_hashing():
        yield


@pytest.fixture(scope="module")
def service(demo_project):
    """The conftest's service, its rescorer not warmed up: no test here times a
    micro-batch (a batch builds the plan it needs on first use instead of at start)."""
    with running_service(demo_project.db_path, demo_project.model_path, warm_up=False) as s:
        yield s


@pytest.fixture(scope="module")
def dash(service):
    """The module's service with three users, a hostile account name, and eight weeks
    of stored history (trends, movers, the band history)."""
    import pyarrow as pa

    from healthscore import api
    from healthscore.core.tables import TABLES
    from healthscore.service import auth

    state = service.state
    with state.store_access() as store:
        users = {
            "ann": auth.add_user(store, "ann", PASSWORD, "admin"),
            "maria": auth.add_user(store, "maria", PASSWORD, "member", csm="Elena Petrova"),
            "vic": auth.add_user(store, "vic", PASSWORD, "viewer"),
        }

        def table(name, row):
            cols = TABLES[name].columns
            return pa.Table.from_pylist([row], schema=pa.schema(_arrow(cols, list(row))))

        store.load(
            "accounts",
            table(
                "accounts",
                {
                    "account_id": EVIL_ID,
                    "name": EVIL,
                    "segment": "smb",
                    "csm": EVIL,
                    "created_at": datetime(2024, 1, 1),
                },
            ),
            columns=["account_id", "name", "segment", "csm", "created_at"],
        )
        store.load(
            "subscriptions",
            table(
                "subscriptions",
                {
                    "subscription_id": "SUB-EVIL",
                    "account_id": EVIL_ID,
                    "arr": 12000.0,
                    "seats": 10.0,
                    "start_date": datetime(2024, 1, 1),
                    "end_date": datetime(2026, 1, 1),
                },
            ),
            columns=["subscription_id", "account_id", "arr", "seats", "start_date", "end_date"],
        )
        api.history(store, state.model, datetime(2025, 5, 6), datetime(2025, 7, 1), "1w")
    cookies = {name: auth.start_session(state, u) for name, u in users.items()}
    return service, cookies


def _arrow(columns: dict[str, str], names: list[str]):
    import pyarrow as pa

    kinds = {"string": pa.string(), "timestamp": pa.timestamp("us"), "float64": pa.float64()}
    return [(n, kinds.get(columns[n], pa.string())) for n in names]


#: every URL a page of this module asked for (test_no_request_left_the_service checks its own)
REQUESTED: list[str] = []


def _context(browser, dash, user: str, width: int = 1280, height: int = 900):
    """A browser context logged in as ``user``; requests leaving the service are aborted."""
    from healthscore.service import auth

    service, cookies = dash
    ctx = browser.new_context(viewport={"width": width, "height": height})
    ctx.add_cookies([{"name": auth.SESSION_COOKIE, "value": cookies[user], "url": service.url}])
    seen = {"dialogs": [], "errors": []}

    def route(r):
        REQUESTED.append(r.request.url)
        if r.request.url.startswith(service.url + "/"):
            r.continue_()
        else:
            r.abort()

    ctx.route("**/*", route)
    ctx.set_default_timeout(60_000)
    page = ctx.new_page()
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    return ctx, page, seen


DRAWN = """sel => {
  const g = document.querySelector(sel + ' .js-plotly-plot');
  return !!g && !!g.querySelector('.main-svg') && g.querySelectorAll('g.trace').length > 0;
}"""


def _score(page) -> float:
    return float(page.locator("#score b").get_attribute("data-score"))


def test_a_csm_filters_to_red_opens_an_account_and_a_flag_moves_its_score(dash, browser):
    service, _ = dash
    ctx, page, seen = _context(browser, dash, "maria")
    try:
        page.goto(service.url + "/accounts")
        assert page.locator("meta[name=csrf-token]").get_attribute("content")
        page.select_option("select[name=band]", "red")  # htmx swaps the table in place
        page.wait_for_url(re.compile(r"band=red"))
        page.wait_for_function(
            "() => [...document.querySelectorAll('#account-list tbody tr[data-account]')]"
            ".every(r => r.querySelector('.band').textContent === 'red')"
        )
        rows = page.locator("#account-list tbody tr[data-account]")
        assert rows.count() > 0
        # a red account the champion_left rule can still move (not already flagged, and
        # with more than 10 points to lose)
        with service.state.store_access() as store:
            from healthscore import api

            flagged = {f["account_id"] for f in api.list_flags(store, as_of=service.state.now())}
        target = None
        for i in range(rows.count()):
            acc = rows.nth(i).get_attribute("data-account")
            score = float(rows.nth(i).locator("td.n").first.inner_text().split()[0])
            if acc not in flagged and score > 12:
                target = acc
                break
        assert target is not None
        page.locator(f"tr[data-account='{target}'] a").first.click()
        page.wait_for_url(re.compile(f"/accounts/{target}$"))
        page.wait_for_function(DRAWN, arg="[data-chart=score-history]")
        assert page.locator("#explanation table.metrics tbody tr").count() >= 5
        assert page.locator("#explanation table.rules tr", has_text="champion_left").count() == 1
        before = _score(page)
        assert page.locator("#score .band").inner_text() == "red"

        page.fill("#raise-flag input[name=kind]", "champion_left")
        page.fill("#raise-flag input[name=note]", "our sponsor moved on")
        page.click("#raise-flag button[type=submit]")
        page.wait_for_url(re.compile(f"/accounts/{target}"))
        after = _score(page)
        assert after == pytest.approx(before - 10, abs=1e-6)
        row = page.locator("#flags tr[data-flag]")
        assert row.count() == 1 and "our sponsor moved on" in row.inner_text()
        assert "maria" in row.inner_text()

        flag_id = row.get_attribute("data-flag")
        row.locator("button", has_text="Resolve").click()
        page.wait_for_url(re.compile(f"/accounts/{target}"))
        assert page.locator("#flags tr[data-flag]").count() == 0
        assert _score(page) == pytest.approx(before, abs=1e-6)
        again = page.request.post(
            f"{service.url}/flags/{flag_id}/resolve",
            form={"csrf_token": page.locator("meta[name=csrf-token]").get_attribute("content")},
        )
        assert again.status == 400 and "already resolved" in again.text()

        # why it moved between two dates, from the form (both stored: read, not scored)
        page.fill("#why input[name=from]", "2025-06-03")
        page.fill("#why input[name=to]", "2025-07-01")
        page.click("#why button[type=submit]")
        page.wait_for_selector("#why-summary")
        assert "2025-06-03" in page.locator("#why-summary").inner_text()
        assert seen["errors"] == [] and seen["dialogs"] == []
    finally:
        ctx.close()


def _csrf(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def test_a_viewer_gets_no_flag_form_and_a_post_is_refused(dash, browser):
    service, cookies = dash
    from healthscore.service import auth

    ctx, page, _ = _context(browser, dash, "vic")
    try:
        page.goto(service.url + "/accounts/ACC-00099")
        assert page.locator("#explanation").is_visible()
        assert page.locator("#raise-flag").count() == 0
        assert page.locator("#feedback form").count() == 0
        assert page.locator("a[href='/admin']").count() == 0
    finally:
        ctx.close()
    for user, status in (("vic", 403), ("maria", 403)):
        with httpx.Client(
            base_url=service.url, cookies={auth.SESSION_COOKIE: cookies[user]}, timeout=60
        ) as c:
            token = _csrf(c.get("/model").text)
            if user == "vic":  # the right token, the wrong role
                r = c.post("/accounts/ACC-00099/flags", data={"kind": "x", "csrf_token": token})
            else:  # a member, but no CSRF token: a forged form
                r = c.post("/accounts/ACC-00099/flags", data={"kind": "champion_left"})
            assert r.status_code == status
            assert c.get("/admin").status_code == 403
    with service.state.store_access() as store:
        from healthscore import api

        assert not [f for f in api.list_flags(store, account_id="ACC-00099") if f["kind"] == "x"]


def test_a_hostile_account_name_is_text_in_the_table_and_the_chart(dash, browser):
    service, _ = dash
    ctx, page, seen = _context(browser, dash, "ann")
    try:
        page.goto(service.url + "/accounts?q=script")
        cell = page.locator(f"tr[data-account='{EVIL_ID}'] td").first
        assert EVIL in cell.inner_text()
        page.goto(service.url + f"/accounts/{EVIL_ID}")
        page.wait_for_function(DRAWN, arg="[data-chart=score-history]")
        assert page.locator("h1").inner_text() == EVIL
        title = page.locator("[data-chart=score-history] .gtitle").text_content()
        assert title.startswith(EVIL)
        page.goto(service.url + "/")  # the portfolio lists the CSM named like a script
        assert EVIL in page.locator("#csms").inner_text()
        assert page.locator("img[src=x]").count() == 0
        assert seen["dialogs"] == [] and seen["errors"] == []
    finally:
        ctx.close()


def test_the_account_table_is_usable_at_phone_width(dash, browser, tmp_path):
    service, _ = dash
    ctx, page, _ = _context(browser, dash, "maria", width=390, height=844)
    try:
        page.goto(service.url + "/accounts?mine=1")
        rows = page.locator("#account-list tbody tr[data-account]")
        assert rows.count() > 0
        # Maria's accounts only
        with service.state.store_access() as store:
            acc = store.table("accounts")
            hers = {
                r["account_id"]
                for r in store.execute(acc.filter(acc.csm == "Elena Petrova")).to_pylist()
            }
        assert {rows.nth(i).get_attribute("data-account") for i in range(rows.count())} <= hers
        page.screenshot(path=str(tmp_path / "accounts-390.png"), full_page=True)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width}px wide at a 390px viewport"
        box = rows.first.locator("a").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
        score_cell = rows.first.locator("td.n").first.bounding_box()
        assert score_cell["x"] + score_cell["width"] <= 390  # the score is on screen
        page.goto(service.url + "/accounts/ACC-00099")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    finally:
        ctx.close()


def test_feedback_is_stored_and_counted_per_model_version(dash):
    service, cookies = dash
    from healthscore.service import auth
    from healthscore.service.dashboard import feedback

    with httpx.Client(
        base_url=service.url, cookies={auth.SESSION_COOKIE: cookies["maria"]}, timeout=60
    ) as c:
        token = _csrf(c.get("/model").text)
        # as htmx sends it: the token in the X-CSRF-Token header, not in the form
        r = c.post(
            "/accounts/ACC-00099/feedback",
            data={"verdict": "too_high", "reason": "they told us they are leaving"},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 303
        bad = c.post(
            "/accounts/ACC-00099/feedback", data={"verdict": "too_low", "csrf_token": token}
        )
        assert bad.status_code == 400 and "say why" in bad.text
        page = c.get("/model").text
    with service.state.store_access() as store:
        rows = feedback.rows(store, "ACC-00099")
    assert [(r["verdict"], r["username"], r["model_version"]) for r in rows] == [
        ("too_high", "maria", service.state.model.version)
    ]
    assert rows[0]["score"] is not None
    assert "they told us they are leaving" in page and "0%" in page


def test_an_admin_makes_a_token_that_is_shown_once_and_works(dash):
    service, cookies = dash
    from healthscore.service import auth

    with httpx.Client(
        base_url=service.url, cookies={auth.SESSION_COOKIE: cookies["ann"]}, timeout=60
    ) as c:
        token = _csrf(c.get("/admin").text)
        r = c.post(
            "/admin/tokens", data={"name": "crm feed", "scopes": "read", "csrf_token": token}
        )
        text = re.search(r"hs_[0-9a-f]+_[A-Za-z0-9_-]+", r.text).group(0)
        assert text not in c.get("/admin").text  # shown once
        with service.state.store_access() as store:
            assert auth.verify_token(store, text).name == "crm feed"
        token_id = text.split("_")[1]
        assert (
            c.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": token}).status_code
            == 303
        )
        with service.state.store_access() as store:
            assert auth.verify_token(store, text) is None
        r = c.post("/admin/users", data={"username": "x", "password": "short", "csrf_token": token})
        assert r.status_code == 400 and "12 characters" in r.text


def test_what_if_scores_changed_values_with_the_models_own_steps(dash):
    service, cookies = dash
    from healthscore import api
    from healthscore.engine.whatif import what_if
    from healthscore.service import auth

    state = service.state
    with state.store_access() as store:
        for name in state.model.scorecard_names():
            card = state.model.scorecard(name)
            rows = api.score(store, card, state.now()).to_pylist()
            # nothing changed: exactly the real score, for an account a rule moves, one
            # with a metric missing (its policy applied) and one scored the plain way
            held = [r for r in rows if any(r.get(f"rule__{n}") for n in card.spec.rules)]
            missing = [
                r for r in rows if any(r[f"{m}__missing"] for _, m, _ in card.scored_metrics())
            ]
            picked = [*held[:1], *missing[:1], rows[0]] if name == "health" else rows[:1]
            for r in picked:
                same = what_if(store, card, r, {}).explanation
                assert same.score == pytest.approx(r["score"], abs=1e-9) and same.band == r["band"]
        row = api.score(store, state.model, state.now(), ["ACC-00099"]).to_pylist()[0]
        flags = {
            f["kind"] for f in api.list_flags(store, account_id="ACC-00099", as_of=state.now())
        }
        better = what_if(store, state.model, row, {"late_invoices_90d": 0}, flags).explanation
        # usage back up: the disengaging rule (usage down > 20 % ...) no longer holds
        recovered = what_if(store, state.model, row, {"usage_change_30d": 0.1}, flags)
        unknown_flags = what_if(store, state.model, row, {"usage_change_30d": 0.1})
    line = {m.metric: m for m in better.metrics}["late_invoices_90d"]
    assert line.normalized == 100 and better.score > row["score"]
    assert row["rule__disengaging"] and row["rule__champion_left"]
    held = {r.rule: r.holds for r in recovered.explanation.rules}
    assert held == {"disengaging": False, "champion_left": True, "in_collections": False}
    assert recovered.rules_kept == [] and unknown_flags.rules_kept == ["champion_left"]
    worst = better
    with httpx.Client(
        base_url=service.url, cookies={auth.SESSION_COOKIE: cookies["vic"]}, timeout=60
    ) as c:
        page = c.get("/model", params={"account": "ACC-00099", "v_late_invoices_90d": "0"}).text
    assert f'data-score="{worst.score}"' in page


def test_what_if_refuses_a_value_that_is_no_finite_number_on_the_page(dash):
    # "nan" compared as no change (nan - x > 1e-9 is false): the page showed today's
    # score as if nothing had been asked, where the engine refuses it with the metric
    service, cookies = dash
    from healthscore.service import auth

    with httpx.Client(
        base_url=service.url, cookies={auth.SESSION_COOKIE: cookies["vic"]}, timeout=60
    ) as c:
        for value in ("nan", "NaN", "inf"):
            params = {"account": "ACC-00099", "v_late_invoices_90d": value}
            page = c.get("/model", params=params).text
            assert f"late_invoices_90d = &#39;{value}&#39; is not a finite number" in page


def test_no_request_left_the_service(dash, browser):
    # the pages themselves, opened here: under pytest-xdist the other browser tests may
    # run in another worker, whose REQUESTED this one never sees
    service, _ = dash
    ctx, page, seen = _context(browser, dash, "maria")
    start = len(REQUESTED)
    try:
        for path in ("/", "/accounts", "/accounts/ACC-00099", "/model"):
            page.goto(service.url + path)
            page.wait_for_load_state("networkidle")
    finally:
        ctx.close()
    asked = REQUESTED[start:]
    assert asked, "the pages asked for nothing"
    hosts = {urlparse(u).hostname for u in asked}
    assert hosts == {"127.0.0.1"}, hosts
    assert any(u.endswith("/static/plotly.min.js") for u in asked)
    assert not seen["errors"], seen["errors"]


def test_the_table_alone_for_htmx_and_a_stalled_feed_is_shown(dash):
    service, cookies = dash
    from healthscore.service import auth
    from healthscore.service.dashboard import data

    with httpx.Client(
        base_url=service.url, cookies={auth.SESSION_COOKIE: cookies["vic"]}, timeout=60
    ) as c:
        part = c.get(
            "/accounts",
            params={"band": "red", "sort": "arr"},
            headers={"HX-Request": "true", "HX-Target": "account-list"},
        ).text
        full = c.get("/accounts", params={"band": "red", "sort": "arr"}).text
        portfolio = c.get("/").text
    assert part.lstrip().startswith('<section id="account-list"') and "<html" not in part
    assert part.strip() in full and "<html" in full
    assert re.findall(r"band band-(\w+)", part) and set(re.findall(r"band band-(\w+)", part)) == {
        "red"
    }
    fresh = re.search(r'<section id="freshness">.*?</section>', portfolio, re.S).group(0)
    assert "usage_events" in fresh and "stalled" not in fresh
    # 30 days on, with no new data: every feed with a cadence is shown stalled
    later = service.state.now() + timedelta(days=30)
    with service.state.store_access() as store:
        rows = {f.table: f for f in data._freshness(store, service.state.model, later)}
    assert rows["usage_events"].stale and "usage_events is stale" in rows["usage_events"].stale
    assert rows["accounts"].stale is None  # accounts are never judged stale


def _listed(html: str) -> list[tuple[str, str, str]]:
    """(account id, score text, band) of each row of the account table."""
    rows = re.findall(
        r"<tr data-account=\"([^\"]+)\">.*?<td class=\"n\">(\S+) <span class='band band-(\w+)'",
        html,
        re.S,
    )
    return [(html_unescape(a), s, b) for a, s, b in rows]


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


# the same filters, in the API's words and the page's (the page reverses with dir=rev)
SAME_FILTERS = [
    {},
    {"band": "red", "sort": "arr"},
    {"band": "yellow", "sort": "name"},
    {"sort": "change", "limit": "25"},
    {"sort": "renewal", "limit": "25", "offset": "25"},
    {"trend": "stable", "sort": "score"},
    {"q": "a", "sort": "name", "limit": "100"},
]


def _same_as_the_api(service, cookies, extra=()):
    from healthscore.views.format import number

    with (
        httpx.Client(
            base_url=service.url, cookies={"hs_session": cookies["vic"]}, timeout=60
        ) as page,
        service.client() as api,
    ):
        everyone = api.get("/v1/accounts", params={"limit": 500}).json()
        seg = next(i["segment"] for i in everyone["items"] if i["segment"])
        csm = next(i["csm"] for i in everyone["items"] if i["csm"] and "<" not in i["csm"])
        filters = [*SAME_FILTERS, {"segment": seg}, {"csm": csm, "band": "red"}, *extra]
        for f in filters:
            body = api.get("/v1/accounts", params={"limit": 50, **f}).json()
            want = [(i["account_id"], number(i["score"]), i["band"]) for i in body["items"]]
            html = page.get("/accounts", params=f).text
            assert _listed(html) == want, f
            assert f"{body['total']:,} accounts" in html, f
        # the portfolio's bands count what the list lists
        portfolio = api.get("/v1/portfolio").json()
        bands = {b["band"]: b["accounts"] for b in portfolio["bands"]}
        for band in ("green", "yellow", "red"):
            listed = api.get("/v1/accounts", params={"band": band, "limit": 1}).json()["total"]
            assert bands.get(band, 0) == listed, band
        text = page.get("/").text
        for band in ("green", "yellow", "red"):
            shown = rf'data-band="{band}"[^>]*><span>[^<]*</span><b>{bands.get(band, 0):,}</b>'
            assert re.search(shown, text), band
    return everyone


def test_a_segment_or_csm_no_account_has_is_said_not_an_empty_list(dash):
    """A filter on a segment or CSM that no account names (a typo, a CSM who left) is an
    error naming the filter, not an empty list that looks like "no accounts at risk";
    "my accounts" of a CSM no account names yet says so."""
    from healthscore.service import auth

    service, cookies = dash
    state = service.state
    with state.store_access() as store:
        newbie = auth.add_user(store, "nina", PASSWORD, "member", csm="Nina Newhire")
    cookie = auth.start_session(state, newbie)
    with httpx.Client(
        base_url=service.url, cookies={auth.SESSION_COOKIE: cookies["vic"]}, timeout=60
    ) as c:
        seg = c.get("/accounts", params={"segment": "enterprsie"})
        csm = c.get("/accounts", params={"csm": "Nobody Here", "band": "red"})
        known = c.get("/accounts", params={"csm": "elena  PETROVA"})
    assert seg.status_code == 400
    assert "`segment` &#39;enterprsie&#39;: no account has this segment" in seg.text
    assert csm.status_code == 400 and "no account has this csm" in csm.text
    assert known.status_code == 200 and "no account has" not in known.text
    with httpx.Client(base_url=service.url, cookies={auth.SESSION_COOKIE: cookie}) as c:
        mine = c.get("/accounts", params={"mine": "1"}, timeout=60)
    assert mine.status_code == 200
    assert "no account names Nina Newhire as its CSM" in mine.text


def test_the_pages_list_what_the_api_lists_live_and_from_current_scores(dash):
    """Before a rescore of everyone both score live; after it both read current_scores,
    even where live scoring would now say otherwise (a flag the rescorer was not told
    of)."""
    from healthscore import api as hs
    from healthscore.service.rescorer import Rescorer

    service, cookies = dash
    state = service.state
    live = _same_as_the_api(service, cookies)
    Rescorer(state).rescore_everyone(daily=False)
    with service.client() as api:
        body = api.get("/v1/accounts", params={"limit": 500}).json()
    # a flag written behind the rescorer's back: live scores move, current ones do not
    target = next(i for i in body["items"] if (i["score"] or 0) > 40)
    with state.store_access() as store:
        hs.add_flag(
            store, target["account_id"], "champion_left", at=state.now() - timedelta(seconds=1)
        )
        moved = hs.score_accounts(store, state.model, state.now()).scores.to_pylist()
    moved = {r["account_id"]: r["score"] for r in moved}
    assert moved[target["account_id"]] != pytest.approx(target["score"])
    everyone = _same_as_the_api(service, cookies, [{"q": target["account_id"]}])
    got = next(i for i in everyone["items"] if i["account_id"] == target["account_id"])
    assert got["score"] == target["score"]  # current_scores, not rescored yet
    assert everyone["source"] == "current_scores" and live["source"] == "live"


def test_the_portfolio_shows_parked_segment_messages_as_text(dash):
    """Rejects (with the reason) and pending messages on the portfolio page, a sender's
    markup shown as text."""
    service, cookies = dash
    key = service.token("segment", name="dashboard parked")
    batch = {
        "batch": [
            {"type": "page", "userId": "dash-u1", "name": EVIL, "messageId": "dash-page"},
            {"type": "track", "userId": "dash-nobody", "event": "login", "messageId": "dash-wait"},
        ]
    }
    r = httpx.post(service.url + "/v1/batch", json=batch, auth=(key, ""), timeout=60)
    assert r.status_code == 200
    with service.client(service.token("read")) as api:
        rejects = api.get("/v1/ingest/rejects").json()
        pending = api.get("/v1/ingest/pending").json()
    with httpx.Client(
        base_url=service.url, cookies={"hs_session": cookies["vic"]}, timeout=60
    ) as c:
        page = c.get("/").text
    parked = re.search(r'<section id="parked">.*?</section>', page, re.S).group(0)
    assert f"{rejects['total']:,} rejected" in parked and f"{pending['total']:,} pending" in parked
    row = re.search(r'<tr data-message="dash-page">.*?</tr>', parked, re.S).group(0)
    assert "&#39;page&#39; is not used" in row or "'page' is not used" in row
    assert "<script>" not in row and "&lt;script&gt;" in row
    row = re.search(r'<tr data-message="dash-wait">.*?</tr>', parked, re.S).group(0)
    assert "dash-nobody" in row


def test_pages_asked_at_once_are_all_served(dash):
    """Every dashboard page read the store under the service's lock: two portfolio pages
    asked at the same moment both came back (the freshness table was read outside it,
    and a request could take another's result: 500s)."""
    from concurrent.futures import ThreadPoolExecutor

    service, cookies = dash
    paths = ["/", "/accounts", "/", "/"]
    with httpx.Client(
        base_url=service.url, cookies={"hs_session": cookies["vic"]}, timeout=120
    ) as c:

        def get(path):
            r = c.get(path)
            return path, r.status_code, r.text

        with ThreadPoolExecutor(len(paths)) as pool:
            got = list(pool.map(get, paths))
    assert [(p, code) for p, code, _ in got] == [(p, 200) for p in paths]
    assert all("Data freshness" in text for p, _, text in got if p == "/")
