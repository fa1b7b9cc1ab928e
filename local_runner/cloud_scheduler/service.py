"""The CloudScheduler methods over a job store: what each call may do and what it changes.

Methods and messages follow ``google/cloud/scheduler/v1/cloudscheduler.proto``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

from local_runner.api.request import camel
from local_runner.clock import Clock
from local_runner.cloud_scheduler import firing
from local_runner.cloud_scheduler.model import (
    Job,
    JobState,
    check_job_name,
    job_fields_from_json,
    job_from_fields,
    job_to_json,
)
from local_runner.cloud_scheduler.store import JobStore
from local_runner.codec.scalars import JsonObject
from local_runner.codec.tasks import attempt_to_stored_json
from local_runner.errors import AlreadyExists, InvalidArgument, NotFound
from local_runner.service.page_tokens import decode_page_token, encode_page_token

JOB_NOT_FOUND = "Job not found."
JOB_EXISTS = "Job already exists."
#: cloudscheduler.proto ``ListJobsRequest.page_size``: "The maximum page size is 500."
MAX_PAGE_SIZE = 500
#: Fields an update mask may name (lowerCamelCase or snake_case; nested paths keep their top field).
_MASKABLE = ("description", "schedule", "timeZone", "httpTarget", "retryConfig", "attemptDeadline")


class JobsService:
    """Create, read, update, delete, pause, resume and run jobs; keeps ``scheduleTime`` right."""

    def __init__(self, store: JobStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        #: Called after every change that may move a job's next attempt (the fire loop wakes up).
        self.on_change: Callable[[], None] = lambda: None

    def _get(self, name: str) -> Job:
        check_job_name(name)
        job = self.store.get_job(name)
        if job is None:
            raise NotFound(JOB_NOT_FOUND)
        return job

    def _put(self, job: Job) -> JsonObject:
        self.store.put_job(job)
        self.on_change()
        return job_to_json(job)

    def create_job(self, parent: str, body: object) -> JsonObject:
        """CreateJob: a new ENABLED job whose first fire is the schedule's next after now."""
        fields = job_fields_from_json(body)
        name = fields.get("name") or f"{parent}/jobs/{secrets.token_hex(10)}"  # "optionally caller-specified"
        if not isinstance(name, str):
            raise InvalidArgument(f"Invalid value at 'job.name' (TYPE_STRING), {name!r}")
        if name.rpartition("/jobs/")[0] != parent:
            raise InvalidArgument(f"Job name {name!r} must be under the request's parent {parent!r}.")
        job = job_from_fields(name, fields)
        if self.store.get_job(name) is not None:
            raise AlreadyExists(JOB_EXISTS)
        now = self.clock.now()
        return self._put(firing.enabled(job.replace(user_update_time=now), now))

    def upsert_job(self, job: Job, state: JobState | None) -> Job:
        """Create or replace ``job`` (the ``--jobs`` file); an unchanged job is left as it is."""
        existing = self.store.get_job(job.name)
        target = state or (existing.state if existing is not None else JobState.ENABLED)
        if existing is not None and existing.state is target and _same_settings(existing, job):
            return existing
        now = self.clock.now()
        job = job.replace(user_update_time=now)
        if existing is not None:
            job = job.replace(status=existing.status, last_attempt_time=existing.last_attempt_time)
        job = firing.paused(job) if target is JobState.PAUSED else firing.enabled(job, now)
        self.store.put_job(job)
        self.on_change()
        return job

    def get_job(self, name: str) -> JsonObject:
        """GetJob."""
        return job_to_json(self._get(name))

    def list_jobs(self, parent: str, page_size: int = 0, page_token: str = "") -> JsonObject:
        """ListJobs, by name, at most ``page_size`` (default and cap 500) a page."""
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative.")
        size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_job_token(page_token, parent) if page_token else ""
        jobs = [job for job in self.store.list_jobs(parent) if job.name > after]
        out: JsonObject = {}
        if jobs[:size]:
            out["jobs"] = [job_to_json(job) for job in jobs[:size]]
        if len(jobs) > size:
            out["nextPageToken"] = encode_page_token("", jobs[size - 1].name)  # ListJobs has no filter
        return out

    def update_job(self, name: str, body: object, update_mask: Iterable[str] | None) -> JsonObject:
        """UpdateJob: the fields in ``update_mask`` (all given if none); the next fire is recomputed."""
        job = self._get(name)
        fields = job_fields_from_json(body)
        fields.pop("name", None)
        if update_mask is None:
            changed = set(fields)
        else:
            changed = {camel(path.split(".", 1)[0]) for path in update_mask if path}
            unknown = sorted(path for path in changed if path not in _MASKABLE)
            if unknown:
                raise InvalidArgument(f"Invalid update_mask: {', '.join(unknown)} cannot be updated.")
        current = {key: value for key, value in job_to_json(job).items() if key in _MASKABLE}
        if not job.time_zone:
            current.pop("timeZone", None)
        for key in changed:
            if key in fields:
                current[key] = fields[key]
            else:
                current.pop(key, None)
        updated = job_from_fields(name, current)
        now = self.clock.now()
        updated = updated.replace(
            state=job.state,
            status=job.status,
            last_attempt_time=job.last_attempt_time,
            user_update_time=now,
        )
        updated = firing.enabled(updated, now) if job.state is JobState.ENABLED else firing.paused(updated)
        return self._put(updated)

    def delete_job(self, name: str) -> JsonObject:
        """DeleteJob (its attempt history goes with it); a job whose record is damaged is deleted, too."""
        check_job_name(name)
        if not self.store.delete_job(name):
            raise NotFound(JOB_NOT_FOUND)
        self.on_change()
        return {}

    def pause_job(self, name: str) -> JsonObject:
        """PauseJob: no fire until resumed; an execution awaiting a retry is abandoned."""
        job = self._get(name)
        if job.state is JobState.PAUSED:
            return job_to_json(job)
        return self._put(firing.paused(job.replace(user_update_time=self.clock.now())))

    def resume_job(self, name: str) -> JsonObject:
        """ResumeJob: ENABLED, next fire the schedule's first after now (missed fires are not made up)."""
        job = self._get(name)
        if job.state is JobState.ENABLED:
            return job_to_json(job)
        now = self.clock.now()
        return self._put(firing.enabled(job.replace(user_update_time=now), now))

    def run_job(self, name: str) -> JsonObject:
        """RunJob: "Forces a job to run now", even if paused (cloudscheduler.proto)."""
        job = self._get(name)
        forced = firing.forced(job, self.clock.now())
        self._put(forced)
        return job_to_json(job)

    def attempts(self, name: str) -> list[JsonObject]:
        """The job's kept attempts, oldest first (runner extension)."""
        self._get(name)
        return [attempt_to_stored_json(attempt) for attempt in self.store.attempts(name)]


def _same_settings(a: Job, b: Job) -> bool:
    keys = ("schedule", "time_zone", "description", "http_target", "retry_config", "attempt_deadline")
    return all(getattr(a, key) == getattr(b, key) for key in keys)


def _decode_job_token(token: str, parent: str) -> str:
    """The last job name of the page before, from its ``next_page_token``."""
    try:
        after = decode_page_token(token, "")
    except InvalidArgument:
        after = None
    if not isinstance(after, str) or not after.startswith(f"{parent}/jobs/"):
        raise InvalidArgument(f"Invalid page_token {token!r}.")
    return after
