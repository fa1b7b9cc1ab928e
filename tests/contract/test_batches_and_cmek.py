"""BatchCreateTasks, BatchDeleteTasks, GetOperation and CMEK config through the official client.

The ``client`` fixture runs every test on REST and on gRPC against the same ``runner serve`` port.
"""

from __future__ import annotations

import itertools

import pytest
from google.api_core.exceptions import Aborted, BadRequest, NotFound
from google.cloud import tasks_v2

from local_runner import errors

PARENT = "projects/batch-project/locations/us-central1"
NOWHERE = "http://127.0.0.1:9/"
KEY = f"{PARENT}/keyRings/ring/cryptoKeys/key"
_ids = itertools.count()


def paused_queue(client: tasks_v2.CloudTasksClient) -> str:
    queue = client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/b-{next(_ids)}"))
    client.pause_queue(name=queue.name)
    return queue.name


def create_request(queue: str, task_id: str | None = None, url: str = NOWHERE) -> dict[str, object]:
    task: dict[str, object] = {"http_request": {"url": url}}
    if task_id is not None:
        task["name"] = f"{queue}/tasks/{task_id}"
    return {"parent": queue, "task": task}


def test_batch_create_reports_each_request(client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    requests = [create_request(queue, "a"), create_request(queue, "a"), create_request(queue, url="ftp://x/")]
    operation = client.batch_create_tasks(parent=queue, requests=requests)
    assert operation.done()
    assert [task.name for task in operation.result().tasks] == [f"{queue}/tasks/a"]
    metadata = operation.metadata
    assert metadata.state == tasks_v2.BatchCreateTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert {index: status.code for index, status in metadata.failed_requests.items()} == {1: 6, 2: 3}
    assert metadata.failed_requests[1].message == errors.TASK_EXISTS
    assert [task.name for task in client.list_tasks(parent=queue)] == [f"{queue}/tasks/a"]

    again = client.get_operation(request={"name": operation.operation.name})
    assert again.done and again.name == operation.operation.name


def test_batch_create_retried_with_a_request_id_runs_once(client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    request_id = f"retry-{next(_ids)}"
    batch = {"parent": queue, "requests": [create_request(queue) for _ in range(3)], "request_id": request_id}
    first = client.batch_create_tasks(request=batch)
    second = client.batch_create_tasks(request=batch)
    assert second.operation.name == first.operation.name == f"{PARENT}/operations/{request_id}"
    assert first.metadata.state == tasks_v2.BatchCreateTasksMetadata.State.SUCCEEDED
    assert len(list(client.list_tasks(parent=queue))) == 3


def test_batch_limits_and_total_failure(client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    with pytest.raises(BadRequest) as too_many:
        client.batch_create_tasks(parent=queue, requests=[create_request(queue) for _ in range(101)])
    assert "100" in str(too_many.value)
    with pytest.raises(NotFound) as missing:
        client.batch_create_tasks(parent=f"{PARENT}/queues/never", requests=[create_request(queue)])
    assert errors.QUEUE_NOT_FOUND in str(missing.value)
    failed = client.batch_create_tasks(parent=queue, requests=[create_request(queue, url="ftp://x/")])
    with pytest.raises(Aborted) as aborted:
        failed.result()
    assert "None of the requests succeeded" in str(aborted.value)
    with pytest.raises(NotFound):
        client.get_operation(request={"name": f"{PARENT}/operations/never"})


def test_batch_delete_is_not_atomic(client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    client.batch_create_tasks(parent=queue, requests=[create_request(queue, "x"), create_request(queue, "y")])
    operation = client.batch_delete_tasks(
        parent=queue, names=[f"{queue}/tasks/x", f"{queue}/tasks/missing", f"{queue}/tasks/y"]
    )
    operation.result()
    assert operation.metadata.state == tasks_v2.BatchDeleteTasksMetadata.State.PARTIALLY_SUCCEEDED
    assert {i: s.code for i, s in operation.metadata.failed_requests.items()} == {1: 5}
    assert list(client.list_tasks(parent=queue)) == []
    with pytest.raises(BadRequest):
        client.batch_delete_tasks(parent=queue, names=[f"{queue}/tasks/t{i}" for i in range(1001)])


def test_cmek_config_is_stored(client: tasks_v2.CloudTasksClient) -> None:
    location = f"projects/cmek-{next(_ids)}/locations/us-central1"
    name = f"{location}/cmekConfig"
    assert client.get_cmek_config(name=name) == tasks_v2.CmekConfig(name=name)
    key = f"{location}/keyRings/ring/cryptoKeys/key"
    assert client.update_cmek_config(cmek_config={"name": name, "kms_key": key}).kms_key == key
    assert client.get_cmek_config(name=name).kms_key == key
    with pytest.raises(BadRequest) as bad:
        client.update_cmek_config(cmek_config={"name": name, "kms_key": "not-a-key"})
    assert "cmek_config.kms_key" in str(bad.value)
    assert client.update_cmek_config(cmek_config={"name": name, "kms_key": ""}).kms_key == ""
