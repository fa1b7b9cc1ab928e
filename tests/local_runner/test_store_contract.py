"""One contract suite for every TaskStore, plus what only the SQLite store promises (files, recovery)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runner import errors
from local_runner.errors import AlreadyExists, StoreError
from local_runner.model import (
    Attempt,
    HttpMethod,
    HttpRequest,
    HttpTarget,
    OAuthToken,
    OidcToken,
    Queue,
    QueueState,
    RateLimits,
    RetryConfig,
    RpcStatus,
    Task,
    TaskState,
    UriOverride,
)
from local_runner.store import (
    FinishedAttempt,
    MemoryTaskStore,
    SQLiteTaskStore,
    TaskCounts,
    TaskStore,
    open_store,
)
from local_runner.store.sqlite import CLAIM_DUE_SELECT

PARENT = "projects/p/locations/l"
Q = f"{PARENT}/queues/q"
Q2 = f"{PARENT}/queues/other"
DB = "store.sqlite3"


def task(task_id: str, schedule_time: float = 100.0, create_time: float = 50.0, queue: str = Q) -> Task:
    return Task(
        name=f"{queue}/tasks/{task_id}",
        http_request=HttpRequest(url="https://example.com/work", body=task_id.encode()),
        schedule_time=schedule_time,
        create_time=create_time,
    )


def name(task_id: str, queue: str = Q) -> str:
    return f"{queue}/tasks/{task_id}"


def ids(tasks: list[Task]) -> list[str]:
    return [t.task_id for t in tasks]


def open_sqlite(path: Path) -> SQLiteTaskStore:
    return SQLiteTaskStore(path)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    s: TaskStore = MemoryTaskStore() if request.param == "memory" else SQLiteTaskStore(tmp_path / DB)
    yield s
    s.close()


# -- queues --------------------------------------------------------------------------------------


def full_queue(queue_name: str = Q) -> Queue:
    return Queue(
        name=queue_name,
        rate_limits=RateLimits(max_dispatches_per_second=5.5, max_concurrent_dispatches=7),
        retry_config=RetryConfig(
            max_attempts=5, max_retry_duration=60.0, min_backoff=0.5, max_backoff=30.0, max_doublings=3
        ),
        state=QueueState.PAUSED,
        purge_time=1234.5,
        http_target=HttpTarget(
            uri_override=UriOverride(scheme="https", host="h.example", port=8443, path="/p", query="a=1"),
            http_method=HttpMethod.PUT,
            header_overrides=(("X-A", "1"), ("x-b", "2")),
            oidc_token=OidcToken("sa@p.iam.gserviceaccount.com", "aud"),
        ),
        logging_sampling_ratio=0.25,
    )


def test_queue_round_trip_and_replace(store: TaskStore) -> None:
    assert store.get_queue(Q) is None
    queue = full_queue()
    store.put_queue(queue)
    assert store.get_queue(Q) == queue
    replaced = Queue(name=Q, state=QueueState.RUNNING)
    store.put_queue(replaced)
    assert store.get_queue(Q) == replaced


def test_zero_limits_round_trip_exactly(store: TaskStore) -> None:
    queue = Queue(
        name=Q,
        rate_limits=RateLimits(max_dispatches_per_second=0, max_concurrent_dispatches=0),
        retry_config=RetryConfig(max_attempts=0, min_backoff=0, max_backoff=0, max_doublings=0),
    )
    store.put_queue(queue)
    assert store.get_queue(Q) == queue


def test_list_all_queues_across_parents(store: TaskStore) -> None:
    other = "projects/p2/locations/l2/queues/z"
    for queue_name in (other, Q2, Q):
        store.put_queue(Queue(queue_name))
    assert [q.name for q in store.list_queues(None)] == sorted([other, Q2, Q])


def test_list_queues_sorted_and_filtered_by_parent(store: TaskStore) -> None:
    for queue_id in ("b", "a-2", "a", "c"):
        store.put_queue(Queue(name=f"{PARENT}/queues/{queue_id}"))
    store.put_queue(Queue(name="projects/p/locations/elsewhere/queues/a"))
    assert [q.name.rpartition("/")[2] for q in store.list_queues(PARENT)] == ["a", "a-2", "b", "c"]
    assert store.list_queues("projects/p/locations/none") == []


def test_delete_queue_removes_tasks_history_and_tombstones_name(store: TaskStore) -> None:
    assert store.delete_queue(Q, tombstone_until=500.0) is False
    assert store.queue_tombstoned(Q, now=0.0) is False
    store.put_queue(Queue(name=Q))
    store.put_queue(Queue(name=Q2))
    store.insert_task(task("a"), now=0.0)
    store.insert_task(task("done"), now=0.0)
    store.insert_task(task("keep", queue=Q2), now=0.0)
    claimed = store.claim_task(name("done"), now=1.0)
    assert claimed is not None
    assert store.finish_attempt(claimed, Attempt(100.0, 1.0, 2.0, 200), tombstone_until=900.0)

    assert store.delete_queue(Q, tombstone_until=500.0) is True
    assert store.get_queue(Q) is None
    assert store.get_task(name("a")) is None
    assert store.list_tasks(Q, include_exhausted=True) == []
    assert store.count_tasks(Q) == {"QUEUED": 0, "DISPATCHING": 0, "EXHAUSTED": 0}
    assert store.attempts(name("done")) == []
    assert store.next_schedule_time(Q) is None
    assert store.claim_due(Q, now=1000.0, limit=10) == []
    assert store.queue_tombstoned(Q, now=499.9) is True
    assert store.queue_tombstoned(Q, now=500.0) is False
    assert store.queue_tombstoned(Q2, now=0.0) is False
    assert ids(store.list_tasks(Q2)) == ["keep"]
    assert store.get_queue(Q2) is not None


# -- insert / tombstones -------------------------------------------------------------------------


def test_insert_duplicate_of_a_queued_or_dispatching_task_is_task_exists(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    with pytest.raises(AlreadyExists) as info:
        store.insert_task(task("a", schedule_time=5.0), now=0.0)
    assert info.value.message == errors.TASK_EXISTS
    assert store.claim_task(name("a"), now=1.0) is not None
    with pytest.raises(AlreadyExists, match=errors.TASK_EXISTS):
        store.insert_task(task("a"), now=0.0)
    assert store.get_task(name("a")) is not None
    assert store.get_task(name("a")).schedule_time == 100.0  # type: ignore[union-attr]


def test_tombstoned_name_refused_until_expiry(store: TaskStore) -> None:
    assert store.delete_task(name("missing"), tombstone_until=10.0) is False
    assert store.task_tombstoned(name("missing"), now=0.0) is False
    store.insert_task(task("a"), now=0.0)
    assert store.delete_task(name("a"), tombstone_until=10.0) is True
    assert store.get_task(name("a")) is None
    assert store.task_tombstoned(name("a"), now=9.9) is True
    with pytest.raises(AlreadyExists) as info:
        store.insert_task(task("a"), now=9.9)
    assert info.value.message == errors.TASK_TOMBSTONED
    assert store.task_tombstoned(name("a"), now=10.0) is False
    store.insert_task(task("a", schedule_time=7.0), now=10.0)
    assert store.get_task(name("a")) == task("a", schedule_time=7.0)
    assert store.task_tombstoned(name("a"), now=0.0) is False  # the new task replaced the old tombstone


def test_reused_name_starts_with_empty_history(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    claimed = store.claim_task(name("a"), now=1.0)
    assert claimed is not None
    assert store.finish_attempt(claimed, Attempt(100.0, 1.0, 2.0, 200), tombstone_until=10.0)
    assert len(store.attempts(name("a"))) == 1
    store.insert_task(task("a"), now=10.0)
    assert store.attempts(name("a")) == []


# -- claiming ------------------------------------------------------------------------------------


def test_claim_due_order_due_only_and_limit(store: TaskStore) -> None:
    for task_id, at in (("c", 30.0), ("b1", 10.0), ("later", 50.0), ("b2", 10.0), ("a", 20.0)):
        store.insert_task(task(task_id, schedule_time=at), now=0.0)
    store.insert_task(task("x", schedule_time=1.0, queue=Q2), now=0.0)
    assert store.claim_due(Q, now=30.0, limit=0) == []
    assert ids(store.claim_due(Q, now=30.0, limit=2)) == ["b1", "b2"]
    assert ids(store.claim_due(Q, now=30.0, limit=10)) == ["a", "c"]  # "later" is not due, due = at <= now
    assert store.claim_due(Q, now=30.0, limit=10) == []
    assert ids(store.claim_due(Q, now=50.0, limit=10)) == ["later"]
    assert store.get_task(name("x", Q2)).state is TaskState.QUEUED  # type: ignore[union-attr]
    assert store.count_tasks(Q2) == {"QUEUED": 1, "DISPATCHING": 0, "EXHAUSTED": 0}


def test_claim_skips_dispatching_and_exhausted(store: TaskStore) -> None:
    store.insert_task(task("q", schedule_time=3.0), now=0.0)
    store.insert_task(task("d", schedule_time=1.0), now=0.0)
    store.insert_task(task("e", schedule_time=2.0).replace(state=TaskState.EXHAUSTED), now=0.0)
    assert store.claim_task(name("d"), now=0.0) is not None
    assert ids(store.claim_due(Q, now=10.0, limit=10)) == ["q"]


def test_claim_sets_counts_and_attempts(store: TaskStore) -> None:
    store.insert_task(task("a", schedule_time=10.0), now=0.0)
    [first] = store.claim_due(Q, now=11.0, limit=1)
    assert first.state is TaskState.DISPATCHING
    assert first.dispatch_count == 1
    assert first.first_attempt == Attempt(schedule_time=10.0, dispatch_time=11.0)
    assert first.last_attempt == Attempt(schedule_time=10.0, dispatch_time=11.0)
    assert store.get_task(first.name) == first
    retry = first.replace(
        state=TaskState.QUEUED,
        schedule_time=20.0,
        response_count=1,
        last_attempt=Attempt(10.0, 11.0, 12.0, 503, RpcStatus(14, "UNAVAILABLE")),
    )
    assert store.finish_attempt(retry, retry.last_attempt, tombstone_until=None)  # type: ignore[arg-type]
    [second] = store.claim_due(Q, now=25.0, limit=5)
    assert second.dispatch_count == 2
    assert second.response_count == 1
    assert second.first_attempt == Attempt(schedule_time=10.0, dispatch_time=11.0)
    assert second.last_attempt == Attempt(schedule_time=20.0, dispatch_time=25.0)


def test_claim_task_ignores_schedule_time(store: TaskStore) -> None:
    assert store.claim_task(name("missing"), now=0.0) is None
    store.insert_task(task("a", schedule_time=1000.0), now=0.0)
    claimed = store.claim_task(name("a"), now=5.0)
    assert claimed is not None
    assert claimed.state is TaskState.DISPATCHING
    assert claimed.dispatch_count == 1
    assert claimed.first_attempt == claimed.last_attempt == Attempt(1000.0, 5.0)
    assert store.get_task(name("a")) == claimed
    assert store.claim_task(name("a"), now=6.0) is None
    assert store.claim_due(Q, now=2000.0, limit=10) == []
    store.insert_task(task("e").replace(state=TaskState.EXHAUSTED), now=0.0)
    assert store.claim_task(name("e"), now=6.0) is None


# -- finishing -----------------------------------------------------------------------------------


def claim(store: TaskStore, task_id: str, now: float = 100.0) -> Task:
    claimed = store.claim_task(name(task_id), now=now)
    assert claimed is not None
    return claimed


def test_finish_retry_requeues_with_history(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    claimed = claim(store, "a")
    attempt = Attempt(100.0, 100.0, 101.0, 500, RpcStatus(13, "Internal"))
    retry = claimed.replace(
        state=TaskState.QUEUED, schedule_time=160.0, response_count=1, execution_count=0, last_attempt=attempt
    )
    assert store.finish_attempt(retry, attempt, tombstone_until=None) is True
    assert store.get_task(name("a")) == retry
    assert store.attempts(name("a")) == [attempt]
    assert store.next_schedule_time(Q) == 160.0
    assert store.claim_due(Q, now=159.0, limit=1) == []
    again = store.claim_due(Q, now=160.0, limit=1)[0]
    attempt2 = Attempt(160.0, 160.0, 161.0, 404, RpcStatus(5, "Not found"))
    retry2 = again.replace(state=TaskState.QUEUED, schedule_time=400.0, response_count=2, execution_count=1)
    assert store.finish_attempt(retry2, attempt2, tombstone_until=None) is True
    assert store.attempts(name("a")) == [attempt, attempt2]
    assert store.get_task(name("a")) == retry2


def test_finish_success_deletes_tombstones_and_keeps_history(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    claimed = claim(store, "a")
    attempt = Attempt(100.0, 100.0, 100.5, 200, RpcStatus(0, "OK"))
    done = claimed.replace(response_count=1, execution_count=1, last_attempt=attempt)
    assert store.finish_attempt(done, attempt, tombstone_until=3700.0) is True
    assert store.get_task(name("a")) is None
    assert store.task_tombstoned(name("a"), now=3699.0) is True
    assert store.attempts(name("a")) == [attempt]
    assert store.count_tasks(Q) == {"QUEUED": 0, "DISPATCHING": 0, "EXHAUSTED": 0}


def test_finish_exhausted_keeps_task_hidden_from_default_listing(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    store.insert_task(task("b"), now=0.0)
    claimed = claim(store, "a")
    attempt = Attempt(100.0, 100.0, 101.0, 500, RpcStatus(13, "Internal"))
    exhausted = claimed.replace(state=TaskState.EXHAUSTED, response_count=1, last_attempt=attempt)
    assert store.finish_attempt(exhausted, attempt, tombstone_until=None) is True
    assert store.get_task(name("a")) == exhausted
    assert ids(store.list_tasks(Q)) == ["b"]
    assert ids(store.list_tasks(Q, include_exhausted=True)) == ["a", "b"]
    assert store.count_tasks(Q) == {"QUEUED": 1, "DISPATCHING": 0, "EXHAUSTED": 1}
    assert ids(store.claim_due(Q, now=1000.0, limit=10)) == ["b"]
    assert store.task_tombstoned(name("a"), now=0.0) is False


def test_exhausted_task_is_kept_but_holds_its_name_only_while_its_tombstone_lasts(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    claimed = claim(store, "a")
    attempt = Attempt(100.0, 100.0, 101.0, 500, RpcStatus(13, "HTTP status code 500"))
    exhausted = claimed.replace(state=TaskState.EXHAUSTED, response_count=1, last_attempt=attempt)
    assert store.finish_attempt(exhausted, attempt, tombstone_until=3701.0) is True
    assert store.get_task(name("a")) == exhausted  # kept: inspectable and replayable
    assert store.task_tombstoned(name("a"), now=3700.9) is True
    with pytest.raises(AlreadyExists) as info:
        store.insert_task(task("a"), now=3700.9)
    assert info.value.message == errors.TASK_TOMBSTONED
    assert store.delete_task(name("a"), tombstone_until=9999.0) is False  # deleted already, for the API
    assert store.prune(now=3701.0) == 1
    assert store.get_task(name("a")) == exhausted  # pruning the tombstone keeps the record...
    assert store.attempts(name("a")) == [attempt]  # ...and its history
    store.insert_task(task("a", schedule_time=7.0), now=3701.0)  # ...which a new task of the name replaces
    fresh = store.get_task(name("a"))
    assert fresh is not None and fresh.state is TaskState.QUEUED and fresh.uid != exhausted.uid
    assert store.attempts(name("a")) == []
    assert store.count_tasks(Q) == {"QUEUED": 1, "DISPATCHING": 0, "EXHAUSTED": 0}
    assert ids(store.claim_due(Q, now=1000.0, limit=5)) == ["a"]
    store.insert_task(task("b").replace(state=TaskState.EXHAUSTED), now=0.0)  # exhausted, no tombstone
    store.insert_task(task("b"), now=0.0)
    assert store.get_task(name("b")) == task("b")


def test_stale_finish_after_delete_or_purge_resurrects_nothing(store: TaskStore) -> None:
    store.insert_task(task("deleted"), now=0.0)
    store.insert_task(task("purged"), now=0.0)
    attempt = Attempt(100.0, 100.0, 101.0, 200)
    for task_id in ("deleted", "purged"):
        claimed = claim(store, task_id)
        if task_id == "deleted":
            assert store.delete_task(claimed.name, tombstone_until=50.0)
        else:
            assert store.purge(Q, purge_time=60.0, tombstone_until=50.0) == 1
        requeued = claimed.replace(state=TaskState.QUEUED, schedule_time=200.0)
        assert store.finish_attempt(requeued, attempt, tombstone_until=None) is False
        assert store.finish_attempt(claimed, attempt, tombstone_until=99.0) is False
        assert store.get_task(claimed.name) is None
        assert store.attempts(claimed.name) == []
        assert store.task_tombstoned(claimed.name, now=49.0) is True
        assert store.task_tombstoned(claimed.name, now=50.0) is False  # not extended by the stale finish
    assert store.count_tasks(Q) == {"QUEUED": 0, "DISPATCHING": 0, "EXHAUSTED": 0}


def test_stale_finish_with_old_dispatch_count_or_not_dispatching(store: TaskStore) -> None:
    store.insert_task(task("a"), now=0.0)
    old = claim(store, "a")
    assert store.finish_attempt(old, Attempt(100.0, 100.0), tombstone_until=None) is True  # still DISPATCHING
    assert store.recover_in_flight() == 1
    assert store.finish_attempt(old, Attempt(100.0, 100.0), tombstone_until=None) is False  # QUEUED now
    current = claim(store, "a", now=200.0)
    assert current.dispatch_count == 2
    assert store.finish_attempt(old.replace(state=TaskState.QUEUED), Attempt(1.0, 2.0), None) is False
    assert store.finish_attempt(old, Attempt(1.0, 2.0), tombstone_until=10.0) is False
    assert store.get_task(name("a")) == current
    assert store.attempts(name("a")) == [Attempt(100.0, 100.0)]


def test_insert_tasks_refuses_taken_names_item_by_item(store: TaskStore) -> None:
    store.insert_task(task("live"), now=0.0)
    store.insert_task(task("gone"), now=0.0)
    assert store.delete_task(name("gone"), tombstone_until=500.0)
    refusals = store.insert_tasks([task("a"), task("live"), task("gone"), task("a"), task("b")], now=100.0)
    assert [r is None for r in refusals] == [True, False, False, False, True]
    assert [r.message for r in refusals if r is not None] == [
        errors.TASK_EXISTS,
        errors.TASK_TOMBSTONED,
        errors.TASK_EXISTS,
    ]
    assert ids(store.list_tasks(Q)) == ["a", "b", "live"]
    assert store.insert_tasks([], now=100.0) == []


def test_finish_attempts_applies_each_item_of_a_batch_on_its_own(store: TaskStore) -> None:
    for task_id in ("done", "retry", "gone"):
        store.insert_task(task(task_id), now=0.0)
    done, retry, gone = (claim(store, task_id) for task_id in ("done", "retry", "gone"))
    assert store.delete_task(gone.name, tombstone_until=50.0)
    ok, failed = Attempt(100.0, 100.0, 101.0, 200), Attempt(100.0, 100.0, 101.0, 500)
    requeued = retry.replace(state=TaskState.QUEUED, schedule_time=300.0, last_attempt=failed)
    results = store.finish_attempts(
        [
            FinishedAttempt(done, ok, tombstone_until=900.0),
            FinishedAttempt(requeued, failed),
            FinishedAttempt(gone, ok, tombstone_until=900.0),
        ]
    )
    assert results == [True, True, False]
    assert store.get_task(done.name) is None and store.task_tombstoned(done.name, now=899.0)
    assert store.get_task(retry.name) == requeued
    assert store.attempts(done.name) == [ok] and store.attempts(retry.name) == [failed]
    assert store.attempts(gone.name) == [] and not store.task_tombstoned(gone.name, now=60.0)
    assert store.finish_attempts([]) == []


# -- listing, counting, purging ------------------------------------------------------------------


def test_list_tasks_paginates_by_name(store: TaskStore) -> None:
    for task_id in ("d", "a", "e", "c", "b"):
        store.insert_task(task(task_id), now=0.0)
    store.insert_task(task("z", queue=Q2), now=0.0)
    assert ids(store.list_tasks(Q, limit=2)) == ["a", "b"]
    assert ids(store.list_tasks(Q, after=name("b"), limit=2)) == ["c", "d"]
    assert ids(store.list_tasks(Q, after=name("d"), limit=2)) == ["e"]
    assert store.list_tasks(Q, after=name("e"), limit=2) == []
    assert ids(store.list_tasks(Q)) == ["a", "b", "c", "d", "e"]
    assert store.list_tasks(Q, limit=0) == []
    assert store.list_tasks("projects/p/locations/l/queues/none") == []


def test_count_tasks_by_state(store: TaskStore) -> None:
    assert store.count_tasks(Q) == {"QUEUED": 0, "DISPATCHING": 0, "EXHAUSTED": 0}
    for task_id in ("a", "b", "c", "d"):
        store.insert_task(task(task_id), now=0.0)
    store.insert_task(task("e").replace(state=TaskState.EXHAUSTED), now=0.0)
    store.insert_task(task("f", queue=Q2), now=0.0)
    claim(store, "a")
    assert store.count_tasks(Q) == {"QUEUED": 3, "DISPATCHING": 1, "EXHAUSTED": 1}


def test_list_tasks_in_state_pages_by_schedule_time_then_insertion(store: TaskStore) -> None:
    for task_id, at in (("late", 300.0), ("tie-1", 200.0), ("early", 100.0), ("tie-2", 200.0)):
        store.insert_task(task(task_id, schedule_time=at), now=0.0)
    store.insert_task(task("gone").replace(state=TaskState.EXHAUSTED), now=0.0)
    store.insert_task(task("elsewhere", queue=Q2), now=0.0)
    claim(store, "late")
    first = store.list_tasks_in_state(Q, TaskState.QUEUED, limit=2)
    assert ids(first) == ["early", "tie-1"]
    last = first[-1]
    rest = store.list_tasks_in_state(Q, TaskState.QUEUED, after=(last.schedule_time, last.uid), limit=2)
    assert ids(rest) == ["tie-2"]  # the tie is not lost or repeated across the page boundary
    assert ids(store.list_tasks_in_state(Q, TaskState.DISPATCHING)) == ["late"]
    assert ids(store.list_tasks_in_state(Q, TaskState.EXHAUSTED)) == ["gone"]
    assert store.list_tasks_in_state(Q, TaskState.QUEUED, limit=0) == []


def test_count_tasks_upto_splits_due_and_later_and_caps(store: TaskStore) -> None:
    for index in range(5):
        store.insert_task(task(f"due{index}", schedule_time=10.0 + index), now=0.0)
    for index in range(3):
        store.insert_task(task(f"later{index}", schedule_time=100.0 + index), now=0.0)
    store.insert_task(task("gone").replace(state=TaskState.EXHAUSTED), now=0.0)
    store.insert_task(task("elsewhere", schedule_time=0.0, queue=Q2), now=0.0)
    claim(store, "due0")
    assert store.count_tasks_upto(Q, now=50.0, cap=100) == TaskCounts(
        due=4, later=3, dispatching=1, exhausted=1
    )
    assert store.count_tasks_upto(Q, now=14.0, cap=3) == TaskCounts(
        due=3, later=3, dispatching=1, exhausted=1
    )
    assert store.count_tasks_upto(Q2, now=14.0, cap=3) == TaskCounts(
        due=1, later=0, dispatching=0, exhausted=0
    )


def test_purge_deletes_tasks_created_up_to_purge_time(store: TaskStore) -> None:
    store.insert_task(task("old", create_time=10.0), now=0.0)
    store.insert_task(task("old-busy", create_time=19.0), now=0.0)
    store.insert_task(task("old-exhausted", create_time=5.0).replace(state=TaskState.EXHAUSTED), now=0.0)
    store.insert_task(task("at", create_time=20.0), now=0.0)  # same clock reading: created before the call
    store.insert_task(task("new", create_time=30.0), now=0.0)
    store.insert_task(task("other", create_time=1.0, queue=Q2), now=0.0)
    claim(store, "old-busy")
    assert store.purge(Q, purge_time=20.0, tombstone_until=100.0) == 4
    assert ids(store.list_tasks(Q, include_exhausted=True)) == ["new"]
    for task_id in ("old", "old-busy", "old-exhausted", "at"):
        assert store.task_tombstoned(name(task_id), now=99.0) is True
        with pytest.raises(AlreadyExists, match="existed too recently"):
            store.insert_task(task(task_id), now=99.0)
    assert store.task_tombstoned(name("new"), now=0.0) is False
    assert ids(store.list_tasks(Q2)) == ["other"]
    assert store.purge(Q, purge_time=20.0, tombstone_until=100.0) == 0


def test_recover_in_flight(store: TaskStore) -> None:
    assert store.recover_in_flight() == 0
    store.insert_task(task("a", schedule_time=10.0), now=0.0)
    store.insert_task(task("b", schedule_time=20.0), now=0.0)
    store.insert_task(task("c", schedule_time=30.0, queue=Q2), now=0.0)
    store.insert_task(task("e").replace(state=TaskState.EXHAUSTED), now=0.0)
    store.claim_due(Q, now=100.0, limit=1)
    store.claim_due(Q2, now=100.0, limit=1)
    assert store.recover_in_flight() == 2
    recovered = store.get_task(name("a"))
    assert recovered is not None
    assert recovered.state is TaskState.QUEUED
    assert recovered.dispatch_count == 1
    assert store.count_tasks(Q) == {"QUEUED": 2, "DISPATCHING": 0, "EXHAUSTED": 1}
    assert ids(store.claim_due(Q, now=100.0, limit=5)) == ["a", "b"]
    assert ids(store.claim_due(Q2, now=100.0, limit=5)) == ["c"]


def test_next_schedule_time(store: TaskStore) -> None:
    assert store.next_schedule_time(Q) is None
    store.insert_task(task("a", schedule_time=40.0), now=0.0)
    store.insert_task(task("b", schedule_time=30.0), now=0.0)
    store.insert_task(task("e", schedule_time=1.0).replace(state=TaskState.EXHAUSTED), now=0.0)
    store.insert_task(task("o", schedule_time=2.0, queue=Q2), now=0.0)
    assert store.next_schedule_time(Q) == 30.0  # not due yet still counts
    claim(store, "b")
    assert store.next_schedule_time(Q) == 40.0
    store.delete_task(name("a"), tombstone_until=1.0)
    assert store.next_schedule_time(Q) is None


def test_prune_drops_expired_tombstones_and_orphaned_history(store: TaskStore) -> None:
    store.put_queue(Queue(name=Q2))
    for task_id in ("early", "late"):
        store.insert_task(task(task_id), now=0.0)
        claimed = claim(store, task_id)
        until = 50.0 if task_id == "early" else 500.0
        assert store.finish_attempt(claimed, Attempt(100.0, 100.0, 101.0, 200), tombstone_until=until)
    store.insert_task(task("alive"), now=0.0)
    alive = claim(store, "alive")
    assert store.finish_attempt(alive.replace(state=TaskState.QUEUED), Attempt(100.0, 100.0), None)
    assert store.delete_queue(Q2, tombstone_until=60.0)

    assert store.prune(now=60.0) == 2
    assert store.attempts(name("early")) == []
    assert store.attempts(name("late")) == [Attempt(100.0, 100.0, 101.0, 200)]
    assert store.attempts(name("alive")) == [Attempt(100.0, 100.0)]
    assert store.task_tombstoned(name("late"), now=60.0) is True
    assert store.queue_tombstoned(Q2, now=0.0) is False
    assert store.prune(now=60.0) == 0
    assert store.prune(now=500.0) == 1
    assert store.attempts(name("late")) == []


def test_reset_deletes_everything(store: TaskStore) -> None:
    store.put_queue(Queue(name=Q))
    store.put_queue(Queue(name=Q2))
    store.insert_task(task("a"), now=0.0)
    store.insert_task(task("b"), now=0.0)
    store.finish_attempt(claim(store, "a"), Attempt(1.0, 2.0), tombstone_until=100.0)
    store.delete_queue(Q2, tombstone_until=100.0)
    store.reset()
    assert store.list_queues(PARENT) == []
    assert store.list_tasks(Q, include_exhausted=True) == []
    assert store.attempts(name("a")) == []
    assert store.task_tombstoned(name("a"), now=0.0) is False
    assert store.queue_tombstoned(Q2, now=0.0) is False
    store.insert_task(task("a"), now=0.0)
    assert ids(store.claim_due(Q, now=1000.0, limit=5)) == ["a"]


POLICY = {
    "version": 1,
    "bindings": [{"role": "roles/cloudtasks.enqueuer", "members": ["user:dev@example.com"]}],
}


def test_iam_policy_is_stored_per_queue_replaced_and_deleted_with_its_queue(store: TaskStore) -> None:
    store.put_queue(Queue(name=Q))
    store.put_queue(Queue(name=Q2))
    assert store.get_iam_policy(Q) is None
    assert store.put_iam_policy(Q, POLICY) is True
    assert store.get_iam_policy(Q) == POLICY
    assert store.get_iam_policy(Q2) is None
    read = store.get_iam_policy(Q)
    assert read is not None
    read["bindings"].clear()  # a copy: the stored policy is unchanged
    assert store.get_iam_policy(Q) == POLICY
    assert store.put_iam_policy(Q, {"version": 3}) is True
    assert store.get_iam_policy(Q) == {"version": 3}
    assert store.delete_queue(Q, tombstone_until=10.0)
    store.put_queue(Queue(name=Q))  # the same name again: a new queue, no policy
    assert store.get_iam_policy(Q) is None


def test_iam_policy_of_a_missing_queue_is_not_stored(store: TaskStore) -> None:
    assert store.put_iam_policy(Q, POLICY) is False
    store.put_queue(Queue(name=Q))
    assert store.get_iam_policy(Q) is None


def test_reset_deletes_iam_policies(store: TaskStore) -> None:
    store.put_queue(Queue(name=Q))
    store.put_iam_policy(Q, POLICY)
    store.reset()
    store.put_queue(Queue(name=Q))
    assert store.get_iam_policy(Q) is None


def test_every_task_field_round_trips(store: TaskStore) -> None:
    full = Task(
        name=name("full"),
        http_request=HttpRequest(
            url="https://example.com/path?q=1",
            http_method=HttpMethod.PATCH,
            headers={"X-Mixed-Case": "Value", "content-type": "application/octet-stream"},
            body=b"\x00\xff\x10binary",
            oidc_token=OidcToken("sa@p.iam.gserviceaccount.com", "https://aud.example"),
        ),
        schedule_time=1_700_000_000.123456789,
        create_time=1_699_999_999.5,
        dispatch_deadline=42.25,
        dispatch_count=3,
        response_count=2,
        execution_count=1,
        first_attempt=Attempt(1_699_999_999.75, 1_700_000_000.000001),
        last_attempt=Attempt(1_700_000_000.1, 1_700_000_000.2, 1_700_000_000.3, None, None),
        retry_config=RetryConfig(
            max_attempts=-1, max_retry_duration=0.0, min_backoff=0.0, max_backoff=0.0, max_doublings=0
        ),
        state=TaskState.QUEUED,
        previous_response=504,
    )
    oauth = Task(
        name=name("oauth"),
        http_request=HttpRequest(
            url="http://localhost:8080/x",
            http_method=HttpMethod.GET,
            oauth_token=OAuthToken("sa@p.iam.gserviceaccount.com", "https://scope.example"),
        ),
        schedule_time=1.0,
        create_time=0.0,
        last_attempt=Attempt(1.0, 2.0, 3.0, 0, RpcStatus(4, "DEADLINE_EXCEEDED")),
        state=TaskState.EXHAUSTED,
    )
    for t in (full, oauth):
        store.insert_task(t, now=0.0)
        assert store.get_task(t.name) == t
    stored = store.get_task(full.name)
    assert stored is not None
    assert stored.http_request.body == b"\x00\xff\x10binary"
    assert list(stored.http_request.headers) == ["X-Mixed-Case", "content-type"]
    assert store.list_tasks(Q, include_exhausted=True) == [full, oauth]
    claimed = store.claim_task(full.name, now=1_700_000_001.0)
    assert claimed is not None
    assert claimed.first_attempt == full.first_attempt
    assert claimed == full.replace(
        state=TaskState.DISPATCHING,
        dispatch_count=4,
        last_attempt=Attempt(full.schedule_time, 1_700_000_001.0),
    )
    history = [
        Attempt(1.0, 2.0),
        Attempt(1.5, 2.5, 3.5, 502, RpcStatus(14, "UNAVAILABLE")),
        Attempt(1_700_000_000.123456789, 1_700_000_000.987654321, None, None, RpcStatus(4, "deadline")),
    ]
    assert store.finish_attempt(claimed, history[0], None)
    for attempt in history[1:]:
        assert store.finish_attempt(claimed, attempt, None)
    assert store.attempts(full.name) == history


# -- SQLite only ---------------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / DB


def test_sqlite_data_survives_reopen(db_path: Path) -> None:
    s = open_sqlite(db_path)
    try:
        s.put_queue(full_queue())
        s.put_queue(Queue(name=Q2))
        s.insert_task(task("tie-1", schedule_time=5.0), now=0.0)
        s.insert_task(task("gone"), now=0.0)
        s.insert_task(task("busy", schedule_time=1.0), now=0.0)
        done = s.claim_task(name("gone"), now=1.0)
        assert done is not None
        assert s.finish_attempt(done, Attempt(100.0, 1.0, 2.0, 200), tombstone_until=1000.0)
        busy = s.claim_due(Q, now=1.0, limit=1)[0]
        assert s.delete_queue(Q2, tombstone_until=2000.0)
    finally:
        s.close()

    s = open_sqlite(db_path)
    try:
        assert s.get_queue(Q) == full_queue()
        assert s.queue_tombstoned(Q2, now=1999.0) is True
        assert s.task_tombstoned(name("gone"), now=999.0) is True
        assert s.attempts(name("gone")) == [Attempt(100.0, 1.0, 2.0, 200)]
        assert s.get_task(name("busy")) == busy
        assert s.recover_in_flight() == 1
        s.insert_task(task("tie-0", schedule_time=5.0), now=0.0)  # same time, inserted later
        assert ids(s.claim_due(Q, now=10.0, limit=10)) == ["busy", "tie-1", "tie-0"]
    finally:
        s.close()


def test_sqlite_iam_policy_survives_reopen_and_an_older_store_gains_the_table(db_path: Path) -> None:
    s = open_sqlite(db_path)
    try:
        s.put_queue(Queue(name=Q))
        assert s.put_iam_policy(Q, POLICY)
    finally:
        s.close()
    with sqlite3.connect(db_path) as conn:  # a store written before the table existed
        conn.execute("DROP TABLE iam_policies")
    conn.close()
    s = open_sqlite(db_path)
    try:
        assert s.get_queue(Q) == Queue(name=Q)
        assert s.get_iam_policy(Q) is None
        assert s.put_iam_policy(Q, POLICY)
    finally:
        s.close()
    s = open_sqlite(db_path)
    try:
        assert s.get_iam_policy(Q) == POLICY
    finally:
        s.close()


def test_open_store_picks_backend(tmp_path: Path) -> None:
    memory = open_store(None)
    assert isinstance(memory, MemoryTaskStore)
    memory.close()
    data_dir = tmp_path / "nested" / "data"
    s = open_store(data_dir)
    try:
        assert isinstance(s, SQLiteTaskStore)
        s.put_queue(Queue(name=Q))
    finally:
        s.close()
    assert (data_dir / "runner.sqlite3").is_file()


def test_sqlite_garbage_file_is_refused_naming_path(db_path: Path) -> None:
    db_path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(StoreError, match=r"store\.sqlite3") as info:
        open_sqlite(db_path)
    assert str(db_path) in str(info.value)


def test_sqlite_foreign_database_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("CREATE TABLE unrelated (x)")
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError, match="not a task store"):
        open_sqlite(db_path)


def test_sqlite_newer_schema_is_refused(db_path: Path) -> None:
    open_sqlite(db_path).close()
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        open_sqlite(db_path)


def test_sqlite_truncated_file_is_never_an_empty_store(db_path: Path) -> None:
    s = open_sqlite(db_path)
    try:
        s.put_queue(Queue(name=Q))
        for i in range(40):
            s.insert_task(
                task(f"t{i}").replace(http_request=HttpRequest(url="https://e.x/", body=b"x" * 2000)), 0.0
            )
    finally:
        s.close()
    size = db_path.stat().st_size
    assert size > 16 * 4096
    with db_path.open("r+b") as f:
        f.truncate(size // 2)

    def open_and_read() -> None:
        reopened = open_sqlite(db_path)
        try:
            reopened.get_queue(Q)
            reopened.list_tasks(Q)
        finally:
            reopened.close()

    with pytest.raises(StoreError, match=r"store\.sqlite3"):
        open_and_read()


def refuse_tombstone_writes(db_path: Path) -> None:
    """From now on, writing a tombstone fails with 'disk says no' (from another connection)."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(
            "CREATE TRIGGER refuse AFTER INSERT ON task_tombstones "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        conn.commit()
    finally:
        conn.close()


