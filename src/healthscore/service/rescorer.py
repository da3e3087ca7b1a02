"""The rescorer: touched accounts rescored in micro-batches into ``current_scores``;
everyone rescored daily, the midnight row appended to history.

Place in the flow: a background thread of ``service/`` over ``engine``; it takes the
accounts :meth:`ServiceState.touched` marked, runs the scoring queries through
:meth:`ServiceState.reading` (its own connection on DuckDB: requests and ingest batches
go on meanwhile), and holds the store only while it writes the rows, never while it
builds them in Python.

- **Micro-batches.** The thread waits for marked accounts, gathers more until the
  oldest mark is ``settings.rescore_every`` seconds old (under heavy ingest for longer,
  see below), takes them
  all and rescores only them, on every
  scorecard of the model file, as of :meth:`ServiceState.now` (an event of this
  morning counts this morning). Scoring runs a plan compiled once per model version and
  scorecard (:class:`healthscore.engine.plan.ScorePlan`), with the account ids and dates
  bound at each run: no expression is built or compiled per event. Each account's
  trend class and 30-day change are recomputed with its new score as the latest point
  of its stored history (:func:`healthscore.engine.current.batch_trend_rows`), so a
  fall that makes a rapid decline shows as one at once; that query too is compiled
  once per model version, scorecard and batch size (up to 16 accounts; a larger
  batch runs one query compiled for any number, its accounts passed as lists).
- **Fixed costs of a small batch.** Once the plans are built the heap that holds them
  is exempt from Python's full collections (:func:`_keep_heap`): a full collection was
  the p99 of a one-account rescore. (Small batches run on DuckDB's two threads: one
  thread spent less CPU but took longer, 32-33 ms against 21 ms a one-account rescore
  on a quiet machine; measured in bench/README.md.)
- **Heavy ingest.** When the last micro-batch held more than :data:`PACE_ACCOUNTS`
  accounts and more than that are marked again, the thread gathers for as long as that
  batch took (at most :data:`MAX_GATHER` seconds): a batch of thousands of accounts
  costs about what the plan of every account costs, whatever their number, so rescoring
  back to back would take a whole core from ingest for little; gathering, it takes about
  half, and each account waits at most about two batches. Under light load (fewer
  marked accounts) it gathers ``settings.rescore_every`` as before.
- **Daily.** At 00:00 UTC (and once at start-up when ``current_scores`` is empty, holds
  another model version, or the day's midnight is missing from history), with
  ``settings.daily_rescore``: the midnight scores of everyone are appended to history
  (as ``healthscore history`` stores them; scored by the same compiled plan of every
  account as the current scores, run at midnight then now), the trend classes are read
  from that history, and every account's current score is rewritten; time-driven
  metrics (days since the last event, sliding windows, days to renewal) move without
  any write.
- **Errors** are logged and kept (:attr:`Rescorer.last_error`, shown by
  ``GET /v1/status``); the accounts of a failed batch are marked again and retried after
  a pause; the thread lives on.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

from healthscore.service.state import ServiceState

log = logging.getLogger(__name__)

#: seconds the thread waits for marked accounts before it looks at the clock again
IDLE_WAIT = 0.5
#: seconds to pause after a failed batch before its accounts are tried again
RETRY_PAUSE = 1.0
#: the account slots whose plans are built at start-up (see engine.plan.SLOTS)
WARM_SLOTS = (1, 4)
#: the larger slots, built one at a time while the rescorer is idle (building them all at
#: start-up delayed the first micro-batch; built on first use, each delayed the events of
#: that batch by its compile: seconds at the 10,000-account benchmark's (b));
#: ``settings.idle_builds`` off: built on first use
IDLE_SLOTS = (16, 64, 256)
#: seconds to wait after a failed daily rescore before trying it again
DAILY_RETRY = 60.0
#: a micro-batch of more accounts than this, with as many marked again, is heavy ingest:
#: the next one gathers as long as it took (the largest plan of a few accounts is 256)
PACE_ACCOUNTS = 256
#: the longest a micro-batch gathers under heavy ingest, in seconds
MAX_GATHER = 10.0


def _keep_heap() -> None:
    """Collect the garbage of the plans just built, then exempt what is left (the plans,
    the model, the modules: hundreds of thousands of objects) from Python's collector:
    a full collection walked them all, 260-410 ms in one micro-batch in 120-150 (load
    11-14), the p99 of a one-account rescore. Only garbage in cycles among them would
    stay, until :meth:`Rescorer.stop` gives them back to the collector."""
    gc.collect()
    gc.freeze()


def _wall() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Batch:
    """One rescoring pass: when it ended, how many accounts, how long it took."""

    at: datetime
    accounts: int
    seconds: float
    lag: float | None = None  # from the oldest mark of the batch to its rows written
    everyone: bool = False

    def to_dict(self) -> dict:
        return {
            "at": self.at.isoformat(),
            "accounts": self.accounts,
            "seconds": round(self.seconds, 4),
            "lag_seconds": None if self.lag is None else round(self.lag, 4),
            "everyone": self.everyone,
        }


class Rescorer:
    """The background rescoring of one running service."""

    def __init__(self, state: ServiceState):
        self.state = state
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._plans: dict[tuple[str, str], object] = {}  # (version, scorecard) -> ScorePlan
        self._trend_plans: dict[tuple[str, str], object] = {}  # ... -> BatchTrends
        self._trends: dict[str, dict[str, dict]] = {}  # scorecard -> account -> trend row
        self._daily_done: datetime | None = None  # the midnight last rescored
        self._daily_not_before = 0.0  # monotonic time; after a failed daily rescore
        self.last_batch: Batch | None = None
        self.last_daily: Batch | None = None
        self.last_error: dict | None = None
        self.batches = 0
        self.rescored = 0
        self.failures = 0
        self.warmed = False  # the plans of small micro-batches are built
        self._idle_builds: list[tuple[str, int]] | None = None  # (scorecard, slots) left
        # the micro-batch under way: (its accounts, monotonic time of its oldest mark)
        self._under_way: tuple[int, float] | None = None
        self._current_made = False  # current_scores made: a micro-batch only writes rows

    # the thread ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the background thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="healthscore-rescorer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop it, finishing the micro-batch under way."""
        self._stop.set()  # the thread sees it within IDLE_WAIT seconds
        if self._thread is not None:
            self._thread.join(60)
            self._thread = None
        gc.unfreeze()  # its plans (see _keep_heap) collectable again once dropped

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if not self._guarded(self._startup, "start-up rescore"):
            self._daily_not_before = time.monotonic() + DAILY_RETRY
        if self.state.settings.warm_up:
            self._guarded(self.warm, "warm-up")
        while not self._stop.is_set():
            if self._daily_due():
                if not self._guarded(lambda: self.rescore_everyone(daily=True), "daily rescore"):
                    self._daily_not_before = time.monotonic() + DAILY_RETRY
            if not self.state.wait_touched(IDLE_WAIT):
                if self.state.settings.idle_builds:
                    self._guarded(self.warm_one_more, "warm-up")
                continue
            gather = self.gather_left()
            if gather:
                self._stop.wait(gather)  # gather a micro-batch
            age = self.state.oldest_touch_age()
            ids = self.state.take_touched()
            if ids and not self._guarded(lambda i=ids, a=age: self.rescore(i, a), "micro-batch"):
                self.state.touched(ids)  # tried again after a pause
                self._stop.wait(RETRY_PAUSE)

    def _guarded(self, job, what: str) -> bool:
        """Run ``job``; a failure is logged and kept for /v1/status, never raised."""
        try:
            job()
            return True
        except Exception as e:  # the thread must outlive any one failure
            self.failures += 1
            self._plans.clear()  # rebuilt on the next batch, from the store as it is then
            self._trend_plans.clear()
            self.last_error = {
                "at": _wall().isoformat(),
                "during": what,
                "error": f"{type(e).__name__}: {getattr(e, 'message', None) or e}",
                "trace": traceback.format_exception_only(type(e), e)[-1].strip(),
            }
            log.exception("rescorer: %s failed", what)
            return False

    # scheduling ----------------------------------------------------------------------
    def gathering(self) -> float:
        """Seconds to gather marked accounts before taking the next micro-batch:
        ``settings.rescore_every``, or under heavy ingest as long as the last batch took
        (see the module's notes)."""
        pace = self._pace()
        return self.state.settings.rescore_every if pace is None else pace

    def _pace(self) -> float | None:
        """Under heavy ingest (the last batch held more than :data:`PACE_ACCOUNTS`
        accounts and as many are marked again) the pause before the next batch: as long
        as the last batch took, at least ``rescore_every``, at most :data:`MAX_GATHER`;
        otherwise None."""
        last = self.last_batch
        if last is None or last.accounts <= PACE_ACCOUNTS:
            return None
        if self.state.pending_rescore() <= PACE_ACCOUNTS:
            return None
        return max(self.state.settings.rescore_every, min(last.seconds, MAX_GATHER))

    def gather_left(self) -> float:
        """Seconds left to gather before taking the next micro-batch. Under light load
        :meth:`gathering` counts from the oldest mark: accounts marked while the batch
        before was being rescored have gathered already, and are taken at once (they
        waited for that whole batch; gathering again after it added ``rescore_every`` to
        each of their waits). Under heavy ingest the pause counts from now (the pacing
        that leaves ingest half the CPU)."""
        pace = self._pace()
        if pace is not None:
            return pace
        every = self.state.settings.rescore_every
        return max(0.0, every - (self.state.oldest_touch_age() or 0.0))

    def _midnight(self) -> datetime:
        return self.state.now().replace(hour=0, minute=0, second=0, microsecond=0)

    def _daily_due(self) -> bool:
        if not self.state.settings.daily_rescore or time.monotonic() < self._daily_not_before:
            return False
        return self._daily_done != self._midnight()

    def _startup(self) -> None:
        """Rescore everyone at start-up when the current scores cannot be trusted;
        otherwise read the trend classes the micro-batches carry."""
        from healthscore.engine.current import trend_rows
        from healthscore.engine.history import ensure_tables, stored_dates
        from healthscore.store import current

        if not self.state.settings.daily_rescore:
            return
        midnight = self._midnight()
        stale = False
        for name in self.state.model.scorecard_names():
            card = self.state.model.scorecard(name)
            with self.state.store_access() as store:
                ensure_tables(store)  # a store never given history has no scores table
                found = current.versions(store, name)
                missing_midnight = midnight not in stored_dates(store, card)
            if set(found) != {card.version} or missing_midnight:
                stale = True
        if stale:
            self.rescore_everyone(daily=True)
            return
        for name in self.state.model.scorecard_names():
            card = self.state.model.scorecard(name)
            with self.state.store_access() as store:
                self._trends[name] = trend_rows(store, card, self.state.now())
        self._daily_done = midnight

    def warm(self) -> None:
        """Build the plans small micro-batches use before the first event needs them,
        and make ``current_scores`` where it is missing (a table made after a plan's
        statement was prepared has it planned again, once: better before)."""
        self._ensure_current()
        for name in self.state.model.scorecard_names():
            for slots in WARM_SLOTS:
                if self._stop.is_set():  # stopping: no plan is needed any more
                    return
                self._build(name, slots)
        self._refresh()
        self.warmed = True
        _keep_heap()

    def warm_one_more(self) -> None:
        """Build one plan of a larger slot (:data:`IDLE_SLOTS`) not built yet: called
        while no account is marked, so an event waits at most for one build."""
        if not self.warmed:
            return
        if self._idle_builds is None:
            names = self.state.model.scorecard_names()
            self._idle_builds = [(n, slots) for slots in IDLE_SLOTS for n in names]
        if self._idle_builds:
            try:
                self._build(*self._idle_builds[0])
                if len(self._idle_builds) == 1:  # the last: plan the others again, once
                    self._refresh()
                _keep_heap()
            finally:  # counted as left until built (or failed: not tried again)
                self._idle_builds.pop(0)

    def plans_to_build(self) -> int:
        """How many plans are left for :meth:`warm` and :meth:`warm_one_more` to build."""
        names = self.state.model.scorecard_names()
        left = 0 if self.warmed or not self.state.settings.warm_up else len(WARM_SLOTS) * len(names)
        if self.state.settings.idle_builds:
            idle = self._idle_builds
            left += len(IDLE_SLOTS) * len(names) if idle is None else len(idle)
        return left

    def _build(self, name: str, slots: int) -> None:
        """The score plan of scorecard ``name`` for ``slots`` accounts, and its trend
        query where history is stored."""
        from healthscore.engine.history import SCORES

        plan = self._plan(self.state.model.scorecard(name))
        with self.state.reading() as store:
            plan.prepare(store, slots)
            if store.has_table(SCORES):
                self._trend_plan(plan.model).prepare(store, slots)

    def _refresh(self) -> None:
        """Have the kept statements of every plan built so far planned again now, once
        after a series of builds (:meth:`warm`, the last of :meth:`warm_one_more`'s):
        each build changes the catalog the statements before it were planned on, and
        planning them all again after every build made the builds quadratic in their
        number, while a build of another scorecard left this one's stale anyway."""
        model = self.state.model
        with self.state.reading() as store:
            for name in model.scorecard_names():
                if self._stop.is_set():  # stopping: no plan is needed any more
                    return
                self._plan(model.scorecard(name)).refresh(store)

    def _ensure_current(self) -> None:
        from healthscore.store import current

        if not self._current_made:
            with self.state.store_access() as store:
                current.ensure_table(store)
            self._current_made = True

    # rescoring -----------------------------------------------------------------------
    def _plan(self, card):
        from healthscore.engine.plan import ScorePlan

        key = (card.version, card.scorecard_name)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = ScorePlan(card)
        return plan

    def _trend_plan(self, card):
        from healthscore.engine.current import BatchTrends

        key = (card.version, card.scorecard_name)
        plan = self._trend_plans.get(key)
        if plan is None:
            plan = self._trend_plans[key] = BatchTrends(card)
        return plan

    def rescore(self, ids: set[str], age: float | None = None) -> Batch:
        """Rescore ``ids`` on every scorecard as of now into ``current_scores``."""
        from healthscore.engine.current import batch_trend_rows, current_rows
        from healthscore.store import current

        t0 = time.monotonic()
        self._under_way = (len(ids), t0 - (age or 0.0))
        try:
            scored = []
            for name in self.state.model.scorecard_names():
                card = self.state.model.scorecard(name)
                plan = self._plan(card)
                with self.state.reading() as store:
                    wide = plan.run(store, self.state.now(), ids)
                    # with the new scores
                    trends = batch_trend_rows(store, card, wide, self._trend_plan(card))
                scored.append((card, current_rows(card, wide, trends)))
            # every scorecard's rows in one transaction, and the batch counted before a
            # reader can see them: whoever sees the new rows sees the batch done
            self._ensure_current()
            with self.state.store_access() as store:
                with store.transaction():
                    for card, rows in scored:
                        name = card.scorecard_name
                        current.replace(store, card.version, name, rows, ids, ensure=False)
                seconds = time.monotonic() - t0
                batch = Batch(_wall(), len(ids), seconds, (age or 0.0) + seconds)
                self.last_batch = batch
                self.batches += 1
                self.rescored += len(ids)
        finally:
            self._under_way = None
        return batch

    def rescore_everyone(self, *, daily: bool = True) -> Batch:
        """Append the midnight of today to history (``daily``), read the trend classes
        and rewrite every account's current score, on every scorecard."""
        from healthscore.engine.current import current_rows, trend_rows
        from healthscore.engine.history import backfill
        from healthscore.store import current

        t0 = time.monotonic()
        midnight = self._midnight()
        accounts = 0
        for name in self.state.model.scorecard_names():
            card = self.state.model.scorecard(name)
            plan = self._plan(card)
            if daily:
                # the midnight's rows from the plan of every account (those of score() at
                # that date), compiled once for both runs, and outside the store's lock:
                # ``backfill_dates`` compiled the dates query and the evidence notes too
                with self.state.reading() as store:
                    at_midnight = plan.run(store, midnight)
                with self.state.store_access() as store:
                    backfill(store, card, [midnight], lambda d, rows=at_midnight: rows)
            with self.state.reading() as store:
                self._trends[name] = trend_rows(store, card, self.state.now())
                wide = plan.run(store, self.state.now())
            rows = current_rows(card, wide, self._trends[name])
            with self.state.store_access() as store:
                current.replace(store, card.version, name, rows, None)
            accounts = max(accounts, rows.num_rows)
        if daily:
            self._daily_done = midnight
        batch = Batch(_wall(), accounts, time.monotonic() - t0, everyone=True)
        self.last_daily = batch
        return batch

    def status(self) -> dict:
        """What ``GET /v1/status`` shows of the rescorer."""
        age = self.state.oldest_touch_age()
        under_way = self._under_way
        if under_way is not None:  # its marks are older than any not yet taken
            age = time.monotonic() - under_way[1]
        return {
            "running": self.alive,
            "warm": self.warmed,
            "queue": self.state.pending_rescore(),
            "rescoring": under_way[0] if under_way is not None else 0,
            "lag_seconds": round(age, 4) if age is not None else 0.0,
            "last_batch": self.last_batch.to_dict() if self.last_batch else None,
            "last_daily": self.last_daily.to_dict() if self.last_daily else None,
            "batches": self.batches,
            "accounts_rescored": self.rescored,
            "failures": self.failures,
            "plans_to_build": self.plans_to_build(),
            "last_error": self.last_error,
            "daily_rescore": self.state.settings.daily_rescore,
        }
