"""TasksClient against a real `runner serve`: each method, dedup, schedule, deadline, OIDC, errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from testsupport.runner_process import RunnerProcess

from tasktoolkit import TaskContext, TaskToolkit, task_handler
from tasktoolkit.client import EnqueueResult, TasksClient
from tasktoolkit.dedup import MemoryDedupStore
from tasktoolkit.errors import InvalidArgument, ResourceNotFound, TaskAlreadyExists, TaskToolkitError

SA = "tasks@my-proj.iam.gserviceaccount.com"
URL = "http://127.0.0.1:9/tasks/noop"  # never delivered: every task here is scheduled an hour ahead
LATER = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    process = RunnerProcess(None).start()
    yield process.url
    process.close()


@pytest.fixture
def client(runner_url: str) -> Iterator[TasksClient]:
    with TasksClient("my-proj", "us-central1", endpoint=runner_url) as tasks:
        yield tasks


@pytest.fixture
def queue(client: TasksClient, request: pytest.FixtureRequest) -> Iterator[str]:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:90].strip("-")
    client.ensure_queue(name)
    yield name
    client.delete_queue(name)


def test_emulator_host_env_points_the_client_at_the_runner(runner_url: str) -> None:
    host = runner_url.removeprefix("http://")
    with TasksClient("my-proj", "us-central1", environ={"CLOUD_TASKS_EMULATOR_HOST": host}) as tasks:
        assert tasks.endpoint == runner_url
        tasks.ensure_queue("env-queue")
        assert tasks.get_queue("env-queue").state == "RUNNING"
        tasks.delete_queue("env-queue")


def test_ensure_queue_creates_then_updates_only_the_given_fields(client: TasksClient) -> None:
    created = client.ensure_queue(
        "emails", rate_limits={"max_dispatches_per_second": 5}, retry_config={"max_attempts": 3}
    )
    assert created.id == "emails"
    assert created.rate_limits["maxDispatchesPerSecond"] == 5
    assert created.retry_config["maxAttempts"] == 3
    updated = client.ensure_queue(
        "emails", retry_config={"min_backoff": dt.timedelta(seconds=2), "max_backoff": 30}
    )
    assert updated.rate_limits["maxDispatchesPerSecond"] == 5  # untouched
    assert updated.retry_config["maxAttempts"] == 3
    assert updated.retry_config["minBackoff"] == "2s"
    assert updated.retry_config["maxBackoff"] == "30s"
    assert client.ensure_queue("emails") == client.get_queue("emails")  # no fields: left alone
    client.delete_queue("emails")
    with pytest.raises(ResourceNotFound, match="Queue does not exist"):
        client.get_queue("emails")


def test_dedup_key_becomes_a_hashed_name_and_rejects_a_duplicate(client: TasksClient, queue: str) -> None:
    task = client.enqueue(queue, url=URL, json={"user_id": 42}, dedup_key="welcome:42", delay=LATER)
    assert task is not None
    assert task.id == hashlib.sha256(b"welcome:42").hexdigest()
    assert task.queue == queue
    with pytest.raises(TaskAlreadyExists, match="already exists") as raised:
        client.enqueue(queue, url=URL, json={"user_id": 42}, dedup_key="welcome:42", delay=LATER)
    assert (raised.value.status, raised.value.http_status) == ("ALREADY_EXISTS", 409)
    assert client.enqueue(queue, url=URL, dedup_key="welcome:42", delay=LATER, ignore_existing=True) is None
    other = client.enqueue(queue, url=URL, dedup_key="welcome:43", delay=LATER)
    assert other is not None and other.id != task.id
    assert sorted(t.id for t in client.list_tasks(queue)) == sorted([task.id, other.id])


def test_explicit_name_schedule_and_deadline_round_trip(client: TasksClient, queue: str) -> None:
    when = dt.datetime.now(dt.UTC).replace(microsecond=123456) + dt.timedelta(days=2)
    task = client.enqueue(
        queue, url=URL, name="report-7", schedule_time=when, dispatch_deadline=dt.timedelta(seconds=45)
    )
    assert task is not None
    assert task.id == "report-7"
    assert task.schedule_time == when
    assert task.dispatch_deadline == dt.timedelta(seconds=45)
    assert task.create_time is not None and task.create_time <= dt.datetime.now(dt.UTC)
    assert client.get_task(queue, "report-7") == task
    client.delete_task(queue, "report-7")
    with pytest.raises(ResourceNotFound):
        client.get_task(queue, "report-7")
    with pytest.raises(TaskAlreadyExists, match="existed too recently"):  # the tombstone
        client.enqueue(queue, url=URL, name="report-7")


def test_delay_is_added_to_the_client_clock(runner_url: str, queue: str) -> None:
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)
    with TasksClient("my-proj", "us-central1", endpoint=runner_url, clock=lambda: start) as tasks:
        task = tasks.enqueue(queue, url=URL, delay=dt.timedelta(hours=24))
    assert task is not None and task.schedule_time == start + dt.timedelta(hours=24)


def test_oidc_token_settings_reach_the_task(client: TasksClient, queue: str) -> None:
    task = client.enqueue(
        queue, url=URL, json={}, delay=LATER, service_account=SA, audience="https://worker.example"
    )
    assert task is not None
    oidc = task.raw["httpRequest"]["oidcToken"]
    assert oidc == {"serviceAccountEmail": SA, "audience": "https://worker.example"}
    assert task.raw["httpRequest"]["headers"]["Content-Type"] == "application/json"


def test_service_errors_are_typed_and_carry_the_message(client: TasksClient, queue: str) -> None:
    too_far = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    with pytest.raises(InvalidArgument, match="too far in the future") as raised:
        client.enqueue(queue, url=URL, schedule_time=too_far)
    assert raised.value.http_status == 400
    with pytest.raises(ResourceNotFound, match="Queue does not exist"):
        client.enqueue("no-such-queue", url=URL)
    with pytest.raises(ResourceNotFound):
        client.delete_task(queue, "missing")
    assert list(client.list_tasks(queue)) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule_time": dt.datetime(2030, 1, 1)}, "timezone-aware"),  # naive on purpose
        ({"delay": dt.timedelta(seconds=-1)}, "delay must be a timedelta >= 0"),
        ({"delay": LATER, "schedule_time": dt.datetime.now(dt.UTC)}, "either delay= or schedule_time="),
        ({"dispatch_deadline": dt.timedelta(seconds=5)}, "between 15 s and 30 min"),
        ({"name": "bad name!"}, "can contain only letters"),
        ({"name": "a", "dedup_key": "b"}, "either name= or dedup_key="),
        ({"json": {}, "body": b"x"}, "either json= or body="),
        ({"json": {"x": 1}, "method": "GET"}, "only with POST, PUT or PATCH"),
        ({"method": "FETCH"}, "method must be one of"),
        ({"audience": "https://a"}, "audience needs service_account"),
        ({"json": {"x": {1, 2}}}, "not JSON-serializable"),
        ({"dedup_key": ""}, "dedup_key must be a non-empty string"),
    ],
)
def test_bad_options_are_refused_before_sending(
    client: TasksClient, queue: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        client.enqueue(queue, url=URL, **options)  # type: ignore[arg-type]
    assert list(client.list_tasks(queue)) == []


def test_bad_queue_and_url_are_refused_before_sending(client: TasksClient) -> None:
    with pytest.raises(InvalidArgument, match="queue must be a queue id"):
        client.enqueue("bad/queue", url=URL)
    with pytest.raises(InvalidArgument, match="url must be an http"):
        client.enqueue("q", url="ftp://example.com/x")
    with pytest.raises(InvalidArgument, match="rate_limits has no field 'max_burst_size'"):
        client.ensure_queue("q", rate_limits={"max_burst_size": 10})
    with pytest.raises(InvalidArgument, match="project must be a non-empty id"):
        TasksClient("", "us-central1", endpoint="http://127.0.0.1:1")


def test_pause_resume_purge_and_paged_listing(client: TasksClient, queue: str) -> None:
    for number in range(5):
        client.enqueue(queue, url=URL, name=f"t{number}", delay=LATER)
    assert sorted(t.id for t in client.list_tasks(queue, page_size=2)) == [f"t{n}" for n in range(5)]
    assert client.pause_queue(queue).state == "PAUSED"
    assert client.get_queue(queue).state == "PAUSED"
    assert client.resume_queue(queue).state == "RUNNING"
    client.purge_queue(queue)
    assert list(client.list_tasks(queue)) == []


def test_enqueue_many_reports_each_task_in_order(client: TasksClient, queue: str) -> None:
    specs: list[dict[str, object]] = [{"url": URL, "json": {"n": n}, "delay": LATER} for n in range(40)]
    specs[10] = {"url": URL, "dedup_key": "same", "delay": LATER}
    specs[20] = {"url": URL, "dedup_key": "same", "delay": LATER}
    specs[30] = {"url": URL, "no_such_option": 1}
    results = client.enqueue_many(queue, specs, max_workers=8)
    assert [r.index for r in results] == list(range(40))
    failed = {r.index: r.error for r in results if not r.ok}
    assert set(failed) in ({20, 30}, {10, 30})  # one of the two equal keys wins
    assert isinstance(failed.pop(30), InvalidArgument)
    assert all(isinstance(error, TaskAlreadyExists) for error in failed.values())
    assert len(list(client.list_tasks(queue))) == 38
    again = client.enqueue_many(queue, iter([specs[10]]), ignore_existing=True)
    assert again == [EnqueueResult(0, task=None, error=None)]


def test_enqueue_many_checks_its_limits(client: TasksClient) -> None:
    for bad in (0, 65, True):
        with pytest.raises(InvalidArgument, match=r"max_workers must be an int within \[1, 64\]"):
            client.enqueue_many("q", [], max_workers=bad)
    [result] = client.enqueue_many("q", ["not a mapping"])  # type: ignore[list-item]
    assert isinstance(result.error, TaskToolkitError) and "must be a mapping" in str(result.error)


def test_a_missing_queue_is_named_with_the_runner_command_that_creates_it(
    client: TasksClient, runner_url: str
) -> None:
    path = "projects/my-proj/locations/us-central1/queues/never-created"
    with pytest.raises(ResourceNotFound) as raised:
        client.enqueue("never-created", url=URL, delay=LATER)
    error = raised.value
    assert error.message.startswith("Queue does not exist.")  # the service's own message, unchanged
    assert f"queue {path}" in str(error)
    command = (
        f"runner queues create never-created --project my-proj --location us-central1 --endpoint {runner_url}"
    )
    assert command in str(error)
    # The command works as printed (``runner`` is ``python -m local_runner``).
    argv = [sys.executable, "-m", "local_runner", *shlex.split(command)[1:]]
    assert subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout.startswith(
        "Created queue [never-created]"
    )
    assert client.enqueue("never-created", url=URL, delay=LATER) is not None
    client.delete_queue("never-created")


def test_other_not_found_answers_name_the_resource_without_the_create_hint(
    client: TasksClient, queue: str
) -> None:
    with pytest.raises(ResourceNotFound) as raised:
        client.get_task(queue, "missing")
    task_path = f"projects/my-proj/locations/us-central1/queues/{queue}/tasks/missing"
    assert str(raised.value) == f"NOT_FOUND: Requested entity was not found. (task {task_path})"
    with pytest.raises(ResourceNotFound, match="queue projects/my-proj/locations/us-central1/queues/gone"):
        client.delete_queue("gone")
    assert "runner queues create" not in str(raised.value)


def test_handler_enqueue_names_the_queue_under_the_runner(
    runner_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", runner_url.removeprefix("http://"))
    app = Flask("worker")
    app.config.update(
        TASKTOOLKIT_PROJECT="local-project",
        TASKTOOLKIT_LOCATION="us-central1",
        TASKTOOLKIT_BASE_URL="http://127.0.0.1:8080",
        TASKTOOLKIT_AUDIENCE="http://127.0.0.1:8080",
        TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=[SA],
    )
    TaskToolkit(app, store=MemoryDedupStore())

    @app.post("/tasks/welcome")
    @task_handler(queue="welcome-emails")
    def welcome(payload: Any, task: TaskContext) -> Any:
        return {}

    try:
        with app.app_context(), pytest.raises(ResourceNotFound) as raised:
            welcome.enqueue({"user_id": 1}, delay=LATER)
    finally:
        TaskToolkit.state(app).close()
        made = TaskToolkit.client(app)
        assert isinstance(made, TasksClient)
        made.close()
    assert str(raised.value).endswith(
        "(queue projects/local-project/locations/us-central1/queues/welcome-emails; on the local runner at "
        f"{runner_url}, create it with: runner queues create welcome-emails --project local-project "
        f"--location us-central1 --endpoint {runner_url})"
    )
