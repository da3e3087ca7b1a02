"""Many as-of dates in one expression give exactly what one date at a time gives.

Every comparison runs both paths on a real DuckDB store: ``MetricBuilder.build(d)`` (and
``api.score``) date by date, compiled once with the date as a parameter (see
``_one_date``), against ``TimelineBuilder.build(dates)`` (and
``timeline.score_dates``), over dates before accounts exist, around ticket closes,
subscription ends and renewals, flags raised and resolved, with ``change_vs``, rules and
every metric kind of the model language.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

import healthscore as hs
from fixtures import memory_store, postgres_store
from healthscore import api
from healthscore.demo import book as demo
from healthscore.engine import history, timeline
from healthscore.engine.metrics import MetricBuilder
from healthscore.engine.plan import ParamClock, ScorePlan
from healthscore.store import connect

DEFINITIONS = "tests/models/valid/definitions.yaml"
END = datetime(2025, 1, 1)

# the fixture's turning points: A3 created 2024-12-15, S1 ends / S2 starts 2025-01-01,
# T1 open 2024-12-20 .. 2025-01-05, T3 opened 2025-01-02, F2 2024-10-01 .. 2024-11-01,
# F1 from 2024-12-01, A4 created 2025-02-01, A5's contract ended 2024-06-01
FIXTURE_DATES = [
    datetime(2022, 12, 31),
    datetime(2023, 1, 2),
    datetime(2024, 5, 31),
    datetime(2024, 6, 1),
    datetime(2024, 6, 2),
    datetime(2024, 10, 1),
    datetime(2024, 10, 2),
    datetime(2024, 11, 1),
    datetime(2024, 11, 2),
    datetime(2024, 12, 1),
    datetime(2024, 12, 2),
    datetime(2024, 12, 15),
    datetime(2024, 12, 16),
    datetime(2024, 12, 20),
    datetime(2024, 12, 21),
    datetime(2025, 1, 1),
    datetime(2025, 1, 2),
    datetime(2025, 1, 3),
    datetime(2025, 1, 5),
    datetime(2025, 1, 6),
    datetime(2025, 2, 2),
    datetime(2025, 3, 31),
]

# every metric kind: windowed (count, sum, min, max, avg, median, last, first,
# count_distinct in days, weeks and months, with `where`), change_vs previous and by a
# duration, all history (max, min, count, sum, count_distinct, last), interval tables in
# force (date and timestamp rules), masked timestamps in filters and arguments, the date
# inside an aggregate's argument, a declared account timestamp, flags in formulas, rules
# and the population filter
KINDS = """
name: every kind
population: "segment <> 'internal' AND NOT has_flag('paused')"
columns:
  accounts: {churn_notice_at: timestamp}
