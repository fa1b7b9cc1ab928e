"""Every row of the handler status table (docs/handlers.md, design.md §5), over real HTTP, on every store."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tasktoolkit.dedup import DedupStatus, DedupStore

STORE_KINDS = ["memory", "sqlite", "redis"]
#: The record of the /tasks/work route's default key: its endpoint, then "<queue>/<task name>".
KEY = "work|emails/task-1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    """A worker on a real port, its store, the store's fake clock, and a poster."""

    worker: Any
    store: DedupStore
    clock: FakeClock
    url: str
    tokens: Any
    task_headers: Callable[..., dict[str, str]]

    def post(
        self, payload: Any, *, path: str = "/tasks/work", token: str | None = "google", **headers: Any
    ) -> requests.Response:
        bearer = self.tokens.google() if token == "google" else token
        return requests.post(
            self.url + path, json=payload, headers=self.task_headers(bearer, **headers), timeout=20
        )


@pytest.fixture(params=STORE_KINDS)
def setup(
    request: pytest.FixtureRequest,
    make_worker: Any,
    serve: Any,
    store_factory: Any,
    tokens: Any,
    task_headers: Any,
) -> Setup:
    clock = FakeClock()
    store = store_factory(request.param, clock=clock)
    worker = make_worker(store)
    return Setup(worker, store, clock, serve(worker.app).url, tokens, task_headers)


def test_rejected_requests_leave_the_record_untouched(setup: Setup) -> None:
    assert setup.post({}, token=setup.tokens.google(aud="https://elsewhere")).status_code == 401
    assert setup.post({}, token=setup.tokens.google(email_verified=False)).status_code == 403
    assert setup.store.get(KEY) is None
    assert setup.worker.count() == 0


def test_handler_returns_2xx_and_the_response_is_stored(setup: Setup) -> None:
    response = setup.post({"action": "ok"})
    assert response.status_code == 200
    assert "X-TaskToolkit-Replayed" not in response.headers
    record = setup.store.get(KEY)
    assert record is not None and record.status is DedupStatus.COMPLETED
    assert record.response is not None and record.response.status == 200
    assert record.expires_at == setup.clock.now + 86400


def test_duplicate_of_a_completed_task_replays_without_running(setup: Setup) -> None:
    first = setup.post({"action": "text"}, retry=0)
    again = setup.post({"action": "text"}, retry=1)
    assert (first.status_code, first.text, first.headers["Content-Type"]) == (
        201,
        "plain text",
        "text/plain; charset=utf-8",
    )
    assert (again.status_code, again.text, again.headers["Content-Type"]) == (
        201,
        "plain text",
        "text/plain; charset=utf-8",
    )
    assert again.headers["X-TaskToolkit-Replayed"] == "true"
    assert setup.worker.count() == 1


def test_duplicate_while_running_gets_409_with_retry_after(setup: Setup) -> None:
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(setup.post, {"action": "block"})
        assert setup.worker.started.wait(10)
        duplicate = setup.post({"action": "block"}, retry=1)
        assert duplicate.status_code == 409
        assert duplicate.headers["Retry-After"] == "30"
        assert duplicate.json() == {"error": "task already in progress"}
        record = setup.store.get(KEY)
        assert record is not None and record.status is DedupStatus.IN_PROGRESS
        setup.worker.unblock.set()
        assert first.result(20).status_code == 200
    assert setup.post({"action": "block"}, retry=2).headers["X-TaskToolkit-Replayed"] == "true"
    assert setup.worker.count() == 1


def test_a_lease_left_by_a_dead_worker_expires(setup: Setup) -> None:
    payload = {"action": "ok"}
    body = requests.Request("POST", "http://x", json=payload).prepare().body
    assert isinstance(body, bytes)
    setup.store.claim(KEY, hashlib.sha256(body).hexdigest(), lease_s=600)  # the worker that died
    response = setup.post(payload)
    assert response.status_code == 409
    setup.clock.now += 600
    assert setup.post(payload).status_code == 200
    assert setup.worker.count() == 1


