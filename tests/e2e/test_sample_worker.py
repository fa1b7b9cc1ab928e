"""The sample worker (gunicorn) and the runner as real processes: each demo scenario, seen by the worker."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from testsupport.runner_process import RunnerProcess

from sample_worker.emails import Outbox
from sample_worker.images import png_size, solid_png
from sample_worker.launch import ChildProcess, queue_file, start_worker
from tasktoolkit.client import TasksClient

PROJECT, LOCATION = "local-project", "us-central1"
REMINDER_DELAY_S = 3
USER = {"user_id": "ada", "email": "ada@example.com", "name": "Ada Lovelace"}
WELCOME, REMINDER = "Welcome to Sample App", "Finish setting up your account"
SERVICE_ACCOUNT = f"tasks@{PROJECT}.iam.gserviceaccount.com"

pytestmark = pytest.mark.timeout(120)


@dataclass
class Run:
    """What the scenarios did and what the worker and runner answered."""

    runner_url: str
    worker_url: str
    data_dir: Path
    worker: ChildProcess
    answers: dict[str, requests.Response]
    #: Clock readings just before and just after the first sign-up.
    signup_window: tuple[dt.datetime, dt.datetime]

    def status(self, image_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.worker_url}/images/{image_id}", timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def messages(self) -> list[EmailMessage]:
        return Outbox(self.data_dir / "outbox").messages()

    def attempts(self, task_name: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.runner_url}/runner/v1/{task_name}:attempts", timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["attempts"]
        return result

    def worker_log(self, text: str) -> list[str]:
        return [line for line in self.worker.lines if text in line]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Both processes, driven through the worker's endpoints, then waited on until the runner is idle."""
    root = tmp_path_factory.mktemp("sample")
    runner = RunnerProcess(root / ".runner", "--queues", str(queue_file())).start()
    worker: ChildProcess | None = None
    try:
        worker, worker_url = start_worker(
            {
                "CLOUD_TASKS_EMULATOR_HOST": runner.url.removeprefix("http://"),
                "TASKTOOLKIT_PROJECT": PROJECT,
                "TASKTOOLKIT_LOCATION": LOCATION,
                "SAMPLE_DATA_DIR": str(root / "data"),
                "SAMPLE_REMINDER_DELAY_S": str(REMINDER_DELAY_S),
                "SAMPLE_THUMBNAIL_OUTAGE_ATTEMPTS": "2",
            },
            on_line=lambda line: None,
        )
        before = dt.datetime.now(dt.UTC)
        answers = {"signup": requests.post(f"{worker_url}/signup", json=USER, timeout=30)}
        window = (before, dt.datetime.now(dt.UTC))
        answers |= {
            "signup again": requests.post(f"{worker_url}/signup", json=USER, timeout=30),
            "photo": requests.put(
                f"{worker_url}/images/photo",
                data=solid_png(300, 600, (10, 20, 30)),
                headers={"Content-Type": "image/png"},
                timeout=30,
            ),
            "invoice": requests.put(
                f"{worker_url}/images/invoice",
                data=b"%PDF-1.7\n",
                headers={"Content-Type": "application/pdf"},
                timeout=30,
            ),
        }
        # A second, differently named task for the same welcome email: the handler's dedup must absorb it.
        with TasksClient(PROJECT, LOCATION, endpoint=runner.url) as client:
            client.enqueue(
                "emails",
                url=f"{worker_url}/tasks/send-welcome-email",
                json=USER,
                name="welcome-again",
                service_account=SERVICE_ACCOUNT,
                audience=worker_url,
            )
        idle = requests.post(f"{runner.url}/runner/v1/waitIdle", json={"timeout": "60s"}, timeout=70)
        idle.raise_for_status()
        yield Run(runner.url, worker_url, root / "data", worker, answers, window)
    finally:
        if worker is not None:
            worker.stop(signal.SIGTERM)
        runner.close()


def test_signup_is_accepted_and_schedules_the_reminder(run: Run) -> None:
    answer = run.answers["signup"]
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "signed up"
    due = dt.datetime.fromisoformat(body["reminder_at"])
    delay = dt.timedelta(seconds=REMINDER_DELAY_S)
    assert run.signup_window[0] + delay <= due <= run.signup_window[1] + delay
    assert (
        "/queues/emails/tasks/" in body["welcome_task"] and "/queues/emails/tasks/" in body["reminder_task"]
    )


def test_welcome_email_is_sent_once(run: Run) -> None:
    again = run.answers["signup again"]
    assert again.status_code == 200 and again.json()["status"] == "already signed up"
    welcomes = [message for message in run.messages() if message["Subject"] == WELCOME]
    assert len(welcomes) == 1
    assert welcomes[0]["To"].addresses[0].addr_spec == "ada@example.com"
    # The differently named task was delivered and answered from the dedup record, without sending.
    [replayed] = run.attempts(f"projects/{PROJECT}/locations/{LOCATION}/queues/emails/tasks/welcome-again")
    assert replayed["httpStatus"] == 200
    assert len(run.worker_log("sent welcome email to ada@example.com")) == 1


def test_reminder_is_sent_at_its_time(run: Run) -> None:
    due = dt.datetime.fromisoformat(run.answers["signup"].json()["reminder_at"])
    [reminder] = [message for message in run.messages() if message["Subject"] == REMINDER]
    sent = parsedate_to_datetime(str(reminder["Date"]))  # whole seconds
    assert sent >= due.replace(microsecond=0)
    reminder_task = run.answers["signup"].json()["reminder_task"].rpartition("/")[2]
    assert str(reminder["X-Sample-Task"]).strip() == f"emails/{reminder_task}"


def test_thumbnail_succeeds_after_transient_failures(run: Run) -> None:
    assert run.answers["photo"].status_code == 202
    status = run.status("photo")
    assert status == {
        "image_id": "photo",
        "state": "ready",
        "thumbnail": "photo.thumbnail.png",
        "size": [64, 128],
        "attempt": 3,
    }
    assert png_size((run.data_dir / "images" / "photo.thumbnail.png").read_bytes()) == (64, 128)
    assert len(run.worker_log("thumbnail photo: storage unavailable")) == 2
    statuses = [
        attempt["httpStatus"] for attempt in run.attempts(run.answers["photo"].json()["thumbnail_task"])
    ]
    assert statuses == [503, 503, 200]


def test_permanent_failure_is_acknowledged_without_retry(run: Run) -> None:
    assert run.answers["invoice"].status_code == 202
    status = run.status("invoice")
    assert status["state"] == "rejected" and status["attempt"] == 1
    assert "application/pdf" in status["reason"]
    statuses = [
        attempt["httpStatus"] for attempt in run.attempts(run.answers["invoice"].json()["thumbnail_task"])
    ]
    assert statuses == [200]
    assert len(run.worker_log("thumbnail invoice: rejected")) == 1


def test_nothing_is_left_in_the_queues(run: Run) -> None:
    with TasksClient(PROJECT, LOCATION, endpoint=run.runner_url) as client:
        assert [task.name for queue in ("emails", "images") for task in client.list_tasks(queue)] == []
