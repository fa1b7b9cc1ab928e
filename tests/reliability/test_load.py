"""Load: many tasks over 20 queues, held by a slow target at full concurrency, on a ``runner serve`` process.

Every task must be delivered exactly once (no crash here, so no re-delivery) and acknowledged; the
runner's resident memory and open file descriptors must stay bounded. The queues are paused while the
tasks are created, then resumed together, so the target holds every dispatch slot at once.
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
from reliability.procstat import Sampler, rss_bytes
from reliability.sink import Sink
from testsupport.runner_process import RunnerProcess

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
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(delay_s)
        return web.Response(status=200)

    sink = Sink(slow).start()
    try:
        runner = runner_process(tmp_path)
        api = RunnerApi(runner.url)
        limits = {"maxDispatchesPerSecond": 500, "maxConcurrentDispatches": concurrency // QUEUES}
        queues = [api.create_queue(f"load-{index}", rateLimits=limits) for index in range(QUEUES)]
        for queue in queues:
            api.ok("POST", f"v2/{queue}:pause")
        idle_rss = rss_bytes(runner.pid)
        with Sampler(runner.pid) as sampler:
            asyncio.run(enqueue(runner.url, queues, sink.url + "/work", tasks))
            for queue in queues:
                api.ok("POST", f"v2/{queue}:resume")
            while api.call("POST", "runner/v1/waitIdle", {"timeout": "300s"}).status_code != 200:
                pass  # bounded by the test's timeout
        for queue in queues:
            assert api.all_tasks(queue) == []  # every task acknowledged
        delivered = sink.per_task()
        assert len(delivered) == tasks  # every task delivered...
        assert set(delivered.values()) == {1}  # ...exactly once
        for name in random.Random(7).sample(sorted(delivered), 20):
            queue = f"{PARENT}/queues/load-{int(name[1:]) % QUEUES}"
            assert [a.get("httpStatus") for a in api.attempts(f"{queue}/tasks/{name}")] == [200]
        assert concurrency // 2 <= sink.peak_in_flight <= concurrency
        assert sampler.peak_fds <= concurrency + 100
        assert sampler.peak_rss <= max_rss_mib * MIB
        assert "Traceback" not in "\n".join(runner.log)
    finally:
        sink.close()
    figures.record(
        Row(
            f"load: {tasks:,} tasks, {QUEUES} queues",
            f"{sink.peak_in_flight:,} dispatches in flight at peak ({delay_s:g} s each); runner RSS "
            f"{idle_rss / MIB:.0f} MiB idle, {sampler.peak_rss / MIB:.0f} MiB peak; "
            f"{sampler.peak_fds:,} fds at peak",
            "none (volume and concurrency)",
            lost=0,
            duplicates=max(delivered.values()) - 1,
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
