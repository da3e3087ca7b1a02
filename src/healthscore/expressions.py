"""The model's small SQL dialect: text -> sqlglot tree -> Ibis expression.

Place in the flow: used by ``model`` (to validate ``where``, ``aggregate``,
``formula`` and ``population`` expressions when a model loads) and by ``metrics``
(to build the Ibis expressions that run in the backend). No SQL text ever reaches a
backend: expressions are parsed with sqlglot and rebuilt node by node as Ibis
expressions over an allow-list of operators and functions, so the same model runs on
every Ibis backend and an unknown name fails when the model loads.

Two contexts:

- **row** expressions (``where``, arguments of aggregates, formulas, population):
  columns, literals, arithmetic, comparisons, ``AND/OR/NOT``, ``IN``, ``BETWEEN``,
  ``LIKE``, ``IS [NOT] NULL``, ``CASE``, and the scalar functions in :data:`SCALARS`;
  text compared with ``=``, ``<>``, ``IN``, ``LIKE`` or ``CASE x WHEN`` is a category:
  case and surrounding spaces do not matter (``priority = 'Urgent'`` holds for
  `` urgent``), as for segments and ``map:`` keys;
- **aggregate** expressions (a metric's ``aggregate:``): the same, plus the
  aggregates in :data:`AGGREGATES`, which take the metric's filter and window.

Division by zero gives NULL on every backend (the metric's missing-data policy then
applies), never infinity.

Nothing outside this language is read another way: a call is parsed as the name and the
arguments written (sqlglot's DuckDB parser would read ``ifnull(a, b)`` as coalesce and
drop the second argument of ``ceil(x, 2)``), so an alias is an unknown function named as
written and a wrong number of arguments is an error; ``LIKE`` takes a quoted pattern,
``IN`` a list of values of one type; numbers are read exactly as written (digits 0-9,
finite).

Examples
--------
>>> import ibis
>>> t = ibis.table({"kind": "string", "score": "float64"}, name="surveys")
>>> e = compile_row("kind = 'nps' AND score >= 9", t.__getitem__)
>>> e.type()
Boolean(nullable=True)
>>> names_in("active_users_30d / accounts.seats")
[(None, 'active_users_30d'), ('accounts', 'seats')]
>>> compile_row("nosuch(x)", t.__getitem__)
Traceback (most recent call last):
...
healthscore.expressions.ExpressionError: unknown function 'nosuch'; allowed: abs, ceil, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlglot as sg
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.tokens import TokenType

from healthscore.core.lazy import lazy
from healthscore.core.limits import MAX_EXPRESSION_CHARS, MAX_EXPRESSION_DEPTH

if TYPE_CHECKING:
    import ibis.expr.types as ir

# Ibis is imported when the first expression is built: reading a formula's names
# (:func:`names_in`, what a model's metrics depend on) needs only sqlglot
ibis = lazy("ibis")
_ibis_annotations = lazy("ibis.common.annotations")
_ibis_exceptions = lazy("ibis.common.exceptions")

SECONDS_PER_DAY = 86_400.0


class _Parser(DuckDB.Parser):
    # every call parses as the name and the arguments written: DuckDB's parser would read
    # `ifnull(a, b)` as coalesce, `log10(x, 2)` as log10(x) and `ceil(x, 2)` as ceil(x),
    # silently (see _function); names outside the language are refused by name
    FUNCTIONS: dict = {}
    FUNCTION_PARSERS: dict = {}


class _Dialect(DuckDB):
    Parser = _Parser


_DIALECT = _Dialect()


class ExpressionError(Exception):
    """An expression does not parse, names something unknown, or mixes types badly."""


#: scalar functions: name -> (min args, max args)
SCALARS: dict[str, tuple[int, int]] = {
    "abs": (1, 1),
    "ceil": (1, 1),
    "coalesce": (1, 99),
    "days_between": (2, 2),
    "days_since": (1, 1),
    "days_until": (1, 1),
    "exp": (1, 1),
    "floor": (1, 1),
    "greatest": (1, 99),
    "has_flag": (1, 1),
    "hours_between": (2, 2),
    "least": (1, 99),
    "length": (1, 1),
    "ln": (1, 1),
    "log": (2, 2),
    "log10": (1, 1),
    "lower": (1, 1),
    "nullif": (2, 2),
    "power": (2, 2),
    "round": (1, 2),
    "sqrt": (1, 1),
    "upper": (1, 1),
}

#: aggregates usable in a metric's ``aggregate:``
AGGREGATES = (
    "count",
    "count_distinct",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "median",
    "last",
    "first",
)

#: aggregates whose value over no rows is 0 (not missing)
ZERO_WHEN_EMPTY = frozenset({"count", "count_distinct", "sum"})

Resolver = Callable[..., "ir.Value"]


@dataclass
class AggregateContext:
    """What aggregates in an expression need: the row filter and the order for last().

    ``collect`` (a list) records each reduction as ``(aggregate name, reduction)``;
    ``post`` (a list of values) makes the i-th aggregate call return ``post[i]`` instead
    of a reduction: together they split ``days_since(max(ts))`` or ``count() / 30`` into
    reductions computed per account and an outer expression computed after the join,
    where an account without rows gets 0 for its counts.
    """

    table: ir.Table | None
    where: ir.BooleanValue | None
    order_by: list[ir.Value]  # for last()/first(): time column, then primary key
    collect: list | None = None
    post: list | None = None


def parse(text: str) -> exp.Expression:
    """Parse ``text`` in the model dialect; raise :class:`ExpressionError` on bad syntax.

    The text must be exactly one expression, so the file says what is applied: a ``;``
    (which would end it, leaving the rest unread) and a SQL comment (``--`` or
    ``/* */``, whose text would be ignored) are refused, as are texts over
    :data:`~healthscore.core.limits.MAX_EXPRESSION_CHARS` characters or nested deeper
    than :data:`~healthscore.core.limits.MAX_EXPRESSION_DEPTH`.

    >>> parse("kind = 'nps'; DROP TABLE accounts; --")
    Traceback (most recent call last):
    ...
    healthscore.expressions.ExpressionError: `;` ends the expression at column 13 and the \
