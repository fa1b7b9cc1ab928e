"""Reconciles Cloud Scheduler with the jobs an app declares: plan the changes, then make them.

:func:`plan_sync` is pure: from the declared jobs and the jobs that exist it derives what to create, update
(the fields that changed, and the update mask that sets them), pause, resume or delete. :func:`sync_jobs`
lists the jobs of the app's location, plans, and applies the plan through a
:class:`~tasktoolkit.scheduler_client.SchedulerClient`.

Which jobs the app manages. Cloud Scheduler jobs have no labels, so a job carries its owner in its
description: a job is the app's when its description ends with the app's marker
(:func:`~tasktoolkit.job_spec.marker`, an owner id derived from ``TASKTOOLKIT_BASE_URL``), matched exactly.
Hand-made jobs and the jobs of other apps in the project and location are never updated or deleted, even when
one app's URL is a prefix of another's. A declared job id already taken by a job the app does not manage is a
conflict: nothing is changed, and the error names the job.

Jobs synced before the marker named its owner end with :data:`~tasktoolkit.job_spec.BARE_MARKER`. One whose
URI is under the app's URL and whose id the app declares is taken over (its description is rewritten with the
app's marker); one the app no longer declares is kept and listed, never deleted, since an app whose URL
extends this one's may own it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flask import Flask

from tasktoolkit.config import (
    BASE_URL,
    LOCATION,
    PROJECT,
    SERVICE_ACCOUNT,
    config_string,
    token_audience,
    token_service_account,
)
from tasktoolkit.errors import AlreadyExists, ApiError, ConfigurationError, JobSyncError
from tasktoolkit.job_spec import (
    BARE_MARKER,
    DEFAULT_ATTEMPT_DEADLINE_S,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF_S,
    DeclaredJob,
    declared_jobs,
    marker,
)
from tasktoolkit.scheduler_client import JobJson, SchedulerClient
from tasktoolkit.taskspec import format_duration, parse_duration

__all__ = ["JobChange", "SyncPlan", "SyncSettings", "desired_job", "plan_sync", "sync_jobs"]

#: The fields a sync sets and compares (job.proto, target.proto); the part before the ``.`` is the
#: update-mask path that sets it.
FIELDS = (
    "description",
    "schedule",
    "timeZone",
    "httpTarget.uri",
    "httpTarget.httpMethod",
    "httpTarget.body",
    "httpTarget.oidcToken",
    "retryConfig.retryCount",
    "retryConfig.maxRetryDuration",
    "retryConfig.minBackoffDuration",
    "retryConfig.maxBackoffDuration",
    "retryConfig.maxDoublings",
    "attemptDeadline",
)
#: What the service fills in for a zero or absent field (job.proto: "The default value of this field is
#: ..."; proto3 cannot tell zero from unset), so that a zero declared and a default answered compare equal.
_DEFAULTS: Mapping[str, Any] = {
    "retryConfig.minBackoffDuration": dt.timedelta(seconds=DEFAULT_MIN_BACKOFF_S),
    "retryConfig.maxBackoffDuration": dt.timedelta(seconds=DEFAULT_MAX_BACKOFF_S),
    "retryConfig.maxDoublings": DEFAULT_MAX_DOUBLINGS,
    "attemptDeadline": dt.timedelta(seconds=DEFAULT_ATTEMPT_DEADLINE_S),
}
#: Names of UTC the service may answer for a job created with "UTC" (cron page: "Etc/UTC" is the default).
_UTC_NAMES = frozenset({"", "utc", "etc/utc"})
#: The requests a sync makes: CreateJob, UpdateJob, PauseJob, ResumeJob, DeleteJob.
Action = Literal["create", "update", "pause", "resume", "delete"]


@dataclass(frozen=True)
class SyncSettings:
    """Where the app's jobs live and what their requests carry, from its ``TASKTOOLKIT_*`` config."""

    project: str
    location: str
    #: ``TASKTOOLKIT_BASE_URL`` without a trailing ``/``; a job's URI is this + the route's path.
    base_url: str
    #: Whose OIDC token each job sends.
    service_account: str
    #: The token's audience (``None``: the job's URI, as the service does).
    audience: str | None = None

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SyncSettings:
        """Reads ``TASKTOOLKIT_PROJECT``, ``LOCATION``, ``BASE_URL``, ``SERVICE_ACCOUNT`` and ``AUDIENCE``.

        Raises:
            ConfigurationError: A key is missing or invalid (the message names it).
        """
        why = "the Cloud Scheduler {} of the app's jobs"
        project = config_string(config, PROJECT, required=why.format("project"))
        location = config_string(config, LOCATION, required=why.format("location"))
        base = config_string(
            config, BASE_URL, required="the public URL of this service, e.g. https://worker-abc.a.run.app"
        )
        account = token_service_account(config)
        if account is None:
            raise ConfigurationError(
                f"{SERVICE_ACCOUNT} is not set: the service account whose OIDC token Cloud Scheduler sends "
                "to the app's scheduled routes"
            )
        assert project is not None and location is not None and base is not None
        if not base.startswith(("http://", "https://")):
            raise ConfigurationError(f"{BASE_URL} must begin with http:// or https://, got {base!r}")
        return cls(project, location, base.rstrip("/"), account, token_audience(config))

    @property
    def marker(self) -> str:
        """The marker ending the description of the app's jobs (owner id from :attr:`base_url`)."""
        return marker(self.base_url)

    def manages(self, job: JobJson) -> bool:
        """Whether ``job`` is one of the app's: the app's marker ends its description."""
        description = job.get("description")
        return isinstance(description, str) and description.endswith(self.marker)

    def synced_before_owner_ids(self, job: JobJson) -> bool:
        """Whether ``job`` carries the bare marker of earlier versions and its URI is under the app."""
        description = job.get("description")
        uri = _target(job).get("uri")
        return (
            isinstance(description, str)
            and description.endswith(BARE_MARKER)
            and isinstance(uri, str)
            and uri.startswith(self.base_url + "/")
        )


