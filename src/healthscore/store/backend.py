"""What the store needs from a backend beyond Ibis's public API: statements and transactions.

Place in the flow: inside ``store``, under :class:`~healthscore.store.Store`; nothing else
uses it. Ibis runs queries (``to_pyarrow``), creates and drops tables and inserts rows
the same way on every backend, and the store uses it for all of that. Three things Ibis
has no public API for, and the store needs, live here behind :class:`Backend`:

- :meth:`Backend.statement`: a statement that returns no rows (``DELETE``, ``ALTER TABLE
  ... ADD COLUMN``), built with sqlglot in the backend's dialect;
- :meth:`Backend.transaction`: several writes that happen together or not at all;
- :meth:`Backend.run_sql`: SQL compiled before, run to an Arrow table (so a benchmark can
  time compiling and running apart).

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

from collections.abc import Iterator
from contextlib import contextmanager

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pyarrow as pa
import sqlglot.expressions as sge

#: rows per insert when a stream is staged through Ibis (PostgreSQL and others)
STAGE_ROWS = 50_000


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
        self._depth = 0

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
        """Run ``expr`` through Ibis (``to_pyarrow``); the result in the expression's types.

        A backend may compute a column as a decimal where Ibis types it float64
        (PostgreSQL's AVG and SUM of integers and its decimal literals give NUMERIC), and
        Ibis's ``to_pyarrow`` cannot convert those values: such columns are cast in the
        SQL itself, by one outer projection.
        """
        cols = expr.schema()
        if any(t.is_floating() for t in cols.values()):
            # built as the operation: `Value.cast` to the type Ibis already sees is dropped
            expr = expr.select(
                *[
                    ops.Cast(expr[c], to=t).to_expr().name(c) if t.is_floating() else expr[c]
                    for c, t in cols.items()
                ]
            )
        return self.con.to_pyarrow(expr)

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


class DuckDBBackend(Backend):
    """DuckDB: transactions through DuckDB's own ``begin``/``commit``/``rollback`` (Ibis's
    DuckDB backend has no ``begin()``), and queries compiled by Ibis and read by the
    driver's Arrow reader."""

    @contextmanager
    def _begin(self) -> Iterator[None]:
        native = self.con.con
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
        return self.run_sql(str(self.con.compile(expr)))

    def stage(self, name: str, rows: pa.RecordBatchReader, *, temp: bool) -> None:
        # DuckDB scans the stream itself, batch by batch, spilling past its memory limit
        native, view = self.con.con, f"{name}_arrow"
        native.register(view, rows)
        try:
            kind = "TEMP TABLE" if temp else "TABLE"
            native.execute(f'CREATE {kind} "{name}" AS SELECT * FROM "{view}"')
        finally:
            native.unregister(view)

    @contextmanager
    def memory_limit(self, limit: str | None) -> Iterator[None]:
        # DuckDB's own progress bar would draw on the terminal under ours
        native = self.con.con
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

    def run_sql(self, sql: str) -> pa.Table:
        result = self.con.con.execute(sql).arrow()
        # DuckDB hands over a RecordBatchReader in newer releases, a Table in older ones
        return result.read_all() if hasattr(result, "read_all") else result


@contextmanager
def _no_transaction() -> Iterator[None]:
    yield


def backend_for(con) -> Backend:
    """The :class:`Backend` for an Ibis connection.

    The one place that looks at which backend it is: DuckDB's transaction calls belong
    to its driver, which Ibis does not wrap; everything else asks Ibis.
    """
    return DuckDBBackend(con) if con.name == "duckdb" else Backend(con)
