"""What the store needs from a backend beyond Ibis's public API: statements and transactions.

Place in the flow: inside ``store``, under :class:`~healthscore.store.Store`; nothing else
uses it. Ibis runs queries (``to_pyarrow``), creates and drops tables and inserts rows
the same way on every backend, and the store uses it for all of that. Three things Ibis
has no public API for, and the store needs, live here behind :class:`Backend`:

- :meth:`Backend.statement`: a statement that returns no rows (``DELETE``, ``ALTER TABLE
  ... ADD COLUMN``), built with sqlglot in the backend's dialect;
- :meth:`Backend.transaction`: several writes that happen together or not at all;
- :meth:`Backend.run_sql`: SQL compiled before, run to an Arrow table (so a benchmark can
  time compiling and running apart);
- :meth:`Backend.prepare` and :meth:`Backend.run_prepared`: an expression compiled once
  with named parameters (:func:`parameter`), run many times with their values bound
  (DuckDB binds them natively; other backends get the values as literals in the SQL
  tree compiled before, so Ibis never builds or compiles again).

:func:`backend_for` picks the implementation once, when the store connects: what Ibis
offers where it offers it (a backend with ``begin()``), DuckDB's own transaction calls
where Ibis has none (its DuckDB backend has no ``begin()``), and a documented fallback
for a backend without transactions.

Examples
--------
>>> import ibis
>>> b = backend_for(ibis.duckdb.connect())
>>> b.con.create_table("t", schema=ibis.schema({"x": "int64"})) is not None
True
>>> try:
...     with b.transaction():
...         b.con.insert("t", {"x": [1]})
...         raise RuntimeError("half-way")
... except RuntimeError:
...     pass
>>> b.con.table("t").count().to_pyarrow().as_py()
0
"""

from __future__ import annotations

import errno
import functools
import os
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from healthscore.core.lazy import lazy
from healthscore.core.signals import interruptible
from healthscore.errors import StoreError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import sqlglot.expressions as sge

# imported on first use: a DuckDB store running a cached plan never needs them
ibis = lazy("ibis")
ops = lazy("ibis.expr.operations")
sg = lazy("sqlglot")
sge = lazy("sqlglot.expressions")

#: rows per insert when a stream is staged through Ibis (PostgreSQL and others)
STAGE_ROWS = 50_000
#: DuckDB inserts at most this many rows of plain values as bound values, not Arrow
SMALL_INSERT = 16

#: the connections of this process that are open (see :func:`open_connections`)
_OPEN: weakref.WeakSet[Backend] = weakref.WeakSet()


def open_connections() -> int:
    """How many store connections of this process are open: not closed, and not yet
    collected (a store nothing references closes its connection as it is collected)."""
    return len(_OPEN)


#: the SQL function names that stand for a parameter until a prepared query runs
PARAMETER_FUNCTIONS = {
    "hs_param_timestamp": "TIMESTAMP",
    "hs_param_string": "VARCHAR",
    "hs_param_float64": "DOUBLE",
}
_PARAMETER_TYPES = {
    "timestamp": "hs_param_timestamp",
    "string": "hs_param_string",
    "float64": "hs_param_float64",
}
_udfs: dict = {}


def parameter(key: str, type: str) -> ir.Value:
    """A value of ``type`` (``timestamp``, ``string`` or ``float64``) named ``key`` in an
    expression, bound when the expression, prepared once (:meth:`Backend.prepare`), runs."""
    fn = _udfs.get(type)
    if fn is None:
        import ibis.expr.datatypes as dt

        ret = {"timestamp": dt.timestamp, "string": dt.string, "float64": dt.float64}[type]
        name = _PARAMETER_TYPES[type]

        def stand_in(key: str) -> ret: ...  # noqa: ARG001 - a name only, never called

        stand_in.__annotations__ = {"key": str, "return": ret}
        fn = _udfs[type] = ibis.udf.scalar.builtin(stand_in, name=name)
    return fn(key)