def desired_job(job: DeclaredJob, settings: SyncSettings) -> JobJson:
    """The Job document (proto3 JSON) that ``job`` declares, as sent to CreateJob and UpdateJob."""
    spec = job.spec
    uri = settings.base_url + job.path
    target: JobJson = {
        "uri": uri,
        "httpMethod": job.http_method,
        "oidcToken": {"serviceAccountEmail": settings.service_account, "audience": settings.audience or uri},
    }
    if spec.body:
        target["body"] = base64.b64encode(spec.body).decode("ascii")
    return {
        "name": f"{settings.parent}/jobs/{job.job_id}",
        "description": f"{spec.description} {settings.marker}" if spec.description else settings.marker,
        "schedule": spec.schedule,
        "timeZone": spec.time_zone,
        "httpTarget": target,
        "retryConfig": {
            "retryCount": spec.retry_count,
            "maxRetryDuration": _duration(spec.max_retry_duration_s),
            "minBackoffDuration": _duration(spec.min_backoff_s),
            "maxBackoffDuration": _duration(spec.max_backoff_s),
            "maxDoublings": spec.max_doublings,
        },
        "attemptDeadline": _duration(spec.attempt_deadline_s),
    }


def _duration(seconds: float) -> str:
    return format_duration(dt.timedelta(seconds=seconds))


