"""The default task store: one SQLite file in WAL mode that survives restarts."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from local_runner import codec
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
CREATE INDEX IF NOT EXISTS tasks_by_name ON tasks (queue, name);
CREATE TABLE IF NOT EXISTS task_tombstones (name TEXT PRIMARY KEY, queue TEXT NOT NULL, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS task_tombstones_queue ON task_tombstones (queue);
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
_INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(_TASK_FIELDS)}) VALUES ({', '.join(':' + f for f in _TASK_FIELDS)})"
)
_REPLACE_TASK = (
    "UPDATE tasks SET "
    + ", ".join(f"{f} = :{f}" for f in _TASK_FIELDS[2:])
    + " WHERE name = :name AND seq = :seq AND state = 'DISPATCHING' AND dispatch_count = :dispatch_count"
)
_APPEND_ATTEMPT = (
    f"INSERT INTO attempts (task_name, seq, {', '.join(_ATTEMPT_FIELDS)}) VALUES (?, "
    "(SELECT coalesce(max(seq), 0) + 1 FROM attempts WHERE task_name = ?), ?, ?, ?, ?, ?, ?)"
)
_DELETE_FINISHED = (
    "DELETE FROM tasks WHERE name = ? AND seq = ? AND state = 'DISPATCHING' AND dispatch_count = ?"
)
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


def _task_params(task: Task) -> dict[str, Any]:
    retry = task.retry_config
    params: dict[str, Any] = {
        "name": task.name,
        "queue": task.queue_name,
        "state": task.state.value,
        "schedule_time": task.schedule_time,
        "create_time": task.create_time,
        "dispatch_deadline": task.dispatch_deadline,
        "dispatch_count": task.dispatch_count,
        "response_count": task.response_count,
        "execution_count": task.execution_count,
        "http_request": json.dumps(codec.http_request_to_json(task.http_request, full=True)),
        "retry_config": None if retry is None else json.dumps(dataclasses.asdict(retry)),
        "previous_response": task.previous_response,
        "seq": task.uid,
    }
    params.update(zip(_FIRST, _attempt_values(task.first_attempt), strict=True))
    params.update(zip(_LAST, _attempt_values(task.last_attempt), strict=True))
    return params


def _number(row: sqlite3.Row, column: str) -> Any:
    """A numeric column's value; SQLite keeps whatever was written, so text here is damage."""
    value = row[column]
    if not isinstance(value, int | float):
        raise TypeError(f"{column} is {value!r}, not a number")
    return value


def _task(row: sqlite3.Row) -> Task:
    retry = row["retry_config"]
    return Task(
        name=row["name"],
        http_request=codec.http_request_from_json(json.loads(row["http_request"])),
        schedule_time=_number(row, "schedule_time"),
        create_time=_number(row, "create_time"),
        dispatch_deadline=_number(row, "dispatch_deadline"),
        dispatch_count=_number(row, "dispatch_count"),
        response_count=_number(row, "response_count"),
        execution_count=_number(row, "execution_count"),
        first_attempt=_attempt(tuple(row[c] for c in _FIRST)),
        last_attempt=_attempt(tuple(row[c] for c in _LAST)),
        retry_config=None if retry is None else RetryConfig(**json.loads(retry)),
        state=TaskState(row["state"]),
        previous_response=row["previous_response"],
        uid=row["seq"],
    )


