"""The portfolio as plain data: what the portfolio report (and the dashboard to come) shows.

Place in the flow: above ``evaluate`` and ``engine``, below ``views``. :func:`gather`
reads live scores at D (:mod:`healthscore.engine.asof`), the stored history and its trend
classes (:mod:`healthscore.engine.trends`), the biggest movers with their ``explain --vs``
line, expansion candidates and, with the model's probability, ARR at risk
(:mod:`healthscore.evaluate.probability`), and returns a :class:`ReportData`: dataclasses
of numbers and names, no HTML, no Plotly, no Rich. :mod:`healthscore.views.report` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from healthscore.core.lazy import lazy
from healthscore.core.time import parse_as_of
from healthscore.engine import asof
from healthscore.errors import HealthscoreError
from healthscore.model import Model
from healthscore.store import Store

if TYPE_CHECKING:
    import pyarrow as pa

    from healthscore.engine.explain import Change
    from healthscore.engine.snapshot import Snapshot

# the modules that build expressions (Ibis, and the engine's builders) are imported by
# the functions that use them: `healthscore score` lists accounts from plans kept in the
# cache (:func:`listed_scores`) without building anything
ibis = lazy("ibis")

BANDS = ("green", "yellow", "red", None)  # None: no score (no data)
EXPANSION = "expansion"
NO_HISTORY = "no stored history: run healthscore history first"


@dataclass
class BandRow:
    """Accounts in one band now (``None``: no score), their share and ARR in force."""

    band: str | None
    accounts: int
    share: float
    arr: float | None


@dataclass
class Breakdown:
    """One segment's or one CSM's book: accounts, bands, average score, ARR at risk."""

    key: str | None
    accounts: int = 0
    green: int = 0
    yellow: int = 0
    red: int = 0
    no_score: int = 0
    score_sum: float = 0.0
    scored: int = 0
    arr: float = 0.0
    arr_red: float = 0.0

    @property
    def avg_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None


@dataclass
class Mover:
    """One of the largest stored score changes, with why it moved in words."""

    account_id: str
    name: str | None
    segment: str | None
    csm: str | None
    then_as_of: datetime
    score_then: float
    score_now: float
    band_now: str | None
    explanation: str

    @property
    def change(self) -> float:
        return self.score_now - self.score_then


@dataclass
class Candidate:
    """An expansion candidate and the metrics that earn it the most points."""

    account_id: str
    name: str | None
    segment: str | None
    csm: str | None
    arr: float | None
    score: float | None  # on the scorecard that made it a candidate
    health_score: float | None
    health_band: str | None
    why: list[tuple[str, object, float, str | None]]  # (metric label, raw value, points, unit)


@dataclass
class ReportData:
    """Everything the page shows, as plain data."""

    as_of: datetime
    model_label: str
    model_version: str
    scorecard: str
    accounts: int
    bands: list[BandRow]
    arr_known: bool
    history_as_of: datetime | None = None  # the stored date movers and trends use
    history_dates: list[datetime] = field(default_factory=list)
    # per stored date and band: accounts and ARR in force at that date
    band_history: list[tuple[datetime, str | None, int, float | None]] = field(default_factory=list)
    window: str = "30d"
    movers: list[Mover] = field(default_factory=list)
    segments: list[Breakdown] = field(default_factory=list)
    csms: list[Breakdown] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    candidates_total: int = 0
    candidates_source: str = ""
    trend_counts: list[tuple[str, int, float | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    book: asof.Evidence | None = None  # accounts left out and why, empty tables
    # with the model's probability: what of (e.g. "churn within 90d") and ARR at risk
    risk_of: str | None = None
    risk_segments: list = field(default_factory=list)  # probability.RiskRow per segment
    risk_csms: list = field(default_factory=list)  # ... per CSM
    # what the scorecard calls each band (its `band_names:`; None: no score)
    band_names: dict[str | None, str] = field(default_factory=dict)

    def band_name(self, band: str | None) -> str:
        """``band`` (green/yellow/red; None) as the scorecard names it, for people."""
        return self.band_names.get(band, band or "no data")

    def to_dict(self) -> dict:
        """Plain JSON-ready data (dates as ISO text), with the totals: ARR in force and,
        with the model's probability, expected outcomes and ARR at risk."""
        import dataclasses

        def plain(v):
            if isinstance(v, datetime):
                return v.isoformat()
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [plain(x) for x in v]
            return v

        d = {k: plain(v) for k, v in dataclasses.asdict(self).items()}
        d["book"] = self.book.to_dict() if self.book is not None else None
        d["total_arr"] = self.total_arr
        d["arr_red"] = next((b.arr for b in self.bands if b.band == "red"), None)
        if self.risk_of is not None:
            d["risk_expected"] = self.risk_expected
            d["risk_arr"] = self.risk_arr
        return d

    @property
    def total_arr(self) -> float | None:
        """ARR in force over all bands (None: no subscription has an ARR)."""
        return sum(b.arr or 0.0 for b in self.bands) if self.arr_known else None

    @property
    def risk_expected(self) -> float:
        """Expected outcomes over the book: Σ probability (with the model's probability)."""
        return sum(r.expected for r in self.risk_segments)

    @property
    def risk_arr(self) -> float:
        """ARR at risk over the book: Σ probability x ARR."""
        return sum(r.arr_at_risk or 0.0 for r in self.risk_segments)


