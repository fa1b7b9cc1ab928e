"""Randomized: one queue config, tasks and handler answers through FakeQueue and through `runner serve`.

The runner runs on a virtual clock (``--virtual-clock``) that the test moves to each due time, so both
sides see the same instants. Compared: every delivery's ``X-CloudTasks-*`` headers, method, path and body,
each task's attempt history, and the tasks left at the end (state and counts).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testsupport.runner_process import RunnerProcess

from local_runner.codec.scalars import parse_timestamp
from tasktoolkit.client import TasksClient
from tasktoolkit.testing import FakeQueue

SA = "tasks@my-proj.iam.gserviceaccount.com"
PROJECT, LOCATION, QUEUE = "my-proj", "us-central1", "diff"
QUEUE_NAME = f"projects/{PROJECT}/locations/{LOCATION}/queues/{QUEUE}"
#: Virtual seconds each example runs for, from its start.
HORIZON_S = 90.0
#: What a handler may answer. 429 and 503 are left out: they slow the runner's queue down (reference §5.2),
#: which the fake does not simulate.
STATUSES = (200, 204, 404, 500)
Seen = list[tuple[str, dict[str, str]]]

retry_configs = st.fixed_dictionaries(
    {
        "max_attempts": st.integers(1, 4),
        "max_retry_duration": st.sampled_from([0, 3, 10]),
        "min_backoff": st.sampled_from([0.1, 0.5, 2]),
        "max_backoff": st.sampled_from([2, 10]),
        "max_doublings": st.integers(0, 3),
    }
)
task_plans = st.fixed_dictionaries(
    {
        "delay_s": st.sampled_from([0.0, 1.5, 30.0]),
        "answers": st.lists(st.sampled_from(STATUSES), min_size=1, max_size=4),
        "retry_after_s": st.sampled_from([None, 3]),
        "token": st.booleans(),
    }
)


class Handler:
    """A plain route answering each task's planned statuses in turn, recording what it received."""

    def __init__(self) -> None:
        self.plans: dict[str, dict[str, Any]] = {}
        self.seen: Seen = []
        self.lock = threading.Lock()
        self.app = app = Flask("differential")

        @app.post("/t/<task_id>")
        def answer(task_id: str) -> tuple[str, int, dict[str, str]]:
            headers = {k.lower(): v for k, v in request.headers.items()}
            headers["_method_path_body"] = f"{request.method} {request.full_path} {request.get_data()!r}"
            with self.lock:
                self.seen.append((task_id, headers))
            plan = self.plans[task_id]
            retry = int(headers["x-cloudtasks-taskretrycount"])
            status: int = plan["answers"][min(retry, len(plan["answers"]) - 1)]
            extra = (
                {"Retry-After": str(plan["retry_after_s"])} if plan["retry_after_s"] and status >= 300 else {}
            )
            return "", status, extra


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    start = dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC).timestamp()
    process = RunnerProcess(None, "--virtual-clock", str(start)).start()
    yield process
    process.close()


def _claims(authorization: str | None) -> tuple[str, str] | None:
    if authorization is None:
        return None
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data["aud"], data["email"]


def _by_task(seen: Seen) -> dict[str, list[dict[str, Any]]]:
    """Each task's deliveries: Cloud Tasks' headers, method, path and body, and the token's aud and email."""
    out: dict[str, list[dict[str, Any]]] = {}
    for task_id, headers in seen:
        kept: dict[str, Any] = {
            k: v for k, v in headers.items() if k.startswith(("x-cloudtasks-", "_")) or k in ("user-agent",)
        }
        kept["token"] = _claims(headers.get("authorization"))
        out.setdefault(task_id, []).append(kept)
    return out


def _create(client: TasksClient, base: str, start: dt.datetime, config: Any, plans: list[Any]) -> None:
    """The application code under test: one queue, then the tasks."""
    client.ensure_queue(QUEUE, retry_config=config)
    for index, plan in enumerate(plans):
        client.enqueue(
            QUEUE,
            url=f"{base}/t/t{index}",
            json={"i": index},
            name=f"t{index}",
            schedule_time=start + dt.timedelta(seconds=plan["delay_s"]),
            service_account=SA if plan["token"] else None,
        )


class RunnerSide:
    """Drives the runner process: wait until idle, move its clock to the next due time, repeat."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def call(self, method: str, path: str, **body: Any) -> Any:
        answer = self.http.request(method, f"{self.url}{path}", json=body or None, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def now(self) -> float:
        return parse_timestamp(self.call("GET", "/runner/v1/clock")["now"])

    def run_until(self, horizon: float) -> None:
        for _ in range(500):
            self.call("POST", "/runner/v1/waitIdle", queue=QUEUE_NAME, timeout="20s", within="0s")
            tasks = self.call("GET", f"/v2/{QUEUE_NAME}/tasks").get("tasks", [])
            due = min((parse_timestamp(t["scheduleTime"]) for t in tasks), default=None)
            if due is None or due > horizon:
                self.call("POST", "/runner/v1/clock:advance", to=_rfc3339(horizon))
                self.call("POST", "/runner/v1/waitIdle", queue=QUEUE_NAME, timeout="20s", within="0s")
                return
            self.call("POST", "/runner/v1/clock:advance", to=_rfc3339(due))
        raise AssertionError("the runner kept having tasks due")

    def final(self) -> dict[str, tuple[str, int, int]]:
        listed = self.call("GET", f"/runner/v1/{QUEUE_NAME}/tasks?exhausted=true").get("tasks", [])
        return {
            t["name"].rpartition("/")[2]: (t["state"], t.get("dispatchCount", 0), t.get("responseCount", 0))
            for t in listed
        }

    def attempts(self, task_id: str) -> list[tuple[float, int | None]]:
        history = self.call("GET", f"/runner/v1/{QUEUE_NAME}/tasks/{task_id}:attempts").get("attempts", [])
        return [(parse_timestamp(a["dispatchTime"]), a.get("httpStatus")) for a in history]


def _rfc3339(instant: float) -> str:
    return dt.datetime.fromtimestamp(instant, dt.UTC).isoformat().replace("+00:00", "Z")


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=retry_configs, plans=st.lists(task_plans, min_size=1, max_size=3))
def test_fake_and_runner_deliver_alike(
    runner: RunnerProcess, serve: Callable[[Flask], Any], config: dict[str, Any], plans: list[dict[str, Any]]
) -> None:
    handler = Handler()
    handler.plans = {f"t{i}": plan for i, plan in enumerate(plans)}
    base = serve(handler.app).url
    side = RunnerSide(runner.url)
    side.call("POST", "/runner/v1/reset")
    start_s = side.now()
    start = dt.datetime.fromtimestamp(start_s, dt.UTC)

    with TasksClient(PROJECT, LOCATION, endpoint=runner.url) as client:
        _create(client, base, start, config, plans)
    side.run_until(start_s + HORIZON_S)
    real = _by_task(handler.seen)
    assert set(real) == set(handler.plans)  # every task was delivered within the horizon

    handler.seen = []
    fake = FakeQueue(handler.app, project=PROJECT, location=LOCATION, start=start, raise_errors=False)
    _create(fake, base, start, config, plans)
    fake.advance(seconds=HORIZON_S)
    faked = _by_task(handler.seen)

    assert faked == real
    left = {t.id: (t.state, t.dispatch_count, t.response_count) for t in fake.pending() + fake.exhausted()}
    assert left == side.final()
    for task in fake.created:
        expected = [(a.dispatch_time.timestamp(), a.http_status) for a in fake.attempts(task)]
        assert expected == side.attempts(task.id)
