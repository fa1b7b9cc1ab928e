"""TasksClient: creates tasks and manages queues through the Cloud Tasks REST v2 API.

One code path for real Cloud Tasks and the local runner: the same requests go to
``https://cloudtasks.googleapis.com`` with application default credentials, or to the runner named by
``CLOUD_TASKS_EMULATOR_HOST`` (or an ``http://`` endpoint) without credentials.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, Self

import requests

from tasktoolkit.config import EMULATOR_HOST_ENV
from tasktoolkit.errors import (
    ApiError,
    ConfigurationError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceNotFound,
    ServiceUnavailable,
    TaskAlreadyExists,
    TaskToolkitError,
)
from tasktoolkit.spans import current_trace, producer_span
from tasktoolkit.taskspec import (
    CreatedTask,
    QueueInfo,
    build_task,
    check_queue_id,
    check_task_id,
    invalid,
    queue_update,
)
from tasktoolkit.tracing import with_trace_header
from tasktoolkit.transport import PooledWire, RequestsWire, SendFailed, Wire, proxy_for, settle_environment

__all__ = [
    "ApiError",
    "CreatedTask",
    "EnqueueResult",
    "QueueInfo",
    "RetryPolicy",
    "TaskAlreadyExists",
    "TasksClient",
]

GOOGLE_ENDPOINT = "https://cloudtasks.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: Largest ``max_workers`` of :meth:`TasksClient.enqueue_many` (also the connection pool size).
MAX_WORKERS = 64
#: The exception class of each canonical code (``google.rpc.Code`` name) in Cloud Tasks answers.
ERROR_CLASSES: Mapping[str, type[ApiError]] = {
    "ALREADY_EXISTS": TaskAlreadyExists,
    "NOT_FOUND": ResourceNotFound,
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "FAILED_PRECONDITION": FailedPrecondition,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAUTHENTICATED": PermissionDenied,
    "UNAVAILABLE": ServiceUnavailable,
    "DEADLINE_EXCEEDED": ServiceUnavailable,
    "RESOURCE_EXHAUSTED": ServiceUnavailable,
}
_STATUS_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: Project ids (``example.com:my-proj`` for domain-scoped ones) and location ids, as resource names take them.
_PROJECT_ID = re.compile(r"[A-Za-z0-9.:-]+")
_LOCATION_ID = re.compile(r"[A-Za-z0-9-]+")
#: How the service (and the runner) says that a queue is missing (reference §4.2).
QUEUE_MISSING = "Queue does not exist"
#: Transient answers, retried only when repeating the request is harmless: none of them proves that the
#: request was not processed (a 503 may come from a proxy after the service created the task), and Google's
#: own clients never retry CreateTask (reference §1, client-side retry settings).
_RETRY_IF_IDEMPOTENT = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})


def error_from_answer(
    http_status: int, payload: Any, errors: Mapping[str, type[ApiError]] = ERROR_CLASSES
) -> ApiError:
    """The typed exception for an error answer ``{"error": {"code", "message", "status"}}``.

    Args:
        http_status: The answer's HTTP status (gives the code when the body names none).
        payload: The answer's JSON.
        errors: The exception class of each canonical code (default: Cloud Tasks'; others are ApiError).
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    status = str(error.get("status") or _STATUS_BY_HTTP.get(http_status, "UNKNOWN"))
    message = str(error.get("message") or f"HTTP {http_status}")
    return errors.get(status, ApiError)(status, message, http_status)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: exponential backoff with full jitter.

    Args:
        attempts: Tries in all, including the first (1 turns retrying off).
        initial_s: Upper bound of the first wait.
        multiplier: Growth of the bound per retry.
        max_s: Largest bound.
    """

    attempts: int = 5
    initial_s: float = 0.25
    multiplier: float = 2.0
    max_s: float = 8.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 100:
            raise ValueError(f"RetryPolicy.attempts must be within [1, 100], got {self.attempts!r}")
        if not (0 <= self.initial_s <= self.max_s and self.multiplier >= 1):
            raise ValueError("RetryPolicy needs 0 <= initial_s <= max_s and multiplier >= 1")

    def wait_s(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``retry`` (1 for the first)."""
        return rng() * min(self.max_s, self.initial_s * self.multiplier ** (retry - 1))


class Transport(Protocol):
    """Sends one REST call; returns the JSON answer or raises :class:`ApiError`."""

    def __call__(
        self, method: str, path: str, *, params: Mapping[str, str] | None, body: Any, idempotent: bool
    ) -> dict[str, Any]:
        """Performs ``method path`` (path below the API version, e.g. ``/v2/``)."""
        ...


class HttpTransport:
    """REST calls over a :class:`~tasktoolkit.transport.Wire`, retrying transient failures where safe.

    The one place that decides what a failure means: retries, backoff and the mapping of answers to typed
    errors live here, above the wire.

    * Requests that surely never left (connection refused) are retried for every call.
    * UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED answers, timeouts and resets may follow a request
      the server processed, so they are retried only when repeating is harmless (``idempotent``: reads,
      deletes, named creates).
    * A kept-alive connection that the server dropped while the request was sent is reopened at once, once,
      under the same rule.

    Args:
        wire: Sends the requests.
        retry: Retry policy for transient failures.
        sleep: Waits between retries (injectable for tests).
        api_version: The first part of every path: ``v2`` for Cloud Tasks, ``v1`` for Cloud Scheduler.
        errors: The exception class of each canonical code (see :func:`error_from_answer`).
    """

    def __init__(
        self,
        wire: Wire,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        api_version: str = "v2",
        errors: Mapping[str, type[ApiError]] = ERROR_CLASSES,
    ) -> None:
        self.wire = wire
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._prefix = f"/{api_version}/"
        self._errors = errors

    def __call__(
        self, method: str, path: str, *, params: Mapping[str, str] | None, body: Any, idempotent: bool
    ) -> dict[str, Any]:
        """Performs the call, retrying refused connections (and, if idempotent, transient errors)."""
        path = self._prefix + path
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        reopened = False
        attempt = 1
        while True:
            last = attempt >= self.retry.attempts
            try:
                status, answer = self.wire.send(method, path, params, data)
            except SendFailed as exc:
                safe = idempotent or not exc.maybe_sent
                if safe and exc.reused and not reopened:
                    reopened = True  # a connection dropped while idle: reopen now, without waiting
                    continue
                if last or not safe:
                    raise ServiceUnavailable("UNAVAILABLE", str(exc), 503) from exc
            else:
                payload = _json_or_none(answer)
                if 200 <= status < 300:
                    return payload if isinstance(payload, dict) else {}
                error = error_from_answer(status, payload, self._errors)
                retryable = idempotent and error.status in _RETRY_IF_IDEMPOTENT
                if last or not retryable:
                    raise error
            self._sleep(self.retry.wait_s(attempt))
            attempt += 1

    def close(self) -> None:
        """Closes the wire."""
        self.wire.close()


def _json_or_none(answer: bytes) -> Any:
    try:
        return json.loads(answer) if answer else None
    except ValueError:
        return None


def api_endpoint(endpoint: str | None, emulator_host: str | None, google_endpoint: str) -> str:
    """Where a client's requests go: ``endpoint``, else the emulator's ``host:port``, else Google's API."""
    if endpoint is None and emulator_host:
        endpoint = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
    return (endpoint or google_endpoint).rstrip("/")


def open_wire(
    endpoint: str, credentials: Any, timeout_s: float, *, service: str = "Cloud Tasks", emulator_env: str = ""
) -> Wire:
    """The pooled ``http.client`` wire for a runner reached directly, else ``requests`` (Google, proxies).

    Args:
        endpoint: Base URL; ``http://`` without ``credentials`` is a runner, reached without credentials.
        credentials: google-auth credentials (default: application default credentials, for Google).
        timeout_s: Per-request timeout.
        service: The API's name, for the error raised when no credentials are found.
        emulator_env: The variable that names a local runner, for that error (default: Cloud Tasks').
    """
    if endpoint.startswith("http://") and credentials is None and proxy_for(endpoint) is None:
        return PooledWire(endpoint, timeout_s=timeout_s, max_idle=MAX_WORKERS)
    local = endpoint.startswith("http://") and credentials is None
    session = requests.Session() if local else _google_session(credentials, service, emulator_env)
    session = settle_environment(session, endpoint)
    return RequestsWire(session, endpoint, timeout_s=timeout_s, pool_size=MAX_WORKERS)


def _google_session(credentials: Any, service: str, emulator_env: str) -> requests.Session:
    import google.auth
    import google.auth.exceptions
    from google.auth.transport.requests import AuthorizedSession

    if credentials is None:
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigurationError(
                f"no Google credentials for {service}: run `gcloud auth application-default login`, run on "
                f"Google Cloud, pass credentials=, or set {emulator_env or EMULATOR_HOST_ENV}=host:port for "
                f"a local runner ({exc})"
            ) from exc
    session: requests.Session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    return session


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class EnqueueResult:
    """One entry of :meth:`TasksClient.enqueue_many`: the created task or the error, in input order."""

    index: int
    task: CreatedTask | None = None
    error: TaskToolkitError | None = None

    @property
    def ok(self) -> bool:
        """Whether the task was created (or, with ``ignore_existing``, already existed)."""
        return self.error is None


class ApiClient:
    """What the Cloud Tasks and Cloud Scheduler clients share: one project and location, one transport.

    Args:
        project: Project id, e.g. ``"my-proj"``.
        location: Location id, e.g. ``"us-central1"``.
    """

    _transport: Transport

    def __init__(self, project: str, location: str) -> None:
        for label, value, pattern, allowed in (
            ("project", project, _PROJECT_ID, "letters, digits, '-', '.' or ':' (e.g. 'my-proj')"),
            ("location", location, _LOCATION_ID, "letters, digits or '-' (e.g. 'us-central1')"),
        ):
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise invalid(f"{label} must be a non-empty id of {allowed}, got {value!r}")
        self.project = project
        self.location = location
        self.parent = f"projects/{project}/locations/{location}"

    def close(self) -> None:
        """Closes the HTTP connections."""
        close = getattr(self._transport, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TasksClient(ApiClient):
    """Creates Cloud Tasks HTTP tasks and manages queues of one project and location.

    Where requests go, in order:

    1. ``transport`` if given (the fake queue passes its own);
    2. ``endpoint`` if given: an ``http://`` endpoint (a local runner) gets no credentials, an ``https://``
       one gets ``credentials`` or application default credentials;
    3. ``CLOUD_TASKS_EMULATOR_HOST=host:port``: the local runner, no credentials;
    4. ``https://cloudtasks.googleapis.com`` with ``credentials`` or application default credentials.

    Args:
        project: Project id, e.g. ``"my-proj"``.
        location: Location id, e.g. ``"us-central1"``.
        endpoint: Base URL of the API.
        credentials: google-auth credentials (default: application default credentials).
        timeout_s: Per-request timeout.
        retry: Retry policy for transient failures.
        clock: Current time (aware); turns ``delay`` into a schedule time.
        transport: Replaces HTTP entirely (used by :class:`tasktoolkit.testing.FakeQueue`).
        environ: Where ``CLOUD_TASKS_EMULATOR_HOST`` is read (default ``os.environ``).
        sleep: Waits between retries (injectable for tests).
    """

    def __init__(
        self,
        project: str,
        location: str,
        *,
        endpoint: str | None = None,
        credentials: Any = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        transport: Transport | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(project, location)
        self.clock = clock
        #: Whether requests go to a local runner (an ``http://`` endpoint without credentials).
        self._runner = False
        if transport is not None:
            self.endpoint = None
            self._transport = transport
            return
        env = os.environ if environ is None else environ
        self.endpoint = api_endpoint(endpoint, env.get(EMULATOR_HOST_ENV), GOOGLE_ENDPOINT)
        self._runner = self.endpoint.startswith("http://") and credentials is None
        wire = open_wire(self.endpoint, credentials, timeout_s)
        self._transport = HttpTransport(wire, retry=retry, sleep=sleep)

    # -- names ------------------------------------------------------------------------------------

    def queue_path(self, queue: str) -> str:
        """``projects/P/locations/L/queues/Q`` for a queue id."""
        return f"{self.parent}/queues/{check_queue_id(queue)}"

    def task_path(self, queue: str, task_id: str) -> str:
        """``.../queues/Q/tasks/T`` for a queue id and task id."""
        return f"{self.queue_path(queue)}/tasks/{check_task_id(task_id)}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        idempotent: bool = True,
        queue: str | None = None,
    ) -> dict[str, Any]:
        """One REST call; for a request on ``queue`` or its tasks, NOT_FOUND names what was asked for."""
        try:
            return self._transport(method, path, params=params, body=body, idempotent=idempotent)
        except ResourceNotFound as exc:
            if queue is None:
                raise
            raise self._not_found(exc, queue, path) from exc

    def _not_found(self, exc: ResourceNotFound, queue: str, path: str) -> ResourceNotFound:
        """``exc`` naming the queue (or task) path used; on a runner, with the command creating the queue."""
        queue_path = self.queue_path(queue)
        detail = f"task {path}" if path.startswith(f"{queue_path}/tasks/") else f"queue {queue_path}"
        if self._runner and exc.message.startswith(QUEUE_MISSING):
            detail += (
                f"; on the local runner at {self.endpoint}, create it with: runner queues create {queue} "
                f"--project {self.project} --location {self.location} --endpoint {self.endpoint}"
            )
        return ResourceNotFound(exc.status, exc.message, exc.http_status, detail=detail)

    # -- tasks ------------------------------------------------------------------------------------

    def enqueue(
        self,
        queue: str,
        *,
        url: str,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        name: str | None = None,
        dedup_key: str | None = None,
        delay: dt.timedelta | None = None,
        schedule_time: dt.datetime | None = None,
        dispatch_deadline: dt.timedelta | None = None,
        service_account: str | None = None,
        audience: str | None = None,
        ignore_existing: bool = False,
    ) -> CreatedTask | None:
        """Creates one HTTP task.

        Args:
            queue: Queue id.
            url: Full URL the task is sent to.
            json: Payload sent as a JSON body (``Content-Type: application/json``).
            body: Raw body instead of ``json``.
            headers: Extra request headers.
            method: HTTP method (a body needs POST, PUT or PATCH).
            name: Task id; Cloud Tasks rejects a second task of that id for about an hour after the first
                ends (its tombstone).
            dedup_key: Any string; becomes a hashed task id, so equal keys deduplicate.
            delay: Run no earlier than now + delay.
            schedule_time: Run no earlier than this aware datetime (at most 30 days ahead).
            dispatch_deadline: How long Cloud Tasks waits for the handler (15 s to 30 min; default 10 min).
            service_account: Email of the service account whose OIDC token is sent.
            audience: The token's audience (default: the URL).
            ignore_existing: Return ``None`` instead of raising when the task exists.

        Returns:
            The created task, or ``None`` if it existed and ``ignore_existing`` is set.

        Raises:
            TaskAlreadyExists: The name or dedup key is taken (unless ``ignore_existing``).
            InvalidArgument: An option is invalid (checked before sending, and by the service).
            ApiError: Any other refusal, with the service's status and message.
        """
        parent = self.queue_path(queue)
        with producer_span(queue) as span:
            created = self._create(
                parent,
                queue,
                ignore_existing,
                url=url,
                now=self.clock(),
                json=json,
                body=body,
                # The current trace travels in a header Cloud Run does not rewrite (tasktoolkit.tracing).
                headers=with_trace_header(headers, current_trace()),
                method=method,
                name=name,
                dedup_key=dedup_key,
                delay=delay,
                schedule_time=schedule_time,
                dispatch_deadline=dispatch_deadline,
                service_account=service_account,
                audience=audience,
            )
            if created is not None:
                span.update(message_id=created.id)
            return created

    def _create(self, parent: str, queue: str, ignore_existing: bool, **options: Any) -> CreatedTask | None:
        """Builds the task and creates it (see :meth:`enqueue`)."""
        task = build_task(parent, **options)
        try:
            # A named task is safe to resend: a duplicate comes back ALREADY_EXISTS.
            created = self._call(
                "POST", f"{parent}/tasks", body={"task": task}, idempotent="name" in task, queue=queue
            )
        except TaskAlreadyExists:
            if ignore_existing:
                return None
            raise
        return CreatedTask.from_json(created)

    def enqueue_many(
        self,
        queue: str,
        tasks: Iterable[Mapping[str, Any]],
        *,
        max_workers: int = 8,
        ignore_existing: bool = False,
    ) -> list[EnqueueResult]:
        """Creates many tasks, ``max_workers`` requests at a time; one failure never stops the others.

        Args:
            queue: Queue id.
            tasks: One mapping of :meth:`enqueue` keyword arguments per task (read lazily).
            max_workers: Requests in flight (1-64).
            ignore_existing: As in :meth:`enqueue` (an existing task gives ``ok`` with ``task=None``).

        Returns:
            One result per task, in input order.
        """
        if type(max_workers) is not int or not 1 <= max_workers <= MAX_WORKERS:
            raise invalid(f"max_workers must be an int within [1, {MAX_WORKERS}], got {max_workers!r}")
        check_queue_id(queue)

        def create(index: int, options: Mapping[str, Any]) -> EnqueueResult:
            try:
                if not isinstance(options, Mapping):
                    raise invalid(f"tasks[{index}] must be a mapping of enqueue() options, got {options!r}")
                options = {"ignore_existing": ignore_existing, **options}
                return EnqueueResult(index, task=self.enqueue(queue, **options))
            except TaskToolkitError as exc:
                return EnqueueResult(index, error=exc)
            except TypeError as exc:  # an unknown option name
                return EnqueueResult(index, error=invalid(f"tasks[{index}]: {exc}"))

        items = enumerate(tasks)
        lock = threading.Lock()
        results: list[EnqueueResult] = []

        def drain() -> None:
            """One worker: takes the next task until none is left (the input is read under the lock)."""
            while True:
                with lock:
                    item = next(items, None)
                if item is None:
                    return
                result = create(*item)
                results.append(result)

        with ThreadPoolExecutor(max_workers, thread_name_prefix="tasktoolkit-enqueue") as pool:
            workers = [pool.submit(drain) for _ in range(max_workers)]
        for worker in workers:
            worker.result()
        results.sort(key=lambda r: r.index)
        return results

    def get_task(self, queue: str, task_id: str) -> CreatedTask:
        """Returns one task. Raises :class:`ResourceNotFound` when it is gone."""
        return CreatedTask.from_json(self._call("GET", self.task_path(queue, task_id), queue=queue))

    def delete_task(self, queue: str, task_id: str) -> None:
        """Deletes a task (its name stays taken for the tombstone period)."""
        self._call("DELETE", self.task_path(queue, task_id), queue=queue)

    def list_tasks(self, queue: str, *, page_size: int = 1000) -> Iterator[CreatedTask]:
        """Yields the queue's tasks, page by page."""
        path = f"{self.queue_path(queue)}/tasks"
        params = {"pageSize": str(page_size)}
        while True:
            page = self._call("GET", path, params=params, queue=queue)
            for data in page.get("tasks", []):
                yield CreatedTask.from_json(data)
            token = page.get("nextPageToken")
            if not token:
                return
            params = {"pageSize": str(page_size), "pageToken": str(token)}

    # -- queues -----------------------------------------------------------------------------------

    def ensure_queue(
        self,
        queue: str,
        *,
        rate_limits: Mapping[str, float] | None = None,
        retry_config: Mapping[str, Any] | None = None,
    ) -> QueueInfo:
        """Creates the queue, or updates the given fields of an existing one (for development set-up).

        Args:
            queue: Queue id.
            rate_limits: ``max_dispatches_per_second``, ``max_concurrent_dispatches``.
            retry_config: ``max_attempts``, ``max_retry_duration``, ``min_backoff``, ``max_backoff``
                (timedelta or seconds), ``max_doublings``.
        """
        path = self.queue_path(queue)
        body, mask = queue_update(rate_limits, retry_config)
        if not mask:
            try:
                return self.get_queue(queue)
            except ResourceNotFound:
                return QueueInfo.from_json(self._call("POST", f"{self.parent}/queues", body={"name": path}))
        # UpdateQueue creates the queue when it does not exist.
        params = {"updateMask": ",".join(mask)}
        updated = self._call("PATCH", path, params=params, body={"name": path, **body})
        return QueueInfo.from_json(updated)

    def get_queue(self, queue: str) -> QueueInfo:
        """Returns the queue. Raises :class:`ResourceNotFound` when it does not exist."""
        return QueueInfo.from_json(self._call("GET", self.queue_path(queue), queue=queue))

    def pause_queue(self, queue: str) -> QueueInfo:
        """Stops dispatching (tasks can still be added)."""
        return QueueInfo.from_json(
            self._call("POST", f"{self.queue_path(queue)}:pause", body={}, queue=queue)
        )

    def resume_queue(self, queue: str) -> QueueInfo:
        """Resumes dispatching."""
        return QueueInfo.from_json(
            self._call("POST", f"{self.queue_path(queue)}:resume", body={}, queue=queue)
        )

    def purge_queue(self, queue: str) -> QueueInfo:
        """Deletes every task created before now."""
        return QueueInfo.from_json(
            self._call("POST", f"{self.queue_path(queue)}:purge", body={}, queue=queue)
        )

    def delete_queue(self, queue: str) -> None:
        """Deletes the queue and its tasks (its name cannot be reused for a while on the real service)."""
        self._call("DELETE", self.queue_path(queue), queue=queue)
