"""Drives dispatch on the event loop: one worker per queue, one coroutine per attempt in flight.

A queue's loop claims only what may be sent at once: no more than its token bucket, its free
concurrency and the free connection slots of its destination allow (``Dispatcher.slots``). Tasks that
cannot be sent yet stay QUEUED in the store; the loops waiting for a slot are served in turn.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Hashable

from local_runner.attempt_log import AttemptLog
from local_runner.clock import Clock
from local_runner.dispatch import Dispatcher
from local_runner.engine.attempts import Failure, FinishedAttempt, Outcome, decide
from local_runner.engine.delivery import build_request
from local_runner.engine.duplicates import DuplicateDeliveries
from local_runner.engine.pacing import QueuePacer
from local_runner.errors import StoreError
from local_runner.grace import finish_or_cancel
from local_runner.http_client import HttpError, Origin, origin_of
from local_runner.loop_batch import LoopBatch, Retry
from local_runner.model import Queue, QueueState, Task
from local_runner.oidc import TokenIssuer
from local_runner.service import TasksService

log = logging.getLogger("local_runner.dispatch")
#: Most tasks one store transaction claims.
CLAIM_BATCH = 100
#: How often expired tombstones are dropped.
PRUNE_INTERVAL = 60.0
#: Longest pause of a queue's loop after a store error, in seconds.
MAX_ERROR_BACKOFF = 5.0
#: How long the first outcome waits for others to share its store transaction, in seconds (the
#: attempt's dispatch already ended: this delays only when its task is deleted or queued again).
RECORD_WAIT = 0.005
#: Shortest wait of a queue's loop for its next token, in seconds: a queue paced at a high rate claims
#: the tokens of this interval together (one wake-up and one store transaction for several tasks), never
#: more than its token bucket allows. A bucket holds at least 0.2 s of tokens (``derive_burst_size``;
#: 100 at 500/s, the highest rate), so none is lost to a full bucket while the loop waits.
MIN_TOKEN_WAIT = 0.05


@functools.lru_cache(maxsize=1024)
def _destination(url: str) -> Origin | None:
    """Where ``url`` goes (``None``: nowhere, nothing will be sent); the URLs of a queue's tasks repeat."""
    try:
        return origin_of(url)
    except HttpError:
        return None