def gather(
    store: Store, model: Model, as_of=None, *, top: int = 10, scores: pa.Table | None = None
) -> ReportData:
    """Collect what the portfolio report shows; executes queries, renders nothing.

    Parameters
    ----------
    store, model
        The store (with stored history, see ``healthscore history``) and the model.
    as_of
        A date or timestamp (UTC), default today 00:00 UTC; live scores are computed at
        it, movers and trends use the latest stored history date at or before it.
    top
        How many movers and expansion candidates to keep.
    scores
        The scores of the book as of ``as_of`` when the caller has them (the live
        service's ``current_scores``: account_id, score, band, coverage, probability,
        segment, csm); default: scored here.

    Returns
    -------
    ReportData
        Plain data; what could not be gathered is said in ``warnings``.
    """
    d = parse_as_of(as_of)
    if scores is None:
        scores = asof.score(store, model, d)
    book = asof.evidence(store, model, d, scores)
    warnings = [str(w) for w in store.freshness(model, d)] + book.warnings
    live = scores.to_pylist()
    arr_now = _arr_in_force(store, d)
    if arr_now is None:
        warnings.append("no subscription has an ARR: ARR figures are left out")
    accounts = _accounts(store)
    data = ReportData(
        as_of=d,
        model_label=model.label,
        model_version=model.version,
        scorecard=model.scorecard_name,
        accounts=len(live),
        bands=_band_rows(live, arr_now),
        arr_known=arr_now is not None,
        window=model.spec.trends.rapid_decline.within,
        warnings=warnings,
        book=book,
        band_names={b: model.band_name(b) for b in BANDS},
    )
    if not live:
        warnings.append(f"no account is scored as of {d:%Y-%m-%d}")
    data.segments = _breakdown(live, "segment", arr_now)
    data.csms = _breakdown(live, "csm", arr_now)
    if model.spec.probability is not None:
        # imported here: only a model with a probability pays for it
        from healthscore.evaluate.probability import arr_at_risk

        data.risk_of = model.spec.probability.describe()
        data.risk_segments = arr_at_risk(live, "segment", arr_now)
        data.risk_csms = arr_at_risk(live, "csm", arr_now)
    trends = _history(store, model, d, data)
    if trends is not None:
        data.movers = _movers(store, model, trends, accounts, top, data)
        from healthscore.engine.trends import CLASSES

        counts: dict[str, list] = {c: [0, 0.0] for c in CLASSES}
        for r in trends:
            counts[r["trend"]][0] += 1
            counts[r["trend"]][1] += (arr_now or {}).get(r["account_id"], 0.0)
        data.trend_counts = [
            (c, n, a if arr_now is not None else None) for c, (n, a) in counts.items()
        ]
    _candidates(store, model, d, live, trends, accounts, arr_now, top, data)
    return data


def _names(store: Store):
    return store.table("accounts").select("account_id", "name")