def test_same_key_different_payload_is_acknowledged_and_logged(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    assert setup.post({"user_id": 7, "email": "a@example.com"}, path="/tasks/welcome").status_code == 200
    before = setup.store.get("welcome|welcome:7")
    assert before is not None
    with caplog.at_level(logging.ERROR, logger="tasktoolkit"):
        response = setup.post(
            {"user_id": 7, "email": "b@example.com"},
            path="/tasks/welcome",
            **{"X-CloudTasks-TaskName": "task-2"},
        )
    assert response.status_code == 200
    assert response.json() == {"acknowledged": True, "outcome": "payload_mismatch"}
    assert any("different payload" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert setup.store.get("welcome|welcome:7") == before
    assert setup.worker.count() == 1


def test_retry_task_answers_503_and_releases(setup: Setup) -> None:
    response = setup.post({"action": "retry"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "8"
    assert setup.store.get(KEY) is None
    assert setup.post({"action": "retry"}, retry=1).status_code == 503
    assert setup.worker.count() == 2


def test_permanent_failure_is_acknowledged_and_recorded(setup: Setup) -> None:
    response = setup.post({"action": "permanent"})
    assert response.status_code == 200
    assert response.json() == {"acknowledged": True, "outcome": "permanent_failure"}
    record = setup.store.get(KEY)
    assert record is not None and record.status is DedupStatus.FAILED
    duplicate = setup.post({"action": "permanent"}, retry=1)
    assert duplicate.status_code == 200 and duplicate.headers["X-TaskToolkit-Replayed"] == "true"
    assert setup.worker.count() == 1


def test_other_exception_is_500_without_details_and_releases(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tasktoolkit"):
        response = setup.post({"action": "error"})
    assert response.status_code == 500
    assert response.json() == {"error": "task handler failed"}
    assert "secret" not in response.text
    assert any(r.exc_info for r in caplog.records)
    assert setup.store.get(KEY) is None
    assert setup.post({"action": "error"}, retry=1).status_code == 500
    assert setup.worker.count() == 2


def test_non_2xx_response_is_passed_through_and_released(setup: Setup) -> None:
    response = setup.post({"action": "status", "status": 429})
    assert response.status_code == 429 and response.json() == {"status": "custom"}
    assert setup.store.get(KEY) is None


def test_http_exception_is_passed_through_and_released(setup: Setup) -> None:
    assert setup.post({"action": "abort"}).status_code == 404
    assert setup.store.get(KEY) is None


def test_custom_key_dedups_across_task_names(setup: Setup) -> None:
    payload = {"user_id": 9, "email": "a@example.com"}
    assert setup.post(payload, path="/tasks/welcome", **{"X-CloudTasks-TaskName": "a"}).status_code == 200
    replay = setup.post(payload, path="/tasks/welcome", **{"X-CloudTasks-TaskName": "b"})
    assert replay.headers["X-TaskToolkit-Replayed"] == "true"
    assert setup.worker.count("welcome") == 1


def test_failing_dedup_key_is_500(setup: Setup) -> None:
    assert setup.post({"email": "no-user-id"}, path="/tasks/welcome").status_code == 500
    assert setup.worker.count() == 0


def test_dedup_off_runs_every_delivery(setup: Setup) -> None:
    for _ in range(3):
        assert setup.post({"action": "ok"}, path="/tasks/no-dedup").status_code == 200
    assert setup.post({"action": "retry"}, path="/tasks/no-dedup").status_code == 503
    assert setup.post({"action": "permanent"}, path="/tasks/no-dedup").status_code == 200
    assert setup.post({"action": "error"}, path="/tasks/no-dedup").status_code == 500
    assert setup.worker.count("no-dedup") == 6


def test_view_args_and_per_handler_lease_and_ttl(setup: Setup) -> None:
    response = setup.post({"action": "ok"}, path="/tasks/kind/resize")
    assert response.json()["ran"] == "kind:resize"
    record = setup.store.get("by_kind|emails/task-1")
    assert record is not None and record.expires_at == setup.clock.now + 60


def test_malformed_body_is_400(setup: Setup) -> None:
    headers = setup.task_headers(setup.tokens.google())
    response = requests.post(setup.url + "/tasks/work", data=b"{oops", headers=headers, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"].startswith("request body is not valid JSON")
    assert setup.store.get(KEY) is None


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_fifty_concurrent_deliveries_run_the_handler_once(
    kind: str, make_worker: Any, serve: Any, store_factory: Any, tokens: Any, task_headers: Any
) -> None:
    worker = make_worker(store_factory(kind))
    url = serve(worker.app).url + "/tasks/work"
    headers = task_headers(tokens.google())
    start = threading.Barrier(50)

    def deliver(_: int) -> tuple[int, bool]:
        start.wait(10)
        response = requests.post(url, json={"action": "slow", "delay_s": 0.05}, headers=headers, timeout=30)
        return response.status_code, response.headers.get("X-TaskToolkit-Replayed") == "true"

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(deliver, range(50)))
    assert worker.count() == 1
    assert results.count((200, False)) == 1
    assert all(result in ((200, False), (200, True), (409, False)) for result in results)
