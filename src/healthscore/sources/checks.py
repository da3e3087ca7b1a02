"""Checks: required columns, then every row's values, keys and intervals, in SQL.

Place in the flow: after coercion in :func:`~healthscore.sources.read_source`. Before any
row is read, the table's required columns must be supplied. Then each row meets, in one
set-based pass over the ``typed`` view: values that did not coerce, required values that
are empty, enum values outside their list (compared lower-cased), an interval's end
before its start, an account key with no account (``account_lookup``); and a primary key
may appear once in a file (the later row is the invalid one). Python only touches the
rows already found invalid, to word their problems.
"""

from __future__ import annotations

import difflib

import pyarrow as pa

from healthscore.core.tables import DERIVABLE_KEYS, FLOAT, INT, KEYABLE, TIMESTAMP, Table
from healthscore.errors import Problem, SourceError
from healthscore.sources.coerce import (
    coercion_reason,
    date_order_hint,
    has_separators,
    is_slashed_date,
    number_format_hint,
)
from healthscore.sources.columns import MAP_HINT, FileColumns
from healthscore.sources.formats import DataFile
from healthscore.sources.sql import plural, sql_literal, sql_text
from healthscore.store.scratch import ScratchConnection, fetch_arrow


def key_is_built(spec: Table, cols: FileColumns) -> bool:
    """Whether the primary key may be missing from the file: derived or built by ``key``."""
    return spec.name in DERIVABLE_KEYS or bool(cols.key)


def key_value_sql(spec: Table, column) -> str:
    """SQL in the ``typed`` view: the value of a ``key`` column (typed if canonical)."""
    return f"v_{column.name}" if column.name in spec.columns else f"x{column.index}"


def check_required_columns(spec: Table, cols: FileColumns) -> None:
    """Every required column (and the primary key, unless derived or built) is supplied."""
    pk = spec.primary_key
    missing = [
        c
        for c in spec.required
        if cols.canonical[c] is None and not (c == pk and key_is_built(spec, cols))
    ]
    if not key_is_built(spec, cols) and cols.canonical[pk] is None and pk not in missing:
        missing.insert(0, pk)
    if not missing:
        return
    renamed = {c.source: c.name for c in cols.columns if c.source != c.name}
    found = ", ".join(
        f"{c.source} (renamed {c.name})" if c.source in renamed else c.source for c in cols.columns
    )
    spare = [c.source for c in cols.columns if c.name not in spec.columns]
    problems = []
    for col in missing:
        if col in renamed:  # --map account_id=outcome_id took it away
            again = f"`mapping` {col}={col} and `mapping` {col}={renamed[col]}"
            problems.append(
                Problem(
                    f"required column is missing: `mapping` {col}={renamed[col]} renamed the "
                    f"file's {col} away",
                    file=cols.file,
                    column=col,
                    hint=f"to feed both columns, map it twice: {again}",
                )
            )
            continue
        close = difflib.get_close_matches(col, spare, n=1, cutoff=0.6)
        example = f"`mapping` {close[0]}={col}" if close else f"`mapping` <column>={col}"
        if col == pk and spec.name in KEYABLE:
            example += ", or build it from columns that identify a row: `key` account_id,..."
        problems.append(
            Problem(
                "required column is missing",
                file=cols.file,
                column=col,
                hint=f"{MAP_HINT}, e.g. {example}",
            )
        )
    raise SourceError.collect(
        problems,
        f"{cols.file}: missing required {plural(len(missing), 'column')} for table "
        f"{spec.name} ({', '.join(missing)}); columns found: {found}",
    )


