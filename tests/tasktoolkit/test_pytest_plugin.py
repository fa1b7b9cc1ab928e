"""The package's pytest plugin: ``fake_queue`` for a named app, ``local_runner`` on a virtual clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, request

from tasktoolkit.pytest_plugin import LocalRunner
from tasktoolkit.testing import FakeQueue

pytest_plugins = ["pytester"]


def test_local_runner_delivers_what_falls_due_when_its_clock_advances(
    local_runner: LocalRunner, serve: Callable[[Flask], Any]
) -> None:
    received: list[str] = []
    target = Flask("target")

    @target.post("/hook")
    def hook() -> str:
        received.append(request.get_data(as_text=True))
        return "ok"

    url = serve(target).url + "/hook"
    local_runner.client.ensure_queue("hooks")
    local_runner.client.enqueue("hooks", url=url, body="now")
    local_runner.client.enqueue("hooks", url=url, body="later", delay=dt.timedelta(hours=1))
    local_runner.wait_idle()
    assert received == ["now"]
    local_runner.advance(hours=1, minutes=1)
    assert received == ["now", "later"]


def test_fake_queue_serves_the_app_named_in_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        myservice="""
        from flask import Flask
        from tasktoolkit import TaskToolkit, task_handler

        def create_app():
            app = Flask("svc")
            app.config.update(
                TASKTOOLKIT_AUDIENCE="https://svc.example",
                TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=["tasks@p.iam.gserviceaccount.com"],
                TASKTOOLKIT_BASE_URL="https://svc.example",
                TASKTOOLKIT_STORE="memory://",
            )
            TaskToolkit(app)

            @app.post("/tasks/hello")
            @task_handler(queue="q")
            def hello(payload, task):
                return {"hello": payload["name"]}

            app.hello = hello
            return app
        """,
        test_svc="""
        def test_it(tasktoolkit_app, fake_queue):
            with tasktoolkit_app.app_context():
                tasktoolkit_app.hello.enqueue({"name": "ada"})
            [delivery] = fake_queue.run_until_idle()
            assert delivery.status == 200
        """,
    )
    pytester.makeini("[pytest]\ntasktoolkit_app = myservice:create_app\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_without_an_app_the_fixture_says_what_to_set(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(fake_queue):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*tasktoolkit_app must be set to 'package.module:app'*"])


def test_the_fixture_is_a_fake_queue(fake_queue: FakeQueue) -> None:
    assert isinstance(fake_queue, FakeQueue)


@pytest.fixture
def tasktoolkit_app(make_app: Callable[..., Flask]) -> Flask:
    from tasktoolkit import TaskToolkit

    app = make_app(TASKTOOLKIT_STORE="memory://")
    TaskToolkit(app)
    return app
