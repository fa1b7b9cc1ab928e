"""``runner jobs ...``: manage Cloud Scheduler jobs through the REST API, like ``gcloud scheduler jobs``."""

from __future__ import annotations

import base64

import click

from local_runner.cli_client import JsonObject, RunnerClient
from local_runner.cli_common import Target, api_command, duration_flag, echo_table, echo_yaml, short_id
from local_runner.codec import format_duration


def _client(target: Target) -> RunnerClient:
    return RunnerClient(target.client.endpoint, "v1")


def _job(target: Target, job: str) -> str:
    return job if job.startswith("projects/") else f"{target.parent}/jobs/{job}"


@click.group()
def jobs() -> None:
    """Create, inspect, pause, run and delete Cloud Scheduler jobs (like gcloud scheduler jobs)."""


@jobs.command(name="create-http")
@click.argument("job")
@click.option("--schedule", required=True, help='Unix-cron schedule, e.g. "*/5 * * * *".')
@click.option("--uri", required=True, help="URL the job requests.")
@click.option("--time-zone", default="", help="IANA time zone of the schedule (default UTC).")
@click.option("--http-method", default="POST", show_default=True, help="POST, GET, PUT, PATCH, DELETE...")
@click.option("--message-body", default=None, help="Request body (POST, PUT and PATCH only).")
@click.option("--oidc-service-account-email", default=None, help="Attach an OIDC token for this account.")
@click.option("--oidc-token-audience", default=None, help="The token's audience (default: the URI).")
@click.option("--max-retry-attempts", type=click.IntRange(0, 5), default=None, help="Retries per fire, 0-5.")
@duration_flag("--attempt-deadline", "Deadline of each attempt, 15s to 30m (default 3m).")
@api_command
def create_http(target: Target, job: str, **flags: object) -> None:
    """Create JOB with an HTTP target (JOB: a short id or a full name)."""
    http: JsonObject = {"uri": flags["uri"], "httpMethod": str(flags["http_method"]).upper()}
    if flags["message_body"] is not None:
        http["body"] = base64.b64encode(str(flags["message_body"]).encode()).decode("ascii")
    if flags["oidc_service_account_email"]:
        token: JsonObject = {"serviceAccountEmail": flags["oidc_service_account_email"]}
        if flags["oidc_token_audience"]:
            token["audience"] = flags["oidc_token_audience"]
        http["oidcToken"] = token
    body: JsonObject = {"name": _job(target, job), "schedule": flags["schedule"], "httpTarget": http}
    if flags["time_zone"]:
        body["timeZone"] = flags["time_zone"]
    if flags["max_retry_attempts"] is not None:
        body["retryConfig"] = {"retryCount": flags["max_retry_attempts"]}
    if isinstance(flags["attempt_deadline"], float):
        body["attemptDeadline"] = format_duration(flags["attempt_deadline"])
    created = _client(target).call("POST", f"{target.parent}/jobs", body=body)
    click.echo(f"Created job [{short_id(created['name'])}].")


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


def _job_verb(verb: str, done: str, doc: str) -> None:
    """Register a command that POSTs ``{job}:{verb}`` and prints ``<done> job [id].``."""

    @jobs.command(name=verb, help=doc)
    @click.argument("job")
    @api_command
    def command(target: Target, job: str) -> None:
        name = _job(target, job)
        _client(target).call("POST", f"{name}:{verb}", body={})
        click.echo(f"{done} job [{short_id(name)}].")


_job_verb("pause", "Paused", "Pause JOB: it does not fire until resumed.")
_job_verb("resume", "Resumed", "Resume a paused JOB from its next scheduled fire.")
_job_verb("run", "Ran", "Fire JOB now, even if paused.")


@jobs.command()
@click.argument("job")
@api_command
def delete(target: Target, job: str) -> None:
    """Delete JOB and its attempt history."""
    name = _job(target, job)
    _client(target).call("DELETE", name)
    click.echo(f"Deleted job [{short_id(name)}].")
