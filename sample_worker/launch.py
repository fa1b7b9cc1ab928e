"""Start the runner and the worker as child processes, each log line to a callback (demo and tests)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

LineCallback = Callable[[str], None]
#: The gunicorn command of the Dockerfile, minus the bind address.
GUNICORN = ["-m", "gunicorn", "--config", "python:sample_worker.gunicorn_conf"]
APP = "sample_worker.app:create_app()"
_RUNNER_URL = re.compile(r"runner on (http://\S+)")


class ChildProcess:
    """A child process in its own session (Ctrl-C reaches only the parent, which stops it in order).

    Args:
        command: The command line.
        env: Its whole environment.
        on_line: Called with each line it writes to stderr (and stdout), from a reader thread.
        pass_fds: File descriptors it inherits (e.g. a listening socket).
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        on_line: LineCallback,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.lines: list[str] = []
        self._on_line = on_line
        self._process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._on_line(line)

    @property
    def pid(self) -> int:
        """The process id."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self._process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Sends ``signum`` and waits for the exit (SIGKILL after ``timeout``); returns the exit code."""
        if self._process.poll() is None:
            self._process.send_signal(signum)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout)
        self._reader.join(timeout)
        if self._process.stdout is not None:
            self._process.stdout.close()
        return self._process.returncode


@contextmanager
def _stopped_on_failure(process: ChildProcess) -> Iterator[None]:
    """Stops ``process`` if the block raises (a failed start, or Ctrl-C while waiting for it)."""
    try:
        yield
    except BaseException:
        process.stop()
        raise


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``extra``, with unbuffered Python output."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def start_runner(
    args: Sequence[str], on_line: LineCallback, timeout: float = 30.0
) -> tuple[ChildProcess, str]:
    """Starts ``runner serve --port 0 ARGS``; returns it and its URL once it listens.

    Raises:
        RuntimeError: It exited or said nothing about its URL within ``timeout`` seconds.
    """
    found = threading.Event()
    url: list[str] = []

    def watch(line: str) -> None:
        match = _RUNNER_URL.search(line)
        if match and not url:
            url.append(match.group(1))
            found.set()
        on_line(line)

    command = [sys.executable, "-m", "local_runner", "serve", "--port", "0", *args]
    process = ChildProcess(command, child_env({}), watch)
    deadline = time.monotonic() + timeout
    with _stopped_on_failure(process):
        while not found.wait(0.1):
            if not process.running or time.monotonic() > deadline:
                raise RuntimeError("the runner did not start:\n" + "\n".join(process.lines))
    return process, url[0]


def start_worker(
    env: Mapping[str, str], on_line: LineCallback, timeout: float = 30.0
) -> tuple[ChildProcess, str]:
    """Starts the worker under gunicorn on a free loopback port; returns it and its URL once it answers.

    The parent binds the socket and hands it over (``--bind fd://N``), so the port is known before the
    worker starts and ``TASKTOOLKIT_BASE_URL`` can name it.

    Raises:
        RuntimeError: The worker exited or did not answer ``/healthz`` within ``timeout`` seconds.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        command = [sys.executable, *GUNICORN, "--bind", f"fd://{listener.fileno()}", APP]
        worker_env = child_env({"TASKTOOLKIT_BASE_URL": url, **env})
        process = ChildProcess(command, worker_env, on_line, pass_fds=[listener.fileno()])
    deadline = time.monotonic() + timeout
    with _stopped_on_failure(process):
        while process.running and time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/healthz", timeout=2).ok:
                    return process, url
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the worker did not start:\n" + "\n".join(process.lines))


def queue_file() -> Path:
    """The sample's queue file, for ``runner serve --queues``."""
    return Path(__file__).with_name("queues.yaml")
