"""FakeQueue: delayed tasks, virtual-time retries, duplicates absorbed, errors surfaced, service rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask, abort

from tasktoolkit import PermanentFailure, RetryTask, TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import MemoryDedupStore
from tasktoolkit.errors import ConfigurationError, InvalidArgument, ResourceNotFound, TaskAlreadyExists
from tasktoolkit.handler import REPLAYED_HEADER
from tasktoolkit.testing import FakeQueue, FakeQueueError

SA = "tasks@my-proj.iam.gserviceaccount.com"
START = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)


class Worker:
    """An app whose handlers record what they ran; ``failures`` makes the resize job fail N times."""

    def __init__(self, **config: Any) -> None:
        self.runs: list[tuple[str, Any, TaskContext]] = []
        self.failures = 0
        self.app = app = Flask("worker")
        app.config.update(
            {
                "TASKTOOLKIT_AUDIENCE": "https://worker.example",
                "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": [SA],
                "TASKTOOLKIT_BASE_URL": "https://worker.example",
                **config,
            }
        )
        TaskToolkit(app, store=MemoryDedupStore())

        @app.post("/signup")
        def signup() -> dict[str, str]:
            created = welcome.enqueue({"user_id": 42}, dedup_key="welcome:42", ignore_existing=True)
            reminder.enqueue({"user_id": 42}, delay=dt.timedelta(hours=24))
            return {"welcome": created.id if created else "existing"}

        @app.post("/tasks/welcome")
        @task_handler(queue="emails")
        def welcome(payload: Any, task: TaskContext) -> dict[str, bool]:
            self.runs.append(("welcome", payload, task))
            return {"sent": True}

        @app.post("/tasks/reminder")
        @task_handler(queue="emails")
        def reminder(payload: Any, task: TaskContext) -> dict[str, bool]:
            self.runs.append(("reminder", payload, task))
            return {"reminded": True}

        @app.post("/tasks/resize/<size>")
        @task_handler(queue="images")
        def resize(payload: Any, task: TaskContext, size: str) -> dict[str, str]:
            self.runs.append(("resize", payload, task))
            if payload.get("bad"):
                raise PermanentFailure("bad input")
            if payload.get("explode"):
                raise ValueError("handler bug")
            if len([r for r in self.runs if r[0] == "resize"]) <= self.failures:
                abort(503)
            return {"size": size}

        self.welcome, self.reminder, self.resize = welcome, reminder, resize

    def names(self) -> list[str]:
        return [name for name, _, _ in self.runs]


@pytest.fixture
def worker() -> Worker:
    return Worker()


@pytest.fixture
def fake(worker: Worker) -> FakeQueue:
    return FakeQueue(worker.app, start=START)


def test_a_24_hour_delayed_task_is_delivered_by_advance(worker: Worker, fake: FakeQueue) -> None:
    assert worker.app.test_client().post("/signup").status_code == 200
    assert [t.url for t in fake.pending()] == [
        "https://worker.example/tasks/welcome",
        "https://worker.example/tasks/reminder",
    ]
    fake.run_until_idle()
    assert worker.names() == ["welcome"]
    assert fake.advance(hours=23, minutes=59) == []
    [delivery] = fake.advance(minutes=1)
    assert worker.names() == ["welcome", "reminder"]
    assert delivery.ok and delivery.time == START + dt.timedelta(hours=24)
    assert delivery.headers["X-CloudTasks-TaskETA"] == f"{(START + dt.timedelta(hours=24)).timestamp():.6f}"
    assert fake.now == START + dt.timedelta(hours=24) and fake.pending() == []


def test_retries_follow_the_queues_backoff_in_virtual_time(worker: Worker, fake: FakeQueue) -> None:
    fake.ensure_queue(
        "images",
        retry_config={"min_backoff": 1, "max_backoff": 10, "max_doublings": 2, "max_attempts": 6},
    )
    worker.failures = 100
    with worker.app.app_context():
        task = worker.resize.enqueue({"image": "a.png"}, route_args={"size": "64"})
    assert task is not None
    deliveries = fake.run_until_idle()
    times = [(d.time - START).total_seconds() for d in deliveries]
    # min * 2^min(k-1, D) * max(1, k-D), capped at max: 1, 2, 4, 8, 10 s between the six attempts
    assert times == [0, 1, 3, 7, 15, 25]
    assert [d.headers["X-CloudTasks-TaskRetryCount"] for d in deliveries] == ["0", "1", "2", "3", "4", "5"]
    assert "X-CloudTasks-TaskPreviousResponse" not in deliveries[0].headers
    assert {d.headers.get("X-CloudTasks-TaskPreviousResponse") for d in deliveries[1:]} == {"503"}
    assert {d.headers["X-CloudTasks-TaskExecutionCount"] for d in deliveries} == {"0"}  # 5xx never counts
    assert [t.id for t in fake.exhausted("images")] == [task.id]
    assert deliveries[0].url == "https://worker.example/tasks/resize/64"


def test_a_transient_failure_is_retried_until_it_succeeds(worker: Worker, fake: FakeQueue) -> None:
    worker.failures = 2
    with worker.app.app_context():
        worker.resize.enqueue({"image": "a.png"}, route_args={"size": "128"})
    deliveries = fake.run_until_idle()
    assert [d.status for d in deliveries] == [503, 503, 200]
    assert deliveries[-1].response_json == {"size": "128"}
    assert fake.pending() == [] and fake.exhausted() == []


def test_a_double_delivery_is_absorbed_by_the_dedup_store(worker: Worker) -> None:
    fake = FakeQueue(worker.app, start=START, duplicate_deliveries=True)
    worker.app.test_client().post("/signup")
    first, second = fake.run_until_idle()
    assert worker.names() == ["welcome"]  # the body ran once
    assert (first.ok, second.ok, second.duplicate) == (True, True, True)
    assert second.headers == first.headers
    assert second.response_json == first.response_json == {"sent": True}
    assert REPLAYED_HEADER not in first.response_headers
    assert second.response_headers[REPLAYED_HEADER] == "true"
    again = fake.redeliver(first.task)
    assert again.duplicate and again.response_json == {"sent": True} and worker.names() == ["welcome"]


def test_a_handler_exception_is_raised_in_the_test_by_default(worker: Worker, fake: FakeQueue) -> None:
    with worker.app.app_context():
        worker.resize.enqueue({"explode": True}, route_args={"size": "1"})
    with pytest.raises(ValueError, match="handler bug"):
        fake.run_until_idle()
    [delivery] = fake.deliveries
    assert delivery.status == 500 and isinstance(delivery.exception, ValueError)
    assert fake.pending()[0].schedule_time == START + dt.timedelta(seconds=0.1)  # retry scheduled as usual


def test_raise_errors_false_only_records_the_exception(worker: Worker) -> None:
    fake = FakeQueue(worker.app, start=START, raise_errors=False)
    fake.ensure_queue("images", retry_config={"max_attempts": 3})
    with worker.app.app_context():
        worker.resize.enqueue({"explode": True}, route_args={"size": "1"})
    deliveries = fake.run_until_idle()
    assert [d.status for d in deliveries] == [500, 500, 500]
    assert all(isinstance(d.exception, ValueError) for d in deliveries)
    assert len(fake.exhausted()) == 1


def test_permanent_failure_is_acknowledged_and_not_retried(worker: Worker, fake: FakeQueue) -> None:
    with worker.app.app_context():
        worker.resize.enqueue({"bad": True}, route_args={"size": "1"})
    [delivery] = fake.run_until_idle()
    assert delivery.ok and delivery.response_json == {"acknowledged": True, "outcome": "permanent_failure"}


def test_retry_after_is_honoured(fake: FakeQueue, worker: Worker) -> None:
    @worker.app.post("/tasks/later")
    @task_handler(queue="emails")
    def later(payload: Any, task: TaskContext) -> dict[str, int]:
        if task.retry_count == 0:
            raise RetryTask(30)
        return {"retries": task.retry_count}

    with worker.app.app_context():
        later.enqueue({})
    first, second = fake.run_until_idle()
    assert first.status == 503 and first.retry_after_s == 30
    assert second.time - first.time == dt.timedelta(seconds=30)


def test_tasks_carry_a_token_the_app_accepts_and_none_without_a_service_account(
    worker: Worker, fake: FakeQueue
) -> None:
    with worker.app.app_context():
        worker.welcome.enqueue({"user_id": 1})
        worker.welcome.enqueue({"user_id": 2}, service_account=None)
    accepted, refused = fake.run_until_idle()[:2]
    assert accepted.ok and accepted.headers["Authorization"].startswith("Bearer ey")
    assert refused.status == 401 and "Authorization" not in refused.headers


def test_names_are_deduplicated_with_tombstones(worker: Worker, fake: FakeQueue) -> None:
    client = worker.app.test_client()
    assert client.post("/signup").json != {"welcome": "existing"}
    assert client.post("/signup").json == {"welcome": "existing"}  # still queued
    fake.run_until_idle()
    with worker.app.app_context(), pytest.raises(TaskAlreadyExists, match="existed too recently"):
        worker.welcome.enqueue({"user_id": 42}, dedup_key="welcome:42")
    fake.advance(hours=1)
    with worker.app.app_context():
        assert worker.welcome.enqueue({"user_id": 42}, dedup_key="welcome:42") is not None


def test_pause_resume_purge_and_delete(worker: Worker, fake: FakeQueue) -> None:
    with worker.app.app_context():
        worker.welcome.enqueue({"n": 1})
        doomed = worker.welcome.enqueue({"n": 2}, name="doomed")
    assert doomed is not None
    fake.pause_queue("emails")
    assert fake.run_until_idle() == [] and len(fake.pending("emails")) == 2
    fake.delete_task("emails", "doomed")
    assert [t.id for t in fake.list_tasks("emails")] != ["doomed"]
    fake.resume_queue("emails")
    assert [d.task.json for d in fake.run_until_idle()] == [{"n": 1}]
    with worker.app.app_context():
        worker.welcome.enqueue({"n": 3}, delay=dt.timedelta(hours=1))
    fake.purge_queue("emails")
    assert fake.pending() == [] and fake.advance(hours=2) == []


def test_service_rules_apply(worker: Worker) -> None:
    fake = FakeQueue(worker.app, start=START, auto_create_queues=False)
    with worker.app.app_context(), pytest.raises(ResourceNotFound, match="Queue does not exist"):
        worker.welcome.enqueue({})
    with pytest.raises(ResourceNotFound):
        fake.delete_queue("emails")
    fake.ensure_queue("emails")
    with worker.app.app_context():
        with pytest.raises(InvalidArgument, match="too far in the future"):
            worker.welcome.enqueue({}, delay=dt.timedelta(days=31))
        with pytest.raises(InvalidArgument, match="timezone-aware"):
            worker.welcome.enqueue({}, schedule_time=dt.datetime(2026, 12, 1))  # naive on purpose
        with pytest.raises(InvalidArgument, match="maximum task size"):
            worker.welcome.enqueue({"blob": "x" * (1024 * 1024)})
    assert fake.created == []


def test_a_refused_queue_update_changes_nothing(fake: FakeQueue) -> None:
    fake.ensure_queue("emails", retry_config={"max_attempts": 7})
    with pytest.raises(InvalidArgument, match="minBackoff must be less than or equal"):
        fake.ensure_queue("emails", retry_config={"max_attempts": 3, "min_backoff": 60, "max_backoff": 10})
    assert fake.get_queue("emails").retry_config["maxAttempts"] == 7
    with pytest.raises(InvalidArgument) as refused:
        fake.ensure_queue("emails", rate_limits={"max_dispatches_per_second": 900})
    assert refused.value.message == "RateLimits.maxDispatchesPerSecond must be less than or equal to 500."


def test_a_handler_can_enqueue_while_being_delivered(fake: FakeQueue, worker: Worker) -> None:
    @worker.app.post("/tasks/fan-out")
    @task_handler(queue="emails")
    def fan_out(payload: Any, task: TaskContext) -> dict[str, int]:
        for user in range(3):
            worker.welcome.enqueue({"user_id": user})
        return {"queued": 3}

    with worker.app.app_context():
        fan_out.enqueue({})
    assert len(fake.run_until_idle()) == 4
    assert [p["user_id"] for name, p, _ in worker.runs if name == "welcome"] == [0, 1, 2]


def test_the_fake_refuses_impossible_requests(worker: Worker, fake: FakeQueue) -> None:
    with pytest.raises(FakeQueueError, match="back in time"):
        fake.advance(dt.timedelta(seconds=-1))
    with worker.app.app_context():
        worker.resize.enqueue({}, route_args={"size": "1"})
    with pytest.raises(FakeQueueError, match="never delivered"):
        fake.redeliver(fake.pending()[0])
    endless = FakeQueue(worker.app, start=START, max_deliveries=5)
    endless.ensure_queue("images", retry_config={"max_attempts": -1})
    worker.failures = 10**6
    with worker.app.app_context():
        worker.resize.enqueue({}, route_args={"size": "1"})
    with pytest.raises(FakeQueueError, match="not idle after 5 deliveries"):
        endless.run_until_idle()


# -- the handler sugar ---------------------------------------------------------------------------


def test_enqueue_builds_the_task_from_route_and_config() -> None:
    worker = Worker(TASKTOOLKIT_BASE_URL="https://worker-abc.a.run.app/", TASKTOOLKIT_DEFAULT_QUEUE="misc")
    fake = FakeQueue(worker.app, start=START)

    @worker.app.route("/tasks/put-only", methods=["PUT"])
    @task_handler
    def put_only(payload: Any, task: TaskContext) -> str:
        return ""

    with worker.app.app_context():
        put_only.enqueue({"a": 1}, headers={"X-Trace": "t"}, dispatch_deadline=dt.timedelta(seconds=30))
    [task] = fake.pending()
    assert (task.queue, task.method, task.url) == (
        "misc",
        "PUT",
        "https://worker-abc.a.run.app/tasks/put-only",
    )
    assert (task.service_account, task.audience) == (SA, "https://worker.example")
    # The service stores the task with the User-Agent it sends (reference: headers "added at rest").
    assert task.headers == {
        "X-Trace": "t",
        "Content-Type": "application/json",
        "User-Agent": "Google-Cloud-Tasks",
    }
    assert task.dispatch_deadline == dt.timedelta(seconds=30)


@pytest.mark.parametrize(
    ("config", "call", "message"),
    [
        ({}, "outside", "needs an app"),
        ({"TASKTOOLKIT_BASE_URL": ""}, "welcome", "TASKTOOLKIT_BASE_URL is not set"),
        ({}, "unrouted", "is not a route"),
        ({}, "resize-no-args", "pass route_args"),
        (
            {"TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": [SA, "b@x.iam.gserviceaccount.com"]},
            "welcome",
            "SERVICE_ACCOUNT",
        ),
        ({}, "no-queue", "name a queue"),
    ],
)
def test_enqueue_explains_what_is_missing(config: dict[str, Any], call: str, message: str) -> None:
    worker = Worker(**config)
    FakeQueue(worker.app, start=START)

    @task_handler
    def unrouted(payload: Any, task: TaskContext) -> str:
        return ""

    @worker.app.post("/tasks/no-queue")
    @task_handler
    def no_queue(payload: Any, task: TaskContext) -> str:
        return ""

    calls = {
        "outside": lambda: worker.welcome.enqueue({}),
        "welcome": lambda: worker.welcome.enqueue({}),
        "unrouted": lambda: unrouted.enqueue({}, queue="q"),
        "resize-no-args": lambda: worker.resize.enqueue({}),
        "no-queue": lambda: no_queue.enqueue({}),
    }
    with pytest.raises(ConfigurationError, match=message):
        if call == "outside":
            calls[call]()
        else:
            with worker.app.app_context():
                calls[call]()


def test_the_decorator_checks_the_queue_id() -> None:
    with pytest.raises(ConfigurationError, match="queue must be a queue id"):
        task_handler(queue="bad queue")
