"""The fast reader of the REST answers gives the message ``json_format.ParseDict`` gives, for every form."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud.location import locations_pb2
from google.cloud.tasks_v2 import types
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from local_runner.api import grpc_json
from local_runner.api.grpc_json import parse_answer
from local_runner.codec.queues import queue_to_json
from local_runner.codec.tasks import task_to_json
from local_runner.model import (
    Attempt,
    HttpRequest,
    OidcToken,
    Queue,
    RateLimits,
    RetryConfig,
    RpcStatus,
    Task,
    TaskView,
)

QUEUE = "projects/p/locations/l/queues/q"


def _task() -> Task:
    return Task(
        f"{QUEUE}/tasks/t1",
        HttpRequest(
            url="https://worker.example/run",
            headers={"Content-Type": "application/json", "X-Trace": "a b"},
            body=b'{"n": 1}\x00\xff',
            oidc_token=OidcToken("sa@p.iam.gserviceaccount.com", "https://aud"),
        ),
        schedule_time=1_764_476_400.123456,
        create_time=1_764_476_399.5,
        dispatch_deadline=30.25,
        dispatch_count=3,
        response_count=2,
        first_attempt=Attempt(schedule_time=1_764_476_400.0, dispatch_time=1_764_476_400.001),
        last_attempt=Attempt(
            schedule_time=1_764_476_401.0,
            dispatch_time=1_764_476_401.5,
            response_time=1_764_476_402.0,
            http_status=503,
            response_status=RpcStatus(14, "Unavailable"),
        ),
        retry_config=RetryConfig(max_attempts=5),  # a runner extension: not a field of the message
    )


TASK = types.Task.pb()
ANSWERS: list[tuple[str, dict[str, Any], type[Message]]] = [
    ("task, FULL view", task_to_json(_task(), TaskView.FULL), TASK),
    ("task, BASIC view", task_to_json(_task()), TASK),
    ("task, int enums", task_to_json(_task(), TaskView.FULL, int_enums=True), TASK),
    (
        "queue",
        queue_to_json(Queue(QUEUE, rate_limits=RateLimits(max_dispatches_per_second=7.5))),
        types.Queue.pb(),
    ),
    (
        "list of tasks",
        {"tasks": [task_to_json(_task()), task_to_json(_task())], "nextPageToken": "abc"},
        types.ListTasksResponse.pb(),
    ),
    ("empty list", {}, types.ListQueuesResponse.pb()),
    (
        "policy (bytes etag, repeated strings)",
        {"version": 1, "etag": "BwXhqL8=", "bindings": [{"role": "roles/viewer", "members": ["user:a@b.c"]}]},
        policy_pb2.Policy,
    ),
    ("permissions", {"permissions": ["cloudtasks.tasks.create"]}, iam_policy_pb2.TestIamPermissionsResponse),
    (
        "location (map of strings, Any metadata)",
        {
            "name": "projects/p/locations/l",
            "locationId": "l",
            "labels": {"cloud.googleapis.com/region": "l"},
            "metadata": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        },
        locations_pb2.Location,
    ),
    (
        "operation (Any response)",
        {
            "name": "projects/p/locations/l/operations/1",
            "done": True,
            "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
        },
        operations_pb2.Operation,
    ),
    (
        "forms the runner does not write (offset time, URL-safe bytes, negative duration)",
        {
            "name": "x",
            "scheduleTime": "2026-11-30T05:00:00+01:00",
            "dispatchDeadline": "-1.5s",
            "httpRequest": {"url": "u", "body": "-_8="},
        },
        TASK,
    ),
    ("a field set to null", {"name": "x", "httpRequest": None, "dispatchCount": "7"}, TASK),
    ("an empty sub-message is present", {"name": "x", "httpRequest": {}}, TASK),
]


@pytest.mark.parametrize(("answer", "message_class"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
def test_same_message_as_parse_dict(answer: dict[str, Any], message_class: type[Message]) -> None:
    expected = json_format.ParseDict(answer, message_class(), ignore_unknown_fields=True)
    parsed = parse_answer(answer, message_class)
    assert parsed == expected
    assert parsed.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_a_bad_value_fails_as_parse_dict_fails() -> None:
    with pytest.raises(json_format.ParseError):
        parse_answer({"dispatchCount": "many"}, TASK)


@pytest.mark.parametrize(
    ("answer", "message_class"), [a[1:] for a in ANSWERS[:8]], ids=[a[0] for a in ANSWERS[:8]]
)
def test_the_runners_own_forms_are_read_without_parse_dict(
    answer: dict[str, Any], message_class: type[Message], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> Message:
        raise AssertionError("ParseDict was used")

    monkeypatch.setattr(grpc_json.json_format, "ParseDict", refuse)
    assert parse_answer(answer, message_class).ByteSize() > 0 or not answer
