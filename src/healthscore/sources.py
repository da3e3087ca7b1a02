"""sources: file -> validated canonical rows; the store writes them.

Place in the flow: the first stage. :func:`read_source` reads one data file (CSV/TSV,
Parquet or JSON lines) into one canonical table of :mod:`healthscore.tables`: it renames
columns (``--map source=canonical``), coerces every canonical column to its type, checks
each row, and returns a :class:`SourceBatch` holding the valid rows as a ``pyarrow.Table``
plus, when asked for, the invalid ones with their reasons. Nothing here writes anywhere
except :func:`write_rejects`; ``store`` loads the batch.

The work is done by DuckDB in an in-memory connection, one set-based query per step, so
a 10-million-row Parquet file of events is read in seconds. Python only touches the rows
already found invalid, to word their messages.

Rules, in the order a row meets them:

- whitespace around values is stripped and an empty value is NULL, for every type;
- each canonical column is coerced: text, whole numbers, numbers (``1,234`` is refused:
  no thousands separators), booleans (``true/false, t/f, yes/no, y/n, 1/0``) and UTC
  timestamps (ISO 8601 dates and times, offsets converted to UTC, ``2024/03/01``, or the
  ``date_format`` given); native Parquet timestamps and dates pass through;
- required columns must have a value; enum columns (``surveys.kind``...) must hold one
  of their values, compared and stored lower-cased; an interval's end may not be before
  its start; a primary key may appear once in a file (the later row is the invalid one);
- negative quantities and amounts are valid (credits, refunds).

A ``usage_events`` file without ``event_id`` gets one derived from the row: the md5 hex
of its canonical values as text (``account_id, user_id, event, ts, quantity``, NULL as
empty) and its occurrence number among identical rows, joined by ``\\x1f``. Re-reading a
file gives the same ids, and exact duplicate rows stay distinct events.

Rows are numbered as a user finds them: CSV rows as in a spreadsheet (the header is
row 1, the first data row is 2; blank lines are skipped by the reader and not counted),
JSON lines by line number, Parquet rows from 1.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "accounts.csv").write_text(
...     "account_id,name,signup_date,seats\\n"
...     "A1, Acme ,2024-03-01,12\\n"
...     "A2,Globex,2024-03-01T12:00:00+02:00,3\\n"
... )
>>> batch = read_source(d / "accounts.csv", "accounts", {"signup_date": "created_at"})
>>> batch.data.column_names
['account_id', 'name', 'segment', 'csm', 'created_at', 'seats']
>>> batch.data.column("name").to_pylist()
['Acme', 'Globex']
>>> [str(t) for t in batch.data.column("created_at").to_pylist()]
['2024-03-01 00:00:00', '2024-03-01 10:00:00']
>>> _ = (d / "tickets.csv").write_text(
...     "ticket_id,account_id,opened_at,closed_at\\n"
...     "T1,A1,2024-03-01,2024-02-01\\n"
... )
>>> try:
...     read_source(d / "tickets.csv", "tickets")
... except SourceError as e:
...     print(str(e).replace(str(d) + "/", ""))  # doctest: +NORMALIZE_WHITESPACE
tickets.csv: 1 invalid row, nothing loaded:
  tickets.csv:2: closed_at: is before opened_at
  (got '2024-02-01', expected at or after opened_at '2024-03-01')
"""

from __future__ import annotations

import csv
import difflib
import math
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from healthscore.errors import Problem, SourceError
from healthscore.tables import (
    BOOL,
    DERIVABLE_KEYS,
    FLOAT,
    INT,
    STRING,
    TABLES,
    TIMESTAMP,
    Table,
)

CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")
JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")
EXTENSIONS = CSV_EXTENSIONS + PARQUET_EXTENSIONS + JSON_EXTENSIONS

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
DATE_FORMAT_HINT = "pass --date-format, e.g. %d/%m/%Y"
MAP_HINT = "use --map source=canonical"

# Whitespace stripped around every value: space, tab, CR, LF, no-break space, BOM.
_SPACE = " \t\r\n\u00a0\ufeff"
_EDGE_SPACE = r"^[\s\x{00A0}\x{FEFF}]|[\s\x{00A0}\x{FEFF}]$"
# Text accepted as a timestamp: ISO 8601 date, optional time and offset; also 2024/03/01.
_ISO = (
    r"^(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2})"
    r"([Tt ]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?\s*([Zz]|UTC|[+-]\d{2}(:?\d{2})?)?)?$"
)
_INT_RE = r"^[+-]?[0-9]+(\.0*)?$"
_NUM_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# Day-first or month-first dates: ambiguous without --date-format.
_SLASHED_DATE = re.compile(r"^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b")

_INT_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
    "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}  # fmt: skip
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL"}
_NATIVE_TIME_TYPES = {
    "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE",
    "TIMESTAMP WITH TIME ZONE",
}  # fmt: skip


