"""Coercion: every canonical column to its type, in SQL; why a value did not coerce.

Place in the flow: the third step of :func:`~healthscore.sources.read_source`. Each
canonical column is coerced in one set-based query: text, whole numbers, numbers (a
currency symbol or code around them dropped, separators as ``number_format`` says; by
default ``1,234.5`` is read but ``1,234`` alone refused), booleans (``true/false, t/f,
yes/no, y/n, 1/0``) and UTC timestamps (ISO 8601 dates and times, offsets converted to
UTC, ``2024/03/01``, or the ``date_format`` given); native Parquet timestamps and dates
pass through. A value that does not coerce gets a hint drawn from its column's evidence
(:func:`date_order_hint`, :func:`number_format_hint`), never a guess. The view ``typed``
holds, per canonical column ``c``, its value ``v_c``, whether a value was present ``p_c``
and the raw text ``r_c``: a present value whose typed value is NULL did not coerce, and
:func:`coercion_reason` words why. Extra columns read as text are typed when every value
fits one type.

>>> coercion_reason(INT, "1,234", None)["reason"]
"not a number: ',' could separate thousands or decimals"
>>> coercion_reason(TIMESTAMP, "01/03/2024", None)["hint"]
'pass `date_format`, e.g. %d/%m/%Y'
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import TYPE_CHECKING

import pyarrow as pa

from healthscore.core.tables import BOOL, FLOAT, INT, STRING, TIMESTAMP, Table
from healthscore.errors import SourceError
from healthscore.sources.columns import Column, FileColumns
from healthscore.sources.sql import plural, sql_literal, sql_text
from healthscore.store.scratch import ScratchConnection, ScratchError, error_detail

if TYPE_CHECKING:
    from healthscore.sources.formats import DataFile

#: Arrow type of each canonical column type.
ARROW_TYPES = {
    STRING: pa.string(),
    INT: pa.int64(),
    FLOAT: pa.float64(),
    BOOL: pa.bool_(),
    TIMESTAMP: pa.timestamp("us"),
}

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")

EXPECTED = {
    INT: "a whole number like 42",
    FLOAT: "a number like 1234.5",
    BOOL: "true/false, yes/no, y/n, t/f or 1/0",
    TIMESTAMP: "an ISO 8601 date or time like 2024-03-01 or 2024-03-01T12:00:00Z",
}
DATE_FORMAT_HINT = "pass `date_format`, e.g. %d/%m/%Y"
#: what a valid date_format looks like
DATE_FORMAT_EXAMPLES = "e.g. %d/%m/%Y or %m/%d/%Y %H:%M"

# Text accepted as a timestamp: ISO 8601 date, optional time and offset (Z, UTC, +02,
# +0200, +02:00: hours 00-23, minutes 00-59); also 2024/03/01.
_ISO = (
    r"^(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2})"
    r"([Tt ]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|UTC|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?)?$"
)
# an offset written as ISO 8601 writes one, its digits aside: +25:00, +0260
_BAD_OFFSET = re.compile(r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*([+-]\d{2}:?\d{2})$")
# The forms DuckDB's cast reads as they are: seconds written, an offset +02 or +02:00.
_ISO_AS_IS = (
    r"^[0-9]{4}-[0-9-]+([T ][0-9]{1,2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}(:[0-9]{2})?)?)?$"
)
_INT_RE = r"^[+-]?[0-9]+(\.0*)?$"
_NUM_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# Day-first or month-first dates: ambiguous without a date_format.
_SLASHED_DATE = re.compile(r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b")
# The same in SQL, its fields captured: first, separator, second, year, time (HH:MM[:SS]).
_SLASHED_SQL = r"^(\d{1,2})([/.-])(\d{1,2})[/.-](\d{4}|\d{2})(?:[ T](\d{1,2}:\d{2}(:\d{2})?))?"

#: ``number_format`` values: how a number is written -> (thousands separators, decimal mark)
NUMBER_FORMATS = {
    "1,234.56": (",", "."),
    "1.234,56": (".", ","),
    "1 234,56": (" \u00a0\u202f", ","),
    "1 234.56": (" \u00a0\u202f", "."),
}
# A currency symbol or code before or after a number, e.g. $6,000, 6.000,00 €, USD 12.
_CURRENCY = r"(US\$|[A-Z]{0,2}\$|€|£|¥|₹|₩|₽|₺|₪|R\$|CHF|[A-Z]{3})"
_CURRENCY_SQL = (
    r"^([+-]?)\s*"
    + _CURRENCY
    + r"?\s*([+-]?)\s*([0-9., \x{00A0}\x{202F}]*[0-9])\s*"
    + _CURRENCY
    + r"?$"
)
# Under the default number format: grouped numbers that say so themselves (1,234.5 and
# 1,234,567); 1,234 alone could be 1234 or 1.234 and is refused.
_US_GROUPED = r"^[0-9]{1,3}(,[0-9]{3})+\.[0-9]*$|^[0-9]{1,3}(,[0-9]{3}){2,}$"

# 1.200 alone: one thousand two hundred (1.234,56) or one point two (1,234.56)?
_DOT_AMBIGUOUS = r"^[1-9][0-9]{0,2}\.[0-9]{3}$"
# the same in a value's text (a currency or sign around it); and a value whose '.' can
# only mark decimals: 12.5, 1,234.56, 0.125, 1234.567
_DOT_AMBIGUOUS_TEXT = r"^[^0-9]*[1-9][0-9]{0,2}\.[0-9]{3}[^0-9]*$"
_DOT_DECIMALS = r"\.([0-9]{1,2}|[0-9]{4,})([^0-9.]|$)|[0-9]{4}\.|(^|[^0-9])0\.|,[0-9]{3}\."

INT_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_NATIVE_TIME_TYPES = {
    "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE",
    "TIMESTAMP WITH TIME ZONE",
}  # fmt: skip
#: The types a recoded extra column may take, tried in order (else it stays text).
RECODED_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "TIMESTAMP")


def from_integers(col: Column | None, fmt: str) -> bool:
    """A column read natively from a Parquet integer column (not recoded): as text its
    values are digits after an optional minus, which Unicode normalisation leaves as
    they are and no text check (NUL, length, invisible characters, placeholders like
    ``n/a``) can refuse."""
    return (
        col is not None
        and fmt == "parquet"
        and not col.recoded
        and not col.alias
        and col.type.split("(")[0] in INT_TYPES
    )


def date_format_problem(db: ScratchConnection, date_format: str) -> str | None:
    """Why ``date_format`` is not a strptime format DuckDB accepts, or None if it is."""
    try:
        db.execute(f"SELECT try_strptime('2024-01-01', {sql_literal(date_format)})")
    except ScratchError as e:
        return f"not a valid strptime format: {error_detail(e)}"
    return None


def check_date_format(db: ScratchConnection, date_format: str) -> None:
    """Raise when the ``date_format`` parameter is not a valid strptime format."""
    problem = date_format_problem(db, date_format)
    if problem:
        raise SourceError(f"`date_format` {date_format!r} is {problem}", hint=DATE_FORMAT_EXAMPLES)


def type_extras(
    db: ScratchConnection, cols: FileColumns, fmt: str, as_text: Collection[str] = ()
) -> None:
    """Type the extra columns read as text, if every value fits (sets ``text_type``).

    A CSV column gets the type DuckDB sniffed; a recoded column (any format) the first
    of boolean (only true/false), whole number, number and timestamp that all of its
    new values fit. Otherwise the column stays text, as do those named (case-folded)
    in ``as_text``: each value as the file writes it.
    """
    tries: list[tuple[Column, str]] = []
    for c in cols.extras:
        if c.name.casefold() in as_text:
            continue
        if c.recoded:
            tries += [(c, t) for t in RECODED_TYPES]
        elif fmt == "csv" and c.type not in ("VARCHAR", "NULL"):
            tries.append((c, c.type))
            if c.type in INT_TYPES:  # sniffed from a sample: a later 1.5 is a number
                tries.append((c, "DOUBLE"))
    if not tries:
        return
    checks = []
    for c, t in tries:
        x = sql_text(c.sql)
        if c.recoded:
            fit = fits_sql(x, t)
        elif t in INT_TYPES:  # DuckDB's cast would round 1.5 to 2
            fit = f"({fits_sql(x, 'BIGINT')} AND TRY_CAST({x} AS {t}) IS NOT NULL)"
        else:
            fit = f"TRY_CAST({x} AS {t}) IS NOT NULL"
        fits = f"bool_and({x} IS NULL OR {fit})"
        # an extra column recoded to nothing but NULLs has no type to find: text
        checks.append(f"(count({x}) > 0 AND {fits})" if c.recoded else fits)
    fits = db.execute(f"SELECT {', '.join(checks)} FROM raw").fetchone()
    for (c, t), ok in reversed(list(zip(tries, fits, strict=True))):  # first fit wins
        if ok is not False:
            c.text_type = t


def create_typed(
    db: ScratchConnection,
    spec: Table,
    cols: FileColumns,
    fmt: str,
    date_format: str | None,
    number_format: str | None = None,
) -> str:
    """View ``typed`` over ``raw``: per canonical column c its value v_c, presence p_c and
    raw text r_c; extras as x<index>. Returns the SELECT (ending in FROM) it is made of,
    to run again over a subset of the rows."""
    typed_select = typed_sql(spec, cols, fmt, date_format, number_format)
    db.execute(f"CREATE VIEW typed AS {typed_select} raw")
    return typed_select


def typed_sql(
    spec: Table,
    cols: FileColumns,
    fmt: str,
    date_format: str | None,
    number_format: str | None = None,
) -> str:
    """The SELECT (ending in FROM) of the view ``typed`` (see :func:`create_typed`)."""
    parts = ["__row"]
    for name, ctype in spec.columns.items():
        col = cols.canonical[name]
        if col is None:
            cast = {STRING: "VARCHAR", INT: "BIGINT", FLOAT: "DOUBLE", BOOL: "BOOLEAN"}
            parts += [
                f"CAST(NULL AS {cast.get(ctype, 'TIMESTAMP')}) AS v_{name}",
                f"false AS p_{name}",
                f"CAST(NULL AS VARCHAR) AS r_{name}",
            ]
            continue
        # CSV and JSON canonical columns are read as text; Parquet keeps its types.
        src = col.type if fmt == "parquet" else "VARCHAR"
        value, present = coerce_sql(col.sql, src, ctype, date_format, number_format)
        if name in cols.dot_ambiguous:  # refused: the column cannot tell (see there)
            number = f"regexp_extract({sql_text(col.sql)}, {sql_literal(_CURRENCY_SQL)}, 4)"
            value = (
                f"CASE WHEN regexp_full_match({number}, {sql_literal(_DOT_AMBIGUOUS)}) "
                f"THEN NULL ELSE {value} END"
            )
        if name in spec.enums:
            value = f"lower({value})"
        elif ctype == STRING and name.endswith("_id") and not from_integers(col, fmt):
            # é written as one character or as e + accent is one id (Unicode NFC)
            value = f"nfc_normalize({value})"
        parts += [
            f"{value} AS v_{name}",
            f"{present} AS p_{name}",
            f"CAST({col.sql} AS VARCHAR) AS r_{name}",
        ]
    for c in cols.extras:
        parts.append(f"{_extra_sql(c, fmt)} AS x{c.index}")
    if cols.lookup_key is not None:
        parts.append(f"CAST({cols.lookup_key.sql} AS VARCHAR) AS r__lookup")
    return f"SELECT {', '.join(parts)} FROM "


def _extra_sql(c: Column, fmt: str) -> str:
    """SQL: an extra column's value, typed as found by :func:`type_extras`."""
    as_text = fmt == "csv" or c.recoded
    t = c.text_type if as_text else c.type
    if t in ("VARCHAR", "JSON"):
        return sql_text(c.sql)
    if as_text:
        value = f"TRY_CAST({sql_text(c.sql)} AS {t})"
    else:
        value = c.sql
    if t in ("DATE", "TIMESTAMP WITH TIME ZONE") or t.startswith("TIMESTAMP_"):
        return f"CAST({value} AS TIMESTAMP)"
    return value


