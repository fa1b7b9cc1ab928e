"""The official ``google-cloud-tasks`` client, on REST and on gRPC, as a peer of ``runner serve``."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core.exceptions import (
    AlreadyExists,
    BadRequest,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from google.cloud import tasks_v2
from google.iam.v1 import policy_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local_runner import errors

PARENT = "projects/contract-project/locations/us-central1"
NOWHERE = "http://127.0.0.1:9/"
_ids = itertools.count()


def new_queue(client: tasks_v2.CloudTasksClient, **fields: Any) -> tasks_v2.Queue:
    return client.create_queue(
        parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/c-{next(_ids)}", **fields)
    )


def an_hour_ahead() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp


def new_task(
    client: tasks_v2.CloudTasksClient, queue: str, task_id: str | None = None, body: bytes = b"payload"
) -> tasks_v2.Task:
    task = tasks_v2.Task(
        http_request=tasks_v2.HttpRequest(url=NOWHERE, http_method=tasks_v2.HttpMethod.POST, body=body),
        schedule_time=an_hour_ahead(),
    )
    if task_id is not None:
        task.name = f"{queue}/tasks/{task_id}"
    return client.create_task(parent=queue, task=task)


# -- queues ----------------------------------------------------------------------------------------


def test_queue_defaults_and_lifecycle(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client)
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert queue.rate_limits.max_dispatches_per_second == 500
    assert queue.rate_limits.max_burst_size == 100
    assert queue.rate_limits.max_concurrent_dispatches == 1000
    assert queue.retry_config.max_attempts == 100
    assert queue.retry_config.min_backoff == timedelta(milliseconds=100)
    assert queue.retry_config.max_backoff == timedelta(hours=1)
    assert queue.retry_config.max_doublings == 16
    assert client.get_queue(name=queue.name) == queue

    assert client.pause_queue(name=queue.name).state == tasks_v2.Queue.State.PAUSED
    paused = client.list_queues(request={"parent": PARENT, "filter": "state: PAUSED"})
    assert queue.name in [q.name for q in paused]
    assert client.resume_queue(name=queue.name).state == tasks_v2.Queue.State.RUNNING

    new_task(client, queue.name)
    purged = client.purge_queue(name=queue.name)
    assert purged.purge_time.timestamp() > 0
    assert list(client.list_tasks(parent=queue.name)) == []

    client.delete_queue(name=queue.name)
    with pytest.raises(NotFound) as missing:
        client.get_queue(name=queue.name)
    assert errors.QUEUE_NOT_FOUND in str(missing.value)


def test_list_queues_pages(client: tasks_v2.CloudTasksClient) -> None:
    parent = f"projects/contract-pages-{next(_ids)}/locations/us-central1"
    names = [
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/p-{i}")).name
        for i in range(5)
    ]
    pager = client.list_queues(request={"parent": parent, "page_size": 2})
    assert [q.name for q in pager] == sorted(names)
    assert len(list(client.list_queues(request={"parent": parent, "page_size": 2}).pages)) == 3


def test_update_queue_with_and_without_mask(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=5))
    assert queue.rate_limits.max_burst_size == 10
    changed = tasks_v2.Queue(
        name=queue.name,
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=50, max_concurrent_dispatches=3),
        retry_config=tasks_v2.RetryConfig(max_attempts=5),
    )
    masked = client.update_queue(
        queue=changed, update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_concurrent_dispatches"])
    )
    assert masked.rate_limits.max_concurrent_dispatches == 3
    assert masked.rate_limits.max_dispatches_per_second == 5
    assert masked.retry_config.max_attempts == 100

    replaced = client.update_queue(queue=changed)
    assert replaced.rate_limits.max_dispatches_per_second == 50
    assert replaced.retry_config.max_attempts == 5

    target = tasks_v2.HttpTarget(
        uri_override=tasks_v2.UriOverride(scheme=tasks_v2.UriOverride.Scheme.HTTP, host="127.0.0.1", port=9)
    )
    routed = client.update_queue(
        queue=tasks_v2.Queue(name=queue.name, http_target=target),
        update_mask=field_mask_pb2.FieldMask(paths=["http_target"]),
    )
    assert routed.http_target.uri_override.scheme == tasks_v2.UriOverride.Scheme.HTTP
    assert routed.http_target.uri_override.port == 9
    assert routed.rate_limits.max_dispatches_per_second == 50

    created = client.update_queue(queue=tasks_v2.Queue(name=f"{PARENT}/queues/upsert-{next(_ids)}"))
    assert created.state == tasks_v2.Queue.State.RUNNING


def test_queue_errors_raise_the_classes_users_catch(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client)
    with pytest.raises(Conflict) as duplicate:
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue.name))
    assert errors.QUEUE_EXISTS in str(duplicate.value)
    assert issubclass(AlreadyExists, Conflict)

    too_fast = tasks_v2.Queue(
        name=f"{PARENT}/queues/fast-{next(_ids)}",
        rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=501),
    )
    with pytest.raises(BadRequest) as invalid:
        client.create_queue(parent=PARENT, queue=too_fast)
    assert "RateLimits.maxDispatchesPerSecond must be less than or equal to 500." in str(invalid.value)
    assert issubclass(InvalidArgument, BadRequest)

    with pytest.raises(BadRequest):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/bad_name"))

    client.delete_queue(name=queue.name)
    with pytest.raises(BadRequest) as recently_deleted:  # FAILED_PRECONDITION is HTTP 400
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=queue.name))
    assert errors.QUEUE_TOMBSTONED in str(recently_deleted.value)
    assert issubclass(FailedPrecondition, BadRequest)

    with pytest.raises(NotFound) as gone:
        client.delete_queue(name=queue.name)
    assert errors.ENTITY_NOT_FOUND in str(gone.value)
    for method in (client.pause_queue, client.resume_queue, client.purge_queue):
        with pytest.raises(NotFound):
            method(name=queue.name)


# -- tasks -----------------------------------------------------------------------------------------


def test_task_methods_and_views(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client).name
    created = new_task(client, queue, "t-1", body=b"hello")
    assert created.name == f"{queue}/tasks/t-1"
    assert created.view == tasks_v2.Task.View.BASIC
    assert created.http_request.body == b""
    assert created.http_request.headers["User-Agent"] == "Google-Cloud-Tasks"
    assert created.dispatch_deadline == timedelta(minutes=10)

    full = client.get_task(request={"name": created.name, "response_view": tasks_v2.Task.View.FULL})
    assert full.view == tasks_v2.Task.View.FULL
    assert full.http_request.body == b"hello"
    assert client.get_task(name=created.name).http_request.body == b""

    generated = client.create_task(
        request={
            "parent": queue,
            "task": {"http_request": {"url": NOWHERE, "body": b"x"}, "schedule_time": an_hour_ahead()},
            "response_view": tasks_v2.Task.View.FULL,
        }
    )
    assert generated.name.rpartition("/")[2].isdigit()
    assert generated.http_request.body == b"x"

    more = [new_task(client, queue, f"t-{i}").name for i in range(2, 5)]
    pager = client.list_tasks(
        request={"parent": queue, "page_size": 2, "response_view": tasks_v2.Task.View.FULL}
    )
    listed = list(pager)
    assert sorted(t.name for t in listed) == sorted([created.name, generated.name, *more])
    assert all(t.http_request.body for t in listed)

    client.delete_task(name=created.name)
    with pytest.raises(NotFound) as gone:
        client.get_task(name=created.name)
    assert errors.TASK_GONE in str(gone.value)
    with pytest.raises(Conflict) as tombstoned:
        new_task(client, queue, "t-1")
    assert errors.TASK_TOMBSTONED in str(tombstoned.value)


def test_task_errors(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client).name
    new_task(client, queue, "dup")
    with pytest.raises(Conflict) as duplicate:
        new_task(client, queue, "dup")
    assert errors.TASK_EXISTS in str(duplicate.value)
    with pytest.raises(BadRequest) as bad_id:
        new_task(client, queue, "no spaces")
    assert 'Task ID "no spaces" can contain only letters' in str(bad_id.value)
    with pytest.raises(BadRequest):
        client.create_task(
            parent=queue, task=tasks_v2.Task(http_request=tasks_v2.HttpRequest(url="ftp://x/"))
        )
    with pytest.raises(NotFound) as no_queue:
        new_task(client, f"{PARENT}/queues/never-created")
    assert errors.QUEUE_NOT_FOUND in str(no_queue.value)
    with pytest.raises(NotFound):
        client.run_task(name=f"{queue}/tasks/never")
    with pytest.raises(NotFound):
        client.delete_task(name=f"{queue}/tasks/never")


def test_run_task_on_a_paused_queue(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client, retry_config=tasks_v2.RetryConfig(max_attempts=3)).name
    client.pause_queue(name=queue)
    task = new_task(client, queue, "run-me")
    ran = client.run_task(request={"name": task.name, "response_view": tasks_v2.Task.View.FULL})
    assert ran.dispatch_count == 1
    assert ran.http_request.body == b"payload"


def test_dispatch_reaches_a_real_handler(client: tasks_v2.CloudTasksClient, httpserver: HTTPServer) -> None:
    delivered = threading.Event()
    seen: dict[str, Any] = {}

    def handler(request: Request) -> Response:
        seen["headers"] = dict(request.headers)
        seen["body"] = request.get_data()
        delivered.set()
        return Response("done", status=200)

    httpserver.expect_request("/work", method="POST").respond_with_handler(handler)
    queue = new_queue(client)
    task = client.create_task(
        parent=queue.name,
        task=tasks_v2.Task(
            name=f"{queue.name}/tasks/deliver-me",
            http_request=tasks_v2.HttpRequest(
                url=httpserver.url_for("/work"),
                body=b'{"n": 1}',
                headers={"Content-Type": "application/json"},
            ),
        ),
    )
    assert delivered.wait(10), "the runner did not dispatch the task within 10 s"
    headers = {key.lower(): value for key, value in seen["headers"].items()}
    assert seen["body"] == b'{"n": 1}'
    assert headers["user-agent"] == "Google-Cloud-Tasks"
    assert headers["content-type"] == "application/json"
    assert headers["x-cloudtasks-queuename"] == queue.name.rpartition("/")[2]
    assert headers["x-cloudtasks-taskname"] == "deliver-me"
    assert headers["x-cloudtasks-taskretrycount"] == "0"
    assert headers["x-cloudtasks-taskexecutioncount"] == "0"
    assert float(headers["x-cloudtasks-tasketa"]) > 0
    assert "x-cloudtasks-taskpreviousresponse" not in headers

    def completed() -> bool:
        try:
            client.get_task(name=task.name)
        except NotFound:
            return True
        return False

    done = threading.Event()
    for _ in range(200):  # a success deletes the task; bounded wait on the real outcome
        if completed():
            done.set()
            break
        done.wait(0.05)
    assert done.is_set()


# -- IAM and locations ---------------------------------------------------------------------------------


def test_iam(client: tasks_v2.CloudTasksClient) -> None:
    queue = new_queue(client).name
    empty = client.get_iam_policy(resource=queue)
    assert list(empty.bindings) == []
    policy = policy_pb2.Policy(
        version=1,
        bindings=[policy_pb2.Binding(role="roles/cloudtasks.enqueuer", members=["user:dev@example.com"])],
    )
    stored = client.set_iam_policy(request={"resource": queue, "policy": policy})
    assert stored.bindings[0].role == "roles/cloudtasks.enqueuer"
    assert list(stored.bindings[0].members) == ["user:dev@example.com"]
    assert client.get_iam_policy(resource=queue) == stored
    asked = ["cloudtasks.tasks.create", "cloudtasks.tasks.fullView"]
    granted = client.test_iam_permissions(request={"resource": queue, "permissions": asked})
    assert list(granted.permissions) == asked
    with pytest.raises(NotFound):
        client.get_iam_policy(resource=f"{PARENT}/queues/never-created")


def test_locations(client: tasks_v2.CloudTasksClient) -> None:
    listed = client.list_locations(request={"name": "projects/contract-project"})
    assert [loc.location_id for loc in listed.locations] == ["us-central1"]
    got = client.get_location(request={"name": PARENT})
    assert got.name == PARENT
    assert got.location_id == "us-central1"
