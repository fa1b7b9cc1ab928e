"""Dispatcher.send on the real clock (the event loop's timer instead of a virtual-clock sleeper)."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from local_runner.clock import SystemClock
from local_runner.dispatch import Dispatcher
from local_runner.engine.attempts import Failure, Outcome
from local_runner.engine.delivery import OutboundRequest


async def _send(url: str, deadline: float) -> Outcome:
    dispatcher = Dispatcher(SystemClock())
    await dispatcher.start()
    try:
        return await dispatcher.send(OutboundRequest("POST", url, {}, b"{}"), deadline)
    finally:
        await dispatcher.close()


async def _serve(delay: float) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(status=204, headers={"Retry-After": "7"})

    app = web.Application()
    app.router.add_post("/t", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/t"


def test_answer_within_the_deadline() -> None:
    async def scenario() -> Outcome:
        runner, url = await _serve(0)
        try:
            return await _send(url, 5)
        finally:
            await runner.cleanup()

    outcome = asyncio.run(scenario())
    assert outcome.http_status == 204 and outcome.retry_after == 7


def test_no_answer_within_the_deadline_is_a_deadline_failure() -> None:
    async def scenario() -> Outcome:
        runner, url = await _serve(1)
        try:
            return await _send(url, 0.2)
        finally:
            await runner.cleanup()

    outcome = asyncio.run(scenario())
    assert outcome.http_status is None and outcome.failure is Failure.DEADLINE


def test_refused_connection_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = asyncio.run(_send(f"http://127.0.0.1:{port}/t", 5))
    assert outcome.failure is Failure.UNREACHABLE and "cannot connect" in outcome.detail
