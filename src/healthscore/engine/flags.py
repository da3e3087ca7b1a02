"""CSM flags: qualitative signals a CSM raises (champion left, budget freeze, reorg ...).

Place in the flow: a source like any other, written through ``store``: a flag is a row
of the canonical ``flags`` table, active from its ``ts`` until ``resolved_at`` (the
point-in-time rule of interval tables), usable in models with ``has_flag('kind')`` and
shown by ``healthscore flag list``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pyarrow as pa

from healthscore.core.limits import MAX_FLAG_KIND, NUL, quoted, unshown
from healthscore.core.tables import TABLES
from healthscore.errors import StoreError
from healthscore.store import LoadResult, Store


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _row(store: Store, flag_id: str) -> dict | None:
    t = store.table("flags")
    rows = t.filter(t.flag_id == flag_id).to_pyarrow().to_pylist()
    return rows[0] if rows else None


def _write(store: Store, row: dict) -> LoadResult:
    schema = pa.schema(
        [
            (c, pa.timestamp("us") if t == "timestamp" else pa.string())
            for c, t in TABLES["flags"].columns.items()
        ]
    )
    return store.load("flags", pa.Table.from_pylist([row], schema=schema))


def add_flag(
    store: Store,
    account_id: str,
    kind: str,
    *,
    note: str | None = None,
    author: str | None = None,
    at: datetime | None = None,
) -> dict:
    """Raise a flag on an account; returns the stored row (with its new ``flag_id``)."""
    given = {"account_id": account_id, "kind": kind, "note": note, "author": author}
    for name, text in given.items():
        if text is not None and NUL in text:
            raise StoreError(f"`{name}` holds a NUL character (U+0000), which no text may hold")
    acc = store.table("accounts")
    if not acc.filter(acc.account_id == account_id).count().to_pyarrow().as_py():
        raise StoreError(f"unknown account {quoted(account_id)}", hint="load the account first")
    kind = kind.strip().lower().replace(" ", "_")
    if not kind:
        raise StoreError("a flag needs a kind, e.g. champion_left")
    # what has_flag('kind') matches: a kind that does not show as itself matches no rule
    # and reads as another wherever it is listed
    found = unshown(kind)
    hint = "a word or two, e.g. champion_left"
    if found:
        raise StoreError(f"a flag's kind holds {found}, which a kind may not hold", hint=hint)
    if len(kind) > MAX_FLAG_KIND:
        got = f"got {len(kind):,}"
        raise StoreError(f"a flag's kind is at most {MAX_FLAG_KIND} characters ({got})", hint=hint)
    row = {
        "flag_id": f"FLG-{uuid.uuid4().hex[:10]}",
        "account_id": account_id,
        "ts": at or _now(),
        "kind": kind,
        "note": note,
        "author": author,
        "resolved_at": None,
    }
    _write(store, row)
    return row


def resolve_flag(store: Store, flag_id: str, *, at: datetime | None = None) -> dict:
    """Mark a flag resolved (from ``at``, default now); it stays in history before that."""
    row = _row(store, flag_id)
    if row is None:
        raise StoreError(f"unknown flag {flag_id!r}", hint="see `healthscore flag list`")
    if row["resolved_at"] is not None:
        raise StoreError(f"flag {flag_id} was already resolved on {row['resolved_at']:%Y-%m-%d}")
    at = at or _now()
    if at < row["ts"]:
        raise StoreError(f"flag {flag_id} was raised on {row['ts']:%Y-%m-%d}, after {at:%Y-%m-%d}")
    row["resolved_at"] = at
    _write(store, row)
    return row


def list_flags(
    store: Store,
    *,
    account_id: str | None = None,
    as_of: datetime | None = None,
    include_resolved: bool = False,
) -> list[dict]:
    """Flags, newest first: those active at ``as_of`` (default now) unless ``include_resolved``."""
    t = store.table("flags")
    if account_id:
        t = t.filter(t.account_id == account_id)
    if not include_resolved:
        d = as_of or _now()
        t = t.filter(t.ts < d, t.resolved_at.isnull() | (t.resolved_at >= d))
    return t.order_by([t.ts.desc(), t.flag_id]).to_pyarrow().to_pylist()
