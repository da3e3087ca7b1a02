"""sources: file -> validated canonical rows; the store writes them.

Place in the flow: the first stage. :func:`read_source` reads one data file (CSV/TSV,
Parquet or JSON lines) into one canonical table of :mod:`healthscore.core.tables`: it renames
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

A source column may feed several canonical columns (``--map "Customer ID=account_id"
--map "Customer ID=outcome_id"``), and its values may be recoded before they are coerced
(``values`` in a load spec file, see :func:`read_spec`): a value recoded to nothing in
the primary key or a required column skips its row, which is counted, not rejected.

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
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from healthscore.core.tables import (
    BOOL,
    DERIVABLE_KEYS,
    FLOAT,
    INT,
    STRING,
    TABLES,
    TIMESTAMP,
    Table,
)
from healthscore.errors import Problem, SourceError

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


@dataclass
class _Column:
    """One column of the file: where it is, what it is called before and after --map."""

    index: int
    source: str  # name in the file, whitespace stripped
    name: str  # name after mapping
    type: str  # DuckDB type as sniffed or read (VARCHAR once its values are recoded)
    text_type: str = "VARCHAR"  # extras read as text (CSV, recoded): the type every value fits
    alias: str | None = None  # columns not in the file (a --set constant, a 2nd --map target)
    recoded: bool = False  # its values go through a value map

    @property
    def sql(self) -> str:
        if self.alias:
            return self.alias
        return f"c{self.index}" if self.index >= 0 else "__account"


def parse_mapping(items: Iterable[str] | None) -> dict[str, str | list[str]]:
    """Turn ``--map`` items ``source=canonical`` into ``{source: canonical}``.

    Parameters
    ----------
    items
        Strings like ``"signup_date=created_at"``; whitespace around names is ignored. A
        source given several times feeds several columns (the first is the file's
        column renamed; the others must be canonical columns).

    Returns
    -------
    dict
        Source column name -> canonical column name, or the list of names, in the order
        given, for a source mapped more than once.

    Examples
    --------
    >>> parse_mapping(["signup_date=created_at", " plan_tier = segment "])
    {'signup_date': 'created_at', 'plan_tier': 'segment'}
    >>> parse_mapping(["Customer ID=account_id", "Customer ID=outcome_id"])
    {'Customer ID': ['account_id', 'outcome_id']}
    >>> parse_mapping(["signup_date"])
    Traceback (most recent call last):
    ...
    healthscore.errors.SourceError: --map 'signup_date': expected source=canonical, \