class Prepared:
    """A query compiled once: its SQL tree with parameter placeholders, its result
    schema (Arrow) and the parameters it needs.

    Where the backend runs the compiled text itself (DuckDB), ``parts`` is that text cut
    at the parameters (text, key, text, ..., text) and the tree is not needed to run it:
    such a plan can be kept in the cache (:meth:`to_json`, :meth:`from_json`) and run
    without Ibis or sqlglot."""

    def __init__(
        self,
        tree: sge.Expression | None,
        schema: pa.Schema,
        keys: set[str],
        parts: list[str] | None = None,
    ):
        self.tree = tree
        self.schema = schema
        self.keys = keys
        self.parts = parts
        #: run as a statement planned once per connection where the backend can (DuckDB:
        #: :meth:`DuckDBBackend.run_prepared`); for a query run often with few values
        #: (the score plan of a micro-batch), measured there
        self.kept = False

    def to_json(self) -> dict:
        import base64

        return {
            "parts": self.parts,
            "keys": sorted(self.keys),
            "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: dict) -> Prepared:
        import base64

        import pyarrow.ipc

        schema = pyarrow.ipc.read_schema(pa.py_buffer(base64.b64decode(data["schema"])))
        parts = data["parts"]
        if not isinstance(parts, list) or len(parts) % 2 != 1:
            raise ValueError("a kept plan's text is cut at its parameters: text, key, ..., text")
        return cls(None, schema, set(data["keys"]), [str(p) for p in parts])


def _placeholders(tree: sge.Expression, mark: str = "") -> tuple[sge.Expression, set[str]]:
    """A copy of the tree with each parameter stand-in replaced by a typed placeholder
    (named ``{mark}_{key}_{mark}`` with a ``mark``, else by its key)."""
    keys: set[str] = set()

    def swap(node):
        if isinstance(node, sge.Anonymous) and str(node.name).lower() in PARAMETER_FUNCTIONS:
            key = node.expressions[0].this
            keys.add(key)
            to = PARAMETER_FUNCTIONS[str(node.name).lower()]
            name = f"{mark}_{key}_{mark}" if mark else key
            return sge.Cast(this=sge.Placeholder(this=name), to=sge.DataType.build(to))
        return node

    return tree.transform(swap, copy=True), keys


def _bound(tree: sge.Expression, values: dict) -> sge.Expression:
    """The tree with each placeholder replaced by its value as a literal."""

    def swap(node):
        if isinstance(node, sge.Placeholder):
            v = values[node.this]
            if v is None:
                return sge.Null()
            if hasattr(v, "isoformat"):
                return sge.Literal.string(v.isoformat(sep=" "))
            return sge.Literal.string(str(v))
        return node

    return tree.transform(swap, copy=True)


class Backend:
    """An Ibis connection, with statements and transactions on top.

    This generic implementation serves any Ibis SQL backend. Its transactions are
    Ibis's ``begin()`` where the backend has one (PostgreSQL, MySQL, SQLite, ...): every
    write inside, Ibis's own included, runs on that transaction (PostgreSQL's nested
    ones as savepoints). A backend without ``begin()`` (Spark) has no transactions: the
    writes of a ``with transaction():`` block then run one after another, each on its
    own, and a failure part-way leaves the writes before it in place. The store's
    writers are written to survive that: a load classifies rows against what is stored
    (a rerun finishes the job), and history deletes a date before writing it (a rerun,
    or ``rebuild``, replaces a half-written date).
    """

    def __init__(self, con):
        self.con = con
        self.name = con.name
        self._depth = 0
        self._indexed: dict[str, str] = {}
        _OPEN.add(self)

    def close(self) -> None:
        self.con.disconnect()
        _OPEN.discard(self)

    # bookkeeping reads: every command opening the store makes them ----------------------
    def list_tables(self) -> list[str]:
        """Every table of the store (the session's temporary ones included)."""
        return list(self.con.list_tables())

    def has_table(self, name: str) -> bool:
        """Whether :meth:`list_tables` lists ``name``."""
        return name in self.list_tables()

    def create_empty(self, name: str, schema: dict[str, str], *, temp: bool) -> None:
        """An empty table ``name`` with the columns of ``schema`` (Ibis type names)."""
        self.con.create_table(name, schema=ibis.schema(schema), temp=temp)

    def columns(self, table: str) -> dict[str, str]:
        """The columns of ``table`` and their Ibis types (as text)."""
        return {c: str(t) for c, t in self.con.get_schema(table).items()}

    def update_row(self, table: str, values: dict, where: tuple[str, object]) -> None:
        """``UPDATE table SET column = value, ... WHERE key = value`` (Python values)."""
        update = sge.Update(
            this=sg.table(table, quoted=True),
            expressions=[sg.column(c, quoted=True).eq(_value(v)) for c, v in values.items()],
            where=sge.Where(this=sg.column(where[0], quoted=True).eq(_value(where[1]))),
        )
        self.statement(update)

    def select_all(self, table: str, schema: dict[str, str]) -> list[dict]:
        """The rows of a small table whose columns are known (``schema``)."""
        # an unbound table spares the backend a schema lookup
        return self.to_arrow(ibis.table(ibis.schema(schema), name=table)).to_pylist()

    def count(self, table: str) -> int:
        # counting needs no columns: a table known by name only spares a schema lookup
        expr = ibis.table(ibis.schema({}), name=table).count().name("n").as_table()
        return self.to_arrow(expr)["n"][0].as_py()

    def empty_tables(self, names: list[str]) -> list[str]:
        """The tables among ``names`` (not empty) that hold no row, in one query that reads
        at most one row of each (a count would scan a big table on PostgreSQL)."""
        parts = [
            ibis.table(ibis.schema({}), name=n)
            .limit(1)
            .count()
            .name("n")
            .as_table()
            .mutate(table=ibis.literal(n))
            for n in names
        ]
        found = self.to_arrow(ibis.union(*parts) if len(parts) > 1 else parts[0])
        seen = dict(zip(found["table"].to_pylist(), found["n"].to_pylist(), strict=True))
        return [n for n in names if not seen[n]]

    #: whether a plan compiled here can be kept in the user's cache and run from its
    #: text alone (:meth:`Prepared.to_json`): where :meth:`prepare` cuts the text
    keeps_text = False

    def schema_fingerprint(self, tables: Sequence[str] | None = None) -> str | None:
        """A digest of the columns and types of ``tables`` (None: every table, which only
        a backend that keeps plans as text reads here; None then), the key of a compiled
        plan that reads them (see :meth:`~healthscore.store.Store.cached_plan`)."""
        import hashlib

        if tables is None:
            return None
        found = [(n, list(self.con.get_schema(n).items())) for n in dict.fromkeys(tables)]
        return hashlib.sha256(repr(found).encode()).hexdigest()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside happen together or not at all; an inner block joins the outer."""
        if self._depth:
            yield
            return
        self._depth += 1
        try:
            with self._begin():
                yield
        finally:
            self._depth -= 1

    def _begin(self):
        begin = getattr(self.con, "begin", None)
        if begin is None:
            return _no_transaction()
        return begin()

    def to_arrow(self, expr: ir.Table) -> pa.Table:
        """Run ``expr`` through Ibis (``to_pyarrow``); the result in the expression's types."""
        return self.con.to_pyarrow(_floats_as_declared(expr))

    def compile(self, expr: ir.Table) -> str:
        """The SQL this backend runs for ``expr``."""
        return str(self.con.compile(expr))

    def insert(self, table: str, data: pa.Table) -> None:
        """Append Arrow rows to ``table`` (matched by column name)."""
        self.con.insert(table, data)

    def analyze(self, table: str) -> None:
        """Refresh the planner's statistics of ``table`` after a load (where it keeps any)."""

    def row_digest(self, table: ir.Table, columns: Sequence[str]) -> ir.Value | None:
        """A 64-bit hash of each row's ``columns`` (NULL hashed as a value of its own),
        where the backend has one for rows of any types; else None.

        A load compares it with the stored row's instead of carrying every stored column
        through its join with the staged rows: at 100 M events those columns ran
        DuckDB's join out of its memory. Two rows of different values share a hash once
        in 2^64 comparisons; the columns themselves are compared where there is none."""
        return None

    def ensure_index(self, table: str, column: str) -> None:
        """An index on ``table``'s ``column``, made once (where the backend has indexes):
        a small append then finds the stored rows of its keys without reading the table."""
        if self._indexed.get(table) == column:
            return
        index = sg.to_identifier(f"_hs_{table}_{column}", quoted=True)
        on = sge.Schema(
            this=sg.table(table, quoted=True), expressions=[sg.to_identifier(column, quoted=True)]
        )
        dialect = self.con.dialect
        stmt = f"CREATE INDEX IF NOT EXISTS {index.sql(dialect)} ON {on.sql(dialect)}"
        if self.name in ("duckdb", "postgres"):
            with self.con._safe_raw_sql(stmt):
                pass
        self._indexed[table] = column

    def before_bulk_write(self, table: str, writing: int, stored: int) -> None:
        """About to write ``writing`` rows into ``table``, which holds ``stored``: where
        keeping its key index (:meth:`ensure_index`) up to date row by row costs more
        than making it again, it is dropped (the next append makes it again)."""

    def stage(self, name: str, rows: pa.RecordBatchReader, *, temp: bool) -> None:
        """Create table ``name`` holding the stream ``rows``, read once, batch by batch.

        Generic path: the table is created empty and each slice of ``STAGE_ROWS`` rows
        inserted through Ibis, so memory holds one slice at a time.
        """
        self.con.create_table(name, schema=ibis.Schema.from_pyarrow(rows.schema), temp=temp)
        for batch in rows:
            for start in range(0, batch.num_rows, STAGE_ROWS):
                self.con.insert(name, pa.Table.from_batches([batch.slice(start, STAGE_ROWS)]))

    @contextmanager
    def staged(self, name: str, rows: pa.Table) -> Iterator[None]:
        """Table ``name`` holding the small batch ``rows`` inside the block, gone after
        (a temporary table where the backend has them)."""
        reader = pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())
        self.stage(name, reader, temp=self.con.supports_temporary_tables)
        try:
            yield
        finally:
            self.con.drop_table(name, force=True)

    #: whether a first load writes into a table of its own, committed chunk by chunk,
    #: which then replaces the empty table (:meth:`replace_table`): where a transaction
    #: holds what it writes in memory
    loads_beside = False

    def copy_empty(self, table: str, new: str) -> None:
        """Create table ``new``, empty, with ``table``'s columns and types."""
        self.con.create_table(new, schema=self.con.get_schema(table))

    def replace_table(self, table: str, new: str) -> None:
        """Drop ``table`` and give ``new`` its name (inside the caller's transaction)."""
        self.con.drop_table(table)
        self.con.rename_table(new, table)

    def write_chunks(
        self, table: str, rows: pa.RecordBatchReader, order: list[str], chunk_rows: int
    ) -> None:
        """Append the stream ``rows`` to ``table`` (by column name; a column it lacks is
        NULL), ``chunk_rows`` rows at a time, each chunk sorted by ``order``: memory
        holds two chunks (the next one is read while one is written: :func:`_read_ahead`),
        and the rows of one value of ``order[0]`` sit together in each.

        Generic path: each chunk sorted by Arrow and inserted (:meth:`insert`)."""
        with closing(_read_ahead(rows, chunk_rows)) as chunks:
            for chunk in chunks:
                self.insert(table, chunk.sort_by([(c, "ascending") for c in order]))
                del chunk  # before the next one is read

    @contextmanager
    def memory_limit(self, limit: str | None) -> Iterator[None]:
        """Bound the memory the connection holds inside the block, where the backend has
        such a setting (DuckDB); elsewhere the server's own settings apply."""
        yield

    def statement(self, stmt: sge.Expression) -> None:
        """Run one statement that returns no rows, in the backend's dialect."""
        # `_safe_raw_sql` is how Ibis runs its own statements (insert, truncate, drop) on
        # every SQL backend, releasing whatever the driver hands back; the public
        # `raw_sql` leaves that to the caller, and it differs by driver (a cursor, the
        # connection itself, a Spark DataFrame)
        with self.con._safe_raw_sql(stmt.sql(self.con.dialect)):
            pass

    def run_sql(self, sql: str) -> pa.Table:
        """Run SQL compiled by Ibis for this backend; the result as Arrow.

        Generic path: Ibis parses the SQL back into an expression (``con.sql``), which
        costs a parse; prefer running the expression itself where the SQL is not needed.
        """
        return self.to_arrow(self.con.sql(sql))

    def tree(self, expr: ir.Table) -> sge.Expression:
        """The SQL tree this backend runs for ``expr``."""
        return self.con.compiler.to_sqlglot(expr)

    def prepare(self, expr: ir.Table) -> Prepared:
        """Compile ``expr`` once, its :func:`parameter` values left to bind (the SQL that
        :meth:`to_arrow` runs, so the rows are the same)."""
        expr = self._as_run(expr)
        tree, keys = _placeholders(self.tree(expr))
        return Prepared(tree, expr.schema().to_pyarrow(), keys)

    def run_prepared(self, prepared: Prepared, values: dict) -> pa.Table:
        """Run a prepared query with ``values`` for its parameters (generic path: the
        values become literals of the compiled tree; no Ibis build or compile)."""
        sql = _bound(prepared.tree, values).sql(self.con.dialect)
        return self._run_compiled(sql, prepared.schema)

    def _run_compiled(self, sql: str, schema) -> pa.Table:
        return self.run_sql(sql)

    def _as_run(self, expr: ir.Table) -> ir.Table:
        """``expr`` as :meth:`to_arrow` compiles it."""
        return _floats_as_declared(expr)


