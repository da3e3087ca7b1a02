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
7. stream the valid rows as Arrow record batches, deriving event ids a file lacks (or
   building them from ``key``) (:func:`stream_source`; :func:`read_source` reads them into
   one table).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from healthscore.core.tables import DERIVABLE_KEYS, DERIVED_KEY_COLUMNS, Table
from healthscore.errors import Problem, SourceError
from healthscore.sources.checks import (
    check_domain_columns,
    check_required_columns,
    failing_sql,
    find_problems,
    key_value_sql,
)
from healthscore.sources.coerce import (
    ARROW_TYPES,
    check_date_format,
    check_number_format,
    create_typed,
    find_dot_ambiguous,
    mixed_offsets,
    type_extras,
    typed_sql,
)
from healthscore.sources.columns import (
    Column,
    FileColumns,
    canonical_table,
    map_columns,
    unnamed_columns,
)
from healthscore.sources.formats import DataFile, format_of
from healthscore.sources.recode import recode
from healthscore.sources.rejects import fetch_rejects
from healthscore.sources.sql import sql_literal, sql_text
from healthscore.store.scratch import (
    ScratchConnection,
    ScratchError,
    open_scratch,
    query_arrow,
    stream_arrow,
)

#: ``progress(step, fraction)``: what a long read or load is doing, and how far it is
Progress = Callable[[str, float], None]


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
    data: pa.Table | pa.RecordBatchReader
    rejects: list[Problem]
    reject_rows: pa.Table | None
    rows_read: int
    skipped: int = 0
    skip_reason: str | None = None
    #: things worth a look that are not errors, e.g. value-map keys no row has
    warnings: list[str] = field(default_factory=list)
    supplied: tuple[str, ...] = ()
    #: how many valid rows ``data`` holds
    valid: int = 0
    #: no key occurs twice among the valid rows: the reader checked the keys a file
    #: supplies or builds (``key``), and keys derived from whole rows are unique by their
    #: occurrence number; the store need not count distinct keys again
    unique_keys: bool = False


