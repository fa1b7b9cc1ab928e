"""The Cloud Scheduler twin as the server wires it: store, service, REST routes and fire loop."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from local_runner.api.routing import Router
from local_runner.clock import Clock
from local_runner.cloud_scheduler import api
from local_runner.cloud_scheduler.jobs_file import JobSpec
from local_runner.cloud_scheduler.loop import JobLoop
from local_runner.cloud_scheduler.service import JobsService
from local_runner.cloud_scheduler.store import open_job_store
from local_runner.dispatch import Dispatcher
from local_runner.oidc import TokenIssuer
from local_runner.store import TaskStore


class CloudScheduler:
    """Jobs kept beside the tasks, served under ``/v1/`` and fired on the runner's clock."""

    def __init__(self, tasks: TaskStore, clock: Clock, specs: Sequence[JobSpec] = ()) -> None:
        self.store = open_job_store(tasks)
        self.service = JobsService(self.store, clock)
        for spec in specs:
            self.service.upsert_job(spec.job, spec.state)
        self.clock = clock
        self._loop: JobLoop | None = None

    def register(self, app: web.Application, locations: Router | None = None) -> Router:
        """Add the REST v1 routes (Locations from the Cloud Tasks router ``locations``); returns their router.

        The gRPC front answers from that router, too.
        """
        return api.register(app, self.service, locations)

    async def start(self, dispatcher: Dispatcher, issuer: TokenIssuer) -> None:
        """Start firing jobs (on the running loop)."""
        self._loop = JobLoop(self.service, dispatcher, issuer, self.clock)
        await self._loop.start()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop firing, give attempts in flight ``grace`` seconds, then close the store."""
        if self._loop is not None:
            await self._loop.stop(grace)
        self.store.close()
