"""Contract fixtures: a real ``runner serve`` process for the official client to talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testsupport.runner_process import RunnerProcess


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    """``python -m local_runner serve --port 0 --in-memory`` as a child process; yields its URL."""
    process = RunnerProcess(None).start()
    yield process.url
    process.close()