@dataclass
class SourceBatch:
    """The rows of one file, read into one canonical table.

    ``data`` holds the valid rows: every canonical column (typed per ``tables.py``, in
    its column order) then the file's extra columns. ``rejects`` has one
    :class:`~healthscore.errors.Problem` per invalid value and ``reject_rows`` the
    invalid rows as read (text) with ``_row`` and ``_reason``; both are empty/None
    unless :func:`read_source` was called with ``allow_rejects=True``. Rows follow the
    file's order except when event ids are derived (tables are keyed: order is not data).
    """

    table: str
    file: str
    data: pa.Table
    rejects: list[Problem]
    reject_rows: pa.Table | None
    rows_read: int


@dataclass
class _Column:
    """One column of the file: where it is, what it is called before and after --map."""

    index: int
    source: str  # name in the file, whitespace stripped
    name: str  # name after mapping
    type: str  # DuckDB type as sniffed or read
    csv_type: str = "VARCHAR"  # extra CSV columns: the sniffed type, if every value fits
    alias: str | None = None  # columns not in the file (a --set constant)

    @property
    def sql(self) -> str:
        if self.alias:
            return self.alias
        return f"c{self.index}" if self.index >= 0 else "__account"


def parse_mapping(items: Iterable[str] | None) -> dict[str, str]:
    """Turn ``--map`` items ``source=canonical`` into ``{source: canonical}``.

    Parameters
    ----------
    items
        Strings like ``"signup_date=created_at"``; whitespace around names is ignored.

    Returns
    -------
    dict
        Source column name -> canonical column name.

    Examples
    --------
    >>> parse_mapping(["signup_date=created_at", " plan_tier = segment "])
    {'signup_date': 'created_at', 'plan_tier': 'segment'}
    >>> parse_mapping(["signup_date"])
    Traceback (most recent call last):
    ...
    healthscore.errors.SourceError: --map 'signup_date': expected source=canonical, \
e.g. signup_date=created_at
    """
    mapping: dict[str, str] = {}
    targets: dict[str, str] = {}
    for item in items or []:
        source, sep, target = str(item).partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target or "=" in target:
            raise SourceError(
                f"--map {item!r}: expected source=canonical, e.g. signup_date=created_at"
            )
        if source in mapping and mapping[source] != target:
            raise SourceError(
                f"--map {item!r}: {source!r} is already mapped to {mapping[source]!r}"
            )
        if target in targets and targets[target] != source:
            raise SourceError(
                f"--map {item!r}: {targets[target]!r} is already mapped to {target!r}"
            )
        mapping[source] = target
        targets[target] = source
    return mapping


def parse_constants(items: Iterable[str] | None) -> dict[str, str]:
    """Turn ``--set`` items ``column=value`` into ``{column: value}``.

    >>> parse_constants(["kind=churned"])
    {'kind': 'churned'}
    """
    out: dict[str, str] = {}
    for item in items or []:
        col, sep, value = str(item).partition("=")
        if not sep or not col.strip():
            raise SourceError(f"--set {item!r}: expected column=value, e.g. kind=churned")
        out[col.strip()] = value.strip()
    return out