e.g. signup_date=created_at
    """
    mapping: dict[str, list[str]] = {}
    targets: dict[str, str] = {}
    for item in items or []:
        source, sep, target = str(item).partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target or "=" in target:
            raise SourceError(
                f"--map {item!r}: expected source=canonical, e.g. signup_date=created_at"
            )
        if target in targets and targets[target] != source:
            raise SourceError(
                f"--map {item!r}: {targets[target]!r} is already mapped to {target!r}"
            )
        if target not in mapping.setdefault(source, []):  # the same item twice is harmless
            mapping[source].append(target)
        targets[target] = source
    return {s: t[0] if len(t) == 1 else t for s, t in mapping.items()}


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
    mapping: dict[str, str | list[str]] | None = None,
    *,
    date_format: str | None = None,
    allow_rejects: bool = False,
    account_lookup: tuple[str, dict[str, str]] | None = None,
    constants: dict[str, str] | None = None,
    values: dict[str, dict[str, str | None]] | None = None,
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
        instead of ``account_id`` (``--account-from``, e.g. usage rows with a
        ``subscription_id``): ``account_id`` is looked up by that column, which is kept.
        A key with no account is an invalid row.
    constants
        ``{canonical column: text}`` for a column the file lacks that has one value on
        every row (``--set kind=churned``); it is coerced and checked like file values.
    values
        ``{source column: {text: new text or None}}`` value maps, applied to the stripped
        text of a value (exact, case-sensitive) before it is coerced; other values pass
        through. A value sent to None is NULL, and when that lands in the primary key or
        a required column the row is skipped (``skipped``, ``skip_reason``). An extra
        column whose values are recoded is typed by the new values: boolean (all
        true/false), whole number, number, timestamp, else text.

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
            reader = _Reader(
                con, spec, file, fmt, mapping or {}, date_format, allow_rejects, values or {}
            )
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


# ---------------------------------------------------------------------------- load specs


@dataclass
class LoadSpec:
    """How one file becomes rows of one table: what the load flags hold, plus value maps.

    ``mapping`` is ``{source: name or [names]}`` as :func:`parse_mapping` returns,
    ``values`` ``{source: {text: new text or None}}``, ``constants`` ``{column: text}``
    as :func:`parse_constants` returns and ``date_format`` a strptime format; each is
    the :func:`read_source` argument of that name. :func:`read_spec` reads one from a
    YAML file.
    """

    mapping: dict[str, str | list[str]] = field(default_factory=dict)
    values: dict[str, dict[str, str | None]] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None

    def with_flags(
        self,
        mapping: dict[str, str | list[str]] | None = None,
        constants: dict[str, str] | None = None,
        date_format: str | None = None,
    ) -> LoadSpec:
        """This spec with command-line flags added; where they disagree the flag wins.

        A ``--map`` of a source the spec maps replaces the spec's names for it (its value
        map stays) and takes its target away from any other source of the spec; a
        ``--set`` replaces the spec's value for that column; ``--date-format`` the spec's.

        Examples
        --------
        >>> spec = LoadSpec({"Id": ["account_id", "outcome_id"], "Status": "kind"})
        >>> spec.with_flags({"Ref": "outcome_id"}, {"ts": "2024-02-01"}).mapping
        {'Id': 'account_id', 'Status': 'kind', 'Ref': 'outcome_id'}
        """
        mapping = mapping or {}
        taken = {t for v in mapping.values() for t in _as_list(v)}
        merged: dict[str, str | list[str]] = {}
        for source, names in self.mapping.items():
            kept = [t for t in _as_list(names) if t not in taken]
            if source not in mapping and kept:
                merged[source] = kept[0] if len(kept) == 1 else kept
        return LoadSpec(
            {**merged, **mapping},
            {s: dict(v) for s, v in self.values.items()},
            {**self.constants, **(constants or {})},
            date_format or self.date_format,
        )


def read_spec(path, table: str | None = None) -> LoadSpec:
    """Read a load spec file: column names, value maps, constants and a date format.

    The file is YAML::

        map:
          Customer ID: [account_id, outcome_id]   # one column feeds two
          Tenure in Months: tenure_months         # rename
          Customer Status:                        # rename and recode values
            to: kind
            values: {Churned: churned, Stayed: renewed, Joined: null}
          Phone Service:
            values: {"Yes": true, "No": false}    # recode only
        set: {ts: 2022-09-30}                     # like --set
        date_format: "%d/%m/%Y"                   # like --date-format

    ``values`` keys are compared with a file's values as text: YAML reads ``true``,
    ``1.5`` or ``2024-03-01`` unquoted as other types, which are taken back to the text
    ``true``, ``1.5``, ``2024-03-01``; quote keys to match other spellings exactly. New
    values may be text, numbers, true/false (all written as text, then coerced like
    the file's values) or null.

    Parameters
    ----------
    path
        The YAML file.
    table
        The canonical table the spec is for: when given, the column names it maps to
        and sets are checked against that table's here, with the spec's line numbers.

    Returns
    -------
    LoadSpec

    Raises
    ------
    SourceError
        Listing every problem as ``<file>:<line>: <key path>: <what is wrong>``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "status.yaml"
    >>> _ = f.write_text(
    ...     "map:\\n  Status:\\n    to: kind\\n    values: {Lost: churned, New: null}\\n"
    ...     "set: {ts: 2024-03-01}\\n"
    ... )
    >>> spec = read_spec(f, "outcomes")
    >>> spec.mapping, spec.values, spec.constants
    ({'Status': 'kind'}, {'Status': {'Lost': 'churned', 'New': None}}, {'ts': '2024-03-01'})
    >>> _ = f.write_text("map:\\n  Status:\\n    to: knd\\n")
    >>> try:
    ...     read_spec(f, "outcomes")
    ... except SourceError as e:
    ...     print(str(e).replace(str(f), "status.yaml"))
    status.yaml:3: map.Status.to: 'knd' is not a column of outcomes; did you mean 'kind'?; \
hint: columns: outcome_id, account_id, ts, kind, arr_delta
    """
    file = str(path)
    p = Path(path)
    if not p.is_file():
        raise SourceError(
            f"{file}: load spec not found" if not p.exists() else f"{file}: not a file"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{file}: cannot read the load spec", hint="save it as UTF-8") from None
    doc = _load_yaml(text, file)
    if not isinstance(doc, dict):
        raise SourceError(
            problems=[
                Problem(
                    "a load spec must be a YAML mapping",
                    file=file,
                    line=1,
                    expected="keys " + ", ".join(_SPEC_KEYS),
                    hint="see `healthscore load` in docs/data.md",
                )
            ]
        )
    try:
        parsed = _SpecFile.model_validate(_plain(doc))
    except ValidationError as e:
        raise SourceError(problems=_spec_problems(e, doc, file)) from None
    problems = _spec_checks(parsed, doc, file, table)
    if problems:
        raise SourceError(problems=problems)
    return LoadSpec(
        {s.strip(): c.to[0] if len(c.to) == 1 else c.to for s, c in parsed.map_.items() if c.to},
        {s.strip(): c.values for s, c in parsed.map_.items() if c.values},
        {c.strip(): v for c, v in parsed.set_.items()},
        parsed.date_format,
    )


_SPEC_KEYS = ("map", "set", "date_format")
_COLUMN_KEYS = ("to", "values")
_COLUMN_FORMS = (
    "expected a column name, a list of names, or a mapping with `to:` (names) and/or "
    "`values:` (a value map)"
)


class _SpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _SpecColumn(_SpecBase):
    """One entry of ``map:``: the names a file column feeds and the map of its values."""

    to: list[str] | None = None
    values: dict[str, str | None] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, v: Any) -> Any:
        if isinstance(v, str | list):
            return {"to": v}
        if not isinstance(v, dict):
            raise ValueError(_COLUMN_FORMS)
        return v

    @field_validator("to", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        names = [v] if isinstance(v, str) else v
        if v is None:
            return None
        if not isinstance(names, list) or not names:
            raise ValueError("expected a column name or a list of column names")
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError("expected column names (text), not empty")
        return [n.strip() for n in names]

    @field_validator("values", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, dict):
            raise ValueError("expected a map of file value: new value, e.g. {Churned: churned}")
        out = {}
        for key, new in v.items():
            if key is None or not _yaml_text(key).strip():
                raise ValueError("a key must be a value found in the file (empty cells are NULL)")
            if isinstance(new, dict | list):
                raise ValueError(
                    f"{_yaml_text(key)!r}: a new value must be text, a number, true/false or null"
                )
            out[_yaml_text(key).strip()] = None if new is None else _yaml_text(new)
        return out

    @model_validator(mode="after")
    def _does_something(self):
        if self.to is None and self.values is None:
            raise ValueError(_COLUMN_FORMS)
        return self


class _SpecFile(_SpecBase):
    map_: dict[str, _SpecColumn] = Field(default_factory=dict, alias="map")
    set_: dict[str, str] = Field(default_factory=dict, alias="set")
    date_format: str | None = None

    @field_validator("map_", "set_", mode="before")
    @classmethod
    def _text_keys(cls, v: Any) -> Any:
        if v is None:
            return {}
        return {_yaml_text(k): x for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("set_", mode="before")
    @classmethod
    def _text_values(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: x if isinstance(x, dict | list) else _yaml_text(x) for k, x in v.items()}


def _yaml_text(v: Any) -> str:
    """The text a CSV would hold for a YAML scalar: true/false, 1.5, 2022-09-30, '' for null."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):  # datetime too
        return v.isoformat()
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


def _as_list(names: str | list[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _load_yaml(text: str, file: str) -> Any:
    """The YAML document with node positions; a syntax error shows its numbered lines."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if line:
            lines = text.splitlines()
            lo, hi = max(1, line - 2), min(len(lines), line + 2)
            context = "\n" + "\n".join(f"{i:>5} | {lines[i - 1]}" for i in range(lo, hi + 1))
        reason = f"YAML syntax error: {e.problem or e}{context}"
        raise SourceError(problems=[Problem(reason, file=file, line=line)]) from None
    except Exception as e:  # ruamel raises a few errors without a position
        raise SourceError(problems=[Problem(f"YAML error: {e}", file=file)]) from None


def _plain(node: Any) -> Any:
    """ruamel's mappings and lists as plain ones (keys untouched: validators read them)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _spec_node(doc: Any, path: tuple) -> tuple[Any, int | None]:
    """The node at ``path`` (as far as it exists) and the 1-based line of the deepest key."""
    line, node = None, doc
    for key in path:
        lc = getattr(node, "lc", None)
        if isinstance(node, dict):
            found = [k for k in node if k == key or _yaml_text(k) == key]
            if not found:
                return None, line
            if lc is not None:
                line = lc.key(found[0])[0] + 1
            node = node[found[0]]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            if lc is not None:
                line = lc.item(key)[0] + 1
            node = node[key]
        else:
            return None, line
    return node, line


def _key_path(loc: tuple) -> str:
    out = ""
    for k in loc:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _spec_problems(e: ValidationError, doc: Any, file: str) -> list[Problem]:
    """Schema errors as problems with the spec's line and key path."""
    problems = []
    for err in e.errors():
        loc = tuple(k for k in err["loc"] if not (isinstance(k, str) and k.startswith("function-")))
        reason = err["msg"].removeprefix("Value error, ")
        hint = None
        if err["type"] == "extra_forbidden":
            reason = f"unknown key {loc[-1]!r}"
            hint = "allowed here: " + ", ".join(_SPEC_KEYS if len(loc) == 1 else _COLUMN_KEYS)
        got = err.get("input") if err["type"] != "extra_forbidden" else None
        if isinstance(got, dict | list):
            got = None
        line = _spec_node(doc, loc)[1]
        problems.append(
            Problem(reason, file=file, line=line, key=_key_path(loc), got=got, hint=hint)
        )
    return problems


def _spec_checks(parsed: _SpecFile, doc: Any, file: str, table: str | None) -> list[Problem]:
    """What the schema cannot see: names mapped twice, names not in ``table``, the format."""
    problems = []
    spec = _table(table) if table else None

    def add(reason: str, path: tuple, **kw) -> None:
        problems.append(
            Problem(reason, file=file, line=_spec_node(doc, path)[1], key=_key_path(path), **kw)
        )

    owner: dict[str, str] = {}
    for source, column in parsed.map_.items():
        raw = _spec_node(doc, ("map", source))[0]
        base = ("map", source, "to") if isinstance(raw, dict) else ("map", source)
        listed = isinstance(raw.get("to") if isinstance(raw, dict) else raw, list)
        for k, target in enumerate(column.to or []):
            path = base + ((k,) if listed else ())
            if target in (column.to or [])[:k]:
                add(f"{target!r} is listed twice", path)
            elif target in owner:
                add(f"{owner[target]!r} is already mapped to {target!r}", path)
            elif spec and (wrong := _target_problem(spec, target, further=k > 0)):
                add(wrong, path, hint=_columns_hint(spec))
            owner.setdefault(target, source)
    for column in parsed.set_:
        if spec and column not in spec.columns:
            close = difflib.get_close_matches(column, list(spec.columns), n=1, cutoff=0.6)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            add(
                f"{column!r} is not a column of {spec.name}{guess}",
                ("set", column),
                hint=_columns_hint(spec),
            )
    if parsed.date_format is not None:
        con = duckdb.connect()
        try:
            con.execute(f"SELECT try_strptime('2024-01-01', {_lit(parsed.date_format)})")
        except duckdb.Error as e:
            add(
                f"not a valid strptime format: {_duckdb_detail(e)}",
                ("date_format",),
                got=parsed.date_format,
                hint="e.g. %d/%m/%Y or %m/%d/%Y %H:%M",
            )
        finally:
            con.close()
    return problems


# ---------------------------------------------------------------------------- reading


class _Reader:
    """One read: describe the file, map columns, coerce, check, fetch."""

    def __init__(
        self, con, spec: Table, file, fmt, mapping, date_format, allow_rejects, values=None
    ):
        self.con = con
        self.spec = spec
        self.file = file
        self.fmt = fmt
        self.mapping = {str(k).strip(): _targets(k, v) for k, v in mapping.items()}
        self.values = {
            str(k).strip(): {str(a).strip(): b for a, b in v.items()}
            for k, v in (values or {}).items()
        }
        self.date_format = date_format
        self.allow_rejects = allow_rejects
        self.lit = _lit(file)
        self.warnings: list[str] = []

    def run(self, account_lookup=None, constants=None) -> SourceBatch:
        names, types = self._describe()
        self.columns, self.aliases = self._map_columns(names, types)
        by_name = {c.name: c for c in self.columns + self.aliases}
        self.canonical = {n: by_name.get(n) for n in self.spec.columns}
        self.extras = [c for c in self.columns if c.name not in self.spec.columns]
        self.lookup_key = self._lookup_key(account_lookup, by_name)
        self.constants = self._constants(constants or {})
        self._check_required()
        self._create_raw(names)
        skipped, skip_reason = self._recode()
        self._link_accounts(account_lookup)
        self._create_typed()
        rows_read = self.con.execute("SELECT count(*) FROM raw_read").fetchone()[0]
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
        pk = self.spec.primary_key
        supplied = [n for n in self.spec.columns if self.canonical[n] is not None or n == pk]
        return SourceBatch(
            self.spec.name,
            self.file,
            data,
            problems,
            reject_rows,
            rows_read,
            skipped=skipped,
            skip_reason=skip_reason,
            warnings=self.warnings,
            supplied=tuple(supplied + [c.name for c in self.extras]),
        )

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

    def _map_columns(
        self, names: list[str], types: list[str]
    ) -> tuple[list[_Column], list[_Column]]:
        """The file's columns as renamed, and the further columns fed by the same values."""
        if self.fmt == "parquet":  # the reader's file_row_number comes last
            names, types = names[:-1], types[:-1]
        stripped = [n.strip() for n in names]
        unknown = [s for s in {**self.values, **self.mapping} if s not in stripped]
        if unknown:
            found = ", ".join(stripped)
            mapped = sum(s in self.mapping for s in unknown)
            what = {len(unknown): "--map names", 0: "values name"}.get(
                mapped, "--map and values name"
            )
            raise SourceError.collect(
                [
                    Problem(
                        f"{self._map_item(s)}: the file has no column {s!r}",
                        file=self.file,
                        expected=f"one of {found}",
                    )
                    for s in unknown
                ],
                f"{self.file}: {what} {_plural(len(unknown), 'column')} "
                f"not in the file (columns found: {found})",
            )
        self._check_case_twins()
        canonical = list(self.spec.columns)
        for s, targets in self.mapping.items():
            for k, target in enumerate(targets):
                wrong = _target_problem(self.spec, target, further=k > 0)
                if wrong:
                    raise SourceError(f"--map {s}={target}: {wrong}", hint=_columns_hint(self.spec))
                if target in targets[:k]:
                    raise SourceError(f"--map {s}={target}: {s!r} is mapped to {target!r} twice")
        # a header that differs from a canonical column only by case (Segment) is that column
        by_lower = {c.lower(): c for c in canonical}
        present = {t for s in stripped for t in self.mapping.get(s, [s])}
        columns, aliases = [], []
        for i, (s, t) in enumerate(zip(stripped, types, strict=True)):
            name, *more = self.mapping.get(s, [s])
            if name not in canonical and name.lower() in by_lower:
                if by_lower[name.lower()] not in present:
                    name = by_lower[name.lower()]
            recoded = s in self.values
            col = _Column(i, s, name, "VARCHAR" if recoded else t, recoded=recoded)
            columns.append(col)
            # the raw view names the file's columns c0, c1...: a further name reads the same
            aliases += [_Column(i, s, m, col.type, alias=f"c{i}", recoded=recoded) for m in more]
        seen: dict[str, _Column] = {}
        for c in columns + aliases:
            if c.name in seen:
                first = seen[c.name]
                how = " (after --map)" if c.name != c.source or first.name != first.source else ""
                raise SourceError(
                    f"{self.file}: two columns are named {c.name!r}{how}: "
                    f"{first.source!r} and {c.source!r}",
                    hint="rename or drop one of them",
                )
            seen[c.name] = c
        return columns, aliases

    def _map_item(self, source: str) -> str:
        """How the user named a source column: ``--map source=target`` or its value map."""
        if source in self.mapping:
            return "; ".join(f"--map {source}={t}" for t in self.mapping[source])
        return f"values of {source!r}"

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
                    f"CREATE VIEW raw_read AS SELECT file_row_number + 1 AS __row, "
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
                f"CREATE VIEW raw_read AS SELECT rowid + {first} AS __row, * FROM raw0"
            )
        except duckdb.Error as e:
            raise self._read_error(e) from None

    def _recode(self) -> tuple[int, str | None]:
        """View ``raw_file``: the rows as read, value maps applied; rows sent to nothing skipped.

        A row is skipped when a value is mapped to nothing (NULL) in a column that lands in
        the primary key or a required column: it is not loaded, and not an invalid row.
        Filtering here keeps the numbers (``__row``) of the other rows as they are in the
        file. Returns how many rows are skipped and why.
        """
        spec = self.spec
        needed = set(spec.required)
        if spec.name not in DERIVABLE_KEYS:
            needed.add(spec.primary_key)
        replace, skips = [], []
        for c in self.columns:
            vmap = self.values.get(c.source)
            if vmap is None:
                continue
            text = _text(c.sql)
            whens = " ".join(
                f"WHEN {_lit(k)} THEN {'NULL' if v is None else _lit(v)}" for k, v in vmap.items()
            )
            replace.append(f"CASE {text} {whens} ELSE CAST({c.sql} AS VARCHAR) END AS {c.sql}")
            lands = {c.name} | {a.name for a in self.aliases if a.index == c.index}
            nothing = [k for k, v in vmap.items() if v is None or not str(v).strip(_SPACE)]
            if lands & needed and nothing:
                skips.append((c, nothing, f"{text} IN ({', '.join(_lit(k) for k in nothing)})"))
        if not replace:
            self.con.execute("CREATE VIEW raw_file AS SELECT * FROM raw_read")
            return 0, None
        self._unmatched_keys()
        where = ""
        skipped, reason = 0, None
        if skips:
            any_skip = " OR ".join(f"coalesce({cond}, false)" for _, _, cond in skips)
            where = f"WHERE NOT ({any_skip})"
            found = ", ".join(
                f"list(DISTINCT {_text(c.sql)}) FILTER (WHERE {cond})" for c, _, cond in skips
            )
            skipped, *seen = self.con.execute(
                f"SELECT count(*) FILTER (WHERE {any_skip}), {found} FROM raw_read"
            ).fetchone()
            parts = [
                f"{c.source} maps to nothing ({', '.join(k for k in nothing if k in hit)})"
                for (c, nothing, _), hit in zip(skips, seen, strict=True)
                if hit
            ]
            reason = " or ".join(parts) or None
        self.con.execute(
            f"CREATE VIEW raw_file AS SELECT * REPLACE ({', '.join(replace)}) FROM raw_read {where}"
        )
        return skipped, reason

    def _unmatched_keys(self) -> None:
        """A value-map key that no row holds (a typo, ``007`` read by YAML as 7, a number
        column holding ``1.0``) recodes nothing: say so, with values the column does hold."""
        for c in self.columns:
            vmap = self.values.get(c.source)
            if vmap is None:
                continue
            text = _text(c.sql)
            keys = ", ".join(_lit(k) for k in vmap)
            hit, sample = self.con.execute(
                f"SELECT list(DISTINCT {text}) FILTER (WHERE {text} IN ({keys})), "
                f"list(DISTINCT {text}) FILTER (WHERE {text} IS NOT NULL) FROM raw_read"
            ).fetchone()
            missing = [k for k in vmap if k not in set(hit or [])]
            if missing:
                held = sorted(sample or [])
                shown = ", ".join(repr(v) for v in held[:10]) + (" ..." if len(held) > 10 else "")
                self.warnings.append(
                    f"{self.file}: values of {c.source!r}: "
                    f"{', '.join(repr(k) for k in missing)} match no value in the file; "
                    f"it holds {shown or 'no values'} (quote keys in the spec to keep "
                    "their spelling)"
                )

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
        self._type_extras()

    def _type_extras(self) -> None:
        """Type the extra columns read as text, if every value fits.

        A CSV column gets the type DuckDB sniffed; a recoded column (any format) the first
        of boolean (only true/false), whole number, number and timestamp that all of its
        new values fit. Otherwise the column stays text.
        """
        tries: list[tuple[_Column, str]] = []
        for c in self.extras:
            if c.recoded:
                tries += [(c, t) for t in _RECODED_TYPES]
            elif self.fmt == "csv" and c.type not in ("VARCHAR", "NULL"):
                tries.append((c, c.type))
                if c.type in _INT_TYPES:  # sniffed from a sample: a later 1.5 is a number
                    tries.append((c, "DOUBLE"))
        if not tries:
            return
        checks = []
        for c, t in tries:
            x = _text(c.sql)
            if c.recoded:
                fit = _fits_sql(x, t)
            elif t in _INT_TYPES:  # DuckDB's cast would round 1.5 to 2
                fit = f"({_fits_sql(x, 'BIGINT')} AND TRY_CAST({x} AS {t}) IS NOT NULL)"
            else:
                fit = f"TRY_CAST({x} AS {t}) IS NOT NULL"
            fits = f"bool_and({x} IS NULL OR {fit})"
            # an extra column recoded to nothing but NULLs has no type to find: text
            checks.append(f"(count({x}) > 0 AND {fits})" if c.recoded else fits)
        fits = self.con.execute(f"SELECT {', '.join(checks)} FROM raw").fetchone()
        for (c, t), ok in reversed(list(zip(tries, fits, strict=True))):  # first fit wins
            if ok is not False:
                c.text_type = t

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
        as_text = self.fmt == "csv" or c.recoded
        t = c.text_type if as_text else c.type
        if t in ("VARCHAR", "JSON"):
            return _text(c.sql)
        if as_text:
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
                f"SELECT __row, {cols} FROM raw_read "  # as read, before any value map
                "WHERE __row IN (SELECT r FROM __bad) ORDER BY __row"
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


def _targets(source, target) -> list[str]:
    """The column names one source feeds: a name, or a list of names in order."""
    names = [target] if isinstance(target, str) else list(target or [])
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise SourceError(f"--map {str(source).strip()}=: expected a column name to map to")
    return names


def _target_problem(spec: Table, target: str, further: bool = False) -> str | None:
    """Why ``target`` cannot be a --map target of table ``spec``, or None if it can.

    The first name a column is mapped to may be any name (extra columns are kept), unless
    it looks like a misspelt canonical column; further names must be canonical columns.
    """
    if target in spec.columns:
        return None
    close = difflib.get_close_matches(target, list(spec.columns), n=1, cutoff=0.75)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    if further:
        return (
            f"{target!r} is not a column of {spec.name}{guess} (a column mapped to several "
            "names feeds canonical columns after the first)"
        )
    return f"{target!r} is not a column of {spec.name}{guess}" if close else None


def _columns_hint(spec: Table) -> str:
    return "columns: " + ", ".join(spec.columns)


#: The types a recoded extra column may take, tried in order (else it stays text).
_RECODED_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "TIMESTAMP")


def _fits_sql(x: str, t: str) -> str:
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
        return f"(regexp_full_match({x}, {_lit(_NUM_RE)}) AND isfinite({d}))"
    return f"TRY_CAST({x} AS {t}) IS NOT NULL"


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
    return SourceBatch(spec.name, file, data, [], None, 0, supplied=tuple(spec.columns))


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