text after it would be ignored; write one expression without `;`
    >>> parse("kind = '--;'").sql()
    "kind = '--;'"
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"expression is {len(text):,} characters long; at most "
            f"{MAX_EXPRESSION_CHARS:,} are allowed (split it into formula metrics)"
        )
    try:
        tokens = _DIALECT.tokenize(text)
        for t in tokens:
            if t.token_type == TokenType.SEMICOLON:
                raise ExpressionError(
                    f"`;` ends the expression at column {t.start + 1} and the text after it "
                    "would be ignored; write one expression without `;`"
                )
            if t.comments:
                raise ExpressionError(
                    f"a SQL comment (`--` or `/* */`) next to {t.text!r}: its text would be "
                    "ignored; put comments outside the quotes, after a YAML `#`"
                )
        nodes = _DIALECT.parser().parse(tokens, text)
    except sg.errors.ParseError as e:
        first = e.errors[0] if e.errors else {}
        col = first.get("col")
        desc = first.get("description", str(e))
        raise ExpressionError(
            f"does not parse: {desc}" + (f" near column {col}" if col else "")
        ) from None
    except sg.errors.TokenError as e:
        raise ExpressionError(f"does not parse: {e}") from None
    except RecursionError:
        raise ExpressionError(
            f"nested more than {MAX_EXPRESSION_DEPTH} levels deep; split it into formula metrics"
        ) from None
    if len(nodes) != 1 or nodes[0] is None:  # pragma: no cover - `;` is refused above
        raise ExpressionError("write exactly one expression")
    node = nodes[0]
    if _depth(node) > MAX_EXPRESSION_DEPTH:
        raise ExpressionError(
            f"nested more than {MAX_EXPRESSION_DEPTH} levels deep; split it into formula metrics"
        )
    return node