def find_problems(
    db: ScratchConnection,
    spec: Table,
    cols: FileColumns,
    typed_select: str,
    data: DataFile,
    date_format: str | None,
    number_format: str | None = None,
) -> tuple[list[Problem], int, dict[int, int]]:
    """Every problem in the file's rows, how many rows have no primary key value, and the
    internal number of each row a problem names (by the number a user sees)."""
    checks = _row_checks(spec, cols)
    found, null_keys = _failed_row_checks(db, spec, cols, typed_select, checks)
    if cols.canonical[spec.primary_key] is not None:
        found += _duplicate_keys(db, spec.primary_key)
    elif cols.key:
        found += _duplicate_built_keys(db, spec, cols)
    if not found:
        return [], null_keys, {}
    # Internal numbers -> what the user sees (JSON lines: line numbers).
    wanted = {r for r, *_ in found} | {v[1] for _, k, _, v in found if k.startswith("duplicate")}
    shown = data.user_rows(sorted(wanted))
    internal_row = {shown[r]: r for r in wanted}
    order = {n: i for i, n in enumerate(spec.columns)}
    found.sort(key=lambda f: (f[0], order.get(f[2], len(order))))
    hints = _column_hints(db, spec, cols, data, found, date_format, number_format)
    problems = [_problem(spec, cols, (date_format, number_format, hints), shown, *f) for f in found]
    return problems, null_keys, internal_row


def _column_hints(db, spec, cols, data, found, date_format, number_format) -> dict[str, str]:
    """Per column whose values did not coerce: a hint drawn from the whole column's
    evidence (which way its dates or numbers are written)."""
    hints: dict[str, str] = {}
    failed: dict[str, list[str]] = {}
    for _, kind, column, (got, _) in found:
        if kind == "type" and got is not None:
            failed.setdefault(column, []).append(str(got).strip())
    for column, values in failed.items():
        ctype, text = spec.columns[column], sql_text(cols.canonical[column].sql)

        def user_row(r: int) -> int:
            return data.user_rows([r])[r]

        hint = None
        if ctype == TIMESTAMP and date_format is None and any(map(is_slashed_date, values)):
            hint = date_order_hint(db, column, text, user_row)
        elif ctype in (INT, FLOAT) and number_format is None and any(map(has_separators, values)):
            hint = number_format_hint(db, column, text, user_row)
        if hint:
            hints[column] = hint
    return hints


def _row_checks(spec: Table, cols: FileColumns) -> list[tuple[str, str, str]]:
    """What each row must pass: (SQL true when it fails, kind, column)."""
    checks: list[tuple[str, str, str]] = []
    looked_up = cols.lookup_key is not None
    for name in spec.columns:
        if cols.canonical[name] is None or (looked_up and name == "account_id"):
            continue
        checks.append((f"p_{name} AND v_{name} IS NULL", "type", name))
        if name in spec.required:
            checks.append((f"NOT p_{name}", "required", name))
        if name in spec.enums:
            allowed = ", ".join(sql_literal(v) for v in spec.enums[name])
            checks.append((f"v_{name} NOT IN ({allowed})", "enum", name))
    if spec.start and spec.end and cols.canonical[spec.start] and cols.canonical[spec.end]:
        checks.append((f"v_{spec.end} < v_{spec.start}", "interval", spec.end))
    if looked_up:
        key, key_text = cols.lookup_key.name, sql_text("r__lookup")
        checks.append((f"{key_text} IS NULL", "lookup_empty", key))
        checks.append((f"{key_text} IS NOT NULL AND v_account_id IS NULL", "lookup", key))
    return checks


def _failed_row_checks(
    db: ScratchConnection,
    spec: Table,
    cols: FileColumns,
    typed_select: str,
    checks: list[tuple[str, str, str]],
) -> tuple[list[tuple[int, str, str, tuple]], int]:
    """(row, kind, column, (raw value, other)) per failed check; rows without a key."""
    looked_up = cols.lookup_key is not None
    raw_names = list(spec.columns) + ([cols.lookup_key.name] if looked_up else [])
    found: list[tuple[int, str, str, tuple]] = []
    pk = spec.primary_key
    flags = ", ".join(f"coalesce({sql}, false)" for sql, _, _ in checks)
    raws = ", ".join([f"r_{n}" for n in spec.columns] + (["r__lookup"] if looked_up else []))
    any_bad = " OR ".join(f"coalesce({sql}, false)" for sql, _, _ in checks) or "false"
    # First only which rows are bad: as a projection feeding an aggregate, each value
    # is coerced once (a WHERE would inline and repeat the coercions).
    bad, null_keys = db.execute(
        f"SELECT list(__row) FILTER (WHERE bad), count(*) FILTER (WHERE v_{pk} IS NULL) "
        f"FROM (SELECT __row, v_{pk}, {any_bad} AS bad FROM typed)"
    ).fetchone()
    if bad:
        db.register("__suspects", pa.table({"r": pa.array(bad, pa.int64())}))
        # Coerce again only those rows, to find what is wrong with each.
        suspects = "(SELECT * FROM raw WHERE __row IN (SELECT r FROM __suspects))"
        rows = db.execute(
            f"SELECT __row, {raws}, {flags} FROM ({typed_select} {suspects}) ORDER BY __row"
        ).fetchall()
        width = len(raw_names)
        for row in rows:
            raw = dict(zip(raw_names, row[1 : 1 + width], strict=True))
            for (_, kind, col), hit in zip(checks, row[1 + width :], strict=True):
                if hit:
                    extra = raw[spec.start] if kind == "interval" else None
                    found.append((row[0], kind, col, (raw[col], extra)))
    return found, null_keys


