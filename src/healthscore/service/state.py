"""The running service's state: the one open store, the lock around it, the model, and
the accounts waiting to be rescored.

Place in the flow: under every route of ``service/``. A DuckDB file has one writer
process; while the service runs it is that process, and this module holds its only
connection. One connection serves one statement at a time, so every use of the store
goes through :meth:`ServiceState.store_access` (a re-entrant lock granted first come,
first served: :class:`FairLock`): HTTP requests, run on Uvicorn's worker threads, and the
rescorer's thread take turns.

The rescorer reads through :meth:`ServiceState.reading` instead: on DuckDB a second
connection to the same database (``Store.reader``), so scoring does not wait for a batch
being written nor a batch for scoring; its writes go through ``store_access`` as any.
Ingest batches take the store through :meth:`ServiceState.ingest_access`, one batch
waiting for it at a time, so the rescorer's write (and any other request) waits for at
most the batch being written and one more, not for every batch queued behind it.
Requests that only read a few committed rows (one account's current score) go through
:meth:`ServiceState.request_reading`, a third such connection: under heavy ingest a
``GET /v1/accounts/{id}`` waited for the ingest batches queued on the store's lock.

Writers call :meth:`ServiceState.touched` with the accounts a write changed; the
rescorer waits on :meth:`ServiceState.take_touched` and rescores them in micro-batches.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from healthscore.service.settings import Settings

if TYPE_CHECKING:
    from healthscore.model import Model
    from healthscore.store import Store


class FairLock:
    """A re-entrant lock granted in the order it was asked for.

    ``threading.RLock`` is not: a thread that releases it and asks again at once (the
    next ingest batch, a request after a request) usually gets it back before a thread
    already waiting wakes up, so the rescorer's write could wait behind several batches
    under load. Here each ``acquire`` takes its place in a queue; the owner may take the
    lock again (a transaction inside a ``store_access``); a thread that gives up waiting
    (``timeout``) or is interrupted leaves the queue."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()
        self._owner: int | None = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._count += 1
                return True
            place = object()
            self._queue.append(place)
            try:
                deadline = None if timeout < 0 else time.monotonic() + timeout
                while self._owner is not None or self._queue[0] is not place:
                    left = None if deadline is None else deadline - time.monotonic()
                    if not blocking or (left is not None and left <= 0):
                        self._queue.remove(place)
                        self._cond.notify_all()  # the next in line may be first now
                        return False
                    self._cond.wait(left)
            except BaseException:
                self._queue.remove(place)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._owner, self._count = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._count -= 1
            if self._count == 0:
                self._owner = None
                self._cond.notify_all()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _ReadConnection:
    """A connection of the service's own for reads (:meth:`ServiceState.reading`,
    :meth:`ServiceState.request_reading`): made on first use by ``Store.reader``, used by
    one thread at a time. Where the backend has none (``reader`` gives the store itself)
    the store is taken as :meth:`ServiceState.store_access` takes it."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    store: Store | None = None

    @contextmanager
    def use(self, state: ServiceState) -> Iterator[Store]:
        with self.lock:
            if self.store is None:
                with state.lock:
                    self.store = state.store.reader()
            if self.store is state.store:
                with state.lock:
                    yield state.store
            else:
                yield self.store

    def close(self, main: Store) -> None:
        with self.lock:
            if self.store is not None and self.store is not main:
                self.store.close()
            self.store = None


@dataclass
class ServiceState:
    """What every request of one running service shares."""

    settings: Settings
    store: Store
    model: Model  # the whole model file (scorecard views: model.scorecard(name))
    lock: FairLock = field(default_factory=FairLock)  # first come, first served
    _reader: _ReadConnection = field(default_factory=_ReadConnection)  # see reading()
    _ingest_turn: threading.Lock = field(default_factory=threading.Lock)  # ingest_access
    _request_reader: _ReadConnection = field(default_factory=_ReadConnection)
    #: queries compiled once for requests, run on the requests' connection (holding
    #: :meth:`request_reading`): key -> ``Store.prepare``'s result
    request_plans: dict = field(default_factory=dict)
    _touched: set[str] = field(default_factory=set)
    _touched_cond: threading.Condition = field(default_factory=threading.Condition)
    _first_touch: float | None = None  # monotonic time of the oldest mark not yet taken

    @classmethod
    def open(cls, settings: Settings) -> ServiceState:
        """Open the store (created on first use) and load the model."""
        from healthscore.api import model_path
        from healthscore.model import load_model
        from healthscore.store import connect

        model = load_model(model_path(settings.model))
        store = connect(settings.db)
        return cls(settings, store, model)

    def close(self) -> None:
        self._reader.close(self.store)
        self._request_reader.close(self.store)
        with self.lock:
            self.store.close()

    @contextmanager
    def store_access(self) -> Iterator[Store]:
        """The store, for one statement or one transaction, with no other thread in it."""
        with self.lock:
            yield self.store

    @contextmanager
    def ingest_access(self) -> Iterator[Store]:
        """:meth:`store_access` for an ingest batch: batches take turns for it first, so
        at most one of them waits on the store's lock at a time, beside the rescorer
        and other requests. Under heavy ingest (four clients posting at once) the
        rescorer's write of a micro-batch waited for every queued batch (p50 190-340 ms
        at load 5-8, a quarter of the batch); now for one at most, and the batches are
        written one after another as before."""
        with self._ingest_turn, self.lock:
            yield self.store

    @contextmanager
    def reading(self) -> Iterator[Store]:
        """The store for reads that need not wait for requests (the rescorer's scoring
        queries): on DuckDB a second connection to the same database, which sees what
        was committed when each statement starts and is used by one thread at a time;
        on other backends the store itself, taken as :meth:`store_access` takes it."""
        with self._reader.use(self) as store:
            yield store

    @contextmanager
    def request_reading(self) -> Iterator[Store]:
        """:meth:`reading` for requests: a connection of its own (on DuckDB), so a
        request that reads committed rows does not wait for ingest batches or the
        rescorer's writes holding the store, nor for the rescorer's scoring. It reads
        only (a table may be missing: the caller then goes through
        :meth:`store_access`); requests take turns on it."""
        with self._request_reader.use(self) as store:
            yield store

    def now(self) -> datetime:
        """The service's "now" (UTC, naive, whole seconds): ``settings.now`` when fixed,
        else the clock. Current scores are as of now, so an event of this morning counts
        this morning (CLI commands default to today 00:00 UTC)."""
        if self.settings.now is not None:
            return self.settings.now
        return datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    # accounts to rescore -------------------------------------------------------------
    def touched(self, accounts: Iterable[str]) -> None:
        """Mark accounts a write changed; the rescorer picks them up."""
        with self._touched_cond:
            before = len(self._touched)
            self._touched.update(a for a in accounts if a is not None)
            if len(self._touched) != before:
                if not before:
                    self._first_touch = time.monotonic()
                self._touched_cond.notify_all()

    def take_touched(self, timeout: float | None = None) -> set[str]:
        """The accounts marked since the last call (waiting up to ``timeout`` seconds for
        one when there are none); the set is emptied."""
        with self._touched_cond:
            if not self._touched and timeout:
                self._touched_cond.wait(timeout)
            out, self._touched = self._touched, set()
            self._first_touch = None
            return out

    def wait_touched(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a marked account; whether there is one
        (nothing is taken)."""
        with self._touched_cond:
            if not self._touched:
                self._touched_cond.wait(timeout)
            return bool(self._touched)

    def pending_rescore(self) -> int:
        """How many accounts are marked and not yet rescored."""
        with self._touched_cond:
            return len(self._touched)

    def oldest_touch_age(self) -> float | None:
        """Seconds since the oldest mark not yet taken was made (None: nothing marked)."""
        with self._touched_cond:
            return None if self._first_touch is None else time.monotonic() - self._first_touch
