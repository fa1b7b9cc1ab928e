"""Calls from gRPC's handler threads reach the event loop in batches and get their own results back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from local_runner.api import grpc_hop
from local_runner.api.grpc_hop import LoopClosed, LoopHop

#: Bounds the waits on other threads (each is over in milliseconds when things work).
_WAIT_S = 10.0
CALLS = 20


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(_WAIT_S)
    running.close()


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[], Any]) -> None:
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: (call(), done.set()))
    assert done.wait(_WAIT_S)


async def _double(n: int) -> int:
    await asyncio.sleep(0)
    return 2 * n


async def _fail() -> int:
    raise ValueError("refused on the loop")


def test_calls_handed_in_meanwhile_share_one_wake_up(loop: asyncio.AbstractEventLoop) -> None:
    hop = LoopHop(loop)
    wake_ups: list[object] = []
    signal = loop.call_soon_threadsafe

    def counted(callback: Callable[..., object], *args: object) -> asyncio.Handle:
        wake_ups.append(callback)
        return signal(callback, *args)

    busy, go = threading.Event(), threading.Event()
    loop.call_soon_threadsafe(lambda: (busy.set(), go.wait(_WAIT_S)))  # the loop is busy elsewhere
    assert busy.wait(_WAIT_S)
    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(CALLS) as threads:
        results = [threads.submit(hop.run, lambda n=n: _double(n), _WAIT_S) for n in range(CALLS)]
        while len(hop._waiting) < CALLS and not any(r.done() for r in results):
            threading.Event().wait(0.001)
        go.set()
        assert [r.result(_WAIT_S) for r in results] == [2 * n for n in range(CALLS)]
    assert len(wake_ups) == 1


def test_an_error_on_the_loop_reaches_the_caller(loop: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(ValueError, match="refused on the loop"):
        LoopHop(loop).run(_fail, _WAIT_S)


def test_work_that_fails_before_its_coroutine_exists_reaches_the_caller(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """An error raised while making the coroutine fails that call only; the calls after it still run."""
    hop = LoopHop(loop)

    def broken() -> Any:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        hop.run(broken, timeout=_WAIT_S)
    assert hop.run(lambda: _double(4), timeout=_WAIT_S) == 8


def test_close_refuses_new_work_and_cancels_work_in_flight(loop: asyncio.AbstractEventLoop) -> None:
    hop = LoopHop(loop)

    async def never_done() -> str:
        await asyncio.Event().wait()
        return "unreachable"

    with ThreadPoolExecutor(1) as thread:
        running = thread.submit(hop.run, never_done, _WAIT_S)
        while not hop._running:
            threading.Event().wait(0.001)
        _on_loop(loop, hop.close)
        with pytest.raises(LoopClosed):
            running.result(_WAIT_S)
    with pytest.raises(LoopClosed):
        hop.run(lambda: _double(1), _WAIT_S)


def test_work_on_a_closed_loop_is_refused() -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(LoopClosed):
        LoopHop(closed).run(lambda: _double(1), _WAIT_S)


def test_work_pending_when_the_loop_closes_fails_instead_of_waiting_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grpc_hop, "_CHECK_LOOP_S", 0.01)
    idle = asyncio.new_event_loop()  # takes the work, never runs it, then closes
    hop = LoopHop(idle)
    with ThreadPoolExecutor(1) as thread:
        waiting = thread.submit(hop.run, lambda: _double(1), _WAIT_S)
        while not hop._woken:
            threading.Event().wait(0.001)
        idle.close()
        with pytest.raises(LoopClosed):
            waiting.result(_WAIT_S)
