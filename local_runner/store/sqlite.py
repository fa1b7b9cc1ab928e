"""The default task store: one SQLite file in WAL mode that survives restarts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from local_runner.codec.queues import queue_from_json, queue_to_json
from local_runner.codec.tasks import http_request_from_json, http_request_to_json
from local_runner.errors import (
    TASK_EXISTS,
    TASK_TOMBSTONED,
    AlreadyExists,
    InvalidArgument,
    StoreError,
    StoreFull,
)
from local_runner.model import (
    NO_RESPONSE_STATUS,
    Attempt,
    HttpRequest,
    Queue,
    QueueState,
    RetryConfig,
    RpcStatus,
    Task,
    TaskState,
    parse_queue_name,
)
from local_runner.store.base import FinishedAttempt, TaskCounts, TaskStore, replayed_task

log = logging.getLogger("local_runner.store")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000
#: SQLite's page cache, in KiB (its default is 2 MiB): a large backlog's index pages stay in memory.
CACHE_KIB = 16 * 1024
#: SQLite's result code for "database or disk is full".
_SQLITE_FULL = 13

_ATTEMPT_FIELDS = (
    "schedule_time",
    "dispatch_time",
    "response_time",
    "http_status",
    "status_code",
    "status_message",
)
_FIRST = tuple(f"first_{f}" for f in _ATTEMPT_FIELDS)
_LAST = tuple(f"last_{f}" for f in _ATTEMPT_FIELDS)
#: Task columns written from a Task (``seq`` is the rowid, assigned on insert: insertion order).
_TASK_FIELDS = (
    "name",
    "queue",
    "state",
    "schedule_time",
    "create_time",
    "dispatch_deadline",
    "dispatch_count",
    "response_count",
    "execution_count",
    "http_request",
    "retry_config",
    "previous_response",
    *_FIRST,
    *_LAST,
)
_TASK_COLUMNS = ", ".join(("seq", *_TASK_FIELDS))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY, parent TEXT NOT NULL, state INTEGER NOT NULL, purge_time REAL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queues_parent ON queues (parent, name);
CREATE TABLE IF NOT EXISTS queue_tombstones (name TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, queue TEXT NOT NULL,
    state TEXT NOT NULL,
    schedule_time REAL NOT NULL, create_time REAL NOT NULL, dispatch_deadline REAL NOT NULL,
    dispatch_count INTEGER NOT NULL, response_count INTEGER NOT NULL, execution_count INTEGER NOT NULL,
    http_request TEXT NOT NULL, retry_config TEXT, previous_response INTEGER,
    first_schedule_time REAL, first_dispatch_time REAL, first_response_time REAL, first_http_status INTEGER,
    first_status_code INTEGER, first_status_message TEXT,
    last_schedule_time REAL, last_dispatch_time REAL, last_response_time REAL, last_http_status INTEGER,
    last_status_code INTEGER, last_status_message TEXT
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (queue, state, schedule_time, seq);
DROP INDEX IF EXISTS tasks_by_name;
CREATE TABLE IF NOT EXISTS task_tombstones (name TEXT PRIMARY KEY, queue TEXT NOT NULL, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS task_tombstones_queue ON task_tombstones (queue);
CREATE TABLE IF NOT EXISTS iam_policies (queue TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    task_name TEXT NOT NULL, seq INTEGER NOT NULL, {", ".join(_ATTEMPT_FIELDS)},
    PRIMARY KEY (task_name, seq)
) WITHOUT ROWID;
-- Cloud Scheduler jobs and their recent attempts (local_runner.cloud_scheduler.store), as JSON documents.
CREATE TABLE IF NOT EXISTS cloud_scheduler_jobs (
    name TEXT PRIMARY KEY, parent TEXT NOT NULL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cloud_scheduler_attempts (
    job_name TEXT NOT NULL, seq INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (job_name, seq)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""

#: The due-task selection of :meth:`SQLiteTaskStore.claim_due`; served by the ``tasks_due`` index.
CLAIM_DUE_SELECT = (
    "SELECT seq FROM tasks WHERE queue = :queue AND state = 'QUEUED' AND schedule_time <= :now "
    "ORDER BY schedule_time, seq LIMIT :limit"
)
_FIRST_IF_NONE = ("schedule_time", ":now", "NULL", "NULL", "NULL", "NULL")
_START_ATTEMPT = (
    "UPDATE tasks SET state = 'DISPATCHING', dispatch_count = dispatch_count + 1, "
    + ", ".join(
        f"{col} = CASE WHEN first_dispatch_time IS NULL THEN {value} ELSE {col} END"
        for col, value in zip(_FIRST, _FIRST_IF_NONE, strict=True)
    )
    + ", "
    + ", ".join(f"{col} = {value}" for col, value in zip(_LAST, _FIRST_IF_NONE, strict=True))
    + " WHERE {where} RETURNING "
    + _TASK_COLUMNS
)
_CLAIM_DUE = _START_ATTEMPT.format(where=f"seq IN ({CLAIM_DUE_SELECT})")
_CLAIM_TASK = _START_ATTEMPT.format(where="name = :name AND state = 'QUEUED'")
#: Task values in :data:`_TASK_FIELDS` order, bound by position (:func:`_task_row`; ``?1`` is the name).
_TASK_VALUES = ", ".join(f"?{i}" for i in range(1, len(_TASK_FIELDS) + 1))
_INSERT_TASK = f"INSERT INTO tasks ({', '.join(_TASK_FIELDS)}) VALUES ({_TASK_VALUES})"
#: A new task whose name no task, tombstone or history holds: the common case, one statement. Any
#: other (the name is taken, tombstoned, or held by an EXHAUSTED task) inserts nothing and goes the
#: checked way (:meth:`SQLiteTaskStore._insert_checked`).
_INSERT_NEW_TASK = (
    f"INSERT INTO tasks ({', '.join(_TASK_FIELDS)}) SELECT {_TASK_VALUES} "
    "WHERE NOT EXISTS (SELECT 1 FROM task_tombstones WHERE name = ?1)"
)
#: What an attempt's outcome changes on a task (its request, name, queue and creation never change).
_PROGRESS_FIELDS = (
    "state",
    "schedule_time",
    "dispatch_count",
    "response_count",
    "execution_count",
    "previous_response",
    *_FIRST,
    *_LAST,
)
_RECORD_PROGRESS = f"UPDATE tasks SET {', '.join(f'{f} = :{f}' for f in _PROGRESS_FIELDS)} WHERE seq = :seq"
_APPEND_ATTEMPT = (
    f"INSERT INTO attempts (task_name, seq, {', '.join(_ATTEMPT_FIELDS)}) VALUES (?, "
    "(SELECT coalesce(max(seq), 0) + 1 FROM attempts WHERE task_name = ?), ?, ?, ?, ?, ?, ?)"
)
_DELETE_FINISHED = "DELETE FROM tasks WHERE seq = ?"
#: Most tasks one statement looks up by ``seq`` (well under SQLite's limit on bound parameters).
_LOOKUP_CHUNK = 500
#: Most decoded requests kept for queued tasks (:class:`_RequestCache`).
REQUEST_CACHE_SIZE = 10_000
_TOMBSTONE = "INSERT OR REPLACE INTO task_tombstones (name, queue, until) VALUES (?, ?, ?)"
#: What decoding a damaged row raises (JSON, codec and model validation).
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, InvalidArgument)
#: What a failed statement, or decoding a damaged row, raises.
_FAILURES = (sqlite3.Error, *_UNREADABLE)
#: The state of a task whose row cannot be decoded: set aside, never claimed, listed or counted.
UNREADABLE_STATE = "UNREADABLE"
_SET_ASIDE = f"UPDATE tasks SET state = '{UNREADABLE_STATE}' WHERE seq = ?"


def _attempt_values(attempt: Attempt | None) -> tuple[Any, ...]:
    if attempt is None:
        return (None,) * len(_ATTEMPT_FIELDS)
    status = attempt.response_status
    return (
        attempt.schedule_time,
        attempt.dispatch_time,
        attempt.response_time,
        attempt.http_status,
        None if status is None else status.code,
        None if status is None else status.message,
    )


def _task_name_range(queue_name: str) -> tuple[str, str]:
    """Bounds, both excluded, of the names of a queue's tasks: ``".../tasks/"`` and ``".../tasks0"``.

    A queue's tasks are the names in between ('0' follows '/'), so the name index (the UNIQUE
    constraint's) serves a queue's tasks in name order, and no second index on names is kept.
    """
    return queue_name + "/tasks/", queue_name + "/tasks0"


def _attempt(values: tuple[Any, ...]) -> Attempt | None:
    schedule_time, dispatch_time, response_time, http_status, code, message = values
    if dispatch_time is None:
        return None
    return Attempt(
        schedule_time=schedule_time,
        dispatch_time=dispatch_time,
        response_time=response_time,
        http_status=http_status,
        response_status=None if code is None else RpcStatus(code, message),
    )


def _request_text(request: HttpRequest) -> str:
    """The stored form of a task's request."""
    return json.dumps(http_request_to_json(request, full=True))


