"""At-least-once across crashes: SIGKILL the runner process mid-dispatch, restart it, lose nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local_runner.model import HttpRequest, Queue, RateLimits, RetryConfig, Task
from local_runner.store import DB_FILENAME, SQLiteTaskStore

PARENT = "projects/local-project/locations/us-central1"
QUEUE = f"{PARENT}/queues/crash"


class Deliveries:
    """Records each delivery; ``fail-*`` tasks answer 500 on their first delivery, ``slow-*`` take 300 ms."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, int, int]] = []  # (task id, retry count, status answered)

    def __call__(self, request: Request) -> Response:
        task_id = request.headers["X-CloudTasks-TaskName"]
        retry = int(request.headers["X-CloudTasks-TaskRetryCount"])
        if task_id.startswith("slow-"):
            threading.Event().wait(0.3)
        with self.lock:
            seen = sum(1 for t, _, _ in self.log if t == task_id)
            status = 500 if task_id.startswith("fail-") and seen == 0 else 200
            self.log.append((task_id, retry, status))
        return Response(status=status)

    def succeeded(self) -> set[str]:
        with self.lock:
            return {t for t, _, status in self.log if status == 200}

    def count(self) -> int:
        with self.lock:
            return len(self.log)


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        threading.Event().wait(0.01)


@pytest.fixture
def target() -> Iterator[tuple[HTTPServer, Deliveries]]:
    server = HTTPServer(threaded=True)
    deliveries = Deliveries()
    server.expect_request("/work").respond_with_handler(deliveries)
    server.start()
    yield server, deliveries
    server.clear()
    server.stop()


def seed(data_dir: Path, url: str, now: float) -> list[str]:
    """Create the queue and its tasks directly in the runner's database, as a previous run would have."""
    store = SQLiteTaskStore(data_dir / DB_FILENAME)
    store.put_queue(
        Queue(
            QUEUE,
            rate_limits=RateLimits(max_dispatches_per_second=40, max_concurrent_dispatches=8),
            retry_config=RetryConfig(min_backoff=0.2, max_backoff=0.2),
        )
    )
    ids = [f"ok-{i}" for i in range(40)] + [f"slow-{i}" for i in range(12)] + [f"fail-{i}" for i in range(8)]
    ids += [f"later-{i}" for i in range(10)]
    for task_id in ids:
        schedule = now + 1.5 if task_id.startswith("later-") else now
        store.insert_task(
            Task(f"{QUEUE}/tasks/{task_id}", HttpRequest(url=url), schedule_time=schedule, create_time=now),
            now,
        )
    store.close()
    return ids


def test_sigkill_mid_dispatch_loses_nothing(
    tmp_path: Path,
    target: tuple[HTTPServer, Deliveries],
    runner_process: Callable[..., Any],
) -> None:
    server, deliveries = target
    ids = seed(tmp_path, server.url_for("/work"), time.time())
    kills = 0
    for threshold in (8, 25, 45):
        runner = runner_process(tmp_path)
        wait_until(lambda threshold=threshold: deliveries.count() >= threshold, timeout=30)
        runner.kill()
        kills += 1
    final = runner_process(tmp_path)
    wait_until(lambda: deliveries.succeeded() == set(ids), timeout=30)
    assert final.interrupt() == 0

    store = SQLiteTaskStore(tmp_path / DB_FILENAME)
    try:
        assert store.list_tasks(QUEUE, include_exhausted=True) == []  # every task acknowledged and deleted
        counts = Counter(task_id for task_id, _, _ in deliveries.log)
        for task_id in ids:
            history = store.attempts(f"{QUEUE}/tasks/{task_id}")
            # Each re-delivery beyond the recorded attempts was a dispatch cut short by a kill.
            assert counts[task_id] >= len(history) >= 1
            assert history[-1].http_status == 200
        cut_short = sum(counts[t] - len(store.attempts(f"{QUEUE}/tasks/{t}")) for t in ids)
        assert cut_short <= kills * 8  # at most max_concurrent_dispatches in flight per kill
    finally:
        store.close()
    # Every dispatch is counted before it is sent, so a re-delivery after a crash carries a higher
    # retry count than the delivery the crash interrupted.
    for task_id in ids:
        retries = [retry for t, retry, _ in deliveries.log if t == task_id]
        assert retries == sorted(set(retries)), (task_id, retries)
        assert retries[0] <= kills  # only a dispatch cut short by a kill can go unseen


def test_ctrl_c_stops_cleanly_and_keeps_queued_tasks(
    tmp_path: Path,
    target: tuple[HTTPServer, Deliveries],
    runner_process: Callable[..., Any],
) -> None:
    server, deliveries = target
    now = time.time()
    store = SQLiteTaskStore(tmp_path / DB_FILENAME)
    store.put_queue(Queue(QUEUE))
    store.insert_task(
        Task(
            f"{QUEUE}/tasks/ok-0",
            HttpRequest(url=server.url_for("/work")),
            schedule_time=now,
            create_time=now,
        ),
        now,
    )
    store.insert_task(
        Task(
            f"{QUEUE}/tasks/ok-later",
            HttpRequest(url=server.url_for("/work")),
            schedule_time=now + 3600,
            create_time=now,
        ),
        now,
    )
    store.close()
    runner = runner_process(tmp_path)
    wait_until(lambda: deliveries.succeeded() == {"ok-0"}, timeout=20)
    assert runner.interrupt() == 0
    store = SQLiteTaskStore(tmp_path / DB_FILENAME)
    try:
        assert [t.task_id for t in store.list_tasks(QUEUE)] == ["ok-later"]
        assert store.get_queue(QUEUE) is not None
    finally:
        store.close()


def test_iam_policies_survive_a_restart(tmp_path: Path, runner_process: Callable[..., Any]) -> None:
    """SetIamPolicy is kept in the store like queues and tasks: a restarted runner answers the same policy."""
    queue = f"{PARENT}/queues/guarded"
    policy = {
        "version": 1,
        "bindings": [{"role": "roles/cloudtasks.enqueuer", "members": ["user:dev@example.com"]}],
    }
    runner = runner_process(tmp_path)
    requests.post(f"{runner.url}/v2/{PARENT}/queues", json={"name": queue}, timeout=10).raise_for_status()
    answer = requests.post(f"{runner.url}/v2/{queue}:setIamPolicy", json={"policy": policy}, timeout=10)
    answer.raise_for_status()
    stored = answer.json()
    assert runner.interrupt() == 0

    restarted = runner_process(tmp_path)
    got = requests.post(f"{restarted.url}/v2/{queue}:getIamPolicy", json={}, timeout=10)
    got.raise_for_status()
    assert got.json() == stored and stored["bindings"] == policy["bindings"]
    assert restarted.interrupt() == 0