@dataclass(frozen=True)
class JobChange:
    """One request of a sync: ``create``, ``update``, ``pause``, ``resume`` or ``delete`` of one job."""

    action: Action
    job_id: str
    #: The document sent (create and update).
    job: JobJson | None = None
    #: The fields an update changes (:data:`FIELDS` paths).
    fields: tuple[str, ...] = ()

    @property
    def update_mask(self) -> tuple[str, ...]:
        """The UpdateJob mask: the top-level fields that hold :attr:`fields` (``httpTarget`` for ``.uri``).

        The sync sends whole sub-messages (the full ``httpTarget`` and ``retryConfig`` it wants), so replacing
        each one it touches gives the job that a mask of leaf paths would. Top-level paths are the ones REST
        callers of the real service are seen to use (``updateMask=httpTarget``); whether it takes leaf paths
        inside ``HttpTarget`` is not documented, and the runner accepts both, so it cannot tell.
        """
        return tuple(dict.fromkeys(path.split(".", 1)[0] for path in self.fields))

    def describe(self) -> str:
        """One readable line, e.g. ``update  nightly: schedule, httpTarget.uri``."""
        head = f"{self.action:<7} {self.job_id}"
        if self.action == "update":
            return f"{head}: {', '.join(self.fields)}"
        if self.action == "create" and self.job is not None:
            target = _target(self.job)
            return (
                f"{head}: {self.job['schedule']} ({self.job['timeZone']}), "
                f"{target['httpMethod']} {target['uri']}"
            )
        return head