def _task_row(task: Task, request_text: str | None = None) -> tuple[Any, ...]:
    """A task's column values in :data:`_TASK_FIELDS` order (bound by position: cheaper than by name)."""
    retry = task.retry_config
    return (
        task.name,
        task.queue_name,
        task.state.value,
        task.schedule_time,
        task.create_time,
        task.dispatch_deadline,
        task.dispatch_count,
        task.response_count,
        task.execution_count,
        _request_text(task.http_request) if request_text is None else request_text,
        None if retry is None else json.dumps(dataclasses.asdict(retry)),
        task.previous_response,
        *_attempt_values(task.first_attempt),
        *_attempt_values(task.last_attempt),
    )


def _task_params(task: Task) -> dict[str, Any]:
    """A task's column values by name, ``seq`` included."""
    params = dict(zip(_TASK_FIELDS, _task_row(task), strict=True))
    params["seq"] = task.uid
    return params


def _progress_params(task: Task) -> dict[str, Any]:
    params: dict[str, Any] = {
        "state": task.state.value,
        "schedule_time": task.schedule_time,
        "dispatch_count": task.dispatch_count,
        "response_count": task.response_count,
        "execution_count": task.execution_count,
        "previous_response": task.previous_response,
        "seq": task.uid,
    }
    params.update(zip(_FIRST, _attempt_values(task.first_attempt), strict=True))
    params.update(zip(_LAST, _attempt_values(task.last_attempt), strict=True))
    return params