metrics:
  seats: {from: subscriptions, aggregate: sum(seats)}
  days_to_renewal: {from: subscriptions, aggregate: days_until(min(end_date))}
  arr_change_90d: {from: subscriptions, aggregate: sum(arr), change_vs: 90d}
  plans: {from: subscriptions, aggregate: count_distinct(plan)}
  events_30d: {from: usage_events, aggregate: count(), window: 30d}
  qty_avg_2w: {from: usage_events, aggregate: avg(quantity), window: 2w}
  qty_spread:
    from: usage_events
    aggregate: max(quantity) - min(quantity) + 0 * count()
    window: 30d
  last_event: {from: usage_events, aggregate: last(event), window: 30d}
  first_feature:
    from: usage_events
    where: "event <> 'login'"
    aggregate: first(event)
    window: 1mo
  users_1mo: {from: usage_events, aggregate: count_distinct(user_id), window: 1mo}
  users_change:
    from: usage_events
    aggregate: count_distinct(user_id)
    window: 2w
    change_vs: previous
  users_change_mo:
    from: usage_events
    aggregate: count(distinct user_id)
    window: 14d
    change_vs: 1mo
  events_change_mo:
    from: usage_events
    aggregate: count()
    window: 1mo
    change_vs: previous
    if_previous_zero: 1.0
  qty_change:
    from: usage_events
    where: "quantity > 0"
    aggregate: sum(quantity)
    window: 3w
    change_vs: 10d
  days_since_last: {from: usage_events, aggregate: days_since(max(ts)), fill: 365}
  days_since_first: {from: usage_events, aggregate: days_since(min(ts))}
  events_ever: {from: usage_events, aggregate: count() + sum(quantity) / 100}
  events_ever_change: {from: usage_events, aggregate: count(), change_vs: 30d}
  users_ever: {from: usage_events, aggregate: count_distinct(user_id)}
  last_nps_ever: {from: surveys, where: "kind = 'nps'", aggregate: last(score)}
  median_survey_180d: {from: surveys, aggregate: median(score), window: 180d}
  recent_age: {from: usage_events, aggregate: avg(days_since(ts)), window: 7d}
  open_tickets: {from: tickets, aggregate: count()}
  open_escalated: {from: tickets, where: "escalated_at IS NOT NULL", aggregate: count()}
  resolution_hours_90d:
    from: tickets
    time: closed_at
    aggregate: median(hours_between(opened_at, closed_at))
    window: 90d
  tickets_30d: {from: tickets, aggregate: count(), window: 30d}
  escalated_30d: {from: tickets, where: "escalated_at IS NOT NULL", aggregate: count(), window: 30d}
  closed_30d: {from: tickets, aggregate: count(closed_at), window: 30d}
  late_invoices_90d:
    from: invoices
    where: "paid_at IS NULL OR paid_at > due_at"
    aggregate: count()
    window: 90d
  unpaid_amount: {from: invoices, where: "paid_at IS NULL", aggregate: sum(amount)}
  touch_change: {from: touchpoints, aggregate: count(), window: 30d, change_vs: 60d}
  exec_touch_90d: {from: touchpoints, where: executive, aggregate: count(), window: 90d}
  flags_open: {from: flags, aggregate: count()}
  notice_days: {formula: "days_since(churn_notice_at)"}
  champion_gone: {formula: "CASE WHEN has_flag('champion_left') THEN 1 ELSE 0 END"}
  activity: {formula: "events_30d / greatest(seats, 1)"}
  plan_segment: {column: segment}
pillars:
  usage:
    weight: 60
    metrics:
      activity: {weight: 2, bad: 0, good: 5}
      users_change: {weight: 1, bad: -0.5, good: 0.5, missing: reweight}
      days_since_last: {weight: 1, bad: 30, good: 1}
  support:
    weight: 40
    metrics:
      open_tickets: {weight: 1, bad: 5, good: 0}
      late_invoices_90d: {weight: 1, bad: 2, good: 0}
      last_nps_ever: {weight: 1, bad: 0, good: 10, missing: {neutral: 50}}
segments:
  by: segment
  weights:
    enterprise: {usage: 30, support: 70}
rules:
  champion:
    when: "has_flag('champion_left')"
    add: -10
  noticed:
    when: "notice_days IS NOT NULL"
    cap: 40
  busy:
    when: "open_tickets >= 3"
    band: red