def fits_sql(x: str, t: str) -> str:
    """SQL: text ``x`` (not NULL) is a value of DuckDB type ``t``.

    Recoded values are held to their plain forms: a boolean is true or false (not 1/0 or
    yes/no), a whole number has no fraction (DuckDB's cast would round 1.5 to 2).
    """
    if t == "BOOLEAN":
        return f"lower({x}) IN ('true', 'false')"
    if t == "BIGINT":
        return f"(regexp_full_match({x}, '^[+-]?[0-9]+$') AND TRY_CAST({x} AS BIGINT) IS NOT NULL)"
    if t == "DOUBLE":
        d = f"TRY_CAST({x} AS DOUBLE)"
        return f"(regexp_full_match({x}, {sql_literal(_NUM_RE)}) AND isfinite({d}))"
    return f"TRY_CAST({x} AS {t}) IS NOT NULL"


def coerce_sql(
    col: str, src: str, ctype: str, date_format: str | None, number_format: str | None = None
) -> tuple[str, str]:
    """SQL for (typed value, "a value is present") of raw column ``col`` of type ``src``.

    A present value whose typed value is NULL is a coercion failure.
    """
    base = src.split("(")[0]
    present = f"({sql_text(col)} IS NOT NULL)"
    if base in INT_TYPES | _FLOAT_TYPES | {"DECIMAL", "BOOLEAN"} | _NATIVE_TIME_TYPES:
        present = f"({col} IS NOT NULL)"
    if ctype == STRING:
        if base in INT_TYPES:
            return f"CAST({col} AS VARCHAR)", present
        if base in _FLOAT_TYPES:  # 42.0 from a float column is the id '42'
            whole = f"(isfinite({col}) AND {col} = trunc({col}) AND abs({col}) < 1e15)"
            return (
                f"CASE WHEN {whole} THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) "
                f"ELSE CAST({col} AS VARCHAR) END",
                present,
            )
        return sql_text(col), present
    if ctype == INT:
        if base in INT_TYPES:
            return f"TRY_CAST({col} AS BIGINT)", present
        if base in _FLOAT_TYPES or base == "DECIMAL":
            return f"CASE WHEN {col} = trunc({col}) THEN TRY_CAST({col} AS BIGINT) END", present
        s = number_text_sql(sql_text(col), number_format)
        return (
            f"CASE WHEN regexp_full_match({s}, {sql_literal(_INT_RE)}) "
            f"THEN TRY_CAST(regexp_replace({s}, '\\.0*$', '') AS BIGINT) END",
            present,
        )
    if ctype == FLOAT:
        if base in INT_TYPES or base in _FLOAT_TYPES or base == "DECIMAL":
            d = f"CAST({col} AS DOUBLE)"
            return f"CASE WHEN isfinite({d}) THEN {d} END", present
        s = number_text_sql(sql_text(col), number_format)
        d = f"TRY_CAST({s} AS DOUBLE)"
        return (
            f"CASE WHEN regexp_full_match({s}, {sql_literal(_NUM_RE)}) AND isfinite({d}) "
            f"THEN {d} END",
            present,
        )
    if ctype == BOOL:
        if base == "BOOLEAN":
            return col, present
        if base in INT_TYPES:
            return f"CASE {col} WHEN 1 THEN true WHEN 0 THEN false END", present
        s = f"lower({sql_text(col)})"
        yes = ", ".join(sql_literal(w) for w in TRUE_WORDS)
        no = ", ".join(sql_literal(w) for w in FALSE_WORDS)
        return f"CASE WHEN {s} IN ({yes}) THEN true WHEN {s} IN ({no}) THEN false END", present
    # TIMESTAMP
    if base in _NATIVE_TIME_TYPES:
        return f"CAST({col} AS TIMESTAMP)", present
    s = sql_text(col)
    value = _iso_timestamp_sql(s)
    if date_format:
        value = (
            f"coalesce(CAST(try_strptime({s}, {sql_literal(date_format)}) AS TIMESTAMP), {value})"
        )
    return value, present