def _duplicate_keys(db: ScratchConnection, pk: str) -> list[tuple[int, str, str, tuple]]:
    """Each later row of a primary key seen before: (row, "duplicate", pk, (key, first row))."""
    # Count first: listing the rows of every key would be costly on big files.
    keys = fetch_arrow(
        db.sql(
            f"SELECT v_{pk} FROM typed WHERE v_{pk} IS NOT NULL GROUP BY v_{pk} HAVING count(*) > 1"
        )
    )
    if not keys.num_rows:
        return []
    db.register("__dup_keys", keys.rename_columns(["k"]))
    dups = db.execute(
        f"SELECT v_{pk}, list(__row ORDER BY __row) FROM typed "
        f"WHERE v_{pk} IN (SELECT k FROM __dup_keys) GROUP BY v_{pk}"
    ).fetchall()
    return [(r, "duplicate", pk, (value, rows[0])) for value, rows in dups for r in rows[1:]]


def _duplicate_built_keys(
    db: ScratchConnection, spec: Table, cols: FileColumns
) -> list[tuple[int, str, str, tuple]]:
    """Each later row whose ``key`` columns repeat an earlier row's: (row, "duplicate_key",
    primary key, (the values, first row))."""
    values = [key_value_sql(spec, c) for c in cols.key]
    text = (
        "concat_ws(', ', " + ", ".join(f"coalesce(CAST({v} AS VARCHAR), '')" for v in values) + ")"
    )
    dups = db.execute(
        f"SELECT {text}, list(__row ORDER BY __row) FROM typed GROUP BY {', '.join(values)} "
        "HAVING count(*) > 1"
    ).fetchall()
    return [
        (r, "duplicate_key", spec.primary_key, (value, rows[0]))
        for value, rows in dups
        for r in rows[1:]
    ]


def _problem(spec: Table, cols: FileColumns, formats, shown, row, kind, column, values) -> Problem:
    """One failed check, worded: file, the row a user sees, column, reason."""
    got, other = values
    where = {"file": cols.file, "row": shown[row], "column": column}
    if kind == "type":
        date_format, number_format, hints = formats
        reason = coercion_reason(
            spec.columns[column], got, date_format, hints.get(column), number_format
        )
        return Problem(got=got, **reason, **where)
    if kind == "required":
        return Problem("required value is empty", **where)
    if kind == "enum":
        allowed = ", ".join(spec.enums[column])
        return Problem("unknown value", got=got, expected=f"one of {allowed}", **where)
    if kind == "lookup_empty":
        return Problem(
            "required value is empty", hint=f"the account is looked up by {column}", **where
        )
    if kind == "lookup":
        return Problem(
            f"unknown {column}: no account found for it",
            got=got,
            hint=f"load the rows that define each {column} and its account_id first",
            **where,
        )
    if kind == "interval":
        return Problem(
            f"is before {spec.start}",
            got=got,
            expected=f"at or after {spec.start} {str(other).strip()!r}",
            **where,
        )
    if kind == "duplicate_key":
        names = ", ".join(c.name for c in cols.key)
        return Problem(
            f"duplicate key ({names}), first seen at row {shown[other]}",
            got=got,
            hint="name more columns in `key`, so that they tell these rows apart",
            **{**where, "column": names},
        )
    return Problem(f"duplicate {column}, first seen at row {shown[other]}", got=got, **where)
