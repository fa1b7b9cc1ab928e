"""What the management commands share: connection options, resource names, value types, output."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import yaml

from local_runner.cli.client import ClientError, JsonObject, RunnerClient, default_endpoint
from local_runner.codec.scalars import MAX_DURATION_SECONDS, parse_timestamp
from local_runner.errors import InvalidArgument

F = TypeVar("F", bound=Callable[..., Any])

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class CliError(click.ClickException):
    """A failed API call: one ``ERROR:`` line on stderr and exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        """Print ``ERROR: <message>`` to stderr."""
        click.echo(f"ERROR: {self.format_message()}", err=True)


def parse_duration(text: str) -> float:
    """Seconds in a gcloud-style duration (``10s``, ``0.1s``, ``5m``, ``1h30m``, ``2d``, or bare seconds).

    Raises:
        ValueError: not such a duration.
    """
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", text):
        seconds = float(text)
    elif text and _DURATION_PART.sub("", text) == "":
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    else:
        raise ValueError(text)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(text)
    return seconds


def duration_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback: a ``--flag DURATION`` value in seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration like 10s, 0.1s, 5m, 1h or 2d.") from None


def timestamp_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback: a ``--flag TIMESTAMP`` value (RFC 3339) in epoch seconds."""
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except InvalidArgument:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time like 2030-01-02T03:04:05Z.") from None


def duration_flag(name: str, help_text: str) -> Callable[[F], F]:
    """A ``--name DURATION`` option whose value reaches the command in seconds."""
    return click.option(name, metavar="DURATION", callback=duration_option, help=help_text)


@dataclass(frozen=True)
class Target:
    """The runner to call and where short queue ids live."""

    client: RunnerClient
    project: str
    location: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"

    def queue(self, queue: str) -> str:
        """The full name of a queue given as a short id or a full name."""
        return queue if queue.startswith("projects/") else f"{self.parent}/queues/{queue}"

    def task(self, task: str, queue: str | None) -> str:
        """The full name of a task given as a full name, or as a short id with its queue."""
        if task.startswith("projects/"):
            return task
        if not queue:
            raise click.UsageError("Missing option '--queue' (needed unless TASK is a full task name).")
        return f"{self.queue(queue)}/tasks/{task}"


def api_command(func: F) -> F:
    """Add ``--endpoint``, ``--project`` and ``--location``; pass a :class:`Target` as ``target``.

    A :class:`~local_runner.cli.client.ClientError` in the command becomes a :class:`CliError`.
    """

    @click.option(
        "--endpoint",
        default=default_endpoint,
        show_default="http://$CLOUD_TASKS_EMULATOR_HOST, else http://127.0.0.1:8123",
        help="URL of the runner.",
    )
    @click.option("--project", default="local-project", show_default=True, help="Project of short ids.")
    @click.option("--location", default="us-central1", show_default=True, help="Location of short ids.")
    @functools.wraps(func)
    def wrapper(endpoint: str, project: str, location: str, **kwargs: Any) -> Any:
        try:
            return func(target=Target(RunnerClient(endpoint), project, location), **kwargs)
        except ClientError as error:
            raise CliError(str(error)) from None

    return wrapper  # type: ignore[return-value]


def verb_command(
    group: click.Group,
    kind: str,
    resolve: Callable[[Target, str], tuple[RunnerClient, str]],
    verb: str,
    done: str,
    doc: str,
) -> None:
    """Register ``group verb ID``: POSTs ``{name}:{verb}`` and prints ``<done> <kind> [id].``.

    ``resolve`` turns the target and the id (short or full) into the client to call and the full name.
    """

    @group.command(name=verb, help=doc)
    @click.argument("resource", metavar=kind.upper())
    @api_command
    def command(target: Target, resource: str) -> None:
        client, name = resolve(target, resource)
        client.call("POST", f"{name}:{verb}", body={})
        click.echo(f"{done} {kind} [{short_id(name)}].")


def short_id(name: str) -> str:
    """The last segment of a resource name."""
    return name.rpartition("/")[2]


def echo_yaml(document: JsonObject) -> None:
    """Print a resource as YAML with sorted keys, like ``gcloud ... describe``."""
    click.echo(yaml.safe_dump(document, sort_keys=True, default_flow_style=False).rstrip("\n"))


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a left-aligned table like gcloud's, or ``Listed 0 items.`` on stderr if it is empty."""
    cells = [[str(value) for value in row] for row in rows]
    if not cells:
        click.echo("Listed 0 items.", err=True)
        return
    widths = [max(len(row[i]) for row in [list(headers), *cells]) for i in range(len(headers))]
    for row in [list(headers), *cells]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
