"""The runner's test aids on the command line: attempts, replay, reset and wait-idle (``/runner/v1/``)."""

from __future__ import annotations

import click

from local_runner.cli.common import Target, api_command, echo_table, short_id
from local_runner.cli.tasks import queue_option

#: Where the runner's extensions live (local_runner/api/runner_ext.py).
EXTENSIONS = "runner/v1"


@click.command()
@click.argument("task")
@queue_option
@api_command
def attempts(target: Target, task: str, queue: str | None) -> None:
    """List TASK's attempts, kept after it ends (a runner extension)."""
    history = target.client.call("GET", f"{target.task(task, queue)}:attempts", api=EXTENSIONS)
    rows = [
        (
            number,
            attempt.get("dispatchTime", ""),
            attempt.get("responseTime", ""),
            attempt.get("httpStatus", "-"),
            attempt.get("responseStatus", {}).get("message", ""),
        )
        for number, attempt in enumerate(history.get("attempts", []), start=1)
    ]
    echo_table(("ATTEMPT", "DISPATCH_TIME", "RESPONSE_TIME", "HTTP_STATUS", "STATUS"), rows)


@click.command()
@click.argument("task")
@queue_option
@api_command
def replay(target: Target, task: str, queue: str | None) -> None:
    """Queue an exhausted TASK again with a fresh retry budget."""
    replayed = target.client.call("POST", f"{target.task(task, queue)}:replay", body={}, api=EXTENSIONS)
    click.echo(f"Replaying task [{replayed['name']}].")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@api_command
def reset(target: Target, yes: bool) -> None:
    """Delete every queue, task, tombstone and attempt of the runner."""
    if not yes:
        click.confirm(f"Delete everything on the runner at {target.client.endpoint}?", abort=True)
    target.client.call("POST", "reset", body={}, api=EXTENSIONS)
    click.echo("Reset the runner.")


@click.command(name="wait-idle")
@click.option("--queue", help="Only this queue: a short id or a full name (default: every queue).")
@click.option(
    "--timeout", type=click.FloatRange(0, 300), default=30.0, show_default=True, help="Seconds to wait."
)
@click.option("--within", type=click.FloatRange(0), help="Ignore tasks due later than this many seconds.")
@api_command
def wait_idle(target: Target, queue: str | None, timeout: float, within: float | None) -> None:
    """Return once nothing is in flight or due; exit 2 (DEADLINE_EXCEEDED) after the timeout."""
    body: dict[str, object] = {"timeout": f"{timeout:g}s"}
    if queue:
        body["queue"] = target.queue(queue)
    if within is not None:
        body["within"] = f"{within:g}s"
    target.client.call("POST", "waitIdle", body=body, api=EXTENSIONS)
    click.echo(f"Idle{f' ({short_id(target.queue(queue))})' if queue else ''}.")
