"""Deliveries as Cloud Tasks sends them while a dedup store goes away and comes back.

Each task is sent as ``COPIES`` concurrent copies, again and again until one copy is answered 2xx; every
answer is recorded with whether the store was away at the time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

COPIES = 2


class CloudTasksLike:
    """Sends each task until a 2xx, ``COPIES`` concurrent copies per round; records every answer."""

    def __init__(self, url: str, headers_for: Callable[[str, int], dict[str, str]]) -> None:
        self.url = url
        self.headers_for = headers_for
        self.answers: list[tuple[str, int, bool]] = []  # (task, status, the store was away)
        self.store_away = threading.Event()
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
                self.answers += [(task, status, self.store_away.is_set()) for status in statuses]
            if any(200 <= status < 300 for status in statuses):
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"{task} was never acknowledged")


def google_sender(url: str, tokens: Any, task_headers: Any) -> CloudTasksLike:
    """A sender whose every copy carries a Google-signed token and the task's Cloud Tasks headers."""
    return CloudTasksLike(
        url, lambda task, retry: task_headers(tokens.google(), name=task, retry=min(retry, 1))
    )


@dataclass(frozen=True)
class OutageRun:
    """What the senders saw: body runs per task, every answer, and the answers while the store was away."""

    runs: Counter[str]
    statuses: Counter[int]
    while_away: Counter[int]


def deliver_through_outage(
    sender: CloudTasksLike,
    names: list[str],
    body_runs: Callable[[], Counter[str]],
    outage: Callable[[], None],
    timeout_s: float,
) -> OutageRun:
    """Deliver ``names`` with 8 senders; a third of the way through, run ``outage`` (away, then back).

    Asserts what every outage must keep: each body ran exactly once, the store failed closed (503) while
    away, and nothing answered 500.
    """
    with ThreadPoolExecutor(8) as pool:
        done = [pool.submit(sender.deliver, name) for name in names]
        while sum(future.done() for future in done) < len(names) // 3:
            threading.Event().wait(0.01)
        sender.store_away.set()
        outage()
        sender.store_away.clear()
        for future in done:
            future.result(timeout_s)
    result = OutageRun(
        body_runs(),
        Counter(status for _, status, _ in sender.answers),
        Counter(status for _, status, away in sender.answers if away),
    )
    assert result.runs == Counter(names)  # every body ran, and exactly once
    assert result.while_away[503] > 0  # fail closed while the store was away
    assert set(result.statuses) <= {200, 409, 503}, result.statuses  # never a 500
    return result
