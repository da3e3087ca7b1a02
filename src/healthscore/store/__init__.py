"""The store: canonical tables in an Ibis backend, idempotent loads, watermarks.

Place in the flow: ``sources`` hands validated rows to :meth:`Store.load`; ``metrics``
and ``scoring`` read the tables through :meth:`Store.tables` and run their expressions
with :meth:`Store.execute`; ``engine.history`` writes and reads the history tables
through :mod:`healthscore.store.history`. Only the store holds a connection and runs
anything: queries through Ibis (``to_pyarrow``), and the few statements and
transactions Ibis has no API for through :mod:`healthscore.store.backend`, where the
differences between backends live.

The connection is a URL: a plain path or ``duckdb:///path/to/file.duckdb`` (the
embedded default, ``healthscore.duckdb`` in the working folder, or ``$HEALTHSCORE_DB``),
or any Ibis URL such as ``postgres://user@host/db``.

Loads are all-or-nothing and idempotent by primary key: a row whose key is new is
inserted, a row whose key exists with different values is updated, an identical row is
left alone; the counts of each are returned. A load that supplies only some columns
(a second file about the same accounts, with other columns) merges: the columns it does
not supply keep their stored values. After a load the table's watermark (its latest
timestamp) is recorded for freshness checks.

Examples
--------
>>> import pyarrow as pa, datetime as dt
>>> s = connect("duckdb://")  # in memory
>>> rows = pa.table({"account_id": ["a1"], "created_at": [dt.datetime(2024, 1, 1)]})
>>> s.load("accounts", rows).inserted
1
>>> s.load("accounts", rows).unchanged
1
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from healthscore.core import cache
from healthscore.core.files import disk_reason
from healthscore.core.lazy import lazy
from healthscore.core.signals import interruption
from healthscore.core.tables import SCHEMA_VERSION, TABLES, Cadence, get_table
from healthscore.errors import (
    HealthscoreError,
    Problem,
    ScoringError,
    StoreError,
    StoreInUseError,
)
from healthscore.store.backend import Backend, DuckDBBackend, Prepared, _value, backend_for
from healthscore.store.backend import open_connections as open_connections
from healthscore.store.backend import parameter as parameter  # re-exported for the engine

if TYPE_CHECKING:
    import ibis.expr.types as ir

# imported on first use: a command that runs a cached plan never builds an expression
ibis = lazy("ibis")
sg = lazy("sqlglot")
sge = lazy("sqlglot.expressions")

#: ``progress(step, fraction)``: what a long load is doing, and how far it is
Progress = Callable[[str, float], None]

DEFAULT_DB = "healthscore.duckdb"
#: the memory a load may hold in each DuckDB connection it uses (see load_memory_limit)
LOAD_MEMORY = "1GB"
#: rows a first load writes (and sorts: see :func:`_cluster`) at a time
LOAD_CHUNK_ROWS = 4_000_000
META = "_healthscore_meta"
WATERMARKS = "_healthscore_watermarks"
#: the store's own bookkeeping tables, whose schemas are known without asking the backend
BOOKKEEPING = {
    META: {"key": "string", "value": "string"},
    WATERMARKS: {
        "table_name": "string",
        "watermark": "timestamp",
        "rows": "int64",
        "loaded_at": "timestamp",
    },
}


@dataclass
class LoadResult:
    """What a load did."""

    table: str
    inserted: int
    updated: int
    unchanged: int
    rejected: int = 0
    watermark: datetime | None = None
    unknown_accounts: int = 0  # rows whose account_id is not in the accounts table
    skipped: int = 0  # rows left out on purpose: a value map sent their key to nothing
    skip_reason: str | None = None  # e.g. "Customer Status maps to nothing (Joined)"
    warnings: list[str] = field(default_factory=list)  # from reading the file
    #: the accounts whose rows the write changed (new, and before and after an update);
    #: set by :meth:`Store.append`
    accounts: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.table}: {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.rejected} rejected"
        )
        if self.skipped:
            rows = "row" if self.skipped == 1 else "rows"
            why = f" whose {self.skip_reason}" if self.skip_reason else ""
            text += f"; skipped {self.skipped} {rows}{why}"
        return text


@dataclass
class FreshnessWarning:
    """A table judged stale at ``as_of`` by its ``cadence``: ``watermark`` is its latest
    data (``cadence.by == "data"``) or its last load (``"load"``)."""

    table: str
    watermark: datetime
    as_of: datetime
    cadence: Cadence

    @property
    def expected_lag_days(self) -> float:
        return self.cadence.within.total_seconds() / 86400

    def __str__(self) -> str:
        days = (self.as_of - self.watermark).total_seconds() / 86400
        seen = "last loaded" if self.cadence.by == "load" else "latest data"
        return (
            f"{self.table} is stale: {seen} {self.watermark:%Y-%m-%d %H:%M}, {days:.1f} days "
            f"before the as-of date (expected {self.cadence.describe(self.table)}); scores "
            "may look worse than they are"
        )


def resolve_url(url: str | os.PathLike | None) -> str:
    """The store URL: the argument, else ``$HEALTHSCORE_DB``, else the default file."""
    url = str(url) if url else os.environ.get("HEALTHSCORE_DB") or DEFAULT_DB
    if "://" not in url:
        url = f"duckdb://{Path(url).resolve()}" if url != ":memory:" else "duckdb://"
    return url


def store_file(db: str | os.PathLike | None = None) -> Path | None:
    """The DuckDB file the store ``db`` is (:func:`resolve_url`: default
    ``$HEALTHSCORE_DB``, else ./healthscore.duckdb); None for another backend or a store
    in memory."""
    url = resolve_url(db)
    if not url.startswith("duckdb://") or url == "duckdb://":
        return None
    return Path(url.removeprefix("duckdb://"))


def connect(
    url: str | os.PathLike | None = None, *, create: bool = True, read_only: bool = False
) -> Store:
    """Open (and on first use create) the store at ``url``.

    With ``read_only`` a DuckDB file is opened read-only: nothing can be written, so it
    works on a file, folder or disk the user may not write, and beside other readers.
    A table the file lacks (a store made by an older healthscore, history never stored)
    is then an empty table of this session only, and nothing is written to the file.
    Other backends ignore ``read_only``: their permissions are the database's.
    """
    full = resolve_url(url)
    path = full.removeprefix("duckdb://") if full.startswith("duckdb://") else None
    if path is not None and not create:
        try:
            there = not path or Path(path).exists()
        except PermissionError:  # a folder on its path may not be entered
            raise StoreError(
                f"cannot read the store {path}: permission denied",
                hint="a folder on its path may not be entered: ask for access to it, or "
                "use a copy (`db`)",
            ) from None
        if not there:
            raise StoreError(
                f"no store at {path}",
                hint="run `healthscore init` or `healthscore demo`, or pass --db",
            )
    read_only = read_only and bool(path)  # an in-memory store is the session's own
    try:
        with owner_only_files() if path else contextlib.nullcontext():
            backend = _open(full, path, read_only)
    except HealthscoreError:
        raise
    except Exception as e:  # driver errors vary by backend; name the URL
        in_use = _held_by(e) if path else None
        if in_use is not None:
            pid = in_use or None
            who = f"another process (pid {pid})" if pid else "another process"
            raise StoreInUseError(
                f"the store {path} is in use by {who}",
                hint="a DuckDB store has one writer process: stop that process, or use "
                "PostgreSQL for several",
                path=path,
                pid=pid,
            ) from None
        reason = disk_reason(e)
        if reason is not None:
            what, fix = reason
            raise StoreError(
                f"cannot open store {path or full}: {what}", hint=f"{fix} (`db`)"
            ) from None
        raise StoreError(f"cannot open store {full}: {e}") from None
    store = Store(None, full, read_only=read_only, backend=backend)
    with store.writing():
        store.ensure_schema()
    return store


_LOCK_HELD = re.compile(r"Could not set lock on file.*Conflicting lock is held in .*?\(PID (\d+)\)")


def _held_by(e: Exception) -> int | None:
    """The pid holding a DuckDB file's lock when ``e`` is DuckDB's lock conflict (0 when
    it names none), else None."""
    text = str(e)
    if "Could not set lock on file" not in text:
        return None
    m = _LOCK_HELD.search(text)
    return int(m.group(1)) if m else 0


#: guards the process's umask while :func:`owner_only_files` holds it
_UMASK_LOCK = threading.Lock()
_umask_holders = 0
_umask_saved = 0


@contextmanager
def owner_only_files() -> Iterator[None]:
    """Files made while inside are readable and writable by their owner only (0600).

    A DuckDB store holds the service's password and token hashes, and DuckDB makes its
    file, and its write-ahead log (``<file>.wal``, made again at the first write after
    each checkpoint), with the process's umask: 0644 under the usual 022. DuckDB has no
    setting for the mode, so the store narrows the umask to 077 while it opens or
    writes a DuckDB file (:meth:`Store.writing`), and puts it back after. The umask is
    the process's: a file another thread makes meanwhile is owner-only too (never
    more open than it would have been). Nested and concurrent uses share one change."""
    global _umask_holders, _umask_saved
    with _UMASK_LOCK:
        if _umask_holders == 0:
            _umask_saved = os.umask(0o077)
            os.umask(_umask_saved | 0o077)  # a stricter umask of the user's stays
        _umask_holders += 1
    try:
        yield
    finally:
        with _UMASK_LOCK:
            _umask_holders -= 1
            if _umask_holders == 0:
                os.umask(_umask_saved)


#: the longest name (in bytes of UTF-8) a column the store adds may have: PostgreSQL's
#: limit on a name (it cuts a longer one short, silently), the same on every backend so
#: that a store can move between them
MAX_COLUMN_NAME = 63


def column_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a new column of the store (too long), else None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size <= MAX_COLUMN_NAME:
        return None
    shown = name if len(name) <= 40 else f"{name[:40]}..."
    return (
        f"column name {shown!r} is {size:,} bytes long; a column name is at most "
        f"{MAX_COLUMN_NAME} bytes (63 plain letters)"
    )


def _writes(method):
    """A store method whose disk errors are told in plain words (see :meth:`Store.writing`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.writing():
            return method(self, *args, **kwargs)

    return wrapper


def _open(full: str, path: str | None, read_only: bool) -> Backend:
    """The connection, behind its :class:`~.backend.Backend`.

    A DuckDB file (or ``duckdb://``, in memory) is opened by the driver, and Ibis
    connects over it on first use (:class:`~.backend.DuckDBBackend`); any other URL
    (a DuckDB URL with settings after ``?`` included) through ``ibis.connect``.

    DuckDB refuses to open a file read-only while this process still has it open for
    writing (and the reverse). A store object of an earlier call that nothing uses any
    more may not be collected yet: collect, and try once more. Reading through a
    connection this process has open for writing is safe, so a read-only open then
    falls back to the writable one."""
    native = path is not None and "?" not in full
    for attempt in (1, 2, 3):
        try:
            if native:
                ro = read_only and attempt < 3
                try:
                    return DuckDBBackend.open(path or ":memory:", read_only=ro)
                except Exception as e:
                    if not (ro and "replaying WAL" in str(e)):
                        raise
                _replay_wal(path)
                return DuckDBBackend.open(path, read_only=True)
            if read_only and attempt < 3:
                return backend_for(ibis.duckdb.connect(path, read_only=True))
            return backend_for(ibis.connect(full))
        except Exception as e:
            if not path or "different configuration" not in str(e):
                raise
            if attempt == 3 or (attempt == 2 and not read_only):
                raise StoreError(
                    f"cannot open store {path} for writing: this process has it open read-only",
                    hint="close the read-only store first",
                ) from None
            gc.collect()


def _replay_wal(path: str) -> None:
    """Apply the write-ahead log a process that was killed (a server, a load) left beside
    the DuckDB file ``path``: a read-only open cannot replay it, a writable one does (and
    checkpoints it into the file on close). Where the file cannot be written either, say
    what the read-only open needs."""
    try:
        DuckDBBackend.open(path, read_only=False).close()
    except Exception as e:
        reason = disk_reason(e)
        if reason is None:
            raise
        raise StoreError(
            f"cannot open store {path} read-only: it holds writes not yet applied to it "
            f"(the {Path(path).name}.wal of a process that stopped without closing it), "
            f"and {reason[0]}",
            hint="open it once where it can be written (any command), then read it here",
        ) from None


class PlanCache:
    """Compiled plans kept in this process (:meth:`Store.cached_plan`), by key: the
    ``size`` used last are kept, the others dropped. Shared by every store of the
    process (the service's connections, a notebook's stores, a test session's): a
    plan depends on the columns of the tables it reads, never on their rows."""

    def __init__(self, size: int):
        self.size = size
        self._plans: OrderedDict[tuple, tuple[Prepared, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # how many plans were built and compiled (not found kept)

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: tuple) -> tuple[Prepared, Any] | None:
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
            return found

    def put(self, key: tuple, plan: tuple[Prepared, Any]) -> tuple[Prepared, Any]:
        with self._lock:
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        return plan

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()


#: the compiled plans this process keeps: on DuckDB a plan's text and schema (about
#: 80 kB for the default model's scores), elsewhere its SQL tree (about 5 MB)
compiled_plans = PlanCache(32)


class Store:
    """Canonical tables in one Ibis backend."""

    def __init__(self, con, url: str, *, read_only: bool = False, backend: Backend | None = None):
        self.url = url
        self.read_only = read_only
        self._backend = backend if backend is not None else backend_for(con)

    @property
    def con(self):
        """The Ibis connection (on DuckDB made on first use: see :func:`_open`)."""
        return self._backend.con

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    @property
    def _is_file(self) -> bool:
        """A DuckDB file this process may write (not one in memory, not read-only)."""
        return self.url.startswith("duckdb:///") and not self.read_only

    def make_owner_only(self) -> None:
        """A DuckDB file store, and its write-ahead log, readable and writable by their
        owner only (0600), as the service makes its session secret: the store holds
        its password and token hashes. Other backends' access is the database's."""
        if not self._is_file:
            return
        path = Path(self.location)
        for f in (path, path.with_name(path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f, 0o600)

    @property
    def location(self) -> str:
        """Where the store is, as a user names it: the DuckDB file, else the URL."""
        return self.url.removeprefix("duckdb://") if self.url.startswith("duckdb://") else self.url

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Writes to the store whose disk errors (full, quota, file size limit, permission,
        read-only) become a :class:`StoreError` naming the store and what to do, not a
        driver traceback.

        On a DuckDB file the files DuckDB makes meanwhile (its write-ahead log) are
        owner-only (:func:`owner_only_files`)."""
        try:
            with owner_only_files() if self._is_file else contextlib.nullcontext():
                yield
        except HealthscoreError:
            raise
        except Exception as e:
            reason = disk_reason(e)
            if reason is None:
                raise
            what, fix = reason
            raise StoreError(
                f"cannot write the store {self.location}: {what}; the write under way "
                "was rolled back",
                hint=f"{fix} (`db`)",
            ) from None

    # schema --------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create missing canonical tables with their declared types; record the version.

        On a read-only store a missing table is created for this session only (empty),
        and nothing is written to the file."""
        existing = set(self._backend.list_tables())
        for name, t in TABLES.items():
            if name not in existing:
                self.create_table(name, t.columns)
        if META not in existing:
            self.create_table(META, BOOKKEEPING[META])
            self.insert(META, pa.table({"key": ["schema_version"], "value": [str(SCHEMA_VERSION)]}))
        else:
            found = self.meta().get("schema_version")
            if found and int(found) > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {found} is newer than this healthscore's "
                    f"({SCHEMA_VERSION})",
                    hint="upgrade healthscore",
                )
        if WATERMARKS not in existing:
            self.create_table(WATERMARKS, BOOKKEEPING[WATERMARKS])

    def _select_all(self, table: str) -> list[dict]:
        """Rows of a small bookkeeping table."""
        # its schema is known: the backend needs no schema lookup, which every command
        # would pay on opening the store
        return self._backend.select_all(table, BOOKKEEPING[table])

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._select_all(META)}

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.delete_rows(META, {"key": key})
            self.con.insert(META, pa.table({"key": [key], "value": [value]}))

    def table(self, name: str) -> ir.Table:
        get_table(name)
        return self.con.table(name)

    def tables(self, names=None) -> dict[str, ir.Table]:
        return {n: self.con.table(n) for n in (names or TABLES)}

    def list_tables(self) -> list[str]:
        """Every table in the store: canonical, history and bookkeeping."""
        return self._backend.list_tables()

    def has_table(self, name: str) -> bool:
        return self._backend.has_table(name)

    def stored(self, name: str) -> ir.Table:
        """Any table of the store (history tables included), as an Ibis expression."""
        return self.con.table(name)

    def create_table(self, name: str, schema: dict[str, str]) -> None:
        """An empty table; on a read-only store, one of this session only."""
        with self.writing():
            self._backend.create_empty(name, schema, temp=self.read_only)

    def insert(self, name: str, data: pa.Table) -> None:
        """Append rows to a table (callers wrap several in :meth:`transaction`)."""
        with self.writing():
            self._backend.insert(name, data)

    def close(self) -> None:
        with self.writing():  # DuckDB writes its last changes into the file here
            self._backend.close()

    def reader(self) -> Store:
        """A second connection to this store, for reads that should not wait for this
        connection's statements (the live service scores while a batch is written).

        On DuckDB, a connection of this process to the same database: each of its
        statements sees what was committed when it starts, never a write under way.
        Elsewhere, this store itself (callers then take turns on it as before).
        Close it with :meth:`close` before this store.

        DuckDB's progress bar is off on it (a setting of the connection): nobody sees
        it draw, and keeping it up to date cost 6-8 ms CPU of a one-account plan's run
        of 50-65 (load 11)."""
        if self.con.name != "duckdb":
            return self
        cursor = self.con.con.cursor()
        cursor.execute("PRAGMA disable_progress_bar")
        return Store(ibis.duckdb.from_connection(cursor), self.url, read_only=True)

    def columns(self, name: str) -> dict[str, str]:
        return self._backend.columns(name)

    def text_columns(self, name: str) -> set[str]:
        """The columns of table ``name`` that hold text (none: no such table yet): a
        reader keeps a file's values for them as written
        (:func:`~healthscore.sources.read_source`'s ``text_columns``)."""
        if not self.has_table(name):
            return set()
        return text_columns(self.columns(name))

    def count(self, name: str) -> int:
        return self._backend.count(name)

    def empty_tables(self, names) -> list[str]:
        """The tables among ``names`` that hold no row at all, in one query that reads at
        most one row of each (a count would scan a big table on PostgreSQL)."""
        names = list(dict.fromkeys(names))
        return self._backend.empty_tables(names) if names else []

    # loading -------------------------------------------------------------------------
    @_writes
    def load(
        self,
        name: str,
        data: pa.Table | pa.RecordBatchReader,
        *,
        rejected: int = 0,
        skipped: int = 0,
        columns: Sequence[str] | None = None,
        progress: Progress | None = None,
        rows: int | None = None,
        unique_keys: bool = False,
    ) -> LoadResult:
        """Insert or update ``data`` (already validated, canonical columns) by primary key.

        All or nothing: new extra columns, the rows and the watermark are written in one
        transaction. A column the store holds already keeps its type: a value that does
        not convert to it without loss (1.5 or "many" into whole numbers) raises
        :class:`ColumnTypeError` naming the column, the rows by key and both types
        (:func:`_convert` says what converts), and nothing is written; so does a new
        column whose name is longer than :data:`MAX_COLUMN_NAME`. The rows are staged in
        the store first (a stream of record batches
        is read once, batch by batch), and every check after that runs there, as SQL:
        a load of any size holds no more than the backend's memory (on DuckDB
        :func:`load_memory_limit`, beyond which it spills to disk).

        Parameters
        ----------
        name
            The canonical table.
        data
            The rows, keyed by the table's primary key: a table, or a stream of record
            batches (:func:`healthscore.sources.read.stream_source`).
        rejected, skipped
            Rows the reader set aside, reported in the result.
        columns
            The columns ``data`` supplies (the rest of its columns are NULL only because
            the file lacks them). A stored column not among them keeps its stored value
            on rows that exist already, and is NULL on new rows: loading a second file
            with other columns about the same keys adds them instead of wiping the
            first file's. None (default): every column is supplied and a stored column
            absent from ``data`` becomes NULL on the rows loaded.
        progress, rows
            ``progress(step, fraction)`` hears of each step; ``rows``, how many rows a
            stream holds, lets it say how far staging is. A first load reports the rows
            it writes from the thread that reads them (the caller's waits): ``progress``
            must be safe to call from another thread.
        unique_keys
            The caller has made sure no key occurs twice in ``data`` (the reader checks
            the keys of a file: :attr:`~healthscore.sources.read.SourceBatch.unique_keys`),
            so the store does not count distinct keys again (a pass over every key, the
            costliest check of a big load). Rows without a key are refused either way.

        Into an empty table (a first load) there is no staged copy: the rows are written
        in chunks of :data:`LOAD_CHUNK_ROWS`, each sorted by account (:func:`_cluster`),
        so memory holds two chunks (one written, the next read), and checked once written; on
        DuckDB into a table of the load's own that replaces the empty one at the end,
        elsewhere straight into it inside the transaction (:meth:`_first_load`). A
        failed check leaves the table empty either way.

        Examples
        --------
        >>> import pyarrow as pa, datetime as dt
        >>> s = connect("duckdb://")
        >>> day = pa.array([dt.datetime(2024, 1, 1)])
        >>> _ = s.load("accounts", pa.table({"account_id": ["a1"], "created_at": day, "x": [1]}))
        >>> b = pa.table({"account_id": ["a1"], "created_at": day, "y": [2]})
        >>> str(s.load("accounts", b, columns=["account_id", "created_at", "y"]))
        'accounts: 0 inserted, 1 updated, 0 unchanged, 0 rejected'
        >>> s.table("accounts").select("x", "y").to_pyarrow().to_pylist()
        [{'x': 1, 'y': 2}]
        """
        tdef = get_table(name)
        pk = tdef.primary_key
        have = self._check_columns(name, pk, data.schema)
        # the columns the store holds already in their stored types (an extra column's
        # values of another type refused, not rounded or cast to NULL)
        misfit: list[ColumnTypeError] = []  # raised while the driver reads the stream
        types = {c: ibis.dtype(t).to_pyarrow() for c, t in have.items()}
        data = _fitted(name, pk, data, types, misfit)
        extra = [f for f in data.schema if f.name not in have]
        target_cols = {**have, **{f.name: str(ibis.dtype(f.type)) for f in extra}}
        supplied = set(target_cols) if columns is None else {*columns, pk}
        kept = [c for c in have if c not in supplied]
        stage_name = f"_stage_{name}_{uuid.uuid4().hex[:8]}"
        scratch = [stage_name]
        step = progress or (lambda _step, _fraction: None)
        temp = self.con.supports_temporary_tables
        if rows is None and isinstance(data, pa.Table):
            rows = data.num_rows
        # clustered by account: the rescorer's queries about a few accounts then read
        # their row groups only (by account alone: a sort by account, time and key cost
        # a tenth more of a first load, and an account's rows sit together either way)
        order = _cluster(name, target_cols) or [*([tdef.time] if tdef.time else []), pk]
        stored = self.count(name)
        if stored == 0:
            with _load_errors(name, misfit), self._backend.memory_limit(load_memory_limit()):
                return self._first_load(
                    name, data, extra, order, step, rows, unique_keys, rejected, skipped
                )
        try:
            with _load_errors(name, misfit), self._backend.memory_limit(load_memory_limit()):
                # the staged copies are scratch: outside the transaction, dropped whatever
                # happens
                self._backend.stage(stage_name, _counted(data, step, rows), temp=temp)
                stage = _conform(self.con.table(stage_name), target_cols)
                step("checking keys", 0.0)
                n, batch_max = self._check_keys(name, pk, stage, tdef.time, unique_keys)
                # the accounts of the rows as they will be: a stored account where the
                # load does not supply one
                unknown = self._unknown_accounts(
                    name,
                    _with_stored(stage, self.con.table(name), pk, list(target_cols), kept)
                    if "account_id" in kept
                    else stage,
                )
                with self.transaction():
                    self._add_columns(name, extra)
                    step("comparing with the stored rows", 0.0)
                    target = self.con.table(name)
                    compared = [c for c in target_cols if c in supplied]
                    # one pass over the batch and the stored rows: the keys to write
                    # (new or changed), materialised, so that the counts, the delete
                    # and the insert read them instead of comparing again
                    scratch.append(f"{stage_name}_diff")
                    diff = self.con.create_table(
                        scratch[-1],
                        _differing(stage, target, pk, compared, self._backend.row_digest),
                        temp=temp,
                    )
                    inserted, updated = self._kinds(diff)
                    unchanged = n - inserted - updated
                    new_rows = stage.semi_join(diff, pk)
                    changed = diff.filter(diff["__kind"] == "changed").select(pk)
                    if kept and (inserted or updated):
                        # the stored values of the columns this load does not supply,
                        # read before any row is deleted
                        scratch.append(f"{stage_name}_merged")
                        merged = _with_stored(new_rows, target, pk, list(target_cols), kept)
                        new_rows = self.con.create_table(scratch[-1], merged, temp=temp)
                    if updated:
                        self._delete_keys(name, pk, changed)
                    if inserted or updated:
                        step(f"writing {inserted + updated:,} rows", 0.0)
                        self._backend.before_bulk_write(name, inserted + updated, stored)
                        self.con.insert(name, new_rows.order_by(order).select(*target_cols))
                    watermark = self._update_watermark(name, batch_max, inserted)
        finally:
            for table in scratch:
                self.con.drop_table(table, force=True)
        if inserted or updated:
            self._backend.analyze(name)  # the planner's row counts follow the data
        step("loaded", 1.0)
        return LoadResult(
            name, inserted, updated, unchanged, rejected, watermark, unknown, skipped=skipped
        )

    def _first_load(
        self,
        name: str,
        data: pa.Table | pa.RecordBatchReader,
        extra: list[pa.Field],
        order: list[str],
        step: Progress,
        rows: int | None,
        unique_keys: bool,
        rejected: int,
        skipped: int,
    ) -> LoadResult:
        """:meth:`load` into an empty table: the rows written in chunks sorted by
        ``order``, no staged copy, checked once written.

        Where a transaction holds what it writes in memory until it commits (DuckDB:
        about 100 bytes a row, beyond its memory limit: 100 M rows ran a load out of
        memory), the chunks go into a table of their own, each committed as it is
        written, and that table replaces the empty one in the transaction that ends the
        load; a failure drops it. Elsewhere they go straight into the table, inside the
        transaction. Either way a failed check or a stream that breaks off leaves the
        table empty."""
        tdef = get_table(name)
        pk = tdef.primary_key
        if isinstance(data, pa.Table):
            data = pa.RecordBatchReader.from_batches(data.schema, data.to_batches())
        rows_in = _counted(data, step, rows, "writing rows")
        order = [c for c in order if c in data.schema.names]
        beside = self._backend.loads_beside
        fresh = f"{_FRESH}{name}_{uuid.uuid4().hex[:8]}" if beside else name
        try:
            with self.transaction() if not beside else contextlib.nullcontext():
                if beside:
                    self._drop_leftovers(name)
                    self._backend.copy_empty(name, fresh)
                self._add_columns(fresh, extra)
                self._backend.before_bulk_write(fresh, max(rows or 0, 1), 0)
                self._backend.write_chunks(fresh, rows_in, order, LOAD_CHUNK_ROWS)
                step("checking keys", 0.0)
                target = self.con.table(fresh)
                n, batch_max = self._check_keys(name, pk, target, tdef.time, unique_keys)
                unknown = self._unknown_accounts(name, target)
                with self.transaction():
                    if beside:
                        self._backend.before_bulk_write(name, 1, 0)  # its index goes with it
                        self._backend.replace_table(name, fresh)
                    watermark = self._update_watermark(name, batch_max, n)
        finally:
            if beside:
                self.con.drop_table(fresh, force=True)
        if n:
            self._backend.analyze(name)  # the planner's row counts follow the data
        step("loaded", 1.0)
        return LoadResult(name, n, 0, 0, rejected, watermark, unknown, skipped=skipped)

    def _drop_leftovers(self, name: str) -> None:
        """Tables a first load of ``name`` wrote into and never dropped (the process was
        killed): nothing refers to them."""
        for table in self._backend.list_tables():
            if table.startswith(f"{_FRESH}{name}_"):
                self.con.drop_table(table, force=True)

    @_writes
    def prepare_appends(self, names: Sequence[str] | None = None) -> None:
        """Make the key indexes :meth:`append` uses (each once; seconds on a table of
        millions of rows), so that a service can pay for them when it starts rather than
        on its first batch."""
        for name in names or TABLES:
            self._backend.ensure_index(name, get_table(name).primary_key)

    @_writes
    def append(
        self, name: str, data: pa.Table, *, columns: Sequence[str] | None = None
    ) -> LoadResult:
        """:meth:`load` for a small batch into a big table: the same result (inserted,
        updated, unchanged by primary key; ``columns`` as there; the watermark kept),
        plus ``accounts``, the accounts it changed, without comparing with the whole table.

        The table gets an index on its key, made by the first append (seconds on a
        table of millions of rows, once). The batch is staged and joined with the stored
        rows of its keys in one query
        (which row is new, changed or the same; the stored account, and the stored
        values of the columns the batch does not supply); the changed rows are deleted
        and the new and changed ones inserted, with the watermark, in one transaction.
        The batch is in memory (a service's batch, thousands of rows), so its keys are
        checked there. The planner's statistics are left as they are (a batch barely
        moves them; the next :meth:`load` refreshes them).

        Examples
        --------
        >>> import pyarrow as pa, datetime as dt
        >>> s = connect("duckdb://")
        >>> day = pa.array([dt.datetime(2024, 1, 1)] * 2)
        >>> users = {"user_id": ["u1", "u2"], "account_id": ["a1", "a2"], "created_at": day}
        >>> rows = pa.table(users)
        >>> r = s.append("users", rows)
        >>> r.inserted, sorted(r.accounts)
        (2, ['a1', 'a2'])
        >>> moved = pa.table({"user_id": ["u1"], "account_id": ["a3"], "created_at": day[:1]})
        >>> r = s.append("users", moved)
        >>> r.updated, r.unchanged, sorted(r.accounts)
        (1, 0, ['a1', 'a3'])
        >>> s.append("users", moved).unchanged
        1
        """
        import pyarrow.compute as pc

        tdef = get_table(name)
        pk = tdef.primary_key
        have = self._check_columns(name, pk, data.schema)
        _check_batch_keys(name, pk, data.column(pk))
        types = {c: ibis.dtype(t).to_pyarrow() for c, t in have.items()}
        data = _fit(name, pk, data, types)  # as load: a value of another type refused
        extra = [f for f in data.schema if f.name not in have]
        target = pa.schema([pa.field(c, t) for c, t in types.items()] + extra)
        wanted = target.names if columns is None else {*columns, pk}
        supplied = [c for c in target.names if c in wanted]
        kept = [c for c in have if c not in supplied]
        # the batch in the store's column types, its absent columns NULL
        rows = pa.table(
            {
                f.name: data.column(f.name).cast(f.type)
                if f.name in data.schema.names
                else pa.nulls(data.num_rows, f.type)
                for f in target
            }
        )
        batch_max = None
        if tdef.time:
            now = pa.scalar(datetime.now(UTC).replace(tzinfo=None), pa.timestamp("us"))
            times = rows.column(tdef.time)
            batch_max = pc.max(pc.filter(times, pc.less_equal(times, now))).as_py()
        stage_name = f"_stage_{name}_{uuid.uuid4().hex[:8]}"
        staged = rows.select(supplied)
        with _load_errors(name):
            self._backend.ensure_index(name, pk)
            with self._backend.staged(stage_name, staged), self.transaction():
                self._add_columns(name, extra)
                dialect = self.con.dialect
                compare = _compare_text(name, pk, tuple(supplied), tuple(kept), dialect)
                keys = _literal_list(rows.column(pk).to_pylist(), dialect)
                sql = compare.replace(_STAGE, stage_name).replace(f'"{_KEYS}"', keys)
                found = self._backend.run_sql(sql)
                kind = found["kind"]
                # the rows to write, new and changed, with the stored values of the
                # columns the batch does not supply
                if kept:
                    at = {k: i for i, k in enumerate(found["k"].to_pylist())}
                    take = pa.array([at[k] for k in rows.column(pk).to_pylist()], pa.int64())
                    for c in kept:
                        i = rows.schema.get_field_index(c)
                        value = found[f"old_{c}"].take(take).cast(target.field(c).type)
                        rows = rows.set_column(i, c, value)
                rows = rows.filter(
                    pc.is_in(rows.column(pk), found["k"].filter(pc.not_equal(kind, "same")))
                )
                changed = found["k"].filter(pc.equal(kind, "changed")).to_pylist()
                inserted = pc.sum(pc.equal(kind, "new")).as_py() or 0
                unchanged = pc.sum(pc.equal(kind, "same")).as_py() or 0
                if changed:
                    self.delete_rows(name, {pk: changed})
                if rows.num_rows:
                    self._backend.insert(name, rows)
                watermark = self._update_watermark(name, batch_max, inserted)
        unknown = pc.sum(found["unknown"]).as_py() or 0
        touched = set(rows.column("account_id").to_pylist())
        touched |= set(found["_old_account"].filter(pc.equal(kind, "changed")).to_pylist())
        result = LoadResult(name, inserted, len(changed), unchanged, 0, watermark, unknown)
        result.accounts = sorted(a for a in touched if a is not None)
        return result

    def _check_columns(self, name: str, pk: str, schema: pa.Schema) -> dict[str, str]:
        """A key column, no new column whose name is longer than :data:`MAX_COLUMN_NAME`,
        and no column that differs from a stored one only by case; the stored columns
        and their types."""
        if pk not in schema.names:
            raise StoreError(f"{name}: the rows to load have no {pk} column")
        lowered: dict[str, str] = {}
        for col in schema.names:
            if col.lower() in lowered:
                raise StoreError(
                    f"{name}: columns {lowered[col.lower()]!r} and {col!r} differ only by case"
                )
            lowered[col.lower()] = col
        stored = self.columns(name)
        have = {c.lower(): c for c in stored}
        for col in schema.names:
            too_long = column_name_problem(col) if col not in stored else None
            if too_long:
                raise StoreError(
                    f"{name}: {too_long}; nothing was loaded",
                    hint="load it under a shorter name: --map '<its name>=<short name>'",
                )
            if col not in have.values() and col.lower() in have:
                raise StoreError(
                    f"{name}: column {col!r} differs from the stored column "
                    f"{have[col.lower()]!r} only by case",
                    hint=f"rename it, e.g. --map {col}={have[col.lower()]}",
                )
        return stored

    def _check_keys(
        self, name: str, pk: str, stage: ir.Table, time: str | None, unique: bool = False
    ) -> tuple[int, datetime | None]:
        """One row per key, in the store's SQL; the staged rows' count and latest time.

        ``unique``: the caller has made sure no key occurs twice; only rows without a key
        are looked for. The latest time leaves out scheduled dates in the future (an
        invoice's due date is not "data up to then").
        """
        key = stage[pk]
        now = datetime.now(UTC).replace(tzinfo=None)
        # one pass over the staged rows: counts, distinct keys and the latest time
        figures = {"n": stage.count(), "null_keys": key.isnull().sum()}
        if not unique:
            figures["keys"] = key.nunique()
        if time:
            figures["latest"] = stage[time].max(where=stage[time] <= ibis.literal(now))
        found = self._backend.to_arrow(stage.aggregate(**figures)).to_pylist()[0]
        if found["null_keys"]:
            raise StoreError(f"{name}: {found['null_keys']} rows have no {pk}; nothing was loaded")
        if not unique and found["keys"] != found["n"]:
            counts = stage.group_by(pk).aggregate(__n=stage.count())
            dups = counts.filter(counts["__n"] > 1)
            n_dups = self._backend.to_arrow(dups.count().name("n").as_table())["n"][0].as_py()
            shown = self._backend.to_arrow(dups.select(pk).order_by(pk).limit(20))[pk]
            text = ", ".join(repr(d) for d in shown.to_pylist()) + (" ..." if n_dups > 20 else "")
            raise StoreError(
                f"{name}: {n_dups} {pk} values occur more than once in one load: {text}",
                hint="each row needs its own key; nothing was loaded",
            )
        return found["n"] or 0, found.get("latest")

    def _unknown_accounts(self, name: str, stage: ir.Table) -> int:
        """How many rows name an account the accounts table does not hold (yet)."""
        if name == "accounts" or "account_id" not in stage.columns:
            return 0
        accounts = self.con.table("accounts").select(__known="account_id")
        rows = stage.filter(stage.account_id.notnull()).select("account_id")
        unknown = rows.anti_join(accounts, rows.account_id == accounts["__known"])
        return self._backend.to_arrow(unknown.count().name("n").as_table())["n"][0].as_py()

    def _kinds(self, diff: ir.Table) -> tuple[int, int]:
        """How many of the keys in ``diff`` (from :func:`_differing`) are new and changed."""
        counts = diff.group_by("__kind").aggregate(n=diff.count())
        found = self._backend.to_arrow(counts)
        got = dict(zip(found["__kind"].to_pylist(), found["n"].to_pylist(), strict=True))
        return got.get("new", 0), got.get("changed", 0)

    def _add_columns(self, name: str, fields: list[pa.Field]) -> None:
        for f in fields:
            column = sge.ColumnDef(
                this=sg.to_identifier(f.name, quoted=True),
                kind=self.con.compiler.type_mapper.from_ibis(ibis.dtype(f.type)),
            )
            table = sg.table(name, quoted=True)
            self._backend.statement(sge.Alter(this=table, kind="TABLE", actions=[column]))

    def _delete_keys(self, name: str, pk: str, keys: ir.Table) -> None:
        """Delete the rows of ``name`` whose key is among ``keys`` (a one-column query)."""
        where = sg.column(pk, quoted=True).isin(query=self.con.compiler.to_sqlglot(keys))
        self._backend.statement(sge.delete(sg.table(name, quoted=True), where=where))

    def delete_rows(self, table: str, where: Mapping[str, object]) -> None:
        """Delete the rows whose columns equal the given values (text or timestamps); a
        list of values matches any of them."""
        conds = []
        dialect = self.con.dialect
        for col, value in where.items():
            values = list(value) if isinstance(value, list | tuple | set) else [value]
            column = sg.column(col, quoted=True)
            # the list rendered at once (the live service deletes the current rows of
            # thousands of accounts a micro-batch under heavy ingest): the same text
            listed = sge.Var(this=_literal_list(values, dialect))
            conds.append(column.isin(listed) if values else sge.false())
        with self.writing():
            self._backend.statement(
                sge.delete(sg.table(table, quoted=True), where=sge.and_(*conds))
            )

    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside happen together or not at all; an inner block joins the outer.

        On DuckDB and PostgreSQL this is the backend's transaction. On a backend without
        transactions (Spark) the writes inside run one after another, and a failure
        part-way leaves the earlier ones in place; see :class:`~.backend.Backend` for how
        the store's writers recover from that (a rerun completes or replaces the work).

        Examples
        --------
        >>> s = connect("duckdb://")
        >>> try:
        ...     with s.transaction():
        ...         s.set_meta("owner", "cs-ops")
        ...         raise KeyboardInterrupt
        ... except KeyboardInterrupt:
        ...     pass
        >>> "owner" in s.meta()
        False
        """
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self.writing(), self._backend.transaction():
            yield

    def _update_watermark(
        self, name: str, batch_max: datetime | None, inserted: int
    ) -> datetime | None:
        """The latest timestamp ever loaded into ``name`` (from this batch and before)."""
        old = next((r for r in self._select_all(WATERMARKS) if r["table_name"] == name), None)
        now = datetime.now(UTC).replace(tzinfo=None)
        marks = [m for m in (batch_max, old and old["watermark"]) if m is not None]
        row = {"w": max(marks) if marks else None, "n": (old["rows"] if old else 0) + inserted}
        if old is not None:
            # one statement with its values (a service appends many times a second: a
            # delete and an Arrow insert of one row cost several times as much)
            values = {"watermark": row["w"], "rows": row["n"], "loaded_at": now}
            self._backend.update_row(WATERMARKS, values, ("table_name", name))
            return row["w"]
        self._backend.insert(
            WATERMARKS,
            pa.table(
                {
                    "table_name": [name],
                    "watermark": pa.array([row["w"]], pa.timestamp("us")),
                    "rows": [row["n"]],
                    "loaded_at": pa.array([now], pa.timestamp("us")),
                }
            ),
        )
        return row["w"]

    def watermarks(self) -> dict[str, datetime | None]:
        return {r["table_name"]: r["watermark"] for r in self._select_all(WATERMARKS)}

    def freshness(self, model, as_of: datetime) -> list[FreshnessWarning]:
        """Tables the model reads that are stale at ``as_of`` by their cadence
        (``model.cadence``): their latest data, or for slow-changing tables their last
        load, is longer before ``as_of`` than the cadence allows."""
        out = []
        marks = {r["table_name"]: r for r in self._select_all(WATERMARKS)}
        for name in model.tables_used():
            cadence = model.cadence(name)
            mark = marks.get(name)
            if cadence is None or mark is None:
                continue
            seen = mark["loaded_at"] if cadence.by == "load" else mark["watermark"]
            if seen is not None and as_of - seen > cadence.within:
                out.append(FreshnessWarning(name, seen, as_of, cadence))
        return out

    # executing -----------------------------------------------------------------------
    def execute(self, expr: ir.Table) -> pa.Table:
        """Run an expression through Ibis (one compile); the result as Arrow, in the
        expression's types on every backend.

        A failure in the backend becomes a :class:`ScoringError` naming the backend's
        reason, not a driver traceback.
        """
        return _typed(lambda: self._backend.to_arrow(expr), expr.schema().to_pyarrow())

    def compile(self, expr: ir.Table) -> str:
        """The SQL this backend runs for ``expr`` (for review and benchmarks)."""
        return self._backend.compile(expr)

    def prepare(self, expr: ir.Table) -> Prepared:
        """Compile ``expr`` once for :meth:`run_prepared`; its :func:`parameter` values
        are bound at each run (a plan kept and run many times, e.g. by the rescorer)."""
        return self._backend.prepare(expr)

    def run_prepared(self, prepared: Prepared, values: Mapping[str, object]) -> pa.Table:
        """Run a query from :meth:`prepare` with ``values`` for its parameters; the result
        as Arrow, in the expression's types (failures as for :meth:`execute`)."""
        missing = prepared.keys - set(values)
        if missing:
            raise ScoringError(f"values missing for parameters: {', '.join(sorted(missing))}")
        return _typed(
            lambda: self._backend.run_prepared(prepared, dict(values)),
            prepared.schema,
        )

    def cached_plan(
        self,
        key: Sequence[str],
        build: Callable[[], tuple[ir.Table, Any]],
        *,
        tables: Sequence[str] | None = None,
    ) -> tuple[Prepared, Any]:
        """:meth:`prepare` of the expression ``build()`` returns (with ``info``, what the
        caller needs to bind its parameters, as JSON), kept in this process
        (:data:`compiled_plans`, any backend) and in the user's cache
        (:mod:`healthscore.core.cache`) where the backend can run a plan from its text
        (DuckDB).

        ``key`` names everything the expression depends on besides the backend and the
        columns of the tables it reads (``tables``; None: every table of the store),
        which the key adds (:meth:`~.backend.Backend.schema_fingerprint`), as the user's
        cache adds healthscore's code: the same key on a store whose tables have the
        same columns finds the plan compiled before, whatever rows they hold, and
        ``build`` is not called (no expression is built; from the user's cache, Ibis is
        not even imported). A backend that cannot tell every table's columns
        (PostgreSQL with ``tables`` None) compiles on every call. Returns the plan,
        shared (never change it), and ``info``."""
        fingerprint = self._backend.schema_fingerprint(tables)
        if fingerprint is None:
            expr, info = build()
            return self.prepare(expr), info
        kept_key = (self._backend.name, fingerprint, *key)
        found = compiled_plans.get(kept_key)
        if found is not None:
            return found
        name = None
        if self._backend.keeps_text:
            name = cache.entry_key("plan", self._backend.name, fingerprint, *key)
            entry = cache.read(name)
            if isinstance(entry, dict):
                try:
                    found = Prepared.from_json(entry["plan"]), entry["info"]
                except (KeyError, TypeError, ValueError, pa.ArrowException):
                    pass  # an entry of another shape: compile again, and replace it
                else:
                    return compiled_plans.put(kept_key, found)
        expr, info = build()
        prepared = self.prepare(expr)
        compiled_plans.builds += 1
        if prepared.parts is not None:  # runs from its text: the tree need not be kept
            prepared = Prepared(None, prepared.schema, prepared.keys, prepared.parts)
            if name is not None:
                cache.write(name, {"plan": prepared.to_json(), "info": info})
        return compiled_plans.put(kept_key, (prepared, info))

    def execute_sql(self, sql: str) -> pa.Table:
        """Run SQL compiled by :meth:`compile`; lets a benchmark time compile and run apart.

        Code that has the expression runs it with :meth:`execute` instead.
        """
        return self._backend.run_sql(sql)


def _cluster(name: str, columns) -> list[str]:
    """The column a load clusters the rows it writes by: the account, in every table
    about accounts but ``accounts`` itself (whose rows are written by time and key).

    A columnar store keeps each column's smallest and largest value per block of rows
    (DuckDB: per row group of about 120,000 rows) and skips a block whose range cannot
    hold what a filter asks for. Rows written in time order put every account in every
    block, so a query about one account (the live service's rescorer) read the
    ``account_id`` of every stored event: about 200 ms on 10 M events. Written by
    account, an account's rows sit in one or two blocks and the same query reads those
    (a few ms). A query over everyone reads every block either way.
    """
    return ["account_id"] if name != "accounts" and "account_id" in columns else []


def _check_batch_keys(name: str, pk: str, keys: pa.ChunkedArray) -> None:
    """A batch in memory: every row has a key, and no key occurs twice."""
    import pyarrow.compute as pc

    if keys.null_count:
        raise StoreError(f"{name}: {keys.null_count} rows have no {pk}; nothing was loaded")
    counts = pc.value_counts(keys)
    twice = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
    if twice:
        text = ", ".join(repr(d) for d in twice[:20]) + (" ..." if len(twice) > 20 else "")
        raise StoreError(
            f"{name}: {len(twice)} {pk} values occur more than once in one batch: {text}",
            hint="each row needs its own key; nothing was loaded",
        )


#: the staged table's name in the cached text of :func:`_compare_text`
_STAGE = "__healthscore_stage__"
#: the start of the name of a table a first load writes into (see Store._first_load)
_FRESH = "_load_"
_KEYS = "__healthscore_keys__"


@functools.lru_cache(maxsize=256)
def _compare_text(name: str, pk: str, supplied: tuple, kept: tuple, dialect) -> str:
    """:func:`_compare_sql` as SQL text in ``dialect``, the staged table named
    :data:`_STAGE` (building the statement costs more than running it on a small batch)."""
    return _compare_sql(name, _STAGE, pk, list(supplied), list(kept)).sql(dialect)


def _compare_sql(
    name: str, stage: str, pk: str, supplied: list[str], kept: list[str]
) -> sge.Select:
    """Per staged row: its key ``k``; ``kind``, new, changed or same (its supplied
    columns against the stored row's); the stored ``_old_account`` and ``old_<c>`` of
    each ``kept`` column; ``unknown``, 1 when its account is not in the accounts table."""

    def col(c: str, t: str) -> sge.Column:
        return sg.column(c, table=t, quoted=True)

    same = [sge.NullSafeEQ(this=col(c, "s"), expression=col(c, "t")) for c in supplied if c != pk]
    kind = (
        sge.Case()
        .when(col(pk, "t").is_(sge.null()), sge.Literal.string("new"))
        .when(sge.and_(*same) if same else sge.true(), sge.Literal.string("same"))
        .else_(sge.Literal.string("changed"))
    )
    select = [
        col(pk, "s").as_("k"),
        kind.as_("kind"),
        col("account_id", "t").as_("_old_account"),
        *[col(c, "t").as_(f"old_{c}", quoted=True) for c in kept],
    ]
    query = sg.select(*select).from_(sg.table(stage, quoted=True).as_("s"))
    # the stored rows of the batch's keys, named as constants (:data:`_KEYS`, filled in per
    # batch) so the key index finds them without scanning the table (a join would)
    stored = sg.select("*").from_(sg.table(name, quoted=True))
    stored = stored.where(sg.column(pk, quoted=True).isin(sg.column(_KEYS, quoted=True)))
    query = query.join(stored.subquery("t"), on=col(pk, "s").eq(col(pk, "t")), join_type="left")
    if name == "accounts":
        return query.select(sge.Literal.number(0).as_("unknown"))
    account = col("account_id", "s" if "account_id" in supplied else "t")
    known = sg.select(sg.column("account_id", quoted=True)).distinct()
    known = known.from_(sg.table("accounts", quoted=True)).subquery("a")
    unknown = (
        sge.Case()
        .when(
            sge.and_(account.is_(sge.not_(sge.null())), col("account_id", "a").is_(sge.null())),
            sge.Literal.number(1),
        )
        .else_(sge.Literal.number(0))
    )
    query = query.join(known, on=account.eq(col("account_id", "a")), join_type="left")
    return query.select(unknown.as_("unknown"))


def _typed(run: Callable[[], pa.Table], want: pa.Schema) -> pa.Table:
    """A query's result in the expression's types ``want``, its failure told in words.

    Ibis already converts to the expression's types; a backend that types a literal its
    own way (DuckDB DECIMAL, PostgreSQL NUMERIC) is cast here. Drivers raise their own
    classes: a :class:`ScoringError` names the reason."""
    try:
        result = run()
        return result if result.schema.equals(want) else result.cast(want)
    except HealthscoreError:
        raise
    except Exception as e:
        stop = interruption(e)  # Ctrl-C under a query: DuckDB's "Query interrupted"
        if stop is not None:
            raise stop from None
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ScoringError(f"the store could not run the scoring query: {reason}") from e


#: dialects whose text literals only double a quote (standard SQL strings)
_PLAIN_QUOTES = frozenset({"duckdb", "postgres"})


def _literal_list(values: list, dialect) -> str:
    """``values`` as SQL literals separated by commas, rendered at once: ``.sql()`` of
    each literal makes a generator and copies the node, 0.1 s for 1,000 keys."""
    if dialect in _PLAIN_QUOTES and not any(isinstance(v, datetime) for v in values):
        # what sqlglot writes for these dialects (a quote doubled, nothing else escaped),
        # without its generator: 20-35 ms of a 1,000-row append
        return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
    text = sge.Literal.string  # looked up once: the lazy module costs a lookup a use
    listed = sge.Tuple(
        expressions=[_value(v) if isinstance(v, datetime) else text(str(v)) for v in values]
    )
    return sg.Dialect.get_or_raise(dialect).generate(listed, copy=False)[1:-1]


def _differing(
    stage: ir.Table,
    target: ir.Table,
    pk: str,
    compared: list[str],
    digest: Callable[[ir.Table, list[str]], ir.Value | None] = lambda _t, _c: None,
) -> ir.Table:
    """The staged keys that are new, or whose ``compared`` columns differ from the stored
    row's (NULL equal to NULL), with ``__kind`` ``new`` or ``changed``.

    Where the backend has a ``digest`` of a row's columns
    (:meth:`~healthscore.store.backend.Backend.row_digest`), the join carries that
    instead of every stored column. A column the load does not supply keeps its stored
    value (:func:`_with_stored`), so comparing only the supplied columns says the same as
    comparing whole rows."""
    others = [c for c in compared if c != pk]
    old = digest(target, others)
    if old is not None:
        stored = target.select(__key=target[pk], __hit=ibis.literal(True), __old=old)
        staged = stage.select(stage[pk], __new=digest(stage, others))
        j = staged.left_join(stored, staged[pk] == stored["__key"])
        all_same = j["__new"] == j["__old"]
    else:
        stored = target.select(
            __key=target[pk], __hit=ibis.literal(True), **{f"__old_{c}": target[c] for c in others}
        )
        j = stage.left_join(stored, stage[pk] == stored["__key"])
        same = [j[c].identical_to(j[f"__old_{c}"]) for c in others]
        all_same = ibis.and_(*same) if same else ibis.literal(True)
    kind = ibis.cases((j["__hit"].isnull(), "new"), (all_same, "same"), else_="changed")
    classified = j.select(j[pk], __kind=kind)
    return classified.filter(classified["__kind"] != "same")


def _with_stored(
    stage: ir.Table, target: ir.Table, pk: str, cols: list[str], kept: list[str]
) -> ir.Table:
    """The staged rows, with the ``kept`` columns taken from the stored row of the same key.

    A key not stored yet gets NULL there (a left join), as it would have anyway.
    """
    stored = target.select(__key=target[pk], **{f"__old_{c}": target[c] for c in kept})
    j = stage.left_join(stored, stage[pk] == stored["__key"])
    return j.select(*[j[f"__old_{c}"].name(c) if c in kept else j[c] for c in cols])


def _conform(stage: ir.Table, target: dict[str, str]) -> ir.Table:
    """Columns in the store's order and types; columns the file lacks become NULL."""
    columns = []
    for col, typ in target.items():
        want = ibis.dtype(typ)
        if col not in stage.columns:
            columns.append(ibis.null(want).name(col))
        elif stage[col].type() != want:
            columns.append(stage[col].cast(want).name(col))
        else:
            columns.append(stage[col])
    return stage.select(*columns)


class ColumnTypeError(StoreError):
    """Values a load cannot put in a stored column without changing them: an extra
    column holds the type of its first load (whole numbers, say), and a later load's
    values of that column do not convert to it without loss (``1.5``, ``"many"``).

    ``column``, the ``expected`` (stored) and ``found`` Arrow types, and ``misfits``,
    ``(position, key)`` of each refused row in the order of :attr:`problems` (position:
    the row's index in the load's rows, valid rows only)."""

    def __init__(self, message="", problems=None, hint=None, *, column="", expected=None,
                 found=None, misfits=()):  # fmt: skip
        self.column = column
        self.expected = expected
        self.found = found
        self.misfits = list(misfits)
        super().__init__(message, problems=problems, hint=hint)


def text_columns(columns: Mapping[str, str]) -> set[str]:
    """The names among ``columns`` (:meth:`Store.columns`: name to Ibis type) that hold
    text."""
    return {c for c, t in columns.items() if t.lstrip("!") == "string"}


def _kind(t: pa.DataType) -> str:
    """The kind of value an Arrow type holds, as :func:`_convert` compares them."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    if pa.types.is_boolean(t):
        return "boolean"
    return "null" if pa.types.is_null(t) else str(t)


def _one(t: pa.DataType) -> str:
    """One value of type ``t``, in words."""
    if pa.types.is_integer(t):
        return "a whole number"
    return {"number": "a number", "text": "text", "time": "a date or time",
            "boolean": "true or false"}.get(_kind(t), f"a {t} value")  # fmt: skip


def _convert(values: pa.Array, to: pa.DataType) -> pa.Array:
    """``values`` in type ``to`` when each converts without loss, else an Arrow error.

    Any value converts to text; a value to a type of its own kind when nothing is lost
    (a whole number to a decimal column, 8.0 to a whole-number one, never 1.5 nor a
    number out of the column's range); text to another kind when it reads as one
    ("9", "8.0", "2025-06-30T09:00:00Z"). Nothing else converts: a number is no time
    (Arrow would read it as seconds since 1970), true/false no number."""
    have, want = _kind(values.type), _kind(to)
    if have == "null" or want == "text" or have == want:
        return values.cast(to, safe=True)
    if have != "text":
        raise pa.ArrowInvalid(f"{values.type} values do not convert to {to}")
    try:
        return values.cast(to, safe=True)
    except pa.ArrowException:
        if len(values) > 1:  # a mixture of forms: each value in its own way
            return pa.concat_arrays([_convert(values.slice(i, 1), to) for i in range(len(values))])
        if pa.types.is_integer(to):  # "8.0"
            return values.cast(pa.float64(), safe=True).cast(to, safe=True)
        if want == "time":  # with an offset: "2025-06-30T09:00:00Z"
            return values.cast(pa.timestamp("us", "UTC"), safe=True).cast(to, safe=True)
        raise


def _fit(name: str, pk: str, data, stored: Mapping[str, pa.DataType], start: int = 0, *,
         to_text: bool = True):  # fmt: skip
    """``data`` (a table or a record batch) with each column the store holds already in
    the stored type (:func:`_convert`); columns it does not hold as they are.
    ``to_text``: convert to a text column too (else the caller's SQL does). A value
    that does not convert raises :class:`ColumnTypeError` naming the column, the rows
    (by key; ``start``: the position of ``data``'s first row in the load) and the types."""
    arrays, fields = [], []
    for i, f in enumerate(data.schema):
        values, to = data.column(i), stored.get(f.name)
        if to is not None and f.type != to and (to_text or _kind(to) != "text"):
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            try:
                values = _convert(values, to)
            except (pa.ArrowException, ValueError, OverflowError):
                raise _misfits(name, pk, data, f.name, to, start) from None
            f = pa.field(f.name, to)
        arrays.append(values)
        fields.append(f)
    schema = pa.schema(fields)
    if schema.equals(data.schema):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    return pa.Table.from_arrays(arrays, schema=schema)


def _misfits(name: str, pk: str, data, column: str, to: pa.DataType, start: int):
    """The :class:`ColumnTypeError` of ``data``'s values of ``column`` that do not
    convert to ``to``."""
    values = data.column(column)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    keys = data.column(pk)
    bad = []
    for i in range(len(values)):
        if values[i].is_valid:
            try:
                _convert(values.slice(i, 1), to)
            except (pa.ArrowException, ValueError, OverflowError):
                bad.append(i)
    found = values.type
    holds = _one(to)
    problems = [
        Problem(
            f"{pk} {keys[i].as_py()!r}: does not fit the column",
            column=column,
            got=_as_text(values[i].as_py()),
            expected=f"{holds}, as the column holds since its first load",
        )
        for i in bad
    ]
    n = len(bad)
    rows = "row" if n == 1 else "rows"
    return ColumnTypeError(
        f"{name}: column {column!r} holds {_many(to)} ({to}); {n} {rows} of this load "
        f"{'holds a value' if n == 1 else 'hold values'} that {'does' if n == 1 else 'do'} not "
        f"convert to it without loss (found: {_many(found)}, {found}), nothing was loaded",
        problems,
        hint=f"a column keeps the type of its first load: send {holds} there, or these "
        f"values under another name (e.g. --map '{column}={column}_2')",
        column=column,
        expected=to,
        found=found,
        misfits=[(start + i, keys[i].as_py()) for i in bad],
    )


def _many(t: pa.DataType) -> str:
    """Values of type ``t``, in words."""
    if pa.types.is_integer(t):
        return "whole numbers"
    return {"number": "numbers", "text": "text", "time": "dates and times",
            "boolean": "true/false values"}.get(_kind(t), f"{t} values")  # fmt: skip


def _as_text(value) -> str:
    """A refused value as an error shows it."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _fitted(name: str, pk: str, data, stored: Mapping[str, pa.DataType], caught: list):
    """:func:`_fit` of a load's rows: a table at once, a stream batch by batch as it is
    read (text columns left to the load's SQL, as before). The driver reading the
    stream words an error raised in it its own way: the error is also put in
    ``caught``, for :func:`_load_errors` to raise as it is."""
    if isinstance(data, pa.Table):
        return _fit(name, pk, data, stored, to_text=False)
    schema = pa.schema(
        pa.field(f.name, stored[f.name])
        if f.name in stored and f.type != stored[f.name] and _kind(stored[f.name]) != "text"
        else f
        for f in data.schema
    )
    if schema.equals(data.schema):
        return data

    def batches() -> Iterator[pa.RecordBatch]:
        done = 0
        for batch in data:
            try:
                yield _fit(name, pk, batch, stored, done, to_text=False)
            except ColumnTypeError as e:
                caught.append(e)
                raise
            done += batch.num_rows

    return pa.RecordBatchReader.from_batches(schema, batches())


@contextmanager
def _load_errors(name: str, caught: Sequence[HealthscoreError] = ()) -> Iterator[None]:
    """A load that fails in the backend or its input stream (out of memory, no disk left
    to spill to, a stream that breaks off) says so in our words: nothing was loaded.
    ``caught``: errors of ours the stream raised, which the driver reading it wraps in
    its own (raised as they are)."""
    try:
        yield
    except HealthscoreError:
        raise
    except Exception as e:  # drivers and Arrow raise their own classes; name the reason
        if caught:
            raise caught[0] from None
        if disk_reason(e) is not None:
            raise  # a full or read-only disk: Store.writing names the store and what to do
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        hint = None
        if "memory" in reason.lower() or "space" in reason.lower():
            hint = (
                "a load holds at most $HEALTHSCORE_LOAD_MEMORY in memory (now "
                f"{load_memory_limit()}) and spills the rest to disk beside the store: "
                "free disk space there, or raise the limit"
            )
        raise StoreError(f"{name}: the load failed, nothing was loaded: {reason}", hint=hint) from e


def _counted(
    data: pa.Table | pa.RecordBatchReader,
    step: Progress,
    rows: int | None,
    doing: str = "staging rows",
) -> pa.RecordBatchReader:
    """``data`` as a stream of record batches that reports how many have been read
    (``doing``: what is done with them)."""
    if isinstance(data, pa.Table):
        data = pa.RecordBatchReader.from_batches(data.schema, data.to_batches())

    def batches() -> Iterator[pa.RecordBatch]:
        done = 0
        step(doing, 0.0)
        for batch in data:
            yield batch
            done += batch.num_rows
            step(f"{doing} ({done:,})", done / rows if rows else 0.0)

    return pa.RecordBatchReader.from_batches(data.schema, batches())


def load_memory_limit() -> str | None:
    """How much memory a load may hold in DuckDB (each connection it uses), beyond which
    it spills to disk: ``$HEALTHSCORE_LOAD_MEMORY`` (e.g. ``4GB``; ``none`` for DuckDB's
    own default), else ``LOAD_MEMORY``."""
    value = os.environ.get("HEALTHSCORE_LOAD_MEMORY", LOAD_MEMORY).strip()
    return None if value.lower() in ("", "none") else value
