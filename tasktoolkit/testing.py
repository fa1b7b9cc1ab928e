"""FakeQueue: an in-memory Cloud Tasks for unit tests, with a virtual clock and no server.

``FakeQueue(app)`` becomes the app's client, so ``handler.enqueue(...)`` and ``TasksClient`` calls land in
memory through the same code as in production. :meth:`FakeQueue.run_until_idle` and
:meth:`FakeQueue.advance` deliver due tasks through ``app.test_client()`` with the real ``X-CloudTasks-*``
headers and an OIDC token that the app's verifier accepts, and retry failures with the queue's backoff in
virtual time. See ``docs/testing.md``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Flask
from google.auth import crypt, jwt

from tasktoolkit import headers as h
from tasktoolkit.client import TasksClient, error_from_answer
from tasktoolkit.enqueue import BASE_URL, LOCATION, PROJECT, install_client
from tasktoolkit.errors import ConfigurationError, TaskToolkitError
from tasktoolkit.extension import TaskToolkit
from tasktoolkit.handler import EXCEPTION_SINK_KEY
from tasktoolkit.taskspec import (
    BODY_METHODS,
    TaskNameParts,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
)

__all__ = ["Delivery", "FakeQueue", "FakeQueueError", "FakeTask"]

#: The ``iss`` of the fake's tokens; the app's verifier trusts it once the fake is installed.
ISSUER = "https://fake-cloud-tasks.tasktoolkit.invalid"
USER_AGENT = "Google-Cloud-Tasks"
QUEUED, SUCCEEDED, EXHAUSTED, DELETED = "QUEUED", "SUCCEEDED", "EXHAUSTED", "DELETED"
MAX_SCHEDULE_AHEAD = dt.timedelta(days=30)
TASK_RETENTION = dt.timedelta(days=31)
MAX_TASK_BYTES = 1024 * 1024
DEFAULT_DEADLINE = dt.timedelta(minutes=10)
DEFAULT_RATE_LIMITS: Mapping[str, Any] = {
    "maxDispatchesPerSecond": 500.0,
    "maxBurstSize": 100,
    "maxConcurrentDispatches": 1000,
}
DEFAULT_RETRY: Mapping[str, Any] = {
    "maxAttempts": 100,
    "minBackoff": "0.100s",
    "maxBackoff": "3600s",
    "maxDoublings": 16,
}
_ROUTE = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/queues"
    r"(?:/(?P<queue>[^/:]+)(?::(?P<verb>pause|resume|purge))?(?:/tasks(?:/(?P<task>[^/]+))?(?P<tasks>)?)?)?"
)
_COMPUTED = ("user-agent", "x-cloudtasks-", "authorization")


class FakeQueueError(TaskToolkitError):
    """Raised when the fake cannot do what a test asked (e.g. it never becomes idle)."""


def _fail(status: str, message: str, http_status: int) -> Exception:
    return error_from_answer(http_status, {"error": {"status": status, "message": message}})


@functools.cache
def _signing_key() -> tuple[Any, Mapping[str, str]]:
    """A process-wide RS256 key: the signer and its ``{kid: public key PEM}``."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as exc:  # pragma: no cover - cryptography ships with the testing extra
        raise ConfigurationError(
            "FakeQueue signs tokens with cryptography: install tasktoolkit[testing]"
        ) from exc
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = hashlib.sha256(public_pem).hexdigest()[:16]
    signer = crypt.RSASigner.from_string(private_pem, key_id=kid)  # type: ignore[no-untyped-call]
    return signer, {kid: public_pem.decode("ascii")}


def mint_token(email: str, audience: str, now_s: float | None = None) -> str:
    """An RS256 ID token from the fake's issuer, shaped like Cloud Tasks' (valid for one hour)."""
    signer, _ = _signing_key()
    issued = int(time.time() if now_s is None else now_s)
    subject = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "azp": subject,
        "sub": subject,
        "email": email,
        "email_verified": True,
        "iat": issued,
        "exp": issued + 3600,
    }
    encode = cast(Callable[..., bytes], jwt.encode)
    return encode(signer, claims).decode("ascii")


