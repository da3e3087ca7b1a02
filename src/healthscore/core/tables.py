"""Canonical tables: the one data model every source is loaded into.

Place in the flow: the vocabulary shared by ``sources`` (what a file must become),
``store`` (what is created in the backend) and ``metrics`` (what a model may read).

Each table declares its columns with types, its primary key, its kind, and the
columns that carry time:

- **entity** tables (accounts, users) hold static attributes;
- **event** tables carry one timestamp (``time``) and are aggregated over a window
  that ends just before the as-of date;
- **interval** tables (subscriptions, tickets, flags) are read "as of D": a row is in
  force between its ``start`` and ``end`` columns.

All timestamps are stored as UTC timestamps without a zone. Extra columns in a source
file are kept (typed as text, number or timestamp as they parse) and usable in metrics.

Examples
--------
>>> TABLES["usage_events"].primary_key
'event_id'
>>> TABLES["tickets"].kind, TABLES["tickets"].start, TABLES["tickets"].end
('interval', 'opened_at', 'closed_at')
>>> sorted(TABLES["subscriptions"].timestamp_columns)
['end_date', 'start_date']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

#: Bumped when a canonical table changes shape; recorded in the store.
SCHEMA_VERSION = 1

#: Column types, named as Ibis data types.
STRING, INT, FLOAT, BOOL, TIMESTAMP = "string", "int64", "float64", "boolean", "timestamp"


@dataclass(frozen=True)
class Table:
    """One canonical table: columns, key, kind and time columns."""

    name: str
    columns: dict[str, str]
    primary_key: str
    kind: str  # "entity" | "event" | "interval"
    required: tuple[str, ...]
    time: str | None = None  # the column windows and watermarks use
    start: str | None = None  # interval tables: in force from ...
    end: str | None = None  # ... until (null = open)
    #: interval semantics: "date" contracts are in force start <= D < end (renewals chain);
    #: "timestamp" intervals follow the point-in-time rule start < D and (end null or end >= D)
    interval_rule: str = "timestamp"
    expected_lag: timedelta | None = None  # freshness: warn when D - watermark exceeds this
    description: str = ""
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def timestamp_columns(self) -> tuple[str, ...]:
        return tuple(c for c, t in self.columns.items() if t == TIMESTAMP)

    @property
    def account_key(self) -> str:
        return "account_id"


def _t(**kw) -> Table:
    return Table(**kw)


TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        _t(
            name="accounts",
            columns={
                "account_id": STRING,
                "name": STRING,
                "segment": STRING,
                "csm": STRING,
                "created_at": TIMESTAMP,
            },
            primary_key="account_id",
            kind="entity",
            required=("account_id", "created_at"),
            time="created_at",
            description="Static account attributes (segment and CSM are static).",
        ),
        _t(
            name="subscriptions",
            columns={
                "subscription_id": STRING,
                "account_id": STRING,
                "plan": STRING,
                "seats": FLOAT,
                "mrr": FLOAT,
                "arr": FLOAT,
                "start_date": TIMESTAMP,
                "end_date": TIMESTAMP,
                "billing_period_months": INT,
                "auto_renew": BOOL,
            },
            primary_key="subscription_id",
            kind="interval",
            required=("subscription_id", "account_id", "start_date"),
            time="start_date",
            start="start_date",
            end="end_date",
            interval_rule="date",
            expected_lag=timedelta(days=35),
            description="Contracts; the ones in force at D give seats, MRR, ARR, renewal date.",
        ),
        _t(
            name="users",
            columns={"user_id": STRING, "account_id": STRING, "created_at": TIMESTAMP},
            primary_key="user_id",
            kind="entity",
            required=("user_id", "account_id"),
            time="created_at",
        ),
        _t(
            name="usage_events",
            columns={
                "event_id": STRING,
                "account_id": STRING,
                "user_id": STRING,
                "event": STRING,
                "ts": TIMESTAMP,
                "quantity": FLOAT,
            },
            primary_key="event_id",
            kind="event",
            required=("account_id", "ts"),
            time="ts",
            expected_lag=timedelta(days=2),
            description="Product usage; one row per event (or per user/day/feature with quantity).",
        ),
        _t(
            name="tickets",
            columns={
                "ticket_id": STRING,
                "account_id": STRING,
                "opened_at": TIMESTAMP,
                "closed_at": TIMESTAMP,
                "priority": STRING,
                "escalated_at": TIMESTAMP,
                "csat": FLOAT,
            },
            primary_key="ticket_id",
            kind="interval",
            required=("ticket_id", "account_id", "opened_at"),
            time="opened_at",
            start="opened_at",
            end="closed_at",
            expected_lag=timedelta(days=7),
        ),
        _t(
            name="invoices",
            columns={
                "invoice_id": STRING,
                "account_id": STRING,
                "issued_at": TIMESTAMP,
                "due_at": TIMESTAMP,
                "paid_at": TIMESTAMP,
                "amount": FLOAT,
            },
            primary_key="invoice_id",
            kind="event",
            required=("invoice_id", "account_id", "due_at"),
            time="due_at",
            expected_lag=timedelta(days=45),
        ),
        _t(
            name="surveys",
            columns={
                "response_id": STRING,
                "account_id": STRING,
                "user_id": STRING,
                "ts": TIMESTAMP,
                "kind": STRING,
                "score": FLOAT,
                "comment": STRING,
            },
            primary_key="response_id",
            kind="event",
            required=("response_id", "account_id", "ts", "score"),
            time="ts",
            expected_lag=timedelta(days=120),
            enums={"kind": ("nps", "csat")},
        ),
        _t(
            name="touchpoints",
            columns={
                "touchpoint_id": STRING,
                "account_id": STRING,
                "ts": TIMESTAMP,
                "kind": STRING,
                "executive": BOOL,
            },
            primary_key="touchpoint_id",
            kind="event",
            required=("touchpoint_id", "account_id", "ts"),
            time="ts",
            expected_lag=timedelta(days=14),
            enums={"kind": ("meeting", "qbr", "call", "email")},
        ),
        _t(
            name="flags",
            columns={
                "flag_id": STRING,
                "account_id": STRING,
                "ts": TIMESTAMP,
                "kind": STRING,
                "note": STRING,
                "author": STRING,
                "resolved_at": TIMESTAMP,
            },
            primary_key="flag_id",
            kind="interval",
            required=("flag_id", "account_id", "ts", "kind"),
            time="ts",
            start="ts",
            end="resolved_at",
        ),
        _t(
            name="outcomes",
            columns={
                "outcome_id": STRING,
                "account_id": STRING,
                "ts": TIMESTAMP,
                "kind": STRING,
                "arr_delta": FLOAT,
            },
            primary_key="outcome_id",
            kind="event",
            required=("outcome_id", "account_id", "ts", "kind"),
            time="ts",
            enums={"kind": ("renewed", "churned", "expanded", "contracted", "reactivated")},
        ),
    ]
}

#: Event tables whose primary key is derived from the row's content when a file has none:
#: the md5 of these columns' values and the row's occurrence among identical ones. The
#: columns are what identifies an event, not what may be corrected later (an invoice's
#: paid_at, an outcome's arr_delta), so a later export of a row updates it.
DERIVED_KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "usage_events": ("account_id", "user_id", "event", "ts", "quantity"),
    "invoices": ("account_id", "issued_at", "due_at", "amount"),
    "surveys": ("account_id", "user_id", "ts", "kind"),
    "touchpoints": ("account_id", "ts", "kind"),
    "outcomes": ("account_id", "ts", "kind"),
}
DERIVABLE_KEYS = frozenset(DERIVED_KEY_COLUMNS)
#: Tables whose key may be built from named columns (``key``): every table whose key no
#: other table refers to (accounts, users and subscriptions are referred to by theirs).
KEYABLE = DERIVABLE_KEYS | {"tickets", "flags"}


def get_table(name: str) -> Table:
    """Return the canonical table called ``name`` or raise a clear error."""
    from healthscore.errors import StoreError

    try:
        return TABLES[name]
    except KeyError:
        raise StoreError(
            f"unknown table {name!r}",
            hint="canonical tables are: " + ", ".join(TABLES),
        ) from None