def _depth(node: exp.Expression) -> int:
    """How deeply ``node``'s tree nests (iteratively: a deep tree must not overflow here)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in n.iter_expressions())
    return deepest


def names_in(text: str | exp.Expression) -> list[tuple[str | None, str]]:
    """The (qualifier, name) pairs an expression refers to, in order of appearance."""
    node = parse(text) if isinstance(text, str) else text
    out: list[tuple[str | None, str]] = []
    for col in node.find_all(exp.Column):
        pair = (col.table or None, col.name)
        if pair not in out:
            out.append(pair)
    return out


def function_name(node: exp.Expression) -> str | None:
    """The name of a call as written, in lower case (None: not a call)."""
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    return None


def compile_row(
    text: str | exp.Expression,
    resolve: Resolver,
    *,
    as_of: ir.TimestampScalar | None = None,
    has_flag: Callable[[str], ir.BooleanValue] | None = None,
) -> ir.Value:
    """Build the Ibis expression for a row-level expression.

    Parameters
    ----------
    text
        The expression (or an already parsed tree).
    resolve
        ``resolve(name)`` or ``resolve(name, qualifier)`` returns the Ibis column for a
        name; it raises ``KeyError`` for an unknown one.
    as_of
        The as-of timestamp (for ``days_since`` / ``days_until``).
    has_flag
        Returns the boolean "account has an active flag of this kind" expression.
    """
    node = parse(text) if isinstance(text, str) else text
    return _Builder(resolve, as_of, has_flag, None).build(node)


def compile_aggregate(
    text: str | exp.Expression,
    resolve: Resolver,
    ctx: AggregateContext,
    *,
    as_of: ir.TimestampScalar | None = None,
) -> ir.Scalar:
    """Build the Ibis reduction for an ``aggregate:`` such as ``count_distinct(user_id)``."""
    node = parse(text) if isinstance(text, str) else text
    value = _Builder(resolve, as_of, None, ctx).build(node)
    if not any(function_name(n) in AGGREGATES for n in node.walk()):
        raise ExpressionError(
            "an aggregate must use one of " + ", ".join(f"{a}()" for a in AGGREGATES)
        )
    return value


def aggregate_parts(
    text: str | exp.Expression, resolve: Resolver, ctx: AggregateContext, *, as_of=None
) -> list[tuple[str, ir.Scalar]]:
    """The reductions inside an ``aggregate:`` expression, as (aggregate name, reduction)."""
    ctx.collect = []
    compile_aggregate(text, resolve, ctx, as_of=as_of)
    return ctx.collect


def combine_aggregate(text: str | exp.Expression, parts: list[ir.Value], *, as_of=None):
    """Rebuild an ``aggregate:`` expression over already computed reductions ``parts``."""
    node = parse(text) if isinstance(text, str) else text
    ctx = AggregateContext(None, None, [], post=list(parts))
    return _Builder(_no_columns, as_of, None, ctx).build(node)


def _no_columns(name, qualifier=None):
    raise KeyError("columns are only allowed inside aggregates here")


class _Builder:
    def __init__(self, resolve, as_of, has_flag, agg: AggregateContext | None):
        self.resolve = resolve
        self.as_of = as_of
        self.has_flag = has_flag
        self.agg = agg
        self.in_aggregate = False

    # --- dispatch -------------------------------------------------------------------
    def build(self, node: exp.Expression) -> ir.Value:
        try:
            return _finite(self._build(node))
        except ExpressionError:
            raise
        except (
            _ibis_exceptions.IbisError,
            _ibis_annotations.ValidationError,
            TypeError,
            AttributeError,
            ValueError,
        ) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise ExpressionError(f"types do not fit in {node.sql()!r}: {first}") from None

    def _build(self, node: exp.Expression) -> ir.Value:
        b = self._build
        if isinstance(node, exp.Paren):
            return b(node.this)
        if isinstance(node, exp.Column):
            return self._column(node)
        if isinstance(node, exp.Literal):
            return ibis.literal(node.this) if node.is_string else _number(node.this)
        if isinstance(node, exp.Boolean):
            return ibis.literal(bool(node.this))
        if isinstance(node, exp.Null):
            return ibis.null()
        if isinstance(node, exp.Neg):
            return -b(node.this)
        if isinstance(node, exp.Not):
            return ~_condition(b(node.this), "NOT", node)
        if isinstance(node, exp.And | exp.Or):
            word = "AND" if isinstance(node, exp.And) else "OR"
            x = _condition(b(node.this), word, node)
            y = _condition(b(node.expression), word, node)
            return x & y if word == "AND" else x | y
        binary = {
            exp.Add: lambda x, y: x + y,
            exp.Sub: lambda x, y: x - y,
            exp.Mul: lambda x, y: x * y,
            exp.Div: lambda x, y: x / y.nullif(0),
            exp.Mod: lambda x, y: x % y.nullif(0),
            exp.EQ: lambda x, y: x == y,
            exp.NEQ: lambda x, y: x != y,
            exp.GT: lambda x, y: x > y,
            exp.GTE: lambda x, y: x >= y,
            exp.LT: lambda x, y: x < y,
            exp.LTE: lambda x, y: x <= y,
        }
        for cls, fn in binary.items():
            if type(node) is cls:
                x, y = b(node.this), b(node.expression)
                if cls in _ARITHMETIC and not (_numeric(x) and _numeric(y)):
                    raise ExpressionError(
                        f"arithmetic needs numbers in {node.sql()!r} "
                        f"(got {x.type()} and {y.type()}); for dates use days_between()"
                    )
                if cls in (exp.EQ, exp.NEQ):
                    x, y = _categories(x, y)
                return fn(x, y)
        if isinstance(node, exp.Is):
            if isinstance(node.expression, exp.Null):
                return b(node.this).isnull()
            raise ExpressionError(f"only IS NULL / IS NOT NULL are supported: {node.sql()!r}")
        if isinstance(node, exp.In):
            if node.args.get("query"):
                raise ExpressionError("subqueries are not allowed")
            if any(node.args.get(k) for k in ("unnest", "field")) or not node.expressions:
                raise ExpressionError(
                    f"IN takes a list of values, e.g. kind IN ('a', 'b'): {node.sql()!r}"
                )
            x, *values = _categories(b(node.this), *[b(e) for e in node.expressions])
            for v in values:  # the backend would fail at run time, or compare as text
                if not _comparable(x, v):
                    raise ExpressionError(
                        f"IN compares {x.type()} with {v.type()} in {node.sql()!r}; "
                        "give values of one type"
                    )
            return x.isin(values)
        if isinstance(node, exp.Between):
            if node.args.get("symmetric"):
                raise ExpressionError(
                    f"BETWEEN SYMMETRIC is not allowed: {node.sql()!r}; write low AND high"
                )
            return b(node.this).between(b(node.args["low"]), b(node.args["high"]))
        if isinstance(node, exp.Like):  # a category comparison: as ILIKE, spaces around ignored
            pattern = node.expression
            if not (isinstance(pattern, exp.Literal) and pattern.is_string):
                raise ExpressionError(
                    f"LIKE takes a quoted pattern, e.g. event LIKE 'export%': {node.sql()!r}"
                )
            x = b(node.this)
            if _text(x):
                return x.strip().ilike(pattern.this)
            return x.like(pattern.this)
        if isinstance(node, exp.ILike):
            raise ExpressionError(
                f"ILIKE is not allowed: {node.sql()!r}; LIKE already ignores case and "
                "surrounding spaces"
            )
        if isinstance(node, exp.Case):
            return self._case(node)
        if isinstance(node, exp.Func):
            return self._function(node)
        raise ExpressionError(f"{node.key.upper()} is not allowed here: {node.sql()!r}")

    def _column(self, node: exp.Column) -> ir.Value:
        if self.agg is not None and not self.in_aggregate:
            raise ExpressionError(
                f"column {node.sql()!r} must be inside an aggregate, e.g. max({node.sql()})"
            )
        if node.args.get("db") or node.args.get("catalog"):
            raise ExpressionError(
                f"{node.sql()!r} names a database or schema; write column or table.column"
            )
        qualifier = node.table or None
        try:
            return self.resolve(node.name, qualifier) if qualifier else self.resolve(node.name)
        except KeyError as e:
            shown = f"{qualifier}.{node.name}" if qualifier else node.name
            known = e.args[0] if e.args and isinstance(e.args[0], str) else ""
            msg = f"unknown name {shown!r}{_lookalike(shown)}" + (f"; {known}" if known else "")
            raise ExpressionError(msg) from None

    def _case(self, node: exp.Case) -> ir.Value:
        base = self._build(node.this) if node.this else None
        case = None
        for branch in node.args["ifs"]:
            cond = self._build(branch.this)
            if base is not None:
                x, y = _categories(base, cond)
                cond = x == y
            else:
                cond = _condition(cond, "CASE WHEN", branch.this)
            pair = (cond, self._build(branch.args["true"]))
            case = [pair] if case is None else case + [pair]
        default = node.args.get("default")
        return ibis.cases(*case, else_=self._build(default) if default else None)

    # --- functions -------------------------------------------------------------------
    def _args(self, node: exp.Func) -> list[exp.Expression]:
        return list(node.expressions)

    def _function(self, node: exp.Func) -> ir.Value:
        name = function_name(node)
        if name is None:  # an operator or keyword the parser reads as a function
            shown = node.sql()
            word = shown.split("(")[0].strip() if "(" in shown else node.key.upper()
            raise ExpressionError(f"{word} is not allowed here: {shown!r}")
        if name not in SCALARS and name not in AGGREGATES:
            allowed = sorted(SCALARS) + ([] if self.agg is None else list(AGGREGATES))
            raise ExpressionError(
                f"unknown function {node.name!r}{_lookalike(node.name)}; "
                f"allowed: {', '.join(allowed)}"
            )
        if name in AGGREGATES:
            return self._aggregate(name, node)
        args = self._args(node)
        lo, hi = SCALARS[name]
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ExpressionError(f"{name}() takes {want} argument(s), got {len(args)}")
        if name == "has_flag":
            return self._has_flag(args)
        v = [self._build(a) for a in args]
        if name in ("days_since", "days_until", "days_between", "hours_between"):
            for a, x in zip(args, v, strict=True):
                if not (x.type().is_timestamp() or x.type().is_date()):
                    raise ExpressionError(
                        f"{name}() takes dates or timestamps; {a.sql()!r} is {x.type()}"
                    )
        if name in ("days_since", "days_until"):
            if self.as_of is None:
                raise ExpressionError(f"{name}() needs the as-of date and is not allowed here")
            days = (self.as_of.epoch_seconds() - v[0].epoch_seconds()) / SECONDS_PER_DAY
            return days if name == "days_since" else -days
        if name in ("days_between", "hours_between"):
            unit = SECONDS_PER_DAY if name == "days_between" else 3600.0
            return (v[1].epoch_seconds() - v[0].epoch_seconds()) / unit
        simple = {
            "abs": lambda x: x.abs(),
            "ceil": lambda x: x.ceil(),
            "floor": lambda x: x.floor(),
            "exp": _exp,
            # outside their domain these give no value (like division by zero), not an error
            "ln": lambda x: ibis.ifelse(x > 0, x.ln(), ibis.null("float64")),
            "log10": lambda x: ibis.ifelse(x > 0, x.log10(), ibis.null("float64")),
            "sqrt": lambda x: ibis.ifelse(x >= 0, x.sqrt(), ibis.null("float64")),
            "lower": lambda x: x.lower(),
            "upper": lambda x: x.upper(),
            "length": lambda x: x.length(),
        }
        if name in simple:
            return simple[name](v[0])
        if name == "coalesce":
            return ibis.coalesce(*v)
        if name == "greatest":
            return ibis.greatest(*v)
        if name == "least":
            return ibis.least(*v)
        if name == "nullif":
            return v[0].nullif(v[1])
        if name == "log":
            base, x = v
            ok = (x > 0) & (base > 0) & (base != 1)
            return ibis.ifelse(ok, x.ln() / base.ln(), ibis.null("float64"))
        if name == "power":
            return _power(*v)
        if name == "round":
            return v[0].round(_places(args[1]) if len(args) > 1 else 0)
        raise AssertionError(name)  # pragma: no cover - SCALARS and this switch agree

    def _has_flag(self, args: list[exp.Expression]) -> ir.Value:
        if not (isinstance(args[0], exp.Literal) and args[0].is_string):
            raise ExpressionError(
                "has_flag() takes a quoted flag kind, e.g. has_flag('champion_left')"
            )
        if not args[0].this.strip():  # no flag has an empty kind: it would never hold
            raise ExpressionError("has_flag() needs a flag kind, e.g. has_flag('champion_left')")
        if self.has_flag is None:
            raise ExpressionError("has_flag() is only allowed in formulas, rules and population")
        return self.has_flag(args[0].this)

    def _aggregate(self, name: str, node: exp.Func) -> ir.Scalar:
        if self.agg is None:
            raise ExpressionError(
                f"{name}() is an aggregate; aggregates belong in a metric's `aggregate:`"
            )
        if self.in_aggregate:
            raise ExpressionError(f"aggregates cannot be nested: {node.sql()!r}")
        if self.agg.post is not None:
            return self.agg.post.pop(0)
        where = self.agg.where
        args = self._args(node)
        reduction = self._reduction(name, node, args, where)
        if self.agg.collect is not None:
            distinct = name == "count" and args and isinstance(args[0], exp.Distinct)
            self.agg.collect.append(("count_distinct" if distinct else name, reduction))
        return reduction

    def _reduction(self, name, node, args, where) -> ir.Scalar:
        self.in_aggregate = True
        try:
            if name == "count" and len(args) > 1:
                raise ExpressionError(f"count() takes at most 1 argument, got {len(args)}")
            if name == "count":
                if not args or isinstance(args[0], exp.Star):
                    return self.agg.table.count(where=where)
                if isinstance(args[0], exp.Distinct):
                    inner = args[0].expressions
                    if len(inner) != 1:
                        raise ExpressionError("count(distinct ...) takes one column")
                    return self._build(inner[0]).nunique(where=where)
                return self._build(args[0]).count(where=where)
            if len(args) != 1:
                raise ExpressionError(f"{name}() takes 1 argument, got {len(args)}")
            x = self._build(args[0])
            if name == "count_distinct":
                return x.nunique(where=where)
            if name in ("avg", "mean"):
                return x.mean(where=where)
            if name in ("last", "first"):
                key = ibis.struct({f"k{i}": k for i, k in enumerate(self.agg.order_by)})
                return x.argmax(key, where=where) if name == "last" else x.argmin(key, where=where)
            return getattr(x, name)(where=where)
        finally:
            self.in_aggregate = False


_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)


def _finite(v: ir.Value) -> ir.Value:
    """An expression's number as no value where it is not a finite number: ``power(-8,
    0.5)`` (NaN) or ``exp(1000)`` (infinity), like ``ln(0)`` and a division by zero. A
    NaN compares above every number, so it would score as the best value there is, and
    JSON has no form for either."""
    if v.type().is_floating():
        return ibis.ifelse(v.isnan() | v.isinf(), ibis.null(v.type()), v)
    return v


def _number(text: str) -> ir.Value:
    """A number as written: a whole number exactly (not through a float, which would
    turn 9007199254740993 into ...992), anything else as a finite float."""
    digits = text.replace("_", "")
    if not digits.isascii():  # Python's float() reads "１０" (fullwidth) as 10
        raise ExpressionError(f"{text!r} is not a number written with the digits 0-9")
    if digits.isdigit():
        n = int(digits)
        if n > _INT64_MAX:
            raise ExpressionError(
                f"{text} is too large for a whole number (at most {_INT64_MAX}); "
                "write it with a decimal point or an exponent to mean a decimal number"
            )
        return ibis.literal(n)
    v = float(digits)
    if not math.isfinite(v):
        raise ExpressionError(f"{text} is not a finite number")
    if v.is_integer() and "." not in digits and abs(v) <= _INT64_MAX:  # 1e3: a whole number
        return ibis.literal(int(v))
    return ibis.literal(v)


_INT64_MAX = 2**63 - 1


def _places(arg: exp.Expression) -> int:
    """round()'s decimal places: a whole number as written (negative: tens, hundreds)."""
    node, sign = (arg.this, -1) if isinstance(arg, exp.Neg) else (arg, 1)
    if (
        isinstance(node, exp.Literal)
        and not node.is_string
        and node.this.isascii()
        and node.this.isdigit()
    ):
        return sign * int(node.this)
    raise ExpressionError(
        f"round() takes a whole number of decimal places, e.g. round(x, 2); got {arg.sql()!r}"
    )


