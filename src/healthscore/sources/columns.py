"""Columns: the file's columns renamed by ``mapping``, plus looked-up and constant columns.

Place in the flow: the second step of :func:`~healthscore.sources.read_source`, after the
file is described. A source column is renamed (``{"signup_date": "created_at"}``), may
feed several canonical columns (``{"Customer ID": ["account_id", "outcome_id"]}``), and a
header that differs from a canonical column only by case (``Segment``) is that column.
``account_lookup`` adds ``account_id`` looked up by another key, ``constants`` a column
with one value on every row. Every name is checked here, before any row is read: a
mapped column the file lacks, a misspelt canonical target, two columns with one name.

In the raw view of the file its columns are ``c0, c1 ...``; :attr:`Column.sql` is how
a column is read there.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from healthscore.core.tables import KEYABLE, TABLES, Table
from healthscore.errors import Problem, SourceError
from healthscore.sources.formats import DataFile
from healthscore.sources.sql import SPACE, plural, sql_text

#: how a required column the file lacks can be supplied
MAP_HINT = "use `mapping` source=canonical"


@dataclass
class Column:
    """One column of the file: where it is, what it is called before and after ``mapping``."""

    index: int
    source: str  # name in the file, whitespace stripped
    name: str  # name after mapping
    type: str  # DuckDB type as sniffed or read (VARCHAR once its values are recoded)
    text_type: str = "VARCHAR"  # extras read as text (CSV, recoded): the type every value fits
    alias: str | None = None  # columns not in the file (a constant, a 2nd mapping target)
    recoded: bool = False  # its values go through a value map

    @property
    def sql(self) -> str:
        if self.alias:
            return self.alias
        return f"c{self.index}" if self.index >= 0 else "__account"


@dataclass
class FileColumns:
    """The columns of one read: the file's own, further names, canonical and extra ones.

    ``canonical`` maps every canonical column of the table to the column that supplies
    it, or None; ``extras`` are the file's columns that are not canonical (kept);
    ``lookup_key`` is the column ``account_id`` is looked up by; ``constants`` maps the
    SQL alias of each constant column to its text.
    """

    file: str
    spec: Table
    mapping: dict[str, list[str]]
    values: dict[str, dict[str, str | None]]
    columns: list[Column] = field(default_factory=list)
    aliases: list[Column] = field(default_factory=list)
    canonical: dict[str, Column | None] = field(default_factory=dict)
    extras: list[Column] = field(default_factory=list)
    lookup_key: Column | None = None
    constants: dict[str, str] = field(default_factory=dict)
    #: the columns the primary key is built from (``key``), when the file lacks it
    key: list[Column] = field(default_factory=list)
    #: positions of the file's columns the header leaves unnamed
    unnamed: list[int] = field(default_factory=list)
    #: number columns whose values like 1.200 cannot tell thousands from decimals
    dot_ambiguous: set[str] = field(default_factory=set)

    @classmethod
    def of(
        cls,
        file: str,
        spec: Table,
        mapping: dict[str, str | list[str]],
        values: dict[str, dict[str, str | None]],
    ) -> FileColumns:
        """The columns of a read not yet described: ``mapping`` and ``values`` normalised
        (names stripped; a source maps to a list of names, none empty)."""
        return cls(
            file,
            spec,
            {str(k).strip(): _targets(k, v) for k, v in mapping.items()},
            {str(k).strip(): {str(a).strip(): b for a, b in v.items()} for k, v in values.items()},
        )

    def map_item(self, source: str) -> str:
        """How the user named a source column: ``mapping`` source=target, or its value map."""
        if source in self.mapping:
            return "; ".join(f"`mapping` {source}={t}" for t in self.mapping[source])
        return f"values of {source!r}"


def map_columns(
    cols: FileColumns,
    data: DataFile,
    names: list[str],
    types: list[str],
    account_lookup: tuple[str, dict[str, str]] | None = None,
    constants: dict[str, str] | None = None,
    key: list[str] | None = None,
) -> None:
    """Name the columns of ``data``, described as ``names`` and ``types``, in ``cols``."""
    spec = cols.spec
    cols.columns, cols.aliases = _rename(cols, data, names, types)
    by_name = {c.name: c for c in cols.columns + cols.aliases}
    cols.canonical = {n: by_name.get(n) for n in spec.columns}
    cols.extras = [c for c in cols.columns if c.name not in spec.columns]
    cols.lookup_key = _lookup_key(cols, account_lookup, by_name)
    cols.constants = _constants(cols, constants or {})
    cols.key = _key_columns(cols, key or [], by_name)


def _key_columns(cols: FileColumns, key: list[str], by_name: dict) -> list[Column]:
    """With ``key``: the columns (names after ``mapping``) the primary key is built from."""
    if not key:
        return []
    spec, named = cols.spec, ",".join(key)
    pk = spec.primary_key
    if spec.name in TABLES and spec.name not in KEYABLE:
        raise SourceError(
            f"`key` {named}: {spec.name} rows are identified by their {pk}, which other "
            "tables refer to; the file must carry it",
            hint=f"{MAP_HINT}, e.g. `mapping` <column>={pk}",
        )
    if cols.canonical[pk] is not None:
        raise SourceError(
            f"{cols.file}: `key` {named}: the file has a {pk} column already; `key` builds "
            f"{pk} for a file without one"
        )
    out = []
    for name in key:
        column = by_name.get(name) or cols.canonical.get(name)  # canonical: set or looked up
        if column is None:
            found = ", ".join(c.name for c in cols.columns + cols.aliases)
            raise SourceError(
                f"{cols.file}: `key` {named}: no column {name!r} (columns found, after "
                f"`mapping`: {found})"
            )
        if column in out:
            raise SourceError(f"`key` {named}: {name!r} is named twice")
        out.append(column)
    return out


def _rename(
    cols: FileColumns, data: DataFile, names: list[str], types: list[str]
) -> tuple[list[Column], list[Column]]:
    """The file's columns as renamed, and the further columns fed by the same values."""
    spec, mapping, file = cols.spec, cols.mapping, cols.file
    if data.fmt == "parquet":  # the reader's file_row_number comes last
        names, types = names[:-1], types[:-1]
    stripped = [n.strip() for n in names]
    unknown = [s for s in {**cols.values, **mapping} if s not in stripped]
    if unknown:
        found = ", ".join(stripped)
        mapped = sum(s in mapping for s in unknown)
        what = {len(unknown): "`mapping` names", 0: "values name"}.get(
            mapped, "`mapping` and values name"
        )
        raise SourceError.collect(
            [
                Problem(
                    f"{cols.map_item(s)}: the file has no column {s!r}",
                    file=file,
                    expected=f"one of {found}",
                )
                for s in unknown
            ],
            f"{file}: {what} {plural(len(unknown), 'column')} "
            f"not in the file (columns found: {found})",
        )
    cols.unnamed = _check_header(data, names)
    canonical = list(spec.columns)
    for s, targets in mapping.items():
        for k, target in enumerate(targets):
            wrong = target_problem(spec, target, further=k > 0)
            if wrong:
                raise SourceError(f"`mapping` {s}={target}: {wrong}", hint=columns_hint(spec))
            if target in targets[:k]:
                raise SourceError(f"`mapping` {s}={target}: {s!r} is mapped to {target!r} twice")
    # a header that differs from a canonical column only by case (Segment) is that column
    by_lower = {c.lower(): c for c in canonical}
    present = {t for s in stripped for t in mapping.get(s, [s])}
    columns, aliases = [], []
    for i, (s, t) in enumerate(zip(stripped, types, strict=True)):
        name, *more = mapping.get(s, [s])
        if name not in canonical and name.lower() in by_lower:
            if by_lower[name.lower()] not in present:
                name = by_lower[name.lower()]
        recoded = s in cols.values
        col = Column(i, s, name, "VARCHAR" if recoded else t, recoded=recoded)
        columns.append(col)
        # the raw view names the file's columns c0, c1...: a further name reads the same
        aliases += [Column(i, s, m, col.type, alias=f"c{i}", recoded=recoded) for m in more]
    seen: dict[str, Column] = {}
    for c in columns + aliases:
        if c.name in seen:
            first = seen[c.name]
            how = " (after `mapping`)" if c.name != c.source or first.name != first.source else ""
            raise SourceError(
                f"{file}: two columns are named {c.name!r}{how}: {first.source!r} and {c.source!r}",
                hint="rename or drop one of them",
            )
        seen[c.name] = c
    return columns, aliases


