"""``runner queues ...`` and ``runner tasks ...`` against one real ``runner serve`` process."""

from __future__ import annotations

import base64
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess
from werkzeug import Request, Response

from local_runner.cli import client as cli_client
from local_runner.cli import main
from local_runner.cli.common import parse_duration
from local_runner.codec.scalars import parse_timestamp
from local_runner.errors import QUEUE_NOT_FOUND

PARENT = "projects/local-project/locations/us-central1"
_ids = itertools.count()


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    """One ``runner serve --in-memory`` process for the whole module."""
    process = RunnerProcess(None).start()
    yield process
    process.close()


Invoke = Callable[..., Result]


@pytest.fixture
def cli(runner: RunnerProcess) -> Invoke:
    """Run ``runner <args> --endpoint URL`` in-process."""

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, [*args, "--endpoint", runner.url])

    return invoke


def api_get(runner: RunnerProcess, name: str, **params: str) -> Any:
    return requests.get(f"{runner.url}/v2/{name}", params=params, timeout=10).json()


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def failed(result: Result) -> str:
    """The stderr of a run that failed cleanly: exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exc_info is None or result.exc_info[0] is SystemExit
    assert "Traceback" not in result.output
    return result.stderr


def new_queue(cli: Invoke, *flags: str) -> str:
    queue = f"cli-{next(_ids)}"
    assert ok(cli("queues", "create", queue, *flags)) == f"Created queue [{queue}].\n"
    return queue


# -- queues ----------------------------------------------------------------------------------------


def test_queue_create_describe_round_trips(cli: Invoke, runner: RunnerProcess) -> None:
    flags = ["--max-dispatches-per-second", "5", "--max-concurrent-dispatches", "7"]
    flags += ["--max-attempts", "-1", "--min-backoff", "0.5s", "--max-backoff", "5m"]
    queue = new_queue(cli, *flags, "--max-retry-duration", "2h", "--max-doublings", "3")
    document = yaml.safe_load(ok(cli("queues", "describe", queue)))
    assert document == api_get(runner, f"{PARENT}/queues/{queue}")
    assert document["rateLimits"] == {
        "maxDispatchesPerSecond": 5.0,
        "maxBurstSize": 10,
        "maxConcurrentDispatches": 7,
    }
    assert document["retryConfig"] == {
        "maxAttempts": -1,
        "minBackoff": "0.500s",
        "maxBackoff": "300s",
        "maxRetryDuration": "7200s",
        "maxDoublings": 3,
    }
    full_name = ok(cli("queues", "describe", f"{PARENT}/queues/{queue}"))
    assert yaml.safe_load(full_name) == document


def test_update_changes_only_the_given_fields(cli: Invoke, runner: RunnerProcess) -> None:
    queue = new_queue(cli, "--max-dispatches-per-second", "5", "--max-attempts", "4")
    before = api_get(runner, f"{PARENT}/queues/{queue}")
    assert ok(cli("queues", "update", queue, "--max-backoff", "1m")) == f"Updated queue [{queue}].\n"
    after = api_get(runner, f"{PARENT}/queues/{queue}")
    before["retryConfig"]["maxBackoff"] = "60s"
    assert after == before

    ok(cli("queues", "update", queue, "--max-dispatches-per-second", "500", "--max-doublings", "2"))
    again = api_get(runner, f"{PARENT}/queues/{queue}")
    before["rateLimits"].update(maxDispatchesPerSecond=500.0, maxBurstSize=100)
    before["retryConfig"]["maxDoublings"] = 2
    assert again == before


def test_list_pause_resume_purge_delete(cli: Invoke, runner: RunnerProcess) -> None:
    queue = new_queue(cli, "--max-concurrent-dispatches", "9", "--max-attempts", "-1")
    table = ok(cli("queues", "list")).splitlines()
    assert table[0].split() == [
        "QUEUE_NAME",
        "STATE",
        "MAX_NUM_OF_TASKS",
        "MAX_RATE",
        "(/sec)",
        "MAX_ATTEMPTS",
    ]
    assert [queue, "RUNNING", "9", "500.0", "unlimited"] in [line.split() for line in table]
    name = f"{PARENT}/queues/{queue}"

    assert ok(cli("queues", "pause", queue)) == f"Paused queue [{queue}].\n"
    assert api_get(runner, name)["state"] == "PAUSED"
    assert [queue, "PAUSED"] in [line.split()[:2] for line in ok(cli("queues", "list")).splitlines()]
    assert ok(cli("queues", "resume", queue)) == f"Resumed queue [{queue}].\n"
    assert api_get(runner, name)["state"] == "RUNNING"
    assert ok(cli("queues", "purge", queue)) == f"Purged queue [{queue}].\n"
    assert "purgeTime" in api_get(runner, name)
    assert ok(cli("queues", "delete", queue)) == f"Deleted queue [{queue}].\n"
    assert api_get(runner, name)["error"]["status"] == "NOT_FOUND"


def test_list_reads_every_page(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    project = f"cli-pages-{next(_ids)}"
    names = [f"p-{i}" for i in range(5)]
    for queue in names:
        ok(cli("queues", "create", queue, "--project", project))
    calls: list[str] = []
    real_request = requests.request

    def counting(method: str, url: str, **kwargs: Any) -> requests.Response:
        calls.append(url)
        return real_request(method, url, **kwargs)

    monkeypatch.setattr(requests, "request", counting)
    table = ok(cli("queues", "list", "--project", project, "--page-size", "2")).splitlines()
    assert [line.split()[0] for line in table[1:]] == names
    assert len(calls) == 3

    empty = cli("queues", "list", "--project", f"cli-empty-{next(_ids)}")
    assert ok(empty) == ""
    assert empty.stderr == "Listed 0 items.\n"


def test_endpoint_defaults_to_the_emulator_host_variable(
    runner: RunnerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli_client.EMULATOR_HOST_ENV, runner.url.removeprefix("http://"))
    assert cli_client.default_endpoint() == runner.url
    result = CliRunner().invoke(main, ["queues", "list", "--project", f"cli-env-{next(_ids)}"])
    assert result.exit_code == 0
    assert result.stderr == "Listed 0 items.\n"
    monkeypatch.delenv(cli_client.EMULATOR_HOST_ENV)
    assert cli_client.default_endpoint() == "http://127.0.0.1:8123"


# -- tasks -----------------------------------------------------------------------------------------


def test_task_create_describe_list_delete(cli: Invoke, runner: RunnerProcess, tmp_path: Path) -> None:
    queue = new_queue(cli)
    name = f"{PARENT}/queues/{queue}/tasks/t-1"
    created = cli(
        "tasks", "create", "--queue", queue, "--url", "http://127.0.0.1:9/work", "--method", "put",
        "--header", "Content-Type: application/json", "--header", "X-Trace:abc",
        "--body-content", '{"n": 1}', "--delay", "1h", "--task-id", "t-1",
        "--oidc-service-account-email", "sa@p.iam.gserviceaccount.com", "--oidc-token-audience", "aud",
        "--dispatch-deadline", "1m",
    )  # fmt: skip
    assert ok(created) == f"Created task [{name}].\n"

    full = yaml.safe_load(ok(cli("tasks", "describe", "t-1", "--queue", queue, "--response-view", "full")))
    assert full == api_get(runner, name, responseView="FULL")
    request = full["httpRequest"]
    assert base64.b64decode(request["body"]) == b'{"n": 1}'
    assert request["httpMethod"] == "PUT"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["X-Trace"] == "abc"
    assert request["oidcToken"] == {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "aud"}
    assert full["dispatchDeadline"] == "60s"
    assert 3500 < parse_timestamp(full["scheduleTime"]) - time.time() <= 3600
    basic = yaml.safe_load(ok(cli("tasks", "describe", name)))
    assert basic == api_get(runner, name) and "body" not in basic["httpRequest"]

    body_file = tmp_path / "body.bin"
    body_file.write_bytes(b"\x00\x01binary")
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    at_utc = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    at_text = at.astimezone(timezone(timedelta(hours=1))).isoformat()  # 2030-01-02T04:04:05+01:00
    second = cli("tasks", "create", "--queue", queue, "--url", "http://127.0.0.1:9/b", "--body-file",
                 str(body_file), "--schedule-time", at_text, "--task-id", "t-2")  # fmt: skip
    ok(second)
    stored = api_get(runner, f"{PARENT}/queues/{queue}/tasks/t-2", responseView="FULL")
    assert base64.b64decode(stored["httpRequest"]["body"]) == b"\x00\x01binary"
    assert stored["scheduleTime"] == at_utc

    table = [line.split() for line in ok(cli("tasks", "list", queue, "--page-size", "1")).splitlines()]
    assert table[0] == [
        "TASK_NAME",
        "SCHEDULE_TIME",
        "DISPATCH_COUNT",
        "RESPONSE_COUNT",
        "LAST_ATTEMPT_STATUS",
    ]
    assert table[1:] == [
        ["t-1", full["scheduleTime"], "0", "0", "Unknown"],
        ["t-2", at_utc, "0", "0", "Unknown"],
    ]

    assert ok(cli("tasks", "delete", "t-1", "--queue", queue)) == f"Deleted task [{name}].\n"
    gone = failed(cli("tasks", "describe", "t-1", "--queue", queue))
    assert gone.startswith("ERROR: (NOT_FOUND) The task no longer exists")
    assert gone.count("\n") == 1


def test_task_run_dispatches_now(cli: Invoke, httpserver: HTTPServer) -> None:
    delivered = threading.Event()

    def handler(request: Request) -> Response:
        delivered.set()
        return Response("ok", status=200)

    httpserver.expect_request("/run-me", method="POST").respond_with_handler(handler)
    queue = new_queue(cli)
    ok(cli("queues", "pause", queue))
    args = ["--queue", queue, "--url", httpserver.url_for("/run-me"), "--task-id", "r-1", "--delay", "1h"]
    ok(cli("tasks", "create", *args))
    out = ok(cli("tasks", "run", "r-1", "--queue", queue))
    assert out == f"Running task [{PARENT}/queues/{queue}/tasks/r-1].\n"
    assert delivered.wait(10), "RunTask did not dispatch the task"

    ok(cli("tasks", "create", "--queue", queue, "--url", "http://127.0.0.1:9/", "--task-id", "r-2"))
    ok(cli("tasks", "run", "r-2", "--queue", queue))
    deadline = time.monotonic() + 10
    row: list[str] = []
    while time.monotonic() < deadline and row[-1:] != ["UNAVAILABLE"]:  # bounded wait for the attempt
        row = ok(cli("tasks", "list", queue)).splitlines()[-1].split()
    assert row[0] == "r-2" and row[2:] == ["1", "0", "UNAVAILABLE"]


NEW_TASK = ["tasks", "create", "--queue", "q", "--url", "http://x/"]


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["queues", "create", "q", "--max-attempts", "abc"], "--max-attempts"),
        (["queues", "create", "q", "--min-backoff", "10x"], "--min-backoff"),
        (["queues", "update", "q", "--max-dispatches-per-second", "fast"], "--max-dispatches-per-second"),
        (["queues", "update", "q", "--max-retry-duration", "1y"], "--max-retry-duration"),
        (["tasks", "create", "--queue", "q", "--url", "http://x/", "--delay", "soon"], "--delay"),
        (
            ["tasks", "create", "--queue", "q", "--url", "http://x/", "--schedule-time", "today"],
            "--schedule-time",
        ),
        (["tasks", "create", "--queue", "q", "--url", "http://x/", "--header", "no-colon"], "--header"),
        (["tasks", "create", "--queue", "q", "--url", "http://x/", "--method", "FETCH"], "--method"),
    ],
)
def test_bad_flag_values_are_usage_errors(cli: Invoke, args: list[str], flag: str) -> None:
    error = failed(cli(*args))
    assert f"Invalid value for '{flag}'" in error


def test_conflicting_flags_are_usage_errors(cli: Invoke) -> None:
    assert "--delay" in failed(cli(*NEW_TASK, "--delay", "1s", "--schedule-time", "2099-01-01T00:00:00Z"))
    assert "--body-file" in failed(cli(*NEW_TASK, "--body-content", "a", "--body-file", __file__))
    assert "--queue" in failed(cli("tasks", "run", "short-id"))
    assert "at least one setting" in failed(cli("queues", "update", "q"))


@pytest.mark.parametrize(
    "args",
    [
        ["queues", "describe", "never"],
        ["queues", "update", "never", "--max-attempts", "3"],
        ["queues", "pause", "never"],
        ["queues", "purge", "never"],
        ["tasks", "list", "never"],
        ["tasks", "create", "--queue", "never", "--url", "http://127.0.0.1:9/"],
    ],
)
def test_unknown_queue_is_one_line(cli: Invoke, args: list[str]) -> None:
    assert failed(cli(*args)) == f"ERROR: (NOT_FOUND) {QUEUE_NOT_FOUND}\n"


def test_unreachable_runner_is_one_line() -> None:
    result = CliRunner().invoke(main, ["queues", "list", "--endpoint", "http://127.0.0.1:9"])
    assert failed(result) == "ERROR: cannot reach the runner at http://127.0.0.1:9: connection refused\n"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("0.1s", 0.1), ("5m", 300), ("1h", 3600), ("2d", 172800), ("1h30m", 5400), ("7", 7)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


# -- the real console entry ----------------------------------------------------------------------------


def test_console_entry_as_a_process(cli: Invoke, runner: RunnerProcess) -> None:
    queue = new_queue(cli)
    done = subprocess.run(
        [sys.executable, "-m", "local_runner", "queues", "list", "--endpoint", runner.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert queue in [line.split()[0] for line in done.stdout.splitlines()]
