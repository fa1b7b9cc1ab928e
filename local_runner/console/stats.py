"""Per-queue numbers for the console: attempt outcomes kept in memory, backlog counts from the store.

Every number is cheap to read: outcomes live in a ring buffer of per-second slots per queue (filled by
the scheduler as attempts end), counts come from capped, indexed queries. Time is passed in.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from local_runner.engine.attempts import Outcome
from local_runner.engine.delivery import cloud_tasks_headers
from local_runner.engine.pacing import QueuePacer
from local_runner.model import Queue, Task
from local_runner.service import TasksService
from local_runner.store import TaskCounts

#: Seconds of outcomes kept per queue (the chart's span).
WINDOW = 600
#: Tasks whose response excerpts are kept (the most recently answered), and attempts per task.
EXCERPT_TASKS = 1000
EXCERPTS_PER_TASK = 20
#: Counts above this are shown as "10,000+" (each count reads at most one more index entry).
COUNT_CAP = 10_000


@dataclass
class _Slot:
    second: int = -1
    delivered: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Exchange:
    """What one attempt sent and got back, as far as the console keeps it."""

    #: The ``X-CloudTasks-*`` headers it sent.
    sent: Mapping[str, str]
    #: The first bytes of the response body.
    excerpt: bytes


@dataclass(frozen=True)
class Bucket:
    """Outcomes that ended within one chart bar."""

    delivered: int
    failed: int


class OutcomeLog:
    """What the console keeps of finished attempts, in memory.

    Per queue, delivered (2xx) and failed attempts per second for the last :data:`WINDOW` seconds; per
    task (the :data:`EXCERPT_TASKS` most recently answered), each attempt's :class:`Exchange`.
    """

    def __init__(self) -> None:
        self._slots: dict[str, list[_Slot]] = {}
        self._exchanges: OrderedDict[str, deque[Exchange]] = OrderedDict()

    def record(self, task: Task, outcome: Outcome) -> None:
        """Count one recorded attempt of a claimed task (a scheduler outcome observer)."""
        self._count(task.queue_name, outcome)
        exchanges = self._exchanges.pop(task.name, None) or deque(maxlen=EXCERPTS_PER_TASK)
        exchanges.append(Exchange(cloud_tasks_headers(task), outcome.excerpt))
        self._exchanges[task.name] = exchanges
        if len(self._exchanges) > EXCERPT_TASKS:
            self._exchanges.popitem(last=False)

    def exchanges(self, task_name: str, attempts: int) -> list[Exchange | None]:
        """The exchanges of a task's last ``attempts`` recorded attempts, oldest first.

        The history's latest attempts are the latest recorded here (a task name used again starts a new
        history; attempts of an earlier runner process or forgotten ones are ``None``).
        """
        kept = list(self._exchanges.get(task_name, ()))[-attempts:] if attempts else []
        missing: list[Exchange | None] = [None] * (attempts - len(kept))
        return missing + kept

    def _count(self, queue_name: str, outcome: Outcome) -> None:
        second = int(outcome.response_time)
        ring = self._slots.get(queue_name)
        if ring is None:
            ring = self._slots[queue_name] = [_Slot() for _ in range(WINDOW)]
        slot = ring[second % WINDOW]
        if slot.second != second:
            slot.second, slot.delivered, slot.failed = second, 0, 0
        if outcome.succeeded:
            slot.delivered += 1
        else:
            slot.failed += 1

    def buckets(self, queue_name: str, now: float, span: int, width: int) -> list[Bucket]:
        """``span // width`` bars of ``width`` seconds each, oldest first, the last one ending at ``now``."""
        ring = self._slots.get(queue_name)
        end = int(now)
        bars: list[Bucket] = []
        for start in range(end - span + 1, end + 1, width):
            delivered = failed = 0
            if ring is not None:
                for second in range(start, start + width):
                    slot = ring[second % WINDOW]
                    if slot.second == second:
                        delivered += slot.delivered
                        failed += slot.failed
            bars.append(Bucket(delivered, failed))
        return bars


@dataclass(frozen=True)
class QueueStats:
    """What the queues page shows for one queue."""

    counts: TaskCounts
    #: Attempts that ended in the last minute, and how many of them failed.
    dispatched_last_minute: int
    failed_last_minute: int
    #: How long the earliest due task has waited, in seconds (``None``: nothing due).
    oldest_due_age: float | None
    #: Dispatches per second the queue allows now (below the configured rate while throttled).
    effective_rate: float
    #: Attempts in flight according to the scheduler.
    in_flight: int
    chart: list[Bucket]


#: The chart: the last 10 minutes in bars of 20 seconds.
CHART_SPAN = 600
CHART_BAR = 20


def queue_stats(
    service: TasksService, outcomes: OutcomeLog, pacer: QueuePacer | None, queue: Queue, now: float
) -> QueueStats:
    """The stats of one queue at ``now``: a few capped, indexed reads and the outcome ring buffer."""
    counts = service.task_counts(queue.name, COUNT_CAP + 1)
    next_due = service.next_schedule_time(queue.name)
    minute = outcomes.buckets(queue.name, now, 60, 60)[0]
    rate = pacer.available_rate() if pacer is not None else queue.rate_limits.max_dispatches_per_second
    return QueueStats(
        counts=counts,
        dispatched_last_minute=minute.delivered + minute.failed,
        failed_last_minute=minute.failed,
        oldest_due_age=max(0.0, now - next_due) if next_due is not None and next_due <= now else None,
        effective_rate=rate,
        in_flight=pacer.in_flight if pacer is not None else counts.dispatching,
        chart=outcomes.buckets(queue.name, now, CHART_SPAN, CHART_BAR),
    )
