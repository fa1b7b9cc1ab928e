"""The Google path of TasksClient, against a local server answering like cloudtasks.googleapis.com.

Asserts the exact URLs, JSON bodies and Authorization header sent, and which failures are retried.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import socket
from collections.abc import Iterator

import pytest
from google.oauth2.credentials import Credentials
from pytest_httpserver import HTTPServer
from testsupport.google_api import error
from werkzeug import Request, Response

from tasktoolkit.client import GOOGLE_ENDPOINT, RetryPolicy, TasksClient
from tasktoolkit.errors import (
    ConfigurationError,
    PermissionDenied,
    ResourceNotFound,
    ServiceUnavailable,
    TaskAlreadyExists,
)

NOW = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)
PARENT = "/v2/projects/my-proj/locations/europe-west1/queues/emails"
TOKEN = "ya29.test-access-token"


def task_answer(name: str = f"{PARENT[4:]}/tasks/123") -> dict[str, object]:
    return {
        "name": name,
        "scheduleTime": "2026-11-22T10:00:00.000000123Z",
        "createTime": "2026-11-21T10:00:00Z",
        "dispatchDeadline": "600s",
        "view": "BASIC",
    }


@pytest.fixture
def client(httpserver: HTTPServer, waits: list[float]) -> Iterator[TasksClient]:
    endpoint = httpserver.url_for("/").rstrip("/")
    with TasksClient(
        "my-proj",
        "europe-west1",
        endpoint=endpoint,
        credentials=Credentials(token=TOKEN),
        clock=lambda: NOW,
        retry=RetryPolicy(attempts=3, initial_s=0.5, max_s=2.0),
        sleep=waits.append,
    ) as tasks:
        yield tasks


def test_default_endpoint_is_googles() -> None:
    tasks = TasksClient("p", "l", credentials=Credentials(token=TOKEN), environ={})
    assert tasks.endpoint == GOOGLE_ENDPOINT == "https://cloudtasks.googleapis.com"


def test_enqueue_sends_the_exact_create_task_request(httpserver: HTTPServer, client: TasksClient) -> None:
    expected = {
        "task": {
            "name": f"{PARENT[4:]}/tasks/{hashlib.sha256(b'welcome:42').hexdigest()}",
            "httpRequest": {
                "url": "https://worker-abc.a.run.app/tasks/send-welcome-email",
                "httpMethod": "POST",
                "headers": {"X-Trace": "t1", "Content-Type": "application/json"},
                "body": base64.b64encode(b'{"user_id":42}').decode(),
                "oidcToken": {
                    "serviceAccountEmail": "tasks@my-proj.iam.gserviceaccount.com",
                    "audience": "https://worker-abc.a.run.app",
                },
            },
            "scheduleTime": "2026-11-22T10:00:00.000000Z",
            "dispatchDeadline": "120s",
        }
    }
    httpserver.expect_oneshot_request(
        f"{PARENT}/tasks", method="POST", json=expected, headers={"Authorization": f"Bearer {TOKEN}"}
    ).respond_with_json(task_answer())
    task = client.enqueue(
        "emails",
        url="https://worker-abc.a.run.app/tasks/send-welcome-email",
        json={"user_id": 42},
        headers={"X-Trace": "t1"},
        dedup_key="welcome:42",
        delay=dt.timedelta(hours=24),
        dispatch_deadline=dt.timedelta(minutes=2),
        service_account="tasks@my-proj.iam.gserviceaccount.com",
        audience="https://worker-abc.a.run.app",
    )
    httpserver.check_assertions()
    assert task is not None and task.id == "123"
    assert task.schedule_time == dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)  # nanoseconds dropped
    assert task.dispatch_deadline == dt.timedelta(minutes=10)


def test_queue_helpers_use_the_v2_paths_and_update_mask(httpserver: HTTPServer, client: TasksClient) -> None:
    queue = {"name": PARENT[4:], "state": "RUNNING"}
    httpserver.expect_oneshot_request(
        PARENT,
        method="PATCH",
        query_string={"updateMask": "rateLimits.maxDispatchesPerSecond,retryConfig.minBackoff"},
        json={
            "name": PARENT[4:],
            "rateLimits": {"maxDispatchesPerSecond": 10},
            "retryConfig": {"minBackoff": "0.500s"},
        },
    ).respond_with_json(queue)
    for verb in ("pause", "resume", "purge"):
        httpserver.expect_oneshot_request(f"{PARENT}:{verb}", method="POST", json={}).respond_with_json(queue)
    httpserver.expect_oneshot_request(
        f"{PARENT}/tasks", method="GET", query_string={"pageSize": "1000"}
    ).respond_with_json({"tasks": [task_answer()], "nextPageToken": "p2"})
    httpserver.expect_oneshot_request(
        f"{PARENT}/tasks", method="GET", query_string={"pageSize": "1000", "pageToken": "p2"}
    ).respond_with_json({"tasks": [task_answer(f"{PARENT[4:]}/tasks/456")]})
    httpserver.expect_oneshot_request(f"{PARENT}/tasks/456", method="DELETE").respond_with_json({})
    httpserver.expect_oneshot_request(PARENT, method="DELETE").respond_with_json({})

    client.ensure_queue(
        "emails", rate_limits={"max_dispatches_per_second": 10}, retry_config={"min_backoff": 0.5}
    )
    client.pause_queue("emails")
    client.resume_queue("emails")
    client.purge_queue("emails")
    assert [t.id for t in client.list_tasks("emails")] == ["123", "456"]
    client.delete_task("emails", "456")
    client.delete_queue("emails")
    httpserver.check_assertions()
    assert all(req.headers["Authorization"] == f"Bearer {TOKEN}" for req, _ in httpserver.log)


def test_unavailable_is_retried_with_backoff(
    httpserver: HTTPServer, client: TasksClient, waits: list[float]
) -> None:
    httpserver.expect_ordered_request(f"{PARENT}/tasks", method="POST").respond_with_response(
        error("UNAVAILABLE", 503, "The service is currently unavailable.")
    )
    httpserver.expect_ordered_request(f"{PARENT}/tasks", method="POST").respond_with_json(task_answer())
    task = client.enqueue("emails", url="https://w.example/x", name="n1")
    assert task is not None and len(httpserver.log) == 2
    assert len(waits) == 1 and 0 <= waits[0] <= 0.5


@pytest.mark.parametrize(
    "answer",
    [
        Response("<html>503 Service Temporarily Unavailable</html>", status=503, content_type="text/html"),
        error("RESOURCE_EXHAUSTED", 429, "Quota exceeded."),
    ],
    ids=["proxy-503", "429"],
)
def test_an_unnamed_task_is_not_sent_again_after_a_transient_answer(
    httpserver: HTTPServer, client: TasksClient, waits: list[float], answer: Response
) -> None:
    """A 503 or 429 may follow a create the service performed: a repeat could create a second task."""
    httpserver.expect_ordered_request(f"{PARENT}/tasks", method="POST").respond_with_response(answer)
    httpserver.expect_ordered_request(f"{PARENT}/tasks", method="POST").respond_with_json(task_answer())
    with pytest.raises(ServiceUnavailable):
        client.enqueue("emails", url="https://w.example/x")
    assert len(httpserver.log) == 1 and waits == []
    assert client.enqueue("emails", url="https://w.example/x", name="n1") is not None  # the next answer


def test_retries_stop_after_the_policy_and_raise_unavailable(
    httpserver: HTTPServer, client: TasksClient, waits: list[float]
) -> None:
    httpserver.expect_request(f"{PARENT}/tasks").respond_with_response(
        error("UNAVAILABLE", 503, "The service is currently unavailable.")
    )
    with pytest.raises(ServiceUnavailable, match="currently unavailable"):
        client.enqueue("emails", url="https://w.example/x", name="n1")
    assert len(httpserver.log) == 3 and len(waits) == 2
    assert waits[1] <= 1.0


def test_a_timeout_is_retried_only_for_a_named_task(httpserver: HTTPServer, client: TasksClient) -> None:
    httpserver.expect_request(f"{PARENT}/tasks").respond_with_response(
        error("DEADLINE_EXCEEDED", 504, "Deadline exceeded.")
    )
    with pytest.raises(ServiceUnavailable):
        client.enqueue("emails", url="https://w.example/x")  # unnamed: a retry could create it twice
    assert len(httpserver.log) == 1
    with pytest.raises(ServiceUnavailable):
        client.enqueue("emails", url="https://w.example/x", name="safe-to-repeat")
    assert len(httpserver.log) == 4


def test_a_named_retry_that_finds_its_task_reports_already_exists(
    httpserver: HTTPServer, client: TasksClient
) -> None:
    def first_times_out_then_exists(request: Request) -> Response:
        if len(httpserver.log) == 0:
            return error("DEADLINE_EXCEEDED", 504, "Deadline exceeded.")
        return error("ALREADY_EXISTS", 409, "Requested entity already exists")

    httpserver.expect_request(f"{PARENT}/tasks").respond_with_handler(first_times_out_then_exists)
    with pytest.raises(TaskAlreadyExists):
        client.enqueue("emails", url="https://w.example/x", dedup_key="k")
    assert client.enqueue("emails", url="https://w.example/x", dedup_key="k", ignore_existing=True) is None


def test_permission_denied_is_not_retried(
    httpserver: HTTPServer, client: TasksClient, waits: list[float]
) -> None:
    message = 'The principal lacks IAM permission "cloudtasks.tasks.create" for the resource.'
    httpserver.expect_request(f"{PARENT}/tasks").respond_with_response(
        error("PERMISSION_DENIED", 403, message)
    )
    with pytest.raises(PermissionDenied, match=r"cloudtasks\.tasks\.create") as raised:
        client.enqueue("emails", url="https://w.example/x")
    assert raised.value.status == "PERMISSION_DENIED" and waits == [] and len(httpserver.log) == 1


def test_a_refused_connection_is_retried_even_for_an_unnamed_task(waits: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tasks = TasksClient(
        "p", "l", endpoint=f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=3), sleep=waits.append
    )
    with pytest.raises(ServiceUnavailable, match="failed"):
        tasks.enqueue("q", url="https://w.example/x")
    assert len(waits) == 2


def test_missing_application_default_credentials_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    with pytest.raises(ConfigurationError, match=r"no Google credentials.*CLOUD_TASKS_EMULATOR_HOST"):
        TasksClient("p", "l", environ={})


def test_a_missing_queue_on_google_is_named_without_a_runner_hint(
    httpserver: HTTPServer, client: TasksClient
) -> None:
    message = (
        "Queue does not exist. "
        "If you just created the queue, wait at least a minute for the queue to initialize."
    )
    httpserver.expect_oneshot_request(f"{PARENT}/tasks", method="POST").respond_with_response(
        error("NOT_FOUND", 404, message)
    )
    with pytest.raises(ResourceNotFound) as raised:
        client.enqueue("emails", url="https://w.example/x")
    assert str(raised.value) == f"NOT_FOUND: {message} (queue {PARENT[4:]})"
    assert raised.value.message == message