def _readable(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[Task]:
    """The tasks of ``rows``; each row that cannot be decoded is set aside, with one ERROR line.

    A row set aside is never claimed, listed or counted again, so one damaged task cannot stop its
    queue; DeleteTask, PurgeQueue and DeleteQueue still remove it.
    """
    tasks: list[Task] = []
    for row in rows:
        try:
            tasks.append(_task(row))
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
            self._rollback()
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

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, sqlite3.Error):
            full = getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL
            name = getattr(exc, "sqlite_errorname", None)
            detail = f"{exc} ({name})" if name else str(exc)
            return (StoreFull if full else StoreError)(f"Task store {self._path} failed: {detail}")
        return StoreError(f"Task store {self._path} holds an unreadable record: {exc!r}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed whole, or rolled back whole on any error."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, _FAILURES):
                    raise self._error(exc) from exc
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except _FAILURES as exc:
                raise self._error(exc) from exc

    # -- queues ----------------------------------------------------------------------------------

    def put_queue(self, queue: Queue) -> None:  # noqa: D102
        doc = json.dumps(codec.queue_to_json(queue))
        with self._write() as conn:
            self._queues.pop(queue.name, None)
            conn.execute(
                "INSERT OR REPLACE INTO queues (name, parent, state, purge_time, doc) VALUES (?, ?, ?, ?, ?)",
                (queue.name, parse_queue_name(queue.name).parent, int(queue.state), queue.purge_time, doc),
            )

    def get_queue(self, name: str) -> Queue | None:  # noqa: D102
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
        queue = codec.queue_from_json(json.loads(row["doc"]), zero_means_default=False)
        return queue.replace(state=QueueState(row["state"]), purge_time=row["purge_time"])

    def delete_queue(self, name: str, tombstone_until: float) -> bool:  # noqa: D102
        with self._write() as conn:
            self._queues.pop(name, None)
            if conn.execute("DELETE FROM queues WHERE name = ?", (name,)).rowcount == 0:
                return False
            conn.execute("DELETE FROM tasks WHERE queue = ?", (name,))
            # Task names under the queue sort between ".../tasks/" and ".../tasks0" ('0' follows '/').
            conn.execute(
                "DELETE FROM attempts WHERE task_name > ? AND task_name < ?",
                (name + "/tasks/", name + "/tasks0"),
            )
            conn.execute("DELETE FROM task_tombstones WHERE queue = ?", (name,))
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

    # -- tasks -----------------------------------------------------------------------------------

    def insert_tasks(self, tasks: Sequence[Task], now: float) -> list[AlreadyExists | None]:  # noqa: D102
        if not tasks:
            return []
        rows = [_task_params(task) for task in tasks]
        with self._write() as conn:
            return [self._insert(conn, row, now) for row in rows]

    @staticmethod
    def _insert(conn: sqlite3.Connection, row: dict[str, Any], now: float) -> AlreadyExists | None:
        name = row["name"]
        existing = conn.execute("SELECT state FROM tasks WHERE name = ?", (name,)).fetchone()
        if existing is not None and existing[0] != TaskState.EXHAUSTED.value:
            return AlreadyExists(TASK_EXISTS)
        tombstone = conn.execute("SELECT until FROM task_tombstones WHERE name = ?", (name,)).fetchone()
        if tombstone is not None and tombstone[0] > now:
            return AlreadyExists(TASK_TOMBSTONED)
        conn.execute("DELETE FROM tasks WHERE name = ?", (name,))  # an earlier task's, exhausted
        conn.execute("DELETE FROM task_tombstones WHERE name = ?", (name,))
        conn.execute("DELETE FROM attempts WHERE task_name = ?", (name,))  # an earlier task's
        conn.execute(_INSERT_TASK, row)
        return None

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
        with self._read() as conn:
            while len(tasks) < limit:  # more than once only if a damaged row was set aside
                wanted = limit - len(tasks)
                rows = conn.execute(
                    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue = ? AND name > ? AND state IN ({states}) "
                    "ORDER BY name LIMIT ?",
                    (queue_name, after or "", wanted),
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
                "DELETE FROM tasks WHERE name = ? AND state != 'EXHAUSTED' RETURNING queue", (name,)
            ).fetchone()
            if row is None:
                return False
            conn.execute(_TOMBSTONE, (name, row[0], tombstone_until))
            return True

    def claim_due(self, queue_name: str, now: float, limit: int) -> list[Task]:  # noqa: D102
        if limit <= 0:
            return []
        with self._write() as conn:
            rows = conn.execute(_CLAIM_DUE, {"queue": queue_name, "now": now, "limit": limit}).fetchall()
            rows.sort(key=lambda row: (row["schedule_time"], row["seq"]))  # RETURNING order is unspecified
            return _readable(conn, rows)

    def claim_task(self, name: str, now: float) -> Task | None:  # noqa: D102
        with self._write() as conn:
            row = conn.execute(_CLAIM_TASK, {"name": name, "now": now}).fetchone()
            readable = _readable(conn, [] if row is None else [row])
            return readable[0] if readable else None

    def finish_attempts(self, finished: Sequence[FinishedAttempt]) -> list[bool]:  # noqa: D102
        if not finished:
            return []
        with self._write() as conn:
            return [self._finish(conn, item.task, item.attempt, item.tombstone_until) for item in finished]

    @staticmethod
    def _finish(
        conn: sqlite3.Connection, task: Task, attempt: Attempt, tombstone_until: float | None
    ) -> bool:
        if tombstone_until is None or task.state is TaskState.EXHAUSTED:
            changed = conn.execute(_REPLACE_TASK, _task_params(task)).rowcount
        else:
            changed = conn.execute(_DELETE_FINISHED, (task.name, task.uid, task.dispatch_count)).rowcount
        if not changed:
            return False
        if tombstone_until is not None:
            conn.execute(_TOMBSTONE, (task.name, task.queue_name, tombstone_until))
        conn.execute(_APPEND_ATTEMPT, (task.name, task.name, *_attempt_values(attempt)))
        return True

    def attempts(self, name: str) -> list[Attempt]:  # noqa: D102
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_ATTEMPT_FIELDS)} FROM attempts WHERE task_name = ? ORDER BY seq", (name,)
            ).fetchall()
            return [a for a in (_attempt(tuple(row)) for row in rows) if a is not None]

    def purge(self, queue_name: str, purge_time: float, tombstone_until: float) -> int:  # noqa: D102
        with self._write() as conn:
            names = conn.execute(
                "DELETE FROM tasks WHERE queue = ? AND create_time <= ? RETURNING name",
                (queue_name, purge_time),
            ).fetchall()
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
            for table in ("queues", "queue_tombstones", "tasks", "task_tombstones", "attempts"):
                conn.execute(f"DELETE FROM {table}")