def _check_header(data: DataFile, names: list[str]) -> list[int]:
    """Refuse a header whose names repeat (exactly or but for case): the reader would
    rename one silently (``name_1``) and the canonical column would be whichever came
    first. Returns the positions of columns the header leaves unnamed (``a,,b`` or a
    trailing delimiter), which the reader would call ``column1``."""
    header = [x.strip(SPACE) for x in data.header_names()]
    seen: dict[str, str] = {}
    for n in header:
        if not n:
            continue
        if n.lower() in seen:
            first = seen[n.lower()]
            if first == n:
                raise SourceError(
                    f"{data.path}: the header names {n!r} twice; which one is meant cannot be told",
                    hint="rename or delete one of them in the file",
                )
            raise SourceError(
                f"{data.path}: columns {first!r} and {n!r} differ only by case",
                hint="rename one of them in the file",
            )
        seen[n.lower()] = n
    if data.fmt == "json" or len(header) != len(names):
        return []
    return [i for i, n in enumerate(header) if not n]


def unnamed_columns(db, cols: FileColumns, data: DataFile, unnamed: list[int]) -> list[str]:
    """Columns the header leaves unnamed: left out with a warning when they hold no
    value (a trailing delimiter), refused naming the first value when they do."""
    if not unnamed:
        return []
    found = [c for c in cols.extras if c.index in unnamed]
    values = db.execute(
        "SELECT "
        + ", ".join(
            f"arg_min([CAST(__row AS VARCHAR), {sql_text(c.sql)}], __row) "
            f"FILTER (WHERE {sql_text(c.sql)} IS NOT NULL)"
            for c in found
        )
        + " FROM raw_read"
    ).fetchone()
    for c, value in zip(found, values, strict=True):
        if value is not None:
            row = data.user_rows([int(value[0])])[int(value[0])]
            raise SourceError(
                f"{data.path}:{row}: column {c.index + 1} has no name in the header but holds "
                f"values (got {value[1]!r})",
                hint="name the column in the header (then `mapping` can rename it)",
            )
    cols.extras = [c for c in cols.extras if c.index not in unnamed]
    columns = ", ".join(str(c.index + 1) for c in found)
    return [
        f"left out {plural(len(found), 'column')} {columns}: no name in the header and no "
        "value in any row (a trailing delimiter?)"
    ]


