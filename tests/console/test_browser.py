"""The console in headless Chromium against a real ``runner serve`` process.

Skipped without /usr/bin/chromium, except on CI (``CI=true``), where a missing browser fails.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess
from werkzeug import Response

from .browser import Chromium, require_chromium

PARENT = "projects/p/locations/l"
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=1">'
_ids = itertools.count()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    chromium = Chromium(require_chromium())
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    process = RunnerProcess(None).start()
    yield process
    process.close()


def rest(runner: RunnerProcess, method: str, path: str, body: Any = None) -> Any:
    answer = requests.request(method, f"{runner.url}/{path}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def new_queue(runner: RunnerProcess, **fields: Any) -> str:
    name = f"{PARENT}/queues/b-{next(_ids)}"
    rest(runner, "POST", f"v2/{PARENT}/queues", {"name": name, **fields})
    return name


def new_task(
    runner: RunnerProcess, queue: str, task_id: str, url: str, body: bytes = b"{}", **http: Any
) -> str:
    task = {
        "name": f"{queue}/tasks/{task_id}",
        "httpRequest": {"url": url, "body": base64.b64encode(body).decode(), **http},
    }
    return str(rest(runner, "POST", f"v2/{queue}/tasks", {"task": task})["name"])


def row_state(queue: str) -> str:
    return f"document.querySelector('tr[data-queue=\"{queue}\"] [data-state]')?.dataset.state"


def test_queues_are_listed_with_state_and_pause_then_resume(browser: Chromium, runner: RunnerProcess) -> None:
    queue = new_queue(runner, rateLimits={"maxDispatchesPerSecond": 7})
    browser.open(runner.url + "/")
    assert browser.wait_for(row_state(queue)) == "RUNNING"
    assert "7/s, burst 10" in browser.text()
    browser.click(f'form[action="/console/{queue}:pause"] button')
    browser.wait_for(f"{row_state(queue)} === 'PAUSED'")
    assert rest(runner, "GET", f"v2/{queue}")["state"] == "PAUSED"
    browser.click(f'form[action="/console/{queue}:resume"] button')
    browser.wait_for(f"{row_state(queue)} === 'RUNNING'")
    assert rest(runner, "GET", f"v2/{queue}")["state"] == "RUNNING"


def test_a_queues_tasks_are_listed(browser: Chromium, runner: RunnerProcess) -> None:
    queue = new_queue(runner)
    rest(runner, "POST", f"v2/{queue}:pause")
    for task_id in ("first", "second"):
        new_task(runner, queue, task_id, "http://127.0.0.1:9/")
    browser.open(f"{runner.url}/console/{queue}")
    links = browser.wait_for("[...document.querySelectorAll('a.task-link')].map(a => a.textContent)")
    assert links == ["first", "second"]
    browser.evaluate("window.sameDocument = true")
    new_task(runner, queue, "third", "http://127.0.0.1:9/")  # appears without a reload
    browser.wait_for("document.querySelectorAll('a.task-link').length === 3 && window.sameDocument")
    assert "stale" not in browser.evaluate("document.getElementById('updated').className")
    browser.click('a[data-filter="queued"]')
    browser.wait_for("location.search === '?state=queued' && document.querySelectorAll('a.task-link').length")


def test_attempts_show_a_500_then_replay_delivers_a_200_live(
    browser: Chromium, runner: RunnerProcess, httpserver: HTTPServer
) -> None:
    answers = iter([500, 200])
    httpserver.expect_request("/work").respond_with_handler(lambda r: Response(status=next(answers)))
    queue = new_queue(runner, retryConfig={"maxAttempts": 1})
    name = new_task(runner, queue, "flaky", httpserver.url_for("/work"))
    rest(runner, "POST", "runner/v1/waitIdle", {"queue": queue, "timeout": "10s"})
    browser.open(f"{runner.url}/console/{name}")
    browser.wait_for("document.querySelector('[data-state]')?.dataset.state === 'EXHAUSTED'")
    assert browser.evaluate("document.querySelector('[data-status]').dataset.status") == "500"
    browser.click(f'form[action="/console/{name}:replay"] button')
    browser.wait_for("document.querySelector('[data-status=\"200\"]') !== null")
    statuses = browser.evaluate("[...document.querySelectorAll('[data-status]')].map(e => e.dataset.status)")
    assert statuses == ["500", "200"]
    assert browser.evaluate("document.querySelector('[data-state]').dataset.state") == "GONE"
    assert "updated" in browser.evaluate("document.getElementById('updated').textContent")


def test_xss_payloads_are_rendered_inert(browser: Chromium, runner: RunnerProcess) -> None:
    queue = new_queue(runner)
    rest(runner, "POST", f"v2/{queue}:pause")
    name = new_task(
        runner, queue, "xss", f"http://127.0.0.1:9/?q={XSS}", XSS.encode(), headers={"X-Evil": XSS}
    )
    for path in ("/", f"/console/{queue}", f"/console/{name}"):
        browser.open(runner.url + path)
        browser.wait_for("document.getElementById('live') !== null")
        assert browser.evaluate("window.pwned === undefined"), path
        assert browser.evaluate("document.querySelectorAll('#live script, #live img').length") == 0, path
    assert browser.evaluate("document.querySelector('pre.payload').textContent") == XSS