@dataclass
class FakeTask(TaskNameParts):
    """A task the fake holds: what was created, and how its delivery went so far."""

    name: str
    url: str
    method: str
    headers: dict[str, str]
    body: bytes
    schedule_time: dt.datetime
    create_time: dt.datetime
    dispatch_deadline: dt.timedelta
    service_account: str | None
    audience: str | None
    seq: int
    state: str = QUEUED
    dispatch_count: int = 0
    response_count: int = 0
    execution_count: int = 0
    previous_response: int | None = None
    first_attempt_time: dt.datetime | None = None

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None

    def to_json(self) -> dict[str, Any]:
        """The ``Task`` resource."""
        request: dict[str, Any] = {"url": self.url, "httpMethod": self.method, "headers": dict(self.headers)}
        if self.service_account is not None:
            request["oidcToken"] = {"serviceAccountEmail": self.service_account, "audience": self.audience}
        return {
            "name": self.name,
            "httpRequest": request,
            "scheduleTime": format_timestamp(self.schedule_time),
            "createTime": format_timestamp(self.create_time),
            "dispatchDeadline": format_duration(self.dispatch_deadline),
            "dispatchCount": self.dispatch_count,
            "responseCount": self.response_count,
        }


@dataclass(frozen=True)
class Delivery:
    """One request the fake sent to the app, and the answer."""

    task: FakeTask
    time: dt.datetime
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    status: int
    response_body: bytes
    response_headers: Mapping[str, str] = field(default_factory=dict)
    exception: BaseException | None = None
    #: True for a deliberate second delivery (:meth:`FakeQueue.redeliver`, ``duplicate_deliveries``).
    duplicate: bool = False
    retry_after_s: float | None = field(default=None, repr=False)

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


def _check_queue_config(rates: Mapping[str, Any], retry: Mapping[str, Any]) -> None:
    """Refuses what Cloud Tasks refuses, with its messages."""
    seconds = {key: parse_duration(retry[key]) for key in ("minBackoff", "maxBackoff") if key in retry}
    checks = [
        (
            not 0 <= rates["maxDispatchesPerSecond"] <= 500,
            "RateLimits.maxDispatchesPerSecond must be in [0, 500].",
        ),
        (
            not 0 <= rates["maxConcurrentDispatches"] <= 5000,
            "RateLimits.maxConcurrentDispatches must be in [0, 5000].",
        ),
        (retry["maxAttempts"] < -1, "RetryConfig.maxAttempts must be greater or equal to -1."),
        (retry["maxDoublings"] < 0, "RetryConfig.maxDoublings cannot be negative."),
        (
            min(seconds.values()) < dt.timedelta(0),
            "RetryConfig.minBackoff and maxBackoff cannot be negative.",
        ),
        (
            seconds["minBackoff"] > seconds["maxBackoff"],
            "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
        ),
    ]
    for failed, message in checks:
        if failed:
            raise _fail("INVALID_ARGUMENT", message, 400)


@dataclass
class _Queue:
    name: str
    state: str = "RUNNING"
    rate_limits: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    retry_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RETRY))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "rateLimits": dict(self.rate_limits),
            "retryConfig": dict(self.retry_config),
        }

    def backoff(self, retry: int) -> dt.timedelta:
        """Wait before retry ``retry``: ``min(max, min * 2**min(k-1, D) * max(1, k-D))`` (Cloud Tasks)."""
        low = parse_duration(self.retry_config["minBackoff"]).total_seconds()
        high = parse_duration(self.retry_config["maxBackoff"]).total_seconds()
        doublings = int(self.retry_config["maxDoublings"])
        interval = low * 2.0 ** min(retry - 1, doublings, 1000) * max(1, retry - doublings)
        return dt.timedelta(seconds=min(high, interval))

    def exhausted(self, task: FakeTask, now: dt.datetime) -> bool:
        """Whether retrying stops: ``maxAttempts`` and ``maxRetryDuration`` both reached."""
        if now - task.create_time >= TASK_RETENTION:
            return True
        attempts = int(self.retry_config.get("maxAttempts", 100))
        duration = parse_duration(self.retry_config.get("maxRetryDuration", "0s"))
        if attempts <= 0 and duration <= dt.timedelta(0):
            return False
        first = task.first_attempt_time or now
        return (attempts <= 0 or task.dispatch_count >= attempts) and (
            duration <= dt.timedelta(0) or now - first >= duration
        )


