"""@scheduled_handler: a Flask route that Cloud Scheduler calls, run once per fire.

The request goes through the same cycle as a task delivery (``tasktoolkit.handler``: token verification,
the answer table of ``docs/handlers.md``, claim and record, logs and spans). What differs is the context,
a :class:`~tasktoolkit.headers.ScheduleContext` read from the ``X-CloudScheduler-*`` headers, and the
dedup key, ``<job id>@<schedule time>``: a retried or duplicated fire replays the stored answer instead of
running the function again, and a failed fire is run again by Cloud Scheduler's retry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask.typing import ResponseReturnValue

from tasktoolkit.errors import ConfigurationError
from tasktoolkit.handler import Caller, HandlerOptions, check_duration, check_function, check_scope, dispatch
from tasktoolkit.headers import (
    SCHEDULER_JOB_NAME,
    SCHEDULER_SCHEDULE_TIME,
    ScheduleContext,
    format_utc,
    parse_schedule_context,
)
from tasktoolkit.job_spec import (
    DEFAULT_ATTEMPT_DEADLINE_S,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF_S,
    JobSpec,
)
from tasktoolkit.routes import remember

ScheduledFunction = Callable[..., ResponseReturnValue]

#: Added to ``attempt_deadline_s`` for the default lease: a run still going when Cloud Scheduler gives up on
#: the attempt keeps its claim, so the retry that follows is answered "in progress" instead of running the
#: fire a second time beside it (design.md §5: the lease covers the deadline).
LEASE_MARGIN_S = 60.0


#: Cloud Scheduler fires: ``func(fire, **view_args)``, keyed by ``<job id>@<schedule time>``.
SCHEDULER: Caller[ScheduleContext] = Caller(
    header_names=(SCHEDULER_JOB_NAME, SCHEDULER_SCHEDULE_TIME),
    parse=lambda headers, body, options: parse_schedule_context(headers, body),
    deduplicates=lambda options: True,  # every fire, by its fire id: there is no key function to choose
    key=lambda options, fire: fire.fire_id,
    call=lambda func, fire, view_args: func(fire, **view_args),
    label=lambda fire: f"job {fire.fire_id}",
    log_fields=lambda fire: {"job": fire.job_name, "schedule_time": format_utc(fire.schedule_time)},
    span=lambda fire: (f"process {fire.job_name}", fire.job_name, fire.fire_id),
)


class ScheduledHandler:
    """A Flask view running one function per Cloud Scheduler fire (made by :func:`scheduled_handler`).

    Its :attr:`job_spec` declares the job (``tasktoolkit.job_spec.declared_jobs`` finds it).
    """

    def __init__(self, func: ScheduledFunction, spec: JobSpec, options: HandlerOptions) -> None:
        remember(func)
        functools.update_wrapper(self, func)
        self.func = func
        self.job_spec = spec
        self.options = options

    def __call__(self, **view_args: Any) -> ResponseReturnValue:
        """Handles one fire (Flask passes the URL's variables as keyword arguments)."""
        return dispatch(SCHEDULER, self.func, self.options, view_args)


def scheduled_handler(
    schedule: str,
    *,
    time_zone: str = "UTC",
    job_id: str | None = None,
    description: str = "",
    retry_count: int = 0,
    max_retry_duration_s: float = 0.0,
    min_backoff_s: float = DEFAULT_MIN_BACKOFF_S,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    max_doublings: int = DEFAULT_MAX_DOUBLINGS,
    attempt_deadline_s: float = DEFAULT_ATTEMPT_DEADLINE_S,
    body: bytes = b"",
    paused: bool = False,
    lease_s: float | None = None,
    ttl_s: float | None = None,
    dedup_scope: str | None = None,
) -> Callable[[ScheduledFunction], ScheduledHandler]:
    """Turns a Flask view into a verified Cloud Scheduler target that runs once per fire.

    The function is called as ``func(fire, **view_args)`` with the
    :class:`~tasktoolkit.headers.ScheduleContext` of the fire. The caller's OIDC token is verified as for
    task handlers (its service account must be in ``TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS``); answers follow
    the table in ``docs/handlers.md``. Write it directly above the function, below ``@app.post(...)``.

    The job settings (defaults are Cloud Scheduler's) become the view's :class:`JobSpec`, read by
    ``declared_jobs(app)`` and the fake scheduler; they do not change how a request is handled.

    Args:
        schedule: Five unix-cron fields, e.g. ``"0 9 * * 1"`` (checked now, with cronsim).
        time_zone: IANA time zone the schedule is read in.
        job_id: Job id; default: the route's endpoint, ``.`` and ``_`` turned into ``-``.
        description: The job's description.
        retry_count: Retries of a failed fire (0-5).
        max_retry_duration_s: Retry until this long after the first attempt (0: no limit).
        min_backoff_s: First retry delay.
        max_backoff_s: Longest retry delay.
        max_doublings: Times the delay doubles before growing linearly.
        attempt_deadline_s: How long Cloud Scheduler waits for an answer (15-1800 s).
        body: Request body (POST, PUT and PATCH routes only).
        paused: Create (or keep) the job paused.
        lease_s: How long a claim blocks duplicates while running; at least ``attempt_deadline_s``
            (default: ``TASKTOOLKIT_LEASE_S``, raised to ``attempt_deadline_s`` + :data:`LEASE_MARGIN_S`).
        ttl_s: How long a fire's answer is kept for replay (default ``TASKTOOLKIT_RESULT_TTL_S``).
        dedup_scope: Key space of the dedup records (default: the route's endpoint).

    Raises:
        ConfigurationError: A setting is out of range (the message names it and the range).
    """
    spec = JobSpec(
        schedule=schedule,
        time_zone=time_zone,
        job_id=job_id,
        description=description,
        retry_count=retry_count,
        max_retry_duration_s=max_retry_duration_s,
        min_backoff_s=min_backoff_s,
        max_backoff_s=max_backoff_s,
        max_doublings=max_doublings,
        attempt_deadline_s=attempt_deadline_s,
        body=body,
        paused=paused,
    )
    lease_s = check_duration("scheduled_handler", "lease_s", lease_s)
    if lease_s is not None and lease_s < attempt_deadline_s:
        raise ConfigurationError(
            f"scheduled_handler lease_s must be at least attempt_deadline_s ({attempt_deadline_s:g}), "
            f"got {lease_s!r}: a retry after the deadline would run the fire again beside the first run"
        )
    options = HandlerOptions(
        dedup_key=None,  # the task handlers' key function; fires are keyed by SCHEDULER.key
        lease_s=lease_s,
        min_lease_s=attempt_deadline_s + LEASE_MARGIN_S,
        ttl_s=check_duration("scheduled_handler", "ttl_s", ttl_s),
        parse_json=False,
        dedup_scope=check_scope("scheduled_handler", dedup_scope),
    )

    def decorate(function: ScheduledFunction) -> ScheduledHandler:
        check_function("scheduled_handler", function, ("fire",))
        return ScheduledHandler(function, spec, options)

    return decorate