def find_dot_ambiguous(
    db: ScratchConnection, spec: Table, cols: FileColumns, fmt: str, number_format: str | None
) -> None:
    """Set ``cols.dot_ambiguous``: the number columns read as text, without a
    ``number_format``, where some value is written like ``1.200`` (one thousand two
    hundred in 1.234,56, one point two in 1,234.56) and no value shows that ``.`` marks
    decimals (``12.5``, ``1,234.5``, ``1234.567``): those values are refused, as ``1,234``
    alone is, instead of read as decimals."""
    if number_format is not None or fmt == "parquet":
        return
    names = [n for n, t in spec.columns.items() if t == FLOAT and cols.canonical[n] is not None]
    if not names:
        return
    cells = []
    for name in names:
        text = sql_text(cols.canonical[name].sql)
        dotted = f"strpos({text}, '.') > 0"
        ambiguous = f"regexp_full_match({text}, {sql_literal(_DOT_AMBIGUOUS_TEXT)})"
        evidence = f"regexp_matches({text}, {sql_literal(_DOT_DECIMALS)})"
        cells.append(
            f"coalesce(bool_or({dotted} AND {ambiguous}) AND NOT bool_or({dotted} AND "
            f"{evidence}), false)"
        )
    found = db.execute(f"SELECT {', '.join(cells)} FROM raw").fetchone()
    cols.dot_ambiguous = {n for n, hit in zip(names, found, strict=True) if hit}