def test_sqlite_failed_write_is_rolled_back_and_wrapped(db_path: Path) -> None:
    s = open_sqlite(db_path)
    try:
        s.insert_task(task("a"), now=0.0)
        refuse_tombstone_writes(db_path)
        with pytest.raises(StoreError, match="disk says no"):
            s.delete_task(name("a"), tombstone_until=10.0)  # deletes the row, then fails on the tombstone
        assert s.get_task(name("a")) == task("a")
        assert ids(s.claim_due(Q, now=1000.0, limit=1)) == ["a"]  # the store is still usable
    finally:
        s.close()
    with pytest.raises(StoreError, match=r"store\.sqlite3"):
        s.get_task(name("a"))  # closed


def test_sqlite_failed_batch_of_outcomes_writes_none_of_them(db_path: Path) -> None:
    s = open_sqlite(db_path)
    try:
        s.insert_task(task("retry"), now=0.0)
        s.insert_task(task("done"), now=0.0)
        retry, done = claim(s, "retry"), claim(s, "done")
        refuse_tombstone_writes(db_path)
        requeued = retry.replace(state=TaskState.QUEUED, schedule_time=300.0)
        batch = [
            FinishedAttempt(requeued, Attempt(100.0, 100.0)),
            FinishedAttempt(done, Attempt(100.0, 100.0), 9.0),
        ]
        with pytest.raises(StoreError, match="disk says no"):
            s.finish_attempts(batch)  # the retry is written, then the success's tombstone fails
        assert s.get_task(retry.name) == retry and s.get_task(done.name) == done  # both still DISPATCHING
        assert s.attempts(retry.name) == [] and s.attempts(done.name) == []
    finally:
        s.close()


