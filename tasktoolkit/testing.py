"""FakeQueue: the local runner's Cloud Tasks core in process, with a virtual clock and no server.

``FakeQueue(app)`` becomes the app's client, so ``handler.enqueue(...)`` and ``TasksClient`` calls land in
memory through the same code as in production. The calls are answered by the runner's own REST methods,
service, memory store and engine (``local_runner``'s pure core, no server), so every validation, message,
header, counter, backoff and stop rule is the runner's. :meth:`FakeQueue.run_until_idle` and
:meth:`FakeQueue.advance` deliver due tasks through ``app.test_client()`` with the request the runner
would send and an OIDC token that the app's verifier accepts, in virtual time. See ``docs/testing.md``.

:class:`FakeScheduler` (``fake.scheduler``) does the same for the app's ``@scheduled_handler`` jobs with the
runner's Cloud Scheduler core (``local_runner.cloud_scheduler``: cron and time zones, retries, headers), on
the same virtual clock: :meth:`FakeQueue.advance` fires each job when its fire time passes, interleaved with
the task deliveries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import functools
import json
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

import local_runner.cloud_scheduler.firing as firing
from local_runner.api.request import Call
from local_runner.api.rest import CloudTasksApi
from local_runner.api.task_inserts import DirectInserts
from local_runner.clock import VirtualClock
from local_runner.cloud_scheduler.model import Job, JobState, job_fields_from_json, job_from_fields
from local_runner.engine.attempts import Outcome, decide
from local_runner.engine.delivery import OutboundRequest, build_request, parse_retry_after
from local_runner.errors import ApiError
from local_runner.model import Attempt, Queue, QueueState, Task, TaskState, parse_queue_name
from local_runner.oidc import SigningKey, TokenIssuer
from local_runner.service import TasksService
from local_runner.store.memory import MemoryTaskStore
from tasktoolkit.client import TasksClient, error_from_answer
from tasktoolkit.config import (
    ALLOWED_SERVICE_ACCOUNTS,
    BASE_URL,
    LOCATION,
    PROJECT,
    SERVICE_ACCOUNT,
    config_strings,
    token_audience,
    token_service_account,
)
from tasktoolkit.enqueue import install_client
from tasktoolkit.errors import ConfigurationError, TaskToolkitError
from tasktoolkit.extension import TaskToolkit
from tasktoolkit.handler import EXCEPTION_SINK_KEY
from tasktoolkit.job_spec import declared_jobs
from tasktoolkit.job_sync import SyncSettings, desired_job
from tasktoolkit.taskspec import TaskNameParts

__all__ = ["AttemptRecord", "Delivery", "FakeQueue", "FakeQueueError", "FakeScheduler", "FakeTask", "Fire"]

#: The ``iss`` of the fake's tokens; the app's verifier trusts it once the fake is installed.
ISSUER = "https://fake-cloud-tasks.tasktoolkit.invalid"
QUEUED, SUCCEEDED, EXHAUSTED, DELETED = "QUEUED", "SUCCEEDED", "EXHAUSTED", "DELETED"


class FakeQueueError(TaskToolkitError):
    """Raised when the fake cannot do what a test asked (e.g. it never becomes idle)."""


@functools.cache
def _signing_key() -> SigningKey:
    """A process-wide RS256 key (generating one takes tens of milliseconds)."""
    return SigningKey.generate()


def _datetime(instant: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(instant, dt.UTC)


@dataclass(eq=False)
class FakeTask(TaskNameParts):
    """A task the fake holds: a view of the core's task (what was created, how its delivery went so far)."""

    name: str
    #: Creation order among the fake's tasks.
    seq: int
    #: The core's task as last stored (``local_runner.model.Task``).
    core: Task = field(repr=False)
    #: ``QUEUED``, ``SUCCEEDED``, ``EXHAUSTED`` or ``DELETED``.
    state: str = QUEUED

    def update(self, task: Task) -> None:
        """Takes the core's newer state of the task (counts, schedule time, QUEUED or EXHAUSTED)."""
        self.core = task
        self.state = EXHAUSTED if task.state is TaskState.EXHAUSTED else QUEUED

    @property
    def url(self) -> str:
        """The URL as created (sent percent-encoded)."""
        return self.core.http_request.url

    @property
    def method(self) -> str:
        """``POST``, ``GET``, ..."""
        return self.core.http_request.http_method.name

    @property
    def headers(self) -> dict[str, str]:
        """The headers stored with the task (``User-Agent`` included, as the service stores it)."""
        return dict(self.core.http_request.headers)

    @property
    def body(self) -> bytes:
        """The body."""
        return self.core.http_request.body

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None

    @property
    def schedule_time(self) -> dt.datetime:
        """When the next attempt is due (or was, for a task no longer queued)."""
        return _datetime(self.core.schedule_time)

    @property
    def create_time(self) -> dt.datetime:
        """When the task was created."""
        return _datetime(self.core.create_time)

    @property
    def dispatch_deadline(self) -> dt.timedelta:
        """How long an attempt may take."""
        return dt.timedelta(seconds=self.core.dispatch_deadline)

    @property
    def service_account(self) -> str | None:
        """The email whose OIDC token is sent, if any."""
        oidc = self.core.http_request.oidc_token
        return oidc.service_account_email if oidc else None

    @property
    def audience(self) -> str | None:
        """The token's audience, if set (else the URL is the audience)."""
        oidc = self.core.http_request.oidc_token
        return (oidc.audience or None) if oidc else None

    @property
    def dispatch_count(self) -> int:
        """Attempts made (``X-CloudTasks-TaskRetryCount`` is one less)."""
        return self.core.dispatch_count

    @property
    def response_count(self) -> int:
        """Attempts that got a response."""
        return self.core.response_count

    @property
    def execution_count(self) -> int:
        """Responses other than 5xx (``X-CloudTasks-TaskExecutionCount``)."""
        return self.core.execution_count

    @property
    def previous_response(self) -> int | None:
        """The status of the last attempt (``X-CloudTasks-TaskPreviousResponse``)."""
        return self.core.previous_response

    @property
    def first_attempt_time(self) -> dt.datetime | None:
        """When the first attempt was dispatched."""
        first = self.core.first_attempt
        return _datetime(first.dispatch_time) if first else None


