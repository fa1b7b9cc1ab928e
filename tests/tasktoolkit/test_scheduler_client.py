"""SchedulerClient against a local server answering like cloudscheduler.googleapis.com.

Asserts the exact paths, bodies, update masks and Authorization header sent, which failures are retried,
and where requests go.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from google.oauth2.credentials import Credentials
from pytest_httpserver import HTTPServer
from testsupport.google_api import error

from tasktoolkit.client import RetryPolicy
from tasktoolkit.errors import (
    AlreadyExists,
    ConfigurationError,
    InvalidArgument,
    JobSyncError,
    ServiceUnavailable,
    TaskAlreadyExists,
)
from tasktoolkit.job_spec import JobSpec, marker
from tasktoolkit.job_sync import sync_jobs
from tasktoolkit.scheduler_client import GOOGLE_ENDPOINT, SchedulerClient

TOKEN = "ya29.test-access-token"
JOBS = "/v1/projects/my-proj/locations/europe-west1/jobs"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(httpserver: HTTPServer, waits: list[float]) -> Iterator[SchedulerClient]:
    with SchedulerClient(
        "my-proj",
        "europe-west1",
        endpoint=httpserver.url_for("/").rstrip("/"),
        credentials=Credentials(token=TOKEN),
        retry=RetryPolicy(attempts=3, initial_s=0.5, max_s=2.0),
        sleep=waits.append,
    ) as scheduler:
        yield scheduler


def test_where_requests_go() -> None:
    both = {"CLOUD_SCHEDULER_EMULATOR_HOST": "127.0.0.1:1", "CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:2"}
    assert SchedulerClient("p", "l", environ=both).endpoint == "http://127.0.0.1:1"
    tasks_only = {"CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:2"}
    assert SchedulerClient("p", "l", environ=tasks_only).endpoint == "http://127.0.0.1:2"
    explicit = SchedulerClient("p", "l", endpoint="http://127.0.0.1:3/", environ=both)
    assert explicit.endpoint == "http://127.0.0.1:3"
    google = SchedulerClient("p", "l", credentials=Credentials(token=TOKEN), environ={})
    assert google.endpoint == GOOGLE_ENDPOINT == "https://cloudscheduler.googleapis.com"


def test_missing_application_default_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    with pytest.raises(
        ConfigurationError, match=r"no Google credentials for Cloud Scheduler.*CLOUD_SCHEDULER_EMULATOR_HOST"
    ):
        SchedulerClient("p", "l", environ={})


def test_every_method_sends_the_v1_request_with_the_token(
    httpserver: HTTPServer, client: SchedulerClient
) -> None:
    name = f"{JOBS[4:]}/nightly"
    job = {"name": name, "schedule": "0 3 * * *", "httpTarget": {"uri": "https://w.example/jobs/nightly"}}
    httpserver.expect_oneshot_request(
        JOBS, method="GET", query_string={"pageSize": "500"}, headers=AUTH
    ).respond_with_json({"jobs": [job], "nextPageToken": "p2"})
    httpserver.expect_oneshot_request(
        JOBS, method="GET", query_string={"pageSize": "500", "pageToken": "p2"}, headers=AUTH
    ).respond_with_json({"jobs": [{**job, "name": f"{name}-2"}]})
    httpserver.expect_oneshot_request(JOBS, method="POST", json=job, headers=AUTH).respond_with_json(job)
    httpserver.expect_oneshot_request(
        f"/v1/{name}",
        method="PATCH",
        query_string={"updateMask": "schedule,httpTarget.uri"},
        json=job,
        headers=AUTH,
    ).respond_with_json(job)
    for verb in ("pause", "resume", "run"):
        httpserver.expect_oneshot_request(
            f"/v1/{name}:{verb}", method="POST", json={}, headers=AUTH
        ).respond_with_json(job)
    httpserver.expect_oneshot_request(f"/v1/{name}", method="GET", headers=AUTH).respond_with_json(job)
    httpserver.expect_oneshot_request(f"/v1/{name}", method="DELETE", headers=AUTH).respond_with_json({})

    assert [found["name"] for found in client.list_jobs()] == [name, f"{name}-2"]
    assert client.create_job(job) == job
    client.update_job(job, ["schedule", "httpTarget.uri"])
    client.pause_job("nightly")
    client.resume_job("nightly")
    client.run_job("nightly")
    assert client.get_job("nightly") == job
    client.delete_job("nightly")
    httpserver.check_assertions()
    assert not httpserver.log[-1][0].args  # DELETE carries no query
    with pytest.raises(InvalidArgument, match="update_mask must name at least one field"):
        client.update_job(job, [])
    with pytest.raises(InvalidArgument, match="job name must be a job path under"):
        client.update_job({**job, "name": "projects/x/locations/y/jobs/z"}, ["schedule"])


def test_refusals_are_typed_and_already_exists_names_no_task(
    httpserver: HTTPServer, client: SchedulerClient
) -> None:
    httpserver.expect_oneshot_request(JOBS, method="POST").respond_with_response(
        error("ALREADY_EXISTS", 409, "Job already exists.")
    )
    httpserver.expect_oneshot_request(JOBS, method="POST").respond_with_response(
        error("INVALID_ARGUMENT", 400, "Schedule or time zone is invalid.")
    )
    job = {"name": f"{JOBS[4:]}/a", "schedule": "0 3 * * *"}
    with pytest.raises(AlreadyExists) as exists:
        client.create_job(job)
    assert not isinstance(exists.value, TaskAlreadyExists)
    with pytest.raises(InvalidArgument, match="Schedule or time zone is invalid"):
        client.create_job(job)


def test_reads_are_retried_and_run_is_not(
    httpserver: HTTPServer, client: SchedulerClient, waits: list[float]
) -> None:
    httpserver.expect_oneshot_request(f"{JOBS}/a", method="GET").respond_with_response(
        error("UNAVAILABLE", 503, "try again")
    )
    httpserver.expect_oneshot_request(f"{JOBS}/a", method="GET").respond_with_json({"name": "a"})
    assert client.get_job("a") == {"name": "a"}
    assert len(waits) == 1
    httpserver.expect_oneshot_request(f"{JOBS}/a:run", method="POST").respond_with_response(
        error("UNAVAILABLE", 503, "try again")
    )
    with pytest.raises(ServiceUnavailable):
        client.run_job("a")
    assert len(waits) == 1


URI = "https://worker-abc.a.run.app/jobs/nightly"
#: The job the app of :func:`google_app` declares, as sync_jobs sends it.
NIGHTLY = {
    "name": f"{JOBS[4:]}/nightly",
    "description": marker("https://worker-abc.a.run.app"),
    "schedule": "0 3 * * *",
    "timeZone": "Europe/Paris",
    "httpTarget": {
        "uri": URI,
        "httpMethod": "POST",
        "oidcToken": {"serviceAccountEmail": "jobs@my-proj.iam.gserviceaccount.com", "audience": URI},
    },
    "retryConfig": {
        "retryCount": 0,
        "maxRetryDuration": "0s",
        "minBackoffDuration": "5s",
        "maxBackoffDuration": "3600s",
        "maxDoublings": 5,
    },
    "attemptDeadline": "180s",
}


def google_app() -> Flask:
    app = Flask("jobs")
    app.config.update(
        TASKTOOLKIT_PROJECT="my-proj",
        TASKTOOLKIT_LOCATION="europe-west1",
        TASKTOOLKIT_BASE_URL="https://worker-abc.a.run.app",
        TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=["jobs@my-proj.iam.gserviceaccount.com"],
    )

    def nightly() -> str:
        return ""

    nightly.job_spec = JobSpec("0 3 * * *", time_zone="Europe/Paris")  # type: ignore[attr-defined]
    app.add_url_rule("/jobs/nightly", view_func=nightly, methods=["POST"])
    return app


def test_sync_jobs_creates_the_job_on_google(httpserver: HTTPServer, client: SchedulerClient) -> None:
    httpserver.expect_oneshot_request(JOBS, method="GET", headers=AUTH).respond_with_json({})
    httpserver.expect_oneshot_request(JOBS, method="POST", json=NIGHTLY, headers=AUTH).respond_with_json(
        NIGHTLY
    )
    plan = sync_jobs(google_app(), client=client)
    httpserver.check_assertions()
    assert [change.action for change in plan.changes] == ["create"]


def test_a_resent_create_that_finds_its_own_job_counts_as_made(
    httpserver: HTTPServer, client: SchedulerClient, waits: list[float]
) -> None:
    retry = {
        key: value for key, value in NIGHTLY["retryConfig"].items() if key != "retryCount"
    }  # 0: left out
    answered = {**NIGHTLY, "state": "ENABLED", "retryConfig": retry}
    httpserver.expect_oneshot_request(JOBS, method="GET").respond_with_json({})
    httpserver.expect_oneshot_request(JOBS, method="POST").respond_with_response(
        error("UNAVAILABLE", 503, "the answer was lost")
    )
    httpserver.expect_oneshot_request(JOBS, method="POST").respond_with_response(
        error("ALREADY_EXISTS", 409, "Job already exists.")
    )
    httpserver.expect_oneshot_request(f"{JOBS}/nightly", method="GET").respond_with_json(answered)
    sync_jobs(google_app(), client=client)
    httpserver.check_assertions()
    assert len(waits) == 1

    httpserver.expect_oneshot_request(JOBS, method="GET").respond_with_json({})
    httpserver.expect_oneshot_request(JOBS, method="POST").respond_with_response(
        error("ALREADY_EXISTS", 409, "Job already exists.")
    )
    httpserver.expect_oneshot_request(f"{JOBS}/nightly", method="GET").respond_with_json(
        {**answered, "schedule": "0 4 * * *"}
    )
    with pytest.raises(JobSyncError, match="create job 'nightly' failed: ALREADY_EXISTS: Job already exists"):
        sync_jobs(google_app(), client=client)


def test_sync_jobs_updates_with_top_level_mask_paths(httpserver: HTTPServer, client: SchedulerClient) -> None:
    old_uri = "https://worker-abc.a.run.app/jobs/old-path"
    drifted = {**NIGHTLY, "schedule": "0 4 * * *", "httpTarget": {**NIGHTLY["httpTarget"], "uri": old_uri}}
    httpserver.expect_oneshot_request(JOBS, method="GET").respond_with_json({"jobs": [drifted]})
    httpserver.expect_oneshot_request(
        f"{JOBS}/nightly",
        method="PATCH",
        query_string={"updateMask": "schedule,httpTarget"},
        json=NIGHTLY,
        headers=AUTH,
    ).respond_with_json(NIGHTLY)
    [update] = sync_jobs(google_app(), client=client).changes
    httpserver.check_assertions()
    assert update.describe() == "update  nightly: schedule, httpTarget.uri"


@pytest.mark.parametrize("job_id", ["a?b", "", "x" * 501, "a/b", "nightly:run", "é", None])
def test_a_job_id_the_service_refuses_is_refused_before_sending(
    httpserver: HTTPServer, client: SchedulerClient, job_id: Any
) -> None:
    for call in (client.get_job, client.delete_job, client.pause_job, client.resume_job, client.run_job):
        with pytest.raises(InvalidArgument, match=r"job_id must be 1-500 letters, numbers, hyphens or under"):
            call(job_id)
    name = f"{JOBS[4:]}/{job_id or ''}"
    with pytest.raises(InvalidArgument, match=r"job name's job id must be 1-500 letters"):
        client.update_job({"name": name, "schedule": "0 3 * * *"}, ["schedule"])
    assert httpserver.log == []
    assert client.job_path("x" * 500).endswith("/jobs/" + "x" * 500)
