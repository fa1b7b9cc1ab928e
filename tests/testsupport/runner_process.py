"""``runner serve`` as a real child process, for tests that need one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_URL = re.compile(r"runner on (http://\S+)")
#: Lowers the open-file soft limit (``ulimit -n``), then becomes the command: same process id.
_LIMIT_THEN_EXEC = (
    "import os, resource, sys; hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class RunnerProcess:
    """A ``python -m local_runner serve`` child process on a free port (``data_dir=None``: in memory)."""

    def __init__(self, data_dir: Path | None, *args: str, open_files: int | None = None) -> None:
        self.data_dir = data_dir
        self.args = args
        self.open_files = open_files
        self.log: list[str] = []
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> RunnerProcess:
        storage = ["--in-memory"] if self.data_dir is None else ["--data-dir", str(self.data_dir)]
        command = [sys.executable, "-m", "local_runner", "serve", "--port", "0", *storage]
        if self.open_files is not None:
            command = [sys.executable, "-c", _LIMIT_THEN_EXEC, str(self.open_files), *command]
        self._process = subprocess.Popen(
            [*command, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        found = threading.Event()
        stream = self._process.stderr
        assert stream is not None

        def pump() -> None:
            for line in stream:
                self.log.append(line.rstrip("\n"))
                match = _URL.search(line)
                if match and not self.url:
                    self.url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(timeout) or not self.url:
            self.kill()
            raise AssertionError("runner did not start:\n" + "\n".join(self.log))
        return self

    @property
    def pid(self) -> int:
        """The process id of the running runner."""
        assert self._process is not None, "start() was not called"
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C, then wait for a clean exit; returns the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit; returns the exit code (``-N``: killed by signal N)."""
        assert self._process is not None
        return self._process.wait(timeout)

    def close(self) -> None:
        self.kill()
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()


@pytest.fixture
def runner_process() -> Iterator[Callable[..., RunnerProcess]]:
    """Start runner processes (``start(data_dir, *args, open_files=None)``); all are killed at teardown."""
    started: list[RunnerProcess] = []

    def start(data_dir: Path | None, *args: str, open_files: int | None = None) -> RunnerProcess:
        process = RunnerProcess(data_dir, *args, open_files=open_files)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.close()
