"""Syncing an app's declared jobs: the pure planner, then ``sync_jobs`` and ``flask tasktoolkit sync-jobs``
against a real ``runner serve`` process."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from flask import Flask
from testsupport.runner_process import RunnerProcess

from tasktoolkit import TaskToolkit
from tasktoolkit.client import RetryPolicy
from tasktoolkit.errors import ConfigurationError, JobSyncError, ResourceNotFound, ServiceUnavailable
from tasktoolkit.job_spec import BARE_MARKER, JobSpec, declared_jobs, marker
from tasktoolkit.job_sync import (
    FIELDS,
    JobChange,
    SyncSettings,
    desired_job,
    plan_sync,
    sync_jobs,
)
from tasktoolkit.scheduler_client import JobJson, SchedulerClient

BASE = "http://127.0.0.1:8080"
ACCOUNT = "scheduler@sync-project.iam.gserviceaccount.com"
AUDIENCE = "https://worker.example.com"
PROJECT = "sync-project"
MARKER = marker(BASE)
_locations = itertools.count()


def make_app(location: str, jobs: Mapping[str, JobSpec], **config: Any) -> Flask:
    """An app whose route ``/jobs/<name>`` declares ``jobs[name]`` (endpoint ``<name>``)."""
    app = Flask("jobs")
    app.config.update(
        {
            "TASKTOOLKIT_PROJECT": PROJECT,
            "TASKTOOLKIT_LOCATION": location,
            "TASKTOOLKIT_BASE_URL": BASE + "/",
            "TASKTOOLKIT_SERVICE_ACCOUNT": ACCOUNT,
            "TASKTOOLKIT_AUDIENCE": AUDIENCE,
            "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": [ACCOUNT],
            "TASKTOOLKIT_STORE": "memory://",
            **config,
        }
    )
    for name, spec in jobs.items():

        def view() -> str:
            return ""

        view.job_spec = spec  # type: ignore[attr-defined]
        app.add_url_rule(f"/jobs/{name}", endpoint=name, view_func=view, methods=["POST"])
    return app


def settings(location: str = "us-central1") -> SyncSettings:
    return SyncSettings(PROJECT, location, BASE, ACCOUNT, AUDIENCE)


def answered(job: JobJson, **changes: Any) -> JobJson:
    """``job`` as the service answers it: defaults filled in, zero fields left out, output fields added."""
    out = {**job, "timeZone": "Etc/UTC" if job["timeZone"] == "UTC" else job["timeZone"], "state": "ENABLED"}
    retry = {key: value for key, value in job["retryConfig"].items() if value not in (0, "0s")}
    out["retryConfig"] = {"maxRetryDuration": "0s", **retry}
    out["userUpdateTime"] = "2026-11-30T03:00:00Z"
    return {**out, **changes}


def declared(**jobs: JobSpec) -> list[Any]:
    return declared_jobs(make_app("us-central1", jobs))


# -- the planner ---------------------------------------------------------------------------------


def test_new_jobs_are_created_with_the_declared_settings_and_paused_ones_paused_after() -> None:
    jobs = declared(
        nightly=JobSpec("0 3 * * *", time_zone="Europe/Paris", retry_count=2, body=b"{}"),
        weekly=JobSpec("0 9 * * 1", paused=True, description="Monday digest"),
    )
    plan = plan_sync(jobs, [], settings())
    assert [(change.action, change.job_id) for change in plan.changes] == [
        ("create", "nightly"),
        ("create", "weekly"),
        ("pause", "weekly"),
    ]
    nightly = plan.changes[0].job
    assert nightly == {
        "name": f"projects/{PROJECT}/locations/us-central1/jobs/nightly",
        "description": MARKER,
        "schedule": "0 3 * * *",
        "timeZone": "Europe/Paris",
        "httpTarget": {
            "uri": f"{BASE}/jobs/nightly",
            "httpMethod": "POST",
            "oidcToken": {"serviceAccountEmail": ACCOUNT, "audience": AUDIENCE},
            "body": "e30=",
        },
        "retryConfig": {
            "retryCount": 2,
            "maxRetryDuration": "0s",
            "minBackoffDuration": "5s",
            "maxBackoffDuration": "3600s",
            "maxDoublings": 5,
        },
        "attemptDeadline": "180s",
    }
    assert plan.changes[1].job is not None and plan.changes[1].job["description"] == f"Monday digest {MARKER}"
    assert (
        plan.changes[0].describe() == f"create  nightly: 0 3 * * * (Europe/Paris), POST {BASE}/jobs/nightly"
    )


def test_a_job_as_the_service_answers_it_is_unchanged() -> None:
    jobs = declared(nightly=JobSpec("0 3 * * *", min_backoff_s=0, max_doublings=0))
    existing = [answered(desired_job(jobs[0], settings()))]
    existing[0]["retryConfig"].update(maxDoublings=5, minBackoffDuration="5s")  # the service's defaults for 0
    existing[0]["httpTarget"]["headers"] = {"User-Agent": "Google-Cloud-Scheduler"}  # not a field we set
    plan = plan_sync(jobs, existing, settings())
    assert (plan.changes, plan.unchanged) == ((), ("nightly",))
    no_audience = SyncSettings(PROJECT, "us-central1", BASE, ACCOUNT, None)
    del existing[0]["httpTarget"]["oidcToken"]["audience"]  # the service's default: the URI
    assert plan_sync(jobs, existing, no_audience).changes == ()


def test_a_changed_job_is_updated_with_exactly_the_changed_fields() -> None:
    before = declared(nightly=JobSpec("0 3 * * *"))
    after = declared(nightly=JobSpec("30 4 * * *", time_zone="Europe/Paris", retry_count=1))
    existing = [answered(desired_job(before[0], settings()))]
    plan = plan_sync(after, existing, settings())
    [change] = plan.changes
    assert change.action == "update"
    assert change.fields == ("schedule", "timeZone", "retryConfig.retryCount")
    assert change.update_mask == ("schedule", "timeZone", "retryConfig")
    assert change.job == desired_job(after[0], settings())
    assert change.describe() == "update  nightly: schedule, timeZone, retryConfig.retryCount"


def test_a_new_base_url_audience_or_account_updates_the_target() -> None:
    jobs = declared(nightly=JobSpec("0 3 * * *"))
    existing = [answered(desired_job(jobs[0], settings()))]
    moved = SyncSettings(PROJECT, "us-central1", BASE, "other@sync-project.iam.gserviceaccount.com", None)
    [change] = plan_sync(jobs, existing, moved).changes
    assert (change.fields, change.update_mask) == (("httpTarget.oidcToken",), ("httpTarget",))


def test_paused_and_resumed_jobs() -> None:
    jobs = declared(a=JobSpec("0 3 * * *", paused=True), b=JobSpec("0 4 * * *"))
    existing = [
        answered(desired_job(job, settings()), state=state)
        for job, state in zip(jobs, ("ENABLED", "PAUSED"), strict=True)
    ]
    plan = plan_sync(jobs, existing, settings())
    assert [(change.action, change.job_id) for change in plan.changes] == [("pause", "a"), ("resume", "b")]


def test_a_job_whose_update_failed_is_updated_with_every_field() -> None:
    jobs = declared(a=JobSpec("0 3 * * *"))
    existing = [answered(desired_job(jobs[0], settings()), state="UPDATE_FAILED")]
    [change] = plan_sync(jobs, existing, settings()).changes
    assert (change.action, change.fields) == ("update", FIELDS)
    assert change.update_mask == (
        "description",
        "schedule",
        "timeZone",
        "httpTarget",
        "retryConfig",
        "attemptDeadline",
    )


def unmanaged(job_id: str, uri: str = f"{BASE}/jobs/by-hand", description: str = "by hand") -> JobJson:
    return {
        "name": f"projects/{PROJECT}/locations/us-central1/jobs/{job_id}",
        "description": description,
        "schedule": "* * * * *",
        "timeZone": "Etc/UTC",
        "httpTarget": {"uri": uri, "httpMethod": "POST"},
        "state": "ENABLED",
    }


def test_only_managed_jobs_that_no_route_declares_are_deleted() -> None:
    old = declared(gone=JobSpec("0 3 * * *"))
    existing = [
        answered(desired_job(old[0], settings())),
        unmanaged("by-hand"),
        unmanaged("other-app", uri="https://other.example.com/jobs/x", description=BARE_MARKER),
        unmanaged("next-door", uri="https://other.example.com/jobs/x", description=marker(BASE + "/svc2")),
        {**unmanaged("elsewhere"), "name": f"projects/{PROJECT}/locations/europe-west1/jobs/gone"},
    ]
    plan = plan_sync([], existing, settings(), prune_all=True)
    assert plan.changes == (JobChange("delete", "gone"),)
    kept = plan_sync([], existing, settings(), prune=False)
    assert (kept.changes, kept.kept) == ((), ("gone",))
    assert kept.lines() == ["keep    gone: no longer declared (pruning is off)"]


def test_a_declared_id_taken_by_an_unmanaged_job_is_a_conflict() -> None:
    jobs = declared(**{"by-hand": JobSpec("0 3 * * *"), "other-app": JobSpec("0 3 * * *")})
    existing = [
        unmanaged("by-hand"),
        unmanaged("other-app", uri="https://other.example.com/jobs/x", description=BARE_MARKER),
    ]
    plan = plan_sync(jobs, existing, settings())
    assert plan.changes == ()
    assert len(plan.conflicts) == 2
    assert plan.conflicts[0].startswith("by-hand: a job of that id exists and this app does not manage it")
    assert f"does not end with this app's marker {MARKER!r}" in plan.conflicts[0]
    assert "https://other.example.com/jobs/x" in plan.conflicts[1]


def test_an_app_whose_url_extends_another_s_is_not_managed_by_it() -> None:
    inner = SyncSettings(PROJECT, "us-central1", BASE + "/svc2", ACCOUNT, AUDIENCE)
    theirs = answered(desired_job(declared(report=JobSpec("0 3 * * *"))[0], inner))
    assert theirs["httpTarget"]["uri"] == f"{BASE}/svc2/jobs/report"
    mine = declared(nightly=JobSpec("0 3 * * *"))
    plan = plan_sync(mine, [theirs], settings())
    assert [change.action for change in plan.changes] == ["create"]
    assert plan_sync(declared(report=JobSpec("0 3 * * *")), [theirs], settings()).conflicts != ()
    assert plan_sync([], [theirs], inner, prune_all=True).changes == (JobChange("delete", "report"),)


def test_jobs_synced_before_owner_ids_are_taken_over_when_declared_and_never_pruned() -> None:
    jobs = declared(nightly=JobSpec("0 3 * * *", description="Nightly"))
    old = answered(desired_job(jobs[0], settings()), description=f"Nightly {BARE_MARKER}")
    undeclared = {**old, "name": f"projects/{PROJECT}/locations/us-central1/jobs/report"}
    plan = plan_sync(jobs, [old, undeclared], settings())
    [update] = plan.changes
    assert (update.action, update.fields) == ("update", ("description",))
    assert update.job is not None and update.job["description"] == f"Nightly {MARKER}"
    assert plan.unclaimed == ("report",)
    assert plan.lines()[-1].startswith("keep    report: synced by an earlier version")


def test_pruning_an_app_that_declares_no_jobs_needs_prune_all() -> None:
    existing = [answered(desired_job(declared(gone=JobSpec("0 3 * * *"))[0], settings()))]
    with pytest.raises(JobSyncError, match=r"declares no scheduled jobs.*\(gone\); pass --prune-all"):
        plan_sync([], existing, settings())
    assert plan_sync([], existing, settings(), prune=False).kept == ("gone",)
    assert plan_sync([], existing, settings(), prune_all=True).changes == (JobChange("delete", "gone"),)
    assert plan_sync([], [], settings()).changes == ()


def test_settings_name_the_missing_key() -> None:
    app = make_app(
        "us-central1", {}, TASKTOOLKIT_SERVICE_ACCOUNT=None, TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=None
    )
    with pytest.raises(ConfigurationError, match="TASKTOOLKIT_SERVICE_ACCOUNT is not set"):
        SyncSettings.from_config(app.config)
    with pytest.raises(ConfigurationError, match="TASKTOOLKIT_BASE_URL must begin with http"):
        SyncSettings.from_config({**make_app("l", {}).config, "TASKTOOLKIT_BASE_URL": "worker.example.com"})


# -- against a runner process ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    process = RunnerProcess(None).start()
    yield process
    process.close()


@pytest.fixture
def location() -> str:
    """A location of its own for each test (the runner is shared by the module)."""
    return f"loc-{next(_locations)}"


@pytest.fixture
def scheduler(runner: RunnerProcess, location: str) -> Iterator[SchedulerClient]:
    with SchedulerClient(PROJECT, location, endpoint=runner.url) as client:
        yield client


@pytest.fixture
def cli(
    runner: RunnerProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Flask, str], tuple[int, str]]]:
    """``cli(app, *args)``: runs ``flask tasktoolkit sync-jobs ARGS`` on an initialized app."""
    monkeypatch.setenv("CLOUD_SCHEDULER_EMULATOR_HOST", runner.url.removeprefix("http://"))
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_HOST", raising=False)
    made: list[Flask] = []

    def run(app: Flask, *args: str) -> tuple[int, str]:
        if app not in made:
            TaskToolkit(app)
            made.append(app)
        result = app.test_cli_runner().invoke(args=["tasktoolkit", "sync-jobs", *args])
        return result.exit_code, result.output

    yield run
    for app in made:
        TaskToolkit.state(app).close()


def job_ids(scheduler: SchedulerClient) -> list[str]:
    return [str(job["name"]).rpartition("/")[2] for job in scheduler.list_jobs()]


def test_dry_run_prints_the_plan_and_changes_nothing(
    cli: Callable[..., tuple[int, str]], scheduler: SchedulerClient, location: str
) -> None:
    app = make_app(location, {"nightly": JobSpec("0 3 * * *"), "weekly": JobSpec("0 9 * * 1", paused=True)})
    code, output = cli(app, "--dry-run")
    assert code == 0, output
    assert output.splitlines() == [
        f"create  nightly: 0 3 * * * (UTC), POST {BASE}/jobs/nightly",
        f"create  weekly: 0 9 * * 1 (UTC), POST {BASE}/jobs/weekly",
        "pause   weekly",
        "3 change(s) planned (dry run: nothing changed), 0 job(s) unchanged.",
    ]
    assert job_ids(scheduler) == []


def test_apply_creates_then_a_second_run_changes_nothing(
    cli: Callable[..., tuple[int, str]], scheduler: SchedulerClient, location: str
) -> None:
    spec = JobSpec(
        "0 3 * * *",
        time_zone="Europe/Paris",
        description="nightly report",
        retry_count=3,
        max_retry_duration_s=600,
        min_backoff_s=0,
        max_backoff_s=120.5,
        max_doublings=0,
        attempt_deadline_s=300,
        body=b'{"full": true}',
    )
    app = make_app(location, {"nightly": spec, "weekly": JobSpec("0 9 * * 1", paused=True)})
    code, output = cli(app)
    assert code == 0, output
    assert output.splitlines()[-1] == "3 change(s) made, 0 job(s) unchanged."
    nightly = scheduler.get_job("nightly")
    assert nightly["httpTarget"]["oidcToken"] == {"serviceAccountEmail": ACCOUNT, "audience": AUDIENCE}
    assert nightly["retryConfig"]["maxBackoffDuration"] == "120.500s"
    assert nightly["state"] == "ENABLED"
    assert scheduler.get_job("weekly")["state"] == "PAUSED"

    code, output = cli(app)
    assert (code, output) == (0, "0 change(s) made, 2 job(s) unchanged.\n")
    assert sync_jobs(app, dry_run=True, client=scheduler).changes == ()


def test_a_schedule_change_updates_and_a_removed_route_deletes(
    scheduler: SchedulerClient, location: str
) -> None:
    sync_jobs(make_app(location, {"a": JobSpec("0 3 * * *"), "b": JobSpec("0 4 * * *")}), client=scheduler)
    before = scheduler.get_job("a")
    made: list[str] = []
    app = make_app(location, {"a": JobSpec("15 3 * * *", paused=True)})
    plan = sync_jobs(app, client=scheduler, report=lambda change: made.append(change.describe()))
    assert made == ["update  a: schedule", "pause   a", "delete  b"]
    after = scheduler.get_job("a")
    assert (after["schedule"], after["state"]) == ("15 3 * * *", "PAUSED")
    assert after["httpTarget"] == before["httpTarget"]
    with pytest.raises(ResourceNotFound):
        scheduler.get_job("b")
    assert plan.unchanged == ()
    assert sync_jobs(app, client=scheduler).changes == ()
    sync_jobs(make_app(location, {"a": JobSpec("15 3 * * *")}), client=scheduler)
    assert scheduler.get_job("a")["state"] == "ENABLED"

    moved = make_app(location, {"a": JobSpec("15 3 * * *")}, TASKTOOLKIT_AUDIENCE="https://new.example.com")
    [update] = sync_jobs(moved, client=scheduler).changes
    assert (update.describe(), update.update_mask) == ("update  a: httpTarget.oidcToken", ("httpTarget",))
    token = scheduler.get_job("a")["httpTarget"]["oidcToken"]
    assert token == {"serviceAccountEmail": ACCOUNT, "audience": "https://new.example.com"}
    assert sync_jobs(moved, client=scheduler).changes == ()


def test_unmanaged_jobs_are_never_updated_or_deleted(
    cli: Callable[..., tuple[int, str]], scheduler: SchedulerClient, location: str
) -> None:
    by_hand = {
        "name": scheduler.job_path("by-hand"),
        "schedule": "* * * * *",
        "httpTarget": {"uri": f"{BASE}/jobs/by-hand"},
    }
    other_app = {**by_hand, "name": scheduler.job_path("other-app"), "description": marker("http://x")}
    other_app["httpTarget"] = {"uri": "http://127.0.0.1:9090/jobs/other"}
    for job in (by_hand, other_app):
        scheduler.create_job(job)
    before = list(scheduler.list_jobs())
    code, output = cli(make_app(location, {"mine": JobSpec("0 3 * * *")}))
    assert code == 0, output
    code, output = cli(make_app(location, {}), "--prune-all")
    assert (code, output.splitlines()[0]) == (0, "delete  mine")
    assert list(scheduler.list_jobs()) == before

    taken = make_app(location, {"by-hand": JobSpec("0 3 * * *"), "new": JobSpec("0 3 * * *")})
    code, output = cli(taken)
    assert code == 1
    assert output.startswith("Error: by-hand: a job of that id exists and this app does not manage it")
    assert len(output.splitlines()) == 1
    assert list(scheduler.list_jobs()) == before  # nothing created either
    with pytest.raises(JobSyncError, match="by-hand: a job of that id exists"):
        sync_jobs(taken, client=scheduler)
    code, output = cli(taken, "--dry-run")
    assert code == 1
    assert output.splitlines()[0] == f"create  new: 0 3 * * * (UTC), POST {BASE}/jobs/new"
    assert output.splitlines()[-1] == "Error: 1 conflict(s): sync-jobs would change nothing"


def test_apps_sharing_a_url_prefix_never_prune_each_other(
    cli: Callable[..., tuple[int, str]], scheduler: SchedulerClient, location: str
) -> None:
    inner = make_app(location, {"report": JobSpec("0 3 * * *")}, TASKTOOLKIT_BASE_URL=BASE + "/svc2")
    outer = make_app(location, {"nightly": JobSpec("0 3 * * *")})
    assert cli(inner)[0] == 0
    assert cli(outer)[0] == 0
    assert cli(outer)[0] == 0
    assert job_ids(scheduler) == ["nightly", "report"]
    code, output = cli(make_app(location, {}))
    assert (code, output.splitlines()) == (
        1,
        [
            "Error: the app declares no scheduled jobs, so pruning would delete all 1 it manages (nightly); "
            "pass --prune-all (prune_all=True) to do that, or --no-prune"
        ],
    )
    assert job_ids(scheduler) == ["nightly", "report"]


def test_a_refused_job_exits_with_one_line_naming_it(
    cli: Callable[..., tuple[int, str]], scheduler: SchedulerClient, location: str
) -> None:
    app = make_app(location, {"a-good": JobSpec("0 3 * * *"), "b-bad": JobSpec("0 0 L * *")})
    code, output = cli(app)
    assert code == 1
    assert output.splitlines() == [
        f"create  a-good: 0 3 * * * (UTC), POST {BASE}/jobs/a-good",
        "Error: create job 'b-bad' failed: INVALID_ARGUMENT: Schedule or time zone is invalid.",
    ]
    assert job_ids(scheduler) == ["a-good"]


def test_no_prune_keeps_jobs_no_route_declares(
    cli: Callable[..., tuple[int, str]], scheduler: SchedulerClient, location: str
) -> None:
    cli(make_app(location, {"old": JobSpec("0 3 * * *")}))
    code, output = cli(make_app(location, {}), "--no-prune")
    assert (code, output.splitlines()) == (
        0,
        ["keep    old: no longer declared (pruning is off)", "0 change(s) made, 0 job(s) unchanged."],
    )
    assert job_ids(scheduler) == ["old"]


@pytest.mark.parametrize(
    ("spec", "config", "error"),
    [
        (
            JobSpec("0 3 * * *", max_retry_duration_s=1e12),
            {},
            "create job 'x' failed: INVALID_ARGUMENT: Invalid value at 'job.retry_config.max_retry_duration' "
            '(google.protobuf.Duration), "1000000000000s"',
        ),
        (
            JobSpec("0 3 * * *"),
            {"TASKTOOLKIT_BASE_URL": None},
            "TASKTOOLKIT_BASE_URL is not set: the public URL of this service, e.g. https://worker-abc.a.run.app",
        ),
        (
            JobSpec("0 3 * * *"),
            {"TASKTOOLKIT_LOCATION": "bad location"},
            "INVALID_ARGUMENT: location must be a non-empty id of letters, digits or '-' "
            "(e.g. 'us-central1'), got 'bad location'",
        ),
    ],
    ids=["retry-duration-too-long", "no-base-url", "bad-location"],
)
def test_bad_input_is_one_line_and_exit_code_1(
    cli: Callable[..., tuple[int, str]],
    location: str,
    spec: JobSpec,
    config: dict[str, Any],
    error: str,
) -> None:
    code, output = cli(make_app(location, {"x": spec}, **config))
    assert (code, output) == (1, f"Error: {error}\n")


def test_an_unreachable_scheduler_raises_unavailable(location: str) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    client = SchedulerClient(PROJECT, location, endpoint=endpoint, retry=RetryPolicy(attempts=1))
    with client, pytest.raises(ServiceUnavailable, match=r"UNAVAILABLE: GET http://127\.0\.0\.1"):
        sync_jobs(make_app(location, {"x": JobSpec("0 3 * * *")}), client=client)
