"""The service's lock on its one store connection is granted in the order it was asked for:
a thread that releases it and asks again at once waits behind the threads already waiting
(an ingest batch written, then the next batch's turn, could pass the rescorer's write
again and again under load: CI saw three batches pass it, where one was the rule).
"""

from __future__ import annotations

import threading
import time

from healthscore.service.state import ServiceState


def _state() -> ServiceState:
    return ServiceState(settings=None, store=None, model=None)  # only its lock is used


def test_a_waiting_thread_gets_the_store_before_the_one_that_released_it_asks_again():
    lock = _state().lock
    order: list[str] = []

    def waiter() -> None:
        with lock:
            order.append("waiter")

    lock.acquire()
    t = threading.Thread(target=waiter)
    t.start()
    deadline = time.monotonic() + 30
    while not lock._queue and time.monotonic() < deadline:  # until the waiter is in line
        time.sleep(0.01)
    assert lock._queue, "the waiter never asked for the lock"
    for _ in range(50):  # release and ask again at once, as batch after batch does
        lock.release()
        lock.acquire()
        order.append("holder")
    lock.release()
    t.join(10)
    assert order.index("waiter") == 0, order[:5]


def test_the_lock_is_reentrant_and_a_thread_that_gives_up_waiting_leaves_no_gap():
    lock = _state().lock
    with lock, lock:  # a transaction inside a store_access: the same thread again
        pass
    got: list[str] = []
    lock.acquire()
    late = threading.Thread(target=lambda: got.append(str(lock.acquire(timeout=0.2))))
    late.start()
    late.join(5)
    assert got == ["False"]  # gave up waiting
    after = threading.Thread(target=lambda: (lock.acquire(), got.append("after"), lock.release()))
    after.start()
    deadline = time.monotonic() + 30
    while not lock._queue and time.monotonic() < deadline:
        time.sleep(0.01)
    lock.release()
    after.join(5)
    assert got == ["False", "after"]  # the one that gave up did not hold the line


def test_only_the_owner_may_release_it():
    import pytest

    lock = _state().lock
    with pytest.raises(RuntimeError):
        lock.release()
