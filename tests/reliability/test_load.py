"""Load: many tasks over 20 queues, held by a slow target at full concurrency, on a ``runner serve`` process.

Every task must be delivered exactly once (no crash here, so no re-delivery) and acknowledged; the
runner's resident memory and open file descriptors must stay bounded. The queues are paused while the
tasks are created, then resumed together, and the target holds the first requests until the runner has
filled every dispatch slot it may use: exactly the queues' concurrency, or the runner's connections per
host (256 by default) if fewer, are in flight at the peak, however fast the machine is.
A last scenario runs the runner under ``ulimit -n 1024`` with 40 queues at the default concurrency.
The 100,000-task variant is slow: ``.venv/bin/python -m pytest tests/reliability/test_load.py -m slow``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from reliability.api import PARENT, RunnerApi
from reliability.figures import Figures, Row
from reliability.polling import eventually
from reliability.procstat import Sampler, rss_bytes
from reliability.sink import Gate, Sink
from testsupport.runner_process import RunnerProcess

from local_runner.engine.slots import DEFAULT_PER_ORIGIN

QUEUES = 20
MIB = 1024 * 1024


async def enqueue(base_url: str, queues: list[str], target: str, count: int, parallel: int = 32) -> None:
    """CreateTask ``count`` times round-robin over ``queues``, ``parallel`` requests at a time."""
    limit = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=parallel)) as session:

        async def create(index: int) -> None:
            queue = queues[index % len(queues)]
            task = {"name": f"{queue}/tasks/t{index}", "httpRequest": {"url": target, "httpMethod": "POST"}}
            async with limit, session.post(f"{base_url}/v2/{queue}/tasks", json={"task": task}) as answer:
                assert answer.status == 200, await answer.text()

        await asyncio.gather(*(create(index) for index in range(count)))


def slow_sink(delay_s: float, gate: Gate | None = None) -> Sink:
    """A target that answers 200 after ``delay_s`` seconds (counted from the ``gate``'s opening, if any)."""

    async def slow(request: web.Request) -> web.StreamResponse:
        if gate is not None:
            await gate.respond(request)
        await asyncio.sleep(delay_s)
        return web.Response(status=200)

    return Sink(slow).start()


def deliver_backlog(
    runner: RunnerProcess,
    sink: Sink,
    queues: int,
    tasks: int,
    limits: dict[str, int] | None = None,
    resumed: Callable[[], None] = lambda: None,
) -> tuple[RunnerApi, list[str], Sampler]:
    """Create paused queues, fill them round-robin, resume them together and wait until all is done.

    ``resumed`` is called once every queue is resumed, before waiting.

    Checks that every task was acknowledged and delivered exactly once, with one attempt (a sample).
    """
    api = RunnerApi(runner.url)
    names = [
        api.create_queue(f"load-{index}", **({"rateLimits": limits} if limits else {}))
        for index in range(queues)
    ]
    for queue in names:
        api.ok("POST", f"v2/{queue}:pause")
    with Sampler(runner.pid) as sampler:
        asyncio.run(enqueue(runner.url, names, sink.url + "/work", tasks))
        for queue in names:
            api.ok("POST", f"v2/{queue}:resume")
        resumed()
        # Each wait ends before the client's 120 s read timeout; the loop is bounded by the test's timeout.
        while api.call("POST", "runner/v1/waitIdle", {"timeout": "100s"}).status_code != 200:
            pass
    for queue in names:
        assert api.all_tasks(queue) == []  # every task acknowledged
    delivered = sink.per_task()
    assert len(delivered) == tasks  # every task delivered...
    assert set(delivered.values()) == {1}  # ...exactly once
    for name in random.Random(7).sample(sorted(delivered), 20):
        queue = f"{PARENT}/queues/load-{int(name[1:]) % queues}"
        assert [a.get("httpStatus") for a in api.attempts(f"{queue}/tasks/{name}")] == [200]
    assert "Traceback" not in "\n".join(runner.log)
    return api, names, sampler


def run_load(
    tmp_path: Path,
    runner_process: Callable[..., RunnerProcess],
    figures: Figures,
    *,
    tasks: int,
    concurrency: int,
    delay_s: float,
    max_rss_mib: int,
) -> None:
    # One target: at most the runner's connections per host are in flight, whatever the queues allow.
    in_flight = min(concurrency, DEFAULT_PER_ORIGIN)
    gate = Gate()
    sink = slow_sink(delay_s, gate)

    def fill_then_open() -> None:
        eventually(lambda: sink.in_flight >= in_flight, timeout=120)  # held until every slot is used
        gate.open.set()

    try:
        runner = runner_process(tmp_path)
        idle_rss = rss_bytes(runner.pid)
        limits = {"maxDispatchesPerSecond": 500, "maxConcurrentDispatches": concurrency // QUEUES}
        _, _, sampler = deliver_backlog(runner, sink, QUEUES, tasks, limits, fill_then_open)
        assert sink.peak_in_flight == in_flight  # the bound is reached, and never exceeded
        assert sampler.peak_fds <= in_flight + 100
        assert sampler.peak_rss <= max_rss_mib * MIB
    finally:
        gate.open.set()
        sink.close()
    figures.record(
        Row(
            f"load: {tasks:,} tasks, {QUEUES} queues",
            f"{sink.peak_in_flight:,} dispatches in flight at peak ({delay_s:g} s each); runner RSS "
            f"{idle_rss / MIB:.0f} MiB idle, {sampler.peak_rss / MIB:.0f} MiB peak; "
            f"{sampler.peak_fds:,} fds at peak",
            "none (volume and concurrency)",
            lost=0,
            duplicates=max(sink.per_task().values()) - 1,
        )
    )


def test_five_thousand_tasks_at_two_hundred_concurrent(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], figures: Figures
) -> None:
    run_load(tmp_path, runner_process, figures, tasks=5_000, concurrency=200, delay_s=0.1, max_rss_mib=200)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_hundred_thousand_tasks_at_a_thousand_concurrent(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], figures: Figures
) -> None:
    run_load(
        tmp_path, runner_process, figures, tasks=100_000, concurrency=1_000, delay_s=0.5, max_rss_mib=400
    )


def test_forty_queues_at_default_concurrency_under_a_1024_open_file_limit(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], figures: Figures
) -> None:
    """``ulimit -n 1024`` (a common default) and a backlog the queues would send all at once.

    40 queues at the default 1,000 concurrent dispatches each hold 2,000 due tasks, and the target takes
    1 s per request: without a connection cap the runner opens a socket per task, runs out of file
    descriptors, fails attempts and cannot open SQLite files. With it, no attempt fails and the store
    reports no error.
    """
    queues, tasks = 40, 2_000
    sink = slow_sink(1.0)
    try:
        runner = runner_process(tmp_path, open_files=1024)
        _, _, sampler = deliver_backlog(runner, sink, queues, tasks)
    finally:
        sink.close()
    problems = [line for line in runner.log if " WARNING " in line or " ERROR " in line]
    assert problems == []  # no failed attempt (each is a WARNING line), no store error
    assert sampler.peak_fds < 1024
    assert "at most 256 connections per host, 480 in all" in runner.log[0]
    figures.record(
        Row(
            f"load: {tasks:,} tasks, {queues} queues at the default concurrency, ulimit -n 1024",
            f"{sink.peak_in_flight:,} dispatches in flight at peak (1 s each); "
            f"{sampler.peak_fds:,} fds at peak; 0 failed attempts, 0 store errors",
            "open-file limit 1,024",
            lost=0,
            duplicates=max(sink.per_task().values()) - 1,
        )
    )