class _RequestCache:
    """Decoded requests of live tasks, by ``seq``, with the stored text they were decoded from.

    Kept from insertion (or the first claim) until the task is deleted or exhausted, so a claim reads
    a task's request from here instead of decoding its JSON again; the text is compared with the
    row's, so a row changed behind the store's back is decoded (and checked) as usual. Bounded: when
    full, new entries are not kept (their tasks are decoded when claimed).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[int, tuple[str, HttpRequest]] = {}

    def keep(self, seq: int, text: str, request: HttpRequest) -> None:
        if len(self._entries) < self._size:
            self._entries[seq] = (text, request)

    def get(self, seq: int, text: str) -> HttpRequest | None:
        entry = self._entries.get(seq)
        return entry[1] if entry is not None and entry[0] == text else None

    def drop(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self._entries.pop(seq, None)

    def clear(self) -> None:
        self._entries.clear()


#: The numeric columns among a task row's first 13 (``schedule_time`` to ``execution_count``).
_NUMERIC = slice(4, 10)
_NUMERIC_FIELDS = _TASK_FIELDS[3:9]
_NUMBER_TYPES = (int, float)


def _numbers(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The numeric columns' values; SQLite keeps whatever was written, so text here is damage."""
    numbers = values[_NUMERIC]
    for column, value in zip(_NUMERIC_FIELDS, numbers, strict=True):
        if type(value) not in _NUMBER_TYPES:
            raise TypeError(f"{column} is {value!r}, not a number")
    return numbers


