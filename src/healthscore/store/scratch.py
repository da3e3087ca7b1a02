"""Scratch connections: a private in-memory DuckDB for reading and writing files.

Place in the flow: part of ``store``, the only holder of a backend connection. ``sources``
reads a data file by running set-based queries over it in a scratch connection (one per
file, closed after), and writes rejects through one; nothing there is ever kept. The
connection is in memory, spills to a private temporary folder (never the working folder)
and runs in UTC, so casts between zoned and naive timestamps mean UTC.

Callers catch :data:`ScratchError`, the driver's error under our name, and word it with
:func:`error_detail`; they never import the driver.

Examples
--------
>>> with open_scratch() as db:
...     db.execute("SELECT current_setting('TimeZone')").fetchone()
('UTC',)
>>> with open_scratch() as db:
...     try:
...         db.execute("SELECT nosuch")
...     except ScratchError as e:
...         print(error_detail(e))
Referenced column "nosuch" ...FROM clause...
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from healthscore.store.backend import duckdb_threads

#: What a scratch query raises: the driver's error class.
ScratchError = duckdb.Error

#: A scratch connection: what :func:`open_scratch` yields.
ScratchConnection = duckdb.DuckDBPyConnection


#: Rows per Arrow record batch when a scratch query's result is streamed.
BATCH_ROWS = 1 << 17
#: how much of a streamed result a private scratch database computes ahead (DuckDB's
#: default, 976 KB, keeps a stream on about one thread: 10 M events took twice as long)
STREAM_BUFFER = "100MB"


#: the memory the shared scratch database may hold (small batches; beyond it, it spills)
SHARED_MEMORY = "512MB"
_shared: duckdb.DuckDBPyConnection | None = None
_shared_lock = threading.Lock()


def _shared_database() -> duckdb.DuckDBPyConnection:
    """The process's shared in-memory scratch database, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            spill = tempfile.mkdtemp(prefix="healthscore-")
            atexit.register(shutil.rmtree, spill, ignore_errors=True)
            config = {"temp_directory": spill, "memory_limit": SHARED_MEMORY}
            threads = duckdb_threads()
            if threads is not None:
                config["threads"] = threads
            shared = duckdb.connect(config=config)
            # every connection to it (cursor) starts in UTC, as open_scratch's do
            shared.execute("SET GLOBAL TimeZone = 'UTC'")
            _shared = shared
        return _shared


@contextmanager
def open_scratch(
    memory_limit: str | None = None, *, shared: bool = False
) -> Iterator[ScratchConnection]:
    """A fresh in-memory DuckDB connection in UTC that spills to a private temp folder.

    ``memory_limit`` (DuckDB's, e.g. ``"1GB"``) bounds what it holds in memory: beyond
    it, sorts, joins, aggregates and tables spill to the folder. Closed, and its folder
    removed, when the ``with`` block ends.

    ``shared`` (for small reads, many a second: a service's batches): a connection of
    its own to the process's shared scratch database instead, in a schema of its own
    (dropped after), so nothing it makes meets another's; opening one costs well under a
    millisecond where a new database costs tens. ``memory_limit`` does not apply (the
    shared database holds at most :data:`SHARED_MEMORY`).
    """
    if shared:
        db = _shared_database().cursor()
        schema = f"scratch_{uuid.uuid4().hex}"
        try:
            db.execute(f'CREATE SCHEMA "{schema}"')
            db.execute(f"SET schema = '{schema}'")
            db.execute("SET TimeZone = 'UTC'")
            db.execute("PRAGMA disable_progress_bar")
            yield db
        finally:
            try:
                db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                db.close()
        return
    # A private spill directory keeps memory bounded without writing into the cwd.
    with tempfile.TemporaryDirectory(prefix="healthscore-") as spill:
        config = {"temp_directory": spill}
        if memory_limit:
            config["memory_limit"] = memory_limit
        threads = duckdb_threads()
        if threads is not None:
            config["threads"] = threads
        db = duckdb.connect(config=config)
        try:
            # Session time zone UTC: casts between zoned and naive timestamps then mean UTC.
            db.execute("SET TimeZone = 'UTC'")
            # no progress bar of DuckDB's own: the caller reports progress its way
            db.execute("PRAGMA disable_progress_bar")
            # a big file's rows stream from here: computed ahead on every thread
            db.execute(f"SET streaming_buffer_size = '{STREAM_BUFFER}'")
            yield db
        finally:
            db.close()


def query_arrow(sql: str, name: str, table: pa.Table) -> pa.Table:
    """One query over the Arrow ``table``, named ``name`` in ``sql``, in the process's
    shared scratch database (UTC); its result as an Arrow table.

    For a batch in memory validated many times a second: a connection of its own that
    creates nothing (no schema, no view) costs a fraction of a millisecond.

    >>> t = pa.table({"a": ["2024-03-01T12:00:00+02:00"]})
    >>> query_arrow("SELECT CAST(CAST(a AS TIMESTAMPTZ) AS TIMESTAMP) AS a FROM t", "t", t)[0]
    <pyarrow.lib.ChunkedArray object at ...>
    [
      [
        2024-03-01 10:00:00.000000
      ]
    ]
    """
    db = _shared_database().cursor()
    try:
        return fetch_arrow(db.from_arrow(table).query(name, sql))
    finally:
        db.close()


def stream_arrow(db: ScratchConnection, sql: str) -> pa.RecordBatchReader:
    """A scratch query's result as a stream of Arrow record batches (``BATCH_ROWS`` each),
    so that a result of any size never sits in memory whole; read it before the
    connection closes."""
    result = db.execute(sql)
    stream = getattr(result, "to_arrow_reader", None) or result.fetch_record_batch
    return stream(BATCH_ROWS)


def fetch_arrow(relation) -> pa.Table:
    """A scratch query's result as an Arrow table (the method's name differs by version)."""
    fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    return fetch()


def error_detail(e: Exception) -> str:
    """The useful part of a driver error: its first paragraph, without the echoed input."""
    lines = []
    for line in str(e).strip().splitlines():
        if not line.strip() or line.startswith("Possible"):
            break
        if not line.startswith("Original Line"):
            lines.append(line.strip())
    text = ": ".join(lines) or type(e).__name__
    return re.sub(r"^[A-Za-z ]*Error: ", "", text)