class FakeQueue(TasksClient):
    """An in-memory Cloud Tasks that delivers into a Flask app in virtual time.

    It is a :class:`~tasktoolkit.client.TasksClient` whose requests never leave the process: queue helpers,
    ``enqueue`` and ``enqueue_many`` validate and answer like the service (names, tombstones, errors).
    Rate limits and dispatch deadlines are not simulated: due tasks are delivered one at a time, in
    schedule order.

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
        max_deliveries: Safety limit of deliveries per :meth:`run_until_idle` or :meth:`advance` call.
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
    ) -> None:
        self.now = (start or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        super().__init__(project, location, clock=lambda: self.now, transport=self._serve)
        self.app = app
        self.raise_errors = raise_errors
        self.duplicate_deliveries = duplicate_deliveries
        self.auto_create_queues = auto_create_queues
        self.tombstone = tombstone
        self.max_deliveries = max_deliveries
        #: Every task ever created, in creation order.
        self.created: list[FakeTask] = []
        #: Every request sent to the app, in order.
        self.deliveries: list[Delivery] = []
        self._queues: dict[str, _Queue] = {}
        self._live: dict[str, FakeTask] = {}
        self._tombstones: dict[str, dt.datetime] = {}
        self._lock = threading.RLock()
        if app is not None:
            self.install(app)

    # -- set-up -----------------------------------------------------------------------------------

    def install(self, app: Flask) -> FakeQueue:
        """Makes this fake the app's client and the target of deliveries, and lets its tokens in.

        Call it after ``TaskToolkit(app)`` (re-initializing the toolkit drops the trust). Sets
        ``TASKTOOLKIT_BASE_URL``, ``_PROJECT`` and ``_LOCATION`` only where the app has none.
        """
        self.app = app
        install_client(app, self)
        app.config.setdefault(BASE_URL, "http://localhost")
        app.config.setdefault(PROJECT, self.project)
        app.config.setdefault(LOCATION, self.location)
        with contextlib.suppress(ConfigurationError):  # without TaskToolkit, plain routes need no token
            TaskToolkit.state(app).verifier.trust_issuer(ISSUER, _signing_key()[1])
        return self

    # -- inspection -------------------------------------------------------------------------------

    def pending(self, queue: str | None = None) -> list[FakeTask]:
        """Tasks still to be delivered (or retried), in schedule order."""
        with self._lock:
            tasks = [t for t in self._live.values() if queue is None or t.queue == queue]
        return sorted(tasks, key=lambda t: (t.schedule_time, t.seq))

    def exhausted(self, queue: str | None = None) -> list[FakeTask]:
        """Tasks whose retries ran out."""
        return [t for t in self.created if t.state == EXHAUSTED and (queue is None or t.queue == queue)]

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

    # -- time -------------------------------------------------------------------------------------

    def run_until_idle(self) -> list[Delivery]:
        """Delivers every due task, and retries failed ones until they succeed or run out of retries.

        The clock moves forward only to the retries' times (anything falling due by then is delivered
        too); tasks scheduled later stay pending until :meth:`advance`.

        Returns:
            The deliveries made.

        Raises:
            FakeQueueError: Still busy after ``max_deliveries``.
        """
        start = len(self.deliveries)
        for _ in range(self.max_deliveries):
            task = self._next(self.now)
            if task is None:
                retry = next((t for t in self._due_order() if t.dispatch_count > 0), None)
                if retry is None:
                    return self.deliveries[start:]
                self.now = max(self.now, retry.schedule_time)
                continue
            self._attempt(task)
        raise FakeQueueError(f"not idle after {self.max_deliveries} deliveries; a task keeps failing?")

    def advance(self, delta: dt.timedelta | None = None, **kwargs: float) -> list[Delivery]:
        """Moves the clock forward, delivering every task and retry that falls due on the way, in order.

        Args:
            delta: How far.
            **kwargs: Or, added to it, ``timedelta`` arguments such as ``hours=24``.

        Returns:
            The deliveries made.
        """
        step = (delta or dt.timedelta()) + dt.timedelta(**kwargs)
        if step < dt.timedelta(0):
            raise FakeQueueError(f"advance cannot go back in time, got {step}")
        end = self.now + step
        start = len(self.deliveries)
        for _ in range(self.max_deliveries):
            task = self._next(end)
            if task is None:
                self.now = end
                return self.deliveries[start:]
            self.now = max(self.now, task.schedule_time)
            self._attempt(task)
        raise FakeQueueError(f"still busy after {self.max_deliveries} deliveries")

    def redeliver(self, task: FakeTask | str) -> Delivery:
        """Sends the task's last request again, unchanged (a duplicate delivery, as Cloud Tasks may make)."""
        previous = self.deliveries_of(task)
        if not previous:
            raise FakeQueueError(f"{task!r} was never delivered")
        last = previous[-1]
        return self._record(self._send(last.task, last.method, last.url, dict(last.headers), last.body, True))

    # -- delivery ---------------------------------------------------------------------------------

    def _due_order(self) -> list[FakeTask]:
        with self._lock:
            running = {q.name for q in self._queues.values() if q.state == "RUNNING"}
            tasks = [t for t in self._live.values() if t.queue_path in running]
        return sorted(tasks, key=lambda t: (t.schedule_time, t.seq))

    def _next(self, until: dt.datetime) -> FakeTask | None:
        return next((t for t in self._due_order() if t.schedule_time <= until), None)

    def _request_headers(self, task: FakeTask) -> dict[str, str]:
        headers = {k: v for k, v in task.headers.items() if not k.lower().startswith(_COMPUTED)}
        retry_count = task.dispatch_count - 1
        headers["User-Agent"] = USER_AGENT
        headers[h.QUEUE_NAME] = task.queue
        headers[h.TASK_NAME] = task.id
        headers[h.RETRY_COUNT] = str(retry_count)
        headers[h.EXECUTION_COUNT] = str(task.execution_count)
        headers[h.ETA] = f"{task.schedule_time.timestamp():.6f}"
        if retry_count > 0:
            headers[h.PREVIOUS_RESPONSE] = str(task.previous_response or 0)
            headers[h.RETRY_REASON] = ""
        if task.service_account is not None:
            token = mint_token(task.service_account, task.audience or task.url)
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _attempt(self, task: FakeTask) -> None:
        with self._lock:
            task.dispatch_count += 1
            task.first_attempt_time = task.first_attempt_time or self.now
            headers = self._request_headers(task)
        body = task.body if task.method in BODY_METHODS else b""
        delivery = self._send(task, task.method, task.url, headers, body, False)
        with self._lock:
            self._settle(task, delivery)
        self._record(delivery)
        if self.duplicate_deliveries:
            self._record(self._send(task, task.method, task.url, headers, body, True))

    def _send(
        self, task: FakeTask, method: str, url: str, headers: dict[str, str], body: bytes, duplicate: bool
    ) -> Delivery:
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
                headers=headers,
                data=body,
                environ_overrides={EXCEPTION_SINK_KEY: raised},
            )
        except Exception as exc:  # an unhandled error in a plain route, with PROPAGATE_EXCEPTIONS on
            return Delivery(task, self.now, method, url, headers, body, 500, b"", {}, exc, duplicate)
        exception = raised[0] if raised else None
        return Delivery(
            task,
            self.now,
            method,
            url,
            headers,
            body,
            response.status_code,
            response.get_data(),
            dict(response.headers.items()),
            exception,
            duplicate,
            self._retry_after(response.headers.get("Retry-After")),
        )

    def _retry_after(self, value: str | None) -> float | None:
        if not value:
            return None
        if value.strip().isdigit():
            return float(value)
        try:
            return max(0.0, (parsedate_to_datetime(value) - self.now).total_seconds())
        except (TypeError, ValueError):
            return None

    def _settle(self, task: FakeTask, delivery: Delivery) -> None:
        """Applies an outcome like Cloud Tasks: done on 2xx, else retried with backoff or exhausted."""
        task.response_count += 1
        task.execution_count += delivery.status < 500
        task.previous_response = delivery.status
        if delivery.ok:
            self._end(task, SUCCEEDED)
            return
        queue = self._queues[task.queue_path]
        if queue.exhausted(task, self.now):
            self._end(task, EXHAUSTED)
            return
        wait = queue.backoff(task.dispatch_count)
        if delivery.retry_after_s is not None:
            wait = max(wait, dt.timedelta(seconds=delivery.retry_after_s))
        task.schedule_time = self.now + wait

    def _end(self, task: FakeTask, state: str) -> None:
        task.state = state
        self._live.pop(task.name, None)
        self._tombstones[task.name] = self.now + self.tombstone

    def _record(self, delivery: Delivery) -> Delivery:
        self.deliveries.append(delivery)
        if delivery.exception is not None and self.raise_errors:
            raise delivery.exception
        return delivery

    # -- the in-memory REST API -------------------------------------------------------------------

    def _serve(
        self, method: str, path: str, *, params: Mapping[str, str] | None, body: Any, idempotent: bool
    ) -> dict[str, Any]:
        match = _ROUTE.fullmatch(path)
        if match is None or (match["project"], match["location"]) != (self.project, self.location):
            raise _fail("NOT_FOUND", f"FakeQueue serves {self.parent} only, not {path}", 404)
        queue = f"{self.parent}/queues/{match['queue']}" if match["queue"] else None
        with self._lock:
            if queue is None:
                if method == "POST":
                    return self._create_queue(str(body["name"]))
                return {"queues": [q.to_json() for q in self._queues.values()]}
            if match["verb"]:
                return self._queue_verb(queue, match["verb"])
            if match["task"]:
                return self._task_call(method, f"{queue}/tasks/{match['task']}")
            if match["tasks"] is not None:
                if method == "POST":
                    return self._create_task(queue, body["task"])
                return {"tasks": [t.to_json() for t in self.pending() if t.queue_path == queue]}
            return self._queue_call(method, queue, params or {}, body)

    def _queue(self, name: str) -> _Queue:
        if name not in self._queues and self.auto_create_queues:
            self._queues[name] = _Queue(name)
        if name not in self._queues:
            raise _fail(
                "NOT_FOUND",
                "Queue does not exist. If you just created the queue, wait at least a minute for the queue "
                "to initialize.",
                404,
            )
        return self._queues[name]

    def _create_queue(self, name: str) -> dict[str, Any]:
        if name in self._queues:
            raise _fail("ALREADY_EXISTS", "Queue already exists", 409)
        self._queues[name] = _Queue(name)
        return self._queues[name].to_json()

    def _queue_call(self, method: str, name: str, params: Mapping[str, str], body: Any) -> dict[str, Any]:
        if method == "DELETE":
            if name not in self._queues:
                raise _fail("NOT_FOUND", "Requested entity was not found.", 404)
            del self._queues[name]
            self._delete_tasks_of(name)
            return {}
        if method == "PATCH":
            queue = self._queues.get(name) or _Queue(name)
            rates, retry = dict(queue.rate_limits), dict(queue.retry_config)
            for path in filter(None, params.get("updateMask", "").split(",")):
                section, _, key = path.partition(".")
                (rates if section == "rateLimits" else retry)[key] = body[section][key]
            _check_queue_config(rates, retry)  # all or nothing: a refused update changes nothing
            queue.rate_limits, queue.retry_config = rates, retry
            self._queues[name] = queue
            return queue.to_json()
        return self._queue(name).to_json()

    def _delete_tasks_of(self, queue_path: str) -> None:
        for task in [t for t in self._live.values() if t.queue_path == queue_path]:
            self._end(task, DELETED)

    def _queue_verb(self, name: str, verb: str) -> dict[str, Any]:
        queue = self._queue(name)
        if verb == "purge":
            self._delete_tasks_of(name)
        else:
            queue.state = "PAUSED" if verb == "pause" else "RUNNING"
        return queue.to_json()

    def _task_call(self, method: str, name: str) -> dict[str, Any]:
        task = self._live.get(name)
        if task is None:
            raise _fail("NOT_FOUND", "Requested entity was not found.", 404)
        if method == "DELETE":
            self._end(task, DELETED)
            return {}
        return task.to_json()

    def _create_task(self, queue_name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        self._queue(queue_name)
        now = self.now
        name = str(data.get("name") or f"{queue_name}/tasks/{secrets.randbelow(9 * 10**18) + 10**18}")
        if name in self._live:
            raise _fail("ALREADY_EXISTS", "Requested entity already exists", 409)
        if self._tombstones.get(name, now) > now:
            raise _fail(
                "ALREADY_EXISTS",
                "The task cannot be created because a task with this name existed too recently.",
                409,
            )
        schedule = max(parse_timestamp(data["scheduleTime"]), now) if "scheduleTime" in data else now
        if schedule > now + MAX_SCHEDULE_AHEAD:
            raise _fail(
                "INVALID_ARGUMENT",
                f"The Task.scheduleTime, {format_timestamp(schedule)}, is too far in the future. "
                "Schedule time must be no more than 720h in the future.",
                400,
            )
        request = data["httpRequest"]
        body = base64.b64decode(request.get("body", ""))
        oidc = request.get("oidcToken") or {}
        task = FakeTask(
            name=name,
            url=request["url"],
            method=request.get("httpMethod", "POST"),
            headers=dict(request.get("headers") or {}),
            body=body,
            schedule_time=schedule,
            create_time=now,
            dispatch_deadline=parse_duration(data.get("dispatchDeadline", "600s")),
            service_account=oidc.get("serviceAccountEmail"),
            audience=oidc.get("audience"),
            seq=len(self.created),
        )
        size = len(body) + len(task.url) + sum(len(k) + len(v) for k, v in task.headers.items())
        if size > MAX_TASK_BYTES:
            raise _fail(
                "INVALID_ARGUMENT",
                f"Task size is {size} bytes; the maximum task size is {MAX_TASK_BYTES} bytes (1 MiB).",
                400,
            )
        self.created.append(task)
        self._live[name] = task
        return task.to_json()
