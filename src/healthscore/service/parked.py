"""Parked Segment messages: the ones refused (``ingest_rejects``, with the reason) and
the ones waiting for their user to be linked to an account (``ingest_pending``).

Place in the flow: under :mod:`healthscore.service.segment`, which parks and releases
messages, and :mod:`healthscore.service.ingest`, which lists them; the two tables are
the service's own, written through the store like any other. Both are keyed by the
message id, so a message sent again replaces its parked copy instead of adding one.
"""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa

from healthscore.service.text import readable
from healthscore.store import Store

REJECTS = "ingest_rejects"
PENDING = "ingest_pending"
COLUMNS = {
    REJECTS: {
        "message_id": "string",
        "type": "string",
        "received_at": "timestamp",
        "reason": "string",
        "message": "string",  # the message as received (JSON)
    },
    PENDING: {
        "message_id": "string",
        "type": "string",
        "received_at": "timestamp",
        "user_id": "string",
        "message": "string",  # the message with its corrected time (JSON)
    },
}
#: the largest message kept whole in a parked row (longer ones are cut)
MAX_MESSAGE_CHARS = 32_000
_TYPES = {"string": pa.string(), "timestamp": pa.timestamp("us")}


def ensure_tables(store: Store) -> None:
    for name, columns in COLUMNS.items():
        if not store.has_table(name):
            store.create_table(name, columns)


def _table(name: str, rows: list[dict]) -> pa.Table:
    schema = pa.schema([(c, _TYPES[t]) for c, t in COLUMNS[name].items()])
    return pa.Table.from_pylist(rows, schema=schema)


def message_text(message) -> str:
    """The message as JSON text a store can keep: an unpaired surrogate anywhere in it
    (refused or not, see :mod:`healthscore.service.text`) is kept as U+FFFD."""
    text = readable(json.dumps(message, default=str, ensure_ascii=False))
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def park(store: Store, name: str, rows: list[dict]) -> None:
    """Put rows in a parked table, replacing those with the same message ids."""
    if not rows:
        return
    rows = list({r["message_id"]: r for r in rows}.values())
    with store.transaction():
        store.delete_rows(name, {"message_id": [r["message_id"] for r in rows]})
        store.insert(name, _table(name, rows))


def release(store: Store, name: str, message_ids: list[str]) -> None:
    """Take messages out of a parked table."""
    if message_ids:
        store.delete_rows(name, {"message_id": list(message_ids)})


def pending_for(store: Store, user_ids: list[str]) -> list[dict]:
    """The pending messages of these users, oldest first."""
    if not user_ids:
        return []
    t = store.stored(PENDING)
    t = t.filter(t.user_id.isin(list(user_ids))).order_by(["received_at", "message_id"])
    return store.execute(t).to_pylist()


def listing(store: Store, name: str, limit: int, offset: int) -> tuple[int, list[dict]]:
    """How many rows a parked table holds, and one page of them, newest first (none
    when the table was never made: the store may be open read-only)."""
    if not store.has_table(name):
        return 0, []
    t = store.stored(name)
    total = store.count(name)
    page = t.order_by([t.received_at.desc(), t.message_id]).limit(limit, offset=offset)
    items = []
    for r in store.execute(page).to_pylist():
        r["received_at"] = _iso(r["received_at"])
        try:
            r["message"] = json.loads(r["message"])
        except ValueError:  # cut because it was too long: shown as text
            pass
        items.append(r)
    return total, items


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