#: a time of day, then an offset (Z, UTC, +02, +0200, +02:00) or none, at the end of ISO text
_TIME_OF_DAY = r"[T ][0-9]{1,2}:[0-9]{2}"
_OFFSET = r"\s*(Z|UTC|[+-][0-9]{2}(:?[0-9]{2})?)$"


def mixed_offsets(
    db: ScratchConnection, spec: Table, cols: FileColumns, fmt: str, data: DataFile
) -> list[str]:
    """A warning per time column read as text where some times of day give a UTC offset
    and others do not: the ones without are read as UTC (the documented rule), but a
    file mixing both forms may hold local times in the second; said, with the first
    such value and its row, not guessed silently. One pass over the file for every
    time column, as :func:`find_dot_ambiguous`."""
    if fmt == "parquet":
        return []
    names = [n for n, t in spec.columns.items() if t == TIMESTAMP and cols.canonical[n] is not None]
    if not names:
        return []
    cells = []
    for name in names:
        text = f"trim({sql_text(cols.canonical[name].sql)})"
        timed = f"regexp_matches({text}, {sql_literal(_TIME_OF_DAY)})"
        zoned = f"regexp_matches(upper({text}), {sql_literal(_OFFSET)})"
        cells += [
            f"count(*) FILTER (WHERE {timed} AND {zoned})",
            f"count(*) FILTER (WHERE {timed} AND NOT {zoned})",
            f"arg_min([CAST(__row AS VARCHAR), {text}], __row) "
            f"FILTER (WHERE {timed} AND NOT {zoned})",
        ]
    found = db.execute(f"SELECT {', '.join(cells)} FROM raw").fetchone()
    warnings = []
    for i, name in enumerate(names):
        with_, without, first = found[3 * i : 3 * i + 3]
        if with_ and without:
            row = data.user_rows([int(first[0])])[int(first[0])]
            warnings.append(
                f"{data.path}: {name}: {with_:,} {plural(with_, 'value')} "
                f"{'gives' if with_ == 1 else 'give'} a UTC offset and {without:,} "
                f"{plural(without, 'time')} of day {'does' if without == 1 else 'do'} "
                f"not (row {row}: {first[1]!r}); those were read as UTC"
            )
    return warnings


