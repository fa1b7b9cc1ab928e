"""The official ``google-cloud-scheduler`` client against ``runner serve``, on gRPC and on REST.

Both transports run one scenario and must write the same transcript: the fronts share every handler,
so the answers, codes and messages are the same.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.api_core.exceptions import GoogleAPICallError
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport
from google.protobuf import field_mask_pb2, json_format
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.contract.conftest import official_client

_REST_CALL = re.compile(r"^[A-Z]+ http://\S+: ")
#: Output-only fields that depend on when the call ran.
_MOMENTS = ("userUpdateTime", "scheduleTime", "lastAttemptTime")


@pytest.fixture(scope="module", params=["rest", "grpc"])
def scheduler(request: pytest.FixtureRequest, runner_url: str) -> Iterator[scheduler_v1.CloudSchedulerClient]:
    """The official client on each transport, exactly as docs/connect-your-client.md shows it."""
    client_class, transport = scheduler_v1.CloudSchedulerClient, CloudSchedulerGrpcTransport
    yield from official_client(client_class, transport, request.param, runner_url)


def _shown(job: scheduler_v1.Job, parent: str) -> dict[str, Any]:
    """The job as proto3 JSON, its name relative to ``parent`` and the moments left out."""
    out: dict[str, Any] = json_format.MessageToDict(scheduler_v1.Job.pb(job))
    out["name"] = out["name"].removeprefix(parent + "/jobs/")
    for key in _MOMENTS:
        out.pop(key, None)
    return out


def _failure(call: Callable[[], object]) -> tuple[int, str]:
    """The error's HTTP code and message (gRPC statuses: tests/local_runner/test_grpc_scheduler_front.py)."""
    with pytest.raises(GoogleAPICallError) as raised:
        call()
    error = raised.value
    assert error.code is not None
    return int(error.code), _REST_CALL.sub("", str(error.message))  # REST: "POST http://...: message"


def _scenario(
    client: scheduler_v1.CloudSchedulerClient, parent: str, sink: str, delivered: threading.Event
) -> list[tuple[str, object]]:
    transcript: list[tuple[str, object]] = []
    target = {"uri": sink, "http_method": "POST", "body": b"hi", "headers": {"X-Kind": "nightly"}}
    job = {
        "name": f"{parent}/jobs/nightly",
        "schedule": "0 3 * * *",
        "time_zone": "Europe/Paris",
        "description": "every night",
        "http_target": target,
    }
    created = client.create_job(parent=parent, job=job)
    transcript.append(("create", _shown(created, parent)))
    transcript.append(("duplicate", _failure(lambda: client.create_job(parent=parent, job=job))))
    transcript.append(("get", _shown(client.get_job(name=created.name), parent)))
    for name in ("a", "b"):
        client.create_job(parent=parent, job={**job, "name": f"{parent}/jobs/{name}"})
    pages = client.list_jobs(request={"parent": parent, "page_size": 2}).pages
    transcript.append(("pages", [[_shown(j, parent)["name"] for j in page.jobs] for page in pages]))
    updated = client.update_job(
        job={"name": created.name, "schedule": "30 4 * * *", "description": "not in the mask"},
        update_mask=field_mask_pb2.FieldMask(paths=["schedule"]),
    )
    transcript.append(("update", (updated.schedule, updated.description)))
    bad_mask = field_mask_pb2.FieldMask(paths=["state"])
    transcript.append(("bad mask", _failure(lambda: client.update_job(job=job, update_mask=bad_mask))))
    transcript.append(("pause", client.pause_job(name=created.name).state.name))
    transcript.append(("resume", client.resume_job(name=created.name).state.name))
    transcript.append(("run", _shown(client.run_job(name=created.name), parent)["name"]))
    assert delivered.wait(10), "the runner did not fire the job run_job ran within 10 s"
    client.delete_job(name=created.name)
    transcript.append(("deleted", _failure(lambda: client.get_job(name=created.name))))
    transcript.append(("missing", _failure(lambda: client.pause_job(name=f"{parent}/jobs/none"))))
    project = parent.rpartition("/locations/")[0]
    listed = client.list_locations(request={"name": project}).locations
    transcript.append(("locations", [location.name.removeprefix(project) for location in listed]))
    transcript.append(("location", client.get_location(request={"name": parent}).location_id))
    for field, value in (("schedule", "not a schedule"), ("time_zone", "Mars/Olympus")):
        bad = {**job, "name": f"{parent}/jobs/bad", field: value}
        transcript.append(
            (f"bad {field}", _failure(lambda bad=bad: client.create_job(parent=parent, job=bad)))
        )
    return transcript


CREATED = {
    "name": "nightly",
    "description": "every night",
    "httpTarget": {
        "uri": "SINK",
        "httpMethod": "POST",
        "headers": {"X-Kind": "nightly"},
        "body": "aGk=",
    },
    "schedule": "0 3 * * *",
    "timeZone": "Europe/Paris",
    "state": "ENABLED",
    "retryConfig": {
        "maxRetryDuration": "0s",
        "minBackoffDuration": "5s",
        "maxBackoffDuration": "3600s",
        "maxDoublings": 5,
    },
    "attemptDeadline": "180s",
}
INVALID_SCHEDULE = (400, "Schedule or time zone is invalid.")
EXPECTED: list[tuple[str, object]] = [
    ("create", CREATED),
    ("duplicate", (409, "Job already exists.")),
    ("get", CREATED),
    ("pages", [["a", "b"], ["nightly"]]),
    ("update", ("30 4 * * *", "every night")),
    ("bad mask", (400, "Invalid update_mask: state cannot be updated.")),
    ("pause", "PAUSED"),
    ("resume", "ENABLED"),
    ("run", "nightly"),
    ("deleted", (404, "Job not found.")),
    ("missing", (404, "Job not found.")),
    ("locations", ["/locations/us-central1"]),
    ("location", "us-central1"),
    ("bad schedule", INVALID_SCHEDULE),
    ("bad time_zone", INVALID_SCHEDULE),
]


@pytest.mark.timeout(60)
def test_job_lifecycle_is_the_same_on_both_transports(
    scheduler: scheduler_v1.CloudSchedulerClient, httpserver: HTTPServer
) -> None:
    delivered: list[Request] = []
    arrived = threading.Event()

    def handler(request: Request) -> Response:
        delivered.append(request)
        arrived.set()
        return Response("ok")

    httpserver.expect_request("/nightly", method="POST").respond_with_handler(handler)
    sink = httpserver.url_for("/nightly")
    parent = f"projects/scheduler-{scheduler.transport.kind}/locations/us-central1"
    transcript = _scenario(scheduler, parent, sink, arrived)
    expected = [
        (step, {**CREATED, "httpTarget": {**CREATED["httpTarget"], "uri": sink}})
        if step in ("create", "get")
        else (step, value)
        for step, value in EXPECTED
    ]
    assert transcript == expected
    (request,) = delivered
    assert request.get_data() == b"hi" and request.headers["X-Kind"] == "nightly"
    assert request.headers["X-CloudScheduler-JobName"] == "nightly"