@dataclass(frozen=True)
class AttemptRecord:
    """One finished attempt of a task, as the runner's attempt history shows it."""

    schedule_time: dt.datetime
    dispatch_time: dt.datetime
    response_time: dt.datetime | None
    #: The handler's HTTP status (``None`` if no response came).
    http_status: int | None
    #: google.rpc code and message of the outcome (0, ``"OK"`` on success).
    code: int
    message: str
    #: Whether the attempt was delivered twice on purpose (``duplicate_deliveries``); the first answer counts.
    duplicated: bool = False
    #: The app's answer to the duplicate.
    duplicate_http_status: int | None = None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptRecord:
        """The record of a core ``Attempt``."""
        status = attempt.response_status
        return cls(
            _datetime(attempt.schedule_time),
            _datetime(attempt.dispatch_time),
            None if attempt.response_time is None else _datetime(attempt.response_time),
            attempt.http_status,
            status.code if status else 0,
            status.message if status else "",
            attempt.duplicated,
            attempt.duplicate_http_status,
        )


@dataclass(frozen=True, kw_only=True)
class _Exchange:
    """A request the fake sent to the app, and the app's answer (a :class:`Delivery` or a :class:`Fire`)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    status: int
    response_body: bytes
    response_headers: Mapping[str, str] = field(default_factory=dict)
    exception: BaseException | None = None
    #: True for a deliberate second request (:meth:`FakeQueue.redeliver`, :meth:`FakeScheduler.refire`,
    #: ``duplicate_deliveries``).
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        """Whether the app answered 2xx."""
        return 200 <= self.status <= 299

    @property
    def response_json(self) -> Any:
        """The answer's body parsed as JSON (``None`` if it is not JSON)."""
        try:
            return json.loads(self.response_body) if self.response_body else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Delivery(_Exchange):
    """One request the fake sent to the app for a task, and the answer."""

    task: FakeTask
    time: dt.datetime
    retry_after_s: float | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Fire(_Exchange):
    """One request the fake scheduler sent to the app for a job, and the answer."""

    job_id: str
    #: The fire time being attempted (``X-CloudScheduler-ScheduleTime``).
    schedule_time: dt.datetime
    #: When it was sent (virtual time).
    time: dt.datetime


@dataclass(frozen=True)
class _Sent:
    """The app's answer to one request."""

    status: int
    body: bytes
    headers: dict[str, str]
    exception: BaseException | None
    retry_after_s: float | None


