"""gcloud against ``runner serve``: ``CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS`` and no credentials.

Skipped where gcloud is not installed (it is a large download, not part of the project's CI setup).
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

LOCATION = "us-central1"


def gcloud_runner(runner_url: str, config: Path) -> tuple[str, dict[str, str]]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud is not installed")
    env = {
        **os.environ,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS": f"{runner_url}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CONFIG": str(config),  # never the user's own gcloud settings
        "CLOUDSDK_CORE_PROJECT": "gcloud-project",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    return gcloud, env


def run_gcloud(command: list[str], env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command --location=LOCATION``; assert it succeeded (or, with ``ok=False``, failed)."""
    done = subprocess.run(
        [*command, f"--location={LOCATION}"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert (done.returncode == 0) is ok, done.stderr
    return done


@pytest.mark.timeout(120)
def test_queue_and_task_lifecycle(runner_url: str, httpserver: HTTPServer, tmp_path: Path) -> None:
    gcloud, env = gcloud_runner(runner_url, tmp_path / "gcloud")
    delivered = threading.Event()

    def handler(request: Request) -> Response:
        delivered.set()
        return Response("ok")

    httpserver.expect_request("/from-gcloud", method="POST").respond_with_handler(handler)

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return run_gcloud([gcloud, "tasks", *args], env, ok)

    run("queues", "create", "from-gcloud")
    run("queues", "pause", "from-gcloud")
    url = httpserver.url_for("/from-gcloud")
    run("create-http-task", "t1", "--queue=from-gcloud", f"--url={url}", "--body-content=hi")
    listed = json.loads(run("list", "--queue=from-gcloud", "--format=json").stdout)
    assert [task["name"].rpartition("/")[2] for task in listed] == ["t1"]
    run("run", "t1", "--queue=from-gcloud")
    assert delivered.wait(10), "the runner did not deliver the task gcloud ran within 10 s"
    run("queues", "delete", "from-gcloud")
    missing = run("queues", "describe", "from-gcloud", ok=False)
    assert "NOT_FOUND" in missing.stderr or "does not exist" in missing.stderr
