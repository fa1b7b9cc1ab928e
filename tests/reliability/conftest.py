"""Reliability suite: fixtures, the figures table, and slow variants that run only on request.

Slow tests (``@pytest.mark.slow``) are skipped unless the marker expression names them
(``-m slow`` or ``-m "slow or not slow"``). Each scenario records its figures; the table is printed at
the end of the run and written to the file named by ``RELIABILITY_FIGURES``, if set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability.figures import Figures
from reliability.sink import gate, held_sink
from testsupport.runner_process import runner_process

from tests.tasktoolkit.conftest import (
    _no_emulator_env,
    firestore_emulator,
    google_certs_url,
    google_key,
    make_worker,
    other_key,
    own_firestore_emulator,
    own_redis_server,
    redis_server,
    serve,
    store_factory,
    task_headers,
    tokens,
)

__all__ = [
    "_no_emulator_env",
    "firestore_emulator",
    "gate",
    "google_certs_url",
    "google_key",
    "held_sink",
    "make_worker",
    "other_key",
    "own_firestore_emulator",
    "own_redis_server",
    "redis_server",
    "runner_process",
    "serve",
    "store_factory",
    "task_headers",
    "tokens",
]

_FIGURES = Figures()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip slow variants unless ``-m`` names the marker."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow variant: run with -m slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def figures() -> Iterator[Figures]:
    """The session's figures table."""
    yield _FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures table, and write it to ``$RELIABILITY_FIGURES`` if set."""
    if not _FIGURES.rows:
        return
    table = _FIGURES.markdown()
    terminalreporter.write_sep("=", "reliability figures")
    terminalreporter.write_line(table)
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        Path(target).write_text(table + "\n", encoding="utf-8")
