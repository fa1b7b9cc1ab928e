"""An attempt's dispatch ends with its request: recording its outcome does not hold up its queue."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import pytest
from reliability.sink import Sink

from local_runner.clock import VirtualClock
from local_runner.config import RunnerSettings
from local_runner.errors import StoreError
from local_runner.model import HttpRequest, NewTask, Queue, RateLimits
from local_runner.scheduler import MAX_ERROR_BACKOFF
from local_runner.server import RunnerServer
from local_runner.store import FinishedAttempt
from tests.local_runner.test_dispatch_http import eventually

PARENT = "projects/test-proj/locations/us-central1"


@pytest.fixture
def sink() -> Iterator[Sink]:
    target = Sink().start()
    yield target
    target.close()


def test_a_queue_dispatches_its_next_task_while_the_last_outcome_waits_for_the_store(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5)
    clock = VirtualClock(start=float(int(time.time())))
    runner = RunnerServer(settings, clock=clock).start()
    try:
        store = runner.store
        real_finish = store.finish_attempts

        def refuse(finished: Sequence[FinishedAttempt]) -> list[bool]:
            raise StoreError("the disk is busy")

        monkeypatch.setattr(store, "finish_attempts", refuse)
        limits = RateLimits(max_dispatches_per_second=500, max_concurrent_dispatches=1)
        queue = runner.service.create_queue(PARENT, Queue(f"{PARENT}/queues/one", rate_limits=limits)).name
        for index in range(3):
            runner.service.create_task(
                queue, NewTask(HttpRequest(url=f"{sink.url}/t"), name=f"{queue}/tasks/t{index}")
            )
        eventually(lambda: sink.count() == 3)  # one at a time, none of the outcomes stored yet
        assert sink.peak_in_flight == 1
        assert store.count_tasks(queue)["DISPATCHING"] == 3
        monkeypatch.setattr(store, "finish_attempts", real_finish)
        clock.advance(MAX_ERROR_BACKOFF)  # the refused outcomes are written again after their pause
        eventually(lambda: store.count_tasks(queue) == {"QUEUED": 0, "DISPATCHING": 0, "EXHAUSTED": 0})
    finally:
        runner.stop()
    assert sink.count() == 3
