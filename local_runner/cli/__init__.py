"""``runner``: the local Cloud Tasks runner's command line.

The management commands speak HTTP to a running runner and never import the server; only the body of
``runner serve`` does (see :mod:`local_runner.cli.serve`).
"""

from __future__ import annotations

import sys

import click

from local_runner.cli.jobs import jobs
from local_runner.cli.queues import queues
from local_runner.cli.serve import serve
from local_runner.cli.tasks import tasks
from local_runner.cli.test_aids import attempts, replay, reset, wait_idle


@click.group()
@click.version_option(package_name="tasktoolkit")
def main() -> None:
    """A local Google Cloud Tasks: the REST v2 API and faithful dispatch, persisted in SQLite."""


main.add_command(serve)
main.add_command(queues)
main.add_command(tasks)
main.add_command(jobs)
tasks.add_command(attempts)
tasks.add_command(replay)
main.add_command(reset)
main.add_command(wait_idle)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
