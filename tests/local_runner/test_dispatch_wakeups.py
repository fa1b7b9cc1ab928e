"""Dispatch at the rate cap: shared deadline timers, outcomes finished by their recorder, token waits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from reliability.sink import Sink

from local_runner import scheduler as scheduler_module
from local_runner.clock import SystemClock
from local_runner.config import RunnerSettings
from local_runner.dispatch import DeadlineTimers, Dispatcher
from local_runner.engine.attempts import Failure, Outcome
from local_runner.engine.delivery import OutboundRequest
from local_runner.engine.pacing import QueuePacer
from local_runner.loop_batch import LoopBatch
from local_runner.model import HttpRequest, NewTask, Queue, RateLimits
from local_runner.scheduler import MIN_TOKEN_WAIT, next_claim_time
from local_runner.server import RunnerServer
from local_runner.store import DB_FILENAME, SQLiteTaskStore
from tests.local_runner.test_dispatch_http import eventually

PARENT = "projects/test-proj/locations/us-central1"
ATTEMPTS = 50


async def answer_later(request: web.Request) -> web.StreamResponse:
    """Holds each request a moment, so that every attempt of a test is in flight at once."""
    await asyncio.sleep(0.2)
    return web.Response(status=200)


@pytest.fixture
def sink() -> Iterator[Sink]:
    target = Sink().start()
    yield target
    target.close()


@pytest.fixture
def slow_sink() -> Iterator[Sink]:
    target = Sink(answer_later).start()
    yield target
    target.close()


def test_attempts_in_flight_together_share_one_deadline_timer(slow_sink: Sink) -> None:
    async def scenario() -> tuple[list[Outcome], int, int]:
        loop = asyncio.get_running_loop()
        timers_set = 0
        call_at = loop.call_at

        def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            nonlocal timers_set
            timers_set += 1
            return call_at(when, callback, *args, **kwargs)

        dispatcher = Dispatcher(SystemClock())
        await dispatcher.start()
        loop.call_at = counting_call_at  # type: ignore[method-assign]
        try:
            request = OutboundRequest("POST", f"{slow_sink.url}/t", {}, b"{}")
            outcomes = await asyncio.gather(*(dispatcher.send(request, 60) for _ in range(ATTEMPTS)))
        finally:
            loop.call_at = call_at  # type: ignore[method-assign]
            await dispatcher.close()
        assert dispatcher._deadlines is not None
        return outcomes, timers_set, dispatcher._deadlines.timers

    outcomes, timers_set, left = asyncio.run(scenario())
    assert [outcome.http_status for outcome in outcomes] == [200] * ATTEMPTS
    # One timer per deadline tick (two if the attempts straddle one) and the client's idle sweep,
    # instead of one per attempt; none is left once the attempts ended.
    assert timers_set <= 3
    assert left == 0


def test_a_deadline_cancels_its_attempt_when_it_passed_never_before() -> None:
    async def scenario() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        timers = DeadlineTimers(loop)
        never: asyncio.Future[None] = loop.create_future()

        async def attempt() -> float:
            deadline = timers.start(0.12)
            try:
                await never
            except asyncio.CancelledError:
                assert deadline.passed()
                return loop.time()
            finally:
                timers.end(deadline)
            raise AssertionError("the attempt was not cut short")

        started = loop.time()
        ended = await loop.create_task(attempt())
        return started, ended, timers.timers

    started, ended, left = asyncio.run(scenario())
    assert ended >= started + 0.12
    assert left == 0


def test_cancelling_an_attempt_is_not_taken_for_its_deadline(slow_sink: Sink) -> None:
    async def scenario() -> None:
        dispatcher = Dispatcher(SystemClock())
        await dispatcher.start()
        try:
            send = asyncio.ensure_future(
                dispatcher.send(OutboundRequest("POST", f"{slow_sink.url}/t", {}, b"{}"), 60)
            )
            for _ in range(2000):  # bounded: the request reaches the sink
                if slow_sink.in_flight:
                    break
                await asyncio.sleep(0.005)
            send.cancel()
            with pytest.raises(asyncio.CancelledError):
                await send
        finally:
            await dispatcher.close()

    asyncio.run(scenario())


def test_a_deadline_outcome_is_still_a_deadline_failure(slow_sink: Sink) -> None:
    async def scenario() -> Outcome:
        dispatcher = Dispatcher(SystemClock())
        await dispatcher.start()
        try:
            return await dispatcher.send(OutboundRequest("POST", f"{slow_sink.url}/t", {}, b"{}"), 0.05)
        finally:
            await dispatcher.close()

    outcome = asyncio.run(scenario())
    assert outcome.failure is Failure.DEADLINE and outcome.http_status is None


def test_put_hands_each_item_its_result_after_one_write() -> None:
    writes: list[list[str]] = []
    results: list[str | BaseException] = []

    def write(items: list[str]) -> list[str | BaseException]:
        writes.append(items)
        return [ValueError(item) if item == "bad" else item.upper() for item in items]

    async def scenario() -> bool:
        batch: LoopBatch[str, str] = LoopBatch(write, gather_s=0.01)
        for item in ("a", "bad", "b"):
            batch.put(item, results.append)
        writer = batch.writer
        assert writer is not None
        await writer
        return batch.writer is None

    assert asyncio.run(scenario())
    assert writes == [["a", "bad", "b"]]
    assert results[0::2] == ["A", "B"] and isinstance(results[1], ValueError)


def test_stopping_writes_the_outcomes_still_gathering_for_the_store(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outcomes wait to share a transaction; the attempt's coroutine is over by then. Stopping must
    # still write them, or the task would be delivered a second time after the restart.
    monkeypatch.setattr(scheduler_module, "RECORD_WAIT", 0.3)
    runner = RunnerServer(RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=5.0)).start()
    try:
        queue = runner.service.create_queue(PARENT, Queue(f"{PARENT}/queues/stopping")).name
        name = f"{queue}/tasks/last"
        runner.service.create_task(queue, NewTask(HttpRequest(url=f"{sink.url}/t"), name=name))
        eventually(lambda: sink.count() == 1)
    finally:
        runner.stop()
    store = SQLiteTaskStore(tmp_path / DB_FILENAME)
    try:
        assert store.get_task(name) is None  # done, not left DISPATCHING
        assert [attempt.http_status for attempt in store.attempts(name)] == [200]  # recorded once
    finally:
        store.close()
    assert sink.count() == 1


@pytest.mark.parametrize(
    ("rate", "wait"),
    [
        (500, MIN_TOKEN_WAIT),  # 25 tokens claimed at once, of a bucket of 100
        (50, MIN_TOKEN_WAIT),
        (5, 0.2),  # the next token
    ],
)
def test_a_queue_out_of_tokens_claims_again_before_its_bucket_can_fill(rate: float, wait: float) -> None:
    limits = RateLimits(max_dispatches_per_second=rate)
    pacer = QueuePacer(limits, 0.0)
    pacer.started(pacer.budget(0.0), 0.0)
    claims_at = next_claim_time(pacer, 0.0)
    assert claims_at == pytest.approx(wait)
    assert claims_at < limits.max_burst_size / rate  # no token is lost to a full bucket
