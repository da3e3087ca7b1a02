"""Append benchmark: one small batch of usage events into a big store, ``Store.load``
(before: classifies the batch against the whole table) against ``Store.append`` (after:
against the stored rows with the batch's keys only).

    python bench/append.py STORE.duckdb [--rows 1 1000] [--repeat 7]

The store is copied first (the original is left alone). For each batch size, each
method writes ``--repeat`` batches of new events (and, for append, re-sends one batch:
all unchanged) and prints the median milliseconds. Make a big store by adding rows to a
demo store's usage_events (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

from healthscore.store import connect


def batch(accounts: list[str], n: int) -> pa.Table:
    return pa.table(
        {
            "event_id": [uuid.uuid4().hex for _ in range(n)],
            "account_id": [accounts[i % len(accounts)] for i in range(n)],
            "user_id": [f"u{i % 50}" for i in range(n)],
            "event": ["login"] * n,
            "ts": pa.array([dt.datetime(2025, 6, 30, 12)] * n, pa.timestamp("us")),
            "quantity": [1.0] * n,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "bench.duckdb"
        shutil.copy(args.store, db)
        s = connect(db)
        n_events = s.count("usage_events")
        accounts = s.execute(s.table("accounts").select("account_id").limit(20))
        accounts = accounts["account_id"].to_pylist()
        print(f"store: {n_events:,} usage_events")
        t = time.perf_counter()
        s.append("usage_events", batch(accounts, 1))  # the first append makes the key index
        print(f"first append (makes the index on event_id): {time.perf_counter() - t:.1f} s")
        for n in args.rows:
            for method in ("load", "append"):
                times = []
                for _ in range(args.repeat):
                    b = batch(accounts, n)
                    t = time.perf_counter()
                    getattr(s, method)("usage_events", b)
                    times.append(time.perf_counter() - t)
                t = time.perf_counter()
                again = getattr(s, method)("usage_events", b)
                resend = time.perf_counter() - t
                assert again.unchanged == n and again.inserted == 0
                print(
                    f"{method:>6} {n:>6,} rows: median {statistics.median(times) * 1000:7.1f} ms"
                    f" (re-send, all unchanged: {resend * 1000:.1f} ms)"
                )
        s.close()


if __name__ == "__main__":
    main()
