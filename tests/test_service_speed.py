"""The live service's fast paths keep their guarantees: what start-up prepares, the
token cache (revocation honoured at once), and the rescorer's scores against the CLI's
after an ingest."""

from __future__ import annotations

import shutil

from service_support import running_service


def _indexed_tables(state) -> set[str]:
    with state.store_access() as store:
        rows = store.execute_sql("SELECT table_name FROM duckdb_indexes()").to_pylist()
    return {r["table_name"] for r in rows}


def _rescored_since(state, account: str, since) -> bool:
    """Whether ``current_scores`` holds a row of ``account`` computed at ``since`` or later."""
    from healthscore.store import current

    card = state.model.scorecard(None)
    with state.store_access() as store:
        t = current.of_model(store, card.version, card.scorecard_name)
        rows = store.execute(t.filter(t.account_id == account).select("computed_at")).to_pylist()
    return any(r["computed_at"] >= since for r in rows)


def test_the_append_key_indexes_are_made_at_start_up_not_by_the_first_batch(fixture_db, tmp_path):
    # the first append to a table makes its key index (a minute on 10 M events); made
    # by a batch, it held the store and every other request waited behind it
    db = tmp_path / "s.duckdb"
    shutil.copy(fixture_db, db)
    with running_service(db) as svc:
        assert {"usage_events", "tickets", "accounts"} <= _indexed_tables(svc.state)


def test_a_revoked_token_is_refused_at_once_though_it_was_just_verified(service):
    token = service.token("read", name="cached")
    with service.client(token) as c:
        for _ in range(3):  # verified, then served from the cache
            assert c.get("/v1/status").status_code == 200
        token_id = token.split("_")[1]
        with service.client() as admin:
            assert admin.delete(f"/v1/tokens/{token_id}").status_code == 200
        assert c.get("/v1/status").status_code == 401


def test_a_token_revoked_in_the_store_directly_is_refused_at_once(service):
    from healthscore.service.auth import revoke_token

    token = service.token("read", name="cached-cli")
    with service.client(token) as c:
        assert c.get("/v1/status").status_code == 200
        with service.state.store_access() as store:
            revoke_token(store, token)
        assert c.get("/v1/status").status_code == 401


def test_after_an_ingest_the_served_score_is_the_clis(service):
    # the rescorer scores through its own connection; what it serves must be what
    # `healthscore score` computes from the same store at the same moment
    import time
    from datetime import datetime, timedelta

    from healthscore.api import score_accounts

    state = service.state
    now = state.now()
    with service.client() as c:
        account = c.get("/v1/accounts", params={"limit": 1, "sort": "name"}).json()["items"][0][
            "account_id"
        ]
        before = c.get(f"/v1/accounts/{account}").json()
        rows = [
            {
                "event_id": f"speed-{i}",
                "account_id": account,
                "user_id": f"speed-user-{i % 7}",
                "event": ["login", "export_csv", "view_report"][i % 3],
                "ts": (now - timedelta(hours=i + 1)).isoformat(),
            }
            for i in range(40)
        ]
        sent = datetime.utcnow()
        r = c.post("/v1/ingest/usage_events", json={"rows": rows})
        assert r.status_code == 200 and r.json()["inserted"] == 40
        # wait for the rescorer's row of the account (read from the store: a GET before
        # it would explain the account live, a compile per poll beside the rescorer's)
        # (patient: how fast is bench/ingest_realtime.py's to say; here the machine may be
        # busy and the rescorer still warming up)
        deadline = time.monotonic() + 180
        while not _rescored_since(state, account, sent):
            assert time.monotonic() < deadline, "the account was not rescored within 180 s"
            time.sleep(0.05)
        served = c.get(f"/v1/accounts/{account}").json()
    assert served["source"] == "current_scores"  # the rescorer's row, not a live score
    assert datetime.fromisoformat(served["scored_at"]) >= sent
    card = state.model.scorecard(None)  # the scorecard GET /v1/accounts/{id} serves
    with state.store_access() as store:
        cli = score_accounts(store, card, now).scores
    row = next(r for r in cli.to_pylist() if r["account_id"] == account)
    assert (served["score"], served["band"], served["coverage"]) == (
        row["score"],
        row["band"],
        row["coverage"],
    )
    assert served["score"] != before["score"]  # the new events counted


def test_one_accounts_current_score_is_served_while_a_write_holds_the_store(service):
    # GET /v1/accounts/{id} reads its committed current row through a connection of its
    # own: under heavy ingest (bench/ingest_realtime.py (b)) it waited for every batch
    # queued on the store's lock, most of the time from a rescore to a client seeing it
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Late

    state = service.state
    with service.client() as c:
        account = c.get("/v1/accounts", params={"limit": 1, "sort": "name"}).json()["items"][0][
            "account_id"
        ]
        service.app.state.rescorer.rescore({account})  # its row in current_scores
        before = c.get(f"/v1/accounts/{account}")  # and the token verified (cached 5 s)
        assert before.status_code == 200 and before.json()["source"] == "current_scores"
        held, release = threading.Event(), threading.Event()

        def write():  # an ingest batch (or the rescorer's write) holding the store
            with state.store_access():
                held.set()
                release.wait(120)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert held.wait(60)
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(c.get, f"/v1/accounts/{account}")
                try:
                    served = answer.result(timeout=30)
                except Late:
                    served = None
                finally:
                    release.set()
        finally:
            release.set()
            writer.join(120)
    assert served is not None, "GET /v1/accounts/{id} waited for the write holding the store"
    assert served.status_code == 200
    assert served.json() == before.json()  # the same committed row
    from healthscore.store import current

    card = state.model.scorecard(None)
    with state.store_access() as store:  # the row as the store reads it
        t = current.of_model(store, card.version, card.scorecard_name)
        (row,) = store.execute(t.filter(t.account_id == account)).to_pylist()
    body = served.json()
    assert body["scored_at"] == row["computed_at"].isoformat()
    assert (body["score"], body["trend"], body["change_30d"]) == (
        row["score"],
        row["trend"],
        row["change_30d"],
    )