def number_text_sql(s: str, number_format: str | None) -> str:
    """SQL: text ``s`` as a plain number (``-1234.5``) as ``number_format`` writes it, a
    currency symbol or code around it dropped; other text unchanged (it then fails).

    ``None``, the default, reads a comma as a thousands separator only where the value
    shows it (``1,234.5``, ``1,234,567``): ``1,234`` alone could be 1234 or 1.234.
    """
    thousands, decimal = NUMBER_FORMATS.get(number_format or "1,234.56")
    # fast path: plain numbers, as most files write them
    plain = _NUM_RE if decimal == "." else r"^[+-]?[0-9]+$"
    parts = [f"regexp_extract({s}, {sql_literal(_CURRENCY_SQL)}, {i})" for i in (1, 3, 4)]
    sign, number = f"{parts[0]} || {parts[1]}", parts[2]
    if number_format is None:
        grouped = r"^[0-9]+(\.[0-9]*)?$|" + _US_GROUPED
    else:
        t, d = "[" + thousands + "]", "[" + decimal + "]"
        grouped = rf"^[0-9]{{1,3}}({t}[0-9]{{3}})+({d}[0-9]*)?$|^[0-9]+({d}[0-9]*)?$"
    digits = number
    for c in thousands:
        digits = f"replace({digits}, {sql_literal(c)}, '')"
    if decimal != ".":
        digits = f"replace({digits}, {sql_literal(decimal)}, '.')"
    return (
        f"CASE WHEN regexp_full_match({s}, {sql_literal(plain)}) THEN {s} "
        f"WHEN regexp_full_match({number}, {sql_literal(grouped)}) THEN {sign} || {digits} "
        "END"
    )


