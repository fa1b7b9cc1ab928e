"""Service rules with a virtual clock: names, tombstones, schedule horizon, purge, RunTask."""

from __future__ import annotations

import pytest

from local_runner import errors
from local_runner.clock import VirtualClock
from local_runner.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from local_runner.model import HttpRequest, NewTask, Queue, QueueState, Task, TaskState
from local_runner.service import TasksService
from local_runner.store import MemoryTaskStore

PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/q"
REQUEST = HttpRequest(url="http://127.0.0.1:9/x")


class Recorder:
    def __init__(self) -> None:
        self.changed: list[str] = []
        self.run: list[Task] = []

    def queue_changed(self, queue_name: str) -> None:
        self.changed.append(queue_name)

    def run_now(self, task: Task) -> None:
        self.run.append(task)

    def queue_deleted(self, queue_name: str) -> None:
        self.changed.append(f"deleted:{queue_name}")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def service(clock: VirtualClock) -> TasksService:
    svc = TasksService(MemoryTaskStore(), clock, task_tombstone=3600, queue_tombstone=60)
    svc.listener = Recorder()
    svc.create_queue(PARENT, Queue(QUEUE))
    return svc


def named(task_id: str, **kwargs: object) -> NewTask:
    return NewTask(REQUEST, name=f"{QUEUE}/tasks/{task_id}", **kwargs)  # type: ignore[arg-type]


def test_tombstone_blocks_a_name_for_the_window_then_frees_it(
    service: TasksService, clock: VirtualClock
) -> None:
    task = service.create_task(QUEUE, named("welcome-42"))
    with pytest.raises(AlreadyExists) as live:
        service.create_task(QUEUE, named("welcome-42"))
    assert live.value.message == errors.TASK_EXISTS
    service.delete_task(task.name)
    with pytest.raises(NotFound) as gone:
        service.get_task(task.name)
    assert gone.value.message == errors.TASK_GONE
    clock.advance(3599)
    with pytest.raises(AlreadyExists) as tombstoned:
        service.create_task(QUEUE, named("welcome-42"))
    assert tombstoned.value.message == errors.TASK_TOMBSTONED
    clock.advance(1)
    assert service.create_task(QUEUE, named("welcome-42")).name == task.name


def test_generated_ids_are_long_decimal_strings(service: TasksService) -> None:
    ids = {service.create_task(QUEUE, NewTask(REQUEST)).task_id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.isdigit() and len(i) == 19 for i in ids)


def test_generated_ids_follow_creation_time(service: TasksService, clock: VirtualClock) -> None:
    """Ids of later milliseconds sort after earlier ones (neighbours in the store's name index)."""
    ids = []
    for _ in range(20):
        ids.append(int(service.create_task(QUEUE, NewTask(REQUEST)).task_id))
        clock.advance(0.005)
    assert ids == sorted(ids)


def test_generated_ids_never_collide_within_one_millisecond(service: TasksService) -> None:
    """Thousands of tasks created at one instant (a batch, a burst) all get distinct, rising ids."""
    ids = [int(service.create_task(QUEUE, NewTask(REQUEST)).task_id) for _ in range(3000)]
    assert ids == sorted(set(ids))


def test_schedule_time_defaults_to_now_and_past_is_now(service: TasksService, clock: VirtualClock) -> None:
    assert service.create_task(QUEUE, NewTask(REQUEST)).schedule_time == clock.now()
    past = service.create_task(QUEUE, NewTask(REQUEST, schedule_time=clock.now() - 100))
    assert past.schedule_time == clock.now()


def test_schedule_time_at_most_720h_ahead(service: TasksService, clock: VirtualClock) -> None:
    limit = clock.now() + 720 * 3600
    assert service.create_task(QUEUE, NewTask(REQUEST, schedule_time=limit)).schedule_time == limit
    with pytest.raises(InvalidArgument) as info:
        service.create_task(QUEUE, NewTask(REQUEST, schedule_time=limit + 1))
    assert info.value.message.endswith(
        "is too far in the future. Schedule time must be no more than 720h in the future."
    )


def test_dispatch_deadline_default_and_stored_user_agent(service: TasksService) -> None:
    task = service.create_task(
        QUEUE, NewTask(HttpRequest(url="http://x/y", headers={"user-agent": "mine", "X-A": "1"}))
    )
    assert task.dispatch_deadline == 600
    assert dict(task.http_request.headers) == {"X-A": "1", "User-Agent": "Google-Cloud-Tasks"}


