"""The Cloud Tasks operations on model objects: validation, defaults, names, tombstones.

The REST API, the gRPC front, the console and the CLI call one :class:`TasksService`. It is made of one
part per job, each in its own module over the shared state of :mod:`.base` (store, clock, tombstone
settings, and the :class:`~.base.Listener` through which the scheduler is told about changes):

- :mod:`.queues`: queue administration, ListQueues' filter and page tokens;
- :mod:`.tasks`: the task lifecycle rules: CreateTask, BufferTask, get, list, delete;
- :mod:`.runs`: RunTask, replay of exhausted tasks, attempt history and the test aids;
- :mod:`.iam_and_locations`: IAM policies and locations.
"""

from __future__ import annotations

from local_runner.service.iam_and_locations import IamAndLocations
from local_runner.service.queues import QueueAdmin
from local_runner.service.runs import TaskRuns
from local_runner.service.tasks import TaskLifecycle


class TasksService(QueueAdmin, TaskLifecycle, TaskRuns, IamAndLocations):
    """Queue and task operations with the real service's rules and messages: what every front calls."""
