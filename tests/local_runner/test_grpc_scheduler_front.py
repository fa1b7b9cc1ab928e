"""Cloud Scheduler v1 on the gRPC front: the REST handlers' answers, with the gRPC status codes."""

from __future__ import annotations

import grpc
import pytest
import requests
from google.api_core import exceptions
from google.cloud import scheduler_v1
from google.cloud.scheduler_v1.services.cloud_scheduler.transports import CloudSchedulerGrpcTransport
from google.protobuf import json_format

from local_runner.server import RunnerServer
from tests.local_runner.test_grpc_front import address, channel, quiet, raw_call, runner

__all__ = ["address", "channel", "quiet", "runner"]  # the gRPC front's fixtures, shared

PARENT = "projects/grpc-scheduler/locations/us-central1"
SINK = "http://127.0.0.1:9/never-fired"  # every job here fires at 03:00 at the soonest


@pytest.fixture(scope="module")
def client(channel: grpc.Channel) -> scheduler_v1.CloudSchedulerClient:
    return scheduler_v1.CloudSchedulerClient(transport=CloudSchedulerGrpcTransport(channel=channel))


def a_job(client: scheduler_v1.CloudSchedulerClient, job_id: str) -> scheduler_v1.Job:
    job = {"name": f"{PARENT}/jobs/{job_id}", "schedule": "0 3 * * *", "http_target": {"uri": SINK}}
    return client.create_job(parent=PARENT, job=job)


def test_grpc_answers_are_the_rest_documents(
    client: scheduler_v1.CloudSchedulerClient, runner: RunnerServer, quiet: pytest.LogCaptureFixture
) -> None:
    job = a_job(client, "same-document")
    over_rest = requests.get(f"{runner.base_url}/v1/{job.name}", timeout=10).json()
    assert over_rest == json_format.MessageToDict(scheduler_v1.Job.pb(client.get_job(name=job.name)))
    listed = requests.get(f"{runner.base_url}/v1/{PARENT}/jobs", timeout=10).json()
    page = next(iter(client.list_jobs(parent=PARENT).pages))
    assert listed == json_format.MessageToDict(scheduler_v1.ListJobsResponse.pb(page))


def test_errors_carry_the_grpc_status_codes(
    client: scheduler_v1.CloudSchedulerClient, quiet: pytest.LogCaptureFixture
) -> None:
    job = a_job(client, "codes")
    with pytest.raises(exceptions.AlreadyExists, match="Job already exists"):
        client.create_job(parent=PARENT, job=job)
    with pytest.raises(exceptions.NotFound, match="Job not found"):
        client.run_job(name=f"{PARENT}/jobs/missing")
    bad_zone = {"schedule": "0 3 * * *", "time_zone": "Mars/Olympus", "http_target": {"uri": SINK}}
    with pytest.raises(exceptions.InvalidArgument, match="Schedule or time zone is invalid"):
        client.create_job(parent=PARENT, job=bad_zone)
    with pytest.raises(
        exceptions.InvalidArgument, match=r"job.retry_config.retry_count must be between 0 and 5"
    ):
        client.create_job(
            parent=PARENT, job={**bad_zone, "time_zone": "", "retry_config": {"retry_count": 9}}
        )


def test_a_name_outside_the_rule_names_the_field(
    client: scheduler_v1.CloudSchedulerClient, quiet: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(exceptions.InvalidArgument) as raised:
        client.get_job(name=f"{PARENT}/queues/q")
    assert "name" in str(raised.value.message)
    assert "projects/*/locations/*/jobs/*" in str(raised.value.message)


def test_v1beta1_is_unimplemented_and_v1_named_as_served(
    channel: grpc.Channel, quiet: pytest.LogCaptureFixture
) -> None:
    error = raw_call(channel, "/google.cloud.scheduler.v1beta1.CloudScheduler/ListJobs", b"")
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "google.cloud.scheduler.v1.CloudScheduler" in str(error.details())
    hints = [r.getMessage() for r in quiet.records if "which is not served" in r.getMessage()]
    assert any("v1beta1.CloudScheduler/ListJobs" in hint for hint in hints)


def test_rest_takes_the_http_method_as_a_number(
    runner: RunnerServer, quiet: pytest.LogCaptureFixture
) -> None:
    """The official REST transport sends ``$alt=json;enum-encoding=int`` and enums as numbers."""
    job = {
        "name": f"{PARENT}/jobs/numbered",
        "schedule": "0 3 * * *",
        "httpTarget": {"uri": SINK, "httpMethod": 4},
    }
    answer = requests.post(f"{runner.base_url}/v1/{PARENT}/jobs", json=job, timeout=10)
    assert answer.status_code == 200 and answer.json()["httpTarget"]["httpMethod"] == "PUT"
    job["name"], job["httpTarget"]["httpMethod"] = f"{PARENT}/jobs/out-of-range", 8  # type: ignore[index]
    refused = requests.post(f"{runner.base_url}/v1/{PARENT}/jobs", json=job, timeout=10)
    assert refused.status_code == 400 and "job.http_target.http_method" in refused.json()["error"]["message"]


def test_unknown_enum_numbers_and_unencodable_values_name_the_field(
    channel: grpc.Channel, quiet: pytest.LogCaptureFixture
) -> None:
    create = "/google.cloud.scheduler.v1.CloudScheduler/CreateJob"
    for field, job in (
        ("job.http_target.http_method", {"http_target": {"uri": SINK, "http_method": 99}}),
        ("attempt_deadline", {"http_target": {"uri": SINK}, "attempt_deadline": {"seconds": 10**12}}),
    ):
        request = scheduler_v1.CreateJobRequest.pb()(
            parent=PARENT, job={"name": f"{PARENT}/jobs/bad", "schedule": "0 3 * * *", **job}
        )
        error = raw_call(channel, create, request.SerializeToString())
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(error.details())
    garbage = raw_call(channel, create, b"\xff\xff not a protobuf")
    assert "not a valid google.cloud.scheduler.v1.CreateJobRequest" in str(garbage.details())