#: DuckDB's ``dynamic_or_filter_threshold``: a hash join whose build side has at most this
#: many rows hands the probe side's scan the list of its keys, and the scan skips the row
#: groups (zone maps) that hold none of them; above it, only their min and max. The
#: rescorer's micro-batch reads its accounts' events through such a join (a plan of up to
#: 256 account slots, engine.plan.SLOTS): at DuckDB's default of 50, a batch of 20 random
#: accounts (the 64-slot plan) read 8.7 M of the S book's 10 M events, every row group
#: between the smallest and the largest id; with the list, 2.3 M (those accounts' groups).
#: A query over everyone joins more keys than this and is unchanged.
OR_FILTER_KEYS = 256


#: the environment variable :func:`duckdb_threads` reads
THREADS_ENV = "HEALTHSCORE_DUCKDB_THREADS"


def duckdb_threads() -> int | None:
    """``$HEALTHSCORE_DUCKDB_THREADS``: how many threads each DuckDB store connection may
    run (None, unset: DuckDB's default, one per core). Worth setting where several
    healthscore processes share a machine's cores (two test workers on two cores: each
    query's threads would otherwise outnumber the cores and wait for each other)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise StoreError(
            f"${THREADS_ENV} is {value!r}: not a number of threads",
            hint="set it to a whole number of 1 or more (e.g. 1), or unset it for one per core",
        )
    return int(value)


class DuckDBBackend(Backend):
    """DuckDB: transactions through DuckDB's own ``begin``/``commit``/``rollback`` (Ibis's
    DuckDB backend has no ``begin()``), and queries compiled by Ibis and read by the
    driver's Arrow reader.

    The store opens the file with the driver itself (:meth:`open`) and makes the Ibis
    connection over it on first use (:attr:`con`): Ibis's DuckDB backend imports pandas
    and every SQL dialect's compiler, about a second of a command's start, which a
    command running a cached plan and the bookkeeping reads below never needs."""

    def __init__(self, con=None, *, native=None):  # noqa: D107 - Backend's state, lazily
        self._con = con
        self.native = native if native is not None else con.con
        self.name = "duckdb"
        self._depth = 0
        self._indexed: dict[str, str] = {}
        #: Prepared -> name of its statement kept on this connection ('': not kept)
        self._statements: weakref.WeakKeyDictionary[Prepared, str] = weakref.WeakKeyDictionary()
        #: name of a kept statement -> the catalog (:meth:`_catalog`) it was planned on
        self._planned_on: dict[str, tuple] = {}
        self.plannings = 0  # kept statements planned (PREPAREd) on this connection
        #: table -> (the catalog its columns were read on, the columns): see columns()
        self._columns: dict[str, tuple[tuple, dict[str, str]]] = {}
        _OPEN.add(self)

    @classmethod
    def open(cls, database: str, *, read_only: bool) -> DuckDBBackend:
        """A DuckDB file (or ``:memory:``) opened by the driver, set up as Ibis sets up its
        own connections (UTC session time zone, no Python variables read as tables)."""
        import duckdb

        threads = duckdb_threads()
        try:
            native = duckdb.connect(database, read_only=read_only)
        except duckdb.Error as e:
            refused = _refused(database, read_only, e)
            if refused is None:
                raise
            raise refused from None
        try:
            native.execute("SET TimeZone = 'UTC'")
            native.execute("SET python_enable_replacements = false")
            # DuckDB draws its progress bar on stdout, terminal or not, once a query runs
            # 2 s: into `healthscore score --format csv > scores.csv` on a large book
            native.execute("SET enable_progress_bar = false")
            # GLOBAL: the rescorer reads through a cursor of this connection (reader)
            native.execute(f"SET GLOBAL dynamic_or_filter_threshold = {OR_FILTER_KEYS}")
            if threads is not None:
                native.execute(f"SET GLOBAL threads = {threads}")
        except BaseException:
            native.close()
            raise
        return cls(native=native)

    @property
    def con(self):
        """The Ibis connection, made over the driver's on first use."""
        if self._con is None:
            self._con = ibis.duckdb.from_connection(self.native)
        return self._con

    def close(self) -> None:
        if self._con is None:
            self.native.close()
        else:
            self._con.disconnect()
        _OPEN.discard(self)

    def list_tables(self) -> list[str]:
        # as Ibis lists them: the current schema's tables and the session's temporary ones
        rows = self.native.execute(
            "SELECT DISTINCT table_name FROM information_schema.tables "
            "WHERE table_catalog IN (current_database(), 'temp') "
            "AND table_schema = current_schema() ORDER BY table_name"
        ).fetchall()
        return [r[0] for r in rows]

    def has_table(self, name: str) -> bool:
        # the one name looked up, not the list read from information_schema: 1 against
        # 3 ms CPU on the S store, asked at every micro-batch of the rescorer (the name
        # as a literal: binding it would make the driver import pandas)
        text = "'" + name.replace("'", "''") + "'"
        where = "database_name IN (current_database(), 'temp') AND schema_name = current_schema()"
        found = self.native.execute(
            f"SELECT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = {text} AND {where})"
            f" OR EXISTS (SELECT 1 FROM duckdb_views() WHERE view_name = {text} AND {where})"
        ).fetchone()[0]
        return bool(found)

    def create_empty(self, name: str, schema: dict[str, str], *, temp: bool) -> None:
        # the statement Ibis makes for the store's own column types, written here: Ibis's
        # create_table compiles it through sqlglot and reads the new table's schema back
        # (parsing each type), about 8 ms a table, 10 tables of every new store
        columns = []
        for column, dtype in schema.items():
            sql = _DUCKDB_TYPES.get(dtype.removeprefix("!"))
            if sql is None:  # any other type: as Ibis makes it
                return super().create_empty(name, schema, temp=temp)
            columns.append(f"{_quoted(column)} {sql}{' NOT NULL' if dtype[0] == '!' else ''}")
        kind = "TEMPORARY TABLE" if temp else "TABLE"
        self.native.execute(f"CREATE {kind} {_quoted(name)} ({', '.join(columns)})")

    def columns(self, table: str) -> dict[str, str]:
        # kept per table with the catalog it was read on (an append asks at every batch:
        # Ibis's schema lookup parses each type, 4-5 ms of a 50-row append); any table
        # made, altered or dropped changes the catalog, and with it the answer's key
        catalog = self._catalog()
        found = self._columns.get(table)
        if found is not None and found[0] == catalog:
            return dict(found[1])
        columns = super().columns(table)
        self._columns[table] = (catalog, columns)
        return dict(columns)

    def update_row(self, table: str, values: dict, where: tuple[str, object]) -> None:
        # the values bound by the driver: sqlglot's rendering of the statement cost more
        # than running it (a service updates a watermark at every batch it appends)
        sets = ", ".join(f"{_quoted(c)} = ?" for c in values)
        sql = f"UPDATE {_quoted(table)} SET {sets} WHERE {_quoted(where[0])} = ?"
        self.native.execute(sql, [*values.values(), where[1]])

    def select_all(self, table: str, schema: dict[str, str]) -> list[dict]:
        names = ", ".join(_quoted(c) for c in schema)
        return self.run_sql(f"SELECT {names} FROM {_quoted(table)}").to_pylist()

    def count(self, table: str) -> int:
        return self.native.execute(f"SELECT count(*) FROM {_quoted(table)}").fetchone()[0]

    def empty_tables(self, names: list[str]) -> list[str]:
        found = ", ".join(f"EXISTS (SELECT 1 FROM {_quoted(n)})" for n in names)
        have = self.native.execute(f"SELECT {found}").fetchone()
        return [n for n, has in zip(names, have, strict=True) if not has]

    keeps_text = True

    def schema_fingerprint(self, tables: Sequence[str] | None = None) -> str | None:
        import hashlib

        # a temporary table of this connection hides a stored one of its name: the flag
        # is part of the digest (a read-only store makes its missing tables so)
        # (the names as literals: DuckDB's parameter binding imports pandas)
        only = ""
        if tables is not None:
            names = ", ".join(_duckdb_literal(n) for n in sorted(set(tables)))
            only = f"AND table_name IN ({names or 'NULL'}) "
        # (duckdb_columns(): a millisecond, where information_schema takes several)
        rows = self.native.execute(
            "SELECT database_name = 'temp', table_name, column_name, data_type "
            "FROM duckdb_columns() "
            "WHERE database_name IN (current_database(), 'temp') "
            f"AND schema_name = current_schema() {only}"
            "ORDER BY table_name, database_name = 'temp', column_index"
        ).fetchall()
        return hashlib.sha256(repr(rows).encode()).hexdigest()

    @contextmanager
    def _begin(self) -> Iterator[None]:
        native = self.native
        native.begin()
        try:
            yield
        except BaseException:
            native.rollback()
            raise
        native.commit()

    def to_arrow(self, expr: ir.Table) -> pa.Table:
        # compiled by Ibis, read by the driver's own Arrow reader: Ibis's `to_pyarrow`
        # materialises through a relation (about 160 MB more at the history benchmark's
        # peak) and imports pandas for its converter (0.3 s of every command's start);
        # `Store.execute` casts the result to the expression's types (DuckDB decimals)
        return self.run_sql(self.compile(expr))

    def insert(self, table: str, data: pa.Table) -> None:
        # the driver scans the Arrow rows itself: Ibis's insert compiles a query and
        # looks the table's schema up first, tens of milliseconds on a small append
        # (quoted here, not by sqlglot: 3 ms of a one-row micro-batch write)
        names = ", ".join(_quoted(c) for c in data.column_names)
        target = _quoted(table)
        if data.num_rows <= SMALL_INSERT and all(_plain(f.type) for f in data.schema):
            # a few rows of plain values (a micro-batch's current scores) bound to one
            # INSERT ... VALUES: registering and scanning Arrow rows cost 5-12 ms of a
            # one-row write, the bound values 1-2 ms (load 7-8); the same values, as the
            # driver reads Python's str, int, float, bool, date and naive datetime
            one = "(" + ", ".join(["?"] * data.num_columns) + ")"
            values = [v for row in zip(*data.to_pydict().values(), strict=True) for v in row]
            sql = f"INSERT INTO {target} ({names}) VALUES {', '.join([one] * data.num_rows)}"
            self.native.execute(sql, values)
            return
        native, view = self.native, f"_insert_{uuid.uuid4().hex[:8]}"
        native.register(view, data)
        try:
            native.execute(f'INSERT INTO {target} ({names}) SELECT {names} FROM "{view}"')
        finally:
            native.unregister(view)

    def before_bulk_write(self, table: str, writing: int, stored: int) -> None:
        # DuckDB's key index (an ART) takes a row at a time about twice as long as it
        # takes the same row when the index is made at once: 10 M rows written into a
        # table with the index took 573 s where they took 52 s without it, and making
        # the index on 10 M rows took 260 s (both on a shared machine, load 12-16). A
        # load that writes more rows than the table holds drops it: the next append
        # makes it again for less than its upkeep would have cost. Inside the load's
        # transaction, so a load that fails leaves the index as it was.
        if writing <= stored:
            return
        names = self.native.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE table_name = $1 AND index_name LIKE $2",
            [table, f"_hs_{table}_%"],
        ).fetchall()
        for (name,) in names:
            index = sg.to_identifier(name, quoted=True).sql("duckdb")
            self.native.execute(f"DROP INDEX IF EXISTS {index}")
        self._indexed.pop(table, None)

    def row_digest(self, table: ir.Table, columns: Sequence[str]) -> ir.Value | None:
        import ibis

        return ibis.struct({c: table[c] for c in columns}).hash() if columns else None

    def stage(self, name: str, rows: pa.RecordBatchReader, *, temp: bool) -> None:
        # DuckDB scans the stream itself, batch by batch, spilling past its memory limit
        native, view = self.native, f"{name}_arrow"
        native.register(view, rows)
        try:
            kind = "TEMP TABLE" if temp else "TABLE"
            native.execute(f'CREATE {kind} "{name}" AS SELECT * FROM "{view}"')
        finally:
            native.unregister(view)

    @contextmanager
    def staged(self, name: str, rows: pa.Table) -> Iterator[None]:
        # the Arrow rows themselves, scanned where a query names them: nothing copied,
        # no table made and dropped for each of a service's batches
        self.native.register(name, rows)
        try:
            yield
        finally:
            self.native.unregister(name)

    # a transaction keeps what it appends in memory until it commits (DuckDB 1.5: about
    # 100 bytes a row, past the memory limit; 24 M rows in 4 M-row inserts grew the
    # process from 1.0 to 2.9 GB, and to 1.4 GB with each insert committed)
    loads_beside = True

    def copy_empty(self, table: str, new: str) -> None:
        self.native.execute(f"CREATE TABLE {_quoted(new)} AS FROM {_quoted(table)} LIMIT 0")

    def replace_table(self, table: str, new: str) -> None:
        self.native.execute(f"DROP TABLE {_quoted(table)}")
        self.native.execute(f"ALTER TABLE {_quoted(new)} RENAME TO {_quoted(table)}")

    def write_chunks(
        self, table: str, rows: pa.RecordBatchReader, order: list[str], chunk_rows: int
    ) -> None:
        # DuckDB sorts each chunk as it inserts it (spilling past its memory limit); one
        # sort over the whole stream would hold or spill every row before writing any
        native, target = self.native, _quoted(table)
        names = ", ".join(_quoted(c) for c in rows.schema.names)
        by = f" ORDER BY {', '.join(_quoted(c) for c in order)}" if order else ""
        with closing(_read_ahead(rows, chunk_rows)) as chunks:
            for chunk in chunks:
                view = f"_chunk_{uuid.uuid4().hex[:8]}"
                native.register(view, chunk)
                try:
                    native.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {view}{by}")
                finally:
                    native.unregister(view)
                del chunk  # before the next one is read

    @contextmanager
    def memory_limit(self, limit: str | None) -> Iterator[None]:
        # DuckDB's own progress bar would draw on the terminal under ours
        native = self.native
        old = native.execute(
            "SELECT current_setting('memory_limit'), current_setting('enable_progress_bar')"
        ).fetchone()
        if limit:
            native.execute("SET memory_limit = $1", [limit])
        native.execute("PRAGMA disable_progress_bar")
        try:
            yield
        finally:
            native.execute("SET memory_limit = $1", [old[0]])
            if old[1]:
                native.execute("PRAGMA enable_progress_bar")

    def _as_run(self, expr: ir.Table) -> ir.Table:
        return expr  # as to_arrow runs it: Store.execute casts the result instead

    def ensure_index(self, table: str, column: str) -> None:
        if self._indexed.get(table) == column:
            return  # every append asks: two statements a batch saved
        # a minute on 10 M rows: DuckDB's own progress bar would draw into the service's
        # log (or under our own output)
        native = self.native
        shown = native.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0]
        native.execute("PRAGMA disable_progress_bar")
        try:
            super().ensure_index(table, column)
        finally:
            if shown:
                native.execute("PRAGMA enable_progress_bar")

    def prepare(self, expr: ir.Table) -> Prepared:
        # the text, cut at each placeholder (rendered with a mark no query text holds). A
        # DuckDB plan runs from its text, as one read from the cache does, so no tree is
        # kept: the placeholders' copy of the compiled tree is rendered as it is, not
        # marked in a second pass and copied twice more (a quarter of a large plan's
        # prepare)
        expr = self._as_run(expr)
        mark = f"hs{uuid.uuid4().hex}"
        tree, keys = _placeholders(self.tree(expr), mark)
        text = tree.sql(self.con.dialect, copy=False)
        parts = re.split(rf"\${mark}_(\w+?)_{mark}", text)
        return Prepared(None, expr.schema().to_pyarrow(), keys, parts)

    def run_prepared(self, prepared: Prepared, values: dict) -> pa.Table:
        # DuckDB plans a statement with parameters again at every run (binding and the
        # optimizer: two thirds of a one-account rescore on 10,000 accounts), but keeps
        # the plan of one without. So, on this connection, the values go into a one-row
        # temporary table of the statement's own, the statement reads them from there
        # (:func:`_cached_text`), and it is prepared once: a run is that row's update and
        # the statement's EXECUTE. The values are the same text literals, cast as the
        # placeholders cast them, so the rows are those of the text with the values in it.
        # (DuckDB's own parameter binding would also import pandas, a third of a second
        # of a command that runs a kept plan.)
        parts = prepared.parts
        keys = sorted(set(parts[1::2]))
        name = self._statements.get(prepared) if prepared.kept else ""
        if name is None and not self._depth:  # (a table made in a transaction may go)
            name = self._statements[prepared] = self._prepare_cached(parts, keys)
        if not name:  # not kept, or could not be: the text with the values in it
            sql = "".join(_duckdb_literal(values[p]) if i % 2 else p for i, p in enumerate(parts))
            return self.run_sql(sql)
        # DuckDB plans a kept statement again at every EXECUTE once the catalog it was
        # planned on changed (any table made, altered or dropped in the database, or a
        # temporary one of this connection: the service's first write of current_scores,
        # another plan's values table), and keeps planning it again at every run after
        # (it does not keep the new plan): 100-250 ms a run on the S book. Prepared
        # again, it is planned once more and kept. A change the probe misses only costs
        # time: DuckDB still plans the statement again itself, so the rows are right.
        catalog = self._catalog()
        if self._planned_on.get(name) != catalog and not self._depth:
            self._plan(name, parts, catalog)
        if keys:
            sets = ", ".join(f"{_quoted(k)} = {_duckdb_literal(values[k])}" for k in keys)
            self.native.execute(f"UPDATE {name}_v SET {sets}")
        return self.run_sql(f"EXECUTE {name}")

    def _catalog(self) -> tuple:
        """What of the catalog a kept statement's plan depends on, read in about a
        millisecond: the tables (this connection's temporary ones included), their
        columns, indexes and definitions."""
        return self.native.execute(
            "SELECT count(*), max(table_oid), sum(column_count), sum(index_count), "
            "sum(hash(sql)) FROM duckdb_tables()"
        ).fetchone()

    def _prepare_cached(self, parts: list[str], keys: list[str]) -> str:
        """Prepare the statement of ``parts`` with its values read from a temporary
        table on this connection; its name ('' where the connection cannot hold one)."""
        import hashlib

        text = "\x00".join(parts)
        name = "hs_plan_" + hashlib.sha1(text.encode()).hexdigest()[:16]
        columns = ", ".join(f"CAST(NULL AS VARCHAR) AS {_quoted(k)}" for k in keys) or "1 AS x"
        try:
            # made once: a table made again would change the catalog the other kept
            # statements were planned on (and they, prepared again, this one's)
            self.native.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name}_v AS SELECT {columns}")
            self._plan(name, parts, self._catalog())
        except Exception:  # noqa: BLE001 - e.g. a connection that cannot create tables
            return ""
        return name

    def _plan(self, name: str, parts: list[str], catalog: tuple) -> None:
        """PREPARE (again) the kept statement ``name`` on the catalog as it is now."""
        self.native.execute(f"PREPARE {name} AS {_cached_text(parts, f'{name}_v')}")
        self._planned_on[name] = catalog
        self.plannings += 1

    def run_sql(self, sql: str) -> pa.Table:
        result = self.native.execute(sql).arrow()
        # DuckDB hands over a RecordBatchReader in newer releases, a Table in older ones
        return result.read_all() if hasattr(result, "read_all") else result


