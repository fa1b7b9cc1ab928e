"""A dedup store that goes away: 503 without running the handler, and recovery when it is back."""

from __future__ import annotations

import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tasktoolkit.dedup import RedisDedupStore, SQLiteDedupStore


def test_killing_redis_answers_503_without_running_then_recovers(
    own_redis_server: Any, make_worker: Any, serve: Any, tokens: Any, task_headers: Any
) -> None:
    store = RedisDedupStore.from_url(own_redis_server.url)
    worker = make_worker(store)
    url = serve(worker.app).url + "/tasks/work"
    try:
        assert requests.post(
            url, json={}, headers=task_headers(tokens.google(), name="before"), timeout=10
        ).ok
        own_redis_server.kill()
        for retry in range(3):
            headers = task_headers(tokens.google(), name="during", retry=retry)
            response = requests.post(url, json={}, headers=headers, timeout=10)
            assert response.status_code == 503
            assert response.json() == {"error": "dedup store unavailable"}
            assert int(response.headers["Retry-After"]) >= 1
        assert worker.count() == 1
        own_redis_server.start()
        headers = task_headers(tokens.google(), name="during", retry=3)
        assert requests.post(url, json={}, headers=headers, timeout=10).status_code == 200
        assert worker.count() == 2
    finally:
        store.close()


def test_redis_dying_while_the_handler_runs_keeps_its_answer(
    own_redis_server: Any, make_worker: Any, serve: Any, tokens: Any, task_headers: Any, caplog: Any
) -> None:
    store = RedisDedupStore.from_url(own_redis_server.url)
    worker = make_worker(store)
    url = serve(worker.app).url + "/tasks/work"
    try:
        with ThreadPoolExecutor(1) as pool, caplog.at_level(logging.ERROR, logger="tasktoolkit"):
            first = pool.submit(
                requests.post,
                url,
                json={"action": "block"},
                headers=task_headers(tokens.google()),
                timeout=20,
            )
            assert worker.started.wait(10)
            own_redis_server.kill()
            worker.unblock.set()
            assert first.result(20).status_code == 200
        assert worker.count() == 1
        assert any("cannot complete" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


def test_locked_sqlite_answers_503_without_running(
    tmp_path: Path, make_worker: Any, serve: Any, tokens: Any, task_headers: Any
) -> None:
    store = SQLiteDedupStore(tmp_path / "d.db", timeout_s=0.05)
    worker = make_worker(store)
    url = serve(worker.app).url + "/tasks/work"
    blocker = sqlite3.connect(tmp_path / "d.db", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        response = requests.post(url, json={}, headers=task_headers(tokens.google()), timeout=10)
        assert response.status_code == 503 and worker.count() == 0
        blocker.execute("ROLLBACK")
        assert (
            requests.post(url, json={}, headers=task_headers(tokens.google()), timeout=10).status_code == 200
        )
        assert worker.count() == 1
    finally:
        blocker.close()
        store.close()


@pytest.mark.parametrize(("action", "status"), [("error", 500), ("retry", 503)])
def test_release_failure_keeps_the_error_answer(
    action: str,
    status: int,
    own_redis_server: Any,
    make_worker: Any,
    serve: Any,
    tokens: Any,
    task_headers: Any,
    caplog: Any,
) -> None:
    store = RedisDedupStore.from_url(own_redis_server.url)
    worker = make_worker(store)
    url = serve(worker.app).url + "/tasks/work"
    payload = {"action": action, "block": True}
    try:
        with ThreadPoolExecutor(1) as pool, caplog.at_level(logging.ERROR, logger="tasktoolkit"):
            first = pool.submit(
                requests.post, url, json=payload, headers=task_headers(tokens.google()), timeout=20
            )
            assert worker.started.wait(10)
            own_redis_server.kill()
            worker.unblock.set()
            assert first.result(20).status_code == status
        assert any("cannot release, claimed until its lease ends" in r.getMessage() for r in caplog.records)
        assert worker.count() == 1
    finally:
        store.close()