def read_source(
    path,
    table: str,
    mapping: dict[str, str] | None = None,
    *,
    date_format: str | None = None,
    allow_rejects: bool = False,
    account_lookup: tuple[str, dict[str, str]] | None = None,
    constants: dict[str, str] | None = None,
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
        ``{source column: canonical column}`` renames applied before validation.
    date_format
        A strptime format (``%d/%m/%Y``) tried before ISO 8601 on text timestamps.
    allow_rejects
        False (default): any invalid row raises :class:`SourceError` listing every
        problem, and nothing is returned. True: invalid rows are set aside in
        ``rejects``/``reject_rows`` and the valid ones returned.
    account_lookup
        ``(key, {key value: account_id})`` for a file that carries another table's key
        instead of ``account_id`` (``--account-from``, e.g. usage rows with a
        ``subscription_id``): ``account_id`` is looked up by that column, which is kept.
        A key with no account is an invalid row.
    constants
        ``{canonical column: text}`` for a column the file lacks that has one value on
        every row (``--set kind=churned``); it is coerced and checked like file values.

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
    spec = _table(table)
    fmt = _format_of(file)
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{file}: file not found" if not p.exists() else f"{file}: not a file")
    # A private spill directory keeps memory bounded without writing into the cwd.
    with tempfile.TemporaryDirectory(prefix="healthscore-") as spill:
        con = duckdb.connect(config={"temp_directory": spill})
        try:
            # Session time zone UTC: casts between zoned and naive timestamps then mean UTC.
            con.execute("SET TimeZone = 'UTC'")
            if date_format is not None:
                _check_date_format(con, date_format)
            if p.stat().st_size == 0:
                return _empty_batch(spec, file)
            reader = _Reader(con, spec, file, fmt, mapping or {}, date_format, allow_rejects)
            return reader.run(account_lookup, constants or {})
        finally:
            con.close()


def write_rejects(batch: SourceBatch, path) -> int:
    """Write ``batch.reject_rows`` to ``path`` as CSV and return how many rows it holds.

    With no rejects the file is still written (header ``_row,_reason`` only), so a
    rejects file left over from an earlier load never lingers.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "users.csv").write_text("user_id,account_id\\nU1,A1\\nU2,\\n")
    >>> write_rejects(read_source(d / "users.csv", "users", allow_rejects=True), d / "r.csv")
    1
    >>> print((d / "r.csv").read_text().strip())
    _row,_reason,user_id,account_id
    3,account_id: required value is empty,U2,
    """
    rows = batch.reject_rows
    if rows is None:
        rows = pa.table({"_row": pa.array([], pa.int64()), "_reason": pa.array([], pa.string())})
    con = duckdb.connect()
    try:
        con.register("rejects", rows)
        con.execute(f"COPY rejects TO {_lit(path)} (FORMAT csv, HEADER)")
    except (duckdb.Error, OSError) as e:
        detail = str(e).strip().splitlines()[0]
        raise SourceError(f"{path}: cannot write rejects: {detail}") from None
    finally:
        con.close()
    return rows.num_rows


# ---------------------------------------------------------------------------- reading


class _Reader:
    """One read: describe the file, map columns, coerce, check, fetch."""

    def __init__(self, con, spec: Table, file, fmt, mapping, date_format, allow_rejects):
        self.con = con
        self.spec = spec
        self.file = file
        self.fmt = fmt
        self.mapping = {str(k).strip(): str(v).strip() for k, v in mapping.items()}
        self.date_format = date_format
        self.allow_rejects = allow_rejects
        self.lit = _lit(file)

    def run(self, account_lookup=None, constants=None) -> SourceBatch:
        names, types = self._describe()
        self.columns = self._map_columns(names, types)
        by_name = {c.name: c for c in self.columns}
        self.canonical = {n: by_name.get(n) for n in self.spec.columns}
        self.extras = [c for c in self.columns if c.name not in self.spec.columns]
        self.lookup_key = self._lookup_key(account_lookup, by_name)
        self.constants = self._constants(constants or {})
        self._check_required()
        self._create_raw(names)
        self._link_accounts(account_lookup)
        self._create_typed()
        rows_read = self.con.execute("SELECT count(*) FROM raw").fetchone()[0]
        problems, null_keys = self._find_problems()
        # usage_events: ids missing from the file (or from some rows) are derived.
        self.derive_key = self.spec.name in DERIVABLE_KEYS and null_keys > 0
        if problems and not self.allow_rejects:
            n = len({p.row for p in problems})
            raise SourceError.collect(
                problems, f"{self.file}: {n} invalid row{'s' if n != 1 else ''}, nothing loaded"
            )
        bad_rows = sorted({self._internal_row[p.row] for p in problems})
        if bad_rows:
            self.con.register("__bad", pa.table({"r": pa.array(bad_rows, pa.int64())}))
        data = self._fetch_valid(bad_rows)
        reject_rows = self._fetch_rejects(bad_rows, problems) if bad_rows else None
        return SourceBatch(self.spec.name, self.file, data, problems, reject_rows, rows_read)

    # -- 1. what is in the file

    def _describe(self) -> tuple[list[str], list[str]]:
        # .csv means commas (unless its header has none but has ';', tab or '|') and .tsv
        # tabs; a .txt file's delimiter is detected.
        lower, self.delim = self.file.lower(), None
        if lower.endswith(".tsv"):
            self.delim = "\t"
        elif lower.endswith(".csv"):
            with open(self.file, "rb") as f:
                header = f.readline(65536)
            if b"," in header or not any(d in header for d in (b";", b"\t", b"|")):
                self.delim = ","
        try:
            rel = self.con.sql(f"SELECT * FROM {self._reader_sql(typed=True)}")
            return list(rel.columns), [str(t) for t in rel.types]
        except duckdb.Error as e:
            raise self._read_error(e) from None

    def _reader_sql(self, typed: bool, json_columns: str = "") -> str:
        if self.fmt == "csv":
            opts = ", header = true, skip = 0"
            if self.delim:
                opts += f", delim = {_lit(self.delim)}"
            if not typed:
                opts += ", all_varchar = true"
            return f"read_csv({self.lit}{opts})"
        if self.fmt == "json":
            opts = ", format = 'newline_delimited'"
            opts += ", sample_size = -1" if typed else f", columns = {json_columns}"
            return f"read_json({self.lit}{opts})"
        return f"read_parquet({self.lit}, file_row_number = true)"

    def _read_error(self, e: Exception) -> SourceError:
        what = {"csv": "CSV", "json": "JSON lines (one object per line)", "parquet": "Parquet"}
        if self.fmt == "csv" and self.delim:
            ragged = _ragged_row(self.file, self.delim)
            if ragged:
                row, found, expected = ragged
                return SourceError(
                    f"{self.file}:{row}: has {found} {_plural(found, 'field')}, the header "
                    f"has {expected}",
                    hint="quote values that contain the delimiter" if found > expected else None,
                )
        detail = _duckdb_detail(e)
        hint = None
        if "utf-8" in detail.lower():
            hint = "save the file as UTF-8"
        elif self.fmt == "json":
            detail = detail.replace(" Try auto-detecting the JSON format", "")
            hint = "write one JSON object per line; a file holding a JSON array is not read"
        return SourceError(f"{self.file}: cannot read as {what[self.fmt]}: {detail}", hint=hint)

    # -- 2. --map and required columns

    def _map_columns(self, names: list[str], types: list[str]) -> list[_Column]:
        if self.fmt == "parquet":  # the reader's file_row_number comes last
            names, types = names[:-1], types[:-1]
        stripped = [n.strip() for n in names]
        unknown = [s for s in self.mapping if s not in stripped]
        if unknown:
            found = ", ".join(stripped)
            raise SourceError.collect(
                [
                    Problem(
                        f"--map {s}={self.mapping[s]}: the file has no column {s!r}",
                        file=self.file,
                        expected=f"one of {found}",
                    )
                    for s in unknown
                ],
                f"{self.file}: --map names {_plural(len(unknown), 'column')} "
                f"not in the file (columns found: {found})",
            )
        self._check_case_twins()
        canonical = list(self.spec.columns)
        for s, target in self.mapping.items():
            close = difflib.get_close_matches(target, canonical, n=1, cutoff=0.75)
            if target not in canonical and close:
                raise SourceError(
                    f"--map {s}={target}: {target!r} is not a column of {self.spec.name}; "
                    f"did you mean {close[0]!r}?",
                    hint="columns: " + ", ".join(canonical),
                )
        # a header that differs from a canonical column only by case (Segment) is that column
        by_lower = {c.lower(): c for c in canonical}
        present = {self.mapping.get(s, s) for s in stripped}
        columns = []
        for i, (s, t) in enumerate(zip(stripped, types, strict=True)):
            name = self.mapping.get(s, s)
            if name not in canonical and name.lower() in by_lower:
                if by_lower[name.lower()] not in present:
                    name = by_lower[name.lower()]
            columns.append(_Column(i, s, name, t))
        seen: dict[str, _Column] = {}
        for c in columns:
            if c.name in seen:
                first = seen[c.name]
                how = " (after --map)" if c.name != c.source or first.name != first.source else ""
                raise SourceError(
                    f"{self.file}: two columns are named {c.name!r}{how}: "
                    f"{first.source!r} and {c.source!r}",
                    hint="rename or drop one of them",
                )
            seen[c.name] = c
        return columns

    def _check_case_twins(self) -> None:
        """Two header names that differ only by case: the reader would rename one silently."""
        names: list[str] = []
        if self.fmt == "parquet":
            names = pq.read_schema(self.file).names
        elif self.fmt == "csv" and self.delim:
            with open(self.file, encoding="utf-8", errors="replace", newline="") as f:
                names = next(csv.reader(f, delimiter=self.delim), [])
        seen: dict[str, str] = {}
        for n in (x.strip() for x in names):
            if n.lower() in seen and seen[n.lower()] != n:
                raise SourceError(
                    f"{self.file}: columns {seen[n.lower()]!r} and {n!r} differ only by case",
                    hint="rename one of them in the file",
                )
            seen[n.lower()] = n

    def _check_required(self) -> None:
        spec = self.spec
        missing = [c for c in spec.required if self.canonical[c] is None]
        if spec.name not in DERIVABLE_KEYS and self.canonical[spec.primary_key] is None:
            if spec.primary_key not in missing:
                missing.insert(0, spec.primary_key)
        if not missing:
            return
        found = ", ".join(c.source for c in self.columns)
        spare = [c.source for c in self.columns if c.name not in spec.columns]
        problems = []
        for col in missing:
            close = difflib.get_close_matches(col, spare, n=1, cutoff=0.6)
            example = f"--map {close[0]}={col}" if close else f"--map <column>={col}"
            problems.append(
                Problem(
                    "required column is missing",
                    file=self.file,
                    column=col,
                    hint=f"{MAP_HINT}, e.g. {example}",
                )
            )
        raise SourceError.collect(
            problems,
            f"{self.file}: missing required {_plural(len(missing), 'column')} for table "
            f"{spec.name} ({', '.join(missing)}); columns found: {found}",
        )

    def _lookup_key(self, account_lookup, by_name) -> _Column | None:
        """With --account-from: the file column holding the key account_id is found by."""
        if account_lookup is None:
            return None
        key = account_lookup[0]
        found = ", ".join(c.source for c in self.columns)
        if self.canonical["account_id"] is not None:
            raise SourceError(
                f"{self.file}: has an account_id column; --account-from is for files that "
                f"carry {key} instead"
            )
        if key not in by_name:
            raise SourceError(
                f"{self.file}: no column {key!r} to look the account up by "
                f"(columns found: {found})",
                hint=f"{MAP_HINT}, e.g. --map <column>={key}",
            )
        self.canonical["account_id"] = _Column(-1, "account_id", "account_id", "VARCHAR")
        return by_name[key]

    def _constants(self, constants: dict[str, str]) -> dict[str, str]:
        """With --set: canonical columns the file lacks, one value on every row."""
        out = {}
        for i, (col, value) in enumerate(constants.items()):
            if col not in self.spec.columns:
                raise SourceError(
                    f"--set {col}={value}: {col!r} is not a column of {self.spec.name}",
                    hint="columns: " + ", ".join(self.spec.columns),
                )
            if self.canonical[col] is not None:
                raise SourceError(
                    f"{self.file}: --set {col}={value}: the file already has a column {col!r}"
                )
            alias = f"__const{i}"
            self.canonical[col] = _Column(-2 - i, col, col, "VARCHAR", alias=alias)
            out[alias] = str(value)
        return out

    # -- 3. the raw rows, numbered, and their typed values

    def _create_raw(self, names: list[str]) -> None:
        aliases = ", ".join(c.sql for c in self.columns)
        alias = f"AS t({aliases})" if aliases else ""
        try:
            if self.fmt == "parquet":
                self.con.execute(
                    f"CREATE VIEW raw_file AS SELECT file_row_number + 1 AS __row, "
                    f"* EXCLUDE (file_row_number) FROM {self._reader_sql(False)} {alias}"
                )
                return
            if self.fmt == "json":
                # Canonical columns as text so that coercion and its errors are ours.
                cols = ", ".join(
                    f"{_lit(n)}: {_lit('VARCHAR' if c.name in self.spec.columns else c.type)}"
                    for n, c in zip(names, self.columns, strict=True)
                )
                source = self._reader_sql(False, "{" + cols + "}")
                first = 1
            else:
                source = self._reader_sql(False)
                first = 2  # header is row 1
            # A table keeps the file's order, so rowid numbers the rows.
            self.con.execute(f"CREATE TEMP TABLE raw0 AS SELECT * FROM {source} {alias}")
            self.con.execute(
                f"CREATE VIEW raw_file AS SELECT rowid + {first} AS __row, * FROM raw0"
            )
        except duckdb.Error as e:
            raise self._read_error(e) from None

    def _link_accounts(self, account_lookup) -> None:
        """View ``raw``: the file's rows, plus ``__account`` when looked up by a key."""
        consts = "".join(f", {_lit(v)} AS {a}" for a, v in self.constants.items())
        if self.lookup_key is None:
            self.con.execute(f"CREATE VIEW raw AS SELECT *{consts} FROM raw_file")
        else:
            pairs = account_lookup[1]
            self.con.register(
                "__accounts",
                pa.table(
                    {
                        "k": pa.array([str(k) for k in pairs], pa.string()),
                        "a": pa.array([str(a) for a in pairs.values()], pa.string()),
                    }
                ),
            )
            key = _text(f"f.{self.lookup_key.sql}")
            self.con.execute(
                f"CREATE VIEW raw AS SELECT f.*, l.a AS __account{consts} FROM raw_file f "
                f"LEFT JOIN __accounts l ON l.k = {key}"
            )
        if self.fmt == "csv":
            self._type_csv_extras()

    def _type_csv_extras(self) -> None:
        """Give extra CSV columns the type DuckDB sniffed, if every value fits it."""
        candidates = [c for c in self.extras if c.type not in ("VARCHAR", "NULL")]
        if not candidates:
            return
        checks = ", ".join(
            f"bool_and({_text(c.sql)} IS NULL OR TRY_CAST({_text(c.sql)} AS {c.type}) IS NOT NULL)"
            for c in candidates
        )
        fits = self.con.execute(f"SELECT {checks} FROM raw").fetchone()
        for c, ok in zip(candidates, fits, strict=True):
            c.csv_type = c.type if ok is not False else "VARCHAR"

    def _create_typed(self) -> None:
        """View ``typed``: per canonical column c its value v_c, presence p_c, raw text r_c."""
        parts = ["__row"]
        for name, ctype in self.spec.columns.items():
            col = self.canonical[name]
            if col is None:
                cast = {STRING: "VARCHAR", INT: "BIGINT", FLOAT: "DOUBLE", BOOL: "BOOLEAN"}
                parts += [
                    f"CAST(NULL AS {cast.get(ctype, 'TIMESTAMP')}) AS v_{name}",
                    f"false AS p_{name}",
                    f"CAST(NULL AS VARCHAR) AS r_{name}",
                ]
                continue
            # CSV and JSON canonical columns are read as text; Parquet keeps its types.
            src = col.type if self.fmt == "parquet" else "VARCHAR"
            value, present = _coerce(col.sql, src, ctype, self.date_format)
            if name in self.spec.enums:
                value = f"lower({value})"
            parts += [
                f"{value} AS v_{name}",
                f"{present} AS p_{name}",
                f"CAST({col.sql} AS VARCHAR) AS r_{name}",
            ]
        for c in self.extras:
            parts.append(f"{self._extra_sql(c)} AS x{c.index}")
        if self.lookup_key is not None:
            parts.append(f"CAST({self.lookup_key.sql} AS VARCHAR) AS r__lookup")
        self.typed_select = f"SELECT {', '.join(parts)} FROM "
        self.con.execute(f"CREATE VIEW typed AS {self.typed_select} raw")

    def _extra_sql(self, c: _Column) -> str:
        t = c.csv_type if self.fmt == "csv" else c.type
        if t in ("VARCHAR", "JSON"):
            return _text(c.sql)
        if self.fmt == "csv":
            value = f"TRY_CAST({_text(c.sql)} AS {t})"
        else:
            value = c.sql
        if t in ("DATE", "TIMESTAMP WITH TIME ZONE") or t.startswith("TIMESTAMP_"):
            return f"CAST({value} AS TIMESTAMP)"
        return value

    # -- 4. the checks

    def _find_problems(self) -> tuple[list[Problem], int]:
        """Every problem in the file, and how many rows have no primary key value."""
        spec = self.spec
        checks: list[tuple[str, str, str]] = []  # (flag sql, kind, column)
        looked_up = self.lookup_key is not None
        for name in spec.columns:
            if self.canonical[name] is None or (looked_up and name == "account_id"):
                continue
            checks.append((f"p_{name} AND v_{name} IS NULL", "type", name))
            if name in spec.required:
                checks.append((f"NOT p_{name}", "required", name))
            if name in spec.enums:
                allowed = ", ".join(_lit(v) for v in spec.enums[name])
                checks.append((f"v_{name} NOT IN ({allowed})", "enum", name))
        if spec.start and spec.end and self.canonical[spec.start] and self.canonical[spec.end]:
            checks.append((f"v_{spec.end} < v_{spec.start}", "interval", spec.end))
        raw_names = list(spec.columns)
        if looked_up:
            key, key_text = self.lookup_key.name, _text("r__lookup")
            checks.append((f"{key_text} IS NULL", "lookup_empty", key))
            checks.append((f"{key_text} IS NOT NULL AND v_account_id IS NULL", "lookup", key))
            raw_names.append(key)

        found: list[tuple[int, str, str, tuple]] = []  # (row, kind, column, values)
        pk = spec.primary_key
        flags = ", ".join(f"coalesce({sql}, false)" for sql, _, _ in checks)
        raws = ", ".join([f"r_{n}" for n in spec.columns] + (["r__lookup"] if looked_up else []))
        any_bad = " OR ".join(f"coalesce({sql}, false)" for sql, _, _ in checks) or "false"
        # First only which rows are bad: as a projection feeding an aggregate, each value
        # is coerced once (a WHERE would inline and repeat the coercions).
        bad, null_keys = self.con.execute(
            f"SELECT list(__row) FILTER (WHERE bad), count(*) FILTER (WHERE v_{pk} IS NULL) "
            f"FROM (SELECT __row, v_{pk}, {any_bad} AS bad FROM typed)"
        ).fetchone()
        if bad:
            self.con.register("__suspects", pa.table({"r": pa.array(bad, pa.int64())}))
            # Coerce again only those rows, to find what is wrong with each.
            suspects = "(SELECT * FROM raw WHERE __row IN (SELECT r FROM __suspects))"
            rows = self.con.execute(
                f"SELECT __row, {raws}, {flags} FROM ({self.typed_select} {suspects}) "
                "ORDER BY __row"
            ).fetchall()
            width = len(raw_names)
            for row in rows:
                raw = dict(zip(raw_names, row[1 : 1 + width], strict=True))
                for (_, kind, col), hit in zip(checks, row[1 + width :], strict=True):
                    if hit:
                        extra = raw[spec.start] if kind == "interval" else None
                        found.append((row[0], kind, col, (raw[col], extra)))

        if self.canonical[pk] is not None:
            # Count first: listing the rows of every key would be costly on big files.
            keys = _to_arrow(
                self.con.sql(
                    f"SELECT v_{pk} FROM typed WHERE v_{pk} IS NOT NULL "
                    f"GROUP BY v_{pk} HAVING count(*) > 1"
                )
            )
            dups = []
            if keys.num_rows:
                self.con.register("__dup_keys", keys.rename_columns(["k"]))
                dups = self.con.execute(
                    f"SELECT v_{pk}, list(__row ORDER BY __row) FROM typed "
                    f"WHERE v_{pk} IN (SELECT k FROM __dup_keys) GROUP BY v_{pk}"
                ).fetchall()
            for value, rows in dups:
                for r in rows[1:]:
                    found.append((r, "duplicate", pk, (value, rows[0])))

        if not found:
            self._internal_row = {}
            return [], null_keys
        # Internal numbers -> what the user sees (JSON lines: line numbers).
        wanted = {r for r, *_ in found} | {v[1] for _, k, _, v in found if k == "duplicate"}
        shown = self._user_rows(sorted(wanted))
        self._internal_row = {shown[r]: r for r in wanted}
        order = {n: i for i, n in enumerate(spec.columns)}
        found.sort(key=lambda f: (f[0], order.get(f[2], len(order))))
        return [self._problem(shown, *f) for f in found], null_keys

    def _problem(self, shown, row, kind, column, values) -> Problem:
        got, other = values
        where = {"file": self.file, "row": shown[row], "column": column}
        if kind == "type":
            ctype = self.spec.columns[column]
            return Problem(got=got, **_coercion_reason(ctype, got, self.date_format), **where)
        if kind == "required":
            return Problem("required value is empty", **where)
        if kind == "enum":
            allowed = ", ".join(self.spec.enums[column])
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
            start = self.spec.start
            return Problem(
                f"is before {start}",
                got=got,
                expected=f"at or after {start} {str(other).strip()!r}",
                **where,
            )
        return Problem(f"duplicate {column}, first seen at row {shown[other]}", got=got, **where)

    def _user_rows(self, rows: list[int]) -> dict[int, int]:
        """Map internal row numbers to those a user sees in the file."""
        if self.fmt != "json":
            return {r: r for r in rows}
        # The JSON reader skips blank lines; count them back in to give line numbers.
        result, want, record = {}, iter(rows), 0
        target = next(want, None)
        with open(self.file, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                if target is None:
                    break
                if line.strip():
                    record += 1
                    while target == record:
                        result[target] = line_no
                        target = next(want, None)
        return result | {r: r for r in rows if r not in result}

    # -- 5. the output

    def _fetch_valid(self, bad_rows: list[int]) -> pa.Table:
        spec = self.spec
        select = []
        for name in spec.columns:
            if name == spec.primary_key and self.derive_key:
                select.append(f"{self._derived_key_sql()} AS v_{name}")
            else:
                select.append(f"v_{name}")
        select += [f"x{c.index}" for c in self.extras]
        where = ""
        if bad_rows:
            where = "WHERE __row NOT IN (SELECT r FROM __bad)"
        table = _to_arrow(self.con.sql(f"SELECT {', '.join(select)} FROM typed {where}"))
        table = table.rename_columns(list(spec.columns) + [c.name for c in self.extras])
        for i, (name, ctype) in enumerate(spec.columns.items()):
            if table.schema.field(i).type != ARROW_TYPES[ctype]:
                table = table.set_column(i, name, table.column(i).cast(ARROW_TYPES[ctype]))
        return table

    def _derived_key_sql(self) -> str:
        """md5 of the row's canonical text joined by \\x1f, then its occurrence number.

        The text of a column is DuckDB's cast to VARCHAR of the coerced value (timestamps
        as ``2024-03-01 12:00:00``, NULL as ''), so the same event gets the same id from a
        CSV, a JSON or a Parquet file; the occurrence number (1, 2, ... in file order among
        identical rows) keeps exact duplicates apart.
        """
        spec = self.spec
        cols = [f"v_{n}" for n in spec.columns if n != spec.primary_key]
        text = ", ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in cols)
        occurrence = f"row_number() OVER (PARTITION BY {', '.join(cols)} ORDER BY __row)"
        derived = f"md5(concat_ws(chr(31), {text}, CAST({occurrence} AS VARCHAR)))"
        if self.canonical[spec.primary_key] is None:
            return derived
        return f"coalesce(v_{spec.primary_key}, {derived})"

    def _fetch_rejects(self, bad_rows: list[int], problems: list[Problem]) -> pa.Table:
        cols = ", ".join(f"CAST({c.sql} AS VARCHAR)" for c in self.columns)
        table = _to_arrow(
            self.con.sql(
                f"SELECT __row, {cols} FROM raw WHERE __row IN (SELECT r FROM __bad) ORDER BY __row"
            )
        )
        reasons: dict[int, list[str]] = {}
        for p in problems:
            reasons.setdefault(p.row, []).append(
                str(Problem(p.reason, column=p.column, got=p.got, expected=p.expected, hint=p.hint))
            )
        shown = {internal: user for user, internal in self._internal_row.items()}
        user_rows = [shown[r] for r in table.column(0).to_pylist()]
        columns = {
            "_row": pa.array(user_rows, pa.int64()),
            "_reason": pa.array(["; ".join(reasons[r]) for r in user_rows], pa.string()),
        }
        for i, c in enumerate(self.columns, start=1):
            columns[c.source] = table.column(i).cast(pa.string())
        return pa.table(columns)


# ---------------------------------------------------------------------------- helpers


def _table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise SourceError(
            f"unknown table {name!r}", hint="canonical tables are: " + ", ".join(TABLES)
        ) from None


def _format_of(file: str) -> str:
    lower = file.lower()
    for fmt, exts in (
        ("csv", CSV_EXTENSIONS),
        ("parquet", PARQUET_EXTENSIONS),
        ("json", JSON_EXTENSIONS),
    ):
        if lower.endswith(exts):
            return fmt
    raise SourceError(
        f"{file}: unknown file type", hint="accepted extensions: " + ", ".join(EXTENSIONS)
    )


def _check_date_format(con, date_format: str) -> None:
    try:
        con.execute(f"SELECT try_strptime('2024-01-01', {_lit(date_format)})")
    except duckdb.Error as e:
        detail = str(e).strip().splitlines()[0]
        raise SourceError(
            f"--date-format {date_format!r} is not a valid strptime format: {detail}",
            hint="e.g. %d/%m/%Y or %m/%d/%Y %H:%M",
        ) from None


def _empty_batch(spec: Table, file: str) -> SourceBatch:
    data = pa.table({n: pa.array([], ARROW_TYPES[t]) for n, t in spec.columns.items()})
    return SourceBatch(spec.name, file, data, [], None, 0)


def _to_arrow(rel) -> pa.Table:
    fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
    return fetch()


def _duckdb_detail(e: Exception) -> str:
    """The useful part of a DuckDB error: its first paragraph, without the echoed input."""
    lines = []
    for line in str(e).strip().splitlines():
        if not line.strip() or line.startswith("Possible"):
            break
        if not line.startswith("Original Line"):
            lines.append(line.strip())
    text = ": ".join(lines) or type(e).__name__
    return re.sub(r"^[A-Za-z ]*Error: ", "", text)


def _ragged_row(file: str, delim: str) -> tuple[int, int, int] | None:
    """First CSV row whose field count differs from the header's: (row, found, expected).

    Only called once DuckDB has refused the file, to say where it went wrong.
    """
    try:
        with open(file, newline="", encoding="utf-8") as f:
            rows = csv.reader(f, delimiter=delim)
            header = next(rows, None)
            if header is None:
                return None
            row = 1
            for fields in rows:
                if not fields:  # blank lines are skipped, as DuckDB does
                    continue
                row += 1
                if len(fields) != len(header):
                    return row, len(fields), len(header)
    except (UnicodeDecodeError, csv.Error):
        return None
    return None


def _lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _text(sql: str) -> str:
    """Trimmed text of a value, NULL when empty.

    Trimming is only attempted on values that start or end with whitespace: most
    don't, and a trim over every value of a big file is what would cost time.
    """
    x = f"CAST({sql} AS VARCHAR)"
    return (
        f"CASE WHEN {x} = '' THEN NULL WHEN regexp_matches({x}, {_lit(_EDGE_SPACE)}) "
        f"THEN nullif(trim({x}, {_lit(_SPACE)}), '') ELSE {x} END"
    )


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _coerce(col: str, src: str, ctype: str, date_format: str | None) -> tuple[str, str]:
    """SQL for (typed value, "a value is present") of raw column ``col`` of type ``src``.

    A present value whose typed value is NULL is a coercion failure.
    """
    base = src.split("(")[0]
    present = f"({_text(col)} IS NOT NULL)"
    if base in _INT_TYPES | _FLOAT_TYPES | {"DECIMAL", "BOOLEAN"} | _NATIVE_TIME_TYPES:
        present = f"({col} IS NOT NULL)"
    if ctype == STRING:
        if base in _INT_TYPES:
            return f"CAST({col} AS VARCHAR)", present
        if base in _FLOAT_TYPES:  # 42.0 from a float column is the id '42'
            whole = f"(isfinite({col}) AND {col} = trunc({col}) AND abs({col}) < 1e15)"
            return (
                f"CASE WHEN {whole} THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) "
                f"ELSE CAST({col} AS VARCHAR) END",
                present,
            )
        return _text(col), present
    if ctype == INT:
        if base in _INT_TYPES:
            return f"TRY_CAST({col} AS BIGINT)", present
        if base in _FLOAT_TYPES or base == "DECIMAL":
            return f"CASE WHEN {col} = trunc({col}) THEN TRY_CAST({col} AS BIGINT) END", present
        s = _text(col)
        return (
            f"CASE WHEN regexp_full_match({s}, {_lit(_INT_RE)}) "
            f"THEN TRY_CAST(regexp_replace({s}, '\\.0*$', '') AS BIGINT) END",
            present,
        )
    if ctype == FLOAT:
        if base in _INT_TYPES or base in _FLOAT_TYPES or base == "DECIMAL":
            d = f"CAST({col} AS DOUBLE)"
            return f"CASE WHEN isfinite({d}) THEN {d} END", present
        s = _text(col)
        d = f"TRY_CAST({s} AS DOUBLE)"
        return (
            f"CASE WHEN regexp_full_match({s}, {_lit(_NUM_RE)}) AND isfinite({d}) THEN {d} END",
            present,
        )
    if ctype == BOOL:
        if base == "BOOLEAN":
            return col, present
        if base in _INT_TYPES:
            return f"CASE {col} WHEN 1 THEN true WHEN 0 THEN false END", present
        s = f"lower({_text(col)})"
        yes = ", ".join(_lit(w) for w in TRUE_WORDS)
        no = ", ".join(_lit(w) for w in FALSE_WORDS)
        return f"CASE WHEN {s} IN ({yes}) THEN true WHEN {s} IN ({no}) THEN false END", present
    # TIMESTAMP
    if base in _NATIVE_TIME_TYPES:
        return f"CAST({col} AS TIMESTAMP)", present
    s = _text(col)
    value = _iso_timestamp_sql(s)
    if date_format:
        value = f"coalesce(CAST(try_strptime({s}, {_lit(date_format)}) AS TIMESTAMP), {value})"
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
    return f"CASE WHEN regexp_full_match({s}, {_lit(_ISO)}) THEN CAST({zoned} AS TIMESTAMP) END"


def _coercion_reason(ctype: str, got, date_format: str | None) -> dict:
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
