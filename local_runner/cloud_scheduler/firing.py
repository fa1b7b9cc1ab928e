"""When a job fires, what its request looks like, and what an attempt's outcome does to it (sans-IO).

Every function takes ``now``; none reads a clock or does I/O.
"""

from __future__ import annotations

from local_runner.cloud_scheduler.cron import latest_fire, next_fire
from local_runner.cloud_scheduler.model import Execution, Job, JobRetryConfig, JobState
from local_runner.codec.scalars import format_timestamp
from local_runner.engine.attempts import Outcome, rpc_status
from local_runner.engine.delivery import LOCAL_OAUTH_TOKEN, OutboundRequest, encode_url
from local_runner.engine.retry import backoff_interval
from local_runner.model import Attempt, RetryConfig
from local_runner.oidc import TokenIssuer

#: target.proto ``HttpTarget.headers``: "User-Agent: This will be set to "Google-Cloud-Scheduler"".
SCHEDULER_USER_AGENT = "Google-Cloud-Scheduler"
#: Headers of a job that are never sent: computed (target.proto: Host, Content-Length, User-Agent),
#: reserved (``X-Google-*``, ``X-AppEngine-*``, ``X-CloudScheduler*``) or framing the message.
_COMPUTED = frozenset({"host", "content-length", "user-agent", "transfer-encoding", "connection", "te"})
_RESERVED_PREFIXES = ("x-google-", "x-appengine-", "x-cloudscheduler")


def enabled(job: Job, now: float) -> Job:
    """``job`` ENABLED with its next fire after ``now`` and no execution in progress."""
    return job.replace(
        state=JobState.ENABLED,
        schedule_time=next_fire(job.schedule, job.time_zone, now),
        execution=None,
    )


def paused(job: Job) -> Job:
    """``job`` PAUSED: no next fire, the execution in progress (if any) abandoned."""
    return job.replace(state=JobState.PAUSED, schedule_time=None, execution=None)


def is_due(job: Job, now: float) -> bool:
    """Whether an attempt of ``job`` should start now."""
    if job.schedule_time is None or job.schedule_time > now:
        return False
    return job.state is JobState.ENABLED or job.execution is not None  # RunJob runs a paused job, too


def forced(job: Job, now: float) -> Job:
    """``job`` after RunJob: a new execution, fired at ``now`` whatever its state or schedule."""
    return job.replace(schedule_time=now, execution=Execution(fire_time=now))


def start_attempt(job: Job, now: float) -> Job:
    """``job`` as one of its attempts starts at ``now``.

    A new execution fires for the latest fire time of the schedule at or before ``now``: a start that
    is late (the previous execution overran, or the runner was down) runs once, now, however many
    fire times passed meanwhile. Cloud Scheduler "will never allow two simultaneously outstanding
    executions"; "a scheduled start time will be delayed if the previous execution has not ended
    when its scheduled time occurs" (job.proto ``schedule``).
    """
    execution = job.execution
    if execution is None:
        execution = Execution(fire_time=latest_fire(job.schedule, job.time_zone, now))
    execution = Execution(
        execution.fire_time,
        execution.attempts + 1,
        execution.first_attempt_time if execution.first_attempt_time is not None else now,
    )
    return job.replace(execution=execution, last_attempt_time=now)


def _retries_left(config: JobRetryConfig, execution: Execution, now: float) -> bool:
    """Whether a failed execution is retried (job.proto ``RetryConfig``).

    ``retry_count`` retries and, if ``max_retry_duration`` is set, until it has passed since the first
    attempt: "until both limits are reached".
    """
    count_reached = execution.attempts - 1 >= config.retry_count
    first = execution.first_attempt_time if execution.first_attempt_time is not None else now
    duration_reached = config.max_retry_duration <= 0 or now - first >= config.max_retry_duration
    return not (count_reached and duration_reached)


def retry_delay(config: JobRetryConfig, retry_number: int) -> float:
    """The wait before retry ``retry_number`` (1 for the first).

    The same doubling-then-linear backoff as Cloud Tasks (job.proto ``max_doublings``: 10 s, 20 s,
    40 s, 80 s, 160 s, 240 s, 300 s, ...).
    """
    as_tasks = RetryConfig(
        max_attempts=-1,
        min_backoff=config.min_backoff,
        max_backoff=config.max_backoff,
        max_doublings=config.max_doublings,
    )
    return backoff_interval(as_tasks, retry_number)


def finish_attempt(job: Job, outcome: Outcome, now: float) -> tuple[Job, Attempt]:
    """``job`` after the attempt started by :func:`start_attempt` ended with ``outcome``.

    Success, or a failure with no retry left, ends the execution: the next is the schedule's first
    fire after this one, started at once if that time has passed (the execution overran it; see
    :func:`start_attempt`). A failure with retries left is retried after the backoff, unless that falls
    at or after the next fire ("retry_count times, or until the next scheduled execution time,
    whichever comes first", job.proto ``RetryConfig.retry_count``).
    """
    execution = job.execution or Execution(fire_time=now, attempts=1, first_attempt_time=now)
    status = rpc_status(outcome, job.attempt_deadline)
    attempt = Attempt(
        schedule_time=execution.fire_time,
        dispatch_time=job.last_attempt_time if job.last_attempt_time is not None else now,
        response_time=outcome.response_time,
        http_status=outcome.http_status,
        response_status=status,
    )
    job = job.replace(status=status)
    if job.state is not JobState.ENABLED:  # a paused job run by RunJob, or paused meanwhile
        return job.replace(schedule_time=None, execution=None), attempt
    next_scheduled = max(now, next_fire(job.schedule, job.time_zone, execution.fire_time))
    if not outcome.succeeded and _retries_left(job.retry_config, execution, now):
        retry_at = now + retry_delay(job.retry_config, execution.attempts)
        if retry_at < next_scheduled:
            return job.replace(schedule_time=retry_at, execution=execution), attempt
    return job.replace(schedule_time=next_scheduled, execution=None), attempt


def _sendable(headers: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers
        if name.lower() not in _COMPUTED and not name.lower().startswith(_RESERVED_PREFIXES)
    }


def build_request(job: Job, issuer: TokenIssuer | None, now: float) -> OutboundRequest:
    """The request Cloud Scheduler sends for an attempt of ``job`` (target.proto ``HttpTarget.headers``).

    ``X-CloudScheduler-ScheduleTime`` is the fire time in RFC 3339 UTC ("Zulu"); on a retry it stays the
    fire time being retried; after RunJob it is the time of the forced run.
    """
    target = job.http_target
    execution = job.execution
    fire_time = execution.fire_time if execution is not None else now
    headers = _sendable(target.headers)
    headers["User-Agent"] = SCHEDULER_USER_AGENT
    headers["X-CloudScheduler"] = "true"
    headers["X-CloudScheduler-JobName"] = job.job_id
    headers["X-CloudScheduler-ScheduleTime"] = format_timestamp(fire_time)
    if target.oidc_token is not None or target.oauth_token is not None:
        for existing in [k for k in headers if k.lower() == "authorization"]:
            del headers[existing]
    if target.oidc_token is not None and issuer is not None:
        token = issuer.mint(
            target.oidc_token.service_account_email, target.oidc_token.audience or target.uri, now
        )
        headers["Authorization"] = f"Bearer {token}"
    elif target.oauth_token is not None:
        headers["Authorization"] = f"Bearer {LOCAL_OAUTH_TOKEN}"
    return OutboundRequest(target.http_method, encode_url(target.uri), headers, target.body)
