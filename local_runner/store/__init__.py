"""Where the runner keeps queues, tasks, tombstones and attempt history."""

from __future__ import annotations

from pathlib import Path

from local_runner.errors import StoreError
from local_runner.store.base import FinishedAttempt, TaskCounts, TaskStore
from local_runner.store.dir_lock import LOCK_FILENAME, DataDirInUse, DataDirLock
from local_runner.store.memory import MemoryTaskStore
from local_runner.store.sqlite import SQLiteTaskStore

#: The database file inside a data directory.
DB_FILENAME = "runner.sqlite3"

__all__ = [
    "DB_FILENAME",
    "LOCK_FILENAME",
    "DataDirInUse",
    "DataDirLock",
    "FinishedAttempt",
    "MemoryTaskStore",
    "SQLiteTaskStore",
    "TaskCounts",
    "TaskStore",
    "open_store",
]


def open_store(data_dir: Path | None) -> TaskStore:
    """The store for a data directory: SQLite in ``data_dir/runner.sqlite3``, or memory if ``None``.

    Raises:
        StoreError: if the directory cannot be created or the database cannot be opened.
    """
    if data_dir is None:
        return MemoryTaskStore()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"Cannot create the data directory {data_dir}: {exc}") from exc
    return SQLiteTaskStore(data_dir / DB_FILENAME)
