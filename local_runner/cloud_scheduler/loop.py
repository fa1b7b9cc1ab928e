"""The fire loop: sleeps until the next job is due on the runner's clock, then sends its attempt."""

from __future__ import annotations

import asyncio
import logging

from local_runner.clock import Clock
from local_runner.cloud_scheduler import firing
from local_runner.cloud_scheduler.service import JobsService
from local_runner.dispatch import Dispatcher
from local_runner.errors import StoreError
from local_runner.grace import finish_or_cancel
from local_runner.oidc import TokenIssuer

log = logging.getLogger("local_runner.cloud_scheduler")
#: Seconds a job waits after its attempt could not be made or recorded (store or record errors).
REST_AFTER_ERROR = 1.0


class JobLoop:
    """Fires due jobs through the runner's :class:`~local_runner.dispatch.Dispatcher`.

    One attempt per job at a time: Cloud Scheduler "will never allow two simultaneously outstanding
    executions" (job.proto ``schedule``).
    """

    def __init__(
        self, service: JobsService, dispatcher: Dispatcher, issuer: TokenIssuer, clock: Clock
    ) -> None:
        self.service = service
        self.dispatcher = dispatcher
        self.issuer = issuer
        self.clock = clock
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        #: Jobs whose last attempt could not be made or recorded, and until when they wait.
        self._resting: dict[str, float] = {}
        self._main: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        service.on_change = lambda: self._wake_from(loop)

    def _wake_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the loop from any thread."""
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        """Start firing (on the running loop)."""
        self._main = asyncio.ensure_future(self._run())

    async def stop(self, grace: float = 0.0) -> None:
        """Stop firing, give attempts in flight ``grace`` seconds to be answered and recorded, then cancel.

        An attempt cancelled here was stored as started: its fire is attempted again after a restart.
        """
        self.service.on_change = lambda: None
        if self._main is not None:
            self._main.cancel()  # no new fire from here on
            await asyncio.gather(self._main, return_exceptions=True)
        await finish_or_cancel(self._in_flight.values(), grace)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            deadline = self._fire_due()
            await self.clock.sleep_until(deadline, self._wake)

    def _fire_due(self) -> float | None:
        """Start every due job's attempt; the earliest next attempt time of the others."""
        now = self.clock.now()
        try:
            jobs = self.service.store.list_jobs()
        except StoreError as error:
            log.error("cannot read jobs: %s", error)
            return now + 1.0
        earliest: float | None = None
        for job in jobs:
            if job.name in self._in_flight or job.schedule_time is None:
                continue
            at = max(job.schedule_time, self._resting.get(job.name, 0.0))
            if at <= now and firing.is_due(job, now):
                self._resting.pop(job.name, None)
                self._in_flight[job.name] = asyncio.ensure_future(self._attempt(job.name, now))
            elif firing.is_due(job, job.schedule_time):
                earliest = at if earliest is None else min(earliest, at)
        return earliest

    async def _attempt(self, name: str, now: float) -> None:
        try:
            job = self.service.store.get_job(name)  # as it is now: an API call may have changed it
            if job is None or not firing.is_due(job, now):
                return
            job = firing.start_attempt(job, now)
            self.service.store.put_job(job)
            request = firing.build_request(job, self.issuer, now)
            outcome = await self.dispatcher.send(request, job.attempt_deadline)
            current = self.service.store.get_job(job.name)
            if current is None:
                return  # deleted while in flight
            # Paused or updated meanwhile: the outcome is kept, the current settings decide what next.
            # An execution with no attempt yet is a RunJob made meanwhile: it comes next.
            forced = current.execution if current.execution and current.execution.attempts == 0 else None
            current = current.replace(execution=job.execution, last_attempt_time=now)
            finished, attempt = firing.finish_attempt(current, outcome, outcome.response_time)
            if forced is not None:
                finished = finished.replace(execution=forced, schedule_time=forced.fire_time)
            self.service.store.put_job(finished)
            self.service.store.add_attempt(job.name, attempt)
            log.info(
                "job %s: %s %s -> %s",
                job.job_id,
                request.method,
                request.url,
                outcome.http_status or outcome.detail,
            )
        except Exception as error:  # a broken store or record: try again later, not in a busy loop
            log.error("job %s: attempt not made or not recorded: %s", name, error)
            self._resting[name] = now + REST_AFTER_ERROR
        finally:
            self._in_flight.pop(name, None)
            self._wake.set()