def check_number_format(number_format: str | None) -> None:
    """Raise when ``number_format`` is not one of :data:`NUMBER_FORMATS`."""
    if number_format is not None and number_format not in NUMBER_FORMATS:
        raise SourceError(
            f"`number_format` {number_format!r} is not a number format we read",
            hint="one of " + ", ".join(NUMBER_FORMATS),
        )


def _iso_timestamp_sql(s: str) -> str:
    """SQL parsing ISO 8601 text (and 2024/03/01) to a naive UTC timestamp, else NULL.

    The regex admits only the forms we document (DuckDB's own cast also takes words like
    'infinity'); the cast to a zoned timestamp (which wants ``T`` and ``Z`` upper-case and
    no space before an offset) applies any offset, and the session time zone, UTC, makes
    both the offset-less reading and the final naive value UTC.
    """
    text = f"replace(upper({s}), '/', '-')"
    # the other forms, written as those: Z or UTC as +00, no space before an offset,
    # seconds added to HH:MM, a colon into +0200
    canonical = text
    for find, put in (
        (r"\s*(Z|UTC)$", "+00"),
        (r"\s+([+-][0-9]{2}:?[0-9]*)$", r"\1"),
        (r"^([^T ]+[T ][0-9]{1,2}:[0-9]{2})([+-].*)?$", r"\1:00\2"),
        (r"([+-][0-9]{2})([0-9]{2})$", r"\1:\2"),
    ):
        canonical = f"regexp_replace({canonical}, {sql_literal(find)}, {sql_literal(put)})"
    text = (
        f"CASE WHEN regexp_full_match({text}, {sql_literal(_ISO_AS_IS)}) THEN {text} "
        f"ELSE {canonical} END"
    )
    zoned = f"TRY_CAST({text} AS TIMESTAMPTZ)"
    return (
        f"CASE WHEN regexp_full_match({s}, {sql_literal(_ISO)}) THEN CAST({zoned} AS TIMESTAMP) END"
    )


def has_separators(text: str) -> bool:
    """Whether ``text`` is more than a plain number: digits grouped or with a comma."""
    if ambiguous_dot(text):
        return True
    plain = re.fullmatch(_NUM_RE[1:-1], text.strip())
    return not plain and bool(re.search(r"[0-9][,. \u00a0\u202f][0-9]", text))


def ambiguous_dot(text: str) -> bool:
    """Whether ``text`` is a number like ``1.200`` (or ``$1.200``): thousands or decimals."""
    return bool(re.fullmatch(r"[^0-9]*[1-9][0-9]{0,2}\.[0-9]{3}[^0-9]*", text.strip()))


def is_slashed_date(text: str) -> bool:
    """Whether ``text`` looks like a day-first or month-first date (03/04/2024)."""
    return bool(_SLASHED_DATE.match(text))


