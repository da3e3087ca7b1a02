"""Reading one file into one canonical table: the steps of :func:`read_source`, in order.

Place in the flow: the heart of :mod:`healthscore.sources`. One read runs in a scratch
DuckDB connection of the store (:mod:`healthscore.store.scratch`), one set-based query
per step, so a 10-million-row Parquet file of events is read in seconds:

1. describe the file (:mod:`~healthscore.sources.formats`);
2. name its columns: ``mapping``, ``account_lookup``, ``constants``
   (:mod:`~healthscore.sources.columns`); check the required ones are there
   (:mod:`~healthscore.sources.checks`);
3. read the raw rows, numbered as a user finds them (view ``raw_read``);
4. apply value maps, skipping rows sent to nothing (:mod:`~healthscore.sources.recode`,
   view ``raw_file``), then link looked-up accounts and constants (view ``raw``);
5. coerce every canonical column (:mod:`~healthscore.sources.coerce`, view ``typed``);
6. check every row (:mod:`~healthscore.sources.checks`): raise, or set invalid rows
   aside (:mod:`~healthscore.sources.rejects`) with ``allow_rejects``;
7. fetch the valid rows as Arrow, deriving missing ``usage_events`` ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from healthscore.core.tables import DERIVABLE_KEYS, Table
from healthscore.errors import Problem, SourceError
from healthscore.sources.checks import check_required_columns, find_problems
from healthscore.sources.coerce import ARROW_TYPES, check_date_format, create_typed, type_extras
from healthscore.sources.columns import FileColumns, canonical_table, map_columns
from healthscore.sources.formats import DataFile, format_of
from healthscore.sources.recode import recode
from healthscore.sources.rejects import fetch_rejects
from healthscore.sources.sql import sql_literal, sql_text
from healthscore.store.scratch import ScratchConnection, ScratchError, fetch_arrow, open_scratch


@dataclass
class SourceBatch:
    """The rows of one file, read into one canonical table.

    ``data`` holds the valid rows: every canonical column (typed per ``tables.py``, in
    its column order) then the file's extra columns. ``rejects`` has one
    :class:`~healthscore.errors.Problem` per invalid value and ``reject_rows`` the
    invalid rows as read (text) with ``_row`` and ``_reason``; both are empty/None
    unless :func:`read_source` was called with ``allow_rejects=True``. Rows follow the
    file's order except when event ids are derived (tables are keyed: order is not data).

    ``rows_read`` counts every row of the file, ``skipped`` the rows left out because a
    value map sent their key or a required value to nothing (``skip_reason`` says which
    values). ``supplied`` names the columns that carry the file's data (read, set or
    derived); the other canonical columns of ``data`` are NULL only because the file
    lacks them, and the store keeps their stored values.
    """

    table: str
    file: str
    data: pa.Table
    rejects: list[Problem]
    reject_rows: pa.Table | None
    rows_read: int
    skipped: int = 0
    skip_reason: str | None = None
    #: things worth a look that are not errors, e.g. value-map keys no row has
    warnings: list[str] = field(default_factory=list)
    supplied: tuple[str, ...] = ()


def read_source(
    path,
    table: str,
    mapping: dict[str, str | list[str]] | None = None,
    *,
    date_format: str | None = None,
    allow_rejects: bool = False,
    account_lookup: tuple[str, dict[str, str]] | None = None,
    constants: dict[str, str] | None = None,
    values: dict[str, dict[str, str | None]] | None = None,
    domains: dict[str, tuple[float | None, float | None]] | None = None,
) -> SourceBatch:
    """Read one data file into canonical table ``table``, validated.

    Parameters
    ----------
    path
        A ``.csv`` (commas; ``;``, tab or ``|`` when the header has no comma), ``.tsv``
        (tabs), ``.txt`` (delimiter detected), ``.parquet``/``.pq`` or
        ``.jsonl``/``.ndjson``/``.json`` (JSON lines: one object per line) file.
    table
        Canonical table name, e.g. ``"accounts"``.
    mapping
        ``{source column: canonical column}`` renames applied before validation. A list
        of names feeds several columns from one: the first renames the file's column,
        the others must be canonical columns and read the same values.
    date_format
        A strptime format (``%d/%m/%Y``) tried before ISO 8601 on text timestamps.
    allow_rejects
        False (default): any invalid row raises :class:`SourceError` listing every
        problem, and nothing is returned. True: invalid rows are set aside in
        ``rejects``/``reject_rows`` and the valid ones returned.
    account_lookup
        ``(key, {key value: account_id})`` for a file that carries another table's key
        instead of ``account_id`` (``load_file``'s ``account_from``, e.g. usage rows with a
        ``subscription_id``): ``account_id`` is looked up by that column, which is kept.
        A key with no account is an invalid row.
    constants
        ``{canonical column: text}`` for a column the file lacks that has one value on
        every row (``{"kind": "churned"}``); it is coerced and checked like file values.
    values
        ``{source column: {text: new text or None}}`` value maps, applied to the stripped
        text of a value (exact, case-sensitive) before it is coerced; other values pass
        through. A value sent to None is NULL, and when that lands in the primary key or
        a required column the row is skipped (``skipped``, ``skip_reason``). An extra
        column whose values are recoded is typed by the new values: boolean (all
        true/false), whole number, number, timestamp, else text.
    domains
        ``{column: (min, max)}`` (None: no bound): an extra column's domain, a range added
        to a canonical column, or a CSAT column's scale; a value outside it is an invalid
        row, like the canonical tables' own domains (no negative seats, NPS 0-10 ...).

    Returns
    -------
    SourceBatch
        The valid rows (``data``) and, with ``allow_rejects``, the invalid ones.

    Raises
    ------
    SourceError
        Unknown extension or table, missing file, unreadable file, a ``mapping`` naming
        a column the file lacks, missing required columns, or invalid rows.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "surveys.csv"
    >>> _ = f.write_text("response_id,account_id,ts,kind,score\\n"
    ...                  "R1,A1,2024-03-01,NPS,9\\n"
    ...                  "R2,A1,2024-03-02,poll,7\\n")
    >>> batch = read_source(f, "surveys", allow_rejects=True)
    >>> batch.data.column("kind").to_pylist(), batch.rows_read
    (['nps'], 2)
    >>> p = batch.rejects[0]
    >>> p.row, p.column, p.reason, p.got, p.expected
    (3, 'kind', 'unknown value', 'poll', 'one of nps, csat')
    """
    file = str(path)
    spec = canonical_table(table)
    fmt = format_of(file)
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{file}: file not found" if not p.exists() else f"{file}: not a file")
    with open_scratch() as db:
        if date_format is not None:
            check_date_format(db, date_format)
        if p.stat().st_size == 0:
            return _empty_batch(spec, file)
        cols = FileColumns.of(file, spec, mapping or {}, values or {})
        data = DataFile(file, fmt)
        names, types = data.describe(db)
        map_columns(cols, data, names, types, account_lookup, constants)
        check_required_columns(spec, cols)
        _create_raw(db, data, spec, cols, names)
        skipped, skip_reason, warnings = recode(db, spec, cols)
        _link_accounts(db, cols, account_lookup)
        type_extras(db, cols, fmt)
        typed_select = create_typed(db, spec, cols, fmt, date_format)
        rows_read = db.execute("SELECT count(*) FROM raw_read").fetchone()[0]
        problems, null_keys, internal_row = find_problems(
            db, spec, cols, typed_select, data, date_format, domains
        )
        if problems and not allow_rejects:
            n = len({p.row for p in problems})
            raise SourceError.collect(
                problems, f"{file}: {n} invalid row{'s' if n != 1 else ''}, nothing loaded"
            )
        bad_rows = sorted({internal_row[p.row] for p in problems})
        if bad_rows:
            db.register("__bad", pa.table({"r": pa.array(bad_rows, pa.int64())}))
        # usage_events: ids missing from the file (or from some rows) are derived.
        derive_key = spec.name in DERIVABLE_KEYS and null_keys > 0
        valid = _fetch_valid(db, spec, cols, bad_rows, derive_key)
        reject_rows = fetch_rejects(db, cols, problems, internal_row) if bad_rows else None
    pk = spec.primary_key
    supplied = [n for n in spec.columns if cols.canonical[n] is not None or n == pk]
    return SourceBatch(
        spec.name,
        file,
        valid,
        problems,
        reject_rows,
        rows_read,
        skipped=skipped,
        skip_reason=skip_reason,
        warnings=warnings,
        supplied=tuple(supplied + [c.name for c in cols.extras]),
    )


def _create_raw(
    db: ScratchConnection, data: DataFile, spec: Table, cols: FileColumns, names: list[str]
) -> None:
    """View ``raw_read``: the file's rows as read, columns c0, c1 ..., numbered ``__row``."""
    aliases = ", ".join(c.sql for c in cols.columns)
    alias = f"AS t({aliases})" if aliases else ""
    try:
        if data.fmt == "parquet":
            db.execute(
                f"CREATE VIEW raw_read AS SELECT file_row_number + 1 AS __row, "
                f"* EXCLUDE (file_row_number) FROM {data.reader_sql(False)} {alias}"
            )
            return
        if data.fmt == "json":
            # Canonical columns as text so that coercion and its errors are ours.
            json_columns = ", ".join(
                f"{sql_literal(n)}: {sql_literal('VARCHAR' if c.name in spec.columns else c.type)}"
                for n, c in zip(names, cols.columns, strict=True)
            )
            source = data.reader_sql(False, "{" + json_columns + "}")
            first = 1
        else:
            source = data.reader_sql(False)
            first = 2  # header is row 1
        # A table keeps the file's order, so rowid numbers the rows.
        db.execute(f"CREATE TEMP TABLE raw0 AS SELECT * FROM {source} {alias}")
        db.execute(f"CREATE VIEW raw_read AS SELECT rowid + {first} AS __row, * FROM raw0")
    except ScratchError as e:
        raise data.read_error(e) from None


