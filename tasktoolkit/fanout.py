"""fan_out: one Cloud Scheduler fire becomes many tasks, each created at most once per fire.

Each task's ``dedup_key`` is ``<job id>@<schedule time>/<item key>``, which the client turns into a hashed
task id. A second run of the same fire (a retry after a partial failure, when the job has a ``retry_count``;
a duplicate fire whose record expired) asks for the same names: Cloud Tasks answers ``ALREADY_EXISTS`` for
those created before, and they are counted as already enqueued, not created again. A name stays taken while
the task exists and for about an hour after it ends (cloud-tasks-semantics.md, task names); the fire's own
dedup record (``@scheduled_handler``) covers the time after that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tasktoolkit.enqueue import client_for, route_task
from tasktoolkit.errors import ConfigurationError, TaskToolkitError
from tasktoolkit.handler import TaskHandler
from tasktoolkit.headers import ScheduleContext

if TYPE_CHECKING:
    from tasktoolkit.client import EnqueueResult

#: Longest item key (the task id is its hash, so only readability limits it).
MAX_ITEM_KEY_LENGTH = 500


class FanOutIncomplete(TaskToolkitError):
    """Some tasks of a fan-out were not created; the others were (a retry of the fire creates the rest).

    Cloud Scheduler retries the fire only when its job's ``retry_count`` > 0.
    """

    def __init__(self, result: FanOutResult) -> None:
        self.result = result
        first_key, first_error = result.failed[0]
        super().__init__(
            f"fan-out created {result.enqueued} task(s), found {result.existing} already enqueued and failed "
            f"{len(result.failed)}; first failure, item {first_key!r}: {first_error}"
        )


@dataclass(frozen=True)
class FanOutResult:
    """What :func:`fan_out` did."""

    #: Tasks created now.
    enqueued: int = 0
    #: Tasks that existed already (an earlier run of this fire created them).
    existing: int = 0
    #: ``(item key, error)`` of each task that could not be created (a key that is not a str: its ``repr``).
    failed: tuple[tuple[str, TaskToolkitError], ...] = field(default=())

    @property
    def total(self) -> int:
        """Items seen."""
        return self.enqueued + self.existing + len(self.failed)


def item_dedup_key(fire: ScheduleContext, item_key: str) -> str:
    """``<job id>@<schedule time>/<item key>``: the dedup key of one item's task in one fire."""
    if not isinstance(item_key, str) or not 0 < len(item_key) <= MAX_ITEM_KEY_LENGTH:
        raise TaskToolkitError(
            f"fan_out item key must be a str of 1-{MAX_ITEM_KEY_LENGTH} characters, got {item_key!r}"
        )
    return f"{fire.fire_id}/{item_key}"


def fan_out(
    handler: TaskHandler,
    fire: ScheduleContext,
    items: Iterable[tuple[str, Any]],
    *,
    queue: str | None = None,
    route_args: Mapping[str, Any] | None = None,
    max_workers: int = 8,
    raise_on_failure: bool = True,
    **options: Any,
) -> FanOutResult:
    """Enqueues one task for ``handler`` per item, named after (job, schedule time, item key).

    Call it inside a ``@scheduled_handler`` function with its ``fire``. Tasks are created
    ``max_workers`` at a time (``enqueue_many``); one failure never stops the others.

    Args:
        handler: The ``@task_handler`` the tasks call.
        fire: The fire being handled.
        items: ``(item key, payload)`` pairs, read lazily; the key is unique within the fire (e.g. a user id).
        queue: Queue id (default: the handler's, else ``TASKTOOLKIT_DEFAULT_QUEUE``).
        route_args: Values of the handler's route variables.
        max_workers: Requests in flight (1-64).
        raise_on_failure: Raise :class:`FanOutIncomplete` when any task could not be created, so that the
            fire answers 500 and, when the job's ``retry_count`` > 0, Cloud Scheduler retries it (the retry
            creates only the missing tasks).
        **options: Other :meth:`~tasktoolkit.client.TasksClient.enqueue` options for every task
            (``delay``, ``dispatch_deadline``, ``headers``...).

    Returns:
        The counts (and failures, when ``raise_on_failure`` is off).

    Raises:
        FanOutIncomplete: Some tasks were not created (with ``raise_on_failure``).
        ConfigurationError: A setting the tasks need is missing.
    """
    app, queue_id, base = route_task(
        handler, None, queue=queue or handler.options.queue, route_args=route_args, options=options
    )
    keys: list[str] = []
    refused: list[tuple[str, TaskToolkitError]] = []

    def tasks() -> Iterator[dict[str, Any]]:
        for item_key, payload in items:
            try:
                dedup_key = item_dedup_key(fire, item_key)
            except TaskToolkitError as exc:  # this item's failure; the others still go
                refused.append((item_key if isinstance(item_key, str) else repr(item_key), exc))
                continue
            keys.append(item_key)
            yield {**base, "json": payload, "dedup_key": dedup_key}

    client = client_for(app)
    many = getattr(client, "enqueue_many", None)
    if many is None:
        raise ConfigurationError(f"fan_out needs a client with enqueue_many (a TasksClient), got {client!r}")
    results: list[EnqueueResult] = many(queue_id, tasks(), max_workers=max_workers, ignore_existing=True)
    created = sum(1 for r in results if r.ok and r.task is not None)
    not_created = [(keys[r.index], r.error) for r in results if r.error is not None]
    existing = len(results) - created - len(not_created)
    result = FanOutResult(enqueued=created, existing=existing, failed=(*refused, *not_created))
    if result.failed and raise_on_failure:
        raise FanOutIncomplete(result)
    return result