def date_order_hint(db: ScratchConnection, column: str, text_sql: str, user_row) -> str:
    """The hint for a column of dates like 03/04/2024, drawn from the column's evidence.

    A first field above 12 anywhere in the column means day first, a second field above
    12 month first; when no value tells, or values tell both, the hint says so and names
    both formats, never choosing one. A two-digit year (``25-03-04``) may also come
    first: a field above 31 tells where the year is, and until one does the hint names
    year first (``%y-%m-%d``) among the candidates. ``user_row`` maps an internal row to
    the one a user sees.
    """
    s = text_sql

    def field(i: int) -> str:
        return f"TRY_CAST(regexp_extract({s}, {sql_literal(_SLASHED_SQL)}, {i}) AS INTEGER)"

    first, second, last = field(1), field(3), field(4)
    short = f"length(regexp_extract({s}, {sql_literal(_SLASHED_SQL)}, 4)) = 2"
    cells = [
        f"{first} > 12",
        f"{second} > 12",
        f"{first} IS NOT NULL",
        f"{short} AND {first} > 31",
        f"{short} AND {last} > 31",
    ]
    day_first, month_first, example, year_first, year_last = db.execute(
        "SELECT "
        + ", ".join(
            f"arg_min([CAST(__row AS VARCHAR), {s}], __row) FILTER (WHERE {c})" for c in cells
        )
        + " FROM raw"
    ).fetchone()

    def at(found) -> str:
        return f"row {user_row(int(found[0]))}: {found[1]!r}"

    if year_first and year_last:
        return (
            f"{column} mixes year-first ({at(year_first)}) and year-last ({at(year_last)}) "
            "dates; no one `date_format` reads both: fix the file"
        )
    if year_first:
        return (
            f"{column} has its year first ({at(year_first)}): pass `date_format` "
            f"{_slashed_format(year_first[1], year_first=True)}"
        )
    if day_first and month_first:
        return (
            f"{column} mixes day-first ({at(day_first)}) and month-first "
            f"({at(month_first)}) dates; no one `date_format` reads both: fix the file"
        )
    shown = day_first or month_first or example
    if not shown:
        return DATE_FORMAT_HINT
    candidates = []
    match = re.match(_SLASHED_SQL, shown[1])
    if match and len(match.group(4)) == 2 and not year_last and not month_first:
        # 25-03-04: 4 March 2025 year first, 25 March 2004 day first
        candidates.append((_slashed_format(shown[1], year_first=True), "year first"))
    if not month_first:
        candidates.append((_slashed_format(shown[1], day_first=True), "day first"))
    if not day_first:
        candidates.append((_slashed_format(shown[1], day_first=False), "month first"))
    if len(candidates) == 1:
        order = "day" if day_first else "month"
        return (
            f"{column} has its {order} first ({at(shown)}): pass `date_format` {candidates[0][0]}"
        )
    named = [f"{f} ({label})" for f, label in candidates]
    formats = ", ".join(named[:-1]) + " or " + named[-1]
    if candidates[0][1] == "year first":
        return (
            f"{column} writes two-digit years and no date in it has a field above 31, so "
            f"the file cannot tell whether the year is first or last ({at(shown)}): pass "
            f"`date_format` {formats}"
        )
    # e.g. 01/02/2024: 1 February day first, January 2 month first
    return (
        f"no date in {column} has a field above 12, so the file cannot tell whether "
        f"{shown[1]!r} ({at(shown)}) is day first or month first: pass `date_format` {formats}"
    )


# What a number's own form says about its format (after its currency is dropped).
_NUMBER_EVIDENCE = {
    "1,234.56": r"^[0-9]{1,3}(,[0-9]{3})+\.[0-9]*$|^[0-9]{1,3}(,[0-9]{3}){2,}$"
    r"|^[0-9]*\.([0-9]{1,2}|[0-9]{4,})$",
    "1.234,56": r"^[0-9]{1,3}(\.[0-9]{3})+,[0-9]*$|^[0-9]{1,3}(\.[0-9]{3}){2,}$"
    r"|^[0-9]*,([0-9]{1,2}|[0-9]{4,})$",
    "1 234,56": r"^[0-9]{1,3}([ \x{00A0}\x{202F}][0-9]{3})+,[0-9]+$",
    "1 234.56": r"^[0-9]{1,3}([ \x{00A0}\x{202F}][0-9]{3})+\.[0-9]+$",
}
_AMBIGUOUS_NUMBER = (
    r"^[0-9]{1,3},[0-9]{3}$|^[1-9][0-9]{0,2}\.[0-9]{3}$|^[0-9]{1,3}([ \x{00A0}\x{202F}][0-9]{3})+$"
)