def _link_accounts(db: ScratchConnection, cols: FileColumns, account_lookup) -> None:
    """View ``raw``: the file's rows, constants, and ``__account`` when looked up by a key."""
    consts = "".join(f", {sql_literal(v)} AS {a}" for a, v in cols.constants.items())
    if cols.lookup_key is None:
        db.execute(f"CREATE VIEW raw AS SELECT *{consts} FROM raw_file")
        return
    pairs = account_lookup[1]
    db.register(
        "__accounts",
        pa.table(
            {
                "k": pa.array([str(k) for k in pairs], pa.string()),
                "a": pa.array([str(a) for a in pairs.values()], pa.string()),
            }
        ),
    )
    key = sql_text(f"f.{cols.lookup_key.sql}")
    db.execute(
        f"CREATE VIEW raw AS SELECT f.*, l.a AS __account{consts} FROM raw_file f "
        f"LEFT JOIN __accounts l ON l.k = {key}"
    )


def _fetch_valid(
    db: ScratchConnection, spec: Table, cols: FileColumns, bad_rows: list[int], derive_key: bool
) -> pa.Table:
    """The valid rows: canonical columns typed as ``tables.py`` says, then the extras."""
    select = []
    for name in spec.columns:
        if name == spec.primary_key and derive_key:
            select.append(f"{_derived_key_sql(spec, cols)} AS v_{name}")
        else:
            select.append(f"v_{name}")
    select += [f"x{c.index}" for c in cols.extras]
    where = ""
    if bad_rows:
        where = "WHERE __row NOT IN (SELECT r FROM __bad)"
    table = fetch_arrow(db.sql(f"SELECT {', '.join(select)} FROM typed {where}"))
    table = table.rename_columns(list(spec.columns) + [c.name for c in cols.extras])
    for i, (name, ctype) in enumerate(spec.columns.items()):
        if table.schema.field(i).type != ARROW_TYPES[ctype]:
            table = table.set_column(i, name, table.column(i).cast(ARROW_TYPES[ctype]))
    return table