def error_backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th store error in a row (50 ms doubling, at most 5 s)."""
    return min(MAX_ERROR_BACKOFF, 0.05 * 2.0 ** min(failures, 10))


def next_claim_time(pacer: QueuePacer, now: float) -> float | None:
    """When a queue's loop claims again after its tokens ran out (``None``: when an attempt ends).

    At its next token, but not sooner than :data:`MIN_TOKEN_WAIT` (one claim for the tokens of that
    interval).
    """
    next_start = pacer.next_start_time(now)
    if next_start is None or next_start <= now:
        return next_start
    return max(next_start, now + MIN_TOKEN_WAIT)


class _QueueWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.wake = asyncio.Event()
        self.pacer: QueuePacer | None = None
        self.task: asyncio.Task[None] | None = None
        #: Where the queue's last attempt went: the destination whose free slots its claims wait for.
        self.origin: Origin | None = None


class _Slot:
    """The connection slot an attempt holds (``held``), taken for ``origin`` (``None``: not known yet)."""

    __slots__ = ("held", "origin")

    def __init__(self, held: bool, origin: Origin | None) -> None:
        self.held = held
        self.origin = origin


def _resolve(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


class Scheduler:
    """Claims due tasks within each queue's limits and dispatches them."""

    def __init__(
        self,
        service: TasksService,
        dispatcher: Dispatcher,
        issuer: TokenIssuer,
        clock: Clock,
        duplicates: DuplicateDeliveries | None = None,
    ) -> None:
        self.service = service
        self.duplicates = duplicates or DuplicateDeliveries()
        self.store = service.store
        self.dispatcher = dispatcher
        self.issuer = issuer
        self.clock = clock
        self.slots = dispatcher.slots
        #: How to wake each waiter in the slots' line (a queue's loop, an attempt).
        self._wakers: dict[Hashable, Callable[[], None]] = {}
        self._hand_out_scheduled = False
        self._workers: dict[str, _QueueWorker] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        #: Outcomes waiting for :meth:`_record_pending`, each with the future its attempt awaits.
        self._outcomes: LoopBatch[FinishedAttempt, bool] = LoopBatch(
            lambda finished: self.store.finish_attempts(finished),  # the store's method when it writes
            gather_s=RECORD_WAIT,
            retry=Retry((StoreError,), self._refused, self._pause_recording),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        self._attempt_log = AttemptLog(clock)
        #: Called with each attempt's claimed task and outcome once it is recorded (the console's stats).
        self.outcome_observers: list[Callable[[Task, Outcome], None]] = []
        service.listener = self

    # -- Listener (called by the service, possibly from another thread) --------------------------

    def _on_loop(self, callback: object, *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            callback(*args)  # type: ignore[operator]
        else:
            loop.call_soon_threadsafe(callback, *args)  # type: ignore[arg-type]

    def queue_changed(self, queue_name: str) -> None:
        """Wake (or start) the queue's worker, which reads the queue again."""
        self._on_loop(self._wake_queue, queue_name)

    def run_now(self, task: Task) -> None:
        """Dispatch a task claimed by RunTask, outside the queue's pacing."""
        self._on_loop(self._run_claimed, task)

    def queue_deleted(self, queue_name: str) -> None:
        """Forget the queue's pacing, so a queue created again under the name starts afresh."""
        self._on_loop(self._forget_pacer, queue_name)

    def _forget_pacer(self, queue_name: str) -> None:
        worker = self._workers.get(queue_name)
        if worker is not None:
            worker.pacer = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover attempts interrupted by a crash, then start a worker per queue."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        recovered = self.store.recover_in_flight()
        if recovered:
            log.warning("re-queued %d task(s) that were in flight when the runner stopped", recovered)
        for queue in self.store.list_queues(None):
            self._wake_queue(queue.name)
        self._background.append(asyncio.create_task(self._prune_forever()))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give attempts in flight ``grace`` seconds, then cancel them.

        A cancelled attempt stays DISPATCHING in the store and is dispatched again after a restart.
        """
        self._stopping = True
        for worker in self._workers.values():
            if worker.task is not None:
                worker.task.cancel()
        for task in self._background:
            task.cancel()
        pending = [w.task for w in self._workers.values() if w.task] + self._background
        await asyncio.gather(*pending, return_exceptions=True)
        loop = asyncio.get_running_loop()
        ends = loop.time() + grace
        if self._attempts:
            await finish_or_cancel(self._attempts, grace)
            self._attempts = {attempt for attempt in self._attempts if not attempt.done()}  # never started
        writer = self._outcomes.writer  # the outcomes of finished attempts: written within the same grace
        if writer is not None:
            await finish_or_cancel([writer], max(0.0, ends - loop.time()))
        await self._attempt_log.close()

    def _wake_queue(self, name: str) -> None:
        if self._stopping:
            return
        worker = self._workers.get(name)
        if worker is None or worker.task is None or worker.task.done():
            worker = worker or _QueueWorker(name)
            self._workers[name] = worker
            self._wakers[worker] = worker.wake.set
            worker.task = asyncio.create_task(self._run_queue(worker), name=f"queue:{name}")
        worker.wake.set()

    # -- the per-queue loop ----------------------------------------------------------------------

    async def _run_queue(self, worker: _QueueWorker) -> None:
        failures = 0
        while True:
            worker.wake.clear()
            try:
                queue = self.store.get_queue(worker.name)
                if queue is None:
                    self._workers.pop(worker.name, None)
                    self._wakers.pop(worker, None)
                    self._stop_waiting(worker)
                    return
                now = self.clock.now()
                if worker.pacer is None:
                    worker.pacer = QueuePacer(queue.rate_limits, now)
                elif worker.pacer.limits != queue.rate_limits:
                    worker.pacer.reconfigure(queue.rate_limits, now)
                wake_at = self._dispatch_due(worker, worker.pacer, queue, now)
            except Exception as error:  # a store error must not end the queue's dispatching for good
                self._stop_waiting(worker)
                failures += 1
                delay = error_backoff(failures)
                if isinstance(error, StoreError):
                    log.error("queue %s: %s; trying again in %gs", worker.name, error, delay)
                else:
                    log.exception("queue %s: dispatch loop failed; trying again in %gs", worker.name, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if wake_at is not None and wake_at <= now:
                await asyncio.sleep(0)
                continue
            await self.clock.sleep_until(wake_at, worker.wake)

    def _dispatch_due(
        self, worker: _QueueWorker, pacer: QueuePacer, queue: Queue, now: float
    ) -> float | None:
        """Start what may start now; return when to look again (``None``: when woken).

        Claims at most what the bucket, the queue's free concurrency and the free slots of its
        destination allow; with no free slot the loop waits in the slots' line and is woken at its turn.
        """
        if queue.state is not QueueState.RUNNING:
            self._stop_waiting(worker)
            return None
        budget = pacer.budget(now)
        if budget <= 0:
            self._stop_waiting(worker)
        else:
            wanted = min(budget, CLAIM_BATCH)
            origin = worker.origin
            granted = self._take(worker, origin, wanted)
            if granted:
                try:
                    claimed = self.store.claim_due(queue.name, now, granted)
                except BaseException:
                    self._release(origin, granted)
                    raise
                if len(claimed) < granted:  # the due backlog is empty: no more slots needed
                    self._stop_waiting(worker)
                    self._release(origin, granted - len(claimed))
                pacer.started(len(claimed), now)
                for task in claimed:
                    self._spawn(task, worker, pacer, _Slot(True, origin))
                if len(claimed) == CLAIM_BATCH:
                    return now  # more may be due and allowed at once
                if len(claimed) == wanted:  # the bucket or the concurrency ran out, not the due tasks
                    self._stop_waiting(worker)
                    return next_claim_time(pacer, now)
                if len(claimed) == granted:
                    return None  # more may be due: woken at the loop's turn for a slot
        next_due = self.store.next_schedule_time(queue.name)
        if next_due is None or next_due > now:
            self._stop_waiting(worker)
            return next_due
        if self.slots.waits(worker):
            return None  # due tasks wait for a connection slot
        return next_claim_time(pacer, now)

    def _run_claimed(self, task: Task) -> None:
        if self._stopping:  # stays DISPATCHING: dispatched again after the restart
            return
        worker = self._workers.get(task.queue_name)
        pacer = worker.pacer if worker else None
        if pacer is not None:
            pacer.started(1, self.clock.now(), paced=False)
        self._spawn(task, worker, pacer, _Slot(False, None))  # outside pacing, but it needs a slot

    # -- connection slots ------------------------------------------------------------------------

    def _stop_waiting(self, waiter: Hashable) -> None:
        if self.slots.waits(waiter):
            self.slots.withdraw(waiter)
            self._hand_out_soon()

    def _take(self, waiter: Hashable, origin: Origin | None, wanted: int) -> int:
        granted = self.slots.take(waiter, origin, wanted)
        self._hand_out_soon()  # those it left slots for, or let go ahead of it, may proceed
        return granted

    def _release(self, origin: Origin | None, count: int = 1) -> None:
        self.slots.release(origin, count)
        self._hand_out_soon()

    def _hand_out_soon(self) -> None:
        """Wake, once this turn of the loop is over, the waiters whose turn for a slot has come."""
        if not self._hand_out_scheduled and self._loop is not None and self.slots.waiting:
            self._hand_out_scheduled = True
            self._loop.call_soon(self._hand_out)

    def _hand_out(self) -> None:
        self._hand_out_scheduled = False
        for waiter in self.slots.turns():
            waker = self._wakers.get(waiter)
            if waker is None:  # gone: it must not hold up the line
                self._stop_waiting(waiter)
            else:
                waker()

    async def _take_slot(self, slot: _Slot, origin: Origin) -> None:
        """Wait in line for a slot to ``origin`` (an attempt whose claim took none for it)."""
        key = object()
        loop = asyncio.get_running_loop()
        try:
            while not self._take(key, origin, 1):
                turn: asyncio.Future[None] = loop.create_future()
                self._wakers[key] = functools.partial(_resolve, turn)
                await turn
        finally:
            self._wakers.pop(key, None)
            self._stop_waiting(key)
        slot.held, slot.origin = True, origin

    def _let_go(self, slot: _Slot) -> None:
        if slot.held:
            slot.held = False
            self._release(slot.origin)

    def _spawn(self, task: Task, worker: _QueueWorker | None, pacer: QueuePacer | None, slot: _Slot) -> None:
        loop = self._loop  # given, not looked up: in Python 3.11 each lookup is a getpid() system call
        assert loop is not None, "Scheduler.start() was not awaited"
        self._attempts.add(loop.create_task(self._attempt(task, worker, pacer, slot)))

    # -- one attempt -----------------------------------------------------------------------------

    async def _attempt(
        self, task: Task, worker: _QueueWorker | None, pacer: QueuePacer | None, slot: _Slot
    ) -> None:
        """Send one attempt, then hand its outcome to the recorder, which finishes it (:meth:`_recorded`)."""
        started = self.clock.now()
        outcome: Outcome | None = None
        duplicate: Outcome | None = None
        handed_over = False
        wake = pacer is None
        try:
            queue = self.store.get_queue(task.queue_name)
            if queue is None:
                return
            try:
                request = build_request(task, queue, self.issuer.mint, started)
                started = await self._hold_slot(slot, worker, request.url)
                outcome = await self.dispatcher.send(request, task.dispatch_deadline)
                if self.duplicates.chosen(task.queue_name):  # the same request again; the first answer counts
                    duplicate = await self.dispatcher.send(request, task.dispatch_deadline)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a bug must not strand the task in DISPATCHING
                log.exception("dispatching %s failed inside the runner", task.name)
                outcome = Outcome(
                    self.clock.now(), failure=Failure.UNREACHABLE, detail=f"runner error: {error}"
                )
            finally:
                self._let_go(slot)
            if pacer is not None:  # the request is over: its dispatch no longer counts against the queue
                self._dispatch_ended(task, pacer, outcome)
                pacer = None
            finished = decide(task, outcome, queue.retry_config, tombstone=self.service.task_tombstone)
            recorded = finished.duplicated(duplicate.http_status) if duplicate is not None else finished
            latency = outcome.response_time - started
            self._outcomes.put(
                recorded, functools.partial(self._recorded, task, outcome, finished, latency, wake)
            )
            handed_over = True
        except Exception:
            log.exception(
                "recording an attempt of %s failed; it is dispatched again after a restart", task.name
            )
        finally:
            self._attempts.discard(asyncio.current_task(self._loop))
            self._let_go(slot)
            if pacer is not None:  # ended before its request did
                self._dispatch_ended(task, pacer, outcome)
            if not handed_over:  # an attempt that ended in error leaves its task due: the loop looks
                self._wake_queue(task.queue_name)

    def _recorded(
        self,
        task: Task,
        outcome: Outcome,
        finished: FinishedAttempt,
        latency: float,
        wake: bool,
        stored: bool | BaseException,
    ) -> None:
        """Finish an attempt once the recorder wrote its outcome (or failed to): observers, log line, wake-up.

        Called by the recorder's writer (``LoopBatch.put``), so an attempt needs no second wake-up of its
        coroutine; ``stored`` is ``False`` when the task was deleted meanwhile.
        """
        done = False
        try:
            if isinstance(stored, BaseException):
                log.error(
                    "recording an attempt of %s failed; it is dispatched again after a restart",
                    task.name,
                    exc_info=stored,
                )
                return
            for observe in self.outcome_observers if stored else ():
                observe(task, outcome)
            done = finished.deletes and stored
            self._attempt_log.finished(task, outcome, finished, latency, stored)
        except Exception:
            log.exception("finishing an attempt of %s failed", task.name)
        finally:
            # A recorded retry (or an attempt that ended in error) may be due at once: the loop looks.
            if wake or not done:
                self._wake_queue(task.queue_name)

    def _dispatch_ended(self, task: Task, pacer: QueuePacer, outcome: Outcome | None) -> None:
        """Count the attempt's dispatch as over, and adapt the rate to its answer.

        The queue's loop sleeps until its next token when it is paced by rate alone: the end of a
        dispatch wakes it only if it freed concurrency the loop waits for or changed the rate.
        """
        status = outcome.http_status if outcome else None
        throttles = bool(outcome and outcome.throttles)
        wake = pacer.in_flight >= pacer.limits.max_concurrent_dispatches or throttles or pacer.throttle < 1.0
        pacer.finished(status, throttles, self.clock.now())
        if wake:
            self._wake_queue(task.queue_name)

    async def _hold_slot(self, slot: _Slot, worker: _QueueWorker | None, url: str) -> float:
        """Make sure ``slot`` is held for the destination of ``url``; returns when the wait ended.

        A slot taken for another destination (the queue's previous one, or none known yet) moves to
        this one if it has room, or is given back. A URL with no destination needs none: nothing will
        be sent.
        """
        origin = _destination(url)
        if slot.held and slot.origin != origin:
            if origin is not None and self.slots.move(slot.origin, origin):
                slot.origin = origin
                self._hand_out_soon()  # the queue's loop may claim for the destination it now knows
            else:
                self._let_go(slot)
        if origin is not None:
            if worker is not None:
                worker.origin = origin
            if not slot.held:
                await self._take_slot(slot, origin)
        return self.clock.now()

    def _refused(self, finished: FinishedAttempt, error: Exception, first: bool) -> None:
        """Log the store's refusal of an outcome: once as an error, then quietly while it lasts."""
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "recording attempt %d of %s failed: %s; trying again every %gs at most",
            finished.task.dispatch_count,
            finished.task.name,
            error,
            MAX_ERROR_BACKOFF,
        )

    async def _pause_recording(self, failures: int) -> None:
        await self.clock.sleep_until(self.clock.now() + error_backoff(failures))

    # -- housekeeping and test aids --------------------------------------------------------------

    async def _prune_forever(self) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + PRUNE_INTERVAL)
            try:
                self.store.prune(self.clock.now())
            except Exception:
                log.exception("dropping expired tombstones failed; trying again later")

    def pacer(self, queue_name: str) -> QueuePacer | None:
        """The queue's pacing (attempts in flight, effective rate), once its worker has run."""
        worker = self._workers.get(queue_name)
        return worker.pacer if worker is not None else None

    def waits_for_slot(self, queue_name: str) -> bool:
        """Whether the queue's loop waits in line for a connection slot before it claims."""
        worker = self._workers.get(queue_name)
        return worker is not None and self.slots.waits(worker)

    @property
    def in_flight(self) -> int:
        """Attempts currently in flight."""
        return len(self._attempts)
