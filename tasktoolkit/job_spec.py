"""What an app declares about its Cloud Scheduler jobs, and where Flask serves each one.

A scheduled handler carries a :class:`JobSpec` (the job's settings, from its decorator) as its ``job_spec``
attribute. :func:`declared_jobs` finds them among an app's routes and pairs each with the route's path and
method: the input of the command that reconciles Cloud Scheduler with the app, and of the fake scheduler.

Ranges follow ``google/cloud/scheduler/v1/job.proto`` (``RetryConfig``, ``attempt_deadline``, the job id).
Schedules are read by cronsim when the decorator is applied, in the job's time zone: what cron cannot read
fails at import, not at the first fire.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from flask import Flask

from tasktoolkit.errors import ConfigurationError
from tasktoolkit.headers import JOB_ID

#: HTTP methods an HttpTarget may use (target.proto ``HttpMethod``), by preference when a route takes several.
HTTP_METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: ``attempt_deadline`` range for HTTP targets, seconds (job.proto).
ATTEMPT_DEADLINE_RANGE_S = (15.0, 1800.0)
#: Largest ``retry_count`` (job.proto ``RetryConfig.retry_count``).
MAX_RETRY_COUNT = 5
#: Ends the description of every job the sync command manages (Cloud Scheduler jobs have no labels); the
#: owner is the first 8 hex digits of the SHA-256 of the app's ``TASKTOOLKIT_BASE_URL`` (:func:`marker`).
MARKER = "(managed by tasktoolkit {owner})"
#: The marker of jobs synced before the marker named its owner (recognised, rewritten, never pruned).
BARE_MARKER = MARKER.replace(" {owner}", "")
#: Hex digits of the owner id in :data:`MARKER`.
OWNER_DIGITS = 8
#: Longest declared ``description``: job.proto's 500 characters, less a space and the marker.
MAX_DESCRIPTION = 500 - 1 - len(MARKER.format(owner="0" * OWNER_DIGITS))
#: Cloud Scheduler's defaults, which it also reads a zero field as (job.proto ``RetryConfig``,
#: ``attempt_deadline``): the defaults of :class:`JobSpec` and ``@scheduled_handler``, and what a sync
#: compares an absent field as.
DEFAULT_MIN_BACKOFF_S = 5.0
DEFAULT_MAX_BACKOFF_S = 3600.0
DEFAULT_MAX_DOUBLINGS = 5
DEFAULT_ATTEMPT_DEADLINE_S = 180.0


def marker(base_url: str) -> str:
    """The marker that ends the description of the jobs the app at ``base_url`` manages (fixed length)."""
    owner = hashlib.sha256(base_url.encode("utf-8")).hexdigest()[:OWNER_DIGITS]
    return MARKER.format(owner=owner)


@dataclass(frozen=True)
class JobSpec:
    """The settings of one Cloud Scheduler job an app declares (defaults are the service's)."""

    #: Five unix-cron fields, e.g. ``"0 9 * * 1"``.
    schedule: str
    #: IANA time zone the schedule is read in.
    time_zone: str = "UTC"
    #: Job id; ``None``: the route's endpoint name, with ``.`` and ``_`` turned into ``-``.
    job_id: str | None = None
    description: str = ""
    retry_count: int = 0
    #: 0: no limit.
    max_retry_duration_s: float = 0.0
    min_backoff_s: float = DEFAULT_MIN_BACKOFF_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S
    max_doublings: int = DEFAULT_MAX_DOUBLINGS
    attempt_deadline_s: float = DEFAULT_ATTEMPT_DEADLINE_S
    #: Request body (POST, PUT and PATCH only).
    body: bytes = b""
    #: Created or kept paused.
    paused: bool = False

    def __post_init__(self) -> None:
        _check(_zone_exists(self.time_zone), "time_zone", self.time_zone, "an IANA time zone name")
        _check(
            _cron_reads(self.schedule, self.time_zone),
            "schedule",
            self.schedule,
            "five unix-cron fields with a fire time, e.g. '0 9 * * 1'",
        )
        _check(
            self.job_id is None or bool(JOB_ID.fullmatch(self.job_id)),
            "job_id",
            self.job_id,
            "1-500 letters, numbers, hyphens or underscores",
        )
        _check(
            isinstance(self.description, str) and len(self.description) <= MAX_DESCRIPTION,
            "description",
            self.description,
            f"a str of at most {MAX_DESCRIPTION} characters (500, less room for the sync marker)",
        )
        _check(
            _int_in(self.retry_count, 0, MAX_RETRY_COUNT),
            "retry_count",
            self.retry_count,
            f"an integer in [0, {MAX_RETRY_COUNT}]",
        )
        _check(
            _int_in(self.max_doublings, 0, 2**31 - 1), "max_doublings", self.max_doublings, "an integer >= 0"
        )
        for field, value in (
            ("max_retry_duration_s", self.max_retry_duration_s),
            ("min_backoff_s", self.min_backoff_s),
            ("max_backoff_s", self.max_backoff_s),
        ):
            _check(_seconds(value) and value >= 0, field, value, "a number of seconds >= 0")
        effective_min = self.min_backoff_s or DEFAULT_MIN_BACKOFF_S
        effective_max = self.max_backoff_s or DEFAULT_MAX_BACKOFF_S
        _check(
            effective_min <= effective_max,
            "min_backoff_s",
            self.min_backoff_s,
            f"at most max_backoff_s ({effective_max:g}; a zero reads as the service's default)",
        )
        low, high = ATTEMPT_DEADLINE_RANGE_S
        _check(
            _seconds(self.attempt_deadline_s) and low <= self.attempt_deadline_s <= high,
            "attempt_deadline_s",
            self.attempt_deadline_s,
            f"seconds in [{low:g}, {high:g}]",
        )
        _check(isinstance(self.body, bytes), "body", self.body, "bytes")


@dataclass(frozen=True)
class DeclaredJob:
    """A :class:`JobSpec` with the route that serves it."""

    job_id: str
    spec: JobSpec
    #: Flask endpoint of the route.
    endpoint: str
    #: The route's path (no variables).
    path: str
    #: The HTTP method Cloud Scheduler uses.
    http_method: str


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigurationError(f"scheduled_handler {field} must be {allowed}, got {value!r}")


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _zone_exists(name: Any) -> bool:
    if not isinstance(name, str) or not name:
        return False
    if name.lower() == "utc":
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _cron_reads(schedule: Any, zone: str) -> bool:
    """Whether cronsim reads ``schedule`` as five fields with at least one fire time in ``zone``.

    cronsim also reads its extensions (``L``, ``W``, ``#``, ``?``), which Cloud Scheduler refuses; that
    rule is the service's to enforce (the runner and Google both answer ``INVALID_ARGUMENT`` when the job
    is created or updated), so it is not repeated here.
    """
    if not isinstance(schedule, str) or len(schedule.split()) != 5:
        return False
    start = dt.datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC" if zone.lower() == "utc" else zone))
    try:
        next(iter(CronSim(" ".join(schedule.split()), start)))
    except (CronSimError, StopIteration):
        return False
    return True


def default_job_id(endpoint: str) -> str:
    """The job id of a route that names none: its endpoint, ``.`` and ``_`` turned into ``-``."""
    return endpoint.replace(".", "-").replace("_", "-")


def _method(methods: set[str], spec: JobSpec) -> str:
    served = [method for method in HTTP_METHODS if method in methods and method not in ("HEAD", "OPTIONS")]
    if not served:
        raise ConfigurationError(f"a scheduled route must accept one of {', '.join(HTTP_METHODS[:5])}")
    method = served[0]
    if spec.body and method not in ("POST", "PUT", "PATCH"):
        raise ConfigurationError(f"scheduled_handler body needs a POST, PUT or PATCH route, not {method}")
    return method


def declared_jobs(app: Flask) -> list[DeclaredJob]:
    """The jobs ``app`` declares: one per route whose view carries a :class:`JobSpec`, by job id.

    Raises:
        ConfigurationError: A scheduled route has URL variables, two routes declare one job id, or a
            body is declared for a method that cannot carry one.
    """
    found: dict[str, DeclaredJob] = {}
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions.get(rule.endpoint), "job_spec", None)
        if not isinstance(spec, JobSpec):
            continue
        if rule.arguments:
            raise ConfigurationError(
                f"scheduled route {rule.rule} has URL variables ({', '.join(sorted(rule.arguments))}); "
                "Cloud Scheduler calls one fixed URL"
            )
        job_id = spec.job_id or default_job_id(rule.endpoint)
        _check(
            bool(JOB_ID.fullmatch(job_id)),
            "job_id",
            job_id,
            "1-500 letters, numbers, hyphens or underscores",
        )
        job = DeclaredJob(job_id, spec, rule.endpoint, rule.rule, _method(set(rule.methods or ()), spec))
        other = found.get(job_id)
        if other is not None and other.endpoint != job.endpoint:
            raise ConfigurationError(
                f"job id {job_id!r} is declared twice: by {other.path} and {job.path}; give one a job_id"
            )
        found.setdefault(job_id, job)
    return sorted(found.values(), key=lambda job: job.job_id)
