"""The official ``google-cloud-tasks`` client, on REST and on gRPC, against a real ``runner serve``."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import tasks_v2
from google.protobuf import field_mask_pb2, timestamp_pb2
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

_ids = itertools.count()


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    """A threaded local HTTP server the runner dispatches to."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def new_parent() -> str:
    return f"projects/process-{next(_ids)}/locations/us-central1"


def in_an_hour() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    return stamp


def test_create_queue(client: tasks_v2.CloudTasksClient) -> None:
    parent = new_parent()
    queue = client.create_queue(
        parent=parent,
        queue=tasks_v2.Queue(
            name=f"{parent}/queues/first", rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=5)
        ),
    )
    assert queue.name == f"{parent}/queues/first"
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert queue.rate_limits.max_burst_size == 10
    assert client.get_queue(name=queue.name) == queue


def test_list_queues_over_several_pages(client: tasks_v2.CloudTasksClient) -> None:
    parent = new_parent()
    names = [f"{parent}/queues/q-{i}" for i in range(5)]
    for name in names:
        client.create_queue(parent=parent, queue=tasks_v2.Queue(name=name))
    pages = list(client.list_queues(request={"parent": parent, "page_size": 2}).pages)
    assert [len(page.queues) for page in pages] == [2, 2, 1]
    assert [queue.name for page in pages for queue in page.queues] == names
    assert [queue.name for queue in client.list_queues(request={"parent": parent, "page_size": 2})] == names


def test_list_tasks_over_several_pages(client: tasks_v2.CloudTasksClient) -> None:
    parent = new_parent()
    queue = client.create_queue(parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/tasks")).name
    names = [f"{queue}/tasks/t-{i}" for i in range(7)]
    for name in names:
        task = tasks_v2.Task(
            name=name,
            http_request=tasks_v2.HttpRequest(url="http://127.0.0.1:9/"),
            schedule_time=in_an_hour(),
        )
        client.create_task(parent=queue, task=task)
    pages = list(client.list_tasks(request={"parent": queue, "page_size": 3}).pages)
    assert [len(page.tasks) for page in pages] == [3, 3, 1]
    assert [task.name for page in pages for task in page.tasks] == names
    assert [task.name for task in client.list_tasks(request={"parent": queue, "page_size": 3})] == names


def test_masked_update_changes_the_rate_live(client: tasks_v2.CloudTasksClient, receiver: HTTPServer) -> None:
    delivered: list[float] = []
    changed = threading.Condition()

    def handler(request: Request) -> Response:
        with changed:
            delivered.append(time.monotonic())
            changed.notify_all()
        return Response("ok", status=200)

    def wait_for(count: int, until: float) -> bool:
        """Wait until ``count`` deliveries or the monotonic time ``until``; True if the count was reached."""
        with changed:
            return changed.wait_for(lambda: len(delivered) >= count, max(0.0, until - time.monotonic()))

    receiver.expect_request("/rate").respond_with_handler(handler)
    parent = new_parent()
    queue = client.create_queue(
        parent=parent,
        queue=tasks_v2.Queue(
            name=f"{parent}/queues/rate", rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=1)
        ),
    )
    assert queue.rate_limits.max_burst_size == 10
    client.pause_queue(name=queue.name)
    target = tasks_v2.HttpRequest(url=receiver.url_for("/rate"))
    for _ in range(20):
        client.create_task(parent=queue.name, task=tasks_v2.Task(http_request=target))

    start = time.monotonic()
    client.resume_queue(name=queue.name)
    assert wait_for(10, start + 3), f"the burst did not arrive: {len(delivered)} delivered"
    assert not wait_for(14, start + 1.5), f"{len(delivered)} delivered 1.5 s after start at 1/s"

    update = time.monotonic()
    updated = client.update_queue(
        queue=tasks_v2.Queue(name=queue.name, rate_limits=tasks_v2.RateLimits(max_dispatches_per_second=500)),
        update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second"]),
    )
    assert updated.rate_limits.max_dispatches_per_second == 500
    assert updated.rate_limits.max_burst_size == 100
    assert updated.rate_limits.max_concurrent_dispatches == queue.rate_limits.max_concurrent_dispatches
    assert wait_for(20, update + 5), f"only {len(delivered)} of 20 delivered 5 s after the update"
    assert len(delivered) == 20