def test_sqlite_claim_due_uses_the_due_index(db_path: Path) -> None:
    open_sqlite(db_path).close()
    conn = sqlite3.connect(db_path)
    try:
        plan = " | ".join(
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {CLAIM_DUE_SELECT}", {"queue": Q, "now": 1.0, "limit": 1}
            )
        )
    finally:
        conn.close()
    assert "tasks_due" in plan
    assert "TEMP B-TREE" not in plan  # no sort: the index yields schedule order
    assert "SCAN" not in plan


def damage(db_path: Path, statement: str, *args: object) -> None:
    """Change the database behind the store's back, as a bad edit or a bug of another program would."""
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


def test_sqlite_damaged_rows_are_set_aside_once_and_the_rest_flow(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = open_sqlite(db_path)
    try:
        for task_id in "abcdef":
            s.insert_task(task(task_id), now=0.0)
        damage(db_path, "UPDATE tasks SET http_request = '{not json' WHERE name = ?", name("b"))
        damage(db_path, "UPDATE tasks SET retry_config = '[1]' WHERE name = ?", name("d"))
        damage(db_path, "UPDATE tasks SET state = 'BOGUS' WHERE name = ?", name("f"))
        damage(db_path, "UPDATE tasks SET schedule_time = 'soon' WHERE name = ?", name("e"))
        with caplog.at_level(logging.ERROR, logger="local_runner.store"):
            assert ids(s.list_tasks(Q, limit=2)) == ["a", "c"]  # the page is filled past "b"
            assert ids(s.claim_due(Q, now=1000.0, limit=10)) == ["a", "c"]
            assert s.claim_due(Q, now=1000.0, limit=10) == []
            assert ids(s.list_tasks(Q)) == ["a", "c"]
            assert s.claim_task(name("b"), now=1000.0) is None
            assert s.next_schedule_time(Q) is None  # "e" is never due
            assert ids(s.list_tasks(Q)) == ["a", "c"]
            s.insert_task(task("g"), now=0.0)
            damage(db_path, "UPDATE tasks SET http_request = '{}' WHERE name = ?", name("g"))  # no url
            assert s.claim_due(Q, now=1000.0, limit=10) == []
        assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
            f"task {name(task_id)} cannot be read" for task_id in "bdeg"
        ]  # once each
        assert s.count_tasks(Q) == {"QUEUED": 0, "DISPATCHING": 2, "EXHAUSTED": 0}
        with pytest.raises(StoreError, match="unreadable record"):
            s.get_task(name("b"))
        assert s.delete_task(name("b"), tombstone_until=10.0) is True
        assert s.task_tombstoned(name("b"), now=0.0) is True
    finally:
        s.close()


