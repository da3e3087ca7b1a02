"""Inputs the service (and `healthscore load`, its twin for files) must refuse in words,
never with a 500 or a silent change: an extra column whose values change type between
loads, a column name without bound, a number where a time is expected, a "why it
moved" whose dates are the wrong way round; and the store file, which holds password
and token hashes, readable by its owner only."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service_support import demo_event, light_password_hashing, login_cookies, stored_events

ACC = "ACC-00102"
ROOT = Path(__file__).resolve().parents[1]


# --- 1. an extra column whose type changes between batches ------------------------------


def test_an_extra_columns_value_of_another_type_is_a_400_naming_it_and_nothing_written(
    api, service
):
    assert api.post(
        "/v1/ingest/usage_events", json={"rows": [demo_event("ht-1", seats_x=5)]}
    ).json()
    # a fraction where the column holds whole numbers (it was a 500: ArrowInvalid)
    rows = [demo_event("ht-2", seats_x=7), demo_event("ht-3", seats_x=1.5)]
    r = api.post("/v1/ingest/usage_events", json={"rows": rows})
    assert r.status_code == 400, r.text
    body = r.json()
    assert "seats_x" in body["error"] and "nothing written" in body["error"]
    [p] = body["problems"]
    assert p["row"] == 1 and p["column"] == "seats_x" and p["got"] == "1.5"
    assert "whole number" in p["expected"]
    # text where the column holds numbers
    r = api.post("/v1/ingest/usage_events", json={"rows": [demo_event("ht-4", seats_x="many")]})
    assert r.status_code == 400, r.text
    [p] = r.json()["problems"]
    assert (p["row"], p["column"], p["got"]) == (0, "seats_x", "many")
    assert stored_events(service, "seats_x") == {"ht-1": 5}  # neither batch wrote anything
    # what fits the column is taken: a whole number sent as 8.0, text that reads as one
    for row in (demo_event("ht-5", seats_x=8.0), demo_event("ht-6", seats_x="9")):
        assert api.post("/v1/ingest/usage_events", json={"rows": [row]}).status_code == 200
    assert stored_events(service, "seats_x") == {"ht-1": 5, "ht-5": 8, "ht-6": 9}


def test_a_number_into_an_extra_text_column_is_kept_as_text(api, service):
    assert api.post("/v1/ingest/usage_events", json={"rows": [demo_event("ht-7", plan_x="pro")]})
    r = api.post("/v1/ingest/usage_events", json={"rows": [demo_event("ht-8", plan_x=5)]})
    assert r.status_code == 200, r.text
    assert stored_events(service, "plan_x") == {"ht-7": "pro", "ht-8": "5"}


def _cli(*args, cwd: Path):
    from healthscore.cli import app

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args], env={"HEALTHSCORE_DB": None})
    finally:
        os.chdir(old)


def test_load_of_a_second_file_refuses_a_value_its_extra_column_cannot_hold(tmp_path):
    """`healthscore load` rounded 1.5 into the BIGINT column (to 2), silently; text failed
    with the driver's conversion error. Now both are refused as the service refuses them."""
    assert _cli("init", tmp_path, cwd=tmp_path).exit_code == 0
    (tmp_path / "acc.csv").write_text("account_id,created_at\nA1,2024-01-01\n")
    assert _cli("load", "accounts", "acc.csv", cwd=tmp_path).exit_code == 0
    head = "event_id,account_id,event,ts,seats_x\n"
    (tmp_path / "a.csv").write_text(head + "e1,A1,x,2025-01-01,5\n")
    (tmp_path / "b.csv").write_text(head + "e2,A1,x,2025-01-02,3\ne3,A1,x,2025-01-03,2.5\n")
    (tmp_path / "c.jsonl").write_text(
        '{"event_id":"e4","account_id":"A1","event":"x","ts":"2025-01-04","seats_x":"abc"}\n'
    )
    assert _cli("load", "usage_events", "a.csv", cwd=tmp_path).exit_code == 0
    for name, key, got in (("b.csv", "e3", "2.5"), ("c.jsonl", "e4", "abc")):
        r = _cli("load", "usage_events", name, cwd=tmp_path)
        assert r.exit_code == 1, r.output
        text = " ".join(r.output.split())
        assert "seats_x" in text and f"event_id {key!r}" in text and repr(got) in text, text
        assert "whole number" in text and "nothing was loaded" in text, text
        assert "Traceback" not in r.output
    from healthscore.store import connect

    store = connect(tmp_path / "healthscore.duckdb", read_only=True)
    t = store.table("usage_events")
    found = store.execute(t.select("event_id", "seats_x").order_by("event_id")).to_pylist()
    store.close()
    assert found == [{"event_id": "e1", "seats_x": 5}]


