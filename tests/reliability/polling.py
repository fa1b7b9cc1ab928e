"""Bounded waiting (real time) for another thread or process to reach a state; never a timed assertion."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds; fail if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        threading.Event().wait(0.005)