def test_replay_exhausted_requeues_with_fresh_counts_and_keeps_history(store: TaskStore) -> None:
    store.put_queue(Queue(Q))
    store.insert_task(task("a"), now=0.0)
    [claimed] = store.claim_due(Q, now=100.0, limit=1)
    done = Attempt(100.0, 100.0, 101.0, 500, RpcStatus(13, "HTTP status code 500"))
    assert store.finish_attempt(
        claimed.replace(
            state=TaskState.EXHAUSTED, last_attempt=done, response_count=1, previous_response=500
        ),
        done,
        tombstone_until=3701.0,
    )
    assert store.replay_exhausted(name("missing"), now=200.0) is None
    replayed = store.replay_exhausted(name("a"), now=200.0)
    assert replayed is not None
    assert (replayed.state, replayed.schedule_time, replayed.dispatch_count) == (TaskState.QUEUED, 200.0, 0)
    assert replayed.last_attempt is None and replayed.previous_response is None
    assert store.get_task(name("a")) == replayed
    assert store.replay_exhausted(name("a"), now=201.0) is None  # only exhausted tasks
    assert store.task_tombstoned(name("a"), now=201.0) is False  # a live task holds the name again
    with pytest.raises(AlreadyExists, match=errors.TASK_EXISTS):
        store.insert_task(task("a"), now=201.0)
    assert ids(store.claim_due(Q, now=200.0, limit=5)) == ["a"]
    assert store.attempts(name("a")) == [done]


