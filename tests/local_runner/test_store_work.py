"""How much work the SQLite store does per task: statements per CreateTask, decoding per claim."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runner import errors
from local_runner.errors import AlreadyExists
from local_runner.model import Attempt, HttpRequest, Queue, Task, TaskState
from local_runner.store import FinishedAttempt, SQLiteTaskStore
from local_runner.store import sqlite as sqlite_store

Q = "projects/p/locations/l/queues/q"


def task(task_id: str) -> Task:
    return Task(
        name=f"{Q}/tasks/{task_id}",
        http_request=HttpRequest(url="http://127.0.0.1:9/x", headers={"A": task_id}, body=task_id.encode()),
        schedule_time=100.0,
        create_time=50.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteTaskStore]:
    s = SQLiteTaskStore(tmp_path / "store.sqlite3")
    s.put_queue(Queue(Q))
    yield s
    s.close()


def statements(store: SQLiteTaskStore) -> list[str]:
    """Every SQL statement the store's connection runs from now on, as SQLite expands it."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    return seen


def test_new_tasks_cost_one_insert_statement_each(store: SQLiteTaskStore) -> None:
    seen = statements(store)
    assert store.insert_tasks([task("a"), task("b"), task("c")], now=0.0) == [None, None, None]
    assert [s.split()[0] for s in seen] == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
    assert [t.task_id for t in store.list_tasks(Q)] == ["a", "b", "c"]


def test_a_taken_or_tombstoned_name_is_still_checked(store: SQLiteTaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    assert store.delete_task(f"{Q}/tasks/a", tombstone_until=10.0)
    store.insert_task(task("b"), now=0.0)
    refused = store.insert_tasks([task("a"), task("b")], now=5.0)
    assert [r.message if isinstance(r, AlreadyExists) else r for r in refused] == [
        errors.TASK_TOMBSTONED,
        errors.TASK_EXISTS,
    ]
    assert store.insert_tasks([task("a")], now=10.0) == [None]  # the tombstone ran out
    assert not store.task_tombstoned(f"{Q}/tasks/a", now=10.0)


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    decoded: list[object] = []
    real = sqlite_store.http_request_from_json

    def counting(data: object, path: str = "task.http_request") -> HttpRequest:
        decoded.append(data)
        return real(data, path)

    monkeypatch.setattr(sqlite_store, "http_request_from_json", counting)
    return decoded


def test_a_claim_reuses_the_request_decoded_at_insert(
    store: SQLiteTaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = [task(i) for i in "abcd"]
    store.insert_tasks(tasks, now=0.0)
    decoded = count_decodes(monkeypatch)
    claimed = store.claim_due(Q, now=100.0, limit=10)
    assert [t.http_request for t in claimed] == [t.http_request for t in tasks]
    assert decoded == []  # no JSON decoded for the requests it inserted
    retry = claimed[0].replace(state=TaskState.QUEUED, schedule_time=150.0)
    attempt = Attempt(100.0, 100.0, 101.0, 503)
    assert store.finish_attempts([FinishedAttempt(retry, attempt)]) == [True]
    [again] = store.claim_due(Q, now=150.0, limit=10)
    assert again.http_request == tasks[0].http_request and decoded == []  # a retry's claim, too
    store.close()
    reopened = SQLiteTaskStore(tmp_path / "store.sqlite3")  # a new runner: nothing cached
    try:
        reopened.recover_in_flight()
        assert len(reopened.claim_due(Q, now=200.0, limit=10)) == 4
        assert len(decoded) == 4
    finally:
        reopened.close()


def test_a_request_changed_behind_the_store_is_decoded_again(
    store: SQLiteTaskStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert_task(task("a"), now=0.0)
    conn = sqlite3.connect(tmp_path / "store.sqlite3")
    conn.execute("UPDATE tasks SET http_request = ?", ('{"url": "http://127.0.0.1:9/changed"}',))
    conn.commit()
    conn.close()
    decoded = count_decodes(monkeypatch)
    [claimed] = store.claim_due(Q, now=100.0, limit=1)
    assert claimed.http_request.url == "http://127.0.0.1:9/changed" and len(decoded) == 1


def test_finishing_a_batch_applies_each_item_once(store: SQLiteTaskStore) -> None:
    store.insert_tasks([task(i) for i in "abcd"], now=0.0)
    a, b, c, d = store.claim_due(Q, now=100.0, limit=10)
    assert store.delete_task(c.name, tombstone_until=500.0)  # deleted while in flight
    attempt = Attempt(100.0, 100.0, 101.0, 200)
    failed = Attempt(100.0, 100.0, 101.0, 500)
    results = store.finish_attempts(
        [
            FinishedAttempt(a, attempt, tombstone_until=400.0),  # success: deleted, tombstoned
            FinishedAttempt(b.replace(state=TaskState.QUEUED, schedule_time=200.0), failed),  # a retry
            FinishedAttempt(c, attempt, tombstone_until=400.0),  # gone meanwhile
            FinishedAttempt(b, attempt, tombstone_until=400.0),  # the same attempt again: already ended
            FinishedAttempt(d.replace(state=TaskState.EXHAUSTED), failed, tombstone_until=400.0),
        ]
    )
    assert results == [True, True, False, False, True]
    assert store.get_task(a.name) is None and store.task_tombstoned(a.name, now=300.0)
    stored_b = store.get_task(b.name)
    assert stored_b is not None and (stored_b.state, stored_b.schedule_time) == (TaskState.QUEUED, 200.0)
    stored_d = store.get_task(d.name)
    assert stored_d is not None and stored_d.state is TaskState.EXHAUSTED
    assert store.task_tombstoned(d.name, now=300.0)
    assert [len(store.attempts(t.name)) for t in (a, b, c, d)] == [1, 1, 0, 1]


def test_tasks_keep_two_indexes_and_a_queue_is_listed_from_the_name_index(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    SQLiteTaskStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE INDEX tasks_by_name ON tasks (queue, name)")  # what earlier stores kept
    conn.close()
    store = SQLiteTaskStore(path)  # every new or deleted task updates one index fewer
    try:
        indexes = {row["name"] for row in store._conn.execute("PRAGMA index_list(tasks)")}
        assert indexes == {"sqlite_autoindex_tasks_1", "tasks_due"}
        store.put_queue(Queue(Q))
        other = "projects/p/locations/l/queues/q2"
        store.put_queue(Queue(other))
        store.insert_tasks([task("b"), task("a"), task("c").replace(name=f"{other}/tasks/c")], now=0.0)
        seen = statements(store)
        assert [t.task_id for t in store.list_tasks(Q, after=f"{Q}/tasks/a")] == ["b"]
        plan = " | ".join(row[3] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {seen[0]}"))
        assert "sqlite_autoindex_tasks_1" in plan and "TEMP B-TREE" not in plan and "SCAN" not in plan
        assert [t.task_id for t in store.list_tasks(Q)] == ["a", "b"]
    finally:
        store.close()
