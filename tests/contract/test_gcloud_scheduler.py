"""gcloud scheduler against ``runner serve`` (``CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDSCHEDULER``).

Skipped where gcloud is not installed, except in CI (``CI`` set), where a missing gcloud fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.contract.test_gcloud import gcloud_runner, run_gcloud


def gcloud_scheduler(runner_url: str, config: Path) -> tuple[str, dict[str, str]]:
    if shutil.which("gcloud") is None and os.environ.get("CI"):
        pytest.fail("gcloud is not installed, and CI must run the gcloud scheduler contract")
    gcloud, env = gcloud_runner(runner_url, config)
    env["CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDSCHEDULER"] = f"{runner_url}/"
    return gcloud, env


@pytest.mark.timeout(180)
def test_job_lifecycle(runner_url: str, httpserver: HTTPServer, tmp_path: Path) -> None:
    gcloud, env = gcloud_scheduler(runner_url, tmp_path / "gcloud")
    delivered: list[dict[str, str]] = []
    arrived = threading.Event()

    def handler(request: Request) -> Response:
        delivered.append(dict(request.headers))
        arrived.set()
        return Response("ok")

    httpserver.expect_request("/from-gcloud", method="POST").respond_with_handler(handler)

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return run_gcloud([gcloud, "scheduler", "jobs", *args], env, ok)

    url = httpserver.url_for("/from-gcloud")
    run(
        "create",
        "http",
        "nightly",
        "--schedule=0 3 * * *",
        "--time-zone=Europe/Paris",
        f"--uri={url}",
        "--message-body=hi",
        "--oidc-service-account-email=sched@gcloud-project.iam.gserviceaccount.com",
        "--max-retry-attempts=2",
    )
    described = json.loads(run("describe", "nightly", "--format=json").stdout)
    assert described["state"] == "ENABLED"
    assert described["schedule"] == "0 3 * * *" and described["timeZone"] == "Europe/Paris"
    assert described["retryConfig"]["retryCount"] == 2
    run("pause", "nightly")
    assert json.loads(run("describe", "nightly", "--format=json").stdout)["state"] == "PAUSED"
    run("update", "http", "nightly", "--schedule=30 4 * * *")
    listed = json.loads(run("list", "--format=json").stdout)
    assert [(job["name"].rpartition("/")[2], job["schedule"]) for job in listed] == [
        ("nightly", "30 4 * * *")
    ]
    run("run", "nightly")
    assert arrived.wait(10), "the runner did not fire the job gcloud ran within 10 s"
    assert delivered[0]["X-Cloudscheduler-Jobname"] == "nightly"
    run("resume", "nightly")
    bad = run("create", "http", "bad", "--schedule=not a schedule", f"--uri={url}", ok=False)
    assert "INVALID_ARGUMENT" in bad.stderr and "Schedule or time zone is invalid" in bad.stderr
    run("delete", "nightly")
    missing = run("describe", "nightly", ok=False)
    assert "NOT_FOUND" in missing.stderr
