"""Fixtures for console tests: a runner on a virtual clock and a browser-like HTTP session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from testsupport.runner_process import runner_process

from local_runner.clock import VirtualClock
from local_runner.config import RunnerSettings
from local_runner.server import RunnerServer

PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/q"
__all__ = ["runner_process"]
_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


class Page:
    """An HTTP client that sends what a browser on the console's own pages sends."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = requests.Session()

    def get(self, path: str, **headers: str) -> requests.Response:
        return self.http.get(self.base + path, headers=headers, timeout=10, allow_redirects=False)

    def token(self) -> str:
        found = _TOKEN.search(self.get("/").text)
        assert found is not None
        return found.group(1)

    def post(self, path: str, fields: dict[str, Any], **headers: str) -> requests.Response:
        """A form post; ``Origin`` is the runner's own unless given."""
        sent = {"Origin": self.base, "Sec-Fetch-Site": "same-origin", **headers}
        sent = {key.replace("_", "-"): value for key, value in sent.items() if value is not None}
        return self.http.post(self.base + path, data=fields, headers=sent, timeout=10, allow_redirects=False)

    def act(self, target: str, verb: str, **fields: str) -> requests.Response:
        """Press a console button: post the form with this process's token."""
        return self.post(f"/console/{target}:{verb}", {"csrf": self.token(), **fields})


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def start_runner(clock: VirtualClock, data_dir: Path | None = None, **settings: Any) -> RunnerServer:
    return RunnerServer(
        RunnerSettings(port=0, data_dir=data_dir, shutdown_grace=0.5, **settings), clock=clock
    ).start()


@pytest.fixture
def runner(clock: VirtualClock) -> Iterator[RunnerServer]:
    server = start_runner(clock)
    yield server
    server.stop()


@pytest.fixture
def page(runner: RunnerServer) -> Page:
    return Page(runner.base_url)