"""


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _assert_same(many: pa.Table, one: list[dict]) -> None:
    key = lambda r: (r["account_id"], r["as_of"])  # noqa: E731
    got = {key(r): r for r in many.to_pylist()}
    want = {key(r): r for r in one}
    assert got.keys() == want.keys()
    assert set(many.column_names) == set(one[0]) if one else True
    bad = [
        (k, c, got[k][c], v)
        for k, row in want.items()
        for c, v in row.items()
        if not _close(got[k][c], v)
    ]
    assert not bad, bad[:10]


# The one-date-at-a-time side: the one-date builders (``MetricBuilder.build`` and the
# scoring of ``api.score``) with their dates as parameters, as ``healthscore score`` and
# the rescorer run them (engine/plan.py, engine/snapshot.py): compiled once per store,
# model and kind, then run at each date with its dates bound. The expression is the one
# ``api.score`` compiles at a single date, with parameters in place of the date literals
# (the same Python date arithmetic computes their values), so it stays independent of
# the timeline builder; each _compare also checks its rows against ``api.score`` itself
# at the last date. A compile per date (~0.5-1 s CPU) was most of these tests' time.
_PLANS: dict[tuple, tuple] = {}


def _one_date(store, model, kind: str, ids=None):
    """A function: date -> the rows of the one-date path (``kind`` "raw" or "score")."""
    key = (id(store), model.spec.model_dump_json(), kind, tuple(ids or ()))
    if key not in _PLANS:
        if kind == "score":
            plan = ScorePlan(model)
            run = lambda d: plan.run(store, d, ids).to_pylist()  # noqa: E731
        else:
            clock = ParamClock()
            builder = MetricBuilder(model, store.tables(api.tables_needed(model)))
            prepared = store.prepare(builder.build(clock, ids))
            run = lambda d: store.run_prepared(prepared, clock.values(d)).to_pylist()  # noqa: E731
        _PLANS[key] = (store, run)  # holding the store keeps its id unique
    return _PLANS[key][1]


_SCORED: dict[tuple, tuple] = {}


def _api_score(store, model, d):
    """``api.score(store, model, d)``, once per store, model and date: most tests of the
    KINDS model end at END on the demo store (the tests only read the result)."""
    key = (id(store), model.spec.model_dump_json(), d)
    if key not in _SCORED:
        _SCORED[key] = (store, api.score(store, model, d))  # the store held: its id stays unique
    return _SCORED[key][1]


def _raw_per_date(store, model, dates, ids=None) -> list[dict]:
    run = _one_date(store, model, "raw", ids)
    return [r for d in dates for r in run(d)]


def _compare(store, model, dates, raw: bool = True) -> None:
    """Raw metrics (with ``__covered`` and rule columns) and scores, date by date."""
    if raw:
        many = store.execute(timeline.raw_expr(store, model, dates))
        _assert_same(many, _raw_per_date(store, model, dates))
    scores = timeline.score_dates(store, model, dates)
    run = _one_date(store, model, "score")
    one = [r for d in dates for r in run(d)]
    _assert_same(scores, one)
    # the parameterised one-date plan is api.score's own expression: at the last date,
    # exactly its rows and columns
    last = _api_score(store, model, dates[-1])
    assert scores.column_names == last.column_names
    _assert_same(last, run(dates[-1]))


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """A small demo book of business in a DuckDB file, with a declared timestamp column
    on accounts, an internal account, a paused flag and a few hand-placed rows."""
    tables = demo.generate(accounts=30, months=7, seed=11, end=END)
    acc = tables["accounts"]
    n = acc.num_rows
    notice = [None] * n
    notice[1] = datetime(2024, 11, 20)
    notice[2] = datetime(2025, 3, 1)  # after every date: never known
    acc = acc.append_column("churn_notice_at", pa.array(notice, pa.timestamp("us")))
    seg = acc["segment"].to_pylist()
    seg[3] = "internal"
    tables["accounts"] = acc.set_column(acc.schema.get_field_index("segment"), "segment", [seg])
    first = acc["account_id"][0].as_py()
    extra_flags = pa.Table.from_pylist(
        [
            {
                "flag_id": "FX1",
                "account_id": first,
                "ts": datetime(2024, 10, 7),
                "kind": "paused",
                "note": None,
                "author": "t",
                "resolved_at": datetime(2024, 10, 28),
            },
            {
                "flag_id": "FX2",
                "account_id": first,
                "ts": datetime(2024, 9, 9),
                "kind": "champion_left",
                "note": None,
                "author": "t",
                "resolved_at": datetime(2024, 12, 2),
            },
        ],
        schema=tables["flags"].schema,
    )
    tables["flags"] = pa.concat_tables([tables["flags"], extra_flags])
    path = tmp_path_factory.mktemp("timeline") / "demo.duckdb"
    store = connect(path)
    for name, t in tables.items():
        store.load(name, t)
    yield store
    store.con.disconnect()


def _weekly(end: datetime, n: int, step_days: int = 7) -> list[datetime]:
    return [end - timedelta(days=step_days * k) for k in range(n)][::-1]


@pytest.mark.parametrize("model_path", [None, DEFINITIONS])
def test_fixture_dates_equal_one_date_at_a_time(store, model_path):
    _compare(store, hs.load_model(model_path), FIXTURE_DATES, raw=model_path is not None)


def test_last_and_first_of_a_column_with_nulls_agree_with_one_date_at_a_time():
    """T1 (the latest ticket) has no CSAT, T2 has 4: last() is NULL, not T2's 4, and a
    NULL on the latest event of a day is that day's last value too."""
    late_null = {
        "event_id": "E1-late",
        "account_id": "A1",
        "user_id": "u1",
        "event": "login",
        "ts": datetime(2024, 12, 30, 18),
        "quantity": None,
    }
    early = {**late_null, "event_id": "E1-early", "ts": datetime(2024, 12, 30, 9), "quantity": 7.0}
    store = memory_store(usage_events=[early, late_null])
    model = hs.load_model_text(
        """
metrics:
  last_csat_90d: {from: tickets, aggregate: last(csat), window: 90d}
  first_csat_90d: {from: tickets, aggregate: first(csat), window: 90d}
  last_qty_7d: {from: usage_events, aggregate: last(quantity), window: 7d}
pillars:
  p:
    weight: 1
    metrics:
      last_csat_90d: {weight: 1, bad: 1, good: 5, missing: neutral}
      last_qty_7d: {weight: 1, bad: 0, good: 10, missing: neutral}
"""
    )
    dates = _weekly(END, 6)
    _compare(store, model, dates)
    at_end = {r["account_id"]: r for r in _api_score(store, model, END).to_pylist()}
    assert at_end["A1"]["last_csat_90d"] is None and at_end["A1"]["last_qty_7d"] is None


