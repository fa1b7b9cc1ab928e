"""One runner per data directory: an exclusive lock that the OS drops when its process dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from local_runner.errors import StoreError

#: The lock file inside a data directory; it holds the pid of the runner that has the directory.
LOCK_FILENAME = "runner.lock"


class DataDirInUse(StoreError):
    """Another runner holds the data directory."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/runner.lock``, held until :meth:`release` or process exit.

    The kernel releases it when the process ends in any way (``kill -9`` included), so a crashed runner
    never leaves the directory locked. Only ``runner serve`` takes it: the ``runner queues``/``tasks``
    commands talk to a running runner over its API, and tools that read the SQLite file directly are not
    kept out.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock ``data_dir`` (created if missing) for this process and write its pid into the lock file.

        Raises:
            DataDirInUse: another process holds the lock; the message names the directory and its pid.
            StoreError: the directory or the lock file cannot be created, or the file system has no locks.
        """
        path = data_dir / LOCK_FILENAME
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"Cannot create the lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(
                f"The data directory {data_dir} is in use by another runner (pid {holder}); stop it or "
                "use another data directory."
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"Cannot lock {path}: {exc.strerror}") from exc
        with contextlib.suppress(OSError):  # the pid only informs; a full disk is reported by the store
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the directory up (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> str:
    """The pid the holder wrote, or ``unknown`` if it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
