"""FakeQueue runs the runner's core: the runner's messages, limits, request building and clock, one copy."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask, abort, request

from local_runner import errors as runner_errors
from local_runner.codec.scalars import format_epoch_seconds
from local_runner.engine.delivery import encode_url
from local_runner.model import MAX_TASK_BYTES, HttpRequest, RateLimits, Task, estimated_task_bytes
from tasktoolkit import TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import MemoryDedupStore
from tasktoolkit.errors import FailedPrecondition, InvalidArgument, ResourceNotFound, TaskAlreadyExists
from tasktoolkit.handler import REPLAYED_HEADER
from tasktoolkit.testing import FakeQueue, FakeQueueError

SA = "tasks@my-proj.iam.gserviceaccount.com"
START = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)
BASE = "https://worker.example"


class App:
    """An app with one task handler that records its runs and fails while ``failures`` lasts."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.failures = 0
        self.app = app = Flask("core")
        app.config.update(
            TASKTOOLKIT_AUDIENCE=BASE,
            TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=[SA],
            TASKTOOLKIT_BASE_URL=BASE,
        )
        self.store = MemoryDedupStore()
        TaskToolkit(app, store=self.store)

        @app.post("/tasks/job")
        @task_handler(queue="jobs")
        def job(payload: Any, task: TaskContext) -> dict[str, int]:
            self.runs.append({"path": request.path, "query": request.query_string, "payload": payload})
            if len(self.runs) <= self.failures:
                abort(500)
            return {"runs": len(self.runs)}

        @app.post("/plain/<path:rest>")
        def plain(rest: str) -> dict[str, str]:
            self.runs.append({"path": request.path, "headers": dict(request.headers)})
            return {"rest": rest}

        self.job = job


@pytest.fixture
def worker() -> App:
    return App()


@pytest.fixture
def fake(worker: App) -> FakeQueue:
    """The fake installed in the worker's app: its client, its clock, its token issuer."""
    installed = FakeQueue(worker.app, start=START)
    assert TaskToolkit.client(worker.app) is installed
    return installed


# -- the drifts: each one the runner's behaviour now -----------------------------------------------


def test_a_rate_above_500_is_refused_with_the_services_message(fake: FakeQueue) -> None:
    with pytest.raises(InvalidArgument) as refused:
        fake.ensure_queue("jobs", rate_limits={"max_dispatches_per_second": 900})
    with pytest.raises(runner_errors.InvalidArgument) as runner_refused:
        RateLimits(max_dispatches_per_second=900)
    assert refused.value.message == runner_refused.value.message
    assert refused.value.message == "RateLimits.maxDispatchesPerSecond must be less than or equal to 500."


def _body_for(size: int, fake: FakeQueue) -> bytes:
    """A body that makes a task to ``BASE/plain/x`` of the runner's estimated ``size`` bytes."""
    name = f"{fake.queue_path('jobs')}/tasks/big"
    empty = Task(name, HttpRequest(f"{BASE}/plain/x", headers={"User-Agent": "Google-Cloud-Tasks"}), 0.0, 0.0)
    return b"x" * (size - estimated_task_bytes(empty))


def test_the_task_size_limit_is_the_services_1_mib_minus_7(fake: FakeQueue) -> None:
    too_big = _body_for(MAX_TASK_BYTES + 1, fake)
    with pytest.raises(InvalidArgument) as refused:
        fake.enqueue("jobs", url=f"{BASE}/plain/x", body=too_big, name="big")
    assert refused.value.message == (
        f"Task size is {MAX_TASK_BYTES + 1} bytes; the maximum task size is 1048569 bytes (1 MiB)."
    )
    assert fake.enqueue("jobs", url=f"{BASE}/plain/x", body=too_big[:-1], name="big") is not None


def test_a_tombstoned_name_is_refused_with_the_services_whole_message(fake: FakeQueue) -> None:
    fake.enqueue("jobs", url=f"{BASE}/plain/x", name="once")
    fake.run_until_idle()
    with pytest.raises(TaskAlreadyExists) as refused:
        fake.enqueue("jobs", url=f"{BASE}/plain/x", name="once")
    assert refused.value.message == runner_errors.TASK_TOMBSTONED
    assert "For more information about task de-duplication" in refused.value.message


def test_the_dedup_store_runs_on_the_fakes_clock(worker: App, fake: FakeQueue) -> None:
    """Past the 24 h result TTL in virtual time, a task of the same name runs again, not replayed."""
    with worker.app.app_context():
        worker.job.enqueue({"n": 1}, name="same")
    [first] = fake.run_until_idle()
    again = fake.redeliver(first.task)
    assert again.response_headers.get(REPLAYED_HEADER) == "true" and len(worker.runs) == 1
    fake.advance(hours=25)
    assert worker.store.clock() == fake.now.timestamp()
    with worker.app.app_context():
        worker.job.enqueue({"n": 1}, name="same")
    [later] = fake.run_until_idle()
    assert later.ok and REPLAYED_HEADER not in later.response_headers and len(worker.runs) == 2


def test_tokens_expire_in_virtual_time(worker: App, fake: FakeQueue) -> None:
    with worker.app.app_context():
        worker.job.enqueue({"n": 1})
    [first] = fake.run_until_idle()
    fake.advance(hours=1, minutes=1)  # past the token's hour and the verifier's skew
    stale = fake.redeliver(first.task)
    assert stale.status == 401 and len(worker.runs) == 1
    with worker.app.app_context():
        worker.job.enqueue({"n": 2})
    [fresh] = fake.run_until_idle()  # a new attempt carries a token issued at the virtual now
    assert fresh.ok and len(worker.runs) == 2