def _accounts(store: Store) -> dict[str, dict]:
    acc = store.table("accounts").select("account_id", "name", "segment", "csm")
    return {r["account_id"]: r for r in acc.to_pyarrow().to_pylist()}


def _subscriptions(store: Store):
    subs = store.table("subscriptions")
    subs = subs.filter(subs.arr.notnull())
    if not store.execute(subs.select("arr").limit(1)).num_rows:
        return None
    return subs


def _in_force(subs, d):
    """Per account with a subscription in force at ``d`` (a datetime, or a timestamp value
    of the expression such as a plan's parameter): the ARR summed over them and the
    renewal date (the earliest end date; null when all are open-ended)."""
    from healthscore.engine.metrics import in_force

    at = ibis.literal(d, type="timestamp") if isinstance(d, datetime) else d
    subs = subs.filter(in_force(subs, "subscriptions", at))
    return subs.group_by("account_id").aggregate(
        arr=subs.arr.sum(), renewal_date=subs.end_date.min()
    )


def _arr_in_force(store: Store, d: datetime) -> dict[str, float] | None:
    """ARR per account: the sum over its subscriptions in force at ``d``."""
    subs = _subscriptions(store)
    if subs is None:
        return None
    rows = store.execute(_in_force(subs, d)).to_pylist()
    return {r["account_id"]: float(r["arr"]) for r in rows}


#: what :func:`account_list` adds to each scored row
FACTS = ("account_name", "arr_in_force", "renewal_date")
#: how :func:`account_list` can sort
SORTS = ("score", "arr", "renewal", "name")