def _lookalike(name: str) -> str:
    """`` (holds U+0456 'і', not ASCII)`` for a name with a character that is not plain
    ASCII: `kіnd` with a Cyrillic і looks like `kind` in any editor."""
    odd = next((ch for ch in name if not ch.isascii()), None)
    return f" (holds U+{ord(odd):04X} {odd!r}, not ASCII)" if odd else ""


def _condition(v: ir.Value, word: str, node: exp.Expression) -> ir.Value:
    """``v`` if it is a condition (true/false, or NULL); else what is wrong."""
    if v.type().is_boolean() or v.type().is_null():
        return v
    raise ExpressionError(
        f"{word} needs conditions (true/false); {node.sql()!r} gives it {v.type()}"
    )


def _comparable(x: ir.Value, y: ir.Value) -> bool:
    try:
        x == y  # noqa: B015 - Ibis checks the types as it builds the comparison
    except (_ibis_exceptions.IbisTypeError, _ibis_annotations.ValidationError, TypeError):
        return False
    return True


#: ln of the largest and of the smallest normal float: past them exp() overflows to
#: infinity or underflows to 0, which PostgreSQL reports as an error ("value out of range")
_LN_MAX, _LN_MIN = 709.0, -708.0


def _exp(x: ir.NumericValue) -> ir.FloatingValue:
    """exp(x), with no value past the largest float and 0 below the smallest, as on DuckDB
    (PostgreSQL stops the query: "value out of range: overflow")."""
    x = x.cast("float64")
    return ibis.cases(
        (x > _LN_MAX, ibis.null("float64")), (x < _LN_MIN, ibis.literal(0.0)), else_=x.exp()
    )


