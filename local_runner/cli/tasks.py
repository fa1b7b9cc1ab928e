"""``runner tasks ...``: list, inspect, create, run and delete tasks through the REST API."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import click

from local_runner.cli.client import JsonObject
from local_runner.cli.common import (
    Target,
    api_command,
    duration_flag,
    echo_table,
    echo_yaml,
    short_id,
    timestamp_option,
)
from local_runner.codec.scalars import format_duration, format_timestamp

#: google.rpc.Code names, for the LAST_ATTEMPT_STATUS column.
RPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
HTTP_METHODS = ("POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")

queue_option = click.option("--queue", help="Queue of the task: a short id or a full name.")
view_option = click.option(
    "--response-view",
    type=click.Choice(["basic", "full"], case_sensitive=False),
    default="basic",
    show_default=True,
    help="full: include the body (base64).",
)


@click.group()
def tasks() -> None:
    """List, inspect, create, run and delete tasks (like gcloud tasks)."""


@tasks.command(name="list")
@click.argument("queue")
@click.option("--page-size", type=click.IntRange(1, 1000), help="Tasks per API call (all pages are read).")
@click.option("--exhausted", is_flag=True, help="Also list tasks whose retries ran out (a runner extension).")
@api_command
def list_(target: Target, queue: str, page_size: int | None, exhausted: bool) -> None:
    """List the tasks of QUEUE."""
    params: dict[str, str | int] = {"pageSize": page_size} if page_size else {}
    if exhausted:
        params["exhausted"] = "true"
    rows = [
        (
            short_id(task["name"]),
            task.get("scheduleTime", ""),
            task.get("dispatchCount", 0),
            task.get("responseCount", 0),
            last_attempt_status(task),
        )
        for task in target.client.list_all(
            f"{target.queue(queue)}/tasks", "tasks", params, api="runner/v1" if exhausted else None
        )
    ]
    headers = ("TASK_NAME", "SCHEDULE_TIME", "DISPATCH_COUNT", "RESPONSE_COUNT", "LAST_ATTEMPT_STATUS")
    echo_table(headers, rows)


def last_attempt_status(task: JsonObject) -> str:
    """The canonical code of the last attempt's outcome, or ``Unknown`` before any attempt."""
    status = task.get("lastAttempt", {}).get("responseStatus")
    if not isinstance(status, dict):
        return "Unknown"
    code = status.get("code", 0)
    return RPC_CODES[code] if isinstance(code, int) and 0 <= code < len(RPC_CODES) else str(code)


@tasks.command()
@click.argument("task")
@queue_option
@view_option
@api_command
def describe(target: Target, task: str, queue: str | None, response_view: str) -> None:
    """Print TASK as YAML, like gcloud tasks describe."""
    name = target.task(task, queue)
    echo_yaml(target.client.call("GET", name, params={"responseView": response_view.upper()}))


@tasks.command()
@click.option("--queue", required=True, help="Queue of the task: a short id or a full name.")
@click.option("--url", required=True, help="Where the task is sent (http or https).")
@click.option(
    "--method",
    type=click.Choice(HTTP_METHODS, case_sensitive=False),
    default="POST",
    show_default=True,
    help="HTTP method.",
)
@click.option("--header", "headers", multiple=True, metavar="KEY:VALUE", help="A header; repeatable.")
@click.option("--body-content", help="The body, as text (UTF-8).")
@click.option(
    "--body-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="The body, from a file."
)
@click.option(
    "--schedule-time", metavar="TIMESTAMP", callback=timestamp_option, help="When to send it (RFC 3339)."
)
@duration_flag("--delay", "Send it this long from now, e.g. 30s.")
@click.option("--task-id", help="Name the task (names in use or recently used are refused).")
@click.option("--oidc-service-account-email", help="Send an OIDC token for this service account.")
@click.option("--oidc-token-audience", help="Audience of the OIDC token (default: the URL).")
@duration_flag("--dispatch-deadline", "How long an attempt may take (15s to 30m).")
@api_command
def create(
    target: Target,
    queue: str,
    url: str,
    method: str,
    headers: tuple[str, ...],
    body_content: str | None,
    body_file: Path | None,
    schedule_time: float | None,
    delay: float | None,
    task_id: str | None,
    oidc_service_account_email: str | None,
    oidc_token_audience: str | None,
    dispatch_deadline: float | None,
) -> None:
    """Create an HTTP task in the queue."""
    if body_content is not None and body_file is not None:
        raise click.UsageError("--body-content and --body-file cannot be used together.")
    if schedule_time is not None and delay is not None:
        raise click.UsageError("--schedule-time and --delay cannot be used together.")
    if oidc_token_audience and not oidc_service_account_email:
        raise click.UsageError("--oidc-token-audience needs --oidc-service-account-email.")
    request: JsonObject = {"url": url, "httpMethod": method.upper()}
    if headers:
        request["headers"] = parse_headers(headers)
    body = body_file.read_bytes() if body_file is not None else (body_content or "").encode()
    if body:
        request["body"] = base64.b64encode(body).decode("ascii")
    if oidc_service_account_email:
        request["oidcToken"] = {"serviceAccountEmail": oidc_service_account_email}
        if oidc_token_audience:
            request["oidcToken"]["audience"] = oidc_token_audience
    parent = target.queue(queue)
    task: JsonObject = {"httpRequest": request}
    if task_id:
        task["name"] = f"{parent}/tasks/{task_id}"
    if delay is not None:
        schedule_time = time.time() + delay
    if schedule_time is not None:
        task["scheduleTime"] = format_timestamp(schedule_time)
    if dispatch_deadline is not None:
        task["dispatchDeadline"] = format_duration(dispatch_deadline)
    created = target.client.call("POST", f"{parent}/tasks", body={"task": task})
    click.echo(f"Created task [{created['name']}].")


def parse_headers(values: tuple[str, ...]) -> dict[str, str]:
    """``KEY:VALUE`` strings as a dict (later values win)."""
    headers: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition(":")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY:VALUE.", param_hint="'--header'")
        headers[key.strip()] = text.strip()
    return headers


@tasks.command()
@click.argument("task")
@queue_option
@api_command
def run(target: Target, task: str, queue: str | None) -> None:
    """Send TASK now, even if its queue is paused or rate limited."""
    ran = target.client.call("POST", f"{target.task(task, queue)}:run", body={})
    click.echo(f"Running task [{ran['name']}].")


@tasks.command()
@click.argument("task")
@queue_option
@api_command
def delete(target: Target, task: str, queue: str | None) -> None:
    """Delete TASK."""
    name = target.task(task, queue)
    target.client.call("DELETE", name)
    click.echo(f"Deleted task [{name}].")
