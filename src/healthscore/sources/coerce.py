"""Coercion: every canonical column to its type, in SQL; why a value did not coerce.

Place in the flow: the third step of :func:`~healthscore.sources.read_source`. Each
canonical column is coerced in one set-based query: text, whole numbers, numbers
(``1,234`` is refused: no thousands separators), booleans (``true/false, t/f, yes/no,
y/n, 1/0``) and UTC timestamps (ISO 8601 dates and times, offsets converted to UTC,
``2024/03/01``, or the ``date_format`` given); native Parquet timestamps and dates pass
through. The view ``typed`` holds, per canonical column ``c``, its value ``v_c``, whether
a value was present ``p_c`` and the raw text ``r_c``: a present value whose typed value
is NULL did not coerce, and :func:`coercion_reason` words why. Extra columns read as
text are typed when every value fits one type.

>>> coercion_reason(INT, "1,234", None)["reason"]
"not a number: ',' is not accepted as a thousands or decimal separator"
>>> coercion_reason(TIMESTAMP, "01/03/2024", None)["hint"]
'pass `date_format`, e.g. %d/%m/%Y'
"""

from __future__ import annotations

import math
import re

import pyarrow as pa

from healthscore.core.tables import BOOL, FLOAT, INT, STRING, TIMESTAMP, Table
from healthscore.errors import SourceError
from healthscore.sources.columns import Column, FileColumns
from healthscore.sources.sql import sql_literal, sql_text
from healthscore.store.scratch import ScratchConnection, ScratchError, error_detail

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

# Text accepted as a timestamp: ISO 8601 date, optional time and offset; also 2024/03/01.
_ISO = (
    r"^(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2})"
    r"([Tt ]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|UTC|[+-]\d{2}(:?\d{2})?)?)?$"
)
_INT_RE = r"^[+-]?[0-9]+(\.0*)?$"
_NUM_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# Day-first or month-first dates: ambiguous without a date_format.
_SLASHED_DATE = re.compile(r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b")

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


def type_extras(db: ScratchConnection, cols: FileColumns, fmt: str) -> None:
    """Type the extra columns read as text, if every value fits (sets ``text_type``).

    A CSV column gets the type DuckDB sniffed; a recoded column (any format) the first
    of boolean (only true/false), whole number, number and timestamp that all of its
    new values fit. Otherwise the column stays text.
    """
    tries: list[tuple[Column, str]] = []
    for c in cols.extras:
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
    db: ScratchConnection, spec: Table, cols: FileColumns, fmt: str, date_format: str | None
) -> str:
    """View ``typed`` over ``raw``: per canonical column c its value v_c, presence p_c and
    raw text r_c; extras as x<index>. Returns the SELECT (ending in FROM) it is made of,
    to run again over a subset of the rows."""
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
        value, present = coerce_sql(col.sql, src, ctype, date_format)
        if name in spec.enums:
            value = f"lower({value})"
        parts += [
            f"{value} AS v_{name}",
            f"{present} AS p_{name}",
            f"CAST({col.sql} AS VARCHAR) AS r_{name}",
        ]
    for c in cols.extras:
        parts.append(f"{_extra_sql(c, fmt)} AS x{c.index}")
    if cols.lookup_key is not None:
        parts.append(f"CAST({cols.lookup_key.sql} AS VARCHAR) AS r__lookup")
    typed_select = f"SELECT {', '.join(parts)} FROM "
    db.execute(f"CREATE VIEW typed AS {typed_select} raw")
    return typed_select


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


def coerce_sql(col: str, src: str, ctype: str, date_format: str | None) -> tuple[str, str]:
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
        s = sql_text(col)
        return (
            f"CASE WHEN regexp_full_match({s}, {sql_literal(_INT_RE)}) "
            f"THEN TRY_CAST(regexp_replace({s}, '\\.0*$', '') AS BIGINT) END",
            present,
        )
    if ctype == FLOAT:
        if base in INT_TYPES or base in _FLOAT_TYPES or base == "DECIMAL":
            d = f"CAST({col} AS DOUBLE)"
            return f"CASE WHEN isfinite({d}) THEN {d} END", present
        s = sql_text(col)
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


def _iso_timestamp_sql(s: str) -> str:
    """SQL parsing ISO 8601 text (and 2024/03/01) to a naive UTC timestamp, else NULL.

    The regex admits only the forms we document (DuckDB's own cast also takes words like
    'infinity'); the cast to a zoned timestamp (which wants ``T`` and ``Z`` upper-case and
    no space before an offset) applies any offset, and the session time zone, UTC, makes
    both the offset-less reading and the final naive value UTC.
    """
    text = f"replace(replace(replace(upper({s}), '/', '-'), ' +', '+'), ' -', '-')"
    zoned = f"TRY_CAST({text} AS TIMESTAMPTZ)"
    return (
        f"CASE WHEN regexp_full_match({s}, {sql_literal(_ISO)}) THEN CAST({zoned} AS TIMESTAMP) END"
    )


def coercion_reason(ctype: str, got, date_format: str | None) -> dict:
    """Reason, expectation and hint for a value that did not coerce to ``ctype``."""
    text = str(got).strip()
    expected = EXPECTED.get(ctype)
    if ctype in (INT, FLOAT):
        if "," in text:
            return {
                "reason": "not a number: ',' is not accepted as a thousands or decimal separator",
                "expected": expected,
            }
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
        hint = DATE_FORMAT_HINT if _SLASHED_DATE.match(text) else None
        return {"reason": "not a date or timestamp", "expected": expected, "hint": hint}
    return {"reason": f"not a valid {ctype}", "expected": expected}
