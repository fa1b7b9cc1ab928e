"""The storage contract every task store implements (SQLite on disk by default, memory for tests)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local_runner.engine.attempts import FinishedAttempt, replayed_task
from local_runner.errors import AlreadyExists
from local_runner.model import Attempt, Queue, Task, TaskState

__all__ = ["FinishedAttempt", "TaskStore", "replayed_task"]


@dataclass(frozen=True)
class TaskCounts:
    """A queue's tasks by where they stand, each count capped (see :meth:`TaskStore.count_tasks_upto`)."""

    #: QUEUED with a schedule time at or before ``now``.
    due: int
    #: QUEUED with a schedule time after ``now``.
    later: int
    dispatching: int
    exhausted: int


class TaskStore(ABC):
    """Queues, tasks, tombstones and attempt history.

    Every method is atomic. Times are passed in (epoch seconds); a store never reads a clock.

    A store on disk may find a task it cannot read back (a damaged row). It sets the task aside, logs
    one ERROR with its name, and claims, lists and counts the others as if it were not there; DeleteTask,
    PurgeQueue and DeleteQueue still remove it. Reading that one task by name is a ``StoreError``.
    """

    # -- queues ----------------------------------------------------------------------------------

    @abstractmethod
    def put_queue(self, queue: Queue) -> None:
        """Insert the queue or replace the stored one with the same name."""

    @abstractmethod
    def get_queue(self, name: str) -> Queue | None:
        """The queue with this full name, or ``None``."""

    @abstractmethod
    def list_queues(self, parent: str | None) -> list[Queue]:
        """Every queue under ``projects/P/locations/L`` (all queues if ``None``), ordered by name."""

    @abstractmethod
    def delete_queue(self, name: str, tombstone_until: float) -> bool:
        """Delete a queue, its tasks and their history; block the name until ``tombstone_until``.

        Returns:
            ``False`` if there was no such queue (nothing is written then).
        """

    @abstractmethod
    def queue_tombstoned(self, name: str, now: float) -> bool:
        """Whether a queue with this name was deleted and its tombstone is still in force at ``now``."""

    @abstractmethod
    def get_iam_policy(self, queue_name: str) -> dict[str, Any] | None:
        """The queue's IAM policy (google.iam.v1.Policy JSON without etag), or ``None`` if none was set."""

    @abstractmethod
    def put_iam_policy(self, queue_name: str, policy: Mapping[str, Any]) -> bool:
        """Store the queue's IAM policy, replacing its last one; deleting the queue deletes it too.

        Returns:
            ``False`` if there is no such queue (nothing is written then).
        """

    # -- tasks -----------------------------------------------------------------------------------

    def insert_task(self, task: Task, now: float) -> None:
        """Insert a new task: :meth:`insert_tasks` with one task.

        Raises:
            AlreadyExists: with ``errors.TASK_EXISTS`` if a task that is not EXHAUSTED has this name,
                or with ``errors.TASK_TOMBSTONED`` if its name has a tombstone in force at ``now``.
        """
        refused = self.insert_tasks([task], now)[0]
        if refused is not None:
            raise refused

    @abstractmethod
    def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[AlreadyExists | None]:
        """Insert new tasks, all in one transaction; one result per task, in order.

        A task whose name is held by a task that is not EXHAUSTED (an earlier task of the batch
        included) gets ``AlreadyExists(errors.TASK_EXISTS)``, one whose name has a tombstone in force at
        ``now`` ``AlreadyExists(errors.TASK_TOMBSTONED)``; nothing of it is written, and the others are.
        An EXHAUSTED task of the name without a tombstone in force is replaced, its history dropped.
        """

    @abstractmethod
    def get_task(self, name: str) -> Task | None:
        """The task with this full name in any state, or ``None``."""

    @abstractmethod
    def task_tombstoned(self, name: str, now: float) -> bool:
        """Whether a task with this name completed or was deleted and its tombstone is in force."""

    @abstractmethod
    def list_tasks(
        self, queue_name: str, after: str | None = None, limit: int = 1000, include_exhausted: bool = False
    ) -> list[Task]:
        """Tasks of a queue ordered by name, starting after the name ``after`` (for pagination)."""

    @abstractmethod
    def count_tasks(self, queue_name: str) -> dict[str, int]:
        """How many tasks of the queue are in each state, keyed by ``TaskState`` value."""

    @abstractmethod
    def list_tasks_in_state(
        self, queue_name: str, state: TaskState, after: tuple[float, int] | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks of a queue in one state, earliest schedule time first (ties by ``uid``), for paging.

        ``after`` is the ``(schedule_time, uid)`` of the previous page's last task. The cost must not
        grow with the number of tasks in the queue (indexed, no scan).
        """

    @abstractmethod
    def count_tasks_upto(self, queue_name: str, now: float, cap: int) -> TaskCounts:
        """How many of the queue's tasks are due, scheduled later, in flight and exhausted, each capped.

        Each count is at most ``cap``: the cost grows with ``cap``, not with the number of tasks queued.
        """

    @abstractmethod
    def delete_task(self, name: str, tombstone_until: float) -> bool:
        """Delete a task and tombstone its name (DeleteTask).

        Returns:
            ``False``, writing nothing, if there is no such task or it is EXHAUSTED (its retries ran
            out, so for the API it was deleted already).
        """

    @abstractmethod
    def claim_due(self, queue_name: str, now: float, limit: int) -> list[Task]:
        """Start an attempt on up to ``limit`` QUEUED tasks whose schedule time is ``<= now``.

        Earliest schedule time first (ties by insertion order). Each claimed task is moved to
        DISPATCHING with ``dispatch_count`` incremented, ``last_attempt`` set to
        ``Attempt(schedule_time=<its schedule_time>, dispatch_time=now)`` and ``first_attempt`` set to
        ``Attempt(schedule_time, dispatch_time=now)`` if it had none. Returns the tasks as stored after
        the change. The cost must not grow with the number of tasks queued (indexed, no scan).
        """

    @abstractmethod
    def claim_task(self, name: str, now: float) -> Task | None:
        """Start an attempt on one QUEUED task whatever its schedule time (RunTask).

        Same changes as :meth:`claim_due`. Returns ``None`` if the task does not exist or is not QUEUED.
        """

    def finish_attempt(self, task: Task, attempt: Attempt, tombstone_until: float | None) -> bool:
        """Record one attempt's outcome: :meth:`finish_attempts` with one item."""
        return self.finish_attempts([FinishedAttempt(task, attempt, tombstone_until)])[0]

    @abstractmethod
    def finish_attempts(self, finished: Sequence[FinishedAttempt]) -> list[bool]:
        """Record the outcomes of attempts, all in one transaction; one result per item, in order.

        Each item's ``attempt`` is appended to its task's history and the stored task is replaced by
        ``task`` (QUEUED with a new schedule time, or EXHAUSTED). If its ``tombstone_until`` is given
        the name is tombstoned until then and a task that is not EXHAUSTED is deleted (success). An
        item only applies while the stored task is DISPATCHING with the same ``dispatch_count`` as its
        ``task``; its result is ``False`` and nothing of it is written if the task was deleted or
        purged meanwhile.
        """

    @abstractmethod
    def attempts(self, name: str) -> list[Attempt]:
        """Every finished attempt of a task, oldest first (kept after the task is deleted)."""

    @abstractmethod
    def purge(self, queue_name: str, purge_time: float, tombstone_until: float) -> int:
        """Delete the queue's tasks created at or before ``purge_time`` (any state); tombstone their names.

        Calls are serialized, so a task with the purge's own clock reading was created before the purge.

        Returns:
            How many tasks were deleted.
        """

    @abstractmethod
    def replay_exhausted(self, name: str, now: float) -> Task | None:
        """Queue an EXHAUSTED task again, due at ``now``, with a fresh retry budget.

        Its counts and attempts are reset (its history is kept) and its name's tombstone is lifted: the
        name is held by a live task again. Returns ``None`` if the task does not exist or is not
        EXHAUSTED.
        """

    @abstractmethod
    def recover_in_flight(self) -> int:
        """After a restart: move every DISPATCHING task back to QUEUED (at-least-once delivery).

        The interrupted attempt got no response the runner knows of: the next one says
        ``X-CloudTasks-TaskPreviousResponse: 504`` (:data:`~local_runner.model.NO_RESPONSE_STATUS`).

        Returns:
            How many tasks were recovered.
        """

    @abstractmethod
    def next_schedule_time(self, queue_name: str) -> float | None:
        """The earliest schedule time among the queue's QUEUED tasks, or ``None``."""

    @abstractmethod
    def prune(self, now: float) -> int:
        """Drop tombstones expired at ``now`` and the history of tasks that no longer exist with them."""

    @abstractmethod
    def reset(self) -> None:
        """Delete everything: queues, their IAM policies, tasks, tombstones, history (a test aid)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the store is unusable afterwards."""
