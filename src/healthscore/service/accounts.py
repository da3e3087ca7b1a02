"""The account list: every scored account of one scorecard, filtered, searched, sorted
and cut to a page. The one listing ``GET /v1/accounts``, the dashboard's account list
and the portfolio (page and ``GET /v1/portfolio``) read, so they show the same
accounts, scores and order.

Place in the flow: under the routes of ``service/`` (:mod:`healthscore.service.read`,
:mod:`healthscore.service.dashboard.data`), over the store's ``current_scores``
(:mod:`healthscore.store.current`, kept up to date by the rescorer) and
:mod:`healthscore.portfolio` (names, ARR in force, renewal dates).

- :func:`read_book`: every scored account, from ``current_scores`` once a rescore of
  everyone has written this model version and scorecard (its trend classes and 30-day
  changes with it), else scored live as of the service's now (trends from the latest
  stored history). It says which (``source``), what it is as of and when it was computed.
- :func:`select`: the filters (band, segment, CSM, trend class, a search of name or id)
  and the orders (:data:`SORTS`, optionally reversed with rows lacking the value last).
- :func:`page`: both, and one page of the result, with the filters' choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from healthscore import api
from healthscore.engine.trends import CLASSES
from healthscore.errors import HealthscoreError
from healthscore.model import Model
from healthscore.portfolio import SORTS as PORTFOLIO_SORTS

#: the list's orders: the portfolio's, and the change over the trend window (biggest
#: fall first)
SORTS = (*PORTFOLIO_SORTS, "change")
#: the trend classes, as the engine names them
TRENDS = CLASSES
#: the columns of a scored row the list and the portfolio read
SCORE_COLUMNS = ("account_id", "score", "band", "coverage", "probability", "segment", "csm")
NO_HISTORY = (
    "no stored history for this model version: trend and 30-day change are empty "
    "(healthscore history --from <date> --to <date> --every 1w stores it)"
)


@dataclass
class AccountRow:
    """One account as the list shows it."""

    account_id: str
    name: str | None
    score: float | None
    band: str | None
    coverage: float | None
    segment: str | None
    csm: str | None
    arr: float | None
    renewal_date: datetime | None
    trend: str | None = None
    change_30d: float | None = None

    def to_dict(self) -> dict:
        """The API's item (dates as ISO text)."""
        d = dict(self.__dict__)
        d["renewal_date"] = _iso(self.renewal_date)
        return d


@dataclass
class Book:
    """Every scored account of one scorecard, before any filter."""

    as_of: datetime
    scored_at: datetime
    source: str  # "current_scores" or "live"
    scores: pa.Table  # SCORE_COLUMNS, one row per scored account
    rows: list[AccountRow]
    history_as_of: datetime | None  # the stored date trends are read from (live)
    warnings: list[str] = field(default_factory=list)


def read_book(store, card: Model, now: datetime) -> Book:
    """Every scored account of ``card``: from ``current_scores`` when a rescore of
    everyone wrote it, else scored live as of ``now``."""
    from healthscore.engine.current import latest_stored, trend_rows
    from healthscore.portfolio import account_facts
    from healthscore.store import current

    warnings: list[str] = []
    if current.complete(store, card.version, card.scorecard_name):
        t = current.of_model(store, card.version, card.scorecard_name)
        cols = [*SCORE_COLUMNS, "trend", "change_30d", "as_of", "computed_at"]
        table = store.execute(t.select(*cols).order_by("account_id"))
        source = "current_scores"
    else:
        table = None
    if table is not None and table.num_rows:
        as_of = max(table["as_of"].to_pylist())
        scored_at = max(table["computed_at"].to_pylist())
        trends = {
            r["account_id"]: r
            for r in table.select(["account_id", "trend", "change_30d"]).to_pylist()
        }
        scores = table.select(list(SCORE_COLUMNS))
    else:  # nothing rescored yet: score live
        result = api.score_accounts(store, card, now)
        trends = trend_rows(store, card, now)
        as_of, scored_at, source = now, datetime.now(UTC).replace(tzinfo=None), "live"
        scores = result.scores
        if "probability" not in scores.column_names:
            scores = scores.append_column("probability", pa.nulls(scores.num_rows, pa.float64()))
        warnings += result.warnings
    history_as_of = latest_stored(store, card, as_of)
    if history_as_of is None:
        warnings.append(NO_HISTORY)
    facts = account_facts(store, as_of)
    rows = []
    for r in scores.select(list(SCORE_COLUMNS)).to_pylist():
        f = facts.get(r["account_id"], {})
        t = trends.get(r["account_id"], {})
        rows.append(
            AccountRow(
                r["account_id"],
                f.get("account_name"),
                r["score"],
                r["band"],
                r["coverage"],
                r["segment"],
                r["csm"],
                f.get("arr_in_force"),
                f.get("renewal_date"),
                t.get("trend"),
                t.get("change_30d"),
            )
        )
    return Book(as_of, scored_at, source, scores, rows, history_as_of, warnings)


def _key(v) -> str | None:
    return None if v is None else " ".join(str(v).split()).casefold()


