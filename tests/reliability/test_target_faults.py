"""Faults at the dispatch target: hangs past the deadline, refused and reset connections, 5xx storms,
429 with Retry-After, slow answers, all at once, next to a healthy queue that must keep its rate.

The runner runs in this process on a virtual clock (deadlines, backoff and rates in virtual seconds);
the targets are real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from reliability.api import RunnerApi
from reliability.figures import Figures, Row
from reliability.polling import eventually
from reliability.sink import Sink

from local_runner.clock import VirtualClock
from local_runner.codec.scalars import parse_timestamp
from local_runner.config import RunnerSettings
from local_runner.server import RunnerServer

ATTEMPTS = 4
BACKOFF = 2.0
RETRY_AFTER = 30
DEADLINE = 15.0
PER_QUEUE = 5
HEALTHY_TASKS = 50
HEALTHY_RATE = 5.0
HEALTHY_BURST = 10


class ResettingServer:
    """Accepts a connection, reads the request, then resets the connection (RST) without answering."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/reset"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/refused"  # nothing listens there any more


class Targets:
    """One aiohttp sink answering by path: hang, storm (500), throttle (429 + Retry-After), slow, ok."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sink = Sink(self.respond).start()

    async def respond(self, request: web.Request) -> web.StreamResponse:
        kind = request.path.strip("/")
        if kind == "hang":
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return web.Response(status=200)
        if kind == "storm":
            return web.Response(status=500)
        if kind == "throttle":
            return web.Response(status=429, headers={"Retry-After": str(RETRY_AFTER)})
        if kind == "slow":
            await asyncio.sleep(0.3)
        return web.Response(status=200)

    def close(self) -> None:
        self.release.set()
        self.sink.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=float(int(time.time())))


@pytest.fixture
def runner(tmp_path: Path, clock: VirtualClock) -> Iterator[RunnerServer]:
    settings = RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.5)
    with RunnerServer(settings, clock=clock) as server:
        yield server


def check_history(kind: str, history: list[dict[str, Any]]) -> None:
    """Each attempt's recorded outcome, and the waits between attempts the retry config asks for."""
    assert len(history) == ATTEMPTS, (kind, history)
    expected: dict[str, tuple[int, str]] = {
        "hang": (4, f"The dispatch deadline of {DEADLINE:g}s was exceeded."),
        "refused": (14, "cannot connect to"),
        "reset": (14, "before a full response"),
        "storm": (13, "HTTP status code 500"),
        "throttle": (8, "HTTP status code 429"),
    }
    code, message = expected[kind]
    for attempt in history:
        status = attempt["responseStatus"]
        assert status["code"] == code and message in status["message"], (kind, attempt)
        assert attempt.get("httpStatus") == {"storm": 500, "throttle": 429}.get(kind), (kind, attempt)
    wait = {"hang": DEADLINE + BACKOFF, "throttle": RETRY_AFTER}.get(kind, BACKOFF)
    for earlier, later in itertools.pairwise(history):
        gap = parse_timestamp(later["dispatchTime"]) - parse_timestamp(earlier["dispatchTime"])
        assert gap >= wait - 1e-6, (kind, gap, history)


def test_faulty_targets_do_not_hold_up_a_healthy_queue_and_every_outcome_is_recorded(
    runner: RunnerServer, clock: VirtualClock, figures: Figures
) -> None:
    targets = Targets()
    resetting = ResettingServer()
    api = RunnerApi(runner.base_url)
    try:
        urls = {
            "hang": targets.sink.url + "/hang",
            "refused": closed_port_url(),
            "reset": resetting.url,
            "storm": targets.sink.url + "/storm",
            "throttle": targets.sink.url + "/throttle",
        }
        retry = {"maxAttempts": ATTEMPTS, "minBackoff": f"{BACKOFF:g}s", "maxBackoff": f"{BACKOFF:g}s"}
        faulty: dict[str, list[str]] = {}
        for kind, url in urls.items():
            queue = api.create_queue(kind, retryConfig={**retry, "maxDoublings": 0})
            faulty[kind] = [api.create_task(queue, url, dispatch_deadline=DEADLINE) for _ in range(PER_QUEUE)]
        slow_queue = api.create_queue("slow")
        slow = [api.create_task(slow_queue, targets.sink.url + "/slow") for _ in range(PER_QUEUE)]
        healthy_queue = api.create_queue("healthy", rateLimits={"maxDispatchesPerSecond": HEALTHY_RATE})
        api.ok("POST", f"v2/{healthy_queue}:pause")
        healthy = [api.create_task(healthy_queue, targets.sink.url + "/ok") for _ in range(HEALTHY_TASKS)]
        eventually(lambda: targets.sink.in_flight == PER_QUEUE)  # the hung attempts hold their connections
        api.ok("POST", f"v2/{healthy_queue}:resume")

        def delivered(path: str) -> int:
            return sum(d.path == path for d in targets.sink.snapshot())

        # The healthy queue spends its burst, then exactly its rate, whatever the other queues suffer.
        elapsed = 0.0
        while delivered("/ok") < HEALTHY_TASKS:
            allowed = min(HEALTHY_TASKS, HEALTHY_BURST + int(HEALTHY_RATE * elapsed + 1e-9))
            eventually(lambda allowed=allowed: delivered("/ok") >= allowed)
            assert delivered("/ok") == allowed, elapsed
            clock.advance(0.2)
            elapsed += 0.2

        def exhausted(names: list[str]) -> bool:
            return all(api.ok("GET", f"runner/v1/{n}").get("state") == "EXHAUSTED" for n in names)

        every_faulty = [name for names in faulty.values() for name in names]
        for _ in range(400):  # bounded: the slowest path needs about 100 virtual seconds
            if exhausted(every_faulty):
                break
            clock.advance(1.0)
            threading.Event().wait(0.01)
        assert exhausted(every_faulty)
        for kind, names in faulty.items():
            for name in names:
                check_history(kind, api.attempts(name))
        for name in slow + healthy:
            assert [a.get("httpStatus") for a in api.attempts(name)] == [200]
        assert api.all_tasks(slow_queue) == [] and api.all_tasks(healthy_queue) == []
        assert runner.scheduler is not None and runner.scheduler.in_flight == 0
    finally:
        targets.close()
        resetting.close()
    attempts = ATTEMPTS * len(faulty) * PER_QUEUE + len(slow) + len(healthy)
    figures.record(
        Row(
            "faulty targets next to a healthy queue (virtual clock)",
            f"{attempts} attempts over 7 queues",
            "hang past the 15 s deadline, refused, reset mid-request, 500 storm, 429 + Retry-After 30, "
            "0.3 s answers",
            lost=0,
            duplicates=0,
        )
    )
