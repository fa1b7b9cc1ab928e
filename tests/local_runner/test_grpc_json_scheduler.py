"""The fast reader gives ``json_format.ParseDict``'s message for every kind of Cloud Scheduler answer."""

from __future__ import annotations

from typing import Any

import pytest
from google.cloud.scheduler_v1 import types
from google.protobuf import empty_pb2, json_format
from google.protobuf.message import Message

from local_runner.api import grpc_json
from local_runner.api.grpc_json import parse_answer
from local_runner.cloud_scheduler.model import Job, JobState, job_from_fields, job_to_json
from local_runner.model import RpcStatus

JOBS = "projects/p/locations/l/jobs"
JOB = types.Job.pb()


def _job(name: str, target: dict[str, Any], **fields: Any) -> Job:
    return job_from_fields(
        f"{JOBS}/{name}",
        {"schedule": "0 3 * * *", "timeZone": "Europe/Paris", "httpTarget": target, **fields},
    )


FULL = _job(
    "full",
    {
        "uri": "https://worker.example/nightly",
        "httpMethod": "PUT",
        "headers": {"Content-Type": "application/json", "X-Trace": "a b"},
        "body": "eyJuIjogMX0A/w==",
        "oidcToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "https://aud"},
    },
    description="every night",
    retryConfig={"retryCount": 3, "maxRetryDuration": "600s", "minBackoffDuration": "0.5s"},
    attemptDeadline="320.250s",
).replace(
    user_update_time=1_764_476_399.5,
    schedule_time=1_764_476_400.0,
    last_attempt_time=1_764_476_400.123456,
    status=RpcStatus(14, "UNAVAILABLE"),
)
PAUSED = _job(
    "paused",
    {"uri": "http://127.0.0.1:9/", "oauthToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com"}},
).replace(state=JobState.PAUSED, status=RpcStatus(0, ""), user_update_time=1_764_476_399.0)

#: Every kind of answer the Cloud Scheduler REST handlers give, with the message gRPC sends it as.
ANSWERS: list[tuple[str, dict[str, Any], type[Message]]] = [
    ("job, every field (oidc, headers, bytes, status, times, durations)", job_to_json(FULL), JOB),
    ("paused job, oauth token, OK status as {}", job_to_json(PAUSED), JOB),
    (
        "list of jobs with a page token",
        {"jobs": [job_to_json(FULL), job_to_json(PAUSED)], "nextPageToken": "cHJvamVjdHM="},
        types.ListJobsResponse.pb(),
    ),
    ("empty list", {}, types.ListJobsResponse.pb()),
    ("deleted (Empty)", {}, empty_pb2.Empty),
]
IDS = [answer[0] for answer in ANSWERS]


@pytest.mark.parametrize(("answer", "message_class"), [a[1:] for a in ANSWERS], ids=IDS)
def test_same_message_as_parse_dict(answer: dict[str, Any], message_class: type[Message]) -> None:
    expected = json_format.ParseDict(answer, message_class(), ignore_unknown_fields=True)
    parsed = parse_answer(answer, message_class)
    assert parsed == expected
    assert parsed.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize(("answer", "message_class"), [a[1:] for a in ANSWERS], ids=IDS)
def test_scheduler_answers_are_read_without_parse_dict(
    answer: dict[str, Any], message_class: type[Message], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_json.json_format, "ParseDict", None)  # a call would raise TypeError
    assert parse_answer(answer, message_class).ByteSize() > 0 or not answer


def test_the_full_job_keeps_every_field() -> None:
    job = types.Job.wrap(parse_answer(job_to_json(FULL), JOB))
    assert job.http_target.http_method == types.HttpMethod.PUT
    assert job.http_target.body == b'{"n": 1}\x00\xff'
    assert job.http_target.oidc_token.audience == "https://aud"
    assert job.status.code == 14 and job.retry_config.retry_count == 3
    assert job.attempt_deadline.total_seconds() == 320.25
    assert job.last_attempt_time.timestamp() == pytest.approx(1_764_476_400.123456)