def test_every_metric_kind_on_demo_data_weekly(demo_store):
    model = hs.load_model_text(KINDS)
    _compare(demo_store, model, _weekly(END, 14) + [END + timedelta(days=30)])


def test_every_metric_kind_at_irregular_dates_and_times_of_day(demo_store):
    """Dates that are not midnights take the exact path; irregular steps too."""
    model = hs.load_model_text(KINDS)
    dates = [
        datetime(2024, 6, 10),
        datetime(2024, 9, 3, 13, 30),
        datetime(2024, 10, 31),
        datetime(2024, 11, 20, 0, 0, 1),
        datetime(2024, 12, 31, 23, 59),
        END,
    ]
    _compare(demo_store, model, dates)


@pytest.mark.parametrize("model_path", [None, DEFINITIONS])
def test_shipped_models_on_demo_data(demo_store, model_path):
    _compare(demo_store, hs.load_model(model_path), _weekly(END, 8, 9), raw=False)


def test_account_ids_narrow_every_date(demo_store):
    model = hs.load_model_text(KINDS)
    ids = demo_store.table("accounts").account_id.to_pyarrow().to_pylist()[:3]
    dates = _weekly(END, 6)
    many = demo_store.execute(timeline.raw_expr(demo_store, model, dates, ids))
    assert set(many["account_id"].to_pylist()) <= set(ids)
    _assert_same(many, _raw_per_date(demo_store, model, dates, ids))


