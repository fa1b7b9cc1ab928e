"""A task store held in memory: fast, and gone with the process (tests, runs without a data dir)."""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from local_runner.errors import TASK_EXISTS, TASK_TOMBSTONED, AlreadyExists
from local_runner.model import NO_RESPONSE_STATUS, Attempt, Queue, Task, TaskState, parse_queue_name
from local_runner.store.base import FinishedAttempt, TaskCounts, TaskStore, replayed_task

#: A heap entry: (schedule_time, insertion seq, task name). Stale entries are skipped lazily.
_Entry = tuple[float, int, str]
_Store = TypeVar("_Store", bound=type[TaskStore])


#: Methods that only read one dict entry (atomic): no lock needed.
_LOCK_FREE = frozenset({"get_queue"})


def _synchronized(cls: _Store) -> _Store:
    """Run every TaskStore method of ``cls`` under the instance's ``_lock`` (but :data:`_LOCK_FREE`)."""

    def locked(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(self, *args, **kwargs)

        return call

    for name in TaskStore.__abstractmethods__ - _LOCK_FREE:
        setattr(cls, name, locked(getattr(cls, name)))
    return cls


def _queue_of(task_name: str) -> str:
    return task_name.rpartition("/tasks/")[0]


@_synchronized
class MemoryTaskStore(TaskStore):
    """Dicts plus, per queue, a heap of QUEUED tasks by (schedule time, insertion order).

    Every method holds one lock, so the runner's loop and other threads (tests calling the service)
    can share it; the model objects are frozen and stored as is.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._counter = itertools.count(1)  # never restarted, so no id is ever reused
        self.reset()

    def reset(self) -> None:  # noqa: D102 - documented in TaskStore
        self._queues: dict[str, Queue] = {}
        self._queue_tombstones: dict[str, float] = {}
        self._tasks: dict[str, dict[str, Task]] = {}
        self._seq: dict[str, int] = {}
        self._heaps: dict[str, list[_Entry]] = {}
        self._task_tombstones: dict[str, tuple[str, float]] = {}
        self._history: dict[str, list[Attempt]] = {}
        #: IAM policy per queue, as JSON text: what is read back is a copy, as from a file.
        self._iam_policies: dict[str, str] = {}

    # -- queues ----------------------------------------------------------------------------------

    def put_queue(self, queue: Queue) -> None:  # noqa: D102
        self._queues[queue.name] = queue

    def get_queue(self, name: str) -> Queue | None:  # noqa: D102
        return self._queues.get(name)

    def list_queues(self, parent: str | None) -> list[Queue]:  # noqa: D102
        return [
            self._queues[name]
            for name in sorted(self._queues)
            if parent is None or parse_queue_name(name).parent == parent
        ]

    def delete_queue(self, name: str, tombstone_until: float) -> bool:  # noqa: D102
        if self._queues.pop(name, None) is None:
            return False
        for task_name in self._tasks.pop(name, {}):
            del self._seq[task_name]
        self._heaps.pop(name, None)
        prefix = name + "/tasks/"
        for task_name in [n for n in self._history if n.startswith(prefix)]:
            del self._history[task_name]
        for task_name in [n for n, (q, _) in self._task_tombstones.items() if q == name]:
            del self._task_tombstones[task_name]
        self._queue_tombstones[name] = tombstone_until
        self._iam_policies.pop(name, None)
        return True

    def queue_tombstoned(self, name: str, now: float) -> bool:  # noqa: D102
        until = self._queue_tombstones.get(name)
        return until is not None and now < until

    def get_iam_policy(self, queue_name: str) -> dict[str, Any] | None:  # noqa: D102
        text = self._iam_policies.get(queue_name)
        return None if text is None else dict(json.loads(text))

    def put_iam_policy(self, queue_name: str, policy: Mapping[str, Any]) -> bool:  # noqa: D102
        if queue_name not in self._queues:
            return False
        self._iam_policies[queue_name] = json.dumps(policy)
        return True

    # -- tasks -----------------------------------------------------------------------------------

    def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[AlreadyExists | None]:  # noqa: D102
        return [self._insert(task, now) for task in tasks]

    def _insert(self, task: Task, now: float) -> AlreadyExists | None:
        existing = self._get(task.name)
        if existing is not None and existing.state is not TaskState.EXHAUSTED:
            return AlreadyExists(TASK_EXISTS)
        if self.task_tombstoned(task.name, now):
            return AlreadyExists(TASK_TOMBSTONED)
        if existing is not None:  # an earlier task of this name whose retries ran out: replaced
            self._remove(task.name, now)
        self._task_tombstones.pop(task.name, None)
        self._history.pop(task.name, None)  # left by an earlier task of this name
        self._seq[task.name] = next(self._counter)
        self._put(task.replace(uid=self._seq[task.name]))
        return None

    def get_task(self, name: str) -> Task | None:  # noqa: D102
        return self._get(name)

    def task_tombstoned(self, name: str, now: float) -> bool:  # noqa: D102
        entry = self._task_tombstones.get(name)
        return entry is not None and now < entry[1]

    def list_tasks(  # noqa: D102
        self, queue_name: str, after: str | None = None, limit: int = 1000, include_exhausted: bool = False
    ) -> list[Task]:
        tasks = self._tasks.get(queue_name, {})
        names = sorted(
            name
            for name, task in tasks.items()
            if (after is None or name > after)
            and (include_exhausted or task.state is not TaskState.EXHAUSTED)
        )
        return [tasks[name] for name in names[: max(limit, 0)]]

    def count_tasks(self, queue_name: str) -> dict[str, int]:  # noqa: D102
        counts = {state.value: 0 for state in TaskState}
        for task in self._tasks.get(queue_name, {}).values():
            counts[task.state.value] += 1
        return counts

    def list_tasks_in_state(  # noqa: D102
        self, queue_name: str, state: TaskState, after: tuple[float, int] | None = None, limit: int = 100
    ) -> list[Task]:
        key = after or (float("-inf"), 0)
        found = sorted(
            (task.schedule_time, task.uid, task)
            for task in self._tasks.get(queue_name, {}).values()
            if task.state is state and (task.schedule_time, task.uid) > key
        )
        return [task for _, _, task in found[: max(limit, 0)]]

    def count_tasks_upto(self, queue_name: str, now: float, cap: int) -> TaskCounts:  # noqa: D102
        tasks = self._tasks.get(queue_name, {}).values()
        queued = [t.schedule_time <= now for t in tasks if t.state is TaskState.QUEUED]
        due = sum(queued)
        counts = self.count_tasks(queue_name)
        return TaskCounts(
            due=min(cap, due),
            later=min(cap, len(queued) - due),
            dispatching=min(cap, counts[TaskState.DISPATCHING.value]),
            exhausted=min(cap, counts[TaskState.EXHAUSTED.value]),
        )

    def delete_task(self, name: str, tombstone_until: float) -> bool:  # noqa: D102
        task = self._get(name)
        if task is None or task.state is TaskState.EXHAUSTED:
            return False
        self._remove(name, tombstone_until)
        return True

    def claim_due(self, queue_name: str, now: float, limit: int) -> list[Task]:  # noqa: D102
        heap = self._heaps.get(queue_name)
        claimed: list[Task] = []
        while heap and len(claimed) < limit:
            task = self._live(heap[0])
            if task is not None and task.schedule_time > now:
                break
            heapq.heappop(heap)
            if task is not None:
                claimed.append(self._start(task, now))
        return claimed

    def claim_task(self, name: str, now: float) -> Task | None:  # noqa: D102
        task = self._get(name)
        if task is None or task.state is not TaskState.QUEUED:
            return None
        return self._start(task, now)  # its heap entry goes stale and is skipped later

    def finish_attempts(self, finished: Sequence[FinishedAttempt]) -> list[bool]:  # noqa: D102
        return [self._finish(item) for item in finished]

    def _finish(self, item: FinishedAttempt) -> bool:
        task, tombstone_until = item.task, item.tombstone_until
        stored = self._get(task.name)
        if (
            stored is None
            or stored.state is not TaskState.DISPATCHING
            or stored.dispatch_count != task.dispatch_count
            or stored.uid != task.uid
        ):
            return False
        self._history.setdefault(task.name, []).append(item.attempt)
        if tombstone_until is not None and item.deletes:
            self._remove(task.name, tombstone_until)
            return True
        self._put(task)
        if tombstone_until is not None:
            self._task_tombstones[task.name] = (task.queue_name, tombstone_until)
        return True

    def attempts(self, name: str) -> list[Attempt]:  # noqa: D102
        return list(self._history.get(name, ()))

    def purge(self, queue_name: str, purge_time: float, tombstone_until: float) -> int:  # noqa: D102
        doomed = [t.name for t in self._tasks.get(queue_name, {}).values() if t.create_time <= purge_time]
        for name in doomed:
            self._remove(name, tombstone_until)
        return len(doomed)

    def replay_exhausted(self, name: str, now: float) -> Task | None:  # noqa: D102
        task = self.get_task(name)
        if task is None or task.state is not TaskState.EXHAUSTED:
            return None
        replayed = replayed_task(task, now)
        self._task_tombstones.pop(name, None)
        self._put(replayed)
        return replayed

    def recover_in_flight(self) -> int:  # noqa: D102
        in_flight = [
            task
            for tasks in self._tasks.values()
            for task in tasks.values()
            if task.state is TaskState.DISPATCHING
        ]
        for task in in_flight:
            self._put(task.replace(state=TaskState.QUEUED, previous_response=NO_RESPONSE_STATUS))
        return len(in_flight)

    def next_schedule_time(self, queue_name: str) -> float | None:  # noqa: D102
        heap = self._heaps.get(queue_name)
        while heap:
            if self._live(heap[0]) is not None:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def prune(self, now: float) -> int:  # noqa: D102
        queues = [name for name, until in self._queue_tombstones.items() if until <= now]
        for name in queues:
            del self._queue_tombstones[name]
        tasks = [name for name, (_, until) in self._task_tombstones.items() if until <= now]
        for name in tasks:
            del self._task_tombstones[name]
            if self._get(name) is None:
                self._history.pop(name, None)
        return len(queues) + len(tasks)

    # -- helpers ---------------------------------------------------------------------------------

    def _get(self, name: str) -> Task | None:
        return self._tasks.get(_queue_of(name), {}).get(name)

    def _put(self, task: Task) -> None:
        """Store ``task`` (its seq already assigned) and index it if it is QUEUED."""
        queue_name = task.queue_name
        tasks = self._tasks.setdefault(queue_name, {})
        tasks[task.name] = task
        if task.state is not TaskState.QUEUED:
            return
        heap = self._heaps.setdefault(queue_name, [])
        heapq.heappush(heap, (task.schedule_time, self._seq[task.name], task.name))
        if len(heap) > 2 * len(tasks) + 64:  # too many stale entries: rebuild, amortised O(1)
            heap[:] = [e for e in heap if self._live(e) is not None]
            heapq.heapify(heap)

    def _live(self, entry: _Entry) -> Task | None:
        """The task an entry stands for if it is still QUEUED at that time, else ``None``."""
        schedule_time, seq, name = entry
        task = self._get(name)
        if (
            task is None
            or task.state is not TaskState.QUEUED
            or task.schedule_time != schedule_time
            or self._seq[name] != seq
        ):
            return None
        return task

    def _start(self, task: Task, now: float) -> Task:
        attempt = Attempt(schedule_time=task.schedule_time, dispatch_time=now)
        started = task.replace(
            state=TaskState.DISPATCHING,
            dispatch_count=task.dispatch_count + 1,
            first_attempt=task.first_attempt or attempt,
            last_attempt=attempt,
        )
        self._tasks[task.queue_name][task.name] = started
        return started

    def _remove(self, name: str, tombstone_until: float) -> None:
        queue_name = _queue_of(name)
        del self._tasks[queue_name][name]
        del self._seq[name]
        self._task_tombstones[name] = (queue_name, tombstone_until)