def select(
    card: Model,
    rows: list[AccountRow],
    *,
    band: str | None = None,
    segment: str | None = None,
    csm: str | None = None,
    trend: str | None = None,
    q: str | None = None,
    sort: str = "score",
    reverse: bool = False,
) -> list[AccountRow]:
    """``rows`` filtered and sorted.

    ``band``: ``red,yellow`` or the scorecard's names for them; ``segment`` and ``csm``
    compared whatever their case and spaces; ``trend`` one of :data:`TRENDS`; ``q`` part
    of the name or id. ``sort`` (:data:`SORTS`): ``score`` the end of the scorecard that
    needs attention first, ``arr`` largest first, ``renewal`` soonest first, ``name``
    A-Z, ``change`` the largest fall first; rows without the value last, ties by id.
    ``reverse`` turns the order around, rows without the value still last."""
    if sort not in SORTS:
        raise HealthscoreError(f"`sort` {sort!r}: not one of {', '.join(SORTS)}")
    out = rows
    if band:
        wanted = [w.strip() for w in band.split(",") if w.strip()]
        bands = [card.band_of_name(b) for b in wanted]
        bad = [w for w, b in zip(wanted, bands, strict=True) if b is None]
        if bad:
            raise HealthscoreError(
                f"`band` {', '.join(bad)}: not a band of this scorecard",
                hint="bands: " + ", ".join(card.band_name(b) for b in ("green", "yellow", "red")),
            )
        out = [r for r in out if r.band in bands]
    if trend:
        if trend not in TRENDS:
            raise HealthscoreError(f"`trend` {trend!r}: not a trend class", hint=", ".join(TRENDS))
        out = [r for r in out if r.trend == trend]
    for name, wanted in (("segment", segment), ("csm", csm)):
        if wanted:
            out = [r for r in out if _key(getattr(r, name)) == _key(wanted)]
    if q and q.strip():
        needle = " ".join(q.split()).casefold()
        out = [r for r in out if needle in r.account_id.casefold() or needle in _key(r.name or "")]
    hi = card.highest_first

    def value(r: AccountRow):
        if sort == "score":
            return None if r.score is None else (-r.score if hi else r.score)
        if sort == "arr":
            return None if r.arr is None else -r.arr
        if sort == "renewal":
            return r.renewal_date
        if sort == "name":
            return None if r.name is None else r.name.casefold()
        return r.change_30d

    have = sorted((r for r in out if value(r) is not None), key=lambda r: (value(r), r.account_id))
    if reverse:
        have.reverse()
    return have + sorted((r for r in out if value(r) is None), key=lambda r: r.account_id)


@dataclass
class AccountPage:
    """One page of the list and what it rests on."""

    as_of: datetime
    scored_at: datetime | None
    source: str
    total: int  # rows after the filters
    scored: int  # accounts scored before the filters
    items: list[AccountRow]
    segments: list[str]  # the filters' choices: every segment and CSM of the accounts
    csms: list[str]
    history_as_of: datetime | None
    warnings: list[str] = field(default_factory=list)


def choices(store) -> tuple[list[str], list[str]]:
    """Every segment and CSM the accounts table names (the filters' options)."""
    acc = store.table("accounts")
    rows = store.execute(acc.select("segment", "csm").distinct()).to_pylist()
    seg = sorted({r["segment"] for r in rows if r["segment"]}, key=str.casefold)
    csm = sorted({r["csm"] for r in rows if r["csm"]}, key=str.casefold)
    return seg, csm


class UnknownFilter(HealthscoreError):
    """A ``segment`` or ``csm`` filter that no account names (``name``: which)."""

    def __init__(self, message: str, *, hint: str, name: str):
        super().__init__(message, hint=hint)
        self.name = name


def _known(name: str, wanted: str | None, have: list[str]) -> None:
    """A ``segment`` or ``csm`` filter no account names is an error listing those the
    accounts name (an empty list would say nothing of a typo or a CSM who left)."""
    if not wanted or _key(wanted) in {_key(h) for h in have}:
        return
    shown = ", ".join(have[:20]) + (f" (and {len(have) - 20} more)" if len(have) > 20 else "")
    raise UnknownFilter(
        f"`{name}` {wanted!r}: no account has this {name}",
        hint=f"the accounts' {name}s: {shown}" if have else f"no account has a {name}",
        name=name,
    )


def page(
    state,
    card: Model | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    **filters,
) -> AccountPage:
    """The list of ``card`` (default: the model's health scorecard) through
    :func:`select` (``filters``: its keywords), cut to ``limit`` rows from ``offset``.
    A ``segment`` or ``csm`` no account names is an error (:func:`_known`)."""
    card = card or state.model
    with state.store_access() as store:
        book = read_book(store, card, state.now())
        segments, csms = choices(store)
    _known("segment", filters.get("segment"), segments)
    _known("csm", filters.get("csm"), csms)
    rows = select(card, book.rows, **filters)
    return AccountPage(
        book.as_of,
        book.scored_at,
        book.source,
        len(rows),
        len(book.rows),
        rows[offset : offset + limit],
        segments,
        csms,
        book.history_as_of,
        book.warnings,
    )


def portfolio(store, model: Model, now: datetime, *, top: int = 10):
    """The portfolio's data (:func:`healthscore.portfolio.gather`) over the scores the
    list reads (:func:`read_book`), as of the moment they are as of."""
    from healthscore.portfolio import gather

    book = read_book(store, model, now)
    return gather(store, model, book.as_of, top=top, scores=book.scores)


def _iso(v) -> str | None:
    return v.isoformat() if v is not None else None
