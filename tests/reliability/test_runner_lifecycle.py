"""Stopping and starting the runner: one runner per data directory, SIGTERM, a damaged task row.

Every test but the one on the shutdown grace runs ``runner serve`` as a real process.

The runner's own SQLite file is the evidence: attempt history says what was stored, and every delivery
the target saw is counted, so a lost task or a re-sent one shows up as a count.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from reliability.api import RunnerApi
from reliability.figures import Figures, Row
from reliability.polling import eventually
from reliability.sink import Gate, Sink
from testsupport.runner_process import RunnerProcess

from local_runner.config import RunnerSettings
from local_runner.model import TaskState
from local_runner.server import RunnerServer
from local_runner.store import DB_FILENAME, SQLiteTaskStore

IN_FLIGHT = 6
QUEUED_BEHIND = 4


def short(name: str) -> str:
    return name.rpartition("/")[2]


def test_second_runner_on_a_data_directory_in_use_is_refused(
    tmp_path: Path,
    runner_process: Callable[..., RunnerProcess],
    gate: Gate,
    held_sink: Sink,
    figures: Figures,
) -> None:
    first = runner_process(tmp_path)
    api = RunnerApi(first.url)
    queue = api.create_queue("locked")
    api.create_task(queue, held_sink.url + "/w", task_id="held")
    eventually(lambda: held_sink.in_flight == 1)
    second = subprocess.run(
        [sys.executable, "-m", "local_runner", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"Error: The data directory {tmp_path} is in use by another runner (pid {first.pid}); stop it "
        "or use another data directory."
    ]
    gate.open.set()
    api.wait_idle(queue=queue)
    assert held_sink.per_task() == Counter({"held": 1})  # the refused runner re-queued nothing
    first.kill()  # the kernel drops a killed runner's lock: the next one starts on the same data
    again = runner_process(tmp_path)
    assert RunnerApi(again.url).ok("GET", f"v2/{queue}")["name"] == queue
    figures.record(
        Row(
            "second `runner serve` on a data directory in use",
            "1 attempt in flight",
            "a second runner started on the same directory; then the first killed (SIGKILL)",
            lost=0,
            duplicates=0,
        )
    )


def test_sigterm_waits_for_attempts_in_flight_stores_them_and_exits_0(
    tmp_path: Path,
    runner_process: Callable[..., RunnerProcess],
    gate: Gate,
    held_sink: Sink,
    figures: Figures,
) -> None:
    runner = runner_process(tmp_path)
    api = RunnerApi(runner.url)
    queue = api.create_queue("term", rateLimits={"maxConcurrentDispatches": IN_FLIGHT})
    names = [
        api.create_task(queue, held_sink.url + "/w", task_id=f"t-{i}")
        for i in range(IN_FLIGHT + QUEUED_BEHIND)
    ]
    eventually(lambda: held_sink.in_flight == IN_FLIGHT)
    os.kill(runner.pid, signal.SIGTERM)
    eventually(lambda: any(f"for {IN_FLIGHT} attempt(s) in flight" in line for line in runner.log))
    gate.open.set()  # the handlers answer after the runner began to stop
    assert runner.wait() == 0
    assert held_sink.count() == IN_FLIGHT

    answered = set(held_sink.per_task())
    store = SQLiteTaskStore(tmp_path / DB_FILENAME)
    try:
        for name in names:
            history = [attempt.http_status for attempt in store.attempts(name)]
            task = store.get_task(name)
            if short(name) in answered:  # acknowledged: stored as done
                assert (history, task) == ([200], None)
            else:  # never sent: still queued
                assert history == [] and task is not None and task.state is TaskState.QUEUED
    finally:
        store.close()

    again = runner_process(tmp_path)
    RunnerApi(again.url).wait_idle(queue=queue)
    assert held_sink.per_task() == Counter({short(name): 1 for name in names})  # none lost, none re-sent
    figures.record(
        Row(
            "SIGTERM while attempts are in flight, then restart",
            f"{IN_FLIGHT} attempts in flight, {QUEUED_BEHIND} queued behind them",
            "SIGTERM (docker stop, systemd); handlers answer during the shutdown grace",
            lost=0,
            duplicates=0,
        )
    )


def test_attempt_still_running_after_the_grace_is_sent_again_after_restart(
    tmp_path: Path, gate: Gate, held_sink: Sink
) -> None:
    settings = RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.2)  # in process: a short grace
    with RunnerServer(settings) as runner:
        api = RunnerApi(runner.base_url)
        queue = api.create_queue("grace")
        name = api.create_task(queue, held_sink.url + "/w", task_id="slow")
        eventually(lambda: held_sink.in_flight == 1)
    store = SQLiteTaskStore(tmp_path / DB_FILENAME)
    try:
        task = store.get_task(name)
        assert task is not None and task.state is TaskState.DISPATCHING  # cut short, not acknowledged
        assert store.attempts(name) == []
    finally:
        store.close()
    gate.open.set()
    with RunnerServer(settings) as runner:
        RunnerApi(runner.base_url).wait_idle(queue=queue)
    assert [(d.retry_count, d.status) for d in held_sink.snapshot()] == [(0, None), (1, 200)]


def test_damaged_task_row_is_set_aside_and_its_queue_keeps_flowing(
    tmp_path: Path,
    runner_process: Callable[..., RunnerProcess],
    gate: Gate,
    held_sink: Sink,
    figures: Figures,
) -> None:
    gate.open.set()
    runner = runner_process(tmp_path)
    api = RunnerApi(runner.url)
    queue = api.create_queue("damaged")
    api.ok("POST", f"v2/{queue}:pause")
    names = [api.create_task(queue, held_sink.url + "/w", task_id=f"t-{i}") for i in range(10)]
    damaged = names[3]
    conn = sqlite3.connect(tmp_path / DB_FILENAME)  # while the runner has the file open
    try:
        conn.execute("UPDATE tasks SET http_request = '{not json' WHERE name = ?", (damaged,))
        conn.commit()
    finally:
        conn.close()
    api.ok("POST", f"v2/{queue}:resume")
    api.wait_idle(queue=queue)
    api.create_task(queue, held_sink.url + "/w", task_id="after")
    api.wait_idle(queue=queue)

    expected = Counter({short(name): 1 for name in names if name != damaged} | {"after": 1})
    assert held_sink.per_task() == expected
    errors = [line for line in runner.log if " ERROR " in line]
    assert len(errors) == 1 and damaged in errors[0], errors  # loud, once
    listed = api.ok("GET", f"v2/{queue}/tasks")
    assert "tasks" not in listed  # the others are done; the damaged one is not listed
    assert api.call("DELETE", f"v2/{damaged}").status_code == 200  # and can be removed
    assert runner.interrupt() == 0
    figures.record(
        Row(
            "damaged task row (undecodable JSON) written into the live database",
            "10 tasks in one queue, 1 more after",
            "sqlite3 edits one row while the runner runs",
            lost=0,
            duplicates=0,
        )
    )
