"""pytest fixtures shipped with the package (registered through the ``pytest11`` entry point).

- ``fake_queue``: a :class:`~tasktoolkit.testing.FakeQueue` installed on ``tasktoolkit_app`` (its
  ``scheduler`` fires the app's scheduled jobs).
- ``tasktoolkit_app``: the app under test, named by the ini option ``tasktoolkit_app = "pkg.module:app"``
  (an app, or a factory called without arguments); or override the fixture in a ``conftest.py``.
- ``local_runner``: the local runner in this process, on a free loopback port and a virtual clock.

Importing this module (pytest does it for every run once the package is installed) loads neither the fake
queue nor the runner: each fixture imports what it needs when a test asks for it, and only ``local_runner``
imports the runner's server (``pip install 'tasktoolkit[runner]'``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import requests

if TYPE_CHECKING:
    from flask import Flask

    from tasktoolkit.client import TasksClient
    from tasktoolkit.testing import FakeQueue

APP_OPTION = "tasktoolkit_app"
RUNNER_PROJECT = "local-project"
RUNNER_LOCATION = "us-central1"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declares the ``tasktoolkit_app`` ini option."""
    parser.addini(
        APP_OPTION,
        "The Flask app the fake_queue fixture serves: 'package.module:app' or 'package.module:create_app'.",
        default="",
    )


@pytest.fixture
def tasktoolkit_app(request: pytest.FixtureRequest) -> Flask:
    """The app under test, from the ``tasktoolkit_app`` ini option (override this fixture to build it)."""
    from flask import Flask

    spec = str(request.config.getini(APP_OPTION))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        pytest.fail(
            f"{APP_OPTION} must be set to 'package.module:app' (or a factory) in the pytest ini, got "
            f"{spec!r}; or define a fixture named {APP_OPTION} that returns the app",
            pytrace=False,
        )
    target = getattr(importlib.import_module(module_name), attribute)
    app = target if isinstance(target, Flask) else target()
    if not isinstance(app, Flask):
        pytest.fail(f"{APP_OPTION} {spec!r} gave {app!r}, not a Flask app", pytrace=False)
    return app


@pytest.fixture
def fake_queue(tasktoolkit_app: Flask) -> FakeQueue:
    """A fake queue installed on the app: ``handler.enqueue`` lands in it, ``run_until_idle`` delivers.

    Its ``scheduler`` fires the app's ``@scheduled_handler`` jobs as ``advance`` passes their fire times.
    """
    from tasktoolkit.testing import FakeQueue

    return FakeQueue(tasktoolkit_app)


@dataclass
class LocalRunner:
    """A runner serving in this process, on a virtual clock (what the ``local_runner`` fixture yields)."""

    #: Base URL, e.g. ``http://127.0.0.1:40123`` (also what ``CLOUD_TASKS_EMULATOR_HOST`` would name).
    url: str
    #: A client of ``local-project`` / ``us-central1`` on this runner.
    client: TasksClient
    _http: requests.Session = field(default_factory=requests.Session, repr=False)

    def _post(self, path: str, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        response = self._http.post(f"{self.url}/runner/v1/{path}", json=body, timeout=timeout_s)
        answer: dict[str, Any] = response.json()
        if response.status_code != 200:
            raise AssertionError(f"runner answered {response.status_code} to {path}: {answer}")
        return answer

    def wait_idle(self, queue: str | None = None, timeout_s: float = 30.0) -> None:
        """Returns once nothing is in flight or due now (in ``queue``, or in every queue).

        Tasks scheduled later on the virtual clock do not count: :meth:`advance` brings them due.
        """
        body: dict[str, Any] = {"timeout": f"{timeout_s:g}s", "within": "0s"}
        if queue is not None:
            body["queue"] = f"{self.client.parent}/queues/{queue}"
        self._post("waitIdle", body, timeout_s + 10)

    def advance(self, delta: dt.timedelta | None = None, **kwargs: float) -> dt.datetime:
        """Moves the virtual clock forward and waits until what fell due is done; returns the new time.

        Args:
            delta: How far.
            **kwargs: Or, added to it, ``timedelta`` arguments such as ``hours=1``.
        """
        step = (delta or dt.timedelta()) + dt.timedelta(**kwargs)
        if step < dt.timedelta():
            raise ValueError(f"the clock cannot go back: {step}")
        answer = self._post("clock:advance", {"by": f"{step.total_seconds():.6f}s"}, 10)
        self.wait_idle()
        return dt.datetime.fromisoformat(str(answer["now"]).replace("Z", "+00:00"))

    def close(self) -> None:
        """Closes the HTTP sessions."""
        self.client.close()
        self._http.close()


@pytest.fixture
def local_runner() -> Iterator[LocalRunner]:
    """The local runner on ``127.0.0.1``, a free port, in memory, stopped after the test.

    Its clock is virtual, starting at the real time (so its OIDC tokens are valid now): it moves only by
    :meth:`LocalRunner.advance`.
    """
    from local_runner.clock import VirtualClock
    from local_runner.config import RunnerSettings
    from local_runner.server import RunnerServer
    from tasktoolkit.client import TasksClient

    server = RunnerServer(
        RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5),
        clock=VirtualClock(time.time()),
    ).start()
    runner = LocalRunner(
        server.base_url, TasksClient(RUNNER_PROJECT, RUNNER_LOCATION, endpoint=server.base_url, environ={})
    )
    try:
        yield runner
    finally:
        runner.close()
        server.stop()