def test_history_backfill_in_chunks_stores_what_one_date_at_a_time_stores(demo_store):
    model = hs.load_model()
    dates = _weekly(END, 5)
    stores = []
    for chunk_rows in (10**6, 50):  # all dates in one pass; one or two dates per pass
        s = memory_store()
        for name in ("accounts", "subscriptions", "usage_events", "tickets", "flags"):
            s.load(name, demo_store.table(name).to_pyarrow())
        result = history.backfill(
            s,
            model,
            dates,
            lambda d, s=s: api.score(s, model, d),
            score_dates=lambda ds, s=s: timeline.score_dates(s, model, ds),
            chunk_rows=chunk_rows,
        )
        assert result.computed == dates
        stores.append(s)
    # and one date at a time, through the per-date scorer (api.score's expression with
    # its dates as parameters, compiled once: see _one_date)
    s = memory_store()
    for name in ("accounts", "subscriptions", "usage_events", "tickets", "flags"):
        s.load(name, demo_store.table(name).to_pyarrow())
    plan = ScorePlan(model)
    history.backfill(s, model, dates, lambda d: plan.run(s, d))
    stores.append(s)

    def rows(st, table, key):
        t = st.con.table(table).drop("computed_at") if table == history.SCORES else None
        t = t if t is not None else st.con.table(table)
        return sorted(t.to_pyarrow().to_pylist(), key=key)

    for table, key in (
        (history.SCORES, lambda r: (r["account_id"], r["as_of"])),
        (history.LINES, lambda r: (r["account_id"], r["as_of"], r["kind"], r["name"])),
    ):
        first = rows(stores[-1], table, key)
        assert first
        for other in stores[:-1]:
            got = rows(other, table, key)
            assert len(got) == len(first)
            for a, b in zip(got, first, strict=True):
                assert all(_close(a[c], b[c]) for c in b), (a, b)


def test_api_history_computes_only_missing_dates_with_the_shared_pass(demo_store):
    model = hs.load_model()
    s = memory_store()
    for name in ("accounts", "subscriptions", "usage_events", "invoices", "surveys"):
        s.load(name, demo_store.table(name).to_pyarrow())
    first = hs.api.history(s, model, END - timedelta(weeks=2), END, "1w")
    assert len(first.computed) == 3
    again = hs.api.history(s, model, END - timedelta(weeks=4), END, "1w")
    assert [d for d in again.computed] == [END - timedelta(weeks=4), END - timedelta(weeks=3)]
    assert len(again.skipped) == 3
    t = s.con.table(history.SCORES)
    stored = t.filter(t.as_of == END - timedelta(weeks=3)).to_pyarrow().to_pylist()
    live = {r["account_id"]: r for r in api.score(s, model, END - timedelta(weeks=3)).to_pylist()}
    assert {r["account_id"] for r in stored} == set(live)
    for r in stored:
        assert _close(r["score"], live[r["account_id"]]["score"])
        assert r["band"] == live[r["account_id"]]["band"]


# --- evenly spaced dates: date indexes by arithmetic (timeline._Grid) -------------------


@pytest.mark.parametrize(
    ("step_days", "n"),
    [(1, 12), (7, 14), (9, 6), (30, 3)],
    ids=["daily", "weekly", "every-9-days", "every-30-days"],
)
def test_every_metric_kind_on_evenly_spaced_dates(demo_store, step_days, n):
    """Evenly spaced midnights take the arithmetic path (ranges of date indexes, bit
    masks for distinct values) and agree with one date at a time."""
    model = hs.load_model_text(KINDS)
    dates = _weekly(END, n, step_days)
    assert timeline._grid(dates) == timeline._Grid(dates[0], step_days, n)
    _compare(demo_store, model, dates)


def test_evenly_spaced_dates_from_before_any_data(demo_store):
    """A grid that starts before the first account and event (indexes clamp at 0)."""
    model = hs.load_model_text(KINDS)
    _compare(demo_store, model, _weekly(END, 5, 61))


# 70 daily dates: more than one 62-bit mask per value on the arithmetic path
DAILY_70 = _weekly(END, 70, 1)
_EXACT: dict[tuple, tuple] = {}


def _exact_daily_70(store, model) -> list[dict]:
    """The exact path's rows (date-table joins, no masks) at :data:`DAILY_70` on the
    DuckDB ``store``, built, compiled and run once per store and model: the bit-mask test
    and the PostgreSQL test both compare against them (the tests only read them)."""
    key = (id(store), model.spec.model_dump_json())
    if key not in _EXACT:
        tables = store.tables(api.tables_needed(model))
        exact = timeline.TimelineBuilder(model, tables, arithmetic=False).build(DAILY_70)
        _EXACT[key] = (store, store.execute(exact).to_pylist())  # the store held: its id stays
    return _EXACT[key][1]


