"""SIGTERM as Ctrl-C: a command asked to stop rolls its work back and says so.

Place in the flow: ``core``, under everything. The store wraps each PostgreSQL statement
in :func:`interruptible` (psycopg then cancels the running query in the server, as on
Ctrl-C), and the CLI wraps a whole command in it (DuckDB rolls the write under way back
and the store closes properly, instead of the process ending with its write-ahead log
left behind). :func:`interruption` finds the Ctrl-C behind a driver's own error.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from healthscore.errors import Interrupted

_depth = 0


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises :class:`~healthscore.errors.Interrupted` inside: psycopg then
    cancels the running query in the server, as it does on Ctrl-C (KeyboardInterrupt).

    Only in the main thread (where Python runs signal handlers), and only where nobody
    else handles SIGTERM (a web server has its own shutdown).
    """
    global _depth
    if _depth or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, stop)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGTERM, previous)


def interruption(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (:class:`~healthscore.errors.Interrupted`) behind ``error``:
    itself, or one it was raised from or while handling (DuckDB answers an interrupt
    under a query with ``RuntimeError: Query interrupted``, raised while handling it)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
