"""Contract fixtures: a real ``runner serve`` process for the official client to talk to."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

_URL = re.compile(r"runner on (http://\S+)")


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    """``python -m local_runner serve --port 0 --in-memory`` as a child process; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local_runner", "serve", "--port", "0", "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    found: list[str] = []
    log: list[str] = []
    started = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            match = _URL.search(line)
            if match and not found:
                found.append(match.group(1))
                started.set()
        started.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert started.wait(20) and found, "runner did not start:\n" + "".join(log)
        yield found[0]
    finally:
        process.kill()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()
