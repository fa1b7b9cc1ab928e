"""Running tasks by hand and watching them run: RunTask, replay, attempt history, and the test aids."""

from __future__ import annotations

from local_runner import errors
from local_runner.errors import FailedPrecondition, NotFound
from local_runner.model import Attempt, Task, TaskState, parse_task_name
from local_runner.service.base import ServiceBase


class TaskRuns(ServiceBase):
    """RunTask, the runner's replay and attempt history, and the test aids ``reset`` and ``is_idle``."""

    def run_task(self, name: str) -> Task:
        """RunTask: dispatch now, ignoring pause and rate limits; a task in flight is not sent twice."""
        parse_task_name(name)
        claimed = self.store.claim_task(name, self.clock.now())
        if claimed is not None:
            self.listener.run_now(claimed)
            return claimed
        task = self.store.get_task(name)
        if task is None or task.state is TaskState.EXHAUSTED:
            raise NotFound(errors.ENTITY_NOT_FOUND)
        return task

    def replay_task(self, name: str) -> Task:
        """Queue a task whose retries ran out again, with a fresh retry budget (a runner extension)."""
        parse_task_name(name)
        replayed = self.store.replay_exhausted(name, self.clock.now())
        if replayed is None:
            raise FailedPrecondition(
                f"Task {name} has not exhausted its retries; only such tasks can be replayed."
            )
        self.listener.queue_changed(replayed.queue_name)
        return replayed

    def reset(self) -> None:
        """Delete every queue, task, tombstone and attempt (a test aid)."""
        names = [queue.name for queue in self.store.list_queues(None)]
        self.store.reset()
        for name in names:
            self.listener.queue_deleted(name)
            self.listener.queue_changed(name)

    def is_idle(self, queue_name: str | None = None, within: float | None = None) -> bool:
        """Whether no attempt is in flight and no task is due (by now + ``within``; ever if ``None``).

        Exhausted tasks do not count. A test aid: wait for this instead of sleeping.
        """
        if queue_name is not None:
            names = [self.get_queue(queue_name).name]
        else:
            names = [queue.name for queue in self.store.list_queues(None)]
        horizon = None if within is None else self.clock.now() + within
        for name in names:
            if self.store.count_tasks(name)[TaskState.DISPATCHING.value]:
                return False
            due = self.store.next_schedule_time(name)
            if due is not None and (horizon is None or due <= horizon):
                return False
        return True

    def attempts(self, name: str) -> list[Attempt]:
        """The attempt history of a task (a runner extension)."""
        parse_task_name(name)
        return self.store.attempts(name)
