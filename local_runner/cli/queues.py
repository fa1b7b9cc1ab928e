"""``runner queues ...``: manage queues through the REST API, like ``gcloud tasks queues``."""

from __future__ import annotations

from typing import Any

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

#: Flag (as a Python name) -> (message, field, is a duration) of the Queue it sets.
QUEUE_FLAGS: dict[str, tuple[str, str, bool]] = {
    "max_dispatches_per_second": ("rateLimits", "maxDispatchesPerSecond", False),
    "max_concurrent_dispatches": ("rateLimits", "maxConcurrentDispatches", False),
    "max_attempts": ("retryConfig", "maxAttempts", False),
    "min_backoff": ("retryConfig", "minBackoff", True),
    "max_backoff": ("retryConfig", "maxBackoff", True),
    "max_retry_duration": ("retryConfig", "maxRetryDuration", True),
    "max_doublings": ("retryConfig", "maxDoublings", False),
}


def queue_flags(func: Any) -> Any:
    """The queue settings shared by ``create`` and ``update``."""
    options = [
        click.option("--max-dispatches-per-second", type=click.FloatRange(min=0), help="Rate limit."),
        click.option("--max-concurrent-dispatches", type=click.IntRange(min=0), help="Attempts in flight."),
        click.option("--max-attempts", type=click.IntRange(min=-1), help="Attempts per task; -1: unlimited."),
        duration_flag("--min-backoff", "First retry delay, e.g. 0.1s."),
        duration_flag("--max-backoff", "Longest retry delay, e.g. 1h."),
        duration_flag("--max-retry-duration", "Retry time limit; 0s: unlimited."),
        click.option("--max-doublings", type=click.IntRange(min=0), help="Times the retry delay doubles."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def queue_body(name: str, settings: dict[str, Any]) -> tuple[JsonObject, list[str]]:
    """The Queue JSON for the given flags and the update-mask paths of the fields set."""
    body: JsonObject = {"name": name}
    paths: list[str] = []
    for flag, value in settings.items():
        if value is None:
            continue
        message, field, is_duration = QUEUE_FLAGS[flag]
        body.setdefault(message, {})[field] = format_duration(value) if is_duration else value
        paths.append(f"{message}.{field}")
    return body, paths


@click.group()
def queues() -> None:
    """Create, inspect and change queues (like gcloud tasks queues)."""


@queues.command()
@click.argument("queue")
@queue_flags
@api_command
def create(target: Target, queue: str, **settings: Any) -> None:
    """Create QUEUE (a short id or a full name); unset fields get the real defaults."""
    body, _ = queue_body(target.queue(queue), settings)
    created = target.client.call("POST", f"{target.parent}/queues", body=body)
    click.echo(f"Created queue [{short_id(created['name'])}].")


@queues.command()
@click.argument("queue")
@queue_flags
@api_command
def update(target: Target, queue: str, **settings: Any) -> None:
    """Change only the given settings of an existing QUEUE."""
    body, paths = queue_body(target.queue(queue), settings)
    if not paths:
        raise click.UsageError("Give at least one setting to change, e.g. --max-dispatches-per-second 5.")
    target.client.call("GET", body["name"])  # the API would create a missing queue; gcloud refuses
    updated = target.client.call("PATCH", body["name"], params={"updateMask": ",".join(paths)}, body=body)
    click.echo(f"Updated queue [{short_id(updated['name'])}].")


@queues.command()
@click.argument("queue")
@api_command
def describe(target: Target, queue: str) -> None:
    """Print QUEUE as YAML, like gcloud tasks queues describe."""
    echo_yaml(target.client.call("GET", target.queue(queue)))


@queues.command(name="list")
@click.option("--page-size", type=click.IntRange(1, 9800), help="Queues per API call (all pages are read).")
@api_command
def list_(target: Target, page_size: int | None) -> None:
    """List the queues of the project and location."""
    params = {"pageSize": page_size} if page_size else {}
    rows = [
        (
            short_id(queue["name"]),
            queue.get("state", "STATE_UNSPECIFIED"),
            queue.get("rateLimits", {}).get("maxConcurrentDispatches", ""),
            queue.get("rateLimits", {}).get("maxDispatchesPerSecond", ""),
            _attempts(queue.get("retryConfig", {}).get("maxAttempts")),
        )
        for queue in target.client.list_all(f"{target.parent}/queues", "queues", params)
    ]
    echo_table(("QUEUE_NAME", "STATE", "MAX_NUM_OF_TASKS", "MAX_RATE (/sec)", "MAX_ATTEMPTS"), rows)


def _attempts(value: object) -> object:
    return "unlimited" if value == -1 else ("" if value is None else value)


def _resolve(target: Target, queue: str) -> tuple[RunnerClient, str]:
    return target.client, target.queue(queue)


_PAUSE_DOC = "Pause QUEUE: it keeps accepting tasks but dispatches none."
verb_command(queues, "queue", _resolve, "pause", "Paused", _PAUSE_DOC)
verb_command(queues, "queue", _resolve, "resume", "Resumed", "Resume a paused QUEUE.")
verb_command(queues, "queue", _resolve, "purge", "Purged", "Delete every task created in QUEUE so far.")


@queues.command()
@click.argument("queue")
@api_command
def delete(target: Target, queue: str) -> None:
    """Delete QUEUE and its tasks."""
    name = target.queue(queue)
    target.client.call("DELETE", name)
    click.echo(f"Deleted queue [{short_id(name)}].")