def _lookup_key(cols: FileColumns, account_lookup, by_name) -> Column | None:
    """With ``account_lookup``: the file column holding the key account_id is found by."""
    if account_lookup is None:
        return None
    key = account_lookup[0]
    found = ", ".join(c.source for c in cols.columns)
    if cols.canonical["account_id"] is not None:
        raise SourceError(
            f"{cols.file}: has an account_id column; `account_from` is for files that "
            f"carry {key} instead"
        )
    if key not in by_name:
        raise SourceError(
            f"{cols.file}: no column {key!r} to look the account up by (columns found: {found})",
            hint=f"{MAP_HINT}, e.g. `mapping` <column>={key}",
        )
    cols.canonical["account_id"] = Column(-1, "account_id", "account_id", "VARCHAR")
    return by_name[key]


def _constants(cols: FileColumns, constants: dict[str, str]) -> dict[str, str]:
    """With ``constants``: canonical columns the file lacks, one value on every row."""
    spec, out = cols.spec, {}
    for i, (col, value) in enumerate(constants.items()):
        if col not in spec.columns:
            raise SourceError(
                f"`constants` {col}={value}: {col!r} is not a column of {spec.name}",
                hint="columns: " + ", ".join(spec.columns),
            )
        if cols.canonical[col] is not None:
            raise SourceError(
                f"{cols.file}: `constants` {col}={value}: the file already has a column {col!r}"
            )
        alias = f"__const{i}"
        cols.canonical[col] = Column(-2 - i, col, col, "VARCHAR", alias=alias)
        out[alias] = str(value)
    return out


def canonical_table(name: str) -> Table:
    """The canonical table ``name``; an unknown name is a :class:`SourceError`."""
    try:
        return TABLES[name]
    except KeyError:
        raise SourceError(
            f"unknown table {name!r}", hint="canonical tables are: " + ", ".join(TABLES)
        ) from None


def target_problem(spec: Table, target: str, further: bool = False) -> str | None:
    """Why ``target`` cannot be a ``mapping`` target of table ``spec``, or None if it can.

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


def columns_hint(spec: Table) -> str:
    return "columns: " + ", ".join(spec.columns)


def _targets(source, target) -> list[str]:
    """The column names one source feeds: a name, or a list of names in order."""
    names = [target] if isinstance(target, str) else list(target or [])
    names = [str(n).strip() for n in names]
    if not names or not all(names):
        raise SourceError(f"`mapping` {str(source).strip()}=: expected a column name to map to")
    return names
