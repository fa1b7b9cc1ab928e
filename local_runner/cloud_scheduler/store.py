"""Where jobs and their attempt history live: the runner's SQLite file, or memory.

The tables (``cloud_scheduler_*``) are created by :mod:`local_runner.store.sqlite`'s schema.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from pathlib import Path

from local_runner.cloud_scheduler.model import Job, job_from_stored_json, job_to_stored_json
from local_runner.codec.tasks import attempt_from_json, attempt_to_stored_json
from local_runner.errors import InvalidArgument, StoreError
from local_runner.model import Attempt
from local_runner.store import MemoryTaskStore, SQLiteTaskStore, TaskStore
from local_runner.store.sqlite import write_transaction

log = logging.getLogger("local_runner.cloud_scheduler")

#: Attempts kept per job, newest first (an every-minute job makes 1,440 a day).
MAX_ATTEMPTS_KEPT = 100
_UNREADABLE = (ValueError, TypeError, KeyError, InvalidArgument)


class JobStore(ABC):
    """Jobs by name and the last :data:`MAX_ATTEMPTS_KEPT` attempts of each. Every method is atomic."""

    @abstractmethod
    def put_job(self, job: Job) -> None:
        """Insert or replace ``job``."""

    @abstractmethod
    def get_job(self, name: str) -> Job | None:
        """The job named ``name``, if any."""

    @abstractmethod
    def list_jobs(self, parent: str | None = None) -> list[Job]:
        """The jobs under ``parent`` (all if ``None``), by name."""

    @abstractmethod
    def delete_job(self, name: str) -> bool:
        """Remove the job and its history; whether it existed."""

    @abstractmethod
    def add_attempt(self, name: str, attempt: Attempt) -> None:
        """Append to the job's history, dropping the oldest beyond :data:`MAX_ATTEMPTS_KEPT`."""

    @abstractmethod
    def attempts(self, name: str) -> list[Attempt]:
        """The job's kept attempts, oldest first."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Release the store's resources."""


class MemoryJobStore(JobStore):
    """Jobs in a dict (``runner serve --data-dir ''`` and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._attempts: dict[str, list[Attempt]] = {}

    def put_job(self, job: Job) -> None:  # noqa: D102
        with self._lock:
            self._jobs[job.name] = job

    def get_job(self, name: str) -> Job | None:  # noqa: D102
        return self._jobs.get(name)

    def list_jobs(self, parent: str | None = None) -> list[Job]:  # noqa: D102
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda job: job.name)
        return [job for job in jobs if parent is None or job.parent == parent]

    def delete_job(self, name: str) -> bool:  # noqa: D102
        with self._lock:
            self._attempts.pop(name, None)
            return self._jobs.pop(name, None) is not None

    def add_attempt(self, name: str, attempt: Attempt) -> None:  # noqa: D102
        with self._lock:
            kept = self._attempts.setdefault(name, [])
            kept.append(attempt)
            del kept[:-MAX_ATTEMPTS_KEPT]

    def attempts(self, name: str) -> list[Attempt]:  # noqa: D102
        return list(self._attempts.get(name, []))


class SQLiteJobStore(JobStore):
    """Jobs in the runner's SQLite file, on a connection of their own (WAL mode allows both).

    The fire loop lists every job each time it wakes, so jobs are decoded once, then kept in memory as
    written: one runner per data directory (``runner.lock``) makes this store their only writer.
    """

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._lock = threading.RLock()  # held across a write and the cache update after its COMMIT
        self._jobs: dict[str, Job] | None = None
        try:
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout = 5000")
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the job store {self._path}: {exc}") from exc

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._conn, self._lock, f"Job store {self._path}")

    def put_job(self, job: Job) -> None:  # noqa: D102
        doc = json.dumps(job_to_stored_json(job))
        with self._lock:  # the cache follows the committed writes, in their order
            with self._transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO cloud_scheduler_jobs (name, parent, doc) VALUES (?, ?, ?)",
                    (job.name, job.parent, doc),
                )
            if self._jobs is not None:
                self._jobs[job.name] = job

    def get_job(self, name: str) -> Job | None:  # noqa: D102
        with self._transaction() as conn:
            row = conn.execute("SELECT doc FROM cloud_scheduler_jobs WHERE name = ?", (name,)).fetchone()
            return None if row is None else job_from_stored_json(json.loads(row[0]))

    def list_jobs(self, parent: str | None = None) -> list[Job]:
        """The jobs under ``parent``; a row that cannot be decoded is skipped with one ERROR line."""
        jobs = self._jobs if self._jobs is not None else self._load()
        with self._lock:
            listed = sorted(jobs.values(), key=lambda job: job.name)
        return [job for job in listed if parent is None or job.parent == parent]

    def _load(self) -> dict[str, Job]:
        with self._transaction() as conn:
            rows = conn.execute("SELECT name, doc FROM cloud_scheduler_jobs").fetchall()
            jobs: dict[str, Job] = {}
            for name, doc in rows:
                try:
                    jobs[name] = job_from_stored_json(json.loads(doc))
                except _UNREADABLE as exc:
                    log.error(
                        "job %s cannot be read (%r): it is not fired or listed; DeleteJob removes it",
                        name,
                        exc,
                    )
        self._jobs = jobs
        return jobs

    def delete_job(self, name: str) -> bool:  # noqa: D102
        with self._lock:
            with self._transaction() as conn:
                conn.execute("DELETE FROM cloud_scheduler_attempts WHERE job_name = ?", (name,))
                deleted = conn.execute("DELETE FROM cloud_scheduler_jobs WHERE name = ?", (name,)).rowcount
            if self._jobs is not None:
                self._jobs.pop(name, None)
        return bool(deleted)

    def add_attempt(self, name: str, attempt: Attempt) -> None:  # noqa: D102
        doc = json.dumps(attempt_to_stored_json(attempt))
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO cloud_scheduler_attempts (job_name, seq, doc) VALUES (?, "
                "(SELECT coalesce(max(seq), 0) + 1 FROM cloud_scheduler_attempts WHERE job_name = ?), ?)",
                (name, name, doc),
            )
            conn.execute(
                "DELETE FROM cloud_scheduler_attempts WHERE job_name = ? AND seq <= "
                "(SELECT max(seq) FROM cloud_scheduler_attempts WHERE job_name = ?) - ?",
                (name, name, MAX_ATTEMPTS_KEPT),
            )

    def attempts(self, name: str) -> list[Attempt]:  # noqa: D102
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT doc FROM cloud_scheduler_attempts WHERE job_name = ? ORDER BY seq", (name,)
            ).fetchall()
            return [attempt_from_json(json.loads(row[0])) for row in rows]

    def close(self) -> None:  # noqa: D102
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()


def open_job_store(tasks: TaskStore) -> JobStore:
    """The job store beside the task store: the same SQLite file, or memory."""
    if isinstance(tasks, SQLiteTaskStore) and tasks.path != ":memory:":
        return SQLiteJobStore(tasks.path)
    if not isinstance(tasks, MemoryTaskStore | SQLiteTaskStore):
        raise StoreError(f"no job store for {type(tasks).__name__}")
    return MemoryJobStore()