class _Step(enum.Enum):
    """What one step of :meth:`FakeQueue.run_until_idle` or :meth:`FakeQueue.advance` makes."""

    TASK = "task"
    FIRE = "fire"


class _Limits:
    """The safety limits of one ``run_until_idle`` or ``advance``: task deliveries and fires, apart."""

    def __init__(self, max_deliveries: int, max_fires: int) -> None:
        self._left = {_Step.TASK: max_deliveries, _Step.FIRE: max_fires}
        self._max = dict(self._left)

    def count(self, step: _Step, busy: str) -> None:
        """Counts a step about to be made; past its limit, raises :class:`FakeQueueError` headed ``busy``."""
        self._left[step] -= 1
        if self._left[step] >= 0:
            return
        if step is _Step.TASK:
            raise FakeQueueError(
                f"{busy} after {self._max[step]} deliveries (max_deliveries); a task keeps failing?"
            )
        raise FakeQueueError(f"{busy} after {self._max[step]} job fires (max_fires)")


def _finish(result: Any) -> Any:
    """The value of a REST method: as is, or from a coroutine that completes without waiting."""
    if not isinstance(result, Coroutine):
        return result
    try:
        result.send(None)
    except StopIteration as done:
        return done.value
    result.close()
    raise FakeQueueError("a REST method waited for an event loop")  # pragma: no cover - DirectInserts


