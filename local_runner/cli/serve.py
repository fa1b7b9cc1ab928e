"""``runner serve``: run the local Cloud Tasks runner until Ctrl-C.

The server and its dependencies (aiohttp, grpc, ...) are imported inside the command, so the other
commands and ``runner serve --help`` start without them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from local_runner.errors import RunnerError
from local_runner.log_format import LOG_FORMATS, JsonFormatter


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    callback=lambda ctx, param, value: _check_host_names(value),
    help="A Host name the API answers besides loopback names (repeatable); on another address than "
    "loopback, the names not given are then refused.",
)
@click.option(
    "--port", default=8123, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free)."
)
@click.option(
    "--data-dir",
    default=".runner",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the SQLite database and OIDC key live.",
)
@click.option("--in-memory", is_flag=True, help="Keep nothing on disk (overrides --data-dir).")
@click.option(
    "--project", default="local-project", show_default=True, help="Project of the queue file's short names."
)
@click.option(
    "--location", default="us-central1", show_default=True, help="Location of the queue file's short names."
)
@click.option(
    "--queues",
    "queues_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of queues, in the REST field names `gcloud tasks queues describe` prints.",
)
@click.option(
    "--jobs",
    "jobs_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of Cloud Scheduler jobs, as `gcloud scheduler jobs describe` prints them.",
)
@click.option(
    "--task-tombstone",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds a completed, deleted or exhausted task's name stays blocked.",
)
@click.option(
    "--no-test-aids", is_flag=True, help="Refuse the state-changing test aids (/runner/v1/reset, :replay)."
)
@click.option(
    "--max-connections-per-host",
    type=int,
    callback=lambda ctx, param, value: _check_connection_cap(value),
    help="Most requests in flight to one host:port [default: 256, less under a low `ulimit -n`].",
)
@click.option("--no-console", is_flag=True, help="Do not serve the developer console at /.")
@click.option(
    "--duplicate-deliveries",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    metavar="RATE",
    help="Fraction of attempts sent twice on purpose, to prove handlers idempotent (1: every attempt).",
)
@click.option(
    "--virtual-clock",
    type=click.FloatRange(0),
    metavar="EPOCH_SECONDS",
    help="Run on a virtual clock from this instant, moved by POST /runner/v1/clock:advance (a test aid).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every attempt and API detail at DEBUG level.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="json: one Cloud Logging JSON object per line, an attempt's with its trace and labels.",
)
def serve(
    host: str,
    allowed_hosts: tuple[str, ...],
    port: int,
    data_dir: Path,
    in_memory: bool,
    project: str,
    location: str,
    queues_file: Path | None,
    jobs_file: Path | None,
    task_tombstone: float,
    no_test_aids: bool,
    max_connections_per_host: int | None,
    no_console: bool,
    duplicate_deliveries: float,
    virtual_clock: float | None,
    verbose: bool,
    log_format: str,
) -> None:
    """Serve the Cloud Tasks API and dispatch tasks until Ctrl-C."""
    from local_runner.clock import VirtualClock
    from local_runner.collector import collect_less_often
    from local_runner.config import RunnerSettings
    from local_runner.server import RunnerServer

    collect_less_often()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    settings = RunnerSettings(
        host=host,
        allowed_hosts=allowed_hosts,
        port=port,
        data_dir=None if in_memory else data_dir,
        project=project,
        location=location,
        queues_file=queues_file,
        jobs_file=jobs_file,
        task_tombstone=task_tombstone,
        test_aids=not no_test_aids,
        max_connections_per_host=max_connections_per_host,
        console=not no_console,
        duplicate_deliveries=duplicate_deliveries,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # until the event loop handles it: as Ctrl-C
    try:
        server = RunnerServer(settings, None if virtual_clock is None else VirtualClock(virtual_clock))
        asyncio.run(server.run(stop_signals=(signal.SIGINT, signal.SIGTERM)))
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM before the event loop took them over
    except RunnerError as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror}") from error
    click.echo("stopped", err=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_connection_cap(value: int | None) -> int | None:
    """Refuse a cap the open-file limit cannot hold, naming the allowed range."""
    from local_runner.engine.slots import ConnectionLimitError, connection_limits
    from local_runner.http_client import open_file_limit

    if value is not None:
        try:
            connection_limits(open_file_limit(), value)
        except ConnectionLimitError as error:
            raise click.BadParameter(str(error)) from error
    return value


def _check_host_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse an ``--allowed-host`` that is no host name or IP address (a port or scheme, say)."""
    from local_runner.api.browser_guard import allowed_host_name
    from local_runner.config import ConfigError

    try:
        return tuple(allowed_host_name(name) for name in names)
    except ConfigError as error:
        raise click.BadParameter(str(error)) from error
