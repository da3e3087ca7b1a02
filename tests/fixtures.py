"""A small, fully known book of business, written into a real DuckDB file.

Every value a test asserts can be worked out by hand from the rows below. As of
D = 2025-01-01 00:00 UTC:

- A1 (enterprise, created 2023): subscription S1 ends exactly at D and S2 starts at D
  (a renewal that chains), so S2 is in force: 10 seats, ARR 120,000, renewal in 365 days.
  4 users active in the last 30 days (u1..u4), 6 events in the last 30 days, 3 in the
  30 days before. Ticket T1 opened 2024-12-20 and closed after D (open at D); T2 high
  priority opened and closed in November. NPS 9 in October; an NPS 3 answered after D.
- A2 (smb, created 2024-06-01): S3 in force, 5 seats, ARR 6,000. One user active.
  Invoices due in the last 90 days: one paid late, one paid early, one paid only after D
  (unpaid at D). A ticket opened after D. A champion_left flag active at D.
- A3 (mid-market, created 2024-12-15): no subscriptions, no usage.
- A4 (smb, created after D): not scored.
- A5 (smb, created 2023): its only subscription ended 2024-06-01: churned, not scored.

Run ``python tests/fixtures.py out.duckdb`` to write the file for manual exploration.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime as D
from datetime import timedelta

import pyarrow as pa

AS_OF = D(2025, 1, 1)
# the shared demo projects (conftest's ``demo_project``): one small, one for calibration
DEMO_END = D(2025, 7, 1)
SMALL_DEMO = dict(accounts=300, months=15, seed=3)  # backtest report, challenger
CALIBRATION_DEMO = dict(accounts=800, months=24, seed=7)  # calibrate's held-out figures


def _ts(values):
    return pa.array(values, pa.timestamp("us"))


def tables() -> dict[str, pa.Table]:
    events = []
    # A1: 6 events in [D-30d, D) by u1..u4, 3 events in [D-60d, D-30d) by u1
    for i, (user, day) in enumerate(
        [("u1", 2), ("u2", 3), ("u3", 5), ("u4", 10), ("u1", 20), ("u2", 29)]
    ):
        events.append(
            (
                f"E1-{i}",
                "A1",
                user,
                ["login", "report", "export"][i % 3],
                AS_OF - timedelta(days=day),
            )
        )
    for i, day in enumerate([35, 40, 59]):
        events.append((f"E1-p{i}", "A1", "u1", "login", AS_OF - timedelta(days=day)))
    # an event at exactly D and one after: never counted as of D
    events.append(("E1-at", "A1", "u9", "login", AS_OF))
    events.append(("E1-after", "A1", "u9", "login", AS_OF + timedelta(days=1)))
    # A2: one user, one event 12 days before D
    events.append(("E2-0", "A2", "v1", "login", AS_OF - timedelta(days=12)))
    ev = list(zip(*events, strict=True))
    return {
        "accounts": pa.table(
            {
                "account_id": ["A1", "A2", "A3", "A4", "A5"],
                "name": ["Acme", "Bolt", "Cove", "Dune", "Echo"],
                "segment": ["enterprise", "smb", "mid-market", "smb", "smb"],
                "csm": ["alice", "bob", "alice", "bob", "bob"],
                "created_at": _ts(
                    [D(2023, 1, 1), D(2024, 6, 1), D(2024, 12, 15), D(2025, 2, 1), D(2023, 1, 1)]
                ),
            }
        ),
        "subscriptions": pa.table(
            {
                "subscription_id": ["S1", "S2", "S3", "S5"],
                "account_id": ["A1", "A1", "A2", "A5"],
                "plan": ["pro", "pro", "basic", "basic"],
                "seats": [8.0, 10.0, 5.0, 3.0],
                "mrr": [8000.0, 10000.0, 500.0, 100.0],
                "arr": [96000.0, 120000.0, 6000.0, 1200.0],
                "start_date": _ts([D(2024, 1, 1), D(2025, 1, 1), D(2024, 6, 1), D(2023, 1, 1)]),
                "end_date": _ts([D(2025, 1, 1), D(2026, 1, 1), D(2025, 6, 1), D(2024, 6, 1)]),
                "billing_period_months": [12, 12, 12, 12],
                "auto_renew": [True, True, False, False],
            }
        ),
        "usage_events": pa.table(
            {
                "event_id": list(ev[0]),
                "account_id": list(ev[1]),
                "user_id": list(ev[2]),
                "event": list(ev[3]),
                "ts": _ts(list(ev[4])),
                "quantity": [1.0] * len(events),
            }
        ),
        "tickets": pa.table(
            {
                "ticket_id": ["T1", "T2", "T3"],
                "account_id": ["A1", "A1", "A2"],
                "opened_at": _ts([D(2024, 12, 20), D(2024, 11, 1), D(2025, 1, 2)]),
                "closed_at": _ts([D(2025, 1, 5), D(2024, 11, 2), None]),
                "priority": ["low", "high", "urgent"],
                "escalated_at": _ts([None, None, D(2025, 1, 3)]),
                "csat": [None, 4.0, None],
            }
        ),
        "invoices": pa.table(
            {
                "invoice_id": ["I1", "I2", "I3"],
                "account_id": ["A2", "A2", "A2"],
                "issued_at": _ts([D(2024, 11, 1), D(2024, 10, 2), D(2024, 11, 15)]),
                "due_at": _ts([D(2024, 12, 1), D(2024, 11, 1), D(2024, 12, 15)]),
                "paid_at": _ts([D(2024, 12, 10), D(2024, 10, 30), D(2025, 1, 3)]),
                "amount": [500.0, 500.0, 500.0],
            }
        ),
        "surveys": pa.table(
            {
                "response_id": ["R1", "R2"],
                "account_id": ["A1", "A1"],
                "user_id": ["u1", "u2"],
                "ts": _ts([D(2024, 10, 1), D(2025, 1, 2)]),
                "kind": ["nps", "nps"],
                "score": [9.0, 3.0],
                "comment": [None, "worse"],
            }
        ),
        "flags": pa.table(
            {
                "flag_id": ["F1", "F2"],
                "account_id": ["A2", "A1"],
                "ts": _ts([D(2024, 12, 1), D(2024, 10, 1)]),
                "kind": ["champion_left", "budget_freeze"],
                "note": ["Our champion moved on", "Freeze until Q4"],
                "author": ["bob", "alice"],
                "resolved_at": _ts([None, D(2024, 11, 1)]),
            }
        ),
    }


def memory_store(**extra_rows):
    """The fixture tables in an in-memory DuckDB store, with extra rows per table appended."""
    from healthscore.store import connect

    store = connect("duckdb://")
    for name, table in tables().items():
        if name in extra_rows:
            table = pa.Table.from_pylist(table.to_pylist() + extra_rows[name], schema=table.schema)
        store.load(name, table)
    return store


def outcome_book(path, hints: list[tuple[str, float]], outcomes: list[tuple]):
    """A store whose accounts carry a ``hint`` column (score them with ``{column: hint}``),
    alternately enterprise and smb, created 2024-01-01, with ``(account, ts, kind)``
    outcomes: a book whose backtest figures can be worked out by hand."""
    from healthscore.store import connect

    store = connect(path)
    store.load(
        "accounts",
        pa.table(
            {
                "account_id": [a for a, _ in hints],
                "created_at": _ts([D(2024, 1, 1)] * len(hints)),
                "segment": ["smb" if i % 2 else "enterprise" for i in range(len(hints))],
                "hint": [float(h) for _, h in hints],
            }
        ),
    )
    store.load(
        "outcomes",
        pa.table(
            {
                "outcome_id": [f"O{i}" for i in range(len(outcomes))],
                "account_id": [o[0] for o in outcomes],
                "ts": _ts([o[1] for o in outcomes]),
                "kind": [o[2] for o in outcomes],
            }
        ),
    )
    return store


@contextmanager
def postgres_store():
    """A store on a database of its own on the ``HEALTHSCORE_TEST_PG`` server (``.ci/run``
    starts one), dropped afterwards; the test is skipped with the reason without a server."""
    import os
    import uuid

    import pytest

    from healthscore.store import connect

    server = os.environ.get("HEALTHSCORE_TEST_PG")
    if not server:
        pytest.skip("no PostgreSQL server: set HEALTHSCORE_TEST_PG (see .ci/run)")
    import psycopg

    name = f"hs_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    store = connect(server.rsplit("/", 1)[0] + "/" + name)
    try:
        yield store
    finally:
        store.con.disconnect()
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}"')


def write(path) -> None:
    """Load the fixture tables into a DuckDB store at ``path`` through healthscore."""
    from healthscore.store import connect

    store = connect(path)
    for name, table in tables().items():
        store.load(name, table)
    store.con.disconnect()


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else "fixture.duckdb")