def fact_table(store: Store, d: datetime) -> pa.Table:
    """One row per account (of the accounts table, or with a subscription in force at
    ``d``): ``account_id``, its name (accounts), the ARR in force at ``d`` and the
    renewal date (subscriptions), as :data:`FACTS`; ARR and renewal are null without a
    subscription in force (or without an ARR on it). (``healthscore score`` joins the
    same facts in its own query: :func:`listed_scores`.)

    Built with Arrow compute only: converting Python values to Arrow makes pyarrow
    import pandas, a large part of a short command's time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = store.execute(_names(store))
    subs = store.execute(_in_force(store.table("subscriptions"), d))
    kind = names.schema.field("account_id").type
    ids = pc.unique(
        pa.chunked_array([*names["account_id"].chunks, *subs["account_id"].chunks], kind)
    )

    def pick(table: pa.Table, column: str, typ: pa.DataType):
        at = pc.index_in(ids, value_set=table["account_id"])
        return pc.take(table[column], at).cast(typ)

    return pa.table(
        {
            "account_id": ids,
            "account_name": pick(names, "name", pa.string()),
            "arr_in_force": pick(subs, "arr", pa.float64()),
            "renewal_date": pick(subs, "renewal_date", pa.timestamp("us")),
        }
    )


def account_facts(store: Store, d: datetime) -> dict[str, dict]:
    """:func:`fact_table` as a dict: account id -> its :data:`FACTS`."""
    return {r.pop("account_id"): r for r in fact_table(store, d).to_pylist()}


def _sort_key(model: Model, sort: str) -> tuple[str | None, bool]:
    """The column the account list is ordered by for ``sort`` (None: ``name``, ordered
    in Python) and whether the largest value comes first."""
    if sort not in SORTS:
        raise HealthscoreError(f"`sort` {sort!r}: not one of {', '.join(SORTS)}")
    return {
        "score": ("score", model.highest_first),
        "arr": ("arr_in_force", True),
        "renewal": ("renewal_date", False),
        "name": (None, False),
    }[sort]


def listed_scores(store: Store, model: Model, d: datetime, plans: Snapshot, sort: str) -> pa.Table:
    """Every account's scores as of ``d`` (the rows of :meth:`Snapshot.scores`), each with
    its :data:`FACTS` (see :func:`fact_table`), in the order ``sort`` gives them (see
    :func:`account_list`; ``name``: by account id, which the list sorts in Python).

    One query, a plan of ``plans`` kept in the cache: the join of the facts and the order
    are its own, so a repeat ``healthscore score`` neither builds nor imports
    ``pyarrow.compute`` for them (Arrow's ``take``, ``sort_indices`` and ``cast`` do).
    The plan holds the order of every sort, the one asked for chosen by a parameter
    (``sort``): listing by another order compiles nothing again."""
    _sort_key(model, sort)  # a sort it knows, or a clear error

    def build(clock):
        from healthscore.store import parameter

        scores = plans.build_scores(clock)
        names = _names(store)
        subs = _in_force(store.table("subscriptions"), clock.at())
        facts = {
            "account_name": names["name"].cast("string"),
            "arr_in_force": subs.arr.cast("float64"),
            "renewal_date": subs.renewal_date.cast("timestamp"),
        }
        joined = scores.left_join(names, scores.account_id == names.account_id).left_join(
            subs, scores.account_id == subs.account_id
        )
        out = joined.select(
            *(scores[c] for c in scores.columns),
            **{k: v for k, v in facts.items() if k not in scores.columns},
        )
        # as Arrow's sort_indices ordered them: rows without the value last, a NaN just
        # before them whichever the direction (SQL sorts NaN above every number); ties by
        # account id. The keys of every sort, each NULL on every row (no order) unless
        # the parameter names its sort
        chosen = parameter("sort", "string")
        keys = []
        for name in SORTS:
            column, descending = _sort_key(model, name)
            if column is None:
                continue

            def only(v, name=name):
                return ibis.cases((chosen == name, v))

            value = out[column]
            if descending and value.type().is_floating():
                keys.append(ibis.asc(only(value.isnan())))
            keys.append(ibis.desc(only(value)) if descending else ibis.asc(only(value)))
        return out.order_by([*keys, ibis.asc(out.account_id)])

    tables = list(dict.fromkeys([*plans.tables, "accounts", "subscriptions"]))
    return plans.run("account list", build, d, tables=tables, values={"sort": sort})


def account_list(
    model: Model,
    listed: pa.Table,
    *,
    sort: str = "score",
    bands: list[str] | None = None,
    segment: str | None = None,
    csm: str | None = None,
    limit: int | None = None,
    left_out: pa.Table | None = None,
) -> pa.Table:
    """The scored accounts as a CS team reads them: the rows of :func:`listed_scores`
    (each with its name, ARR in force and renewal date, in the order of ``sort``), only
    those of ``bands`` (green/yellow/red), ``segment`` and ``csm`` (compared case- and
    space-insensitively), cut to ``limit`` rows. A ``segment`` or ``csm`` no account
    has is an error naming those there are; with ``left_out`` (the accounts left out,
    with their segment and CSM: :func:`with_segment_and_csm`) one that only an account
    left out has is not (:func:`left_out_list` lists it).

    ``sort``: ``score`` puts the end of the scorecard that needs attention first
    (lowest score for health, highest for a readiness scorecard such as expansion, see
    :attr:`Model.highest_first`), ``arr`` the largest ARR first, ``renewal`` the
    soonest renewal first (those three ordered by the query), ``name`` the account name
    A-Z (here). Rows without the value go last; ties are broken by account id.

    Returns
    -------
    pyarrow.Table
        ``listed``'s columns: the scores' columns plus :data:`FACTS`, in that order.
    """
    column, _ = _sort_key(model, sort)
    scores = listed if column is None else _ties_by_id(listed, column)
    keep = None  # the rows the filters keep, when one applies
    for col, wanted in (("band", bands), ("segment", segment), ("csm", csm)):
        if wanted is None:
            continue
        allowed = {_key(w) for w in ([wanted] if isinstance(wanted, str) else wanted)}
        values = scores[col].to_pylist()
        known = {_key(v): v for v in values if v is not None}
        if left_out is not None and col != "band":
            known = {_key(v): v for v in left_out[col].to_pylist() if v is not None} | known
        unknown = sorted(a for a in allowed if a not in known)
        if col != "band" and unknown:
            whose = "no scored account" if left_out is None else "no account, scored or left out,"
            raise HealthscoreError(
                f"`{col}` {wanted!r}: {whose} has it",
                hint=f"{col} values: " + ", ".join(sorted(map(str, known.values()))),
            )
        rows = range(len(values)) if keep is None else keep
        keep = [i for i in rows if _key(values[i]) in allowed]
    if sort == "name":  # casefolded, as Python compares text (Arrow has no casefold)
        names = scores["account_name"].to_pylist()
        ids = scores["account_id"].to_pylist()
        order = sorted(
            range(len(ids)) if keep is None else keep,
            key=lambda i: (names[i] is None, (names[i] or "").casefold(), ids[i]),
        )
        return _rows(scores, order[:limit])
    if keep is not None:  # in the query's order
        return _rows(scores, keep[:limit])
    return scores if limit is None else scores.slice(0, min(limit, scores.num_rows))


def with_segment_and_csm(store: Store, model: Model, left_out: pa.Table) -> pa.Table:
    """The accounts left out (``account_id, name, reason``: :func:`asof.left_out`) with
    the segment and CSM the accounts table gives them, as the scores have them: the
    segment from the model's ``segments.by`` column when it names one of the accounts
    table (else none: a segment given by a metric is not computed for an account left
    out), else ``segment``."""
    import pyarrow as pa

    by = model.spec.segments.by.removeprefix("accounts.") if model.spec.segments else "segment"
    acc = store.table("accounts")
    fields = {
        "segment": acc[by].cast("string") if by in acc.columns else ibis.null("string"),
        "csm": acc["csm"].cast("string") if "csm" in acc.columns else ibis.null("string"),
    }
    found = store.execute(acc.select("account_id", **fields))
    ids = found["account_id"].to_pylist()
    at = {a: i for i, a in enumerate(ids)}
    rows = [at.get(a) for a in left_out["account_id"].to_pylist()]
    out = left_out
    for name in fields:
        values = found[name].to_pylist()
        out = out.append_column(
            name, pa.array([None if i is None else values[i] for i in rows], pa.string())
        )
    return out


def left_out_list(
    left_out: pa.Table,
    *,
    bands: list[str] | None = None,
    segment: str | None = None,
    csm: str | None = None,
    limit: int | None = None,
) -> pa.Table:
    """The accounts left out (:func:`with_segment_and_csm`) that the filters of the
    account list keep: none with ``bands`` (an account left out has no score, so no
    band), only those of ``segment`` and ``csm`` (compared as :func:`account_list`
    does), at most ``limit`` (what the list of scored accounts left of its limit);
    its columns as they come."""
    keep = list(range(left_out.num_rows)) if bands is None else []
    for col, wanted in (("segment", segment), ("csm", csm)):
        if wanted is not None:
            values = left_out[col].to_pylist()
            keep = [i for i in keep if _key(values[i]) == _key(wanted)]
    return _rows(left_out, keep[:limit])


def _ties_by_id(rows: pa.Table, column: str) -> pa.Table:
    """``rows``, ordered by ``column``, with the rows that tie on it by account id as
    Python and Arrow compare text (by code point): a database orders text by its
    collation, which on PostgreSQL may be a language's (``a1`` before ``a-2``). As they
    came when they already are (DuckDB's text order is by byte: the same)."""
    values = rows[column].to_pylist()
    ids = rows["account_id"].to_pylist()

    def tie(a, b) -> bool:  # the same value, or both missing, or both NaN
        return a == b or (a is None and b is None) or (a != a and b != b)

    pairs = zip(values, values[1:], ids, ids[1:], strict=False)
    if all(i < j or not tie(a, b) for a, b, i, j in pairs):
        return rows
    order, start = [], 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or not tie(values[start], values[end]):
            order += sorted(range(start, end), key=ids.__getitem__)
            start = end
    return _rows(rows, order)


def _rows(table: pa.Table, positions: list[int]) -> pa.Table:
    """``table``'s rows at ``positions``: the index array is made from the integers'
    buffer, since pyarrow's conversion of a Python list imports pandas."""
    from array import array

    import pyarrow as pa

    buffer = pa.py_buffer(array("q", positions))
    return table.take(pa.Array.from_buffers(pa.int64(), len(positions), [None, buffer]))


def _key(v) -> str | None:
    return None if v is None else " ".join(str(v).split()).casefold()


def _band_rows(live: list[dict], arr: dict[str, float] | None) -> list[BandRow]:
    n = len(live)
    out = []
    for band in BANDS:
        rows = [r for r in live if r["band"] == band]
        if band is None and not rows:
            continue
        total = sum(arr.get(r["account_id"], 0.0) for r in rows) if arr is not None else None
        out.append(BandRow(band, len(rows), len(rows) / n if n else 0.0, total))
    return out


def _breakdown(live: list[dict], key: str, arr: dict[str, float] | None) -> list[Breakdown]:
    groups: dict[str | None, Breakdown] = {}
    for r in live:
        b = groups.setdefault(r[key], Breakdown(r[key]))
        b.accounts += 1
        band = r["band"] if r["band"] in ("green", "yellow", "red") else "no_score"
        setattr(b, band, getattr(b, band) + 1)
        if r["score"] is not None:
            b.score_sum += r["score"]
            b.scored += 1
        a = (arr or {}).get(r["account_id"], 0.0)
        b.arr += a
        if r["band"] == "red":
            b.arr_red += a
    return sorted(groups.values(), key=lambda b: (-b.arr_red, -b.red, str(b.key)))


def _history(store: Store, model: Model, d: datetime, data: ReportData) -> list[dict] | None:
    """Band counts per stored date and the trend classes; None when nothing is stored."""
    from healthscore.engine.history import SCORES
    from healthscore.engine.metrics import in_force
    from healthscore.engine.snapshot import Snapshot

    if SCORES not in store.list_tables():
        data.warnings.append(NO_HISTORY)
        return None
    s = store.stored(SCORES)
    mine = s.filter(
        (s.model_version == model.version),
        (s.scorecard == model.scorecard_name),
        s.as_of <= ibis.literal(d, type="timestamp"),
    )
    dates = sorted(store.execute(mine.select("as_of").distinct())["as_of"].to_pylist())
    if not dates:
        others = store.execute(s.select("model_version").distinct())["model_version"]
        hint = (
            f" (stored history is for other model versions: "
            f"{', '.join(sorted(v[:12] for v in others.to_pylist()))})"
            if len(others)
            else ""
        )
        data.warnings.append(
            f"{NO_HISTORY} for model {model.version[:12]} up to {d:%Y-%m-%d}{hint}, e.g. "
            f"healthscore history --from <date> --to {d:%Y-%m-%d} --every 1w"
        )
        return None
    last = dates[-1]
    data.history_dates = dates
    data.history_as_of = last
    # history is stored at midnight: a portfolio later that day (the service's as-of
    # is now) reads that day's row, which is as fresh as stored history gets
    if last.date() < d.date():
        data.warnings.append(
            f"stored history ends on {last:%Y-%m-%d}, before the as-of date {d:%Y-%m-%d}: "
            f"movers and trends are as of {last:%Y-%m-%d} (healthscore history --to "
            f"{d:%Y-%m-%d} brings it up to date)"
        )
    counts = mine.group_by(["as_of", "band"]).aggregate(accounts=mine.count())
    arr: dict[tuple, float] = {}
    subs = _subscriptions(store)
    if subs is not None:
        keys = mine.select("account_id", "as_of", "band")
        subs = subs.select(
            sub_account=subs.account_id,
            start_date=subs.start_date,
            end_date=subs.end_date,
            arr=subs.arr,
        )
        j = keys.inner_join(
            subs, [keys.account_id == subs.sub_account, in_force(subs, "subscriptions", keys.as_of)]
        )
        per = j.group_by(["as_of", "band"]).aggregate(arr=j.arr.sum())
        arr = {(r["as_of"], r["band"]): float(r["arr"]) for r in store.execute(per).to_pylist()}
    rows = store.execute(counts).to_pylist()
    data.band_history = sorted(
        (
            (
                r["as_of"],
                r["band"],
                int(r["accounts"]),
                arr.get((r["as_of"], r["band"]), 0.0) if subs is not None else None,
            )
            for r in rows
        ),
        key=lambda t: (t[0], BANDS.index(t[1]) if t[1] in BANDS else len(BANDS)),
    )
    return Snapshot(store, model).trends(last).to_pylist()


def _movers(store, model, trends, accounts, top, data: ReportData) -> list[Mover]:
    """The largest score changes over the rapid-decline window, each with why it moved."""
    moved = [r for r in trends if r["change"] is not None and r["score_then"] is not None]
    moved.sort(key=lambda r: (-abs(r["change"]), r["account_id"]))
    moved = moved[:top]
    changes = _changes(store, model, data.history_as_of, moved)
    out = []
    for r in moved:
        acc = accounts.get(r["account_id"], {})
        try:
            change = changes.get(r["account_id"]) or asof.explain_change(
                store, model, r["account_id"], data.history_as_of, r["then_as_of"]
            )
            why = change.summary().removeprefix(f"{r['account_id']} ")
        except HealthscoreError as e:
            why = f"not explained: {e}"
        out.append(
            Mover(
                account_id=r["account_id"],
                name=acc.get("name"),
                segment=acc.get("segment"),
                csm=acc.get("csm"),
                then_as_of=r["then_as_of"],
                score_then=r["score_then"],
                score_now=r["score_now"],
                band_now=r["band"],
                explanation=why,
            )
        )
    return out


def _changes(store, model, now: datetime, moved: list[dict]) -> dict[str, Change]:
    """What ``explain_change`` gives per mover, from the stored history (what was seen then).

    Two reads for all movers; a pair not stored is left out, and
    :func:`healthscore.engine.asof.explain_change` then scores it live or says why it cannot.
    """
    from healthscore.engine.explain import decompose
    from healthscore.engine.history import stored_explanations

    ids = [r["account_id"] for r in moved]
    if not ids:
        return {}
    seen = stored_explanations(store, model, ids, {now, *(r["then_as_of"] for r in moved)})
    out = {}
    for r in moved:
        acc = r["account_id"]
        before, after = seen.get((acc, r["then_as_of"])), seen.get((acc, now))
        if before is not None and after is not None:
            out[acc] = decompose(before, after)
    return out


def _candidates(store, model, d, live, trends, accounts, arr, top, data: ReportData) -> None:
    """Green on the ``expansion`` scorecard if the model has one, else ``stable_high``."""
    if EXPANSION in model.scorecard_names():
        card = model.scorecard(EXPANSION)
        data.candidates_source = "green on the expansion scorecard"
        try:
            rows = [r for r in asof.score(store, card, d).to_pylist() if r["band"] == "green"]
        except HealthscoreError as e:
            data.warnings.append(f"expansion scorecard not scored: {e}")
            return
    else:
        card = model
        data.candidates_source = "stable_high trend"
        if trends is None:
            return
        high = {r["account_id"] for r in trends if r["trend"] == "stable_high"}
        rows = [r for r in live if r["account_id"] in high]
    health = {r["account_id"]: r for r in live}
    found = []
    for r in rows:
        acc = accounts.get(r["account_id"], {})
        h = health.get(r["account_id"], {})
        found.append(
            Candidate(
                account_id=r["account_id"],
                name=acc.get("name"),
                segment=r.get("segment"),
                csm=r.get("csm"),
                arr=arr.get(r["account_id"], 0.0) if arr is not None else None,
                score=r["score"],
                health_score=h.get("score"),
                health_band=h.get("band"),
                why=_top_contributions(card, r),
            )
        )
    found.sort(key=lambda c: (-(c.arr or 0.0), -(c.score or 0.0), c.account_id))
    data.candidates_total = len(found)
    data.candidates = found[:top]


def _top_contributions(
    model: Model, row: dict, n: int = 3
) -> list[tuple[str, object, float, str | None]]:
    """The ``n`` metrics that earn the most points: (label, raw value, points, unit)."""
    from healthscore.engine.scoring import CONTRIB

    lines = [(m, row.get(m), row.get(m + CONTRIB) or 0.0) for _, m, _ in model.scored_metrics()]
    lines.sort(key=lambda t: (-t[2], t[0]))
    return [
        (model.metric_label(m), raw, pts, model.metric_unit(m))
        for m, raw, pts in lines[:n]
        if pts > 0
    ]
