"""Redis killed and restarted under load: 503 while it is down, no task body run twice, recovery after.

Deliveries come as Cloud Tasks sends them, at least once: each task is sent as two concurrent copies,
again and again until one copy is answered 2xx. Redis persists every write before answering
(``appendfsync always``), as a managed Redis does across a restart; without persistence a restarted Redis
has forgotten which tasks completed, and a late duplicate would run again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability.figures import Figures, Row
from reliability.outage import COPIES, deliver_through_outage, google_sender

from tasktoolkit.dedup import RedisDedupStore
from tests.tasktoolkit.conftest import RedisServer, _redis_binary, free_port

TASKS = 60
LEASE_S = 2


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(
        _redis_binary(), free_port(), "--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always"
    ).start()
    yield server
    server.kill()


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
    sender = google_sender(url, tokens, task_headers)
    names = [f"task-{index}" for index in range(TASKS)]

    def outage() -> None:
        durable_redis.kill()
        threading.Event().wait(0.5)  # the load goes on against a dead Redis
        durable_redis.start()

    try:
        seen = deliver_through_outage(
            sender, names, lambda: Counter(payload["n"] for _, payload in worker.runs), outage, 60
        )
    finally:
        store.close()
    figures.record(
        Row(
            "Redis dedup store killed and restarted under load",
            f"{TASKS} tasks x {COPIES} concurrent copies until acknowledged, 8 senders; "
            f"{sum(seen.statuses.values())} deliveries",
            f"redis-server SIGKILLed for 0.5 s mid-load ({seen.while_away[503]} answers 503 while down)",
            lost=0,
            duplicates=sum(seen.runs.values()) - TASKS,
            server_errors=seen.statuses[500],
        )
    )
