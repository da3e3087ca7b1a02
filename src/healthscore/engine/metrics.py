"""Metric specs -> one Ibis expression: raw metric values per account as of D.

Place in the flow: ``store`` hands over Ibis tables, ``model`` the validated spec;
this module builds (never executes) the expression whose rows are the accounts in the
population at D with one column per metric. ``scoring`` turns that into scores.

How the expression is shaped (it is what makes scoring fast):

- **Point in time.** Each table is read as known at D: rows whose time column is ``>= D``
  are left out, and any other timestamp ``>= D`` reads as NULL (a ticket closed after D is
  open at D, an invoice paid after D is unpaid at D), declared extra columns included.
  The previous value of a ``change_vs`` metric is read the same way as of D minus the lag.
- **One scan per table and time column.** All windowed metrics on the same table share one
  filtered scan over the longest window they need; each metric is a filtered aggregate
  (``count(*) FILTER (WHERE ...)``). Metrics without a window (e.g. days since the last
  event) share a second scan; as-of reads of interval tables share a third.
- **Population.** Accounts with ``created_at < D`` that, if they have subscriptions
  known at D, have one in force at D; then the model's ``population:`` filter.
- **A few accounts read only the columns used.** With account ids (the live service's
  micro-batch), the scans of one table read one account-filtered relation, which the SQL
  holds once (a common table expression, ``SELECT *``): DuckDB materializes it with every
  column, e.g. the events' ``event_id`` text no metric reads (about 60 % of a 93-account
  batch's CPU on the S book). So the expression is built twice: the second time each
  metric table is narrowed to the columns the first one reads (:func:`_columns_read`).
- Each aggregate call is reduced per account in the scan and the metric's outer expression
  (``days_since(max(ts))``, ``count() / 30``) is applied after the join: an account with no
  rows gets 0 from ``count``, ``count_distinct`` and ``sum``, and NULL from the others,
  then the metric's ``fill`` (if any), then its missing-data policy in ``scoring``.
- **Empty tables are no evidence.** A metric over a table that holds no row at all (never
  loaded), and a formula using it, is NULL (not 0, not its ``fill``): the missing-data
  policy applies. An account without rows in a table that has rows keeps its real zero.
- ``change_vs`` gives the relative change (a fraction) of the metric against the previous
  window, or against its value as of D minus a duration; NULL when the previous value is 0
  or the previous window starts before the account existed, unless ``if_previous_zero``.

Output columns: ``account_id``, ``segment`` (the model's segment value or NULL), ``csm``,
one column per metric (raw value after fill), and ``<metric>__covered`` (true when the
value came from data, not from a fill).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import ibis
import ibis.expr.types as ir

from healthscore import expressions as ex
from healthscore.core.tables import TABLES
from healthscore.core.time import shift
from healthscore.engine.inputs import metrics_without_evidence
from healthscore.model import MetricSpec, Model

COVERED = "__covered"
RULE = "rule__"  # rule__<name>: whether the rule's condition holds


def shifted_name(durations: tuple[str, ...]) -> str:
    """Name of the column holding the evaluation date moved back by ``durations``
    (when many dates are computed together, each shifted date is a precomputed column)."""
    return "__at_" + "_".join(durations) if durations else "as_of"


def shift_value(wide: ir.Table, D: ir.Value, *durations: str) -> ir.Value:
    """An evaluation date (a literal or a column) moved back by model durations, in order.

    For a column (many dates at once), the shifted dates are precomputed columns of
    ``wide`` (``__at_...``, see ``timeline``): no interval arithmetic reaches the backend
    (DuckDB 1.5 merges ``D - INTERVAL 1 MONTH`` with ``D - INTERVAL 30 DAY`` as one
    common subexpression).
    """
    op = D.op()
    if isinstance(op, ibis.expr.operations.Literal):
        d = op.value
        for duration in durations:
            d = shift(d, duration)
        return _lit(d)
    return wide[shifted_name(tuple(durations))]


def lag_of(metric: MetricSpec) -> str | None:
    if metric.change_vs is None:
        return None
    return metric.window if metric.change_vs == "previous" else metric.change_vs


@dataclass
class _Group:
    """Metrics that share one scan of one table."""

    table: str
    mode: str  # "window" | "history" | "in_force"
    time: str
    metrics: dict[str, MetricSpec] = field(default_factory=dict)


def _groups(model: Model) -> list[_Group]:
    groups: dict[tuple, _Group] = {}
    for name, m in model.spec.metrics.items():
        if not m.aggregate:
            continue
        tdef = TABLES[m.from_]
        time = m.time or tdef.time
        if m.window:
            mode = "window"
        elif tdef.kind == "interval":
            mode = "in_force"
        else:
            mode = "history"
        key = (m.from_, mode, time)
        groups.setdefault(key, _Group(m.from_, mode, time)).metrics[name] = m
    return list(groups.values())


def in_force(table: ir.Table, name: str, at: ir.Value) -> ir.BooleanValue:
    """Rows of an interval table in force at ``at`` (see tables.Table.interval_rule)."""
    tdef = TABLES[name]
    start, end = table[tdef.start], table[tdef.end]
    if tdef.interval_rule == "date":
        return (start <= at) & (end.isnull() | (end > at))
    return (start < at) & (end.isnull() | (end >= at))


def _lit(d: datetime) -> ir.TimestampScalar:
    return ibis.literal(d, type="timestamp")


class Clock:
    """The evaluation date of one expression and the dates moved back from it by model
    durations, as timestamp values of the expression.

    This one gives literals of one datetime. A plan compiled once and run at many dates
    (:mod:`healthscore.engine.plan`) passes a clock whose dates are parameters, bound
    when the plan runs; the expression is otherwise the same.
    """

    def __init__(self, as_of: datetime):
        self.as_of = as_of

    def date(self, durations: tuple[str, ...]) -> datetime:
        """The as-of date moved back by ``durations``, in order."""
        d = self.as_of
        for duration in durations:
            d = shift(d, duration)
        return d

    def at(self, *durations: str) -> ir.TimestampValue:
        """The as-of date moved back by ``durations`` (none: the as-of date itself)."""
        return _lit(self.date(durations))

    def earliest(self, chains: list[tuple[str, ...]]) -> ir.TimestampValue:
        """The earliest of the as-of date moved back by each chain of durations."""
        return _lit(min(self.date(c) for c in chains))


def _clock(as_of: datetime | Clock) -> Clock:
    return as_of if isinstance(as_of, Clock) else Clock(as_of)


class MetricBuilder:
    """Builds the raw-metrics expression for one model over one set of tables."""

    def __init__(self, model: Model, tables: dict[str, ir.Table], empty=()):
        self.model = model
        self.tables = tables
        # metrics over a table with no rows at all: no evidence, so missing (not zero)
        self.blind = metrics_without_evidence(model, empty)
        self._part_kinds: dict[str, list[str]] = {}
        #: table -> the columns to read of it when filtered by account (see build())
        self._narrow: dict[str, list[str]] = {}

    def _table(self, name: str, account_ids) -> ir.Table:
        t = self.tables[name]
        if account_ids is not None:
            if name in self._narrow:
                t = t.select(*self._narrow[name])
            t = t.filter(t.account_id.isin(list(account_ids)))
        return t

    def population(self, as_of: datetime | Clock, account_ids=None) -> ir.Table:
        clock = _clock(as_of)
        D = clock.at()
        acc = self._table("accounts", account_ids)
        # only the columns the model knows: an undeclared extra column must not shadow a metric
        declared = self.model.table_schema("accounts")
        acc = acc.select(*[c for c in acc.columns if c in declared])
        acc = acc.filter(acc.created_at < D)
        stamps = [c for c, typ in declared.items() if typ == "timestamp" and c != "created_at"]
        if stamps:  # e.g. a declared churn_notice_at: unknown until it has happened
            acc = acc.mutate(**{c: _masked_columns(acc, stamps, D)(c) for c in stamps})
        if "subscriptions" in self.tables:
            acc = acc.left_join(self._subscriptions_known(D, account_ids), "account_id")
            acc = acc.drop("account_id_right")
            acc = acc.filter(acc["__subs_known"].isnull() | (acc["__subs_in_force"] > 0))
            acc = acc.drop("__subs_known", "__subs_in_force")
        flags = self._flags(clock, account_ids)
        if flags is not None:
            acc = acc.left_join(flags, "account_id").drop("account_id_right")
            acc = acc.mutate(**{c: acc[c].fill_null(False) for c in flags.columns[1:]})
        if self.model.spec.population:
            acc = acc.filter(
                ex.compile_row(
                    self.model.spec.population,
                    _columns_of(acc),
                    as_of=D,
                    has_flag=lambda k: acc[_flag_col(k)],
                )
            )
        return acc

    def _subscriptions_known(self, D: ir.Value, account_ids) -> ir.Table:
        """Per account: its subscriptions known at D and how many are in force at D."""
        subs = self._table("subscriptions", account_ids)
        # date rule: a contract starting at D is in force at D
        subs = subs.filter(subs.start_date <= D)
        return subs.group_by("account_id").aggregate(
            __subs_known=subs.count(),
            __subs_in_force=subs.count(where=in_force(subs, "subscriptions", D)),
        )

    def left_out(self, as_of: datetime | Clock) -> ir.Table:
        """The accounts not in the population at ``as_of``, with why (``reason``): ``not
        yet created``, ``no subscription in force`` or ``outside the population`` (the
        model's ``population:`` filter); columns ``account_id, name, reason``."""
        clock = _clock(as_of)
        D = clock.at()
        acc = self.tables["accounts"]
        name = acc["name"] if "name" in acc.columns else ibis.null("string")
        acc = acc.select("account_id", "created_at", name=name.cast("string"))
        if "subscriptions" in self.tables:
            acc = acc.left_join(self._subscriptions_known(D, None), "account_id")
            acc = acc.drop("account_id_right")
            lapsed = acc["__subs_known"].notnull() & (acc["__subs_in_force"] == 0)
        else:
            lapsed = ibis.literal(False)
        reason = ibis.cases(
            (acc.created_at.isnull() | (acc.created_at >= D), "not yet created"),
            (lapsed, "no subscription in force"),
            else_="outside the population",
        )
        out = acc.select("account_id", "name", reason=reason)
        return out.anti_join(self.population(clock).select("account_id"), "account_id")

    def _flag_kinds(self) -> list[str]:
        texts = [m.formula for m in self.model.spec.metrics.values() if m.formula]
        texts += [self.model.spec.population] if self.model.spec.population else []
        texts += [r.when for r in self.model.spec.rules.values()]
        kinds = []
        for text in texts:
            node = ex.parse(text)
            for f in node.walk():
                if ex.function_name(f) == "has_flag" and f.expressions:
                    k = f.expressions[0].this
                    if k not in kinds:
                        kinds.append(k)
        return kinds

    def _flags(self, clock: Clock, account_ids) -> ir.Table | None:
        kinds = self._flag_kinds()
        if not kinds:
            return None
        D = clock.at()
        f = self._table("flags", account_ids)
        f = f.filter(in_force(f, "flags", D))
        return f.group_by("account_id").aggregate(
            **{_flag_col(k): f.count(where=_flag_kind(f, k)) > 0 for k in kinds}
        )

    def _group_expr(self, g: _Group, clock: Clock, account_ids) -> ir.Table:
        """One scan of one table: every reduction of the group's metrics, per account."""
        D = clock.at()
        tdef = TABLES[g.table]
        t = self._table(g.table, account_ids)
        if g.mode == "window":
            starts = []
            for m in g.metrics.values():
                lag = lag_of(m)
                starts.append((lag, m.window) if lag else (m.window,))
            t = t.filter(t[g.time] >= clock.earliest(starts), t[g.time] < D)
        elif g.mode == "history":
            t = t.filter(t[g.time] < D)
        elif tdef.interval_rule != "date":  # in force at D (and at D - lag for change metrics)
            t = t.filter(t[tdef.start] < D)
        # the scan's own time column is always before the evaluation date; contract dates
        # (start/end of a date-rule table) are terms known in advance; every other
        # timestamp, declared extra columns included, reads NULL from the evaluation date on
        keep = {g.time} | ({tdef.start, tdef.end} if tdef.interval_rule == "date" else set())
        stamps = [
            c
            for c, typ in self.model.table_schema(g.table).items()
            if typ == "timestamp" and c in t.columns and c not in keep
        ]
        # (a narrowed table lacks them only where no reduction orders its rows)
        order = [t[c] for c in (g.time, tdef.primary_key) if c in t.columns]
        aggs: dict[str, ir.Scalar] = {}
        for name, m in g.metrics.items():
            evaluations: list[tuple[str, tuple[str, ...]]] = [("", ())]
            lag = lag_of(m)
            if lag:
                evaluations.append(("__prev", (lag,)))
            for suffix, back in evaluations:
                at = clock.at(*back)
                resolve = _masked_columns(t, stamps, at)
                if g.mode == "window":
                    cond = (t[g.time] >= clock.at(*back, m.window)) & (t[g.time] < at)
                elif g.mode == "history":
                    cond = t[g.time] < at
                else:
                    cond = in_force(t, g.table, at)
                if m.where:
                    cond = cond & ex.compile_row(m.where, resolve)
                ctx = ex.AggregateContext(t, cond, order)
                parts = ex.aggregate_parts(m.aggregate, resolve, ctx, as_of=at)
                self._part_kinds[name] = [kind for kind, _ in parts]
                for i, (_, reduction) in enumerate(parts):
                    aggs[f"{name}{suffix}__p{i}"] = reduction
        return t.group_by("account_id").aggregate(**aggs)

    def _combined(self, wide: ir.Table, name: str, m: MetricSpec, suffix: str, at: ir.Value):
        """The metric from its reductions; an account without rows counts 0, not NULL."""
        parts = [
            wide[f"{name}{suffix}__p{i}"].fill_null(0)
            if kind in ex.ZERO_WHEN_EMPTY
            else wide[f"{name}{suffix}__p{i}"]
            for i, kind in enumerate(self._part_kinds[name])
        ]
        return ex.combine_aggregate(m.aggregate, parts, as_of=at)

    def build(self, as_of: datetime | Clock, account_ids=None) -> ir.Table:
        """The raw metrics of every account in the population at ``as_of`` (a datetime,
        or a :class:`Clock` whose dates are parameters); with ``account_ids``, of those
        accounts only, each metric table read for the columns the expression uses (it
        is built once to find them, then again over the narrowed tables)."""
        expr = self._build(as_of, account_ids)
        if account_ids is None or self._narrow:
            return expr
        bases = {name: self.tables[name] for name in sorted({g.table for g in _groups(self.model)})}
        read = _columns_read(expr, {name: t.op() for name, t in bases.items()})
        self._narrow = {
            name: [c for c in t.columns if c in read[name]]
            for name, t in bases.items()
            if read.get(name) is not None and len(read[name]) < len(t.columns)
        }
        return self._build(as_of, account_ids) if self._narrow else expr

    def _build(self, as_of: datetime | Clock, account_ids=None) -> ir.Table:
        as_of = _clock(as_of)
        pop = self.population(as_of, account_ids)
        # one join chain (each group's key renamed apart), then few wide projections:
        # fewer nested selects keep the compile cheap
        wide, keys = pop, []
        for i, g in enumerate(_groups(self.model)):
            key = f"__k{i}"
            agg = self._group_expr(g, as_of, account_ids).rename({key: "account_id"})
            wide = wide.left_join(agg, pop.account_id == agg[key])
            keys.append(key)
        wide = wide.drop(*keys) if keys else wide
        return self.finish(wide, as_of)

    def finish(self, wide: ir.Table, as_of: datetime | Clock | ir.Value) -> ir.Table:
        """Metrics from the population joined with each group's reductions.

        ``as_of`` is the evaluation date: a datetime, or (when many dates are computed
        together) the table's own ``as_of`` column.
        """
        spec = self.model.spec
        if isinstance(as_of, datetime | Clock):
            clock = _clock(as_of)
            D, shifted = clock.at(), clock.at
        else:
            D = as_of

            def shifted(*durations: str) -> ir.Value:
                return shift_value(wide, D, *durations)

        # aggregates and account columns: zero for empty counts, change, covered, fill
        cols: dict[str, ir.Value] = {}
        for name, m in spec.metrics.items():
            if m.aggregate:
                v = self._combined(wide, name, m, "", D)
                if m.change_vs:
                    at = shifted(lag_of(m))
                    prev = self._combined(wide, name, m, "__prev", at)
                    v = self._change(v, prev, m, wide, shifted)
            elif m.column:
                v = wide[m.column.removeprefix("accounts.")]
            else:
                continue
            cols.update(_filled(name, v, m, name not in self.blind))
        wide = wide.mutate(**cols)
        # formulas see metrics after fill; one projection per dependency level
        for level in self._formula_levels():
            resolve = _formula_resolver(wide, spec.metrics)
            cols = {}
            for name in level:
                m = spec.metrics[name]
                v = ex.compile_row(m.formula, resolve, as_of=D, has_flag=_flag_reader(wide))
                cols.update(_filled(name, v, m, name not in self.blind))
            wide = wide.mutate(**cols)
        # rules: whether each condition holds (scoring applies their effects)
        resolve = _formula_resolver(wide, spec.metrics)
        rules = {
            RULE + name: ex.compile_row(
                r.when, resolve, as_of=D, has_flag=_flag_reader(wide)
            ).fill_null(False)
            for name, r in spec.rules.items()
        }
        seg = wide.segment
        if spec.segments:
            seg = segment_name(
                wide[spec.segments.by.removeprefix("accounts.")].cast("string"), self.model
            )
        out = ["account_id", "csm"] + list(spec.metrics) + [n + COVERED for n in spec.metrics]
        return wide.select(*out, segment=seg, as_of=D, **rules)

    def _formula_levels(self) -> list[list[str]]:
        """Formulas grouped so each group only uses metrics computed before it."""
        formulas = {n: m for n, m in self.model.spec.metrics.items() if m.formula}
        level: dict[str, int] = {}
        for name in self.model.formula_order():
            deps = [d for _, d in ex.names_in(formulas[name].formula) if d in formulas]
            level[name] = 1 + max((level[d] for d in deps), default=-1)
        out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for name, lv in level.items():
            out[lv].append(name)
        return out

    def _change(self, cur, prev, m: MetricSpec, wide, shifted) -> ir.Value:
        change = (cur - prev) / prev.nullif(0)
        if m.if_previous_zero is not None:
            on_zero = ibis.ifelse(cur > 0, m.if_previous_zero, 0.0)
            return ibis.ifelse(prev == 0, on_zero, change)
        lag = lag_of(m)
        prev_start = shifted(*(d for d in (lag, m.window) if d))
        too_young = wide.created_at > prev_start
        return ibis.ifelse(too_young, ibis.null("float64"), change.cast("float64"))


def segment_name(value: ir.StringValue, model: Model) -> ir.StringValue:
    """The account's segment as the model spells it when the model names it, whatever
    the case and surrounding spaces in the data (``Enterprise`` -> ``enterprise``);
    other values as they are (they get the default weights and are reported)."""
    names = model.named_segments()
    if not names:
        return value
    return ex.category(value).substitute({n.strip().lower(): n for n in names}, else_=value)


def _columns_read(expr: ir.Table, bases: dict[str, object]) -> dict[str, set[str] | None]:
    """For each table op of ``bases``, the columns ``expr`` reads of it through its
    account-filtered relations (:meth:`MetricBuilder._table`, and the filters over
    them); None when something else than a column, a filter, an aggregate or a row
    count uses those relations (it may read every column: that table is not narrowed),
    or when there is no such relation."""
    from ibis.common.graph import Graph
    from ibis.expr import operations as ops

    users: dict = {}
    for node, children in Graph.from_bfs(expr.op()).items():
        for child in children:
            users.setdefault(child, []).append(node)

    def read(base) -> set[str] | None:
        todo = [n for n in users.get(base, ()) if isinstance(n, ops.Filter) and n.parent == base]
        if not todo:
            return None
        used, seen = {"account_id"}, set()
        while todo:
            rel = todo.pop()
            if rel in seen:
                continue
            seen.add(rel)
            for user in users.get(rel, ()):
                if isinstance(user, ops.Field) and user.rel == rel:
                    used.add(user.name)
                elif isinstance(user, ops.Filter) and user.parent == rel:
                    todo.append(user)
                elif isinstance(user, ops.Aggregate) and user.parent == rel:
                    continue  # its groups and reductions are fields of rel, counted above
                elif isinstance(user, ops.CountStar) and user.arg == rel:
                    continue
                else:
                    return None
        return used

    return {name: read(base) for name, base in bases.items()}


def _masked_columns(t: ir.Table, stamps: list[str], at: ir.Value):
    """Resolve column names, with the timestamps in ``stamps`` reading NULL from ``at`` on."""

    def resolve(name, qualifier=None):
        if name not in t.columns or name.startswith("__"):
            raise KeyError("columns: " + ", ".join(c for c in t.columns if not c.startswith("__")))
        col = t[name]
        return ibis.ifelse(col < at, col, ibis.null(col.type())) if name in stamps else col

    return resolve


def _filled(name: str, value: ir.Value, m: MetricSpec, evidence: bool) -> dict[str, ir.Value]:
    """The metric (after ``fill``) and whether it came from data; without ``evidence``
    (its table holds no row at all) it is missing: NULL, not filled."""
    if not evidence:
        return {name + COVERED: ibis.literal(False), name: ibis.null(value.type())}
    out = {name + COVERED: value.notnull()}
    out[name] = value.fill_null(m.fill) if m.fill is not None else value
    return out


def _flag_reader(t: ir.Table):
    return lambda kind: t[_flag_col(kind)]


def _flag_col(kind: str) -> str:
    """The column holding "has an active flag of ``kind``": named by a digest of the kind
    as a category, so that `X` and `x` are one column and a long kind is not cut by
    PostgreSQL at 63 bytes (two kinds sharing their first 56 characters were one
    ambiguous column)."""
    digest = hashlib.sha256(kind.strip().lower().encode("utf-8")).hexdigest()[:16]
    return f"__flag_{digest}"


def _flag_kind(flags: ir.Table, kind: str) -> ir.BooleanValue:
    """Flags of ``kind``: a category (``Champion_Left`` is ``champion_left``)."""
    return ex.category(flags.kind) == kind.strip().lower()


def _columns_of(t: ir.Table):
    def resolve(name, qualifier=None):
        if name not in t.columns:
            raise KeyError("columns: " + ", ".join(c for c in t.columns if not c.startswith("__")))
        return t[name]

    return resolve


def _formula_resolver(wide: ir.Table, metrics: dict):
    def resolve(name, qualifier=None):
        if qualifier is None and name in metrics:
            return wide[name]
        if name in wide.columns and not name.startswith("__"):
            return wide[name]
        raise KeyError("formulas use metrics and account columns")

    return resolve
