"""Fixtures for runner tests: ``runner serve`` as a real process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testsupport.runner_process import RunnerProcess


@pytest.fixture
def runner_process() -> Iterator[Callable[..., RunnerProcess]]:
    """Start runner processes (``start(data_dir, *args)``); every one is killed at teardown."""
    started: list[RunnerProcess] = []

    def start(data_dir: Path, *args: str) -> RunnerProcess:
        process = RunnerProcess(data_dir, *args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.close()