def test_one_date_and_more_dates_than_one_bit_mask(demo_store):
    """One date is a grid of one; 70 daily dates need two 62-bit masks per value."""
    model = hs.load_model_text(KINDS)
    _compare(demo_store, model, [END])
    tables = demo_store.tables(api.tables_needed(model))
    fast = demo_store.execute(timeline.TimelineBuilder(model, tables).build(DAILY_70))
    _assert_same(fast, _exact_daily_70(demo_store, model))


def test_grid_only_for_evenly_spaced_midnights():
    d = datetime(2024, 3, 1)
    assert timeline._grid([d]) == timeline._Grid(d, 1, 1)
    assert timeline._grid([d, d + timedelta(days=2), d + timedelta(days=4)]).step == 2
    assert timeline._grid([d, d + timedelta(days=2), d + timedelta(days=5)]) is None
    assert timeline._grid([d, d + timedelta(hours=36)]) is None
    assert timeline._grid([d + timedelta(hours=1), d + timedelta(days=1, hours=1)]) is None


def test_arithmetic_path_replaces_range_joins(demo_store):
    """Weekly dates: window and history aggregates fan out with range(); only the
    calendar-month windows and the exact path still join the dates table."""
    model = hs.load_model_text(KINDS)
    tables = demo_store.tables(api.tables_needed(model))
    dates = _weekly(END, 8)
    fast = demo_store.compile(timeline.TimelineBuilder(model, tables).build(dates))
    slow = demo_store.compile(
        timeline.TimelineBuilder(model, tables, arithmetic=False).build(dates)
    )
    assert "RANGE(" in fast.upper() and "BIT_OR" in fast.upper()
    assert "BIT_OR" not in slow.upper()
    # the exact path's SQL compiled above, run as it is (not built and compiled again)
    _assert_same(
        demo_store.execute(timeline.raw_expr(demo_store, model, dates)),
        demo_store.execute_sql(slow).to_pylist(),
    )


def test_arithmetic_path_on_postgres(demo_store):
    """Date ranges, bit masks and day indexes compile and agree on PostgreSQL too (runs
    when ``HEALTHSCORE_TEST_PG`` names a server, as in tests/test_backends.py)."""
    with postgres_store() as pg:
        model = hs.load_model_text(KINDS)
        for table in api.tables_needed(model):
            pg.load(table, demo_store.table(table).to_pyarrow())
        dates = _weekly(END, 10)  # one bit mask: against one date at a time on DuckDB
        _assert_same(
            pg.execute(timeline.raw_expr(pg, model, dates)),
            _raw_per_date(demo_store, model, dates),
        )
        # two bit masks: against DuckDB's exact path (date-table joins, no masks), which
        # agrees with one date at a time above and with the masks at the same 70 daily
        # dates (test_one_date_and_more_dates_than_one_bit_mask, which shares its rows);
        # 70 per-date runs would cost far more
        _assert_same(
            pg.execute(timeline.raw_expr(pg, model, DAILY_70)),
            _exact_daily_70(demo_store, model),
        )


def test_a_plan_of_a_few_accounts_scores_them_as_the_plan_of_everyone(demo_store):
    # the service's micro-batches run the plan with their accounts bound: the same rows,
    # to the bit, as the plan of everyone and as api.score of those accounts
    model = hs.load_model_text(KINDS)
    ids = sorted(demo_store.table("accounts").account_id.to_pyarrow().to_pylist())[:5]
    few, everyone = _one_date(demo_store, model, "score", ids), ScorePlan(model)
    for d in _weekly(END, 4):
        rows = [r for r in everyone.run(demo_store, d).to_pylist() if r["account_id"] in ids]
        assert rows
        assert few(d) == rows
        assert api.score(demo_store, model, d, ids).to_pylist() == rows
