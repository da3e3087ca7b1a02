"""How long the dashboard's pages and the read API take on a 10,000-account book.

    python bench/dashboard_pages.py [--db STORE] [--rounds 7]

The reference S data (``../shared/bench-reference``: 10,000 accounts, 10 M events) is
loaded as ``score_snapshot.py`` loads it (or ``--db`` names a store loaded that way; it is
copied, never written), and a service runs on the copy in a child process (real HTTP on
127.0.0.1, ``bench/reference_model.yaml``, the clock at 2025-01-01), as
``ingest_realtime.py`` runs it. Once its start-up rescore is done and every plan built, a
CSM logs in as a browser does and each page is fetched ``--rounds`` times, one after the
other (nothing else sent meanwhile): the portfolio, the account list (plain, filtered to
red, sorted by ARR on a later page, searched), one account's page with its charts, the
model page; then the read API with a bearer token. Prints the median and the slowest
time of each, the page's size, and one ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

USER, PASSWORD = "bench-csm", "a long bench password"


def main() -> None:
    import httpx
    from ingest_realtime import Service, prepared_store

    from healthscore.service import auth
    from healthscore.store import connect
    from service_support import login_cookies

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="a store loaded with the S data (copied, never written)")
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hs-dash-") as work:
        db = prepared_store(a, Path(work))
        store = connect(db)
        try:
            auth.ensure_tables(store)
            auth.add_user(store, USER, PASSWORD, "admin")
        finally:
            store.close()
        svc = Service(db)
        try:
            settle = svc.settle()
            browser = httpx.Client(
                base_url=svc.url, cookies=login_cookies(svc.url, USER, PASSWORD), timeout=120
            )
            first = svc.http.get("/v1/accounts", params={"limit": 1}).json()["items"][0]
            acc = first["account_id"]
            pages = {
                "portfolio": "/",
                "accounts": "/accounts",
                "accounts, red": "/accounts?band=red",
                "accounts by ARR, page 20": "/accounts?sort=arr&page=20",
                "accounts, search": "/accounts?q=12",
                "account": f"/accounts/{acc}",
                "model": "/model",
            }
            api = {
                "GET /v1/accounts": "/v1/accounts",
                "GET /v1/portfolio": "/v1/portfolio",
                "GET /v1/accounts/{id}": f"/v1/accounts/{acc}",
                "GET /v1/accounts/{id}/history": f"/v1/accounts/{acc}/history",
            }
            out = {"machine": f"{os.cpu_count()} cores", "settle_s": round(settle, 1)}
            print(f"service ready after {settle:.1f} s; {a.rounds} rounds each")
            for group, client in ((pages, browser), (api, svc.http)):
                for name, path in group.items():
                    times, size = [], 0
                    for _ in range(a.rounds):
                        t0 = time.perf_counter()
                        r = client.get(path)
                        times.append(time.perf_counter() - t0)
                        if r.status_code != 200:
                            raise SystemExit(f"{path}: {r.status_code} {r.text[:200]}")
                        size = len(r.content)
                    med, worst = statistics.median(times) * 1e3, max(times) * 1e3
                    kb = size // 1024
                    print(f"{name:32} {med:7.0f} ms median {worst:7.0f} ms slowest {kb:5} KB")
                    out[name] = {"median_ms": round(med, 1), "max_ms": round(worst, 1)}
            browser.close()
        finally:
            svc.close()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
