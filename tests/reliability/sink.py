"""A dispatch target on 127.0.0.1: an aiohttp server on its own thread that records every delivery.

It holds thousands of slow requests at once (one coroutine each), which a threaded WSGI server cannot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pytest
from aiohttp import web

Respond = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Front(Protocol):
    """A protocol factory in front of aiohttp's, closed before it."""

    def __call__(self) -> asyncio.Protocol: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """One request as the target saw it."""

    path: str
    queue: str
    task: str
    retry_count: int
    execution_count: int
    previous_response: int | None
    received: float  # time.monotonic()
    status: int | None  # None: the target answered nothing (reset, hang)


async def answer_ok(request: web.Request) -> web.StreamResponse:
    """The default behaviour: 200 at once."""
    return web.Response(status=200)


class AppThread:
    """Serves an aiohttp application on 127.0.0.1 from its own thread and event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, app: web.Application, front: Callable[[web.Server], Front] | None = None) -> str:
        """Serve ``app`` on a free port; returns its base URL once it accepts connections.

        ``front`` takes aiohttp's protocol factory and returns the one the port serves with (as the
        runner's ``LeanHttp`` does).
        """
        ready = threading.Event()
        url: list[str] = []

        async def serve() -> None:
            self._stop = asyncio.Event()
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            serving: Front | None = None
            listener: asyncio.Server | None = None
            if front is None:
                await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
                url.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
            else:
                assert runner.server is not None
                serving = front(runner.server)
                listener = await asyncio.get_running_loop().create_server(
                    serving, "127.0.0.1", 0, backlog=4096
                )
                url.append(f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}")
            ready.set()
            try:
                await self._stop.wait()
            finally:
                if listener is not None:
                    listener.close()
                if serving is not None:
                    await serving.close()
                await runner.cleanup()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=main, name="app-thread", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise AssertionError("the server did not start")
        return url[0]

    def close(self) -> None:
        """Stop serving; requests still held are cut."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(15)
            self._thread = None


class Gate:
    """A behaviour that holds every request until :attr:`open` is set, then answers 200."""

    def __init__(self) -> None:
        self.open = threading.Event()

    async def respond(self, request: web.Request) -> web.StreamResponse:
        while not self.open.is_set():
            await asyncio.sleep(0.01)
        return web.Response(status=200)


def _delivery(request: web.Request, received: float, status: int | None) -> Delivery:
    headers = request.headers
    previous = headers.get("X-CloudTasks-TaskPreviousResponse")
    return Delivery(
        path=request.path,
        queue=headers.get("X-CloudTasks-QueueName", ""),
        task=headers.get("X-CloudTasks-TaskName", ""),
        retry_count=int(headers.get("X-CloudTasks-TaskRetryCount", "-1")),
        execution_count=int(headers.get("X-CloudTasks-TaskExecutionCount", "-1")),
        previous_response=int(previous) if previous else None,
        received=received,
        status=status,
    )


class Sink:
    """Records deliveries; ``respond`` decides each answer (it may sleep, fail or drop the connection)."""

    def __init__(self, respond: Respond = answer_ok) -> None:
        self.respond = respond
        self.url = ""
        self.deliveries: list[Delivery] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._server = AppThread()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        await request.read()
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        status: int | None = None
        try:
            response = await self.respond(request)
            status = response.status
            return response
        finally:
            with self._lock:
                self.in_flight -= 1
                self.deliveries.append(_delivery(request, received, status))

    def start(self) -> Sink:
        """Serve on a free loopback port; returns once it accepts connections."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.url = self._server.start(app)
        return self

    def close(self) -> None:
        """Stop serving (requests still held are cut)."""
        self._server.close()

    def snapshot(self) -> list[Delivery]:
        """The deliveries so far, in the order they finished."""
        with self._lock:
            return list(self.deliveries)

    def count(self) -> int:
        """How many deliveries finished."""
        with self._lock:
            return len(self.deliveries)

    def per_task(self) -> Counter[str]:
        """Deliveries per task id."""
        with self._lock:
            return Counter(delivery.task for delivery in self.deliveries)


@pytest.fixture
def gate() -> Gate:
    """A gate that holds the requests of :func:`held_sink` until it opens."""
    return Gate()


@pytest.fixture
def held_sink(gate: Gate) -> Iterator[Sink]:
    """A target that holds every request until the gate opens (opened at the end of the test)."""
    target = Sink(gate.respond).start()
    yield target
    gate.open.set()
    target.close()