def _refused(path: str, read_only: bool, e: Exception) -> StoreError | None:
    """The DuckDB file ``path`` this user may not open (permission denied), in words:
    whether it cannot be read, or can be read but not written, or cannot be made, and
    what to do; None for any other error. The error keeps the errno, so a caller that
    words a disk error its own way (a write-ahead log to apply) still can."""
    from healthscore.core.files import disk_errno

    code = disk_errno(e)
    if code not in (errno.EACCES, errno.EPERM):
        return None
    try:
        with open(path, "rb"):
            readable: bool | None = True
    except FileNotFoundError:
        readable = None
    except OSError:
        readable = False
    if readable is None:
        error = StoreError(
            f"cannot create the store {path}: permission denied",
            hint="make it in a folder you may write to (`db`)",
        )
    elif not readable:
        error = StoreError(
            f"cannot read the store {path}: permission denied",
            hint="ask its owner to let you read the file (and open the folders above it; "
            "commands that write into the store need write access too), or use a copy "
            "you may read (`db`)",
        )
    elif read_only:
        return None  # the file can be read: something else beside it was refused
    else:
        error = StoreError(
            f"cannot open the store {path} for writing: permission denied (it can be "
            "read, not written)",
            hint="this command writes into the store: ask for write access to the file "
            "and its folder, or work on a copy you may write (`db`); commands that only "
            "read it (score, explain, trends, report) work on it as it is",
        )
    error.errno = code
    return error


