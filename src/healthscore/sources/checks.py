"""Checks: required columns, then every row's values, keys and intervals, in SQL.

Place in the flow: after coercion in :func:`~healthscore.sources.read_source`. Before any
row is read, the table's required columns must be supplied. Then each row meets, in one
set-based pass over the ``typed`` view: values that did not coerce, required values that
are empty, text holding a NUL character (:data:`healthscore.core.limits.NUL`), ids
(``*_id`` columns) longer than :data:`~healthscore.core.limits.MAX_ID_CHARS`, enum
values outside their list (compared lower-cased), numbers outside their column's domain
(the table's, or one a load spec declares), timestamps outside the years 1900-2999, an
interval's end before its start, an account key with no account (``account_lookup``);
and a primary key may appear once in a file (the later row is the invalid one). Python
only touches the rows already found invalid, to word their problems.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

import pyarrow as pa

from healthscore.core.limits import MAX_ID_CHARS, MAX_YEAR, MIN_YEAR, NUL
from healthscore.core.tables import (
    DERIVABLE_KEYS,
    FLOAT,
    INT,
    KEYABLE,
    STRING,
    TIMESTAMP,
    Domain,
    Table,
)
from healthscore.errors import Problem, SourceError
from healthscore.sources.coerce import (
    coercion_reason,
    date_order_hint,
    from_integers,
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


def check_domain_columns(cols: FileColumns, domains: Mapping[str, object] | None) -> None:
    """Every column a load spec's ``domains`` bounds is one of the file's (after
    ``mapping``): a domain of a name the file has no column of would bound nothing."""
    have = [n for n, c in cols.canonical.items() if c is not None] + [c.name for c in cols.extras]
    for name in domains or {}:
        if name in have:
            continue
        twin = next((h for h in have if h.casefold() == name.casefold()), None)
        hint = (
            f"did you mean {twin!r}? (names are compared as written)"
            if twin
            else f"columns of the file (after --map): {', '.join(have)}"
        )
        raise SourceError(
            f"{cols.file}: the domain of {name!r} bounds nothing: the file has no column "
            "of that name, nothing loaded",
            hint=hint,
        )


def find_problems(
    db: ScratchConnection,
    spec: Table,
    cols: FileColumns,
    typed_select: str,
    data: DataFile,
    date_format: str | None,
    number_format: str | None = None,
    domains: dict[str, tuple[float | None, float | None]] | None = None,
    repeats: str | None = None,
) -> tuple[list[Problem], int, dict[int, int]]:
    """Every problem in the file's rows, how many rows have no primary key value, and the
    internal number of each row a problem names (by the number a user sees).

    ``domains`` (a load spec's ``{column: (min, max)}``) bounds extra columns, adds a
    range to a canonical column, or sets a CSAT column's scale. ``repeats`` (SQL over
    ``typed``: the values that identify a row; for a file without the key column, whose
    ids are all derived) also makes table ``__repeating`` in the same pass: the ``hash``
    of each value seen on more than one valid row (``h``)."""
    checks = _row_checks(spec, cols, domains or {}, data.fmt)
    found, null_keys = _failed_row_checks(db, spec, cols, typed_select, checks, repeats)
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


#: a check: SQL true when a row fails it, its kind, the column, what the message needs
Check = tuple[str, str, str, Domain | None]


def failing_sql(spec: Table, cols: FileColumns, domains: dict | None = None) -> str:
    """SQL over the ``typed`` columns, true when a row fails any of its checks (the
    primary key's duplicates apart: they span rows)."""
    return _any_failed(_row_checks(spec, cols, domains or {}))


def _any_failed(checks: list[Check]) -> str:
    return " OR ".join(f"coalesce({sql}, false)" for sql, *_ in checks) or "false"


def _row_checks(spec: Table, cols: FileColumns, declared: dict, fmt: str = "json") -> list[Check]:
    """What each row must pass: (SQL true when it fails, kind, column, its domain).
    ``fmt``: the file's format (a text column read from integers is not checked as text:
    :func:`~healthscore.sources.coerce.from_integers`)."""
    checks: list[Check] = []
    looked_up = cols.lookup_key is not None
    for name, ctype in spec.columns.items():
        if cols.canonical[name] is None or (looked_up and name == "account_id"):
            continue
        checks.append((f"p_{name} AND v_{name} IS NULL", "type", name, None))
        if ctype == STRING and not from_integers(cols.canonical[name], fmt):
            # other types: a NUL does not coerce (a type error)
            checks.append((_holds_nul(f"v_{name}"), "nul", name, None))
            if name.endswith("_id"):  # a key: the byte length first, cheap to read
                long = f"strlen(v_{name}) > {MAX_ID_CHARS} AND length(v_{name}) > {MAX_ID_CHARS}"
                checks.append((long, "too_long", name, None))
                # only text that is not plain ASCII (more bytes than characters) can
                invisible = (
                    f"strlen(v_{name}) > length(v_{name}) AND "
                    f"regexp_matches(v_{name}, {sql_literal(_INVISIBLE)})"
                )
                checks.append((invisible, "invisible", name, None))
            if (name.endswith("_id") or name in spec.required) and name not in spec.enums:
                words = ", ".join(sql_literal(w) for w in PLACEHOLDERS)
                short = f"strlen(v_{name}) <= {max(map(len, PLACEHOLDERS))}"
                checks.append(
                    (f"{short} AND lower(v_{name}) IN ({words})", "placeholder", name, None)
                )
        if name in spec.required:
            checks.append((f"NOT p_{name}", "required", name, None))
        if name in spec.enums:
            allowed = ", ".join(sql_literal(v) for v in spec.enums[name])
            checks.append((f"v_{name} NOT IN ({allowed})", "enum", name, None))
        for d in _domains(spec.domains.get(name, ()), declared.get(name)):
            when = f" AND v_{d.when[0]} = {sql_literal(d.when[1])}" if d.when else ""
            checks.append((f"({_outside(f'v_{name}', d)}){when}", "domain", name, d))
        if ctype == TIMESTAMP:
            checks.append(
                (
                    f"v_{name} < TIMESTAMP '{MIN_YEAR:04d}-01-01' "
                    f"OR v_{name} >= TIMESTAMP '{MAX_YEAR + 1:04d}-01-01'",
                    "date_range",
                    name,
                    None,
                )
            )
    for c in cols.extras:
        checks.append((_holds_nul(f"CAST(x{c.index} AS VARCHAR)"), "nul", c.name, None))
        # NaN and infinity are no numbers (a Parquet double, a CSV's "nan"): as in the
        # canonical columns, they would score as the best value there is
        x = f"x{c.index}"
        not_finite = f"NOT isfinite(TRY_CAST(CAST({x} AS VARCHAR) AS DOUBLE))"
        checks.append(
            (f"typeof({x}) IN ('DOUBLE', 'FLOAT') AND {not_finite}", "not_finite", c.name, None)
        )
        if c.name in declared:
            d = Domain(*declared[c.name])
            number = f"TRY_CAST(x{c.index} AS DOUBLE)"
            sql = f"x{c.index} IS NOT NULL AND ({number} IS NULL OR {_outside(number, d)})"
            checks.append((sql, "domain", c.name, d))
    if spec.start and spec.end and cols.canonical[spec.start] and cols.canonical[spec.end]:
        checks.append((f"v_{spec.end} < v_{spec.start}", "interval", spec.end, None))
    if looked_up:
        key, key_text = cols.lookup_key.name, sql_text("r__lookup")
        checks.append((f"{key_text} IS NULL", "lookup_empty", key, None))
        checks.append((f"{key_text} IS NOT NULL AND v_account_id IS NULL", "lookup", key, None))
    return checks


#: text an export writes for a missing value: not an id, nor a required value
PLACEHOLDERS = (
    "null", "none", "nil", "nan", "n/a", "#n/a", "-", "--", "?", "undefined",
    "#ref!", "#value!", "#name?", "#null!", "#num!", "#div/0!",
)  # fmt: skip
# Characters that show as nothing: zero-width spaces and joiners, direction marks, the
# word joiner, a byte order mark, a soft hyphen. Two ids that look the same must be one.
_INVISIBLE = r"[\x{00AD}\x{200B}-\x{200F}\x{202A}-\x{202E}\x{2060}-\x{2064}\x{FEFF}]"


_INVISIBLE_PY = _INVISIBLE.replace("\\x{", "\\u").replace("}", "")


def _holds_nul(text: str) -> str:
    """SQL true when ``text`` holds a NUL character (U+0000): no store keeps one in a text
    value (PostgreSQL refuses it; DuckDB's SQL text ends at it), so it is refused here."""
    return f"strpos({text}, chr({ord(NUL)})) > 0"


def _domains(canonical: tuple[Domain, ...], declared: tuple | None) -> list[Domain]:
    """A column's domains: a declared range sets a scale's bounds (CSAT), else it is added."""
    if declared is None:
        return list(canonical)
    scales = [Domain(*declared, when=d.when, scale=d.scale) for d in canonical if d.scale]
    return [d for d in canonical if not d.scale] + (scales or [Domain(*declared)])


def _outside(value: str, d: Domain) -> str:
    """SQL true when ``value`` is outside the domain ``d``."""
    bounds = []
    if d.min is not None:
        bounds.append(f"{value} < {float(d.min)!r}")
    if d.max is not None:
        bounds.append(f"{value} > {float(d.max)!r}")
    return " OR ".join(bounds) or "false"


def _failed_row_checks(
    db: ScratchConnection,
    spec: Table,
    cols: FileColumns,
    typed_select: str,
    checks: list[Check],
    repeats: str | None = None,
) -> tuple[list[tuple[int, str, str, tuple]], int]:
    """(row, kind, column, (raw value, other)) per failed check; rows without a key;
    with ``repeats``, table ``__repeating`` (see :func:`find_problems`)."""
    looked_up = cols.lookup_key is not None
    raw_sql = {n: f"r_{n}" for n in spec.columns}
    extras = {c.name: c.index for c in cols.extras}
    raw_sql |= {c: f"CAST(x{extras[c]} AS VARCHAR)" for _, _, c, _ in checks if c in extras}
    if looked_up:
        raw_sql[cols.lookup_key.name] = "r__lookup"
    raw_names = list(raw_sql)
    found: list[tuple[int, str, str, tuple]] = []
    pk = spec.primary_key
    flags = ", ".join(f"coalesce({sql}, false)" for sql, *_ in checks)
    raws = ", ".join(raw_sql.values())
    any_bad = _any_failed(checks)
    # First only which rows are bad: as a projection feeding an aggregate, each value
    # is coerced once (a WHERE would inline and repeat the coercions).
    if repeats is None:
        bad, null_keys = db.execute(
            f"SELECT list(__row) FILTER (WHERE bad), count(*) FILTER (WHERE v_{pk} IS NULL) "
            f"FROM (SELECT __row, v_{pk}, {any_bad} AS bad FROM typed)"
        ).fetchone()
    else:
        bad, null_keys = _checks_and_repeats(db, any_bad, repeats)
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
            for (_, kind, col, domain), hit in zip(checks, row[1 + width :], strict=True):
                if hit:
                    extra = raw[spec.start] if kind == "interval" else domain
                    found.append((row[0], kind, col, (raw[col], extra)))
    return found, null_keys


def _checks_and_repeats(
    db: ScratchConnection, any_bad: str, repeats: str
) -> tuple[list[int] | None, int]:
    """The bad rows and the rows without a key, as :func:`_failed_row_checks` counts
    them, and table ``__repeating`` (the values seen on more than one valid row), in
    one pass over the coerced rows: a hash aggregate by the values, whose grand total
    (the empty grouping set) counts the rows and the bad rows. The bad rows, where there
    are any, are listed by a second pass.

    ``repeats`` is asked for a file without the key column only (every id derived):
    every row lacks a key, so the rows are counted, not the rows without one (two
    counts a group, not three: a tenth of the pass at 100 M rows)."""
    db.execute(
        "CREATE TEMP TABLE __groups AS SELECT grouping(h) AS whole, h, "
        "count(*) AS n, count(*) FILTER (WHERE bad) AS bad "
        f"FROM (SELECT hash({repeats}) AS h, {any_bad} AS bad FROM typed) "
        "GROUP BY GROUPING SETS ((h), ()) "
        "HAVING grouping(h) = 1 OR count(*) - count(*) FILTER (WHERE bad) > 1"
    )
    total = db.execute("SELECT bad, n FROM __groups WHERE whole = 1").fetchone()
    n_bad, null_keys = total or (0, 0)
    db.execute("CREATE TEMP TABLE __repeating AS SELECT h FROM __groups WHERE whole = 0")
    db.execute("DROP TABLE __groups")
    bad = None
    if n_bad:
        bad = db.execute(
            "SELECT list(__row) FILTER (WHERE bad) "
            f"FROM (SELECT __row, {any_bad} AS bad FROM typed)"
        ).fetchone()[0]
    return bad, null_keys


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
    if kind == "not_finite":
        return Problem("not a finite number", got=got, expected="a number like 1234.5", **where)
    if kind == "nul":
        return Problem(
            "holds a NUL character (U+0000), which no text value may hold",
            got=got,
            hint="remove the NUL characters (often a sign of a binary or UTF-16 file)",
            **where,
        )
    if kind == "invisible":
        at = next(i for i, ch in enumerate(got) if re.match(_INVISIBLE_PY, ch))
        return Problem(
            f"holds an invisible character (U+{ord(got[at]):04X} at character {at + 1}), "
            "so it looks like an id it is not",
            got=got,
            hint="delete the character in the file (often pasted from a web page or chat)",
            **where,
        )
    if kind == "placeholder":
        source = cols.canonical[column].source
        return Problem(
            f"{got.strip()!r} is how exports mark a missing value; refused as {column}",
            got=got,
            hint=(
                "leave the cell empty, or say what it means in a load spec: "
                f"`map: {{{source}: {{values: {{{got.strip()!r}: null}}}}}}`"
                + (" (the row is then skipped)" if column in spec.required else "")
            ),
            **where,
        )
    if kind == "too_long":
        return Problem(
            f"{len(got):,} characters; an id is at most {MAX_ID_CHARS:,}",
            got=got[:40] + "...",
            hint="the column holds something other than ids (a shifted or merged column?)",
            **where,
        )
    if kind == "enum":
        allowed = ", ".join(spec.enums[column])
        return Problem("unknown value", got=got, expected=f"one of {allowed}", **where)
    if kind == "domain":
        hint = None
        if other.scale:
            hint = (
                f"{other.scale.upper()} is read on a {_scale(other)} scale; declare yours in a "
                f"load spec, e.g. `domains: {{{column}: {{min: 1, max: 10}}}}`"
            )
        # a canonical column's value coerced (the domain is checked on the typed value)
        numeric = column in spec.columns or _is_number(got)
        reason = "out of range" if numeric else "not a number"
        return Problem(reason, got=got, expected=other.describe(), hint=hint, **where)
    if kind == "date_range":
        return Problem(
            "date out of range", got=got, expected=f"a year from {MIN_YEAR} to {MAX_YEAR}", **where
        )
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


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _scale(d: Domain) -> str:
    return d.describe().split(" where ")[0].removeprefix("between ").replace(" and ", "-")