def _task(row: sqlite3.Row, request: HttpRequest | None = None) -> Task:
    """The task of a row of ``_TASK_COLUMNS`` (``request``: its decoded request, if known)."""
    values = tuple(row)
    seq, name, _, state, _, _, _, _, _, _, request_text, retry, previous_response = values[:13]
    schedule_time, create_time, deadline, dispatch_count, response_count, execution_count = _numbers(values)
    return Task(
        name=name,
        http_request=request or http_request_from_json(json.loads(request_text)),
        schedule_time=schedule_time,
        create_time=create_time,
        dispatch_deadline=deadline,
        dispatch_count=dispatch_count,
        response_count=response_count,
        execution_count=execution_count,
        first_attempt=_attempt(values[13:19]),
        last_attempt=_attempt(values[19:25]),
        retry_config=None if retry is None else RetryConfig(**json.loads(retry)),
        state=TaskState(state),
        previous_response=previous_response,
        uid=seq,
    )


def _readable(
    conn: sqlite3.Connection, rows: Sequence[sqlite3.Row], requests: _RequestCache | None = None
) -> list[Task]:
    """The tasks of ``rows``; each row that cannot be decoded is set aside, with one ERROR line.

    A row set aside is never claimed, listed or counted again, so one damaged task cannot stop its
    queue; DeleteTask, PurgeQueue and DeleteQueue still remove it. ``requests``: the claimed rows'
    decoded requests, taken from the cache where it holds them.
    """
    tasks: list[Task] = []
    for row in rows:
        try:
            if requests is None:
                tasks.append(_task(row))
                continue
            seq, text = row["seq"], row["http_request"]
            request = requests.get(seq, text)
            tasks.append(_task(row, request))
            if request is None:
                requests.keep(seq, text, tasks[-1].http_request)
        except _UNREADABLE as exc:
            conn.execute(_SET_ASIDE, (row["seq"],))
            log.error(
                "task %s cannot be read (%r); set aside as %s: it is not dispatched or listed, "
                "and DeleteTask removes it",
                row["name"],
                exc,
                UNREADABLE_STATE,
            )
    return tasks


def store_error(store: str, exc: BaseException) -> StoreError:
    """The error to raise for ``exc`` from ``store`` (e.g. ``"Task store /path"``).

    A full disk or database (``SQLITE_FULL``) is :class:`~local_runner.errors.StoreFull`, which the API
    answers with RESOURCE_EXHAUSTED; any other failure is a plain :class:`~local_runner.errors.StoreError`.
    """
    if isinstance(exc, sqlite3.Error):
        full = getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL
        name = getattr(exc, "sqlite_errorname", None)
        detail = f"{exc} ({name})" if name else str(exc)
        return (StoreFull if full else StoreError)(f"{store} failed: {detail}")
    return StoreError(f"{store} holds an unreadable record: {exc!r}")


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@contextlib.contextmanager
def write_transaction(
    conn: sqlite3.Connection, lock: contextlib.AbstractContextManager[object], store: str
) -> Iterator[sqlite3.Connection]:
    """A write transaction on ``conn`` under ``lock``: committed whole, or rolled back whole on any error.

    SQLite and decoding failures are raised as :func:`store_error` names them.
    """
    with lock:
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, _FAILURES):
                raise store_error(store, exc) from exc
            raise