def read_source(
    path,
    table: str | Table,
    mapping: dict[str, str | list[str]] | None = None,
    *,
    date_format: str | None = None,
    number_format: str | None = None,
    allow_rejects: bool = False,
    account_lookup: tuple[str, dict[str, str]] | None = None,
    constants: dict[str, str] | None = None,
    values: dict[str, dict[str, str | None]] | None = None,
    key: list[str] | None = None,
    domains: dict[str, tuple[float | None, float | None]] | None = None,
    text_columns: Collection[str] = (),
) -> SourceBatch:
    """Read one data file into canonical table ``table``, validated.

    Parameters
    ----------
    path
        A ``.csv`` (commas; ``;``, tab or ``|`` when the header has no comma), ``.tsv``
        (tabs), ``.txt`` (delimiter detected), ``.parquet``/``.pq`` or
        ``.jsonl``/``.ndjson``/``.json`` (JSON lines: one object per line) file.
    table
        Canonical table name, e.g. ``"accounts"``; or a :class:`Table` of a caller's own
        for a file that is read and checked but never stored (an evaluation's list of
        (account, date) pairs), which may build its key from columns (``key``).
    mapping
        ``{source column: canonical column}`` renames applied before validation. A list
        of names feeds several columns from one: the first renames the file's column,
        the others must be canonical columns and read the same values.
    date_format
        A strptime format (``%d/%m/%Y``) tried before ISO 8601 on text timestamps.
    number_format
        How numbers are written: ``1,234.56``, ``1.234,56``, ``1 234,56`` or
        ``1 234.56``. None (default): commas separate thousands where a value shows it
        (``1,234.5``); ``1,234`` alone is refused with a hint from the column.
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
    key
        Column names (after ``mapping``) whose values identify a row, for a file without
        the table's primary key (not accounts, users, subscriptions): the key is the md5
        of their values as text joined by ``\\x1f``, and two rows with the same values are
        a duplicate key. Event tables without one derive it from the row (see the
        package docs).
    domains
        ``{column: (min, max)}`` (None: no bound): an extra column's domain, a range added
        to a canonical column, or a CSAT column's scale; a value outside it is an invalid
        row, like the canonical tables' own domains (no negative seats, NPS 0-10 ...).
    text_columns
        Extra columns to read as text whatever their values look like: those the store
        holds as text already (:meth:`~healthscore.store.Store.text_columns`), so that a
        value goes in as the file writes it (``9.50``, not ``9.5``; a JSON number as
        its JSON text, as the service's ingest reads it). Names compare whatever their
        case. An extra column of a JSON lines file whose values mix text and numbers is
        text too, each value without its JSON quotes.

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
    with stream_source(
        path,
        table,
        mapping,
        date_format=date_format,
        number_format=number_format,
        allow_rejects=allow_rejects,
        account_lookup=account_lookup,
        constants=constants,
        values=values,
        key=key,
        domains=domains,
        text_columns=text_columns,
    ) as batch:
        batch.data = batch.data.read_all()
    return batch


@contextmanager
def stream_source(
    path,
    table: str | Table,
    mapping: dict[str, str | list[str]] | None = None,
    *,
    date_format: str | None = None,
    number_format: str | None = None,
    allow_rejects: bool = False,
    account_lookup: tuple[str, dict[str, str]] | None = None,
    constants: dict[str, str] | None = None,
    values: dict[str, dict[str, str | None]] | None = None,
    key: list[str] | None = None,
    domains: dict[str, tuple[float | None, float | None]] | None = None,
    progress: Progress | None = None,
    memory_limit: str | None = None,
    shared_scratch: bool = False,
    text_columns: Collection[str] = (),
) -> Iterator[SourceBatch]:
    """:func:`read_source` for a file of any size: the valid rows as a stream.

    The file is read, checked and its invalid rows found as :func:`read_source` does;
    the batch's ``data`` is then a ``pyarrow.RecordBatchReader`` over the valid rows,
    computed as it is read (never whole in memory), to be read inside the ``with``
    block. ``progress(step, fraction)`` hears of each step; ``memory_limit`` (DuckDB's,
    e.g. ``"1GB"``) bounds the memory the reading holds (beyond it, it spills to disk).
    ``shared_scratch`` reads in the process's shared scratch database (a small file read
    often: see :func:`~healthscore.store.scratch.open_scratch`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "users.csv"
    >>> _ = f.write_text("user_id,account_id\\nU1,A1\\nU2,A1\\n")
    >>> with stream_source(f, "users") as batch:
    ...     print(batch.valid, sum(b.num_rows for b in batch.data))
    2 2
    """
    file = str(path)
    spec = table if isinstance(table, Table) else canonical_table(table)
    fmt = format_of(file)
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{file}: file not found" if not p.exists() else f"{file}: not a file")
    data = DataFile(file, fmt)
    data.check_not_empty()
    data.check_nesting()
    with data, open_scratch(memory_limit, shared=shared_scratch) as db:
        if date_format is not None:
            check_date_format(db, date_format)
        check_number_format(number_format)
        if progress:
            progress(f"reading {p.name}", 0.0)
        cols = FileColumns.of(file, spec, mapping or {}, values or {})
        names, types = data.describe(db)
        map_columns(cols, data, names, types, account_lookup, constants, key)
        check_required_columns(spec, cols)
        check_domain_columns(cols, domains)
        as_text = {n.casefold() for n in text_columns}
        _create_raw(db, data, spec, cols, names, as_text)
        left_out = unnamed_columns(db, cols, data, cols.unnamed)
        skipped, skip_reason, warnings = recode(db, spec, cols)
        warnings = left_out + warnings
        _link_accounts(db, cols, account_lookup)
        type_extras(db, cols, fmt, as_text)
        find_dot_ambiguous(db, spec, cols, fmt, number_format)
        warnings += mixed_offsets(db, spec, cols, fmt, data)
        typed_select = create_typed(db, spec, cols, fmt, date_format, number_format)
        rows_read = db.execute("SELECT count(*) FROM raw_read").fetchone()[0]
        if progress:
            progress(f"checking {rows_read:,} rows", 0.0)
        pk = spec.primary_key
        # a file without the key of an event table: every row's id is derived, and the
        # values seen twice are found in the pass that checks the rows
        derive_all = spec.name in DERIVABLE_KEYS and cols.canonical[pk] is None and not cols.key
        problems, null_keys, internal_row = find_problems(
            db,
            spec,
            cols,
            typed_select,
            data,
            date_format,
            number_format,
            domains,
            repeats=_identifying_sql(spec) if derive_all else None,
        )
        if problems and not allow_rejects:
            n = len({p.row for p in problems})
            raise SourceError.collect(
                problems, f"{file}: {n} invalid row{'s' if n != 1 else ''}, nothing loaded"
            )
        bad_rows = sorted({internal_row[p.row] for p in problems})
        if bad_rows:
            db.register("__bad", pa.table({"r": pa.array(bad_rows, pa.int64())}))
        reject_rows = fetch_rejects(db, cols, problems, internal_row) if bad_rows else None
        # event tables: ids missing from the file (or from some rows) are derived.
        derive_key = (spec.name in DERIVABLE_KEYS and null_keys > 0) or bool(cols.key)
        # a derived id could only meet a supplied one in a file that mixes the two
        unique_keys = bool(cols.key) or not (derive_key and cols.canonical[pk] is not None)
        supplied = [n for n in spec.columns if cols.canonical[n] is not None or n == pk]
        yield SourceBatch(
            spec.name,
            file,
            _stream_valid(db, spec, cols, bool(bad_rows), derive_key, derive_all),
            problems,
            reject_rows,
            rows_read,
            skipped=skipped,
            skip_reason=skip_reason,
            warnings=warnings,
            supplied=tuple(supplied + [c.name for c in cols.extras]),
            valid=rows_read - skipped - len(bad_rows),
            unique_keys=unique_keys,
        )


def read_text_rows(text: pa.Table, table: str, label: str, derive_key: bool) -> SourceBatch | None:
    """An in-memory source: rows of canonical columns held as text (as a JSON lines
    reader reads them: a string as is, a number or boolean as written in JSON, NULL),
    read as :func:`stream_source` reads a file with those rows, in one query: coerced by
    the same SQL, checked by the same checks, event ids derived by the same expression.

    ``text`` has one text column per canonical column the rows carry (each required
    column among them; the primary key may be absent where ``derive_key``);
    ``derive_key``: some rows have no primary key, to be derived. The valid rows, all
    of them, as a :class:`SourceBatch` (``data`` a stream, ``file`` = ``label``); or
    None when any row fails a check or a key repeats: :func:`stream_source` over the
    same rows then words each problem with its row and column.

    Examples
    --------
    >>> rows = pa.table({"user_id": ["U1"], "account_id": [" A1 "], "created_at": ["2024-03-01"]})
    >>> batch = read_text_rows(rows, "users", "users batch", False)
    >>> batch.data.read_all().to_pylist()  # doctest: +NORMALIZE_WHITESPACE
    [{'user_id': 'U1', 'account_id': 'A1',
      'created_at': datetime.datetime(2024, 3, 1, 0, 0)}]
    >>> bad = pa.table({"user_id": ["U1"], "account_id": ["A1"], "created_at": ["soon"]})
    >>> read_text_rows(bad, "users", "users batch", False) is None
    True
    """
    spec = canonical_table(table)
    pk = spec.primary_key
    cols = FileColumns(label, spec, {}, {})
    cols.columns = [Column(i, n, n, "VARCHAR") for i, n in enumerate(text.column_names)]
    by_name = {c.name: c for c in cols.columns}
    cols.canonical = {n: by_name.get(n) for n in spec.columns}
    derive_key = derive_key and spec.name in DERIVABLE_KEYS
    select = []
    for name in spec.columns:
        if name == pk and derive_key:
            select.append(f"{_derived_key_sql(spec, cols, True)} AS v_{name}")
        else:
            select.append(f"v_{name}")
    # identical rows numbered in batch order (a file's rows are numbered by
    # _number_repeats; a batch with a bad row goes that way, so all rows here are valid)
    same = ", ".join(f"v_{n}" for n in DERIVED_KEY_COLUMNS.get(spec.name, ()))
    occurrence = (
        f", row_number() OVER (PARTITION BY {same} ORDER BY __row) AS occurrence"
        if derive_key and same
        else ""
    )
    raw = pa.table(
        [pa.array(range(1, text.num_rows + 1), pa.int64()), *text.columns],
        names=["__row", *(c.sql for c in cols.columns)],
    )
    typed = typed_sql(spec, cols, "json", None, None)
    # materialized: inlined, each coercion would run again for every check that reads it
    # (three times the time)
    found = query_arrow(
        f"WITH typed AS MATERIALIZED ({typed} raw) "
        f", numbered AS (SELECT *{occurrence} FROM typed) "
        f"SELECT {', '.join(select)}, {failing_sql(spec, cols)} AS __bad "
        "FROM numbered ORDER BY __row",
        "raw",
        raw,
    )
    keys = found.column(f"v_{pk}")
    if pc.any(found.column("__bad")).as_py() or keys.null_count:
        return None
    if pc.count_distinct(keys).as_py() != found.num_rows:
        return None  # a key twice: the file's checks say which rows
    schema = pa.schema([pa.field(n, ARROW_TYPES[t]) for n, t in spec.columns.items()])
    typed_columns = found.columns[: len(schema)]
    data = pa.table([c.cast(f.type) for c, f in zip(typed_columns, schema, strict=True)], schema)
    return SourceBatch(
        spec.name,
        label,
        pa.RecordBatchReader.from_batches(schema, data.to_batches()),
        [],
        None,
        text.num_rows,
        supplied=tuple(n for n in spec.columns if cols.canonical[n] is not None or n == pk),
        valid=text.num_rows,
        unique_keys=True,
    )


def _create_raw(
    db: ScratchConnection,
    data: DataFile,
    spec: Table,
    cols: FileColumns,
    names: list[str],
    as_text: set[str],
) -> None:
    """View ``raw_read``: the file's rows as read, columns c0, c1 ..., numbered ``__row``.
    ``as_text``: extra columns (case-folded names) a JSON lines file's are read as text."""
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
            # Canonical columns as text so that coercion and its errors are ours; extra
            # ones to be text too (a value's own text: a number's as JSON writes it), and
            # those mixing text and numbers (DuckDB's JSON type: its text would keep a
            # string's quotes)
            for c in cols.extras:
                if c.type == "JSON" or c.name.casefold() in as_text:
                    c.type = "VARCHAR"
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
                "k": pa.array([unicodedata.normalize("NFC", str(k)) for k in pairs], pa.string()),
                "a": pa.array([str(a) for a in pairs.values()], pa.string()),
            }
        ),
    )
    # compared in Unicode NFC, as ids are: é as one character or as e + accent
    key = f"nfc_normalize({sql_text(f'f.{cols.lookup_key.sql}')})"
    db.execute(
        f"CREATE VIEW raw AS SELECT f.*, l.a AS __account{consts} FROM raw_file f "
        f"LEFT JOIN __accounts l ON l.k = {key}"
    )


