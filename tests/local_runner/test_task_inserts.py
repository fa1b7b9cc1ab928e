"""CreateTask calls of one turn of the event loop share one store transaction (real SQLite file)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from local_runner import errors
from local_runner.api.request import Call
from local_runner.api.rest import CloudTasksApi
from local_runner.api.task_inserts import TaskInserts
from local_runner.clock import VirtualClock
from local_runner.errors import AlreadyExists, StoreError
from local_runner.model import HttpRequest, NewTask, Queue, Task
from local_runner.service import TasksService
from local_runner.service import tasks as service_tasks
from local_runner.store import DB_FILENAME, SQLiteTaskStore

PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/q"


class CountingService(TasksService):
    """The real service, counting the store transactions that queue tasks."""

    batches: list[int]

    def add_tasks(self, tasks: list[Task]) -> list[AlreadyExists | None]:  # type: ignore[override]
        self.batches.append(len(tasks))
        return super().add_tasks(tasks)


@pytest.fixture
def service(tmp_path: Path) -> CountingService:
    svc = CountingService(SQLiteTaskStore(tmp_path / DB_FILENAME), VirtualClock(), task_tombstone=3600)
    svc.batches = []
    svc.create_queue(PARENT, Queue(QUEUE))
    return svc


def new(service: TasksService, task_id: str) -> Task:
    return service.new_task(
        QUEUE, NewTask(HttpRequest(url="http://127.0.0.1:9/x"), name=f"{QUEUE}/tasks/{task_id}")
    )


async def add_all(inserts: TaskInserts, tasks: list[Task]) -> list[BaseException | None]:
    return await asyncio.gather(*(inserts.add(task) for task in tasks), return_exceptions=True)


def test_calls_of_one_turn_share_a_transaction_and_keep_their_own_answers(service: CountingService) -> None:
    service.create_task(QUEUE, NewTask(HttpRequest(url="http://127.0.0.1:9/x"), name=f"{QUEUE}/tasks/old"))
    service.batches.clear()
    tasks = [new(service, "a"), new(service, "old"), new(service, "b"), new(service, "a")]
    results = asyncio.run(add_all(TaskInserts(service), tasks))
    assert service.batches == [4]  # one transaction for the four calls
    assert results[0] is None and results[2] is None
    for refused in (results[1], results[3]):  # the existing name, and the batch's own duplicate
        assert isinstance(refused, AlreadyExists) and refused.message == errors.TASK_EXISTS
    assert [t.task_id for t in service.store.list_tasks(QUEUE)] == ["a", "b", "old"]


def test_calls_of_later_turns_get_their_own_transaction(service: CountingService) -> None:
    inserts = TaskInserts(service)

    async def one_by_one() -> None:
        for task_id in ("x", "y"):
            await inserts.add(new(service, task_id))

    asyncio.run(one_by_one())
    assert service.batches == [1, 1]


def test_a_store_error_fails_every_call_of_the_transaction_and_stores_none(
    service: CountingService, tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON tasks WHEN NEW.name LIKE '%/boom' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        conn.commit()
    finally:
        conn.close()
    results = asyncio.run(add_all(TaskInserts(service), [new(service, "fine"), new(service, "boom")]))
    assert all(isinstance(r, StoreError) and "disk says no" in str(r) for r in results)
    assert service.store.list_tasks(QUEUE) == []


def test_a_generated_id_another_task_holds_is_drawn_again(
    service: CountingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = CloudTasksApi(service)
    call = Call(params={"parent": QUEUE}, body={"task": {"httpRequest": {"url": "http://127.0.0.1:9/x"}}})
    # Two processes (a runner restarted with its clock set back) whose first draws are the same.
    monkeypatch.setattr(service_tasks, "generated_task_id", service_tasks.TaskIds(random.Random(7)).next)
    first = asyncio.run(api.create_task(call))
    monkeypatch.setattr(service_tasks, "generated_task_id", service_tasks.TaskIds(random.Random(7)).next)
    second = asyncio.run(api.create_task(call))
    assert first["name"] != second["name"]
    assert sorted(t.name for t in service.store.list_tasks(QUEUE)) == sorted([first["name"], second["name"]])
    named = {"task": {"name": first["name"], "httpRequest": {"url": "http://127.0.0.1:9/x"}}}
    with pytest.raises(AlreadyExists, match=errors.TASK_EXISTS):  # a name the caller chose is refused
        asyncio.run(api.create_task(Call(params={"parent": QUEUE}, body=named)))
