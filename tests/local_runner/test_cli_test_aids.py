"""``runner tasks attempts|replay|list --exhausted``, ``runner reset|wait-idle`` and ``/healthz``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
import requests
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess

from local_runner.cli import main

Invoke = Callable[..., Result]


@pytest.fixture
def runner() -> Iterator[RunnerProcess]:
    process = RunnerProcess(None).start()
    yield process
    process.close()


@pytest.fixture
def cli(runner: RunnerProcess) -> Invoke:
    return lambda *args: CliRunner().invoke(main, [*args, "--endpoint", runner.url])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_an_exhausted_task_is_listed_inspected_and_replayed(cli: Invoke, httpserver: HTTPServer) -> None:
    httpserver.expect_ordered_request("/hook").respond_with_data("broken", status=500)
    httpserver.expect_ordered_request("/hook").respond_with_data("fixed")
    ok(cli("queues", "create", "aids", "--max-attempts", "1"))
    ok(cli("tasks", "create", "--queue", "aids", "--url", httpserver.url_for("/hook"), "--task-id", "t1"))
    assert ok(cli("wait-idle", "--queue", "aids", "--timeout", "20")) == "Idle (aids).\n"
    assert "t1" not in ok(cli("tasks", "list", "aids"))
    assert "t1" in ok(cli("tasks", "list", "aids", "--exhausted"))
    [header, row] = ok(cli("tasks", "attempts", "t1", "--queue", "aids")).splitlines()
    assert header.split() == ["ATTEMPT", "DISPATCH_TIME", "RESPONSE_TIME", "HTTP_STATUS", "STATUS"]
    assert row.split()[0] == "1" and row.split()[3] == "500"
    assert ok(cli("tasks", "replay", "t1", "--queue", "aids")).startswith("Replaying task [projects/")
    ok(cli("wait-idle", "--timeout", "20"))
    assert len(ok(cli("tasks", "attempts", "t1", "--queue", "aids")).splitlines()) == 3
    assert "t1" not in ok(cli("tasks", "list", "aids", "--exhausted"))


def test_reset_empties_the_runner_and_wait_idle_times_out_cleanly(cli: Invoke) -> None:
    ok(cli("queues", "create", "later"))
    ok(
        cli(
            "tasks",
            "create",
            "--queue",
            "later",
            "--url",
            "http://127.0.0.1:9/x",
            "--schedule-time",
            (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    )
    failed = cli("wait-idle", "--timeout", "0")
    assert (failed.exit_code, failed.stderr) == (2, "ERROR: (DEADLINE_EXCEEDED) Not idle after 0s.\n")
    assert ok(cli("wait-idle", "--within", "60", "--timeout", "5")) == "Idle.\n"
    assert ok(cli("reset", "--yes")) == "Reset the runner.\n"
    assert "later" not in ok(cli("queues", "list"))


def test_healthz_answers_ok(runner: RunnerProcess) -> None:
    answer = requests.get(f"{runner.url}/healthz", timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
