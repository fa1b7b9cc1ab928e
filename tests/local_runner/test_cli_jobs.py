"""``runner jobs ...`` against a real ``runner serve`` process."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import yaml
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess
from werkzeug import Request, Response

from local_runner.cli import main


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerProcess]:
    process = RunnerProcess(None).start()
    yield process
    process.close()


def jobs(runner: RunnerProcess, *args: str) -> Result:
    return CliRunner().invoke(main, ["jobs", *args, "--endpoint", runner.url])


def test_create_describe_pause_run_delete(runner: RunnerProcess, httpserver: HTTPServer) -> None:
    fired = threading.Event()

    def handler(request: Request) -> Response:
        fired.set()
        return Response("ok")

    httpserver.expect_request("/digest", method="POST").respond_with_handler(handler)
    created = jobs(
        runner,
        "create-http",
        "digest",
        "--schedule",
        "0 9 * * 1",
        "--time-zone",
        "Europe/Berlin",
        "--uri",
        httpserver.url_for("/digest"),
        "--max-retry-attempts",
        "3",
        "--attempt-deadline",
        "1m",
    )
    assert created.exit_code == 0, created.output
    assert created.output == "Created job [digest].\n"
    described = yaml.safe_load(jobs(runner, "describe", "digest").output)
    assert described["retryConfig"]["retryCount"] == 3 and described["attemptDeadline"] == "60s"
    assert jobs(runner, "pause", "digest").output == "Paused job [digest].\n"
    listed = jobs(runner, "list").output
    assert "digest" in listed and "PAUSED" in listed
    assert jobs(runner, "run", "digest").exit_code == 0
    assert fired.wait(10)
    assert jobs(runner, "resume", "digest").exit_code == 0
    assert jobs(runner, "delete", "digest").output == "Deleted job [digest].\n"
    missing = jobs(runner, "describe", "digest")
    assert missing.exit_code != 0 and "Job not found." in missing.output


def test_bad_schedule_is_one_line(runner: RunnerProcess) -> None:
    result = jobs(runner, "create-http", "bad", "--schedule", "nope", "--uri", "http://127.0.0.1:9/")
    assert result.exit_code != 0
    assert "Schedule or time zone is invalid." in result.output and "Traceback" not in result.output


def test_update_changes_only_the_given_settings(runner: RunnerProcess) -> None:
    created = jobs(
        runner,
        "create-http",
        "upd",
        "--schedule",
        "0 9 * * *",
        "--uri",
        "http://127.0.0.1:9/a",
        "--oidc-service-account-email",
        "sa@p.iam.gserviceaccount.com",
        "--max-retry-attempts",
        "2",
    )
    assert created.exit_code == 0, created.output
    updated = jobs(
        runner, "update-http", "upd", "--oidc-token-audience", "https://aud", "--min-backoff", "30s"
    )
    assert updated.output == "Updated job [upd].\n"
    job = yaml.safe_load(jobs(runner, "describe", "upd").output)
    assert job["schedule"] == "0 9 * * *" and job["httpTarget"]["uri"] == "http://127.0.0.1:9/a"
    assert job["httpTarget"]["oidcToken"] == {
        "serviceAccountEmail": "sa@p.iam.gserviceaccount.com",
        "audience": "https://aud",
    }
    assert job["retryConfig"]["retryCount"] == 2 and job["retryConfig"]["minBackoffDuration"] == "30s"
    nothing = jobs(runner, "update-http", "upd")
    assert nothing.exit_code == 2 and "at least one setting" in nothing.output
    jobs(runner, "delete", "upd")
