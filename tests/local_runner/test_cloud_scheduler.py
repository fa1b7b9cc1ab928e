"""The Cloud Scheduler twin: cron and retry rules (sans-IO), the REST API, and firing over real HTTP."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from google.auth.transport import requests as google_requests
from google.oauth2 import id_token
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local_runner.clock import VirtualClock
from local_runner.cloud_scheduler import cron, firing
from local_runner.cloud_scheduler.model import Job, JobHttpTarget, JobRetryConfig
from local_runner.cloud_scheduler.service import JobsService
from local_runner.cloud_scheduler.store import SQLiteJobStore
from local_runner.config import ConfigError, RunnerSettings
from local_runner.engine.attempts import Outcome
from local_runner.errors import InvalidArgument, NotFound, StoreError
from local_runner.server import RunnerServer
from local_runner.store import SQLiteTaskStore
from tests.local_runner.test_dispatch_http import Recorder, eventually

PARENT = "projects/test-proj/locations/us-central1"
JOBS = f"{PARENT}/jobs"
SA = "scheduler@test-proj.iam.gserviceaccount.com"


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# -- cron (sans-IO) ---------------------------------------------------------------------------------


def test_every_minute_fires_at_the_next_minute_strictly_after() -> None:
    assert cron.next_fire("* * * * *", "", at("2026-03-01T10:00:30+00:00")) == at("2026-03-01T10:01:00+00:00")
    assert cron.next_fire("* * * * *", "", at("2026-03-01T10:01:00+00:00")) == at("2026-03-01T10:02:00+00:00")


def test_time_zone_and_daylight_saving() -> None:
    # 09:00 in New York is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT).
    assert cron.next_fire("0 9 * * *", "America/New_York", at("2026-01-10T00:00:00+00:00")) == at(
        "2026-01-10T14:00:00+00:00"
    )
    assert cron.next_fire("0 9 * * *", "America/New_York", at("2026-07-10T00:00:00+00:00")) == at(
        "2026-07-10T13:00:00+00:00"
    )
    # 02:30 does not exist on 2026-03-08 in New York (02:00 -> 03:00): it fires once, right after the gap.
    fire = cron.next_fire("30 2 * * *", "America/New_York", at("2026-03-08T05:00:00+00:00"))
    assert fire == at("2026-03-08T07:00:00+00:00")  # 03:00 EDT
    # 01:30 happens twice on 2026-11-01 (fall back): it fires once.
    first = cron.next_fire("30 1 * * *", "America/New_York", at("2026-11-01T04:00:00+00:00"))
    assert first == at("2026-11-01T05:30:00+00:00")
    assert cron.next_fire("30 1 * * *", "America/New_York", first) == at("2026-11-02T06:30:00+00:00")


@pytest.mark.parametrize(
    ("schedule", "zone"),
    [("* * * *", ""), ("0 0 L * *", ""), ("61 * * * *", ""), ("*/0 * * * *", ""), ("* * * * *", "Mars/Base")],
)
def test_bad_schedule_or_zone_is_the_services_invalid_argument(schedule: str, zone: str) -> None:
    with pytest.raises(InvalidArgument, match="Schedule or time zone is invalid"):
        cron.check_schedule(schedule, zone)


# -- firing (sans-IO) -------------------------------------------------------------------------------


def make_job(retry: JobRetryConfig | None = None, schedule: str = "0 * * * *") -> Job:
    target = JobHttpTarget("http://127.0.0.1:1/x")
    return Job(f"{JOBS}/j", schedule, target, retry_config=retry or JobRetryConfig())


def test_failed_fire_is_retried_with_backoff_then_waits_for_the_next_fire() -> None:
    now = at("2026-03-01T10:00:00+00:00")
    job = firing.enabled(make_job(JobRetryConfig(retry_count=2)), now - 1)
    assert job.schedule_time == now
    schedule_times = []
    for _ in range(3):
        job = firing.start_attempt(job, now)
        job, attempt = firing.finish_attempt(job, Outcome(now, http_status=500), now)
        assert attempt.schedule_time == at("2026-03-01T10:00:00+00:00")  # retries keep the fire time
        assert job.status is not None and job.status.code == 13
        schedule_times.append(job.schedule_time)
        assert job.schedule_time is not None
        now = job.schedule_time
    start = at("2026-03-01T10:00:00+00:00")
    assert schedule_times == [start + 5, start + 5 + 10, at("2026-03-01T11:00:00+00:00")]


def test_retries_stop_at_the_next_fire() -> None:
    now = at("2026-03-01T10:00:00+00:00")
    job = firing.enabled(make_job(JobRetryConfig(retry_count=5, min_backoff=40), "* * * * *"), now - 1)
    job = firing.start_attempt(job, now)
    job, _ = firing.finish_attempt(job, Outcome(now, http_status=503), now)
    assert job.schedule_time == now + 40  # first retry before the next minute
    job = firing.start_attempt(job, now + 40)
    job, _ = firing.finish_attempt(job, Outcome(now + 40, http_status=503), now + 40)
    assert job.schedule_time == now + 60 and job.execution is None  # 80 s backoff passes 10:01: next fire


def test_missed_fires_run_once_late_then_the_schedule_resumes() -> None:
    fire = at("2026-03-01T10:00:00+00:00")
    job = firing.enabled(make_job(schedule="* * * * *"), fire - 1)
    back = fire + 3600 + 17  # the runner was down for an hour: 61 fire times passed
    assert firing.is_due(job, back)
    job = firing.start_attempt(job, back)
    request = firing.build_request(job, None, back)
    assert request.headers["X-CloudScheduler-ScheduleTime"] == "2026-03-01T11:00:00Z"  # the latest
    job, _ = firing.finish_attempt(job, Outcome(back, http_status=200), back)
    assert job.schedule_time == at("2026-03-01T11:01:00+00:00")
    assert job.status is not None and job.status.code == 0


def test_an_execution_that_overruns_a_fire_delays_the_next_start() -> None:
    fire = at("2026-03-01T16:00:00+00:00")
    job = firing.enabled(make_job(schedule="*/5 * * * *"), fire - 1)
    job = firing.start_attempt(job, fire)
    ended = fire + 15 * 60 + 3  # the 16:00 execution takes until 16:15 (job.proto's example)
    job, _ = firing.finish_attempt(job, Outcome(ended, http_status=200), ended)
    assert job.schedule_time == ended  # the next execution starts at once
    job = firing.start_attempt(job, ended)
    request = firing.build_request(job, None, ended)
    assert request.headers["X-CloudScheduler-ScheduleTime"] == "2026-03-01T16:15:00Z"
    job, _ = firing.finish_attempt(job, Outcome(ended + 1, http_status=200), ended + 1)
    assert job.schedule_time == at("2026-03-01T16:20:00+00:00")


# -- the runner, over real HTTP on a virtual clock -------------------------------------------------


@pytest.fixture
def clock() -> VirtualClock:
    # A minute boundary just before the real time, so that minted tokens pass google-auth's checks.
    return VirtualClock(start=float(int(time.time()) // 60 * 60 - 60))


@pytest.fixture
def runner(clock: VirtualClock) -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5), clock=clock) as server:
        yield server


def api(runner: RunnerServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{runner.base_url}/v1/{path}", timeout=10, **kwargs)


def create(runner: RunnerServer, url: str, job_id: str = "every-minute", **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"{JOBS}/{job_id}",
        "schedule": "* * * * *",
        "httpTarget": {"uri": url, "oidcToken": {"serviceAccountEmail": SA}},
        **fields,
    }
    response = api(runner, "POST", JOBS, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_minute_job_fires_at_the_minute_with_the_real_headers_and_a_verifiable_token(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/tick", method="POST").respond_with_handler(recorder)
    url = httpserver.url_for("/tick")
    job = create(runner, url)
    minute = clock.now() + 60
    assert job["scheduleTime"] == datetime.fromtimestamp(minute, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert job["state"] == "ENABLED" and job["attemptDeadline"] == "180s"
    assert job["retryConfig"] == {
        "maxRetryDuration": "0s",
        "minBackoffDuration": "5s",
        "maxBackoffDuration": "3600s",
        "maxDoublings": 5,
    }
    clock.advance(59)
    assert recorder.count() == 0
    clock.advance(1)
    eventually(lambda: recorder.count() == 1)
    headers = recorder.requests[0]
    assert headers["User-Agent"] == "Google-Cloud-Scheduler"
    assert headers["X-Cloudscheduler"] == "true"
    assert headers["X-Cloudscheduler-Jobname"] == "every-minute"
    assert headers["X-Cloudscheduler-Scheduletime"] == job["scheduleTime"]
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = id_token.verify_token(
        token, google_requests.Request(), audience=url, certs_url=f"{runner.base_url}/certs"
    )
    assert claims["email"] == SA
    eventually(lambda: "lastAttemptTime" in api(runner, "GET", f"{JOBS}/every-minute").json())
    described = api(runner, "GET", f"{JOBS}/every-minute").json()
    assert described["status"] == {}
    assert described["scheduleTime"] == datetime.fromtimestamp(minute + 60, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def test_failing_fire_is_retried_per_retry_config(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([500, 500, 200])
    httpserver.expect_request("/flaky").respond_with_handler(recorder)
    create(runner, httpserver.url_for("/flaky"), "flaky", retryConfig={"retryCount": 3})
    clock.advance(60)
    eventually(lambda: recorder.count() == 1)
    eventually(lambda: api(runner, "GET", f"{JOBS}/flaky").json().get("status", {}).get("code") == 13)
    clock.advance(4)
    assert recorder.count() == 1
    clock.advance(1)  # minBackoffDuration 5 s
    eventually(lambda: recorder.count() == 2)
    eventually(lambda: api(runner, "GET", f"{JOBS}/flaky").json()["lastAttemptTime"] is not None)
    clock.advance(10)  # then 10 s
    eventually(lambda: recorder.count() == 3)
    fire = recorder.requests[0]["X-Cloudscheduler-Scheduletime"]
    assert {h["X-Cloudscheduler-Scheduletime"] for h in recorder.requests} == {fire}
    eventually(lambda: api(runner, "GET", f"{JOBS}/flaky").json().get("status") == {})
    attempts = api(runner, "GET", f"{JOBS}/flaky:attempts").json()["attempts"]
    assert [a.get("httpStatus") for a in attempts] == [500, 500, 200]


def test_pause_resume_run_list_patch_delete(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/p").respond_with_handler(recorder)
    create(runner, httpserver.url_for("/p"), "p")
    paused = api(runner, "POST", f"{JOBS}/p:pause").json()
    assert paused["state"] == "PAUSED" and "scheduleTime" not in paused
    clock.advance(120)
    api(runner, "POST", f"{JOBS}/p:run")  # RunJob runs a paused job now
    eventually(lambda: recorder.count() == 1)
    resumed = api(runner, "POST", f"{JOBS}/p:resume").json()
    assert resumed["state"] == "ENABLED" and resumed["scheduleTime"] > paused["userUpdateTime"]
    patched = api(
        runner,
        "PATCH",
        f"{JOBS}/p",
        params={"updateMask": "schedule,timeZone"},
        json={"schedule": "0 9 * * 1", "timeZone": "Europe/Paris"},
    ).json()
    assert patched["schedule"] == "0 9 * * 1" and patched["timeZone"] == "Europe/Paris"
    create(runner, httpserver.url_for("/p"), "q")
    page = api(runner, "GET", JOBS, params={"pageSize": 1}).json()
    assert [j["name"] for j in page["jobs"]] == [f"{JOBS}/p"]
    rest = api(runner, "GET", JOBS, params={"pageToken": page["nextPageToken"]}).json()
    assert [j["name"] for j in rest["jobs"]] == [f"{JOBS}/q"]
    forged = api(runner, "GET", JOBS, params={"pageToken": "AAAA"})
    assert forged.status_code == 400 and "Invalid page_token" in forged.json()["error"]["message"]
    assert api(runner, "DELETE", f"{JOBS}/p").json() == {}
    missing = api(runner, "GET", f"{JOBS}/p")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"schedule": "every monday"}, "Schedule or time zone is invalid."),
        ({"timeZone": "Nowhere/City"}, "Schedule or time zone is invalid."),
        ({"retryConfig": {"retryCount": 6}}, "retry_count must be between 0 and 5"),
        ({"attemptDeadline": "10s"}, "attempt_deadline must be between 15s and 1800s"),
        ({"attemptDeadline": "1801s"}, "attempt_deadline must be between 15s and 1800s"),
        ({"httpTarget": {"uri": "ftp://x"}}, "uri must begin with http:// or https://"),
        ({"httpTarget": {"uri": "http://x", "httpMethod": "GET", "body": "aGk="}}, "body is allowed only"),
        ({"httpTarget": None, "pubsubTarget": {"topicName": "projects/p/topics/t"}}, "Pub/Sub targets"),
        ({"httpTarget": None, "appEngineHttpTarget": {}}, "App Engine HTTP targets"),
        ({"name": f"{JOBS}/bad.id"}, "JOB_ID has 1 to 500"),
        ({"colour": "red"}, 'Unknown name "colour"'),
        (
            {"retryConfig": {"retryCount": "abc"}},
            "Invalid value at 'job.retry_config.retry_count' (TYPE_INT32)",
        ),
        ({"attemptDeadline": "soon"}, "Invalid value at 'job.attempt_deadline' (google.protobuf.Duration)"),
    ],
)
def test_bad_jobs_get_invalid_argument_naming_the_field(
    runner: RunnerServer, fields: dict[str, Any], message: str
) -> None:
    body = {"name": f"{JOBS}/bad", "schedule": "* * * * *", "httpTarget": {"uri": "http://127.0.0.1:1/"}}
    body.update(fields)
    response = api(runner, "POST", JOBS, json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and message in error["message"]


def test_duplicate_job_is_already_exists(runner: RunnerServer) -> None:
    create(runner, "http://127.0.0.1:1/", "dup")
    body = {"name": f"{JOBS}/dup", "schedule": "* * * * *", "httpTarget": {"uri": "http://127.0.0.1:1/"}}
    response = api(runner, "POST", JOBS, json=body)
    assert response.status_code == 409 and response.json()["error"]["status"] == "ALREADY_EXISTS"


def test_jobs_file_accepts_pasted_describe_output(tmp_path: Path, clock: VirtualClock) -> None:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(
        """\
