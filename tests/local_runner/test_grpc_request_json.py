"""The fast writer of gRPC requests gives the document ``json_format.MessageToDict`` gives, for every form."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud import scheduler_v1
from google.cloud.location import locations_pb2
from google.cloud.tasks_v2 import types
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, duration_pb2, field_mask_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from local_runner.api.grpc_messages import to_rest_call
from local_runner.api.grpc_methods import METHODS
from local_runner.api.grpc_request_json import request_json
from local_runner.errors import InvalidArgument

QUEUE = "projects/p/locations/l/queues/q"


def _create_task(**task: Any) -> Message:
    return types.CreateTaskRequest.pb()(parent=QUEUE, task=types.Task.pb()(**task), response_view=2)


_HTTP = types.HttpRequest.pb()
REQUESTS: list[tuple[str, Message]] = [
    (
        "CreateTask, every task field",
        _create_task(
            name=f"{QUEUE}/tasks/t1",
            http_request=_HTTP(
                url="https://worker.example/run",
                http_method=types.HttpMethod.PUT,
                headers={"Content-Type": "application/json", "X-Trace": "a b"},
                body=b'{"n": 1}\x00\xff',
                oidc_token=types.OidcToken.pb()(service_account_email="sa@p.iam", audience="https://aud"),
            ),
            schedule_time=timestamp_pb2.Timestamp(seconds=1_764_476_400, nanos=123_456_000),
            dispatch_deadline=duration_pb2.Duration(seconds=30, nanos=250_000_000),
        ),
    ),
    (
        "CreateTask, an App Engine task",
        _create_task(
            app_engine_http_request=types.AppEngineHttpRequest.pb()(
                relative_uri="/run", app_engine_routing=types.AppEngineRouting.pb()(service="s", version="v")
            )
        ),
    ),
    ("CreateTask, an enum number the proto does not name", _create_task(http_request=_HTTP(http_method=42))),
    ("CreateTask, an empty sub-message is present", _create_task(http_request=_HTTP())),
    (
        "CreateQueue (double, int32, Durations)",
        types.CreateQueueRequest.pb()(
            parent="projects/p/locations/l",
            queue=types.Queue.pb()(
                name=QUEUE,
                rate_limits=types.RateLimits.pb()(max_dispatches_per_second=7.5, max_concurrent_dispatches=3),
                retry_config=types.RetryConfig.pb()(
                    max_attempts=-1, min_backoff=duration_pb2.Duration(seconds=1), max_doublings=4
                ),
            ),
        ),
    ),
    (
        "UpdateQueue (FieldMask)",
        types.UpdateQueueRequest.pb()(
            queue=types.Queue.pb()(name=QUEUE, state=types.Queue.State.PAUSED),
            update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.max_dispatches_per_second", "state"]),
        ),
    ),
    ("ListTasks (int32, enum)", types.ListTasksRequest.pb()(parent=QUEUE, page_size=7, response_view=2)),
    (
        "SetIamPolicy (bytes etag, repeated strings, a FieldMask)",
        iam_policy_pb2.SetIamPolicyRequest(
            resource=QUEUE,
            policy=policy_pb2.Policy(
                version=3, etag=b"\x07\x05", bindings=[policy_pb2.Binding(role="r", members=["user:a@b.c"])]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["bindings"]),
        ),
    ),
    (
        "GetIamPolicy (nested int32)",
        iam_policy_pb2.GetIamPolicyRequest(
            resource=QUEUE, options=options_pb2.GetPolicyOptions(requested_policy_version=3)
        ),
    ),
    ("ListLocations (string filter)", locations_pb2.ListLocationsRequest(name="projects/p", filter="a=b")),
    ("GetOperation", operations_pb2.GetOperationRequest(name="projects/p/locations/l/operations/1")),
    (
        "Cloud Scheduler CreateJob (map, enum, int32, Durations, a oneof target)",
        scheduler_v1.CreateJobRequest.pb()(
            parent="projects/p/locations/l",
            job=scheduler_v1.Job.pb()(
                name="projects/p/locations/l/jobs/j",
                schedule="*/5 * * * *",
                time_zone="Europe/Paris",
                http_target=scheduler_v1.HttpTarget.pb()(
                    uri="https://worker.example/fire",
                    http_method=scheduler_v1.HttpMethod.POST,
                    headers={"X-Kind": "fire"},
                    body=b"{}",
                ),
                retry_config=scheduler_v1.RetryConfig.pb()(
                    retry_count=3, max_backoff_duration=duration_pb2.Duration(seconds=60)
                ),
                attempt_deadline=duration_pb2.Duration(seconds=180),
            ),
        ),
    ),
    ("an empty request", types.GetQueueRequest.pb()()),
    (
        "well-known types the writer leaves to MessageToDict (Struct, Value)",
        struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1.5)}),
    ),
    ("a non-finite double", types.RateLimits.pb()(max_dispatches_per_second=float("inf"))),
]


@pytest.mark.parametrize("request_message", [r[1] for r in REQUESTS], ids=[r[0] for r in REQUESTS])
def test_same_document_as_message_to_dict(request_message: Message) -> None:
    assert request_json(request_message) == json_format.MessageToDict(request_message)


def test_a_value_without_a_json_form_fails_as_message_to_dict_fails() -> None:
    out_of_range = _create_task(schedule_time=timestamp_pb2.Timestamp(seconds=10**12))
    with pytest.raises(json_format.SerializeToJsonError):
        json_format.MessageToDict(out_of_range)
    with pytest.raises(json_format.SerializeToJsonError):
        request_json(out_of_range)


@pytest.mark.parametrize("request_message", [r[1] for r in REQUESTS[:12]], ids=[r[0] for r in REQUESTS[:12]])
def test_the_runners_requests_are_written_without_message_to_dict(
    request_message: Message, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> dict[str, Any]:
        raise AssertionError("MessageToDict was called")

    expected = json_format.MessageToDict(request_message)
    monkeypatch.setattr(json_format, "MessageToDict", refuse)
    assert request_json(request_message) == expected


def test_an_any_of_an_unknown_type_is_invalid_argument_not_a_crash() -> None:
    """An ``Any`` whose type no descriptor pool knows (in an output-only field) has no JSON form."""
    [create_task] = [method for method in METHODS if method.name == "CreateTask"]
    unknown = any_pb2.Any(type_url="type.googleapis.com/unknown.Type", value=b"\x08\x01")
    status = types.Attempt.pb()(response_status={"code": 5, "details": [unknown]})
    request = _create_task(http_request=_HTTP(url="https://worker.example/run"), last_attempt=status)
    with pytest.raises(InvalidArgument, match="Invalid value in the request"):
        to_rest_call(create_task, request)
