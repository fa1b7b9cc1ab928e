"""Redis killed and restarted under load: 503 while it is down, no task body run twice, recovery after.

Deliveries come as Cloud Tasks sends them, at least once: each task is sent as two concurrent copies,
again and again until one copy is answered 2xx. Redis persists every write before answering
(``appendfsync always``), as a managed Redis does across a restart; without persistence a restarted Redis
has forgotten which tasks completed, and a late duplicate would run again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from reliability.figures import Figures, Row

from tasktoolkit.dedup import RedisDedupStore
from tests.tasktoolkit.conftest import RedisServer, _redis_binary, free_port

TASKS = 60
COPIES = 2
LEASE_S = 2


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        _redis_binary(), free_port(), "--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always"
    ).start()
    yield server
    server.kill()


class CloudTasksLike:
    """Sends each task until a 2xx, ``COPIES`` concurrent copies per round; records every answer."""

    def __init__(self, url: str, headers_for: Callable[[str, int], dict[str, str]]) -> None:
        self.url = url
        self.headers_for = headers_for
        self.answers: list[tuple[str, int, bool]] = []  # (task, status, redis was down)
        self.redis_down = threading.Event()
        self._lock = threading.Lock()

    def _send(self, session: requests.Session, task: str, retry: int) -> int:
        headers = self.headers_for(task, retry)
        return session.post(self.url, json={"n": task}, headers=headers, timeout=20).status_code

    def deliver(self, task: str) -> None:
        session = requests.Session()
        for retry in range(400):  # bounded; a 503/409 is retried after a short pause
            with ThreadPoolExecutor(COPIES) as copies:
                sends = [(session, task, retry)] * COPIES
                statuses = list(copies.map(lambda args: self._send(*args), sends))
            with self._lock:
                self.answers += [(task, status, self.redis_down.is_set()) for status in statuses]
            if any(200 <= status < 300 for status in statuses):
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"{task} was never acknowledged")


def test_redis_killed_and_restarted_mid_load(
    durable_redis: RedisServer,
    make_worker: Any,
    serve: Any,
    tokens: Any,
    task_headers: Any,
    figures: Figures,
) -> None:
    store = RedisDedupStore.from_url(durable_redis.url)
    worker = make_worker(store, TASKTOOLKIT_LEASE_S=LEASE_S)
    url = serve(worker.app).url + "/tasks/work"
    sender = CloudTasksLike(
        url, lambda task, retry: task_headers(tokens.google(), name=task, retry=min(retry, 1))
    )
    names = [f"task-{index}" for index in range(TASKS)]
    try:
        with ThreadPoolExecutor(8) as pool:
            done = [pool.submit(sender.deliver, name) for name in names]
            while sum(future.done() for future in done) < TASKS // 3:
                threading.Event().wait(0.01)
            sender.redis_down.set()
            durable_redis.kill()
            threading.Event().wait(0.5)  # the load goes on against a dead Redis
            durable_redis.start()
            sender.redis_down.clear()
            for future in done:
                future.result(60)
    finally:
        store.close()
    runs = Counter(payload["n"] for _, payload in worker.runs)
    assert runs == Counter(names)  # every body ran, and exactly once
    statuses = Counter(status for _, status, _ in sender.answers)
    while_down = Counter(status for _, status, down in sender.answers if down)
    assert while_down[503] > 0  # fail closed while Redis was down
    assert set(statuses) <= {200, 409, 503}, statuses  # never a 500
    figures.record(
        Row(
            "Redis dedup store killed and restarted under load",
            f"{TASKS} tasks x {COPIES} concurrent copies until acknowledged, 8 senders; "
            f"{sum(statuses.values())} deliveries",
            f"redis-server SIGKILLed for 0.5 s mid-load ({while_down[503]} answers 503 while down)",
            lost=0,
            duplicates=sum(runs.values()) - TASKS,
            server_errors=statuses[500],
        )
    )