class SQLiteTaskStore(TaskStore):
    """Tasks in one SQLite file (or ``":memory:"``); every method is one transaction."""

    def __init__(self, path: Path | str) -> None:
        """Open (creating if needed) the store at ``path``.

        Raises:
            StoreError: if the file cannot be opened, is not a task store, or is corrupt.
        """
        self._path = str(path)
        self._lock = threading.Lock()
        #: Queues as last written or read through this store: read for every task created and
        #: dispatched, written rarely, and only through this connection.
        self._queues: dict[str, Queue] = {}
        self._requests = _RequestCache(REQUEST_CACHE_SIZE)
        try:
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"Cannot open the task store {self._path}: {exc}") from exc
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        conn = self._conn
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"The task store {self._path} has schema version {version}; this runner reads up to "
                    f"{SCHEMA_VERSION}. Use a newer runner or another data directory."
                )
            if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self._path} is an SQLite database but not a task store.")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise StoreError(f"The task store {self._path} is corrupt: {'; '.join(problems)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        except sqlite3.Error as exc:
            _rollback(self._conn)
            raise StoreError(f"Cannot open the task store {self._path}: {exc}") from exc

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._path

    def close(self) -> None:  # noqa: D102
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"Cannot close the task store {self._path}: {exc}") from exc

    # -- plumbing --------------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreError:
        return store_error(f"Task store {self._path}", exc)

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction: committed whole, or rolled back whole on any error."""
        return write_transaction(self._conn, self._lock, f"Task store {self._path}")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except _FAILURES as exc:
                raise self._error(exc) from exc

    # -- queues ----------------------------------------------------------------------------------

    def put_queue(self, queue: Queue) -> None:  # noqa: D102
        doc = json.dumps(queue_to_json(queue))
        with self._write() as conn:
            self._queues.pop(queue.name, None)
            conn.execute(
                "INSERT OR REPLACE INTO queues (name, parent, state, purge_time, doc) VALUES (?, ?, ?, ?, ?)",
                (queue.name, parse_queue_name(queue.name).parent, int(queue.state), queue.purge_time, doc),
            )

    def get_queue(self, name: str) -> Queue | None:  # noqa: D102
        queue = self._queues.get(name)  # no lock: filled and emptied under the lock, read atomically
        if queue is not None:
            return queue
        with self._read() as conn:
            queue = self._queues.get(name)
            if queue is not None:
                return queue
            row = conn.execute("SELECT state, purge_time, doc FROM queues WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            queue = self._queues[name] = self._queue(row)
            return queue

    def list_queues(self, parent: str | None) -> list[Queue]:  # noqa: D102
        with self._read() as conn:
            if parent is None:
                rows = conn.execute("SELECT state, purge_time, doc FROM queues ORDER BY name").fetchall()
            else:
                rows = conn.execute(
                    "SELECT state, purge_time, doc FROM queues WHERE parent = ? ORDER BY name", (parent,)
                ).fetchall()
            return [self._queue(row) for row in rows]

    @staticmethod
    def _queue(row: sqlite3.Row) -> Queue:
        queue = queue_from_json(json.loads(row["doc"]), zero_means_default=False)
        return queue.replace(state=QueueState(row["state"]), purge_time=row["purge_time"])

    def delete_queue(self, name: str, tombstone_until: float) -> bool:  # noqa: D102
        with self._write() as conn:
            self._queues.pop(name, None)
            if conn.execute("DELETE FROM queues WHERE name = ?", (name,)).rowcount == 0:
                return False
            self._requests.drop(
                row[0] for row in conn.execute("DELETE FROM tasks WHERE queue = ? RETURNING seq", (name,))
            )
            conn.execute("DELETE FROM attempts WHERE task_name > ? AND task_name < ?", _task_name_range(name))
            conn.execute("DELETE FROM task_tombstones WHERE queue = ?", (name,))
            conn.execute("DELETE FROM iam_policies WHERE queue = ?", (name,))
            conn.execute(
                "INSERT OR REPLACE INTO queue_tombstones (name, until) VALUES (?, ?)", (name, tombstone_until)
            )
            return True

    def queue_tombstoned(self, name: str, now: float) -> bool:  # noqa: D102
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM queue_tombstones WHERE name = ? AND until > ?", (name, now)
            ).fetchone()
            return row is not None

    def get_iam_policy(self, queue_name: str) -> dict[str, Any] | None:  # noqa: D102
        with self._read() as conn:
            row = conn.execute("SELECT doc FROM iam_policies WHERE queue = ?", (queue_name,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_iam_policy(self, queue_name: str, policy: Mapping[str, Any]) -> bool:  # noqa: D102
        doc = json.dumps(policy)
        with self._write() as conn:
            return bool(
                conn.execute(
                    "INSERT OR REPLACE INTO iam_policies (queue, doc) "
                    "SELECT name, ? FROM queues WHERE name = ?",
                    (doc, queue_name),
                ).rowcount
            )

    # -- tasks -----------------------------------------------------------------------------------

    def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[AlreadyExists | None]:  # noqa: D102
        if not tasks:
            return []
        texts = [_request_text(task.http_request) for task in tasks]
        rows = [_task_row(task, text) for task, text in zip(tasks, texts, strict=True)]
        with self._write() as conn:
            results = [self._insert(conn, row, now) for row in rows]
        for task, text, result in zip(tasks, texts, results, strict=True):
            if not isinstance(result, AlreadyExists):
                self._requests.keep(result, text, task.http_request)
        return [result if isinstance(result, AlreadyExists) else None for result in results]

    @classmethod
    def _insert(cls, conn: sqlite3.Connection, row: tuple[Any, ...], now: float) -> AlreadyExists | int:
        """Insert one task; its ``seq``, or why it was refused."""
        try:
            cursor = conn.execute(_INSERT_NEW_TASK, row)
        except sqlite3.IntegrityError:  # the name is held by a task (UNIQUE)
            return cls._insert_checked(conn, row, now)
        if not cursor.rowcount:  # the name has a tombstone, in force or not
            return cls._insert_checked(conn, row, now)
        return int(cursor.lastrowid or 0)

    @staticmethod
    def _insert_checked(conn: sqlite3.Connection, row: tuple[Any, ...], now: float) -> AlreadyExists | int:
        name = row[0]
        existing = conn.execute("SELECT state FROM tasks WHERE name = ?", (name,)).fetchone()
        if existing is not None and existing[0] != TaskState.EXHAUSTED.value:
            return AlreadyExists(TASK_EXISTS)
        tombstone = conn.execute("SELECT until FROM task_tombstones WHERE name = ?", (name,)).fetchone()
        if tombstone is not None and tombstone[0] > now:
            return AlreadyExists(TASK_TOMBSTONED)
        conn.execute("DELETE FROM tasks WHERE name = ?", (name,))  # an earlier task's, exhausted
        conn.execute("DELETE FROM task_tombstones WHERE name = ?", (name,))
        conn.execute("DELETE FROM attempts WHERE task_name = ?", (name,))  # an earlier task's
        return int(conn.execute(_INSERT_TASK, row).lastrowid or 0)

    def get_task(self, name: str) -> Task | None:  # noqa: D102
        with self._read() as conn:
            row = conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE name = ?", (name,)).fetchone()
            try:
                return None if row is None else _task(row)
            except _UNREADABLE as exc:
                raise StoreError(
                    f"Task store {self._path} holds an unreadable record of {name}: {exc!r}"
                ) from exc

    def task_tombstoned(self, name: str, now: float) -> bool:  # noqa: D102
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM task_tombstones WHERE name = ? AND until > ?", (name, now)
            ).fetchone()
            return row is not None

    def list_tasks(  # noqa: D102
        self, queue_name: str, after: str | None = None, limit: int = 1000, include_exhausted: bool = False
    ) -> list[Task]:
        shown = [TaskState.QUEUED, TaskState.DISPATCHING] + [TaskState.EXHAUSTED] * include_exhausted
        states = ", ".join(f"'{state.value}'" for state in shown)
        tasks: list[Task] = []
        first, end = _task_name_range(queue_name)
        with self._read() as conn:
            while len(tasks) < limit:  # more than once only if a damaged row was set aside
                wanted = limit - len(tasks)
                rows = conn.execute(
                    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE name > ? AND name < ? AND state IN ({states}) "
                    "ORDER BY name LIMIT ?",
                    (max(after or "", first), end, wanted),
                ).fetchall()
                tasks += _readable(conn, rows)
                if len(rows) < wanted:
                    break
                after = rows[-1]["name"]
        return tasks

    def count_tasks(self, queue_name: str) -> dict[str, int]:  # noqa: D102
        counts = {state.value: 0 for state in TaskState}
        with self._read() as conn:
            for state, count in conn.execute(
                "SELECT state, count(*) FROM tasks WHERE queue = ? GROUP BY state", (queue_name,)
            ):
                if state in counts:  # not a task set aside as unreadable
                    counts[state] = count
        return counts

    def list_tasks_in_state(  # noqa: D102
        self, queue_name: str, state: TaskState, after: tuple[float, int] | None = None, limit: int = 100
    ) -> list[Task]:
        key = after or (float("-inf"), 0)
        tasks: list[Task] = []
        with self._read() as conn:
            while len(tasks) < limit:  # more than once only if a damaged row was set aside
                wanted = limit - len(tasks)
                rows = conn.execute(  # served by the tasks_due index: (queue, state, schedule_time, seq)
                    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue = ? AND state = ? "
                    "AND (schedule_time, seq) > (?, ?) ORDER BY schedule_time, seq LIMIT ?",
                    (queue_name, state.value, *key, wanted),
                ).fetchall()
                tasks += _readable(conn, rows)
                if len(rows) < wanted:
                    break
                key = (rows[-1]["schedule_time"], rows[-1]["seq"])
        return tasks

    def count_tasks_upto(self, queue_name: str, now: float, cap: int) -> TaskCounts:  # noqa: D102
        capped = "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE queue = ? AND state = ? {} LIMIT ?)"
        with self._read() as conn:

            def count(state: TaskState, clause: str = "", *args: float) -> int:
                row = conn.execute(capped.format(clause), (queue_name, state.value, *args, cap)).fetchone()
                return int(row[0])

            return TaskCounts(
                due=count(TaskState.QUEUED, "AND schedule_time <= ?", now),
                later=count(TaskState.QUEUED, "AND schedule_time > ?", now),
                dispatching=count(TaskState.DISPATCHING),
                exhausted=count(TaskState.EXHAUSTED),
            )

    def delete_task(self, name: str, tombstone_until: float) -> bool:  # noqa: D102
        with self._write() as conn:
            row = conn.execute(
                "DELETE FROM tasks WHERE name = ? AND state != 'EXHAUSTED' RETURNING queue, seq", (name,)
            ).fetchone()
            if row is None:
                return False
            conn.execute(_TOMBSTONE, (name, row[0], tombstone_until))
            self._requests.drop([row[1]])
            return True

    def claim_due(self, queue_name: str, now: float, limit: int) -> list[Task]:  # noqa: D102
        if limit <= 0:
            return []
        with self._write() as conn:
            rows = conn.execute(_CLAIM_DUE, {"queue": queue_name, "now": now, "limit": limit}).fetchall()
            rows.sort(key=lambda row: (row["schedule_time"], row["seq"]))  # RETURNING order is unspecified
            return _readable(conn, rows, self._requests)

    def claim_task(self, name: str, now: float) -> Task | None:  # noqa: D102
        with self._write() as conn:
            row = conn.execute(_CLAIM_TASK, {"name": name, "now": now}).fetchone()
            readable = _readable(conn, [] if row is None else [row], self._requests)
            return readable[0] if readable else None

    def finish_attempts(self, finished: Sequence[FinishedAttempt]) -> list[bool]:  # noqa: D102
        if not finished:
            return []
        with self._write() as conn:
            applies = self._in_flight(conn, finished)
            done = [item for item, applied in zip(finished, applies, strict=True) if applied]
            conn.executemany(
                _DELETE_FINISHED,
                [(item.task.uid,) for item in done if item.deletes],
            )
            conn.executemany(
                _RECORD_PROGRESS, [_progress_params(item.task) for item in done if not item.deletes]
            )
            conn.executemany(
                _TOMBSTONE,
                [
                    (item.task.name, item.task.queue_name, item.tombstone_until)
                    for item in done
                    if item.tombstone_until is not None
                ],
            )
            conn.executemany(
                _APPEND_ATTEMPT,
                [(item.task.name, item.task.name, *_attempt_values(item.attempt)) for item in done],
            )
        self._requests.drop(item.task.uid for item in done if item.task.state is not TaskState.QUEUED)
        return applies

    @staticmethod
    def _in_flight(conn: sqlite3.Connection, finished: Sequence[FinishedAttempt]) -> list[bool]:
        """Whether each item applies: its task is stored DISPATCHING with the item's dispatch count.

        An item after another of the same task never applies (the first one ended the attempt).
        """
        seqs = list(dict.fromkeys(item.task.uid for item in finished))
        stored: dict[int, tuple[str, int]] = {}
        for start in range(0, len(seqs), _LOOKUP_CHUNK):
            chunk = seqs[start : start + _LOOKUP_CHUNK]
            stored.update(
                (seq, (name, count))
                for seq, name, count in conn.execute(
                    "SELECT seq, name, dispatch_count FROM tasks WHERE state = 'DISPATCHING' "
                    f"AND seq IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            )
        applies = []
        for item in finished:
            applies.append(stored.pop(item.task.uid, None) == (item.task.name, item.task.dispatch_count))
        return applies

    def attempts(self, name: str) -> list[Attempt]:  # noqa: D102
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_ATTEMPT_FIELDS)} FROM attempts WHERE task_name = ? ORDER BY seq", (name,)
            ).fetchall()
            return [a for a in (_attempt(tuple(row)) for row in rows) if a is not None]

    def purge(self, queue_name: str, purge_time: float, tombstone_until: float) -> int:  # noqa: D102
        with self._write() as conn:
            names = conn.execute(
                "DELETE FROM tasks WHERE queue = ? AND create_time <= ? RETURNING name, seq",
                (queue_name, purge_time),
            ).fetchall()
            self._requests.drop(row[1] for row in names)
            conn.executemany(_TOMBSTONE, [(row[0], queue_name, tombstone_until) for row in names])
            return len(names)

    def replay_exhausted(self, name: str, now: float) -> Task | None:  # noqa: D102
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE name = ? AND state = 'EXHAUSTED'", (name,)
            ).fetchone()
            if row is None:
                return None
            replayed = replayed_task(_task(row), now)
            conn.execute("DELETE FROM task_tombstones WHERE name = ?", (name,))
            conn.execute(
                "UPDATE tasks SET "
                + ", ".join(f"{f} = :{f}" for f in _TASK_FIELDS[2:])
                + " WHERE name = :name",
                _task_params(replayed),
            )
            return replayed

    def recover_in_flight(self) -> int:  # noqa: D102
        with self._write() as conn:
            return conn.execute(
                "UPDATE tasks SET state = 'QUEUED', previous_response = ? WHERE state = 'DISPATCHING'",
                (NO_RESPONSE_STATUS,),
            ).rowcount

    def next_schedule_time(self, queue_name: str) -> float | None:  # noqa: D102
        with self._read() as conn:
            row = conn.execute(  # a damaged, non-numeric schedule time is never due, nor the next one
                "SELECT schedule_time FROM tasks WHERE queue = ? AND state = 'QUEUED' "
                "AND typeof(schedule_time) IN ('real', 'integer') ORDER BY schedule_time LIMIT 1",
                (queue_name,),
            ).fetchone()
            return None if row is None else float(row[0])

    def prune(self, now: float) -> int:  # noqa: D102
        with self._write() as conn:
            conn.execute(
                "DELETE FROM attempts WHERE task_name IN (SELECT name FROM task_tombstones WHERE until <= ?) "
                "AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.name = attempts.task_name)",
                (now,),
            )
            tasks = conn.execute("DELETE FROM task_tombstones WHERE until <= ?", (now,)).rowcount
            queues = conn.execute("DELETE FROM queue_tombstones WHERE until <= ?", (now,)).rowcount
            return int(tasks + queues)

    def reset(self) -> None:  # noqa: D102
        with self._write() as conn:
            self._queues.clear()
            self._requests.clear()
            for table in (
                "queues",
                "queue_tombstones",
                "iam_policies",
                "tasks",
                "task_tombstones",
                "attempts",
            ):
                conn.execute(f"DELETE FROM {table}")
