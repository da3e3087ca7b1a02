"""Checks that span sections of a model file: small named validators, problems collected.

Place in the flow: the last step of loading a model (:mod:`healthscore.model.load`), after
the schema. Each check reads the validated :class:`~healthscore.model.Model` and adds one
precise, located problem per thing wrong: metric references, table columns, expressions
(parsed with sqlglot and built as Ibis expressions against unbound tables of the
canonical schema, so an unknown column or a type mismatch fails here with its line),
formula cycles, weights, segments, bands and rules. :func:`check_model` runs them all in
the order of :data:`MODEL_CHECKS` and returns every problem; the loader raises once.

Examples
--------
>>> from healthscore.model import Model, ModelSpec
>>> spec = ModelSpec.model_validate({
...     "metrics": {"u": {"from": "usage_events", "aggregate": "count()", "window": "30d"}},
...     "pillars": {"p": {"weight": 1, "metrics": {"x": {"weight": 1, "bad": 0, "good": 1}}}},
... })
>>> [str(p) for p in check_model(Model(spec))]
["<string>: pillars.p.metrics.x: unknown metric 'x'; hint: defined metrics: u"]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ibis
import ibis.expr.types as ir

from healthscore import expressions as ex
from healthscore.core.limits import MAX_NAME_CHARS
from healthscore.core.tables import TABLES
from healthscore.core.yamlio import key_path
from healthscore.errors import Problem
from healthscore.model.model import Model
from healthscore.model.schema import HEALTH, SCORE_COLUMNS, MetricSpec, MetricUse, Rule

#: weights whose sum is no finite number: each share would be 0 and nothing would score
_TOO_LARGE = "{} add up to more than a number can hold; only their ratios matter: use smaller ones"

#: a metric's name (it names columns of the scores)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

#: any date will do: expressions are built, never run
_AS_OF = "2000-01-01"


@dataclass
class Checks:
    """What the checks share: the model (or one scorecard's view), the problems found so far,
    the type of each metric built so far, and the unbound tables expressions are built on."""

    model: Model
    accounts: ir.Table
    as_of: ir.Scalar
    problems: list[Problem] = field(default_factory=list)
    metric_types: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Model) -> Checks:
        accounts = ibis.table(model.table_schema("accounts"), name="accounts")
        return cls(model, accounts, ibis.literal(ibis.timestamp(_AS_OF), type="timestamp"))

    @property
    def spec(self):
        return self.model.spec

    def scorecard(self, name: str) -> Checks:
        """The same checks seen through scorecard ``name``: problems and types shared."""
        return Checks(
            self.model.scorecard(name),
            self.accounts,
            self.as_of,
            self.problems,
            self.metric_types,
        )

    def add(self, reason: str, *path, got=None, hint=None, expected=None) -> None:
        """One problem at key ``path`` of the view (located in the file)."""
        self.problems.append(
            Problem(
                reason,
                file=self.model.file,
                line=self.model.line_of(*path),
                key=key_path(self.model.full_path(*path)),
                got=got,
                hint=hint,
                expected=expected,
            )
        )

    def compile(self, build: Callable[[], Any], *path) -> Any:
        """``build()``, or None with the expression's error added at ``path``."""
        try:
            return build()
        except ex.ExpressionError as e:
            self.add(str(e), *path)
            return None


# --- the file's tables and metrics ---------------------------------------------------------


def check_columns(c: Checks) -> None:
    """Extra columns are declared on known tables and do not retype a canonical column."""
    for t, cols in c.spec.columns.items():
        if t not in TABLES:
            c.add(f"unknown table {t!r}", "columns", t, hint=_tables_hint())
            continue
        seen = {k.casefold(): k for k in TABLES[t].columns}
        for col, typ in cols.items():
            canon = TABLES[t].columns.get(col)
            if canon and canon != typ:
                c.add(
                    f"{t}.{col} is a canonical column of type {canon}", "columns", t, col, got=typ
                )
            first = seen.setdefault(col.casefold(), col)
            if first != col:  # the store matches names whatever their case: one column
                c.add(
                    f"{t}.{col} and {t}.{first} differ only in case: they would be one column",
                    "columns",
                    t,
                    col,
                )
            if col.startswith("__"):
                c.add(
                    f"{t}.{col}: a column name starting with __ is kept for healthscore's own "
                    "columns",
                    "columns",
                    t,
                    col,
                )


def check_metrics(c: Checks) -> None:
    """Each metric in file order: its name, then its aggregate or account column."""
    for name, metric in c.spec.metrics.items():
        check_metric_name(c, name, metric)
        if metric.aggregate:
            check_aggregate(c, name, metric)
        elif metric.column:
            check_column_metric(c, name, metric)


def check_metric_name(c: Checks, name: str, metric: MetricSpec) -> None:
    """A metric's name is a name of letters, digits and single ``_`` of at most
    :data:`~healthscore.core.limits.MAX_NAME_CHARS` characters, and no other metric, no
    account column (except the one it is) and no column of the score has it whatever its
    case: each becomes columns of the scoring query, where case does not tell names apart."""
    path = ("metrics", name)
    if not _NAME.fullmatch(name) or "__" in name:
        c.add(
            "a metric name is letters, digits and _ (not __), starting with a letter: it names "
            "columns of the scores",
            *path,
        )
    elif len(name) > MAX_NAME_CHARS:
        c.add(f"a metric name is at most {MAX_NAME_CHARS} characters (got {len(name)})", *path)
    key = name.casefold()
    twin = next((m for m in c.spec.metrics if m != name and m.casefold() == key), None)
    if twin is not None and list(c.spec.metrics).index(twin) < list(c.spec.metrics).index(name):
        c.add(f"metric names {twin!r} and {name!r} differ only in case: rename one", *path)
    column = metric.column.removeprefix("accounts.") if metric.column else None
    clash = next((a for a in c.model.table_schema("accounts") if a.casefold() == key), None)
    if clash is not None and clash != column:
        c.add(
            f"metric name {name!r} clashes with the account column {clash!r}; rename the metric",
            *path,
        )
    if key in SCORE_COLUMNS:
        c.add(
            f"metric name {name!r} is a column of the scores ({', '.join(SCORE_COLUMNS)}); "
            "rename the metric",
            *path,
        )


def check_aggregate(c: Checks, name: str, metric: MetricSpec) -> None:
    """An aggregate reads a known event or interval table by a timestamp column; its
    ``where`` is a condition and its ``aggregate`` builds."""
    path = ("metrics", name)
    t = metric.from_
    if t not in TABLES:
        c.add(f"unknown table {t!r}", *path, "from", hint=_tables_hint())
        return
    table_def = TABLES[t]
    schema = c.model.table_schema(t)
    if t == "accounts":
        c.add("aggregate metrics read event or interval tables", *path, "from", got=t)
        return
    table = ibis.table(schema, name=t)
    time = metric.time or table_def.time
    if metric.time and (schema.get(metric.time) != "timestamp"):
        ts_cols = [col for col, ty in schema.items() if ty == "timestamp"]
        c.add(
            f"time column {metric.time!r} is not a timestamp column of {t}",
            *path,
            "time",
            hint="timestamp columns: " + ", ".join(ts_cols),
        )
        return
    resolve = _table_resolver(table, t)
    where = None
    if metric.where:
        where = c.compile(lambda: ex.compile_row(metric.where, resolve), *path, "where")
        if where is not None and not where.type().is_boolean():
            c.add("`where` must be a condition (true/false)", *path, "where")
            where = None  # the aggregate is checked on its own
    agg = ex.AggregateContext(table, where, [table[time], table[table_def.primary_key]])
    value = c.compile(
        lambda: ex.compile_aggregate(metric.aggregate, resolve, agg, as_of=c.as_of),
        *path,
        "aggregate",
    )
    if value is not None:
        c.metric_types[name] = value.type()


def check_column_metric(c: Checks, name: str, metric: MetricSpec) -> None:
    """A column metric names an account column (canonical or declared)."""
    cols = c.model.table_schema("accounts")
    col = metric.column.removeprefix("accounts.")
    if col not in cols:
        c.add(
            f"unknown account column {col!r}",
            "metrics",
            name,
            "column",
            hint="account columns: "
            + ", ".join(cols)
            + "; declare extra ones under `columns: {accounts: {name: type}}`",
        )
    else:
        c.metric_types[name] = ibis.dtype(cols[col])


def check_formulas(c: Checks) -> None:
    """Formulas parse, do not refer to each other in a cycle, and build in dependency order."""
    formulas = {n: m for n, m in c.spec.metrics.items() if m.formula}
    # cycles first: an unresolvable formula would cascade into noise
    graph, unparsed = {}, False
    for n, m in formulas.items():
        try:
            graph[n] = [x for _, x in ex.names_in(m.formula) if x in formulas]
        except ex.ExpressionError as e:
            c.add(str(e), "metrics", n, "formula")
            graph[n], unparsed = [], True
    if unparsed:  # the order below parses every formula again
        return
    cyclic = _cycle(graph)
    if cyclic:
        c.add(
            "formulas refer to each other in a cycle: " + " -> ".join(cyclic),
            "metrics",
            cyclic[0],
            "formula",
        )
        return
    for n in c.model.formula_order():
        m = formulas[n]
        value = c.compile(
            lambda m=m: ex.compile_row(
                m.formula, _formula_resolver(c), as_of=c.as_of, has_flag=_flag_stub
            ),
            "metrics",
            n,
            "formula",
        )
        if value is not None:
            c.metric_types[n] = value.type()


def check_fills(c: Checks) -> None:
    """A metric's ``fill`` (a number) stands in for a number: the backend cannot put 5
    where text, a date or true/false goes (scoring stopped with a traceback)."""
    for name, metric in c.spec.metrics.items():
        typ = c.metric_types.get(name)
        if metric.fill is not None and typ is not None and not typ.is_numeric():
            c.add(
                f"`fill` is a number and {name!r} is {typ}: a missing value can only be "
                "filled in a number metric (use `missing:` where it is scored)",
                "metrics",
                name,
                "fill",
            )


# --- what one scorecard scores with --------------------------------------------------------


def check_pillar_metrics(c: Checks) -> None:
    """Each pillar has metrics carrying weight, each a known metric its normalisation fits."""
    for p, pillar in c.spec.pillars.items():
        if not pillar.metrics:
            c.add("a pillar needs at least one metric", "pillars", p, "metrics")
        elif pillar.weight > 0 and sum(u.weight for u in pillar.metrics.values()) <= 0:
            c.add("all metric weights are 0 in a pillar that has weight", "pillars", p, "metrics")
        elif not math.isfinite(sum(u.weight for u in pillar.metrics.values())):
            c.add(_TOO_LARGE.format("metric weights"), "pillars", p, "metrics")
        for m, use in pillar.metrics.items():
            check_metric_use(c, p, m, use)


def check_metric_use(c: Checks, pillar: str, metric: str, use: MetricUse) -> None:
    """A scored metric is defined; a number is normalised by range or points, text by map."""
    path = ("pillars", pillar, "metrics", metric)
    if metric not in c.spec.metrics:
        c.add(
            f"unknown metric {metric!r}",
            *path,
            hint="defined metrics: " + ", ".join(c.spec.metrics),
        )
        return
    typ = c.metric_types.get(metric)
    if typ is None:  # its own error is reported already
        return
    if use.map is None and not (typ.is_numeric() or typ.is_boolean()):
        c.add(f"metric {metric!r} is {typ}, not a number: normalise it with `map:`", *path)
    if use.map is not None and not typ.is_string():
        c.add(f"`map:` normalises text categories; {metric!r} is {typ}", *path, "map")
    if use.map is not None:
        _same_category(c, list(use.map), *path, "map")


def _same_category(c: Checks, names: list[str], *path) -> None:
    """Category names are matched whatever their case and surrounding spaces: two that
    differ only so would be one category with two meanings."""
    seen: dict[str, str] = {}
    for name in names:
        key = str(name).strip().lower()
        if key in seen and seen[key] != name:
            c.add(
                f"{seen[key]!r} and {name!r} are the same category (case and surrounding "
                "spaces do not matter): keep one",
                *path,
                name,
            )
        seen.setdefault(key, name)


def check_metrics_scored_once(c: Checks) -> None:
    """A metric is scored in one pillar only."""
    seen: dict[str, str] = {}
    for p, pillar in c.spec.pillars.items():
        for m in pillar.metrics:
            if m in seen:
                c.add(
                    f"metric {m!r} is already scored in pillar {seen[m]!r}",
                    "pillars",
                    p,
                    "metrics",
                    m,
                )
            seen.setdefault(m, p)


def check_pillar_weights(c: Checks) -> None:
    """There is a pillar, and the pillar weights do not add up to 0."""
    if not c.spec.pillars:
        c.add("a model needs at least one pillar", "pillars")
    elif sum(p.weight for p in c.spec.pillars.values()) <= 0:
        c.add("pillar weights add up to 0", "pillars")
    elif not math.isfinite(sum(p.weight for p in c.spec.pillars.values())):
        c.add(_TOO_LARGE.format("pillar weights"), "pillars")


def check_segments(c: Checks) -> None:
    """Segments come from an account column or a metric and reweight known pillars."""
    seg = c.spec.segments
    if seg is None:
        return
    by = seg.by.removeprefix("accounts.")
    cols = c.model.table_schema("accounts")
    if by not in cols and by not in c.spec.metrics:
        c.add(
            f"unknown segment column or metric {by!r}",
            "segments",
            "by",
            hint="account columns: " + ", ".join(cols),
        )
    _same_category(c, list(seg.weights), "segments", "weights")
    _same_category(c, list(seg.bands), "segments", "bands")
    for s, weights in seg.weights.items():
        for p in weights:
            if p not in c.spec.pillars:
                c.add(
                    f"unknown pillar {p!r}",
                    "segments",
                    "weights",
                    s,
                    p,
                    hint="pillars: " + ", ".join(c.spec.pillars),
                )
        merged = {pp: v.weight for pp, v in c.spec.pillars.items()}
        merged.update({k: v for k, v in weights.items() if k in merged})
        if sum(merged.values()) <= 0:
            c.add("pillar weights add up to 0 for this segment", "segments", "weights", s)
        elif not math.isfinite(sum(merged.values())):
            c.add(_TOO_LARGE.format("pillar weights"), "segments", "weights", s)


def check_rules(c: Checks) -> None:
    """Each rule, in file order."""
    for name, rule in c.spec.rules.items():
        check_rule(c, name, rule)
    _case_twins(c, "rule", list(c.spec.rules), "rules")


def check_pillar_names(c: Checks) -> None:
    """Pillar names differ whatever their case and are at most
    :data:`~healthscore.core.limits.MAX_NAME_CHARS` characters (each names a column)."""
    for p in c.spec.pillars:
        if len(p.encode("utf-8")) > MAX_NAME_CHARS:
            c.add(
                f"a pillar name is at most {MAX_NAME_CHARS} bytes (got {len(p.encode())})",
                "pillars",
                p,
            )
    _case_twins(c, "pillar", list(c.spec.pillars), "pillars")


def _case_twins(c: Checks, noun: str, names: list[str], *path) -> None:
    """One problem per name that differs from an earlier one only in case: both would name
    the same column of the scoring query (its columns are matched whatever their case)."""
    seen: dict[str, str] = {}
    for name in names:
        first = seen.setdefault(name.casefold(), name)
        if first != name:
            c.add(
                f"{noun} names {first!r} and {name!r} differ only in case: rename one", *path, name
            )


def check_rule(c: Checks, name: str, rule: Rule) -> None:
    """A rule's name can name a column, its ``when`` is a condition, its floor <= its cap."""
    path = ("rules", name)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or "__" in name:
        c.add("a rule name is letters, digits and _ (not __): it names output columns", *path)
    elif len(name) > MAX_NAME_CHARS:
        c.add(f"a rule name is at most {MAX_NAME_CHARS} characters (got {len(name)})", *path)
    value = c.compile(
        lambda: ex.compile_row(rule.when, _formula_resolver(c), as_of=c.as_of, has_flag=_flag_stub),
        *path,
        "when",
    )
    if value is not None and not value.type().is_boolean():
        c.add("`when` must be a condition (true/false)", *path, "when")
    if rule.floor is not None and rule.cap is not None and rule.floor > rule.cap:
        c.add(f"floor {rule.floor:g} is above cap {rule.cap:g}", *path)


#: what one scorecard scores with: checked for the file's own pillars and each scorecard
SCORING_CHECKS = (
    check_pillar_names,
    check_pillar_metrics,
    check_metrics_scored_once,
    check_pillar_weights,
    check_segments,
    check_rules,
)


# --- the rest of the file ------------------------------------------------------------------


def check_population(c: Checks) -> None:
    """The model's population is a condition over account columns."""
    if c.spec.population:
        check_condition_on_accounts(c, c.spec.population, "population")


def check_freshness(c: Checks) -> None:
    """Expected lags are given for known tables."""
    for t in c.spec.freshness:
        if t not in TABLES:
            c.add(f"unknown table {t!r}", "freshness", t, hint=_tables_hint())


def check_scorecards(c: Checks) -> None:
    """Each scorecard is not named `health` and passes the scoring checks; its population
    is a condition over account columns."""
    for name, card in c.spec.scorecards.items():
        if name == HEALTH:
            c.add(
                "the `health` scorecard is the file's top-level pillars; name this one differently",
                "scorecards",
                name,
            )
            continue
        view = c.scorecard(name)
        for check in SCORING_CHECKS:
            check(view)
        if card.population:
            check_condition_on_accounts(view, card.population, "scorecards", name, "population")


def check_condition_on_accounts(c: Checks, text: str, *path) -> None:
    """``text`` is a condition over account columns (a population)."""
    acc = c.accounts

    def resolve(name, qualifier=None):
        if qualifier not in (None, "accounts") or name not in acc.columns:
            raise KeyError("account columns: " + ", ".join(acc.columns))
        return acc[name]

    value = c.compile(
        lambda: ex.compile_row(text, resolve, as_of=c.as_of, has_flag=_flag_stub), *path
    )
    if value is not None and not value.type().is_boolean():
        c.add("must be a condition (true/false)", *path)


#: every check of a model file, in the order their problems are listed
MODEL_CHECKS = (
    check_columns,
    check_metrics,
    check_formulas,
    check_fills,
    *SCORING_CHECKS,
    check_population,
    check_freshness,
    check_scorecards,
)


def check_model(model: Model) -> list[Problem]:
    """Every problem :data:`MODEL_CHECKS` find in ``model``, in that order."""
    checks = Checks.of(model)
    for check in MODEL_CHECKS:
        check(checks)
    return checks.problems


# --- helpers -------------------------------------------------------------------------------


def _formula_resolver(c: Checks):
    """Names in formulas and rules: metrics built so far and account columns.

    A metric stands in as a column of its type (a typed NULL literal would compare with
    anything: Ibis lets ``NULL = 'a'`` through, so ``seats = 'a'`` passed here and failed
    in the backend)."""
    known = {**c.metric_types}
    typed = {n: t for n, t in known.items() if not t.is_null()}
    built = ibis.table(typed, name="metrics") if typed else None
    acc = c.accounts

    def resolve(name, qualifier=None):
        if qualifier not in (None, "accounts"):
            raise KeyError(f"only accounts.<column> may be qualified (got {qualifier}.)")
        if qualifier is None and name in known:
            return built[name] if name in typed else ibis.null()
        if name in acc.columns:
            return acc[name]
        if name in c.spec.metrics:
            raise KeyError(f"metric {name!r} could not be built (see its own error)")
        raise KeyError(
            "formulas and rules may use metrics ("
            + ", ".join(c.spec.metrics)
            + ") and account columns"
        )

    return resolve


def _table_resolver(table, name: str):
    """Names in an aggregate's expressions: the columns of its table."""

    def resolve(col, qualifier=None):
        if qualifier not in (None, name) or col not in table.columns:
            raise KeyError(
                f"columns of {name}: "
                + ", ".join(table.columns)
                + f"; declare extra ones under `columns: {{{name}: {{column: type}}}}`"
            )
        return table[col]

    return resolve


def _flag_stub(kind: str):
    return ibis.literal(False)


def _tables_hint() -> str:
    return "tables: " + ", ".join(TABLES)


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The first cycle found in ``graph`` (a path that ends where it started), or None."""
    state: dict[str, int] = {}

    def dfs(n, stack):
        state[n] = 1
        for d in graph.get(n, []):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d] if d in stack else [n, d]
            if state.get(d) is None:
                found = dfs(d, [*stack, d])
                if found:
                    return found
        state[n] = 2
        return None

    for n in graph:
        if state.get(n) is None:
            found = dfs(n, [n])
            if found:
                return found
    return None