class PostgresBackend(Backend):
    """PostgreSQL: every statement under a time limit, queries PostgreSQL can plan, and a
    query that stops when the command stops.

    - **Session settings** (on connect): ``statement_timeout`` from
      ``$HEALTHSCORE_STATEMENT_TIMEOUT`` (PostgreSQL's syntax: ``90s``, ``30min``, ``2h``;
      ``0`` for none); unset, a limit the server already gives the session (the role's
      or database's setting, ``PGOPTIONS``) is kept, else :data:`DEFAULT_STATEMENT_TIMEOUT`.
      ``jit`` is off: the scoring queries are one-off expressions hundreds of columns
      wide, whose LLVM compilation took longer than running them (3.6 s of 6 s at demo
      size) and, once its cost estimate crossed ``jit_optimize_above_cost``, ran for
      many minutes at 4 GB without answering a cancel, the statement timeout or
      ``pg_terminate_backend``. ``client_connection_check_interval`` lets the server
      stop a query whose client has gone (killed, or its machine lost).
    - **Queries** are Ibis's SQL with one change (:func:`fence_projections`): a derived
      table that computes columns gets ``OFFSET 0``. Without it PostgreSQL pulls every
      nested projection up into the one above, copying a column's expression into each
      place it is used; the scoring steps use each column several times, one level on
      top of another, so the copies multiply: the 9-date history expression planned in
      8 s with a cost estimate near 10^6 (which is what switched on JIT optimisation)
      and ran in 22 s; fenced, it plans in 0.1 s and runs in 2.4 s.
    - **Stopping**: on Ctrl-C psycopg cancels the running query in the server; SIGTERM
      does the same here (:func:`interruptible`), and the command ends with
      :class:`~healthscore.errors.Interrupted`.
    - **Every statement** is fenced so, whoever runs it: the connection's cursor classes
      (:func:`_fence_cursors`) tell the statement timeout in our words and let SIGTERM
      cancel, for the store's own queries and for an Ibis expression run directly.
    - **Rows in** (:meth:`insert`, and :meth:`stage` for a load) go through ``COPY ...
      FROM STDIN``, a batch at a time, not Ibis's one ``INSERT`` per row.
    - **Statistics**: :meth:`analyze` after each load, so the planner never works from
      row counts of a table that has since been replaced.
    """

    def __init__(self, con):
        super().__init__(con)
        self.statement_timeout = _configure_session(con)
        _fence_cursors(con.con, self._fenced)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with interruptible(), self._translated():
            with super().transaction():
                yield

    def to_arrow(self, expr: ir.Table) -> pa.Table:
        expr = _floats_as_declared(expr)
        return self._fetch(self.compile(expr), expr.schema().to_pyarrow())

    def compile(self, expr: ir.Table) -> str:
        return self.tree(expr).sql(self.con.dialect)

    def tree(self, expr: ir.Table) -> sge.Expression:
        return fence_projections(self.con.compiler.to_sqlglot(expr))

    def _run_compiled(self, sql: str, schema) -> pa.Table:
        return self._fetch(sql, schema)

    def statement(self, stmt: sge.Expression) -> None:
        with interruptible(), self._translated():
            super().statement(stmt)

    def insert(self, table: str, data: pa.Table) -> None:
        # COPY: Ibis inserts Arrow rows with one INSERT each (about 6,000 rows a second
        # here); streamed through COPY they arrive many times faster
        self._copy(table, data.schema.names, data.to_batches(max_chunksize=_FETCH_ROWS))

    def stage(self, name: str, rows: pa.RecordBatchReader, *, temp: bool) -> None:
        # the empty table through Ibis (its types), the rows through COPY, batch by batch
        self.con.create_table(name, schema=ibis.Schema.from_pyarrow(rows.schema), temp=temp)
        self._copy(name, rows.schema.names, rows)

    def _copy(self, table: str, columns: list[str], batches) -> None:
        """Stream Arrow record batches into ``table`` with one ``COPY ... FROM STDIN``
        (psycopg quotes each value; memory holds one batch at a time)."""
        from psycopg import sql

        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), names)
        con = self.con.con
        with self._fenced(), con.cursor() as cur, con.transaction():
            with cur.copy(copy_sql) as copy:
                for big in batches:
                    for start in range(0, big.num_rows, _FETCH_ROWS):
                        batch = big.slice(start, _FETCH_ROWS)
                        for row in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                            copy.write_row(row)

    def analyze(self, table: str) -> None:
        self.statement(sge.Command(this="ANALYZE", expression=sg.table(table, quoted=True)))

    def _fetch(self, sql: str, schema: pa.Schema) -> pa.Table:
        """Run ``sql`` and read its rows into Arrow in batches (as Ibis's own reader does)."""
        struct = pa.struct(list(schema))
        batches = []
        con = self.con.con
        with interruptible(), self._translated():
            # a named cursor is a server-side one: the rows come over in batches
            with con.cursor(name=f"hs_{uuid.uuid4().hex[:12]}") as cur, con.transaction():
                cur.execute(sql)
                while rows := cur.fetchmany(_FETCH_ROWS):
                    batches.append(pa.RecordBatch.from_struct_array(pa.array(rows, type=struct)))
        return pa.Table.from_batches(batches, schema=schema)

    @contextmanager
    def _fenced(self) -> Iterator[None]:
        """A statement run the project's way: SIGTERM cancels it in the server, and the
        statement timeout is told in our words."""
        with interruptible(), self._translated():
            yield

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The statement timeout, as a :class:`StoreError` naming the setting."""
        import psycopg.errors

        try:
            yield
        except psycopg.errors.QueryCanceled as e:
            if "statement timeout" not in str(e):
                raise
            raise StoreError(
                f"PostgreSQL stopped a statement that ran longer than the statement "
                f"timeout ({self.statement_timeout})",
                hint=f"set {TIMEOUT_ENV} to allow longer (e.g. 2h; 0 for no limit)",
            ) from None


#: how long one statement may run on PostgreSQL unless $HEALTHSCORE_STATEMENT_TIMEOUT says
DEFAULT_STATEMENT_TIMEOUT = "30min"
TIMEOUT_ENV = "HEALTHSCORE_STATEMENT_TIMEOUT"
_FETCH_ROWS = 100_000


def _configure_session(con) -> str:
    """Set the session's statement timeout, JIT and client check; the timeout in force."""
    import psycopg

    native = con.con
    wanted = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        if not wanted and native.execute("SHOW statement_timeout").fetchone()[0] == "0":
            wanted = DEFAULT_STATEMENT_TIMEOUT
        if wanted:
            native.execute("SELECT set_config('statement_timeout', %s, false)", [wanted])
    except psycopg.DataError as e:  # PostgreSQL names what it accepts
        reason = str(e).strip().splitlines()[0]
        raise StoreError(
            f"{TIMEOUT_ENV}={wanted!r}: {reason}", hint="e.g. 90s, 30min, 2h"
        ) from None
    native.execute("SET jit = off")
    native.execute("SET client_connection_check_interval = '2s'")
    return native.execute("SHOW statement_timeout").fetchone()[0]


