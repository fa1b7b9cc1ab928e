"""SQLiteDedupStore: records in one SQLite table (WAL), safe across threads and processes on one host."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

from tasktoolkit.dedup.base import DedupRecord, DedupStatus, DedupStore, StoredResponse

#: Expired rows are deleted once every this many claims.
PURGE_EVERY_CLAIMS = 1000
#: Idle connections kept for reuse; more are opened under load and closed when returned.
MAX_IDLE_CONNECTIONS = 8
_COLUMNS = (
    "key, owner, status, fingerprint, expires_at, response_status, response_body, response_content_type"
)
_IN_PROGRESS = DedupStatus.IN_PROGRESS.value
_SELECT = f"SELECT {_COLUMNS} FROM tasktoolkit_dedup WHERE key = ?"
_UPSERT = f"INSERT OR REPLACE INTO tasktoolkit_dedup ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasktoolkit_dedup (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    expires_at REAL NOT NULL,
    response_status INTEGER,
    response_body BLOB,
    response_content_type TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasktoolkit_dedup_expires ON tasktoolkit_dedup (expires_at);
"""
_Row = tuple[str, str, str, str, float, int | None, bytes | None, str | None]


def _record(row: _Row) -> DedupRecord:
    key, owner, status, fingerprint, expires_at, r_status, r_body, r_type = row
    response = StoredResponse(r_status, r_body or b"", r_type) if r_status is not None else None
    return DedupRecord(key, DedupStatus(status), owner, fingerprint, expires_at, response)


def _params(record: DedupRecord) -> tuple[object, ...]:
    response = record.response
    return (
        record.key,
        record.owner,
        record.status.value,
        record.fingerprint,
        record.expires_at,
        response.status if response else None,
        response.body if response else None,
        response.content_type if response else None,
    )


class SQLiteDedupStore(DedupStore):
    """Dedup records in a SQLite file: WAL, ``BEGIN IMMEDIATE`` claims, a small connection pool.

    Processes sharing the file (gunicorn workers on one host) see each other's claims. Not for network
    file systems; use Redis when workers run on several hosts (Cloud Run).

    Args:
        path: Database file (created with its table if missing).
        timeout_s: How long a write waits for the file lock before the store counts as unavailable.
        max_idle_connections: Connections kept open between operations.
        clock: Seconds since the epoch (injectable for tests).
    """

    _unavailable_errors = (sqlite3.Error,)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_s: float = 5.0,
        max_idle_connections: int = MAX_IDLE_CONNECTIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.path = os.fspath(path)
        self.timeout_s = timeout_s
        self.max_idle_connections = max_idle_connections
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._claims = itertools.count(1)
        self._call(self._warm_up)

    def _warm_up(self) -> None:
        """Creates the table and checks the file is usable, at construction rather than on the first task."""
        self._release(self._open())

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection

    def _release(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle_connections:
                self._idle.append(connection)
                return
        connection.close()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """Borrows a connection: one per concurrent operation, never shared, idle ones kept for reuse."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._open()
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise
        finally:
            self._release(connection)

    def _claim(self, record: DedupRecord, now: float) -> DedupRecord | None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(_SELECT, (record.key,)).fetchone()
            if row is not None and now < row[4]:
                db.execute("COMMIT")
                return _record(row)
            db.execute(_UPSERT, _params(record))
            if next(self._claims) % PURGE_EVERY_CLAIMS == 0:
                db.execute("DELETE FROM tasktoolkit_dedup WHERE expires_at <= ?", (now,))
            db.execute("COMMIT")
            return None

    def _replace(self, record: DedupRecord, now: float) -> bool:
        _key, owner, status, _fingerprint, expires_at, r_status, r_body, r_type = _params(record)
        with self._db() as db:
            cursor = db.execute(
                "UPDATE tasktoolkit_dedup SET status = ?, expires_at = ?, response_status = ?,"
                " response_body = ?, response_content_type = ?"
                " WHERE key = ? AND owner = ? AND status = ? AND expires_at > ?",
                (status, expires_at, r_status, r_body, r_type, record.key, owner, _IN_PROGRESS, now),
            )
            return cursor.rowcount == 1

    def _delete(self, key: str, owner: str, now: float) -> bool:
        with self._db() as db:
            cursor = db.execute(
                "DELETE FROM tasktoolkit_dedup WHERE key = ? AND owner = ? AND status = ? AND expires_at > ?",
                (key, owner, _IN_PROGRESS, now),
            )
            return cursor.rowcount == 1

    def _get(self, key: str, now: float) -> DedupRecord | None:
        with self._db() as db:
            row = db.execute(f"{_SELECT} AND expires_at > ?", (key, now)).fetchone()
        return _record(row) if row is not None else None

    def close(self) -> None:
        """Closes the idle connections (connections in use are closed when returned)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self.max_idle_connections = 0
        for connection in idle:
            connection.close()