def test_a_stale_attempt_never_lands_on_a_new_task_of_the_same_name(store: TaskStore) -> None:
    store.put_queue(Queue(Q))
    store.insert_task(task("a"), now=0.0)
    [old] = store.claim_due(Q, now=100.0, limit=1)
    store.reset()  # or delete the queue: the in-flight attempt of the old task is still running
    store.put_queue(Queue(Q))
    store.insert_task(task("a"), now=0.0)
    [new] = store.claim_due(Q, now=100.0, limit=1)
    assert (new.name, new.dispatch_count) == (old.name, old.dispatch_count)
    done = Attempt(100.0, 100.0, 101.0, 200, RpcStatus(0, "OK"))
    assert store.finish_attempt(old, done, tombstone_until=500.0) is False
    assert store.get_task(name("a")) == new
    assert store.finish_attempt(new, done, tombstone_until=500.0) is True


def test_memory_store_is_safe_to_share_between_threads() -> None:
    import threading

    store = MemoryTaskStore()
    store.put_queue(Queue(Q))
    errors_seen: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for i in range(300):
                store.insert_task(task(f"{prefix}{i}"), now=0.0)
                for claimed in store.claim_due(Q, now=1000.0, limit=5):
                    store.finish_attempt(claimed, Attempt(1.0, 1.0, 2.0, 200, RpcStatus(0, "OK")), 10.0)
        except BaseException as error:  # pragma: no cover - reported below
            errors_seen.append(error)

    threads = [threading.Thread(target=writer, args=(prefix,)) for prefix in ("a", "b")]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        store.list_tasks(Q)
        store.count_tasks(Q)
    assert errors_seen == []
