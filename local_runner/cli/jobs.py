"""``runner jobs ...``: manage Cloud Scheduler jobs through the REST API, like ``gcloud scheduler jobs``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

import click

from local_runner.cli.client import JsonObject, RunnerClient
from local_runner.cli.common import (
    Target,
    api_command,
    duration_flag,
    echo_table,
    echo_yaml,
    short_id,
    verb_command,
)
from local_runner.codec.scalars import format_duration

F = TypeVar("F", bound=Callable[..., Any])


def _client(target: Target) -> RunnerClient:
    return RunnerClient(target.client.endpoint, "v1")


def _job(target: Target, job: str) -> str:
    return job if job.startswith("projects/") else f"{target.parent}/jobs/{job}"


@click.group()
def jobs() -> None:
    """Create, inspect, pause, run and delete Cloud Scheduler jobs (like gcloud scheduler jobs)."""


def job_flags(required: bool) -> Callable[[F], F]:
    """The job settings shared by ``create-http`` (schedule and URI required) and ``update-http``."""
    options = [
        click.option("--schedule", required=required, help='Unix-cron schedule, e.g. "*/5 * * * *".'),
        click.option("--uri", required=required, help="URL the job requests."),
        click.option("--time-zone", help="IANA time zone of the schedule (default UTC)."),
        click.option("--http-method", help="POST (default), GET, PUT, PATCH, DELETE, HEAD or OPTIONS."),
        click.option("--message-body", help="Request body (POST, PUT and PATCH only)."),
        click.option("--description", help="At most 500 characters."),
        click.option("--oidc-service-account-email", help="Attach an OIDC token for this account."),
        click.option("--oidc-token-audience", help="The token's audience (default: the URI)."),
        click.option("--max-retry-attempts", type=click.IntRange(0, 5), help="Retries per fire, 0-5."),
        duration_flag("--min-backoff", "First retry delay (default 5s)."),
        duration_flag("--max-backoff", "Longest retry delay (default 1h)."),
        duration_flag("--max-retry-duration", "Retry time limit; 0s: unlimited (default)."),
        click.option("--max-doublings", type=click.IntRange(min=0), help="Times the retry delay doubles."),
        duration_flag("--attempt-deadline", "Deadline of each attempt, 15s to 30m (default 3m)."),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


#: Flag (as a Python name) -> (field path in the Job, how its value is written).
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "schedule": ("schedule", str),
    "time_zone": ("timeZone", str),
    "description": ("description", str),
    "uri": ("httpTarget.uri", str),
    "http_method": ("httpTarget.httpMethod", lambda value: str(value).upper()),
    "message_body": ("httpTarget.body", lambda value: base64.b64encode(str(value).encode()).decode("ascii")),
    "oidc_service_account_email": ("httpTarget.oidcToken.serviceAccountEmail", str),
    "oidc_token_audience": ("httpTarget.oidcToken.audience", str),
    "max_retry_attempts": ("retryConfig.retryCount", int),
    "min_backoff": ("retryConfig.minBackoffDuration", format_duration),
    "max_backoff": ("retryConfig.maxBackoffDuration", format_duration),
    "max_retry_duration": ("retryConfig.maxRetryDuration", format_duration),
    "max_doublings": ("retryConfig.maxDoublings", int),
    "attempt_deadline": ("attemptDeadline", format_duration),
}


def job_body(name: str, flags: dict[str, Any]) -> tuple[JsonObject, list[str]]:
    """The Job JSON for the flags given and the update-mask paths of the top-level fields they set."""
    body: JsonObject = {"name": name}
    paths: list[str] = []
    for flag, value in flags.items():
        if value is None:
            continue
        path, write = _FIELDS[flag]
        *parents, leaf = path.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = write(value)
        if path.split(".")[0] not in paths:
            paths.append(path.split(".")[0])
    return body, paths


def _merged(base: JsonObject, changes: JsonObject) -> JsonObject:
    """``base`` with ``changes`` written over it, nested objects merged the same way."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@jobs.command(name="create-http")
@click.argument("job")
@job_flags(required=True)
@api_command
def create_http(target: Target, job: str, **flags: Any) -> None:
    """Create JOB with an HTTP target (JOB: a short id or a full name); unset fields get the defaults."""
    body, _ = job_body(_job(target, job), flags)
    created = _client(target).call("POST", f"{target.parent}/jobs", body=body)
    click.echo(f"Created job [{short_id(created['name'])}].")


@jobs.command(name="update-http")
@click.argument("job")
@job_flags(required=False)
@api_command
def update_http(target: Target, job: str, **flags: Any) -> None:
    """Change the given settings of JOB; the target and retry settings are replaced as a whole."""
    name = _job(target, job)
    current = _client(target).call("GET", name)
    body, paths = job_body(name, flags)
    if not paths:
        raise click.UsageError("Give at least one setting to change, e.g. --schedule '0 * * * *'.")
    for message in ("httpTarget", "retryConfig"):
        if message in body:  # the other fields of the message stay as they are
            body[message] = _merged(current.get(message, {}), body[message])
    updated = _client(target).call("PATCH", name, params={"updateMask": ",".join(paths)}, body=body)
    click.echo(f"Updated job [{short_id(updated['name'])}].")


@jobs.command()
@click.argument("job")
@api_command
def describe(target: Target, job: str) -> None:
    """Print JOB as YAML, like gcloud scheduler jobs describe."""
    echo_yaml(_client(target).call("GET", _job(target, job)))


@jobs.command(name="list")
@api_command
def list_(target: Target) -> None:
    """List the jobs of the project and location."""
    rows = [
        (
            short_id(job["name"]),
            job.get("schedule", ""),
            job.get("timeZone", ""),
            job.get("state", ""),
            job.get("scheduleTime", ""),
            job.get("lastAttemptTime", ""),
        )
        for job in _client(target).list_all(f"{target.parent}/jobs", "jobs")
    ]
    echo_table(("ID", "SCHEDULE", "TIME_ZONE", "STATE", "NEXT_RUN", "LAST_ATTEMPT"), rows)


def _resolve(target: Target, job: str) -> tuple[RunnerClient, str]:
    return _client(target), _job(target, job)


verb_command(jobs, "job", _resolve, "pause", "Paused", "Pause JOB: it does not fire until resumed.")
verb_command(jobs, "job", _resolve, "resume", "Resumed", "Resume a paused JOB from its next scheduled fire.")
verb_command(jobs, "job", _resolve, "run", "Ran", "Fire JOB now, even if paused.")


@jobs.command()
@click.argument("job")
@api_command
def delete(target: Target, job: str) -> None:
    """Delete JOB and its attempt history."""
    name = _job(target, job)
    _client(target).call("DELETE", name)
    click.echo(f"Deleted job [{short_id(name)}].")
