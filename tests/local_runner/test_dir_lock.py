"""One runner per data directory: the lock, and the server that takes it."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from local_runner.config import RunnerSettings
from local_runner.engine.slots import ConnectionLimitError
from local_runner.errors import StoreError
from local_runner.server import RunnerServer
from local_runner.store import LOCK_FILENAME, DataDirInUse, DataDirLock


def test_second_lock_is_refused_naming_directory_and_holder_until_released(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = DataDirLock.acquire(data_dir)  # creates the directory
    assert (data_dir / LOCK_FILENAME).read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirInUse) as refused:
        DataDirLock.acquire(data_dir)
    assert str(refused.value) == (
        f"The data directory {data_dir} is in use by another runner (pid {os.getpid()}); stop it or use "
        "another data directory."
    )
    first.release()
    first.release()  # idempotent
    DataDirLock.acquire(data_dir).release()


def test_lock_in_a_directory_that_cannot_exist_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="Cannot create the lock file"):
        DataDirLock.acquire(blocker / "data")


def test_server_holds_its_data_directory_until_stopped(tmp_path: Path) -> None:
    settings = RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.5)
    with RunnerServer(settings), pytest.raises(DataDirInUse, match=str(tmp_path)):
        RunnerServer(settings)
    with RunnerServer(settings):  # released by stop()
        pass
    with (
        RunnerServer(RunnerSettings(port=0, data_dir=None)),
        RunnerServer(RunnerSettings(port=0, data_dir=None)),
    ):
        pass  # in memory: nothing to share, nothing locked


def _bound_port() -> tuple[socket.socket, int]:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port: int = blocker.getsockname()[1]
    return blocker, port


def test_failed_start_or_run_releases_the_data_directory(tmp_path: Path) -> None:
    blocker, port = _bound_port()
    with blocker:
        busy = RunnerSettings(host="127.0.0.1", port=port, data_dir=tmp_path, shutdown_grace=0.5)
        with pytest.raises(OSError):
            RunnerServer(busy).start()
        with pytest.raises(OSError):
            asyncio.run(RunnerServer(busy).run())
    with RunnerServer(RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.5)):
        pass


def test_failed_set_up_releases_the_data_directory(tmp_path: Path) -> None:
    with pytest.raises(ConnectionLimitError, match="max connections per host"):
        RunnerServer(RunnerSettings(port=0, data_dir=tmp_path, max_connections_per_host=10**9))
    with RunnerServer(RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.5)):
        pass