def _stream_valid(
    db: ScratchConnection,
    spec: Table,
    cols: FileColumns,
    any_bad: bool,
    derive_key: bool,
    repeating_found: bool = False,
) -> pa.RecordBatchReader:
    """The valid rows: canonical columns typed as ``tables.py`` says, then the extras.
    ``repeating_found``: the checks made table ``__repeating`` (see :func:`_number_repeats`)."""
    where = "WHERE __row NOT IN (SELECT r FROM __bad)" if any_bad else ""
    repeats = derive_key and not cols.key and _number_repeats(db, spec, where, repeating_found)
    select = []
    for name in spec.columns:
        if name == spec.primary_key and derive_key:
            select.append(f"{_derived_key_sql(spec, cols, repeats)} AS v_{name}")
        else:
            select.append(f"v_{name}")
    select += [f"x{c.index}" for c in cols.extras]
    source = "typed LEFT JOIN __repeats USING (__row)" if repeats else "typed"
    reader = stream_arrow(db, f"SELECT {', '.join(select)} FROM {source} {where}")
    found = reader.schema
    fields = [pa.field(n, ARROW_TYPES[t]) for n, t in spec.columns.items()]
    extras = list(found)[len(fields) :]
    fields += [pa.field(c.name, f.type) for c, f in zip(cols.extras, extras, strict=True)]
    schema = pa.schema(fields)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            columns = [
                col if col.type == f.type else col.cast(f.type)
                for col, f in zip(batch.columns, schema, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _identifying_sql(spec: Table) -> str:
    """SQL over ``typed``: the values that identify a row whose id is derived."""
    return ", ".join(f"v_{n}" for n in DERIVED_KEY_COLUMNS[spec.name])


def _number_repeats(db: ScratchConnection, spec: Table, where: str, found: bool = False) -> bool:
    """Table ``__repeats``: the occurrence number (2, 3 ...) of each valid row that
    repeats an earlier row's identifying values; whether there is any.

    Most rows occur once: a hash aggregate over the rows finds the few values that
    may repeat (a hash of the values seen twice: table ``__repeating``, made here or,
    ``found``, by the checks' pass over the rows), and only those rows are numbered in
    file order, instead of a window over every row (a sort of the whole file: at 100 M
    rows it spilled 5 GB)."""
    values = _identifying_sql(spec)
    valid = f"(SELECT * FROM typed {where})"
    if not found:
        db.execute(
            f"CREATE TEMP TABLE __repeating AS SELECT hash({values}) AS h FROM {valid} "
            "GROUP BY h HAVING count(*) > 1"
        )
    if not db.execute("SELECT count(*) FROM __repeating").fetchone()[0]:
        return False  # the common case: one pass, and no row is numbered
    db.execute(
        f"CREATE TEMP TABLE __repeats AS SELECT __row, occurrence FROM ("
        f"SELECT __row, row_number() OVER (PARTITION BY {values} ORDER BY __row) AS occurrence "
        f"FROM {valid} WHERE hash({values}) IN (SELECT h FROM __repeating)) "
        "WHERE occurrence > 1"
    )
    return db.execute("SELECT count(*) FROM __repeats").fetchone()[0] > 0


def _derived_key_sql(spec: Table, cols: FileColumns, repeats: bool) -> str:
    """md5 of the row's identifying text joined by \\x1f (then its occurrence number).

    With ``key`` the named columns, else the table's :data:`DERIVED_KEY_COLUMNS`. The
    text of a column is DuckDB's cast to VARCHAR of the coerced value (timestamps as
    ``2024-03-01 12:00:00``, NULL as ''), so the same event gets the same id from a CSV,
    a JSON or a Parquet file; without ``key`` the occurrence number (1, 2, ... in file
    order among identical rows, from ``__repeats``: see :func:`_number_repeats`;
    ``repeats`` False: no row repeats another) keeps exact duplicates apart.
    """
    if cols.key:
        values = [key_value_sql(spec, c) for c in cols.key]
        text = ", ".join(f"coalesce(CAST({v} AS VARCHAR), '')" for v in values)
        return f"md5(concat_ws(chr(31), {text}))"
    values = [f"v_{n}" for n in DERIVED_KEY_COLUMNS[spec.name]]
    text = ", ".join(f"coalesce(CAST({v} AS VARCHAR), '')" for v in values)
    occurrence = "CAST(coalesce(occurrence, 1) AS VARCHAR)" if repeats else "'1'"
    derived = f"md5(concat_ws(chr(31), {text}, {occurrence}))"
    if cols.canonical[spec.primary_key] is None:
        return derived
    return f"coalesce(v_{spec.primary_key}, {derived})"
