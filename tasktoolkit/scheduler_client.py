"""SchedulerClient: Cloud Scheduler jobs through the Cloud Scheduler REST v1 API.

The same code path as :class:`~tasktoolkit.client.TasksClient` (its wires, retries and typed errors): requests
go to ``https://cloudscheduler.googleapis.com`` with application default credentials, or to a local runner
(which serves Cloud Scheduler on its Cloud Tasks port) without credentials. Jobs are proto3 JSON documents
(``google/cloud/scheduler/v1/job.proto``), as the API sends and takes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tasktoolkit.client import (
    ERROR_CLASSES,
    ApiClient,
    HttpTransport,
    RetryPolicy,
    Transport,
    api_endpoint,
    open_wire,
)
from tasktoolkit.config import EMULATOR_HOST_ENV, SCHEDULER_EMULATOR_HOST_ENV
from tasktoolkit.errors import AlreadyExists, ApiError
from tasktoolkit.headers import JOB_ID
from tasktoolkit.taskspec import invalid

__all__ = ["GOOGLE_ENDPOINT", "JobJson", "SchedulerClient"]

GOOGLE_ENDPOINT = "https://cloudscheduler.googleapis.com"
#: cloudscheduler.proto ``ListJobsRequest.page_size``: "The maximum page size is 500."
PAGE_SIZE = 500
#: A Job in proto3 JSON (``name``, ``schedule``, ``httpTarget``, ``state``...).
JobJson = dict[str, Any]
#: ALREADY_EXISTS names a job here, not a task.
_ERRORS_BY_CODE: Mapping[str, type[ApiError]] = {**ERROR_CLASSES, "ALREADY_EXISTS": AlreadyExists}


class SchedulerClient(ApiClient):
    """Lists, creates, updates, deletes, pauses, resumes and runs the Cloud Scheduler jobs of one location.

    Where requests go, in order:

    1. ``transport`` if given;
    2. ``endpoint`` if given: an ``http://`` endpoint (a local runner) gets no credentials, an ``https://``
       one gets ``credentials`` or application default credentials;
    3. ``CLOUD_SCHEDULER_EMULATOR_HOST=host:port``, else ``CLOUD_TASKS_EMULATOR_HOST`` (the runner serves
       both APIs on one port): the local runner, no credentials;
    4. ``https://cloudscheduler.googleapis.com`` with ``credentials`` or application default credentials.

    Reads, deletes, updates, pauses, resumes and named creates are retried on transient failures (repeating
    them is harmless); RunJob is not (a repeat would fire the job twice).

    Args:
        project: Project id.
        location: Location id, e.g. ``"us-central1"``.
        endpoint: Base URL of the API.
        credentials: google-auth credentials (default: application default credentials).
        timeout_s: Per-request timeout.
        retry: Retry policy for transient failures.
        transport: Replaces HTTP entirely.
        environ: Where the emulator variables are read (default ``os.environ``).
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
        transport: Transport | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(project, location)
        self.endpoint: str | None = None
        if transport is not None:
            self._transport = transport
            return
        env = os.environ if environ is None else environ
        emulator = env.get(SCHEDULER_EMULATOR_HOST_ENV) or env.get(EMULATOR_HOST_ENV)
        self.endpoint = api_endpoint(endpoint, emulator, GOOGLE_ENDPOINT)
        wire = open_wire(
            self.endpoint,
            credentials,
            timeout_s,
            service="Cloud Scheduler",
            emulator_env=SCHEDULER_EMULATOR_HOST_ENV,
        )
        self._transport = HttpTransport(
            wire, retry=retry, sleep=sleep, api_version="v1", errors=_ERRORS_BY_CODE
        )

    def job_path(self, job_id: str) -> str:
        """``projects/P/locations/L/jobs/J`` for a job id.

        Raises:
            InvalidArgument: ``job_id`` is not one Cloud Scheduler accepts (nothing is sent).
        """
        return f"{self.parent}/jobs/{_checked_job_id(job_id, 'job_id')}"

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        idempotent: bool = True,
    ) -> JobJson:
        return self._transport(method, path, params=params, body=body, idempotent=idempotent)

    def list_jobs(self) -> Iterator[JobJson]:
        """Yields every job of the location, following the pages."""
        params = {"pageSize": str(PAGE_SIZE)}
        while True:
            page = self._call("GET", f"{self.parent}/jobs", params=params)
            yield from page.get("jobs", [])
            token = page.get("nextPageToken")
            if not token:
                return
            params = {"pageSize": str(PAGE_SIZE), "pageToken": str(token)}

    def get_job(self, job_id: str) -> JobJson:
        """One job. Raises :class:`~tasktoolkit.errors.ResourceNotFound` when it does not exist."""
        return self._call("GET", self.job_path(job_id))

    def create_job(self, job: JobJson) -> JobJson:
        """Creates ``job`` (its ``name`` a full job path). Raises ``AlreadyExists`` when the name is taken."""
        return self._call("POST", f"{self.parent}/jobs", body=job, idempotent="name" in job)

    def update_job(self, job: JobJson, update_mask: Sequence[str]) -> JobJson:
        """Sets the fields of ``job`` that ``update_mask`` names (paths like ``httpTarget.uri``)."""
        if not update_mask:
            raise invalid("update_mask must name at least one field")
        name = job.get("name")
        prefix = f"{self.parent}/jobs/"
        if not isinstance(name, str) or not name.startswith(prefix):
            raise invalid(f"job name must be a job path under {self.parent}, got {name!r}")
        _checked_job_id(name.removeprefix(prefix), "job name's job id")
        return self._call("PATCH", name, params={"updateMask": ",".join(update_mask)}, body=job)

    def delete_job(self, job_id: str) -> None:
        """Deletes the job."""
        self._call("DELETE", self.job_path(job_id))

    def pause_job(self, job_id: str) -> JobJson:
        """Stops the job's fires until it is resumed."""
        return self._call("POST", f"{self.job_path(job_id)}:pause", body={})

    def resume_job(self, job_id: str) -> JobJson:
        """Re-enables a paused job (its next fire is the schedule's first after now)."""
        return self._call("POST", f"{self.job_path(job_id)}:resume", body={})

    def run_job(self, job_id: str) -> JobJson:
        """Fires the job now, paused or not (never retried: a repeat would fire it twice)."""
        return self._call("POST", f"{self.job_path(job_id)}:run", body={}, idempotent=False)


def _checked_job_id(job_id: object, field: str) -> str:
    """``job_id`` if Cloud Scheduler accepts it as a job id (job.proto ``name``), else INVALID_ARGUMENT."""
    if isinstance(job_id, str) and JOB_ID.fullmatch(job_id):
        return job_id
    shown = (
        repr(job_id)
        if not isinstance(job_id, str) or len(job_id) <= 60
        else f"{job_id[:57]!r}... ({len(job_id)} characters)"
    )
    raise invalid(
        f"{field} must be 1-500 letters, numbers, hyphens or underscores ([A-Za-z0-9_-]), got {shown}"
    )