attemptDeadline: 180s
httpTarget:
  headers:
    User-Agent: Google-Cloud-Scheduler
  httpMethod: POST
  oidcToken:
    serviceAccountEmail: scheduler@test-proj.iam.gserviceaccount.com
  uri: https://example.com/digest
lastAttemptTime: '2026-11-23T09:00:00.503Z'
name: projects/test-proj/locations/us-central1/jobs/weekly-digest
retryConfig:
  maxBackoffDuration: 3600s
  maxDoublings: 5
  maxRetryDuration: 0s
  minBackoffDuration: 5s
schedule: 0 9 * * 1
scheduleTime: '2026-11-30T09:00:00Z'
state: PAUSED
status: {}
timeZone: Europe/London
userUpdateTime: '2026-11-01T12:00:00Z'
"""
    )
    settings = RunnerSettings(port=0, data_dir=None, jobs_file=jobs_file, project="test-proj")
    with RunnerServer(settings, clock=clock) as server:
        job = api(server, "GET", f"{JOBS}/weekly-digest").json()
    assert job["state"] == "PAUSED" and job["timeZone"] == "Europe/London"
    assert job["httpTarget"]["uri"] == "https://example.com/digest"


def test_sqlite_job_store_skips_a_damaged_row_and_deletes_it(tmp_path: Path) -> None:
    tasks = SQLiteTaskStore(tmp_path / "runner.sqlite3")  # creates the cloud_scheduler_* tables
    store = SQLiteJobStore(tasks.path)
    service = JobsService(store, VirtualClock())
    good = make_job(schedule="* * * * *")
    store.put_job(firing.enabled(good, 0.0))
    store.put_job(firing.enabled(good.replace(name=f"{JOBS}/damaged"), 0.0))
    with sqlite3.connect(tasks.path) as conn:
        conn.execute("UPDATE cloud_scheduler_jobs SET doc = '{\"name\": 1}' WHERE name LIKE '%damaged'")
    assert [job.name for job in store.list_jobs()] == [good.name]
    assert service.delete_job(f"{JOBS}/damaged") == {}
    with pytest.raises(NotFound):
        service.delete_job(f"{JOBS}/damaged")
    store.close()
    tasks.close()


def test_job_without_a_name_gets_one_and_oversize_headers_are_refused(runner: RunnerServer) -> None:
    body = {"schedule": "* * * * *", "httpTarget": {"uri": "http://127.0.0.1:1/"}}
    created = api(runner, "POST", JOBS, json=body).json()
    assert created["name"].startswith(f"{JOBS}/")
    body["httpTarget"] = {"uri": "http://127.0.0.1:1/", "headers": {"X-Big": "x" * 81920}}
    refused = api(runner, "POST", JOBS, json=body)
    assert refused.status_code == 400 and "less than 80KB" in refused.json()["error"]["message"]


def test_retry_delays_follow_the_proto_example() -> None:
    config = JobRetryConfig(retry_count=5, min_backoff=10, max_backoff=300, max_doublings=3)
    delays = [firing.retry_delay(config, k) for k in range(1, 9)]
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]  # job.proto RetryConfig.max_doublings


def test_a_bad_jobs_file_names_the_job_and_leaves_the_data_dir_free(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("name: x\nschedule: nope\nhttpTarget: {uri: 'http://a/'}\n")
    settings = RunnerSettings(port=0, data_dir=tmp_path / "data", jobs_file=jobs_file)
    with pytest.raises(
        ConfigError, match="job 'projects/local-project/locations/us-central1/jobs/x': Schedule"
    ):
        RunnerServer(settings)
    with RunnerServer(RunnerSettings(port=0, data_dir=tmp_path / "data")):
        pass


@pytest.fixture
def threaded_httpserver() -> Iterator[HTTPServer]:
    server = HTTPServer(threaded=True)  # answers while a slow handler holds another request
    server.start()
    yield server
    server.clear()
    server.stop()


def test_run_while_an_attempt_is_in_flight_runs_right_after_it(
    runner: RunnerServer, clock: VirtualClock, threaded_httpserver: HTTPServer
) -> None:
    release = threading.Event()
    seen: list[str] = []

    def handler(request: Request) -> Response:
        seen.append(request.headers["X-CloudScheduler-ScheduleTime"])
        if len(seen) == 1:
            release.wait(10)
        return Response("ok")

    threaded_httpserver.expect_request("/slow").respond_with_handler(handler)
    create(runner, threaded_httpserver.url_for("/slow"), "busy")
    clock.advance(60)
    eventually(lambda: len(seen) == 1)
    clock.advance(7)
    assert api(runner, "POST", f"{JOBS}/busy:run").status_code == 200
    release.set()
    eventually(lambda: len(seen) == 2)
    forced_at = datetime.fromtimestamp(clock.now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert seen[1] == forced_at and seen[0] != forced_at


def test_an_attempt_the_store_cannot_record_is_tried_again_a_second_later_not_in_a_busy_loop(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/ok").respond_with_handler(recorder)
    create(runner, httpserver.url_for("/ok"), "fragile")
    store = runner.cloud_scheduler.store
    calls: list[str] = []
    real_put = store.put_job

    def failing_put(job: Job) -> None:
        calls.append(job.name)
        if len(calls) == 1:
            raise StoreError("disk I/O error")
        real_put(job)

    monkeypatch.setattr(store, "put_job", failing_put)
    clock.advance(60)
    eventually(lambda: len(calls) == 1)
    assert recorder.count() == 0
    clock.advance(1)  # REST_AFTER_ERROR
    eventually(lambda: recorder.count() == 1)
    assert len(calls) <= 3  # the failed start, the retried start, its outcome
