"""Scheduled handlers against the real runner: a `runner serve` process fires a job at an app on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, request
from testsupport.runner_process import RunnerProcess, runner_process

from tasktoolkit import TaskContext, TaskToolkit, task_handler
from tasktoolkit.client import TasksClient
from tasktoolkit.fanout import fan_out
from tasktoolkit.headers import ScheduleContext
from tasktoolkit.pytest_plugin import LocalRunner
from tasktoolkit.scheduled import scheduled_handler

__all__ = ["runner_process"]

PROJECT, LOCATION = "local-project", "us-central1"
USERS = ("ada", "grace", "linus")
AUDIENCE = "https://worker.example.test"
EMAIL = "scheduler@local-project.iam.gserviceaccount.com"

pytestmark = pytest.mark.timeout(90)


class Worker:
    """A digest job that fans out one email task per user, and the email handler."""

    def __init__(self, app: Flask) -> None:
        self.fires: list[ScheduleContext] = []
        self.fire_requests: list[dict[str, str]] = []
        self.emails: list[str] = []
        self.all_sent = threading.Event()
        #: Set once the fire's answer left the view, its dedup record completed (after_request runs then).
        self.fire_answered = threading.Event()
        self._lock = threading.Lock()

        @app.after_request
        def note_fire_answer(response: Response) -> Response:
            if request.path == "/jobs/weekly-digest" and response.status_code == 200:
                self.fire_answered.set()
            return response

        @app.post("/tasks/email")
        @task_handler(queue="emails")
        def email(payload: Any, task: TaskContext) -> dict[str, Any]:
            with self._lock:
                self.emails.append(payload["user"])
                if len(self.emails) >= len(USERS):
                    self.all_sent.set()
            return {"sent": payload["user"]}

        @app.post("/jobs/weekly-digest")
        @scheduled_handler("0 9 * * 1")
        def weekly_digest(fire: ScheduleContext) -> dict[str, Any]:
            self.fires.append(fire)
            self.fire_requests.append(dict(request.headers))
            result = fan_out(email, fire, ((user, {"user": user}) for user in USERS))
            return {"enqueued": result.enqueued, "existing": result.existing}


def _app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask("digest")
    app.config.update(
        TASKTOOLKIT_AUDIENCE=AUDIENCE,
        TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=[EMAIL],
        TASKTOOLKIT_SERVICE_ACCOUNT=EMAIL,
        TASKTOOLKIT_STORE=f"sqlite:///{tmp_path / 'dedup.db'}",
        TASKTOOLKIT_PROJECT=PROJECT,
        TASKTOOLKIT_LOCATION=LOCATION,
        **config,
    )
    return app


def test_a_runner_process_fires_the_job_and_a_duplicate_fire_enqueues_nothing(
    runner_process: Callable[..., RunnerProcess],
    serve: Callable[[Flask], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = runner_process(None)
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", runner.url.removeprefix("http://"))
    app = _app(tmp_path)
    worker = Worker(app)
    TaskToolkit(app)
    live = serve(app)
    app.config["TASKTOOLKIT_BASE_URL"] = live.url
    with TasksClient(PROJECT, LOCATION, endpoint=runner.url) as client:
        client.ensure_queue("emails")
        jobs = f"{runner.url}/v1/projects/{PROJECT}/locations/{LOCATION}/jobs"
        job = {
            "name": f"projects/{PROJECT}/locations/{LOCATION}/jobs/weekly-digest",
            "schedule": "0 9 * * 1",
            "httpTarget": {
                "uri": f"{live.url}/jobs/weekly-digest",
                "oidcToken": {"serviceAccountEmail": EMAIL, "audience": AUDIENCE},
            },
        }
        assert requests.post(jobs, json=job, timeout=10).status_code == 200
        assert requests.post(f"{jobs}/weekly-digest:run", json={}, timeout=10).status_code == 200
        assert worker.all_sent.wait(30), runner.log
        assert worker.fire_answered.wait(30), runner.log  # the emails can arrive before the fire's answer
        [fire] = worker.fires
        assert fire.job_name == "weekly-digest"
        assert abs(fire.schedule_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
        assert sorted(worker.emails) == sorted(USERS)

        # The same fire again, token and all (a duplicate delivery): replayed, nothing enqueued.
        [sent] = worker.fire_requests
        headers = {k: v for k, v in sent.items() if k.lower() not in ("host", "content-length")}
        again = requests.post(f"{live.url}/jobs/weekly-digest", headers=headers, timeout=10)
        assert again.status_code == 200
        assert again.headers["X-TaskToolkit-Replayed"] == "true"
        assert again.json() == {"enqueued": 3, "existing": 0}
        assert len(worker.fires) == 1
        idle = {"timeout": "20s", "within": "0s"}
        assert requests.post(f"{runner.url}/runner/v1/waitIdle", json=idle, timeout=30).status_code == 200
        assert list(client.list_tasks("emails")) == []
        assert sorted(worker.emails) == sorted(USERS)


def test_fan_out_through_the_runners_rest_api_creates_each_task_once(
    local_runner: LocalRunner, tmp_path: Path
) -> None:
    app = _app(tmp_path, TASKTOOLKIT_BASE_URL="http://127.0.0.1:9")
    Worker(app)
    TaskToolkit(app).use_client(local_runner.client, app)
    local_runner.client.ensure_queue("emails", rate_limits={"max_dispatches_per_second": 1})
    local_runner.client.pause_queue("emails")
    fire = ScheduleContext("weekly-digest", dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC), b"")
    items = [(user, {"user": user}) for user in USERS]
    with app.app_context():
        first = fan_out(worker_email(app), fire, items)
        again = fan_out(worker_email(app), fire, items)
    assert (first.enqueued, first.existing, again.enqueued, again.existing) == (3, 0, 0, 3)
    assert len(list(local_runner.client.list_tasks("emails"))) == 3


def worker_email(app: Flask) -> Any:
    """The app's email task handler."""
    return app.view_functions["email"]