@dataclass(frozen=True)
class SyncPlan:
    """What a sync changes, and what it leaves alone."""

    changes: tuple[JobChange, ...]
    #: Declared jobs that already match.
    unchanged: tuple[str, ...] = ()
    #: Managed jobs no longer declared, kept because pruning was off.
    kept: tuple[str, ...] = ()
    #: Declared job ids taken by jobs the app does not manage, each with the reason.
    conflicts: tuple[str, ...] = ()
    #: Jobs with the bare marker of earlier versions under the app's URL that it does not declare (never
    #: deleted: an app whose URL extends this one's may own them).
    unclaimed: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line per change, kept job and conflict."""
        return [
            *(change.describe() for change in self.changes),
            *(f"keep    {job_id}: no longer declared (pruning is off)" for job_id in self.kept),
            *(f"conflict {message}" for message in self.conflicts),
            *(
                f"keep    {job_id}: synced by an earlier version ({BARE_MARKER!r}) and not declared; "
                "delete it by hand if no app declares it"
                for job_id in self.unclaimed
            ),
        ]


def plan_sync(
    declared: Iterable[DeclaredJob],
    existing: Iterable[JobJson],
    settings: SyncSettings,
    *,
    prune: bool = True,
    prune_all: bool = False,
) -> SyncPlan:
    """The changes that make ``existing`` (the jobs of the location) match ``declared``.

    Only jobs the app manages (:meth:`SyncSettings.manages`) are updated, paused, resumed or deleted.

    Args:
        declared: The app's jobs (:func:`~tasktoolkit.job_spec.declared_jobs`).
        existing: Every job of the location, as ListJobs answers them.
        settings: The app's settings.
        prune: Delete managed jobs that are no longer declared (else report them as kept).
        prune_all: Allow pruning when ``declared`` is empty (every managed job is then deleted).

    Raises:
        JobSyncError: ``declared`` is empty and pruning would delete managed jobs, without ``prune_all``.
    """
    prefix = f"{settings.parent}/jobs/"
    found = {
        str(job["name"])[len(prefix) :]: job
        for job in existing
        if isinstance(job.get("name"), str) and job["name"].startswith(prefix)
    }
    changes: list[JobChange] = []
    unchanged: list[str] = []
    conflicts: list[str] = []
    wanted = sorted(declared, key=lambda job: job.job_id)
    for job in wanted:
        want = desired_job(job, settings)
        have = found.get(job.job_id)
        if have is None:
            changes.append(JobChange("create", job.job_id, want))
            if job.spec.paused:
                changes.append(JobChange("pause", job.job_id))
            continue
        if not (settings.manages(have) or settings.synced_before_owner_ids(have)):
            conflicts.append(_conflict(job.job_id, have, settings))
            continue
        job_changes = _reconcile(job, want, have)
        changes.extend(job_changes)
        if not job_changes:
            unchanged.append(job.job_id)
    declared_ids = {job.job_id for job in wanted}
    gone = sorted(
        job_id for job_id, job in found.items() if job_id not in declared_ids and settings.manages(job)
    )
    if prune and gone and not wanted and not prune_all:
        raise JobSyncError(
            f"the app declares no scheduled jobs, so pruning would delete all {len(gone)} it manages "
            f"({', '.join(gone)}); pass --prune-all (prune_all=True) to do that, or --no-prune"
        )
    if prune:
        changes.extend(JobChange("delete", job_id) for job_id in gone)
    unclaimed = sorted(
        job_id
        for job_id, job in found.items()
        if job_id not in declared_ids and settings.synced_before_owner_ids(job)
    )
    return SyncPlan(
        tuple(changes), tuple(unchanged), () if prune else tuple(gone), tuple(conflicts), tuple(unclaimed)
    )


def _reconcile(job: DeclaredJob, want: JobJson, have: JobJson) -> list[JobChange]:
    """The update, pause or resume that brings ``have`` (a managed job) to ``want``."""
    state = have.get("state", "ENABLED")
    changed: tuple[str, ...]
    if state == "UPDATE_FAILED":  # job.proto: "retry UpdateJob until a successful response is received"
        changed = FIELDS
    else:
        current, target = _compared(have), _compared(want)
        changed = tuple(path for path in FIELDS if current[path] != target[path])
    changes = [JobChange("update", job.job_id, want, changed)] if changed else []
    if job.spec.paused and state != "PAUSED":
        changes.append(JobChange("pause", job.job_id))
    elif not job.spec.paused and state in ("PAUSED", "DISABLED"):
        changes.append(JobChange("resume", job.job_id))
    return changes


def _conflict(job_id: str, have: JobJson, settings: SyncSettings) -> str:
    description = have.get("description")
    if isinstance(description, str) and description.endswith(BARE_MARKER):
        why = f"it was synced by an earlier version and its URI {_target(have).get('uri')!r} is not under "
        why += f"{BASE_URL} {settings.base_url!r}"
    else:
        why = f"its description does not end with this app's marker {settings.marker!r}"
    return (
        f"{job_id}: a job of that id exists and this app does not manage it ({why}); delete it, or give the "
        "route another job_id"
    )


def _target(job: JobJson) -> JobJson:
    target = job.get("httpTarget")
    return target if isinstance(target, dict) else {}


def _compared(job: JobJson) -> dict[str, Any]:
    """The :data:`FIELDS` of ``job``, normalized as the service answers them (defaults filled in)."""
    target = _target(job)
    retry = job.get("retryConfig")
    retry = retry if isinstance(retry, dict) else {}
    token = target.get("oidcToken")
    zone = str(job.get("timeZone") or "")
    raw = {
        "description": str(job.get("description") or ""),
        "schedule": " ".join(str(job.get("schedule") or "").split()),
        "timeZone": "Etc/UTC" if zone.lower() in _UTC_NAMES else zone,
        "httpTarget.uri": target.get("uri"),
        "httpTarget.httpMethod": target.get("httpMethod") or "POST",
        "httpTarget.body": _bytes(target.get("body")),
        "httpTarget.oidcToken": (
            # target.proto: without an audience, "the URI specified in target will be used"
            (token.get("serviceAccountEmail"), token.get("audience") or target.get("uri"))
            if isinstance(token, dict)
            else None
        ),
        "retryConfig.retryCount": _int(retry.get("retryCount")),
        "retryConfig.maxRetryDuration": _timedelta(retry.get("maxRetryDuration")),
        "retryConfig.minBackoffDuration": _timedelta(retry.get("minBackoffDuration")),
        "retryConfig.maxBackoffDuration": _timedelta(retry.get("maxBackoffDuration")),
        "retryConfig.maxDoublings": _int(retry.get("maxDoublings")),
        "attemptDeadline": _timedelta(job.get("attemptDeadline")),
    }
    for path, default in _DEFAULTS.items():
        if not raw[path]:
            raw[path] = default
    return raw


def _bytes(value: Any) -> bytes | str:
    if not value:
        return b""
    try:
        return base64.b64decode(str(value).replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return f"unreadable: {value!r}"  # compares unequal to any body, so it is rewritten


def _int(value: Any) -> int | str:
    if value is None:
        return 0
    try:
        return int(value)  # proto3 JSON may send an int32 as a string
    except (TypeError, ValueError):
        return f"unreadable: {value!r}"


def _timedelta(value: Any) -> dt.timedelta | str:
    if value is None:
        return dt.timedelta(0)
    try:
        return parse_duration(str(value))
    except ValueError:
        return f"unreadable: {value!r}"


def apply_plan(
    plan: SyncPlan, client: SchedulerClient, report: Callable[[JobChange], None] | None = None
) -> None:
    """Makes the plan's changes in order, calling ``report`` after each one.

    Raises:
        JobSyncError: A request was refused; the message names the job, the change and the service's answer.
    """
    for change in plan.changes:
        try:
            if change.action == "create":
                assert change.job is not None
                _create(client, change.job_id, change.job)
            elif change.action == "update":
                assert change.job is not None
                client.update_job(change.job, change.update_mask)
            elif change.action == "pause":
                client.pause_job(change.job_id)
            elif change.action == "resume":
                client.resume_job(change.job_id)
            else:
                client.delete_job(change.job_id)
        except ApiError as exc:
            raise JobSyncError(f"{change.action} job {change.job_id!r} failed: {exc}") from exc
        if report is not None:
            report(change)


def _create(client: SchedulerClient, job_id: str, job: JobJson) -> None:
    """CreateJob; a job of that id with exactly these settings counts as created.

    The client resends a named create whose answer was lost, and the resend finds the job the first one made.
    """
    try:
        client.create_job(job)
    except AlreadyExists:
        if _compared(client.get_job(job_id)) != _compared(job):
            raise


def sync_jobs(
    app: Flask,
    *,
    dry_run: bool = False,
    prune: bool = True,
    prune_all: bool = False,
    client: SchedulerClient | None = None,
    report: Callable[[JobChange], None] | None = None,
) -> SyncPlan:
    """Creates, updates, pauses, resumes and deletes Cloud Scheduler jobs so they match what ``app`` declares.

    Args:
        app: The app; its routes declare the jobs, its ``TASKTOOLKIT_*`` config says where (see
            :class:`SyncSettings`).
        dry_run: Plan only; change nothing.
        prune: Delete the managed jobs no route declares any more.
        prune_all: Allow pruning when the app declares no jobs at all (it deletes every managed job).
        client: The client (default: a :class:`SchedulerClient` of the app's project and location, closed
            at the end).
        report: Called after each change made.

    Returns:
        The plan (made unless ``dry_run``).

    Raises:
        ConfigurationError: A setting is missing, or the routes declare jobs wrongly.
        JobSyncError: The app declares no jobs and pruning would delete managed ones (without ``prune_all``),
            a declared job id is taken by a job the app does not manage (nothing is changed), or
            the service refused a change (the ones before it stay made).
        ApiError: Listing the jobs failed.
    """
    settings = SyncSettings.from_config(app.config)
    declared = declared_jobs(app)
    own = client is None
    scheduler = client or SchedulerClient(settings.project, settings.location)
    try:
        plan = plan_sync(declared, scheduler.list_jobs(), settings, prune=prune, prune_all=prune_all)
        if dry_run:
            return plan
        if plan.conflicts:
            raise JobSyncError("; ".join(plan.conflicts))
        apply_plan(plan, scheduler, report)
        return plan
    finally:
        if own:
            scheduler.close()
