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

Numeric columns declare their **domain** (:class:`Domain`): seats, MRR, ARR, quantities
and amounts are never negative, an NPS is 0-10 and a CSAT sits on its scale (1-5 unless
a load spec says otherwise); a value outside it is an invalid row, like a value of the
wrong type. Every timestamp lies in the years :data:`~healthscore.core.limits.MIN_YEAR`
to :data:`~healthscore.core.limits.MAX_YEAR`.

Examples
--------
>>> TABLES["usage_events"].primary_key
'event_id'
>>> TABLES["tickets"].kind, TABLES["tickets"].start, TABLES["tickets"].end
('interval', 'opened_at', 'closed_at')
>>> sorted(TABLES["subscriptions"].timestamp_columns)
['end_date', 'start_date']
>>> [d.describe() for d in TABLES["surveys"].domains["score"]]
["between 0 and 10 where kind = 'nps'", "between 1 and 5 where kind = 'csat'"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

#: Bumped when a canonical table changes shape; recorded in the store.
SCHEMA_VERSION = 1

#: Column types, named as Ibis data types.
STRING, INT, FLOAT, BOOL, TIMESTAMP = "string", "int64", "float64", "boolean", "timestamp"


@dataclass(frozen=True)
class Domain:
    """The values a numeric column may hold: ``min <= value <= max`` (None: no bound).

    ``when`` = ``(column, value)`` limits it to the rows where that column has that value
    (an NPS answer); ``scale`` names a scale a load spec may set instead (``csat``).
    """

    min: float | None = None
    max: float | None = None
    when: tuple[str, str] | None = None
    scale: str | None = None

    def describe(self) -> str:
        """``at least 0``, ``between 1 and 5 where kind = 'csat'``."""
        if self.min is not None and self.max is not None:
            text = f"between {_num(self.min)} and {_num(self.max)}"
        elif self.min is not None:
            text = f"at least {_num(self.min)}"
        else:
            text = f"at most {_num(self.max)}"
        return text + (f" where {self.when[0]} = {self.when[1]!r}" if self.when else "")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


#: never negative: counts and money
NON_NEGATIVE = Domain(min=0)
#: Net Promoter Score answers are 0-10
NPS = Domain(min=0, max=10)
#: CSAT answers, on a 1-5 scale unless a load spec declares another (``domains:``)
CSAT = Domain(min=1, max=5, scale="csat")


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
    #: what the lag is measured from: "data", the latest timestamp loaded (tables that
    #: change every day), or "load", the last load (slow-changing tables: a month without a
    #: new contract is no stalled feed, a month without a sync is)
    freshness_by: str = "data"
    description: str = ""
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    domains: dict[str, tuple[Domain, ...]] = field(default_factory=dict)

    @property
    def timestamp_columns(self) -> tuple[str, ...]:
        return tuple(c for c, t in self.columns.items() if t == TIMESTAMP)

    @property
    def account_key(self) -> str:
        return "account_id"


@dataclass(frozen=True)
class Cadence:
    """How a table's freshness is judged: by its ``data`` (the latest timestamp loaded)
    or by its last ``load``, how long may pass before it is stale, and who said so
    (``default``: the table's own; ``model``: the model file's ``freshness:``)."""

    by: str
    within: timedelta
    set_by: str = "default"

    def describe(self, table: str) -> str:
        """``a load within 35 days (the default for subscriptions)``."""
        what = "a load" if self.by == "load" else "new data"
        days = self.within.total_seconds() / 86400
        who = (
            f"the model's `freshness.{table}`"
            if self.set_by == "model"
            else f"the default for {table}; set `freshness.{table}` in the model to change it"
        )
        return f"{what} within {days:g} days ({who})"


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
            freshness_by="load",
            description="Contracts; the ones in force at D give seats, MRR, ARR, renewal date.",
            domains={
                "seats": (NON_NEGATIVE,),
                "mrr": (NON_NEGATIVE,),
                "arr": (NON_NEGATIVE,),
                "billing_period_months": (Domain(min=1),),
            },
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
            domains={"quantity": (NON_NEGATIVE,)},
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
            domains={"csat": (CSAT,)},
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
            domains={"amount": (NON_NEGATIVE,)},
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
            domains={
                "score": (
                    Domain(NPS.min, NPS.max, when=("kind", "nps")),
                    Domain(CSAT.min, CSAT.max, when=("kind", "csat"), scale="csat"),
                )
            },
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