def test_stored_user_agent_counts_toward_the_headers_limit(service: TasksService) -> None:
    """The request keeps its other fields; headers that fit only without the runner's User-Agent do not."""
    task = service.create_task(QUEUE, NewTask(HttpRequest(url="http://x/y", body=b"b", headers={"ua": "1"})))
    assert (task.http_request.url, task.http_request.body) == ("http://x/y", b"b")
    room = 80 * 1024 - 1 - len("X-Big")  # the largest headers HttpRequest accepts, before the User-Agent
    with pytest.raises(InvalidArgument) as info:
        service.create_task(QUEUE, NewTask(HttpRequest(url="http://x/y", headers={"X-Big": "v" * room})))
    assert "less than 80KB" in info.value.message


def test_task_size_limit(service: TasksService) -> None:
    with pytest.raises(InvalidArgument) as info:
        service.create_task(QUEUE, NewTask(HttpRequest(url="http://x/y", body=b"x" * (1024 * 1024))))
    assert "maximum task size" in info.value.message


def test_create_task_in_missing_queue(service: TasksService) -> None:
    with pytest.raises(NotFound) as info:
        service.create_task(f"{PARENT}/queues/missing", NewTask(REQUEST))
    assert info.value.message == errors.QUEUE_NOT_FOUND


def test_paused_queue_accepts_tasks(service: TasksService) -> None:
    assert service.pause_queue(QUEUE).state is QueueState.PAUSED
    service.create_task(QUEUE, NewTask(REQUEST))
    assert service.resume_queue(QUEUE).state is QueueState.RUNNING


def test_purge_deletes_tasks_created_before_it(service: TasksService, clock: VirtualClock) -> None:
    old = service.create_task(QUEUE, named("old", schedule_time=clock.now() + 600))
    clock.advance(1)
    queue = service.purge_queue(QUEUE)
    assert queue.purge_time == clock.now()
    new = service.create_task(QUEUE, named("new"))
    assert [t.name for t in service.list_tasks(QUEUE).items] == [new.name]
    with pytest.raises(AlreadyExists):
        service.create_task(QUEUE, named("old"))  # purged names are tombstoned too
    assert old.name != new.name


def test_run_task_claims_once_and_hands_it_to_the_dispatcher(
    service: TasksService, clock: VirtualClock
) -> None:
    task = service.create_task(QUEUE, named("t", schedule_time=clock.now() + 3600))
    ran = service.run_task(task.name)
    assert ran.state is TaskState.DISPATCHING and ran.dispatch_count == 1
    again = service.run_task(task.name)  # already in flight: returned as is, not dispatched twice
    assert again.dispatch_count == 1
    listener = service.listener
    assert isinstance(listener, Recorder) and [t.name for t in listener.run] == [task.name]
    with pytest.raises(NotFound):
        service.run_task(f"{QUEUE}/tasks/missing")


def test_deleted_queue_name_blocked_for_a_while(service: TasksService, clock: VirtualClock) -> None:
    service.delete_queue(QUEUE)
    with pytest.raises(NotFound) as info:
        service.get_queue(QUEUE)
    assert info.value.message == errors.QUEUE_NOT_FOUND
    with pytest.raises(FailedPrecondition) as blocked:
        service.create_queue(PARENT, Queue(QUEUE))
    assert blocked.value.message == errors.QUEUE_TOMBSTONED
    clock.advance(60)
    service.create_queue(PARENT, Queue(QUEUE))
    with pytest.raises(NotFound) as missing:
        service.delete_queue(f"{PARENT}/queues/never")
    assert missing.value.message == errors.ENTITY_NOT_FOUND


def test_every_change_wakes_the_dispatcher(service: TasksService) -> None:
    listener = service.listener
    assert isinstance(listener, Recorder)
    listener.changed.clear()
    service.create_task(QUEUE, NewTask(REQUEST))
    service.pause_queue(QUEUE)
    service.resume_queue(QUEUE)
    service.purge_queue(QUEUE)
    service.upsert_queue(Queue(QUEUE))
    assert listener.changed == [QUEUE] * 5
