"""A queue page costs the same whatever the backlog: counted in SQLite VM steps, not timed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from local_runner.clock import VirtualClock
from local_runner.console.stats import COUNT_CAP
from local_runner.model import HttpRequest, Queue, Task
from local_runner.server import RunnerServer
from local_runner.store import SQLiteTaskStore

from .conftest import PARENT, Page, start_runner

SMALL = COUNT_CAP + 100  # past the counts' cap, so that only the listing could grow with the backlog
BIG = 3 * COUNT_CAP


def fill(runner: RunnerServer, queue: str, count: int) -> None:
    now = runner.clock.now()
    request = HttpRequest(url="http://127.0.0.1:9/")
    tasks = [
        Task(name=f"{queue}/tasks/t{i:07d}", http_request=request, schedule_time=now + i, create_time=now)
        for i in range(count)
    ]
    assert runner.store.insert_tasks(tasks, now) == [None] * count


def vm_steps(runner: RunnerServer, request: Callable[[], object]) -> int:
    """SQLite virtual-machine steps (in thousands) the runner's store runs while ``request`` is served."""
    assert isinstance(runner.store, SQLiteTaskStore)
    conn: sqlite3.Connection = runner.store._conn
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        request()
    finally:
        conn.set_progress_handler(None, 0)
    return steps[0]


@pytest.mark.parametrize("path", ["", "?state=queued"])
def test_queue_page_cost_does_not_grow_with_the_backlog(tmp_path: Path, path: str) -> None:
    runner = start_runner(VirtualClock(), data_dir=tmp_path)
    try:
        page = Page(runner.base_url)
        small, big = f"{PARENT}/queues/small", f"{PARENT}/queues/big"
        for name, count in ((small, SMALL), (big, BIG)):
            runner.service.create_queue(PARENT, Queue(name))
            runner.service.pause_queue(name)
            fill(runner, name, count)

        def show(name: str) -> Callable[[], object]:
            def get() -> None:
                answer = page.get(f"/console/{name}{path}")
                assert answer.status_code == 200 and answer.text.count('class="task-link"') == 50
                assert 'data-stat="later">10,000+<' in answer.text

            return get

        small_cost, big_cost = vm_steps(runner, show(small)), vm_steps(runner, show(big))
        assert big_cost <= small_cost * 1.2 + 5, (small_cost, big_cost)
        # The measure sees a scan: counting every task of the big queue costs far more than its page.
        scan = vm_steps(runner, lambda: runner.store.count_tasks(big))
        assert scan > big_cost, (scan, big_cost)
    finally:
        runner.stop()
