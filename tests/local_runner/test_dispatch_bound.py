"""Bounded dispatch over real HTTP: claims wait for a connection slot, and slots are handed out in turn."""

from __future__ import annotations

import time

from reliability.sink import Gate, Sink

from local_runner.clock import VirtualClock
from local_runner.config import RunnerSettings
from local_runner.model import HttpRequest, NewTask, Queue
from local_runner.server import RunnerServer
from tests.local_runner.test_dispatch_http import eventually

PARENT = "projects/test-proj/locations/us-central1"


def start_runner(per_host: int, clock: VirtualClock | None = None) -> RunnerServer:
    settings = RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5, max_connections_per_host=per_host)
    return RunnerServer(settings, clock=clock or VirtualClock(start=float(int(time.time())))).start()


def fill(runner: RunnerServer, queue_id: str, url: str, count: int, paused: bool = True) -> str:
    """A queue holding ``count`` due tasks for ``url`` (paused, unless asked otherwise)."""
    name = runner.service.create_queue(PARENT, Queue(f"{PARENT}/queues/{queue_id}")).name
    if paused:
        runner.service.pause_queue(name)
    for index in range(count):
        runner.service.create_task(
            name, NewTask(HttpRequest(url=url), name=f"{name}/tasks/{queue_id}-{index}")
        )
    return name


def all_done(runner: RunnerServer, *queues: str) -> bool:
    return all(
        runner.store.count_tasks(queue) == {"QUEUED": 0, "DISPATCHING": 0, "EXHAUSTED": 0} for queue in queues
    )


def test_tasks_that_cannot_be_sent_yet_stay_queued(held_sink: Sink, gate: Gate) -> None:
    runner = start_runner(per_host=2)
    try:
        queue = fill(runner, "q", f"{held_sink.url}/t", 10, paused=False)
        eventually(lambda: held_sink.in_flight == 2)
        eventually(lambda: runner.scheduler is not None and runner.scheduler.waits_for_slot(queue))
        assert runner.store.count_tasks(queue) == {"QUEUED": 8, "DISPATCHING": 2, "EXHAUSTED": 0}
        gate.open.set()
        eventually(lambda: all_done(runner, queue))
    finally:
        runner.stop()
    assert held_sink.count() == 10
    assert held_sink.peak_in_flight == 2
    assert set(held_sink.per_task().values()) == {1}


def test_a_hot_queue_does_not_starve_the_others(held_sink: Sink, gate: Gate) -> None:
    runner = start_runner(per_host=2)
    try:
        hot = fill(runner, "hot", f"{held_sink.url}/t", 60)
        cold = fill(runner, "cold", f"{held_sink.url}/t", 6)
        runner.service.resume_queue(hot)
        eventually(lambda: held_sink.in_flight == 2)  # the hot queue holds every slot...
        runner.service.resume_queue(cold)
        scheduler = runner.scheduler
        assert scheduler is not None
        # ...and the cold queue waits in line, with the one task it claimed to learn its destination.
        eventually(lambda: scheduler.waits_for_slot(cold))
        assert runner.store.count_tasks(hot) == {"QUEUED": 58, "DISPATCHING": 2, "EXHAUSTED": 0}
        assert runner.store.count_tasks(cold) == {"QUEUED": 5, "DISPATCHING": 1, "EXHAUSTED": 0}
        gate.open.set()
        eventually(lambda: all_done(runner, hot, cold))
    finally:
        runner.stop()
    order = [delivery.queue for delivery in held_sink.snapshot()]
    assert order.count("cold") == 6 and order.count("hot") == 60
    # Turns alternate while both wait: the cold queue is through after about twice its own tasks.
    last_cold = max(index for index, queue in enumerate(order) if queue == "cold")
    assert last_cold < 2 + 2 * 6 + 2, order


def test_run_task_waits_for_a_connection_slot_instead_of_failing(held_sink: Sink, gate: Gate) -> None:
    runner = start_runner(per_host=1)
    try:
        busy = fill(runner, "busy", f"{held_sink.url}/t", 1, paused=False)
        eventually(lambda: held_sink.in_flight == 1)
        paused = fill(runner, "paused", f"{held_sink.url}/t", 1)
        runner.service.run_task(f"{paused}/tasks/paused-0")
        scheduler = runner.scheduler
        assert scheduler is not None
        eventually(lambda: len(scheduler.slots.waiting) == 1)  # the RunTask attempt waits for the slot
        assert held_sink.count() == 0
        gate.open.set()
        eventually(lambda: all_done(runner, busy, paused))
        attempts = [runner.store.attempts(f"{q}/tasks/{q.rpartition('/')[2]}-0") for q in (busy, paused)]
    finally:
        runner.stop()
    assert [[a.http_status for a in history] for history in attempts] == [[200], [200]]
    assert held_sink.peak_in_flight == 1


def test_the_dispatch_deadline_starts_when_the_request_is_sent(held_sink: Sink, gate: Gate) -> None:
    clock = VirtualClock(start=float(int(time.time())))
    runner = start_runner(per_host=1, clock=clock)
    try:
        busy = fill(runner, "busy", f"{held_sink.url}/t", 1, paused=False)
        eventually(lambda: held_sink.in_flight == 1)
        paused = fill(runner, "paused", f"{held_sink.url}/t", 0)
        waiting = runner.service.create_task(
            paused, NewTask(HttpRequest(url=f"{held_sink.url}/t"), dispatch_deadline=15)
        )
        runner.service.run_task(waiting.name)
        scheduler = runner.scheduler
        assert scheduler is not None
        eventually(lambda: len(scheduler.slots.waiting) == 1)
        clock.advance(60)  # four times the waiting task's deadline, spent waiting for the connection
        gate.open.set()
        eventually(lambda: all_done(runner, busy, paused))
        attempts = runner.store.attempts(waiting.name)
    finally:
        runner.stop()
    assert [attempt.http_status for attempt in attempts] == [200]