def _power(b: ir.NumericValue, e: ir.NumericValue) -> ir.FloatingValue:
    """b ** e, with no value where it is no finite real number (a negative base to a
    fractional power, 0 to a negative one, beyond the largest float) and 0 below the
    smallest: DuckDB gives NaN or infinity there, PostgreSQL stops the query."""
    b, e = b.cast("float64"), e.cast("float64")
    # e's magnitude bounded so that the test itself cannot overflow (|ln| < 745)
    size = ibis.least(ibis.greatest(e, -1e300), 1e300) * ibis.greatest(b.abs(), 1e-300).ln()
    none = ibis.null("float64")
    return ibis.cases(
        ((b < 0) & (e != e.floor()), none),
        ((b == 0) & (e < 0), none),
        (b == 0, b**e),
        (size > _LN_MAX, none),
        (size < _LN_MIN, ibis.literal(0.0)),
        else_=b**e,
    )


def _text(v: ir.Value) -> bool:
    return v.type().is_string()


def category(v: ir.StringValue) -> ir.StringValue:
    """A category value as compared: lower case, surrounding spaces stripped."""
    return v.strip().lower()


def _categories(*values: ir.Value) -> list[ir.Value]:
    """Operands of ``=``, ``<>`` or ``IN`` as compared: when the first and another are
    text, every text operand is a category (``'Urgent'`` matches ``urgent``); numbers,
    dates and booleans are left as they are."""
    if not _text(values[0]) or not any(_text(v) for v in values[1:]):
        return list(values)
    return [category(v) if _text(v) else v for v in values]


def _numeric(v: ir.Value) -> bool:
    t = v.type()
    return t.is_numeric() or t.is_boolean() or t.is_null()