def _fence_cursors(native, fenced: Callable[[], AbstractContextManager[None]]) -> None:
    """Every cursor of the connection ``native`` runs its statements inside ``fenced``.

    The store's own queries go through :class:`PostgresBackend`, but code that runs an
    Ibis expression itself (``expr.to_pyarrow()``: flags, the portfolio, why an account
    was not scored) reaches the driver through Ibis; the connection's cursor classes are
    where both meet, so the statement timeout reads the same, and SIGTERM cancels the
    query, whoever runs it. A server-side cursor runs its query when it fetches, so
    fetching is fenced too.
    """

    def fence(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            with fenced():
                return method(self, *args, **kwargs)

        return run

    fenced_methods = ("execute", "executemany", "fetchone", "fetchmany", "fetchall")

    def fenced_class(base):
        methods = {m: fence(getattr(base, m)) for m in fenced_methods}
        return type(f"Fenced{base.__name__}", (base,), methods)

    native.cursor_factory = fenced_class(native.cursor_factory)
    native.server_cursor_factory = fenced_class(native.server_cursor_factory)


def fence_projections(tree: sge.Expression) -> sge.Expression:
    """``tree`` with ``OFFSET 0`` on each derived table that computes a column.

    PostgreSQL pulls a derived table's projection up into the query that reads it and
    copies each computed column's expression into every place that uses it; stacked
    projections that each use a column several times (the scoring steps) multiply the
    copies. ``OFFSET 0`` keeps the derived table a step of its own (a no-op on the
    rows). A derived table that only selects, renames or filters columns is left to the
    planner, which may push conditions into it.

    Examples
    --------
    >>> import sqlglot as sg
    >>> q = "SELECT a * 2 AS b FROM (SELECT x + 1 AS a FROM t) AS s"
    >>> fence_projections(sg.parse_one(q)).sql()
    'SELECT a * 2 AS b FROM (SELECT x + 1 AS a FROM t OFFSET 0) AS s'
    >>> q = "SELECT a FROM (SELECT x AS a FROM t WHERE x > 1) AS s"
    >>> fence_projections(sg.parse_one(q)).sql() == q
    True
    """
    for sub in tree.find_all(sge.Subquery):
        select = sub.this
        if not isinstance(select, sge.Select) or not isinstance(sub.parent, sge.From | sge.Join):
            continue
        if select.args.get("limit") or select.args.get("offset"):
            continue
        plain = (sge.Column, sge.Literal, sge.Star, sge.Null)
        if any(not isinstance(_unaliased(c), plain) for c in select.expressions):
            select.set("offset", sge.Offset(expression=sge.Literal.number(0)))
    return tree


def _unaliased(e: sge.Expression) -> sge.Expression:
    return e.this if isinstance(e, sge.Alias) else e


def _floats_as_declared(expr: ir.Table) -> ir.Table:
    """``expr`` with its float columns cast in the SQL itself, by one outer projection.

    A backend may compute a column as a decimal where Ibis types it float64
    (PostgreSQL's AVG and SUM of integers and its decimal literals give NUMERIC), and
    Arrow does not convert those values to floats on the way in.
    """
    cols = expr.schema()
    if not any(t.is_floating() for t in cols.values()):
        return expr
    # built as the operation: `Value.cast` to the type Ibis already sees is dropped
    return expr.select(
        *[
            ops.Cast(expr[c], to=t).to_expr().name(c) if t.is_floating() else expr[c]
            for c, t in cols.items()
        ]
    )


@contextmanager
def _no_transaction() -> Iterator[None]:
    yield


def _chunks(rows: pa.RecordBatchReader, chunk_rows: int) -> Iterator[pa.Table]:
    """The stream ``rows`` as tables of at least ``chunk_rows`` rows (the last may hold
    fewer), each made of the batches as they came (no copy)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in rows:
        pending.append(batch)
        held += batch.num_rows
        if held >= chunk_rows:
            yield pa.Table.from_batches(pending, schema=rows.schema)
            pending, held = [], 0
    if pending:
        yield pa.Table.from_batches(pending, schema=rows.schema)


def _read_ahead(rows: pa.RecordBatchReader, chunk_rows: int) -> Iterator[pa.Table]:
    """:func:`_chunks`, each next chunk read on a thread of its own while the caller
    writes the one before (the reader, a scratch DuckDB query, and the store's insert
    then run at once: both release the GIL). Memory holds two chunks.

    An error of the reader is raised here. When the caller stops early (an error of its
    own, Ctrl-C), the thread stops at its next batch and is waited for, a Ctrl-C pressed
    again meanwhile included (:func:`_wait_out`), so that nothing reads the stream after
    its caller has moved on (and its database may be closed)."""
    stop = threading.Event()

    def until_stopped() -> Iterator[pa.RecordBatch]:
        for batch in rows:
            if stop.is_set():
                return
            yield batch

    chunks = _chunks(pa.RecordBatchReader.from_batches(rows.schema, until_stopped()), chunk_rows)
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        future = pool.submit(next, chunks, None)
        try:
            while (chunk := future.result()) is not None:
                future = pool.submit(next, chunks, None)
                yield chunk
                del chunk
        finally:
            stop.set()
            _wait_out(future)  # then the pool's exit joins an idle thread


def _wait_out(future: Future) -> None:
    """Wait until ``future`` is done, however often Ctrl-C (or SIGTERM) comes meanwhile;
    then raise the first of those.

    Not a thread join: a join that a Ctrl-C broke off leaves the thread marked finished
    while it runs on (CPython before 3.13), so nothing waited for it any more: the load's
    caller closed the scratch database under it and the process died at its exit
    ("Fatal Python error: PyGILState_Release"). The wait is one batch: the thread stops
    at its next."""
    stopped: KeyboardInterrupt | None = None
    while True:
        try:
            wait([future])
            break
        except KeyboardInterrupt as e:
            stopped = stopped or e
    if stopped is not None:
        raise stopped


def _duckdb_literal(value) -> str:
    """A parameter's value as a DuckDB literal (text: each placeholder is cast to its
    type), as :func:`_bound` gives it to the other backends."""
    if value is None:
        return "NULL"
    if hasattr(value, "isoformat"):
        if getattr(value, "tzinfo", None) is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        value = value.isoformat(sep=" ")
    return "'" + str(value).replace("'", "''") + "'"


def _cached_text(parts: list[str], table: str) -> str:
    """The text of ``parts`` (text, key, ..., text: each key in a placeholder cast to its
    type) with its values read from the one-row ``table``, a column per key: a list of
    placeholders only (``x IN (CAST($a AS TEXT), CAST($b AS TEXT))``) becomes a semi-join
    on those columns, any other placeholder a scalar subquery of its column."""
    mark = "\x00"
    text = "".join(f"{mark}{p}{mark}" if i % 2 else p for i, p in enumerate(parts))
    item = rf"CAST\({mark}\w+{mark} AS \w+\)"

    def semi_join(m: re.Match) -> str:
        items = re.sub(rf"{mark}(\w+){mark}", lambda k: _quoted(k.group(1)), m.group(1))
        return f"IN (SELECT UNNEST([{items}]) FROM {table})"

    text = re.sub(rf"IN \(((?:{item}, )*{item})\)", semi_join, text)
    one = rf"{mark}(\w+){mark}"
    return re.sub(one, lambda k: f"(SELECT {_quoted(k.group(1))} FROM {table})", text)


def _plain(t: pa.DataType) -> bool:
    """Whether DuckDB's driver takes the Python values of Arrow type ``t`` as that type
    (text, whole and floating numbers, booleans, dates, timestamps without a zone)."""
    if pa.types.is_timestamp(t):
        return t.tz is None and t.unit != "ns"  # nanoseconds come out as integers
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_int64(t)
        or pa.types.is_int32(t)
        or pa.types.is_float64(t)
        or pa.types.is_boolean(t)
        or pa.types.is_date32(t)
    )


#: DuckDB's type for each Ibis type name the store's tables use (what Ibis's DuckDB
#: compiler writes for it; tests/test_store.py compares the tables both make)
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "float64": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
}


def _value(value) -> sge.Expression:
    """A Python value (None, a number, a timestamp, text) as a SQL literal."""
    if value is None:
        return sge.null()
    if isinstance(value, datetime):
        return sge.cast(sge.Literal.string(value.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(value, bool):
        return sge.Boolean(this=value)
    if isinstance(value, int | float):
        return sge.Literal.number(value)
    return sge.Literal.string(str(value))


def _quoted(name: str) -> str:
    """An identifier quoted for DuckDB's SQL."""
    return '"' + name.replace('"', '""') + '"'


def backend_for(con) -> Backend:
    """The :class:`Backend` for an Ibis connection.

    The one place that looks at which backend it is: DuckDB's transaction calls belong
    to its driver, which Ibis does not wrap; PostgreSQL's session settings and planner
    belong to PostgreSQL; everything else asks Ibis.
    """
    if con.name == "duckdb":
        return DuckDBBackend(con)
    return PostgresBackend(con) if con.name == "postgres" else Backend(con)
