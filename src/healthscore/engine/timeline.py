"""Raw metrics of every account at many as-of dates, in one expression that shares work.

Place in the flow: beside ``metrics``; :func:`healthscore.engine.asof.backfill` uses it
to store many dates of history at once. :meth:`TimelineBuilder.build` gives, for a list of dates,
the rows ``MetricBuilder(model, tables).build(d)`` gives for each date ``d`` (same columns,
same values), stacked, each with its ``as_of``. ``scoring.score_metrics`` then scores them
row by row.

How work is shared across dates (``D`` below is a column of a small table of dates):

- **Population**: accounts crossed with the dates (``created_at < D``), subscriptions and
  flags joined to the dates they are known or in force at, declared timestamps masked
  per date, then the model's ``population:`` filter with ``D`` as a column.
- **Windowed aggregates whose reductions add up day by day** (count, sum, min, max, avg,
  last, first; ``where`` and arguments that do not read a timestamp masked at ``D``):
  one pass over the table reduces per account and day; each day row is fanned out only to
  the dates whose window (or previous window, for ``change_vs``) covers it, and the day
  partials are combined per (account, date). When every date is a midnight a row is in a
  window exactly when its day is, so this is exact.
- **count_distinct over a window**: distinct (account, value, day); each counts at the
  dates after it until the window has passed or the value is seen again (those spans never
  overlap, so counting rows counts values). Calendar-month windows fan the distinct day
  rows out instead.
- **Aggregates over all history** (``days_since(max(ts))``: count, sum, min, max): per
  account and day, running totals, and each date takes the last day before it (the day
  row whose ``[day, next day)`` span holds it).
- **Evenly spaced midnights** (the usual daily or weekly backfill, ``D_k = D_0 + k * step``
  days) with windows and lags in days or weeks: which dates a day serves is arithmetic
  (:class:`_Grid`): a day ``e`` days after ``D_0`` is in the window ``[D_k - L - W, D_k - L)``
  exactly when ``L < k * step - e <= L + W``, one range of date indexes ``k``; day rows are
  fanned out with ``unnest(range(lo, hi))`` and the results keyed by ``k``, no range join.
  count_distinct ORs each row's range into bit masks per (account, value) (62 dates per
  64-bit mask), so a value is one row however often it was seen; the row is fanned out to
  the dates whose bit is set. All-history aggregates reduce per account and first date
  after the day (instead of per day) before the running totals.
- **Everything else** (interval tables read as in force at ``D``, medians, reductions that
  read a masked timestamp such as ``paid_at``, dates that are not midnights): the exact
  path. Raw rows are fanned out to the dates that may need them and the per-date
  conditions of :class:`healthscore.engine.metrics.MetricBuilder` are evaluated with ``D`` as a
  column, reduction by reduction.

Then :meth:`MetricBuilder.finish` combines the reductions with ``D = as_of`` as for one
date. Dates can be given in chunks (see :func:`score_dates`) to bound memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from datetime import time as dtime

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pyarrow as pa

from healthscore import expressions as ex
from healthscore.core.tables import TABLES
from healthscore.core.time import parse_as_of, parse_duration, shift
from healthscore.engine.inputs import check_scorable, empty_tables, tables_needed
from healthscore.engine.metrics import (
    MetricBuilder,
    _columns_of,
    _flag_col,
    _flag_kind,
    _Group,
    _groups,
    _masked_columns,
    in_force,
    lag_of,
    shifted_name,
)
from healthscore.engine.scoring import score_metrics
from healthscore.engine.snapshot import Snapshot
from healthscore.model import MetricSpec, Model
from healthscore.store import parameter

AS_OF = "as_of"
DAY = "__day"
KIDX = "__kidx"  # index of the date in an evenly spaced list (see _Grid)
_FAR = datetime(9999, 1, 1)
_SENTINEL = datetime(1111, 11, 11, 11, 11, 11)  # stands for the date in plain reductions

# reductions that combine from per-day partials, and how
_BY_DAY = {
    ops.CountStar: "sum",
    ops.Count: "sum",
    ops.Sum: "sum",
    ops.Min: "min",
    ops.Max: "max",
    ops.Mean: "mean",
    ops.ArgMax: "last",
    ops.ArgMin: "first",
    ops.CountDistinct: "distinct",
}
# ... and from running totals over all days before the date
_CUMULATIVE = {"sum", "min", "max"}


def _days_upper(duration: str | None) -> int:
    """An upper bound of a duration in days (a calendar month counts 31)."""
    if not duration:
        return 0
    n, unit = parse_duration(duration)
    return n * {"d": 1, "w": 7, "mo": 31}[unit]


def _fixed_days(duration: str | None) -> int | None:
    if not duration:
        return 0
    n, unit = parse_duration(duration)
    return None if unit == "mo" else n * (7 if unit == "w" else 1)


@dataclass(frozen=True)
class _Grid:
    """Evenly spaced midnights ``D_k = first + k * step`` days, ``k = 0 .. n - 1``.

    Which dates a day row serves is then arithmetic: with ``e`` the day's index in days
    from ``first``, the day is in the window ``[D_k - L - W, D_k - L)`` exactly when
    ``L < k * step - e <= L + W``, so the ``k`` it serves form one integer range; rows are
    fanned out with ``unnest(range(lo, hi))`` instead of a range join against the dates.
    """

    first: datetime
    step: int
    n: int
    #: the first date as a parameter of a plan (None: the literal ``first``)
    origin: ir.Value | None = field(default=None, compare=False)

    def index(self, day: ir.Value) -> ir.IntegerValue:
        """Days from the first date to a midnight (a difference of midnights: exact)."""
        return day.delta(_lit(self.first) if self.origin is None else self.origin, unit="day")

    def upto(self, days: ir.IntegerValue) -> ir.IntegerValue:
        """How many dates are ``<= first + days``: the index of the first date after it."""
        k = days + 1 if self.step == 1 else days // self.step + 1
        return ibis.least(ibis.greatest(k, 0), self.n)


def _grid(dates: list[datetime]) -> _Grid | None:
    """The dates as a :class:`_Grid` when they are midnights a whole number of days apart."""
    if any(d.time() != dtime(0) for d in dates):
        return None
    steps = {b - a for a, b in zip(dates, dates[1:], strict=False)}
    if len(steps) > 1:
        return None
    step = steps.pop() if steps else timedelta(days=1)
    if step.seconds or step.microseconds or step.days < 1:
        return None
    return _Grid(dates[0], step.days, len(dates))


def _evaluations(m: MetricSpec) -> list[tuple[str, str | None]]:
    """(column suffix, lag) of each evaluation: as of D, and D minus the lag."""
    lag = lag_of(m)
    return [("", None)] + ([("__prev", lag)] if lag else [])


def _at(t: ir.Table, *durations: str | None) -> ir.Value:
    """The date column moved back by ``durations`` (the lag, then the window).

    Shifted dates are computed in Python, exactly as for one date
    (:func:`healthscore.core.time.shift`), and carried as columns of the dates table:
    no interval arithmetic reaches the backend (DuckDB 1.5 merges ``D - INTERVAL 1
    MONTH`` with ``D - INTERVAL 30 DAY`` as one common subexpression).
    """
    return t[_shift_name(tuple(d for d in durations if d))]


_shift_name = shifted_name


def _shifts(model: Model) -> set[tuple[str, ...]]:
    """Every (lag,), (window,), (lag, window) a metric of the model evaluates at."""
    out: set[tuple[str, ...]] = set()
    for m in model.spec.metrics.values():
        if not m.aggregate:
            continue
        for _, lag in _evaluations(m):
            steps = tuple(d for d in (lag, m.window) if d)
            out |= {steps[:1], steps} - {()}
    return out


def _date_columns(dates: list[datetime], model: Model) -> dict[str, list[datetime]]:
    """The dates and their shifted dates (shifted in Python, as for one date), by column."""
    cols: dict[str, list] = {AS_OF: dates}
    for steps in sorted(_shifts(model)):
        moved = []
        for d in dates:
            for step in steps:
                d = shift(d, step)
            moved.append(d)
        cols[_shift_name(steps)] = moved
    return cols


#: the parameters of the first and the last date (a plan built with ``parameters=True``)
_FIRST, _LAST = "first_date", "last_date"


def _dates_key(column: int) -> str:
    """The parameter holding the dates of the ``column``-th column of the dates table
    (see :func:`_date_columns`; column 0 is ``as_of``), as text: one parameter per
    column whatever the number of dates (one per date made a long backfill's compile
    slower than with literals)."""
    return f"dates{column}"


def _as_text(d: datetime) -> str:
    """A date as text a backend casts back to the same timestamp (to the microsecond)."""
    return d.isoformat(sep=" ")


def date_values(dates: list[datetime], model: Model) -> dict[str, object]:
    """The values of the date parameters of a plan built with ``parameters=True`` for
    ``dates`` (sorted, distinct)."""
    cols = _date_columns(dates, model)
    values: dict[str, object] = {
        _dates_key(c): ",".join(_as_text(d) for d in v) for c, v in enumerate(cols.values())
    }
    values.update({_FIRST: dates[0], _LAST: dates[-1]})
    return values


def _dates_table(base: ir.Table, dates: list[datetime], model: Model, parameters=False) -> ir.Table:
    """The dates and their shifted dates, built from literals, or with ``parameters``
    from parameters (:func:`date_values`) (no temporary table: the expression runs as
    plain SQL on any backend)."""
    cols = _date_columns(dates, model)
    arrays = {}
    for c, (name, values) in enumerate(cols.items()):
        if parameters:
            text = parameter(_dates_key(c), "string")
            arrays[name] = text.split(",").cast("array<timestamp>").unnest()
        else:
            arrays[name] = ibis.literal(values, type="array<timestamp>").unnest()
    arrays[KIDX] = ibis.literal(list(range(len(dates))), type="array<int64>").unnest()
    return base.limit(1).select(**arrays)


def _lit(d: datetime) -> ir.TimestampScalar:
    return ibis.literal(d, type="timestamp")


class TimelineBuilder:
    """Builds the raw-metrics expression of one model at many dates."""

    def __init__(
        self,
        model: Model,
        tables: dict[str, ir.Table],
        arithmetic: bool = True,
        empty=(),
        parameters: bool = False,
    ):
        self.model = model
        self.tables = tables
        self.mb = MetricBuilder(model, tables, empty)
        # evenly spaced midnights: date indexes by arithmetic instead of range joins
        self.arithmetic = arithmetic
        #: the dates are parameters (:func:`date_values`), not literals: the expression
        #: then depends on the dates only through :func:`plan_shape`
        self.parameters = parameters

    # --- the whole expression ---------------------------------------------------------
    def build(self, dates: Iterable[datetime], account_ids=None) -> ir.Table:
        """Raw metrics of every account in the population at each date, with ``as_of``."""
        dates = sorted(set(dates))
        if not dates:
            raise ValueError("no dates")
        dt = _dates_table(self.tables["accounts"], dates, self.model, self.parameters)
        midnights = all(d.time() == dtime(0) for d in dates)
        grid = _grid(dates) if self.arithmetic else None
        if grid is not None and self.parameters:
            grid = replace(grid, origin=self._date(last=False))
        pop = self.population(dt, account_ids)
        wide, keys = pop, []
        n = 0
        for g in _groups(self.model):
            for agg in self._group_tables(g, dt, dates, midnights, grid, account_ids):
                # keyed by (account, as_of), or by (account, date index) on a grid
                on = KIDX if KIDX in agg.columns else AS_OF
                k, d = f"__k{n}", f"__d{n}"
                n += 1
                agg = agg.rename({k: "account_id", d: on})
                wide = wide.left_join(agg, [pop.account_id == agg[k], pop[on] == agg[d]])
                keys += [k, d]
        wide = wide.drop(*keys, KIDX) if keys else wide.drop(KIDX)
        return self.mb.finish(wide, wide[AS_OF])

    # --- population -------------------------------------------------------------------
    def population(self, dt: ir.Table, account_ids=None) -> ir.Table:
        """Accounts in the population at each date: one row per (account, as_of)."""
        mb = self.mb
        acc = mb._table("accounts", account_ids)
        declared = self.model.table_schema("accounts")
        acc = acc.select(*[c for c in acc.columns if c in declared and c != AS_OF])
        g = acc.cross_join(dt)
        g = g.filter(g.created_at < g[AS_OF])
        stamps = [c for c, typ in declared.items() if typ == "timestamp" and c != "created_at"]
        if stamps:
            g = g.mutate(**{c: _masked_columns(g, stamps, g[AS_OF])(c) for c in stamps})
        if "subscriptions" in self.tables:
            subs = mb._table("subscriptions", account_ids)
            s = subs.inner_join(dt, subs.start_date <= dt[AS_OF])
            known = s.group_by(["account_id", AS_OF]).aggregate(
                __subs_known=s.count(),
                __subs_in_force=s.count(where=in_force(s, "subscriptions", s[AS_OF])),
            )
            known = known.rename(__sk="account_id", __sd=AS_OF)
            g = g.left_join(known, [g.account_id == known["__sk"], g[AS_OF] == known["__sd"]])
            g = g.filter(g["__subs_known"].isnull() | (g["__subs_in_force"] > 0))
            g = g.drop("__sk", "__sd", "__subs_known", "__subs_in_force")
        kinds = mb._flag_kinds()
        if kinds:
            f = mb._table("flags", account_ids)
            f = f.inner_join(dt, in_force(f, "flags", dt[AS_OF]))
            fl = f.group_by(["account_id", AS_OF]).aggregate(
                **{_flag_col(k): f.count(where=_flag_kind(f, k)) > 0 for k in kinds}
            )
            fl = fl.rename(__fk="account_id", __fd=AS_OF)
            g = g.left_join(fl, [g.account_id == fl["__fk"], g[AS_OF] == fl["__fd"]])
            g = g.drop("__fk", "__fd")
            g = g.mutate(**{_flag_col(k): g[_flag_col(k)].fill_null(False) for k in kinds})
        if self.model.spec.population:
            g = g.filter(
                ex.compile_row(
                    self.model.spec.population,
                    _without(_columns_of(g), AS_OF),
                    as_of=g[AS_OF],
                    has_flag=lambda k: g[_flag_col(k)],
                )
            )
        return g

    # --- one group of metrics (one table, mode and time column) -----------------------
    def _stamps(self, g: _Group, columns) -> list[str]:
        """Timestamps of the group's table that read NULL from the evaluation date on."""
        tdef = TABLES[g.table]
        keep = {g.time} | ({tdef.start, tdef.end} if tdef.interval_rule == "date" else set())
        return [
            c
            for c, typ in self.model.table_schema(g.table).items()
            if typ == "timestamp" and c in columns and c not in keep
        ]

    def _group_tables(self, g: _Group, dt, dates, midnights, grid, account_ids) -> list[ir.Table]:
        """Tables keyed (account_id, as_of) or (account_id, date index) holding every
        reduction of the group."""
        out: list[ir.Table] = []
        rest = dict(g.metrics)
        if midnights and g.mode in ("window", "history"):
            t = self._scan(g, dates, account_ids)
            parts = {}
            for name, m in g.metrics.items():
                p = self._plain_parts(g, m, t)
                if p is None:
                    continue
                kinds = [_BY_DAY[type(r.op())] for _, r in p]
                if g.mode == "history" and not set(kinds) <= _CUMULATIVE:
                    continue
                parts[name] = p
                self.mb._part_kinds[name] = [kind for kind, _ in p]
                del rest[name]
            if parts and g.mode == "window":
                out += self._window_by_day(g, t, parts, dt, grid)
            elif parts:
                out += self._history_by_day(g, t, parts, dt, grid)
        if rest:
            out.append(self._exact(_Group(g.table, g.mode, g.time, rest), dt, account_ids))
        return out

    def _date(self, last: bool, dates=None) -> ir.TimestampValue:
        """The first or the last date (of ``dates``, sorted): its parameter, or literal."""
        if self.parameters:
            return parameter(_LAST if last else _FIRST, "timestamp")
        return _lit(dates[-1] if last else dates[0])

    def _scan(self, g: _Group, dates, account_ids) -> ir.Table:
        """The group's table, cut to the rows some date can use, with its day column."""
        t = self.mb._table(g.table, account_ids)
        time = t[g.time]
        cond = time < self._date(last=True, dates=dates)
        if g.mode == "window":
            span = max(_days_upper(m.window) + _days_upper(lag_of(m)) for m in g.metrics.values())
            cond = cond & (time >= self._date(last=False, dates=dates) - ibis.interval(days=span))
        t = t.filter(cond)
        return t.mutate(**{DAY: t[g.time].truncate("D")})

    def _plain_parts(self, g: _Group, m: MetricSpec, t: ir.Table):
        """The metric's reductions when they do not depend on the date, else None.

        Compiled without a date and without the group's masked timestamps: a metric that
        reads either (``days_since`` in an argument, ``paid_at`` in a filter) fails to
        compile here and takes the exact path.
        """
        tdef = TABLES[g.table]
        masked = set(self._stamps(g, t.columns))

        def resolve(name, qualifier=None):
            if name not in t.columns or name.startswith("__") or name in masked:
                raise KeyError(name)
            return t[name]

        try:
            where = ex.compile_row(m.where, resolve) if m.where else None
            ctx = ex.AggregateContext(t, where, [t[g.time], t[tdef.primary_key]])
            # the outer expression may use the date (days_since(max(ts))): only the
            # reductions are kept, and one that reads the date is not plain
            parts = ex.aggregate_parts(m.aggregate, resolve, ctx, as_of=_lit(_SENTINEL))
        except ex.ExpressionError:
            return None
        if not all(type(r.op()) in _BY_DAY for _, r in parts):
            return None
        if any(_reads_sentinel(r) for _, r in parts):
            return None
        # last()/first() give the latest row's value even when it is NULL: per-day partials
        # would skip such rows, so only a column that is never NULL takes the fast path
        for _, r in parts:
            op = r.op()
            if isinstance(op, ops.ArgMax | ops.ArgMin) and not (
                isinstance(op.arg, ops.Field) and op.arg.name in tdef.required
            ):
                return None
        return parts

    # --- windows from day partials ----------------------------------------------------
    def _window_by_day(self, g: _Group, t: ir.Table, parts: dict, dt: ir.Table, grid) -> list:
        daily: dict[str, ir.Scalar] = {}
        out: list[ir.Table] = []
        for name, p in parts.items():
            for i, (_, r) in enumerate(p):
                key, op = f"{name}__p{i}", r.op()
                how = _BY_DAY[type(op)]
                if how == "distinct":
                    m = g.metrics[name]
                    if grid and None not in (_fixed_days(m.window), _fixed_days(lag_of(m))):
                        out.append(self._distinct_grid(g, t, name, i, op, grid))
                    else:
                        out.append(self._distinct(g, t, name, i, op, dt))
                elif how == "mean":
                    where = op.where.to_expr() if op.where is not None else None
                    arg = op.arg.to_expr()
                    daily[key + "__s"] = arg.sum(where=where)
                    daily[key + "__n"] = arg.count(where=where)
                else:
                    daily[key] = r
        if not daily:
            return out
        day = t.group_by(["account_id", DAY]).aggregate(**daily)
        plain = [
            g.metrics[name]
            for name, p in parts.items()
            if any(_BY_DAY[type(r.op())] != "distinct" for _, r in p)
        ]
        if grid and all(None not in (_fixed_days(m.window), _fixed_days(lag_of(m))) for m in plain):
            out.append(self._window_grid(g, day, parts, grid))
            return out
        span = max(
            _days_upper(g.metrics[name].window) + _days_upper(lag_of(g.metrics[name]))
            for name, p in parts.items()
            if any(_BY_DAY[type(r.op())] != "distinct" for _, r in p)
        )
        D = dt[AS_OF]
        j = day.inner_join(dt, (day[DAY] >= D - ibis.interval(days=span)) & (day[DAY] < D))
        D = j[AS_OF]
        aggs: dict[str, ir.Scalar] = {}
        for name, p in parts.items():
            m = g.metrics[name]
            for suffix, lag in _evaluations(m):
                at = _at(j, lag)
                inwin = (j[DAY] >= _at(j, lag, m.window)) & (j[DAY] < at)
                aggs.update(_combine_days(j, name, suffix, p, inwin, j[DAY]))
        out.append(j.group_by(["account_id", AS_OF]).aggregate(**aggs))
        return out

    def _window_grid(self, g: _Group, day: ir.Table, parts: dict, grid: _Grid) -> ir.Table:
        """Day partials fanned out by date index: a day ``e`` serves the dates with
        ``L < k * step - e <= L + W`` for each evaluation (lag ``L``, window ``W``)."""
        evals = {
            (_fixed_days(lag), _fixed_days(g.metrics[name].window))
            for name in parts
            for _, lag in _evaluations(g.metrics[name])
        }
        lo = min(L for L, _ in evals)
        hi = max(L + W for L, W in evals)
        day = day.mutate(__e=grid.index(day[DAY]))
        e = day["__e"]
        j = day.mutate(**{KIDX: ibis.range(grid.upto(e + lo), grid.upto(e + hi)).unnest()})
        ago = j[KIDX] * grid.step - j["__e"]  # days from the day to the date
        aggs: dict[str, ir.Scalar] = {}
        for name, p in parts.items():
            m = g.metrics[name]
            W = _fixed_days(m.window)
            for suffix, lag in _evaluations(m):
                L = _fixed_days(lag)
                inwin = (ago > L) & (ago <= L + W)
                aggs.update(_combine_days(j, name, suffix, p, inwin, j["__e"]))
        return j.group_by(["account_id", KIDX]).aggregate(**aggs)

    def _distinct_grid(self, g: _Group, t, name: str, i: int, op, grid: _Grid) -> ir.Table:
        """count_distinct over a window of whole days (and the previous one), on a grid.

        A row of day ``e`` counts its value at the dates ``upto(e + L) .. upto(e + L + W)``
        (lag ``L``, window ``W``): one range of date indexes. The ranges of each (account,
        value) are OR-ed into bit masks (one bit per date, 62 dates per 64-bit mask), so
        the value is reduced to one row however many days it was seen on and however long
        its gaps; the row is then fanned out to its dates and counted where its bit is set.
        """
        m = g.metrics[name]
        W = _fixed_days(m.window)
        where = op.where.to_expr() if op.where is not None else ibis.literal(True)
        rows = t.select(account_id=t.account_id, __x=op.arg.to_expr(), __w=where, **{DAY: t[DAY]})
        rows = rows.filter(rows["__w"].fill_null(False) & rows["__x"].notnull())
        rows = rows.select("account_id", "__x", __e=grid.index(rows[DAY]))
        e = rows["__e"]
        evals = [(suffix, _fixed_days(lag)) for suffix, lag in _evaluations(m)]
        blocks = range(-(-grid.n // _BITS))
        aggs = {}
        for s, (_, L) in enumerate(evals):
            lo, hi = grid.upto(e + L), grid.upto(e + L + W)
            aggs[f"__lo{s}"] = lo.min()
            aggs[f"__hi{s}"] = hi.max()
            for b in blocks:
                aggs[f"__m{s}_{b}"] = _bit_range(lo, hi, b * _BITS, grid.n).bit_or()
        v = rows.group_by("account_id", "__x").aggregate(**aggs)
        lo = _least([v[f"__lo{s}"] for s in range(len(evals))])
        hi = _greatest([v[f"__hi{s}"] for s in range(len(evals))])
        f = v.mutate(**{KIDX: ibis.range(lo, hi).unnest()})

        def bit(f: ir.Table, s: int) -> ir.BooleanValue:  # the date's bit is set
            k = f[KIDX]
            if len(blocks) == 1:
                mask, off = f[f"__m{s}_0"], k
            else:
                mask = ibis.cases(*[(k // _BITS == b, f[f"__m{s}_{b}"]) for b in blocks])
                off = k % _BITS
            return ((mask >> off.cast("int32")) & 1) == 1

        f = f.filter(ibis.or_(*[bit(f, s) for s in range(len(evals))]))
        if len(evals) == 1:
            aggs = {f"{name}{evals[0][0]}__p{i}": f.count()}
        else:
            aggs = {
                f"{name}{sx}__p{i}": f.count(where=bit(f, s)) for s, (sx, _) in enumerate(evals)
            }
        return f.group_by("account_id", KIDX).aggregate(**aggs)

    def _distinct(self, g: _Group, t: ir.Table, name: str, i: int, op, dt) -> ir.Table:
        """count_distinct over the window (and the previous one) of one metric."""
        m = g.metrics[name]
        where = op.where.to_expr() if op.where is not None else ibis.literal(True)
        rows = t.select(account_id=t.account_id, __x=op.arg.to_expr(), __w=where, **{DAY: t[DAY]})
        rows = rows.filter(rows["__w"].fill_null(False) & rows["__x"].notnull())
        rows = rows.select("account_id", "__x", DAY).distinct()
        evals = _evaluations(m)
        W = _fixed_days(m.window)
        D = dt[AS_OF]
        if W is None:  # calendar months: fan the distinct day rows out
            span = _days_upper(m.window) + _days_upper(lag_of(m))
            j = rows.inner_join(dt, (rows[DAY] >= D - ibis.interval(days=span)) & (rows[DAY] < D))
            aggs = {}
            for suffix, lag in evals:
                at = _at(j, lag)
                inwin = (j[DAY] >= _at(j, lag, m.window)) & (j[DAY] < at)
                aggs[f"{name}{suffix}__p{i}"] = j["__x"].nunique(where=inwin)
            return j.group_by(["account_id", AS_OF]).aggregate(**aggs)
        # each day a value is seen counts it at the dates after it, until the window
        # has passed or the next day it is seen: (day, least(next day, day + W)]; those
        # spans never overlap for one value, so counting rows counts distinct values
        nxt = rows[DAY].lead().over(ibis.window(group_by=["account_id", "__x"], order_by=DAY))
        end = rows[DAY] + ibis.interval(days=W)
        rows = rows.mutate(__e=ibis.least(end, nxt.fill_null(end)))
        lagmax = _days_upper(lag_of(m))
        far = rows["__e"] + ibis.interval(days=lagmax) if lagmax else rows["__e"]
        j = rows.inner_join(dt, (rows[DAY] < D) & (far >= D))
        aggs = {}
        for suffix, lag in evals:
            at = _at(j, lag)
            aggs[f"{name}{suffix}__p{i}"] = j.count(where=(j[DAY] < at) & (at <= j["__e"]))
        return j.group_by(["account_id", AS_OF]).aggregate(**aggs)

    # --- all history from running totals ------------------------------------------------
    def _history_by_day(self, g: _Group, t: ir.Table, parts: dict, dt: ir.Table, grid) -> list:
        daily = {f"{name}__p{i}": r for name, p in parts.items() for i, (_, r) in enumerate(p)}
        how = {
            f"{name}__p{i}": _BY_DAY[type(r.op())]
            for name, p in parts.items()
            for i, (_, r) in enumerate(p)
        }
        lags = {lag for name in parts for _, lag in _evaluations(g.metrics[name])}
        if grid and all(_fixed_days(lag) is not None for lag in lags):
            return self._history_grid(g, t, parts, daily, how, lags, grid)
        day = t.group_by(["account_id", DAY]).aggregate(**daily)
        cum = ibis.cumulative_window(group_by="account_id", order_by=DAY)
        nxt = day[DAY].lead().over(ibis.window(group_by="account_id", order_by=DAY))
        day = day.mutate(
            **{k: getattr(day[k], how[k])().over(cum) for k in daily},
            __next=nxt.fill_null(_lit(_FAR)),
        )
        out = []
        for lag in sorted(lags, key=lambda x: x or ""):
            at = _at(dt, lag)
            j = day.inner_join(dt, (day[DAY] < at) & (day["__next"] >= at))
            cols = {}
            for name, p in parts.items():
                for suffix, lg in _evaluations(g.metrics[name]):
                    if lg == lag:
                        for i in range(len(p)):
                            cols[f"{name}{suffix}__p{i}"] = j[f"{name}__p{i}"]
            out.append(j.select("account_id", AS_OF, **cols))
        return out

    def _history_grid(self, g, t, parts, daily, how, lags, grid: _Grid) -> list:
        """All history on a grid: rows reduced per account and bucket ``j`` (the first
        date after the row's day moved by the lag), running totals over the buckets, and
        each bucket serves the dates from ``j`` to the next bucket."""
        e = grid.index(t[DAY])
        out = []
        for lag in sorted(lags, key=lambda x: x or ""):
            L = _fixed_days(lag)
            day = t.group_by("account_id", __j=grid.upto(e + L)).aggregate(**daily)
            day = day.filter(day["__j"] < grid.n)
            cum = ibis.cumulative_window(group_by="account_id", order_by="__j")
            nxt = day["__j"].lead().over(ibis.window(group_by="account_id", order_by="__j"))
            day = day.mutate(
                **{k: getattr(day[k], how[k])().over(cum) for k in daily},
                __next=nxt.fill_null(grid.n),
            )
            cols = {}
            for name, p in parts.items():
                for suffix, lg in _evaluations(g.metrics[name]):
                    if lg == lag:
                        for i in range(len(p)):
                            cols[f"{name}{suffix}__p{i}"] = day[f"{name}__p{i}"]
            out.append(
                day.select(
                    "account_id", **{KIDX: ibis.range(day["__j"], day["__next"]).unnest()}, **cols
                )
            )
        return out

    # --- the exact path -------------------------------------------------------------------
    def _exact(self, g: _Group, dt: ir.Table, account_ids) -> ir.Table:
        """Raw rows fanned out to the dates that may use them; per-date conditions as in
        ``MetricBuilder._group_expr`` with the date a column."""
        tdef = TABLES[g.table]
        t = self.mb._table(g.table, account_ids)
        D = dt[AS_OF]
        lag = max(_days_upper(lag_of(m)) for m in g.metrics.values())
        if g.mode == "window":
            span = max(_days_upper(m.window) for m in g.metrics.values()) + lag
            cond = (t[g.time] >= D - ibis.interval(days=span)) & (t[g.time] < D)
        elif g.mode == "history":
            cond = t[g.time] < D
        else:
            start, end = t[tdef.start], t[tdef.end]
            early = D - ibis.interval(days=lag)
            if tdef.interval_rule == "date":
                cond = (start <= D) & (end.isnull() | (end > early))
            else:
                cond = (start < D) & (end.isnull() | (end >= early))
        j = t.inner_join(dt, cond)
        D = j[AS_OF]
        stamps = self._stamps(g, t.columns)
        order = [j[g.time], j[tdef.primary_key]]
        aggs: dict[str, ir.Scalar] = {}
        for name, m in g.metrics.items():
            for suffix, lg in _evaluations(m):
                at = _at(j, lg)
                resolve = _without(_masked_columns(j, stamps, at), AS_OF, t.columns)
                if g.mode == "window":
                    cond = (j[g.time] >= _at(j, lg, m.window)) & (j[g.time] < at)
                elif g.mode == "history":
                    cond = j[g.time] < at
                else:
                    cond = in_force(j, g.table, at)
                if m.where:
                    cond = cond & ex.compile_row(m.where, resolve)
                ctx = ex.AggregateContext(j, cond, order)
                parts = ex.aggregate_parts(m.aggregate, resolve, ctx, as_of=at)
                self.mb._part_kinds[name] = [kind for kind, _ in parts]
                for i, (_, reduction) in enumerate(parts):
                    aggs[f"{name}{suffix}__p{i}"] = reduction
        return j.group_by(["account_id", AS_OF]).aggregate(**aggs)


_BITS = 62  # dates per bit mask: 1 << 62 still fits a signed 64-bit integer


def _bit_range(lo: ir.IntegerValue, hi: ir.IntegerValue, base: int, n: int) -> ir.IntegerValue:
    """The bits ``k - base`` of the dates ``k`` in ``[lo, hi)`` (both in ``[0, n]``) that
    fall in the block of ``_BITS`` dates from ``base``, as a 64-bit integer."""
    if base or n > _BITS:
        lo = ibis.least(ibis.greatest(lo - base, 0), _BITS)
        hi = ibis.least(ibis.greatest(hi - base, 0), _BITS)
    one = ibis.literal(1).cast("int64")
    return (one << hi.cast("int32")) - (one << lo.cast("int32"))


def _least(values: list) -> ir.Value:
    return values[0] if len(values) == 1 else ibis.least(*values)


def _greatest(values: list) -> ir.Value:
    return values[0] if len(values) == 1 else ibis.greatest(*values)


def _combine_days(j: ir.Table, name: str, suffix: str, parts, inwin, day) -> dict:
    """The metric's reductions from its per-day partials of the days in the window
    (``day`` orders the days, for last/first); distinct counts are built elsewhere."""
    aggs = {}
    for i, (_, r) in enumerate(parts):
        key, col = f"{name}__p{i}", f"{name}{suffix}__p{i}"
        how = _BY_DAY[type(r.op())]
        if how == "distinct":
            continue
        if how == "mean":
            s = j[key + "__s"].sum(where=inwin)
            n = j[key + "__n"].sum(where=inwin)
            aggs[col] = s.cast("float64") / n.nullif(0)
        elif how == "last":
            aggs[col] = j[key].argmax(day, where=inwin & j[key].notnull())
        elif how == "first":
            aggs[col] = j[key].argmin(day, where=inwin & j[key].notnull())
        else:
            aggs[col] = getattr(j[key], how)(where=inwin)
    return aggs


def _reads_sentinel(r: ir.Value) -> bool:
    return any(lit.value == _SENTINEL for lit in r.op().find(ops.Literal))


def _without(resolve, name: str, columns=()):
    """A resolver that does not see the date column (unless the table has one itself)."""

    def inner(col, qualifier=None):
        if col == name and col not in columns:
            raise KeyError("unknown column")
        return resolve(col, qualifier) if qualifier else resolve(col)

    return inner


def raw_expr(store, model: Model, dates, account_ids=None) -> ir.Table:
    """The raw metrics of ``model`` at every date in ``dates`` (one expression)."""
    tables = store.tables(tables_needed(model))
    empty = empty_tables(store, model)
    return TimelineBuilder(model, tables, empty=empty).build(dates, account_ids)


def dates_expr(store, model: Model, dates, account_ids=None) -> ir.Table:
    """The scoring expression of every account at every date: one row per (account, as_of)."""
    check_scorable(store, model)
    return score_metrics(raw_expr(store, model, dates, account_ids), model)


def plan_shape(dates: list[datetime]) -> str:
    """What the expression of ``dates`` (sorted, distinct) depends on besides the model,
    the tables and, as parameters, the dates themselves: how many they are, whether
    they are all midnights, and the step of evenly spaced ones (:func:`_grid`)."""
    grid = _grid(dates)
    midnights = all(d.time() == dtime(0) for d in dates)
    return f"{len(dates)} dates, midnights {midnights}, step {grid.step if grid else None}"


def score_dates(store, model: Model, dates, account_ids=None) -> pa.Table:
    """Scores of every account at every date (rows ordered by account id, then date).

    For every account, the plan is compiled once with the dates as parameters and kept
    (:meth:`~healthscore.engine.snapshot.Snapshot.plan`): another list of as many dates
    of the same shape (:func:`plan_shape`; a backfill's next chunk, another backfill of
    the model on a store of the same columns) runs it with its own dates."""
    # naive UTC, as every date the engine compares with (a date with an offset sent to
    # the database as text would lose its offset there, not be converted)
    dates = sorted({parse_as_of(d, "dates") for d in dates})
    if account_ids is not None:
        return store.execute(dates_expr(store, model, dates, account_ids))
    if not dates:
        raise ValueError("no dates")
    snap = Snapshot(store, model)

    def build(clock):
        check_scorable(store, model)
        tables = store.tables(tables_needed(model))
        builder = TimelineBuilder(model, tables, empty=snap.empty, parameters=True)
        return score_metrics(builder.build(dates), model)

    name = f"scores at {plan_shape(dates)}"
    values = date_values(dates, model)
    return snap.run(name, build, dates[0], tables=snap.tables, values=values)
