"""Wires store, service, scheduler, dispatcher, OIDC issuer and the REST and gRPC APIs onto one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from local_runner import oidc
from local_runner.api import browser_guard, views
from local_runner.api.grpc_front import GrpcFront
from local_runner.api.lean_http import LeanHttp
from local_runner.api.one_port import OnePortServer
from local_runner.clock import Clock, SystemClock
from local_runner.cloud_scheduler.jobs_file import load_jobs_file
from local_runner.cloud_scheduler.runtime import CloudScheduler
from local_runner.config import RunnerSettings, load_queue_file
from local_runner.console import Console
from local_runner.dispatch import Dispatcher
from local_runner.engine.duplicates import DuplicateDeliveries
from local_runner.engine.slots import connection_limits
from local_runner.http_client import open_file_limit
from local_runner.oidc import SigningKey, TokenIssuer
from local_runner.scheduler import Scheduler
from local_runner.service import TasksService
from local_runner.store import DataDirLock, open_store

log = logging.getLogger("local_runner")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RunnerServer:
    """A local Cloud Tasks: the REST API and the dispatcher on one asyncio loop.

    Use :meth:`run` from a CLI (blocks until cancelled) or :meth:`start`/:meth:`stop` to run it on a
    background thread, as tests do.
    """

    def __init__(self, settings: RunnerSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        #: The ``Host`` names the API answers (checked first: a bad ``--allowed-host`` holds nothing open).
        self.hosts = browser_guard.HostCheck(settings.host, settings.allowed_hosts)
        queue_specs = (
            load_queue_file(settings.queues_file, settings.parent) if settings.queues_file is not None else []
        )
        self.duplicates = DuplicateDeliveries(
            settings.duplicate_deliveries,
            {s.queue.name: s.duplicate_deliveries for s in queue_specs if s.duplicate_deliveries is not None},
        )
        job_specs = load_jobs_file(settings.jobs_file, settings.parent) if settings.jobs_file else []
        # One runner per data directory: a second one would re-queue this one's attempts in flight.
        data_dir = settings.data_dir
        self._data_dir_lock = DataDirLock.acquire(data_dir) if data_dir is not None else None
        # Set-up that fails past this point must not leave the directory locked for this process.
        opened: list[Callable[[], None]] = []
        try:
            self.store = open_store(settings.data_dir)
            opened.append(self.store.close)
            self.service = TasksService(
                self.store,
                self.clock,
                task_tombstone=settings.task_tombstone,
                queue_tombstone=settings.queue_tombstone,
            )
            self.service.location_id = settings.location
            self.cloud_scheduler = CloudScheduler(self.store, self.clock, job_specs)
            opened.append(self.cloud_scheduler.store.close)
            for spec in queue_specs:
                queue = self.service.upsert_queue(spec.queue)
                if spec.state is not None and spec.state is not queue.state:
                    self.store.put_queue(queue.replace(state=spec.state))
            self.signing_key = (
                SigningKey.load_or_create(settings.data_dir)
                if settings.data_dir is not None
                else SigningKey.generate()
            )
            limits = connection_limits(open_file_limit(), settings.max_connections_per_host)
            self.dispatcher = Dispatcher(self.clock, limits)
        except BaseException:
            self._close_stores(*reversed(opened))
            raise
        self.issuer: TokenIssuer | None = None
        self.scheduler: Scheduler | None = None
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._port: OnePortServer | None = None
        self._lean: LeanHttp | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    # -- asyncio lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Bind the port, then start dispatching (on the running loop)."""
        hosts = self.hosts
        app = web.Application(
            client_max_size=views.MAX_REQUEST_BYTES, middlewares=[browser_guard.middleware(hosts)]
        )
        app.router.add_get(oidc.CERTS_PATH, self._issuer_view(TokenIssuer.certs_document))
        app.router.add_get(oidc.JWKS_PATH, self._issuer_view(TokenIssuer.jwks_document))
        app.router.add_get(oidc.DISCOVERY_PATH, self._issuer_view(TokenIssuer.openid_configuration))
        api_router = views.register(app, self.service, self.settings.test_aids)
        scheduler_router = self.cloud_scheduler.register(app, api_router)
        console = Console(self.service, self.settings.test_aids) if self.settings.console else None
        if console is not None:
            console.register(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        # REST and gRPC on one port; plain REST calls without aiohttp's objects (api/lean_http.py)
        self._lean = LeanHttp(self._runner.server, api_router, hosts)
        self._port = OnePortServer(self._lean, GrpcFront(api_router, scheduler_router))
        try:
            port = await self._port.start(self.settings.host, self.settings.port)
        except BaseException:
            await self._runner.cleanup()
            raise
        host = self.settings.host if self.settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
        self.base_url = f"http://{host}:{port}"
        self.issuer = TokenIssuer(self.signing_key, self.base_url)
        await self.dispatcher.start()
        self.scheduler = Scheduler(self.service, self.dispatcher, self.issuer, self.clock, self.duplicates)
        if console is not None:
            console.attach(self.scheduler)
        await self.scheduler.start()
        await self.cloud_scheduler.start(self.dispatcher, self.issuer)
        if not hosts.loopback_bind:
            log.warning(
                "listening on %s: anyone who can reach this address can create and run tasks%s",
                self.settings.host,
                f" (Host names answered: {', '.join(sorted(hosts.allowed))}, localhost and IP addresses)"
                if hosts.enforced
                else ", and every Host name is answered, so a web page can reach it by DNS rebinding: "
                "name the runner's host names with --allowed-host",
            )
        log.info(
            "local Cloud Tasks runner on %s (data: %s; at most %d connections per host, %d in all)",
            self.base_url,
            self.settings.data_dir or "memory",
            self.dispatcher.limits.per_origin,
            self.dispatcher.limits.total,
        )
        if console is not None:
            log.info("developer console on %s/", self.base_url)

    def _issuer_view(self, document: Callable[[TokenIssuer], object]) -> Handler:
        async def view(request: web.Request) -> web.Response:
            if self.issuer is None:
                raise web.HTTPServiceUnavailable()
            return web.json_response(document(self.issuer), headers={"Cache-Control": "public, max-age=3600"})

        return view

    async def close(self) -> None:
        """Stop dispatching, close the API and the store; attempts cut short are re-run after restart."""
        grace = self.settings.shutdown_grace
        stopping = [self.cloud_scheduler.stop(grace)]  # job attempts in flight get the same grace
        if self.scheduler is not None:
            if self.scheduler.in_flight:
                log.info(
                    "stopping: waiting up to %gs for %d attempt(s) in flight", grace, self.scheduler.in_flight
                )
            stopping.append(self.scheduler.stop(grace))
        await asyncio.gather(*stopping)
        if self._port is not None:
            await self._port.close()
        if self._lean is not None:
            await self._lean.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.dispatcher.close()
        self._close_stores(self.store.close)

    def _close_stores(self, *closers: Callable[[], None]) -> None:
        """Run ``closers`` (store ``close`` methods), then release the data directory whatever they raise."""
        try:
            for close in closers:
                close()
        finally:
            if self._data_dir_lock is not None:
                self._data_dir_lock.release()

    def _close_after_failed_open(self) -> None:
        """Free what ``__init__`` took when :meth:`open` fails: the stores and the data directory lock."""
        self._close_stores(self.cloud_scheduler.store.close, self.store.close)

    async def run(self, stop_signals: Sequence[signal.Signals] = ()) -> None:
        """Serve until cancelled or one of ``stop_signals`` arrives, then close cleanly.

        The CLI stops on SIGINT (Ctrl-C) and SIGTERM (``docker stop``, systemd) alike: no new attempt
        starts, attempts in flight get ``shutdown_grace`` seconds and their outcomes are stored.
        """
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in stop_signals:
            loop.add_signal_handler(signum, _stop_on, signum, stop)
        try:
            try:
                await self.open()
            except BaseException:
                self._close_after_failed_open()
                raise
            try:
                await stop.wait()
            finally:
                await self.close()
        finally:
            for signum in stop_signals:
                loop.remove_signal_handler(signum)

    # -- background-thread lifecycle (tests, embedding) ------------------------------------------

    def start(self) -> RunnerServer:
        """Run on a background thread; returns once the port is bound and dispatch has started."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopped = asyncio.Event()
            try:
                loop.run_until_complete(self.open())
            except BaseException as error:
                failure.append(error)
                try:
                    self._close_after_failed_open()
                finally:
                    ready.set()
                    loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stopped.wait())
                loop.run_until_complete(self.close())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="local-runner", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background thread started by :meth:`start`."""
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> RunnerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_on(signum: signal.Signals, stop: asyncio.Event) -> None:
    if not stop.is_set():
        log.info("%s received: stopping", signum.name)
        stop.set()