class FakeQueue(TasksClient):
    """The runner's Cloud Tasks core in memory, delivering into a Flask app in virtual time.

    It is a :class:`~tasktoolkit.client.TasksClient` whose requests never leave the process: they are
    answered by the local runner's REST methods over its memory store, with the runner's (and the
    service's) rules and messages. Rate limits and dispatch deadlines are not simulated: due tasks are
    delivered one at a time, in schedule order.

    Args:
        app: The app to install into (see :meth:`install`); deliveries go to it.
        project: Project id of the fake's queues.
        location: Location id of the fake's queues.
        start: Virtual time at start (aware; default: now).
        raise_errors: Re-raise an exception that a task function raised, after recording the delivery.
        duplicate_deliveries: Deliver every attempt twice, to prove handlers idempotent.
        auto_create_queues: Create a missing queue with default settings on first use (the real service
            answers NOT_FOUND).
        tombstone: How long a task name stays taken after the task ends (Cloud Tasks: about an hour).
        max_deliveries: Safety limit of task deliveries (attempts) per :meth:`run_until_idle` or
            :meth:`advance`, which stops a task that fails forever; job fires do not count.
        max_fires: Safety limit of Cloud Scheduler fires (attempts, retries included) per call; the default
            lets an every-minute job run 69 days (30 days are 43,200 fires).
        scheduler_service_account: The email of the fake scheduler's tokens (default:
            ``TASKTOOLKIT_SERVICE_ACCOUNT``, else the first of ``TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS``).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        project: str = "test-project",
        location: str = "us-central1",
        start: dt.datetime | None = None,
        raise_errors: bool = True,
        duplicate_deliveries: bool = False,
        auto_create_queues: bool = True,
        tombstone: dt.timedelta = dt.timedelta(hours=1),
        max_deliveries: int = 10_000,
        max_fires: int = 100_000,
        scheduler_service_account: str | None = None,
    ) -> None:
        self._clock = VirtualClock((start or dt.datetime.now(dt.UTC)).timestamp())
        super().__init__(project, location, clock=lambda: self.now, transport=self._serve)
        self.app = app
        self.raise_errors = raise_errors
        self.duplicate_deliveries = duplicate_deliveries
        self.auto_create_queues = auto_create_queues
        self.max_deliveries = max_deliveries
        self.max_fires = max_fires
        #: Every task ever created, in creation order.
        self.created: list[FakeTask] = []
        #: Every request sent to the app, in order.
        self.deliveries: list[Delivery] = []
        self._store = MemoryTaskStore()
        self._service = TasksService(self._store, self._clock, task_tombstone=tombstone.total_seconds())
        self._service.listener = self
        self._api = CloudTasksApi(self._service, DirectInserts(self._service))
        #: Mints tokens in virtual time (one issuer per fake: its token cache follows this fake's clock).
        self._issuer = TokenIssuer(_signing_key(), ISSUER)
        #: Tasks not ended, by name: QUEUED ones and EXHAUSTED ones (kept for :meth:`replay`).
        self._live: dict[str, FakeTask] = {}
        #: Tasks claimed by RunTask, delivered when the call returns.
        self._run_now: list[Task] = []
        self._lock = threading.RLock()
        #: The app's Cloud Scheduler jobs on this fake's clock (loaded by :meth:`install`).
        self.scheduler = FakeScheduler(self, scheduler_service_account)
        if app is not None:
            self.install(app)

    # -- set-up -----------------------------------------------------------------------------------

    def install(self, app: Flask) -> FakeQueue:
        """Makes this fake the app's client and the target of deliveries, and lets its tokens in.

        Call it after ``TaskToolkit(app)`` (re-initializing the toolkit drops the trust). From then on
        the app's dedup store and token verifier read the fake's virtual clock, so stored results, leases
        and tokens expire in virtual time. The app's ``@scheduled_handler`` jobs are loaded into
        :attr:`scheduler`, enabled from now (unless declared paused). Sets ``TASKTOOLKIT_BASE_URL``,
        ``_PROJECT`` and ``_LOCATION`` only where the app has none.
        """
        self.app = app
        install_client(app, self)
        app.config.setdefault(BASE_URL, "http://localhost")
        app.config.setdefault(PROJECT, self.project)
        app.config.setdefault(LOCATION, self.location)
        with contextlib.suppress(ConfigurationError):  # without TaskToolkit, plain routes need no token
            state = TaskToolkit.state(app)
            state.verifier.trust_issuer(ISSUER, self._issuer.certs_document())
            state.verifier.token_clock = self._clock.now
            state.store.clock = self._clock.now
        self.scheduler.load()
        return self

    # -- time -------------------------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        """The virtual time (aware, UTC)."""
        return _datetime(self._clock.now())

    @now.setter
    def now(self, instant: dt.datetime) -> None:
        self._clock.set(instant.timestamp())

    def run_until_idle(self) -> list[Delivery]:
        """Delivers every due task, and retries failed ones until they succeed or run out of retries.

        The clock moves forward only to the retries' times (anything falling due by then is delivered
        too); tasks scheduled later stay pending until :meth:`advance`. Jobs due now (after
        :meth:`FakeScheduler.run_job`) fire, and their retries are made; their next scheduled fires wait
        for :meth:`advance`.

        Returns:
            The deliveries made.

        Raises:
            FakeQueueError: Still busy after ``max_deliveries`` task deliveries or ``max_fires`` fires.
        """
        start = len(self.deliveries)
        limits = _Limits(self.max_deliveries, self.max_fires)
        while True:
            if self._step(self.now, limits, "not idle"):
                continue
            retry = next((t for t in self._due_order() if t.dispatch_count > 0), None)
            retries = [retry.schedule_time.timestamp()] if retry is not None else []
            retries.extend(self.scheduler.retry_times())
            if not retries:
                return self.deliveries[start:]
            self._clock.set(max(self._clock.now(), min(retries)))

    def advance(self, delta: dt.timedelta | None = None, **kwargs: float) -> list[Delivery]:
        """Moves the clock forward, delivering every task and retry that falls due on the way, in order.

        Jobs of :attr:`scheduler` fire at their fire times on the way, between the task deliveries (see
        ``scheduler.fires``).

        Args:
            delta: How far.
            **kwargs: Or, added to it, ``timedelta`` arguments such as ``hours=24``.

        Returns:
            The task deliveries made.
        """
        span = (delta or dt.timedelta()) + dt.timedelta(**kwargs)
        if span < dt.timedelta(0):
            raise FakeQueueError(f"advance cannot go back in time, got {span}")
        end = self.now + span
        start = len(self.deliveries)
        limits = _Limits(self.max_deliveries, self.max_fires)
        while self._step(end, limits, "still busy"):
            pass
        self._clock.set(end.timestamp())
        return self.deliveries[start:]

    def _step(self, until: dt.datetime, limits: _Limits, busy: str) -> bool:
        """Makes the earliest task delivery or job fire due by ``until`` (at its time); False if none.

        Raises:
            FakeQueueError: That step is one more than ``limits`` allow (``busy`` heads the message).
        """
        task = self._next(until)
        job = self.scheduler.next_due(until.timestamp())
        if task is None and job is None:
            return False
        fire_at = job.schedule_time if job is not None else None
        task_at = task.schedule_time.timestamp() if task is not None else None
        if job is not None and fire_at is not None and (task_at is None or fire_at < task_at):
            limits.count(_Step.FIRE, busy)
            self._clock.set(max(self._clock.now(), fire_at))
            self.scheduler.attempt(job.name)
            return True
        assert task is not None
        limits.count(_Step.TASK, busy)
        self._clock.set(max(self._clock.now(), task.schedule_time.timestamp()))
        self._attempt(task)
        return True

    # -- inspection -------------------------------------------------------------------------------

    def pending(self, queue: str | None = None) -> list[FakeTask]:
        """Tasks still to be delivered (or retried), in schedule order."""
        with self._lock:
            tasks = [t for t in self._live.values() if t.state == QUEUED and queue in (None, t.queue)]
        return sorted(tasks, key=lambda t: (t.schedule_time, t.seq))

    def exhausted(self, queue: str | None = None) -> list[FakeTask]:
        """Tasks whose retries ran out (kept, and replayable with :meth:`replay`)."""
        return [t for t in self.created if t.state == EXHAUSTED and queue in (None, t.queue)]

    def task(self, name: str) -> FakeTask:
        """The task with this full name or short id (the latest one, if the id was reused)."""
        for task in reversed(self.created):
            if name in (task.name, task.id):
                return task
        raise KeyError(name)

    def deliveries_of(self, task: FakeTask | str) -> list[Delivery]:
        """The deliveries of one task (a :class:`FakeTask`, full name or id)."""
        target = task if isinstance(task, FakeTask) else self.task(task)
        return [d for d in self.deliveries if d.task is target]

    def attempts(self, task: FakeTask | str) -> list[AttemptRecord]:
        """The task's finished attempts, oldest first, as the runner's attempt history keeps them."""
        target = task if isinstance(task, FakeTask) else self.task(task)
        with self._lock:
            return [AttemptRecord.of(attempt) for attempt in self._store.attempts(target.name)]

    # -- actions ----------------------------------------------------------------------------------

    def run_task(self, queue: str, task_id: str) -> Delivery:
        """RunTask: delivers the task now, even on a paused queue and before its schedule time.

        Raises:
            ResourceNotFound: No such task (or its retries ran out).
            FakeQueueError: The task is already being delivered.
        """
        start = len(self.deliveries)
        self._call("POST", f"{self.task_path(queue, task_id)}:run", body={}, queue=queue)
        self._deliver_run_now()
        if len(self.deliveries) == start:
            raise FakeQueueError(f"{task_id} is being delivered already; RunTask does not send it twice")
        return self.deliveries[start]

    def replay(self, task: FakeTask | str) -> FakeTask:
        """Queues a task whose retries ran out again, due now, with a fresh retry budget."""
        target = task if isinstance(task, FakeTask) else self.task(task)
        with self._lock:
            try:
                self._service.replay_task(target.name)
            except ApiError as error:
                raise _client_error(error) from None
            self._sync()
        return target

    def redeliver(self, task: FakeTask | str) -> Delivery:
        """Sends the task's last request again, unchanged (a duplicate delivery, as Cloud Tasks may make)."""
        previous = self.deliveries_of(task)
        if not previous:
            raise FakeQueueError(f"{task!r} was never delivered")
        last = previous[-1]
        return self._record(self._send(last.task, last.method, last.url, dict(last.headers), last.body, True))

    # -- the service's listener -------------------------------------------------------------------

    def queue_changed(self, queue_name: str) -> None:
        """Nothing to wake: deliveries happen in :meth:`run_until_idle` and :meth:`advance`."""

    def queue_deleted(self, queue_name: str) -> None:
        """Nothing to forget: the fake keeps no pacing."""

    def run_now(self, task: Task) -> None:
        """A task claimed by RunTask: delivered once the call returns."""
        self._run_now.append(task)

    # -- delivery ---------------------------------------------------------------------------------

    def _due_order(self) -> list[FakeTask]:
        with self._lock:
            running = {q.name for q in self._store.list_queues(None) if q.state is QueueState.RUNNING}
            tasks = [t for t in self._live.values() if t.state == QUEUED and t.queue_path in running]
        return sorted(tasks, key=lambda t: (t.schedule_time, t.seq))

    def _next(self, until: dt.datetime) -> FakeTask | None:
        return next((t for t in self._due_order() if t.schedule_time <= until), None)

    def _attempt(self, task: FakeTask) -> None:
        with self._lock:
            claimed = self._store.claim_task(task.name, self._clock.now())
        if claimed is not None:
            self._deliver(claimed)

    def _deliver_run_now(self) -> None:
        while self._run_now:
            self._deliver(self._run_now.pop(0))

    def _deliver(self, claimed: Task) -> None:
        """One attempt: the runner's request, sent to the app, its outcome decided by the runner's engine."""
        now = self._clock.now()
        with self._lock:
            record = self._live[claimed.name]
            record.update(claimed)
            queue = self._store.get_queue(claimed.queue_name) or Queue(claimed.queue_name)
        request = build_request(claimed, queue, self._issuer.mint, now)
        headers = dict(request.headers)
        delivery = self._send(record, request.method, request.url, headers, request.body, False)
        duplicate = None
        if self.duplicate_deliveries:  # the same request again, as the runner's duplicate-delivery mode
            duplicate = self._send(record, request.method, request.url, headers, request.body, True)
        outcome = Outcome(now, http_status=delivery.status, retry_after=delivery.retry_after_s)
        finished = decide(claimed, outcome, queue.retry_config, tombstone=self._service.task_tombstone)
        if duplicate is not None:
            finished = finished.duplicated(duplicate.status)
        with self._lock:
            if self._store.finish_attempts([finished])[0]:
                record.update(finished.task)
                if finished.deletes:
                    record.state = SUCCEEDED
                    del self._live[record.name]
        self.deliveries.append(delivery)
        if duplicate is not None:
            self.deliveries.append(duplicate)
        for sent in (delivery, duplicate):
            if sent is not None and sent.exception is not None and self.raise_errors:
                raise sent.exception

    def _open(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> _Sent:
        """Sends one request to the app through its test client, now (virtual time)."""
        if self.app is None:
            raise FakeQueueError(
                "FakeQueue has no app to deliver to: pass FakeQueue(app) or call install(app)"
            )
        parts = urlsplit(url)
        raised: list[BaseException] = []
        try:
            response = self.app.test_client().open(
                parts.path or "/",
                base_url=f"{parts.scheme}://{parts.netloc}",
                query_string=parts.query,
                method=method,
                headers=dict(headers),
                data=body,
                environ_overrides={EXCEPTION_SINK_KEY: raised},
            )
        except Exception as exc:  # an unhandled error in a plain route, with PROPAGATE_EXCEPTIONS on
            return _Sent(500, b"", {}, exc, None)
        return _Sent(
            response.status_code,
            response.get_data(),
            dict(response.headers.items()),
            raised[0] if raised else None,
            parse_retry_after(response.headers.get("Retry-After"), self._clock.now()),
        )

    def _send(
        self, task: FakeTask, method: str, url: str, headers: dict[str, str], body: bytes, duplicate: bool
    ) -> Delivery:
        now = self.now
        sent = self._open(method, url, headers, body)
        return Delivery(
            task,
            now,
            sent.retry_after_s,
            method=method,
            url=url,
            headers=headers,
            body=body,
            status=sent.status,
            response_body=sent.body,
            response_headers=sent.headers,
            exception=sent.exception,
            duplicate=duplicate,
        )

    def _record(self, delivery: Delivery) -> Delivery:
        self.deliveries.append(delivery)
        if delivery.exception is not None and self.raise_errors:
            raise delivery.exception
        return delivery

    # -- the in-memory REST API -------------------------------------------------------------------

    def _serve(
        self, method: str, path: str, *, params: Mapping[str, str] | None, body: Any, idempotent: bool
    ) -> dict[str, Any]:
        """One REST call, answered by the runner's REST methods (errors as the client's typed errors)."""
        match = self._api.router.match(method, path)
        if match is None:
            raise error_from_answer(404, {"error": {"status": "NOT_FOUND", "message": f"no method {path}"}})
        call = Call(params=match.params, query=dict(params or {}), body=json.loads(json.dumps(body or {})))
        with self._lock:
            try:
                if self.auto_create_queues and not (method == "DELETE" and "/tasks/" not in path):
                    self._create_missing_queue(match.params)
                result: dict[str, Any] = _finish(match.route.handler(call))
            except ApiError as error:
                raise _client_error(error) from None
            if match.route.handler == self._api.create_task:
                self._created(result["name"])
            elif method != "GET":
                self._sync()
        return result

    def _create_missing_queue(self, params: Mapping[str, str]) -> None:
        path = params.get("name") or params.get("parent") or ""
        name = path.partition("/tasks")[0]
        if "/queues/" not in name or self._store.get_queue(name) is not None:
            return
        queue = Queue(str(parse_queue_name(name)))
        self._service.create_queue(parse_queue_name(name).parent, queue)

    def _created(self, name: str) -> None:
        task = self._store.get_task(name)
        if task is not None:
            record = FakeTask(task.name, len(self.created), task)
            self.created.append(record)
            self._live[name] = record

    def _sync(self) -> None:
        """Brings the records up to date after a call that may delete, purge, run or replay tasks."""
        for name, record in list(self._live.items()):
            stored = self._store.get_task(name)
            if stored is None or stored.uid != record.core.uid:
                if record.state == QUEUED:
                    record.state = DELETED
                del self._live[name]
            elif stored.state is not TaskState.DISPATCHING:
                record.update(stored)


def _client_error(error: ApiError) -> TaskToolkitError:
    """The client's typed error for the core's refusal, as it would come over HTTP."""
    payload = {"error": {"status": error.code.name, "message": error.message}}
    return error_from_answer(error.code.http_status, payload)


class FakeScheduler:
    """The app's Cloud Scheduler jobs, fired into the app on a :class:`FakeQueue`'s virtual clock.

    Each job is what the app declares with ``@scheduled_handler`` (``declared_jobs(app)``), checked with
    the runner's (and the service's) rules; fire times, retries, the one-execution-at-a-time rule and the
    request (headers, OIDC token) come from the runner's Cloud Scheduler core. Requests go through
    ``app.test_client()``. Made by the fake queue: use ``fake.scheduler``.
    """

    def __init__(self, fake: FakeQueue, service_account: str | None = None) -> None:
        self._fake = fake
        self._service_account = service_account
        #: Jobs by full name (``projects/P/locations/L/jobs/J``).
        self._jobs: dict[str, Job] = {}
        #: Every request sent to the app, in order.
        self.fires: list[Fire] = []

    # -- set-up -----------------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)reads the app's declared jobs: new ones are enabled from now, changed ones start over.

        Raises:
            ConfigurationError: A declared job is one the service would refuse (the message says why).
        """
        fake, app = self._fake, self._fake.app
        if app is None:
            return
        declared = declared_jobs(app)
        settings = self._sync_settings(app) if declared else None
        now = fake._clock.now()
        jobs: dict[str, Job] = {}
        for job_declared in declared:
            assert settings is not None
            document = desired_job(job_declared, settings)  # what `flask tasktoolkit sync-jobs` creates
            name = document.pop("name")
            try:
                job = job_from_fields(name, job_fields_from_json(document))
            except ApiError as error:
                raise ConfigurationError(f"job {job_declared.job_id!r}: {error.message}") from None
            existing = self._jobs.get(name)
            if existing is not None and _stateless(existing) == _stateless(job):
                jobs[name] = existing
            else:
                jobs[name] = firing.paused(job) if job_declared.spec.paused else firing.enabled(job, now)
        self._jobs = jobs

    def _sync_settings(self, app: Flask) -> SyncSettings:
        """Where the jobs are and whose token they send: the app's config, as ``sync-jobs`` reads it."""
        allowed = config_strings(app.config, ALLOWED_SERVICE_ACCOUNTS, split=True)
        account = self._service_account or token_service_account(app.config) or next(iter(allowed), None)
        if account is None:
            raise ConfigurationError(
                f"the fake scheduler needs the service account of its tokens: set {SERVICE_ACCOUNT} or "
                f"{ALLOWED_SERVICE_ACCOUNTS}, or pass FakeQueue(scheduler_service_account=...)"
            )
        base = str(app.config.get(BASE_URL) or "http://localhost").rstrip("/")
        return SyncSettings(
            self._fake.project, self._fake.location, base, account, token_audience(app.config)
        )

    # -- inspection -------------------------------------------------------------------------------

    @property
    def job_ids(self) -> list[str]:
        """The ids of the jobs, sorted."""
        return sorted(job.job_id for job in self._jobs.values())

    def next_fire(self, job_id: str) -> dt.datetime | None:
        """When the job's next attempt is due (a fire, or a retry); ``None`` while paused."""
        job = self._job(job_id)
        return None if job.schedule_time is None else _datetime(job.schedule_time)

    def state(self, job_id: str) -> str:
        """``ENABLED`` or ``PAUSED``."""
        return self._job(job_id).state.name

    def fires_of(self, job_id: str) -> list[Fire]:
        """The requests sent for one job."""
        return [fire for fire in self.fires if fire.job_id == job_id]

    # -- actions ----------------------------------------------------------------------------------

    def run_job(self, job_id: str) -> Fire:
        """RunJob: fires the job now, paused or not, as a new execution whose schedule time is now.

        A failure is retried by :meth:`FakeQueue.run_until_idle` or :meth:`FakeQueue.advance` as the job's
        retry settings say.
        """
        job = self._job(job_id)
        self._jobs[job.name] = firing.forced(job, self._fake._clock.now())
        return self.attempt(job.name)

    def refire(self, fire: Fire) -> Fire:
        """Sends a fire's request again, unchanged (a duplicate fire, as Cloud Scheduler may make)."""
        request = OutboundRequest(fire.method, fire.url, fire.headers, fire.body)
        return self._record(self._send(fire.job_id, fire.schedule_time, request, True))

    def pause(self, job_id: str) -> None:
        """PauseJob: no fire until resumed; a retry being waited for is dropped."""
        job = self._job(job_id)
        self._jobs[job.name] = firing.paused(job)

    def resume(self, job_id: str) -> None:
        """ResumeJob: the next fire is the schedule's first after now (missed fires are not made up)."""
        job = self._job(job_id)
        self._jobs[job.name] = firing.enabled(job, self._fake._clock.now())

    # -- what the fake queue drives ---------------------------------------------------------------

    def next_due(self, until: float) -> Job | None:
        """The job whose attempt is due first, at or before ``until``."""
        due = [
            job
            for job in self._jobs.values()
            if job.schedule_time is not None
            and job.schedule_time <= until
            and firing.is_due(job, job.schedule_time)
        ]
        return min(due, key=lambda job: (job.schedule_time or 0.0, job.name), default=None)

    def retry_times(self) -> list[float]:
        """When the retries being waited for are due (executions with a failed attempt)."""
        return [
            job.schedule_time
            for job in self._jobs.values()
            if job.schedule_time is not None and job.execution is not None and job.execution.attempts > 0
        ]

    def attempt(self, name: str) -> Fire:
        """One attempt of the job, now: the runner's request, sent to the app, its outcome applied."""
        now = self._fake._clock.now()
        job = firing.start_attempt(self._jobs[name], now)
        request = firing.build_request(job, self._fake._issuer, now)
        fire_time = _datetime(job.execution.fire_time if job.execution else now)
        fire = self._send(job.job_id, fire_time, request, False)
        duplicate = None
        if self._fake.duplicate_deliveries:
            duplicate = self._send(job.job_id, fire_time, request, True)
        finished, _ = firing.finish_attempt(job, Outcome(now, http_status=fire.status), now)
        self._jobs[name] = finished
        self._record(fire)
        if duplicate is not None:
            self._record(duplicate)
        return fire

    # -- internals --------------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job:
        for job in self._jobs.values():
            if job.job_id == job_id:
                return job
        raise KeyError(f"no job {job_id!r}; the app declares {self.job_ids}")

    def _send(
        self, job_id: str, schedule_time: dt.datetime, request: OutboundRequest, duplicate: bool
    ) -> Fire:
        now = self._fake.now
        sent = self._fake._open(request.method, request.url, request.headers, request.body)
        return Fire(
            job_id,
            schedule_time,
            now,
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            body=request.body,
            status=sent.status,
            response_body=sent.body,
            response_headers=sent.headers,
            exception=sent.exception,
            duplicate=duplicate,
        )

    def _record(self, fire: Fire) -> Fire:
        self.fires.append(fire)
        if fire.exception is not None and self._fake.raise_errors:
            raise fire.exception
        return fire


def _stateless(job: Job) -> Job:
    """``job`` without its state: what :meth:`FakeScheduler.load` compares."""
    return job.replace(
        state=JobState.ENABLED, schedule_time=None, last_attempt_time=None, status=None, execution=None
    )