def _derived_key_sql(spec: Table, cols: FileColumns) -> str:
    """md5 of the row's canonical text joined by \\x1f, then its occurrence number.

    The text of a column is DuckDB's cast to VARCHAR of the coerced value (timestamps
    as ``2024-03-01 12:00:00``, NULL as ''), so the same event gets the same id from a
    CSV, a JSON or a Parquet file; the occurrence number (1, 2, ... in file order among
    identical rows) keeps exact duplicates apart.
    """
    values = [f"v_{n}" for n in spec.columns if n != spec.primary_key]
    text = ", ".join(f"coalesce(CAST({v} AS VARCHAR), '')" for v in values)
    occurrence = f"row_number() OVER (PARTITION BY {', '.join(values)} ORDER BY __row)"
    derived = f"md5(concat_ws(chr(31), {text}, CAST({occurrence} AS VARCHAR)))"
    if cols.canonical[spec.primary_key] is None:
        return derived
    return f"coalesce(v_{spec.primary_key}, {derived})"


def _empty_batch(spec: Table, file: str) -> SourceBatch:
    data = pa.table({n: pa.array([], ARROW_TYPES[t]) for n, t in spec.columns.items()})
    return SourceBatch(spec.name, file, data, [], None, 0, supplied=tuple(spec.columns))