def number_format_hint(db: ScratchConnection, column: str, text_sql: str, user_row) -> str | None:
    """The hint for a column of numbers written with separators, from the column's evidence.

    Each value whose own form says how it is written (``1,234.5``, ``6.000,00``,
    ``12,5``) is evidence; the hint names the format the evidence shows, or says the
    column mixes two, or that ``1,234`` alone cannot tell. It never chooses for the user.
    """
    number = f"regexp_extract({text_sql}, {sql_literal(_CURRENCY_SQL)}, 4)"
    cells = [
        f"arg_min([CAST(__row AS VARCHAR), {text_sql}], __row) "
        f"FILTER (WHERE regexp_full_match({number}, {sql_literal(rx)}))"
        for rx in [*_NUMBER_EVIDENCE.values(), _AMBIGUOUS_NUMBER]
    ]
    *shown, ambiguous = db.execute(f"SELECT {', '.join(cells)} FROM raw").fetchone()
    formats = [(f, e) for f, e in zip(_NUMBER_EVIDENCE, shown, strict=True) if e]

    def at(found) -> str:
        return f"row {user_row(int(found[0]))}: {found[1]!r}"

    if len(formats) > 1:
        (f1, e1), (f2, e2) = formats[:2]
        return (
            f"{column} mixes numbers written {f1} ({at(e1)}) and {f2} ({at(e2)}); no one "
            "`number_format` reads both: fix the file"
        )
    if formats:
        f, e = formats[0]
        return f"{column} writes numbers as {f} ({at(e)}): pass `number_format` {f}"
    if ambiguous and re.fullmatch(r"\D*\d{1,3}\.\d{3}\D*", ambiguous[1].strip()):
        return (
            f"no number in {column} shows whether '.' separates thousands or decimals "
            f"({at(ambiguous)}): pass `number_format` 1.234,56 (thousands) or 1,234.56 "
            "(decimals)"
        )
    if ambiguous and "," in ambiguous[1]:
        return (
            f"no number in {column} shows whether ',' separates thousands or decimals "
            f"({at(ambiguous)}): pass `number_format` 1,234.56 (thousands) or 1.234,56 "
            "(decimals)"
        )
    if ambiguous:
        return (
            f"{column} groups digits with spaces ({at(ambiguous)}): pass `number_format` 1 234.56"
        )
    return None


def _slashed_format(text: str, day_first: bool = False, year_first: bool = False) -> str:
    """The strptime format of a date like ``15/03/2025 14:30``, day or month first; or
    of ``25-03-04``, year (two digits), month, day."""
    m = re.match(_SLASHED_SQL, text)
    if not m:
        return "%d/%m/%Y" if day_first else "%m/%d/%Y"
    sep = m.group(2)
    year = "%Y" if len(m.group(4)) == 4 else "%y"
    if year_first:
        fmt = sep.join(["%y", "%m", "%d"])
    else:
        fmt = sep.join(["%d", "%m"] if day_first else ["%m", "%d"]) + sep + year
    if m.group(5):
        between = text[m.end(4)]
        fmt += between + ("%H:%M:%S" if m.group(6) else "%H:%M")
    return fmt


def coercion_reason(
    ctype: str,
    got,
    date_format: str | None,
    hint: str | None = None,
    number_format: str | None = None,
) -> dict:
    """Reason, expectation and hint for a value that did not coerce to ``ctype``; ``hint``
    is the column's (e.g. :func:`date_order_hint`) for a value it concerns."""
    text = str(got).strip()
    expected = EXPECTED.get(ctype)
    if ctype in (INT, FLOAT):
        if number_format or has_separators(text):
            reason = "not a number"
            if number_format:
                reason = f"not a number written {number_format}"
                expected = f"a number written like {number_format}"
            elif re.fullmatch(r"\D*\d{1,3},\d{3}\D*", text):
                reason = "not a number: ',' could separate thousands or decimals"
            elif re.fullmatch(r"\D*\d{1,3}\.\d{3}\D*", text):
                reason = "not a number: '.' could separate thousands or decimals"
            return {"reason": reason, "expected": expected, "hint": hint}
        try:
            number = float(text)
        except ValueError:
            return {"reason": "not a number", "expected": expected}
        if not math.isfinite(number):
            return {"reason": "not a finite number", "expected": expected}
        if ctype == INT:
            return {"reason": "not a whole number", "expected": expected}
        return {"reason": "not a number", "expected": expected}
    if ctype == BOOL:
        return {"reason": "not a boolean", "expected": expected}
    if ctype == TIMESTAMP:
        if date_format:
            expected = f"a date in {date_format} or ISO 8601 like 2024-03-01"
            return {"reason": "not a date or timestamp", "expected": expected}
        hint = (hint or DATE_FORMAT_HINT) if _SLASHED_DATE.match(text) else None
        reason = "not a date or timestamp"
        offset = _BAD_OFFSET.search(text)
        if offset and not re.match(_ISO, text):
            reason += (
                f": the offset {offset.group(1)!r} is out of range (hours 00-23, minutes 00-59)"
            )
        return {"reason": reason, "expected": expected, "hint": hint}
    return {"reason": f"not a valid {ctype}", "expected": expected}
