"""@scheduled_handler: the token checks of task handlers, a ScheduleContext, and one run per fire."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tasktoolkit import ConfigurationError, TaskToolkit
from tasktoolkit.dedup.memory import MemoryDedupStore
from tasktoolkit.headers import ScheduleContext
from tasktoolkit.job_spec import JobSpec, declared_jobs
from tasktoolkit.scheduled import scheduled_handler

NINE = "2026-11-30T09:00:00Z"


class Nightly:
    """An app with one scheduled route that records each run; ``fail`` makes the next run raise."""

    def __init__(self, app: Flask) -> None:
        self.runs: list[ScheduleContext] = []
        self.fail = False
        self.app = app
        TaskToolkit(app)

        @app.post("/jobs/nightly")
        @scheduled_handler("0 3 * * *", time_zone="Europe/Paris", retry_count=2)
        def nightly(fire: ScheduleContext) -> dict[str, Any]:
            self.runs.append(fire)
            if self.fail:
                self.fail = False
                raise RuntimeError("the database is down")
            return {"ran": len(self.runs)}

        self.client = app.test_client()

    def fire(
        self, token: str | None, time: str | None = NINE, job: str | None = "nightly", body: bytes = b""
    ) -> Any:
        headers = {"User-Agent": "Google-Cloud-Scheduler", "X-CloudScheduler": "true"}
        if job is not None:
            headers["X-CloudScheduler-JobName"] = job
        if time is not None:
            headers["X-CloudScheduler-ScheduleTime"] = time
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.post("/jobs/nightly", headers=headers, data=body)


@pytest.fixture
def nightly(make_app: Callable[..., Flask], tmp_path: Path) -> Nightly:
    return Nightly(make_app(TASKTOOLKIT_STORE=f"sqlite:///{tmp_path / 'dedup.db'}"))


# -- verification --------------------------------------------------------------------------------


def test_a_fire_without_a_token_is_401_and_does_not_run(nightly: Nightly) -> None:
    answer = nightly.fire(None)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert nightly.runs == []


def test_a_forged_token_is_401(nightly: Nightly, tokens: Any) -> None:
    forged = tokens.sign(tokens.other_key, tokens.claims())
    answer = nightly.fire(forged)
    assert answer.status_code == 401
    assert nightly.runs == []


def test_a_service_account_not_allowed_is_403(nightly: Nightly, tokens: Any) -> None:
    answer = nightly.fire(tokens.google(email="intruder@evil.iam.gserviceaccount.com"))
    assert answer.status_code == 403
    assert nightly.runs == []


@pytest.mark.parametrize(
    ("job", "time", "named"),
    [
        (None, NINE, "X-CloudScheduler-JobName"),
        ("nightly", None, "X-CloudScheduler-ScheduleTime"),
        ("night ly", NINE, "X-CloudScheduler-JobName"),
        ("nightly", "yesterday", "X-CloudScheduler-ScheduleTime"),
        ("nightly", "2026-13-45T09:00:00Z", "X-CloudScheduler-ScheduleTime"),
    ],
)
def test_missing_or_garbled_scheduler_headers_are_400_naming_the_header(
    nightly: Nightly, tokens: Any, job: str | None, time: str | None, named: str
) -> None:
    answer = nightly.fire(tokens.google(), time=time, job=job)
    assert answer.status_code == 400
    assert named in answer.get_json()["error"]
    assert nightly.runs == []


def test_a_verified_fire_gets_its_schedule_context(nightly: Nightly, tokens: Any) -> None:
    answer = nightly.fire(tokens.google(), time="2026-11-30T10:00:00.5+01:00", body=b"digest")
    assert answer.status_code == 200, answer.get_data()
    [fire] = nightly.runs
    assert fire.job_name == "nightly"
    assert fire.schedule_time == dt.datetime(2026, 11, 30, 9, 0, 0, 500000, tzinfo=dt.UTC)
    assert fire.body == b"digest"
    assert fire.fire_id == "nightly@2026-11-30T09:00:00.500000Z"


# -- one run per (job, schedule time) ------------------------------------------------------------


def test_a_duplicate_fire_runs_once_and_replays_the_answer(nightly: Nightly, tokens: Any) -> None:
    first = nightly.fire(tokens.google())
    again = nightly.fire(tokens.google())
    same_instant = nightly.fire(tokens.google(), time="2026-11-30T10:00:00+01:00")
    assert len(nightly.runs) == 1
    assert first.get_json() == again.get_json() == same_instant.get_json() == {"ran": 1}
    assert again.headers["X-TaskToolkit-Replayed"] == "true"
    assert same_instant.headers["X-TaskToolkit-Replayed"] == "true"


def test_a_retry_after_a_failure_runs_again(nightly: Nightly, tokens: Any) -> None:
    nightly.fail = True
    assert nightly.fire(tokens.google()).status_code == 500
    retry = nightly.fire(tokens.google())
    assert retry.status_code == 200
    assert "X-TaskToolkit-Replayed" not in retry.headers
    assert len(nightly.runs) == 2


def test_another_schedule_time_or_job_runs_again(nightly: Nightly, tokens: Any) -> None:
    nightly.fire(tokens.google())
    nightly.fire(tokens.google(), time="2026-12-01T09:00:00Z")
    nightly.fire(tokens.google(), job="nightly-copy")
    assert [fire.fire_id for fire in nightly.runs] == [
        "nightly@2026-11-30T09:00:00Z",
        "nightly@2026-12-01T09:00:00Z",
        "nightly-copy@2026-11-30T09:00:00Z",
    ]


# -- the declared job ----------------------------------------------------------------------------


def test_the_route_declares_its_job(nightly: Nightly) -> None:
    [job] = declared_jobs(nightly.app)
    assert (job.job_id, job.path, job.http_method) == ("nightly", "/jobs/nightly", "POST")
    assert (job.spec.schedule, job.spec.time_zone, job.spec.retry_count) == ("0 3 * * *", "Europe/Paris", 2)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"schedule": "0 25 * * *"}, "schedule"),
        ({"schedule": "0 9 31 2 *"}, "schedule"),
        ({"schedule": "every monday"}, "schedule"),
        ({"schedule": "0 9 * * 1", "time_zone": "Mars/Olympus"}, "time_zone"),
        ({"schedule": "0 9 * * 1", "retry_count": 6}, "retry_count"),
        ({"schedule": "0 9 * * 1", "description": "x" * 476}, "description"),
        ({"schedule": "0 9 * * 1", "min_backoff_s": 0, "max_backoff_s": 1}, "min_backoff_s"),
        ({"schedule": "0 9 * * 1", "lease_s": -1}, "lease_s"),
    ],
)
def test_bad_settings_are_refused_when_decorating(kwargs: dict[str, Any], named: str) -> None:
    schedule = kwargs.pop("schedule")
    with pytest.raises(ConfigurationError, match=named):
        scheduled_handler(schedule, **kwargs)


def test_a_function_that_cannot_take_the_fire_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must accept"):
        scheduled_handler("0 9 * * 1")(lambda: None)


# -- the lease covers the attempt deadline -------------------------------------------------------


def test_a_retry_after_the_attempt_deadline_finds_the_first_run_still_holding_its_claim(
    make_app: Callable[..., Flask], tokens: Any
) -> None:
    clock = {"now": 1_700_000_000.0}
    app = make_app()  # TASKTOOLKIT_LEASE_S: its default, 600 s, shorter than the deadline below
    TaskToolkit(app, store=MemoryDedupStore(clock=lambda: clock["now"]))
    headers = {
        "X-CloudScheduler-JobName": "long",
        "X-CloudScheduler-ScheduleTime": NINE,
        "Authorization": f"Bearer {tokens.google()}",
    }
    retries: list[int] = []

    @app.post("/jobs/long")
    @scheduled_handler("0 3 * * *", retry_count=1, attempt_deadline_s=1800)
    def long(fire: ScheduleContext) -> dict[str, Any]:
        if not retries:  # Cloud Scheduler gives up on this attempt at its deadline, then retries
            clock["now"] += 1800
            retries.append(app.test_client().post("/jobs/long", headers=headers).status_code)
        return {}

    assert app.test_client().post("/jobs/long", headers=headers).status_code == 200
    assert retries == [409]


@pytest.mark.parametrize("lease_s", [60, 1799.5])
def test_a_lease_shorter_than_the_attempt_deadline_is_refused(lease_s: float) -> None:
    with pytest.raises(ConfigurationError, match=r"lease_s must be at least attempt_deadline_s \(1800\)"):
        scheduled_handler("0 9 * * 1", attempt_deadline_s=1800, lease_s=lease_s)


def test_the_decorator_s_defaults_are_the_job_spec_s() -> None:
    parameters = inspect.signature(scheduled_handler).parameters
    for spec_field in dataclasses.fields(JobSpec):
        if spec_field.name not in ("schedule", "job_id"):
            assert parameters[spec_field.name].default == spec_field.default, spec_field.name
