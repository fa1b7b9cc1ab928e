"""``flask tasktoolkit ...``: the toolkit's Flask CLI commands (registered by ``TaskToolkit.init_app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup

from tasktoolkit.errors import TaskToolkitError

if TYPE_CHECKING:
    from tasktoolkit.job_sync import JobChange

cli_group = AppGroup("tasktoolkit", help="tasktoolkit commands for this app.")


@cli_group.command("sync-jobs", short_help="Reconcile Cloud Scheduler with the jobs this app declares.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--no-prune",
    is_flag=True,
    help="Keep the managed jobs that no route declares any more (default: delete).",
)
@click.option(
    "--prune-all",
    is_flag=True,
    help="Prune even when the app declares no jobs at all (deletes every job it manages).",
)
def sync_jobs_command(dry_run: bool, no_prune: bool, prune_all: bool) -> None:
    """Create, update and delete the Cloud Scheduler jobs this app declares (only the jobs it manages)."""
    from tasktoolkit.job_sync import sync_jobs

    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def show(change: JobChange) -> None:
        click.echo(change.describe())

    try:
        plan = sync_jobs(
            app, dry_run=dry_run, prune=not no_prune, prune_all=prune_all, report=None if dry_run else show
        )
    except TaskToolkitError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in plan.lines()[0 if dry_run else len(plan.changes) :]:  # changes made were shown as made
        click.echo(line)
    done = "planned (dry run: nothing changed)" if dry_run else "made"
    click.echo(f"{len(plan.changes)} change(s) {done}, {len(plan.unchanged)} job(s) unchanged.")
    if dry_run and plan.conflicts:
        raise click.ClickException(f"{len(plan.conflicts)} conflict(s): sync-jobs would change nothing")