def test_urls_are_percent_encoded_as_the_runner_sends_them(worker: App, fake: FakeQueue) -> None:
    url = f"{BASE}/plain/café au lait?q=a b&r=ü"
    fake.enqueue("jobs", url=url)
    [delivery] = fake.run_until_idle()
    assert delivery.url == encode_url(url) == f"{BASE}/plain/caf%C3%A9%20au%20lait?q=a%20b&r=%C3%BC"
    assert worker.runs[0]["path"] == "/plain/café au lait"  # what the app sees, decoded by WSGI


def test_framing_headers_are_dropped_and_reserved_ones_replaced(worker: App, fake: FakeQueue) -> None:
    headers = {"Upgrade": "h2c", "Keep-Alive": "5", "X-Trace": "t-1", "User-Agent": "mine"}
    fake.enqueue("jobs", url=f"{BASE}/plain/x", headers=headers)
    [delivery] = fake.run_until_idle()
    sent = {key.lower(): value for key, value in delivery.headers.items()}
    assert "upgrade" not in sent and "keep-alive" not in sent
    assert (sent["x-trace"], sent["user-agent"]) == ("t-1", "Google-Cloud-Tasks")


def test_the_eta_header_is_the_runners_microsecond(worker: App) -> None:
    fake = FakeQueue(worker.app, start=START + dt.timedelta(microseconds=123457))
    fake.ensure_queue("jobs", retry_config={"min_backoff": 0.3333333, "max_attempts": 2})
    worker.failures = 1
    with worker.app.app_context():
        worker.job.enqueue({})
    first, retry = fake.run_until_idle()
    assert first.headers["X-CloudTasks-TaskETA"] == format_epoch_seconds(START.timestamp() + 0.123457)
    expected = format_epoch_seconds(START.timestamp() + 0.123457 + 0.333333)
    assert retry.headers["X-CloudTasks-TaskETA"] == expected


# -- what the fake gained from the core ------------------------------------------------------------


def test_attempt_history_per_task(worker: App, fake: FakeQueue) -> None:
    worker.failures = 2
    with worker.app.app_context():
        worker.job.enqueue({})
    fake.run_until_idle()
    [task] = fake.created
    attempts = fake.attempts(task)
    assert [a.http_status for a in attempts] == [500, 500, 200]
    assert [a.code for a in attempts] == [13, 13, 0]
    assert [a.dispatch_time for a in attempts] == [d.time for d in fake.deliveries_of(task)]


def test_exhausted_tasks_are_kept_and_replayable(worker: App, fake: FakeQueue) -> None:
    fake.ensure_queue("jobs", retry_config={"max_attempts": 2})
    worker.failures = 2
    with worker.app.app_context():
        worker.job.enqueue({}, name="stubborn")
    assert [d.status for d in fake.run_until_idle()] == [500, 500]
    [exhausted] = fake.exhausted("jobs")
    assert exhausted.state == "EXHAUSTED" and exhausted.dispatch_count == 2
    with pytest.raises(TaskAlreadyExists):  # its name is tombstoned, as the runner does
        fake.enqueue("jobs", url=f"{BASE}/tasks/job", name="stubborn")
    replayed = fake.replay(exhausted)
    assert replayed.state == "QUEUED" and replayed.dispatch_count == 0
    [delivery] = fake.run_until_idle()
    assert delivery.ok and delivery.headers["X-CloudTasks-TaskRetryCount"] == "0"
    assert exhausted.state == "SUCCEEDED" and fake.exhausted() == []
    with pytest.raises(FailedPrecondition, match="has not exhausted its retries"):
        fake.replay(exhausted)


def test_run_task_delivers_now_even_on_a_paused_queue(worker: App, fake: FakeQueue) -> None:
    with worker.app.app_context():
        worker.job.enqueue({}, name="later", delay=dt.timedelta(hours=2))
    fake.pause_queue("jobs")
    delivery = fake.run_task("jobs", "later")
    assert delivery.ok and delivery.time == START and fake.pending() == []
    with pytest.raises(ResourceNotFound):
        fake.run_task("jobs", "later")


def test_run_task_does_not_send_a_task_in_flight_twice(worker: App, fake: FakeQueue) -> None:
    inner: list[Any] = []

    @worker.app.post("/tasks/self-run")
    def self_run() -> str:
        try:
            fake.run_task("jobs", "me")
        except FakeQueueError as error:
            inner.append(error)
        return ""

    fake.enqueue("jobs", url=f"{BASE}/tasks/self-run", name="me")
    fake.run_until_idle()
    assert len(fake.deliveries) == 1 and "does not send it twice" in str(inner[0])


def test_purge_deletes_tasks_created_before_it(worker: App, fake: FakeQueue) -> None:
    fake.enqueue("jobs", url=f"{BASE}/plain/a", delay=dt.timedelta(minutes=5))
    fake.purge_queue("jobs")
    fake.enqueue("jobs", url=f"{BASE}/plain/b", delay=dt.timedelta(minutes=5))
    assert [t.state for t in fake.created] == ["DELETED", "QUEUED"]
    assert [d.url for d in fake.advance(minutes=5)] == [f"{BASE}/plain/b"]


def test_duplicate_deliveries_are_recorded_as_the_runner_records_them(worker: App) -> None:
    fake = FakeQueue(worker.app, start=START, duplicate_deliveries=True)
    with worker.app.app_context():
        worker.job.enqueue({})
    first, second = fake.run_until_idle()
    assert second.duplicate and second.response_headers[REPLAYED_HEADER] == "true" and len(worker.runs) == 1
    [attempt] = fake.attempts(first.task)
    assert (attempt.http_status, attempt.duplicated, attempt.duplicate_http_status) == (200, True, 200)