# --- 2. the store file is its owner's only ----------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_makes_the_store_owner_only(tmp_path):
    old = os.umask(0o022)  # a usual umask: new files 0644
    try:
        r = _cli("init", tmp_path, cwd=tmp_path)
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert _mode(tmp_path / "healthscore.duckdb") == 0o600
    assert _mode(tmp_path / "healthscore.yaml") == 0o644  # the umask is the user's again


def test_a_store_and_its_wal_are_owner_only_while_written(tmp_path):
    import pyarrow as pa

    from healthscore.store import connect

    old = os.umask(0o022)
    try:
        store = connect(tmp_path / "s.duckdb")
        store.set_meta("owner", "cs-ops")  # a write: DuckDB keeps it in the .wal first
        wal = tmp_path / "s.duckdb.wal"
        assert wal.exists() and _mode(wal) == 0o600
        assert _mode(tmp_path / "s.duckdb") == 0o600
        store.insert("_healthscore_meta", pa.table({"key": ["k"], "value": ["v"]}))
        assert _mode(wal) == 0o600
        store.close()
        (tmp_path / "after.txt").write_text("x")  # the process's umask is as it was
        assert _mode(tmp_path / "after.txt") == 0o644
    finally:
        os.umask(old)


def test_serve_makes_an_existing_store_owner_only(demo_project, tmp_path):
    """The server keeps password and token hashes in the store: like its session secret,
    the store (and its write-ahead log) is made owner-only when it starts."""
    import shutil
    import time

    import httpx

    from service_support import free_port

    db = tmp_path / "served.duckdb"
    shutil.copyfile(demo_project.db_path, db)
    os.chmod(db, 0o644)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HEALTHSCORE_DB": str(db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthscore.cli", "serve", "--db", str(db), "--port", str(port),
         "--model", str(demo_project.model_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, umask=0o022,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not start")
        assert _mode(db) == 0o600
        wal = db.with_name(db.name + ".wal")
        if wal.exists():
            assert _mode(wal) == 0o600
    finally:
        proc.terminate()
        proc.wait(30)


# --- 3. column names have a length limit -------------------------------------------------


def test_a_column_name_past_the_limit_is_a_400_naming_it(api, service):
    from healthscore.store import MAX_COLUMN_NAME

    long = "x" * (MAX_COLUMN_NAME + 1)
    r = api.post("/v1/ingest/usage_events", json={"rows": [demo_event("ht-long", **{long: 1})]})
    assert r.status_code == 400, r.text
    text = r.json()["error"]
    assert long[:20] in text and f"at most {MAX_COLUMN_NAME}" in text
    assert stored_events(service, long) == {}
    with service.state.store_access() as store:
        assert long not in store.table("usage_events").columns
    # a megabyte of name is refused as fast, before anything is read into a table
    r = api.post(
        "/v1/ingest/usage_events", json={"rows": [demo_event("ht-huge", **{"y" * 10**6: 1})]}
    )
    assert r.status_code == 400 and len(r.text) < 2_000
    ok = "z" * MAX_COLUMN_NAME
    assert api.post(
        "/v1/ingest/usage_events", json={"rows": [demo_event("ht-ok", **{ok: 1})]}
    ).json()


def test_load_refuses_a_header_past_the_limit(tmp_path):
    from healthscore.store import MAX_COLUMN_NAME

    assert _cli("init", tmp_path, cwd=tmp_path).exit_code == 0
    long = "w" * (MAX_COLUMN_NAME + 1)
    (tmp_path / "acc.csv").write_text(f"account_id,created_at,{long}\nA1,2024-01-01,1\n")
    r = _cli("load", "accounts", "acc.csv", cwd=tmp_path)
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert long[:20] in text and f"at most {MAX_COLUMN_NAME}" in text and "--map" in text


# --- 4. a number is not a time -------------------------------------------------------------


@pytest.mark.parametrize("at", [-1, 0, 1719000000, 1.5, True, "-1", "1719000000"])
def test_a_flag_at_a_number_is_a_422_naming_the_field(service, at):
    with service.client(service.token("ingest:flags")) as writer:
        r = writer.post("/v1/flags", json={"account_id": ACC, "kind": "champion_left", "at": at})
        assert r.status_code == 422, r.text
        assert "`at`" in r.json()["error"], r.text
        assert ("ISO 8601" if not isinstance(at, str) else "is not a date") in r.json()["error"]
        made = writer.post("/v1/flags", json={"account_id": ACC, "kind": "x_test"}).json()
        r = writer.post(f"/v1/flags/{made['flag_id']}/resolve", json={"at": at})
        assert r.status_code == 422 and "`at`" in r.json()["error"]
    with service.state.store_access() as store:
        flags = store.execute(store.table("flags")).to_pylist()
    assert not [f for f in flags if f["kind"] == "champion_left" and f["ts"].year < 2000]


def test_ingest_and_segment_times_refuse_numbers(api, service):
    r = api.post("/v1/ingest/usage_events", json={"rows": [{**demo_event("ht-num"), "ts": -1}]})
    assert r.status_code == 400 and r.json()["problems"][0]["column"] == "ts"
    from healthscore.service.segment import Refused, normalise

    with pytest.raises(Refused, match="timestamp: not an ISO 8601 time"):
        normalise({"type": "track", "userId": "u", "event": "e", "timestamp": 1719000000},
                  None, service.state.now())  # fmt: skip


# --- 5. why it moved: the dates in order ---------------------------------------------------


def test_why_with_from_after_to_is_a_400_naming_both(api):
    r = api.get(f"/v1/accounts/{ACC}/why", params={"from": "2025-07-01", "to": "2025-05-01"})
    assert r.status_code == 400, r.text
    text = r.json()["error"]
    assert "`from`" in text and "`to`" in text and "2025-07-01" in text and "2025-05-01" in text


def test_the_dashboards_why_names_both_dates_when_reversed(service):
    from healthscore.service import auth

    with light_password_hashing():
        with service.state.store_access() as store:
            auth.add_user(store, "hv", "correct horse battery", "viewer")
        cookies = login_cookies(service.url, "hv", "correct horse battery")
    import httpx

    dates = {"from": "2025-07-01", "to": "2025-05-01"}
    r = httpx.get(f"{service.url}/accounts/{ACC}", params=dates, cookies=cookies, timeout=30)
    assert r.status_code == 200
    [error] = re.findall(r'<p class="error" role="alert">([^<]*)</p>', r.text)
    assert "`from` 2025-07-01" in error and "`to` 2025-05-01" in error, error


def test_explain_vs_after_as_of_is_refused(tmp_path, fixture_db):
    import shutil

    assert _cli("init", tmp_path, cwd=tmp_path).exit_code == 0
    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    r = _cli("explain", "A1", "--as-of", "2024-12-01", "--vs", "2025-01-01", cwd=tmp_path)
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "2025-01-01" in text and "2024-12-01" in text and "Traceback" not in r.output
