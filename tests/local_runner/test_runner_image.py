"""The runner image's start command and health check, run as the image would run them (no container engine).

``local_runner/Dockerfile`` is checked by running its ``CMD`` (with a free port and a temporary data directory
in place of ``8123`` and ``/data``) and then its ``HEALTHCHECK`` command, and by one task round trip, as
another container of a compose file would drive it. ``docker-compose.yml`` is checked for the wiring the
docs describe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests
import yaml
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess

from tests.local_runner.test_dispatch_http import eventually

ROOT = Path(__file__).resolve().parents[2]


def instruction(dockerfile: str, name: str) -> list[str]:
    """The JSON argument list of the one ``name`` instruction (``HEALTHCHECK``: of its ``CMD``)."""
    [line] = [line for line in dockerfile.splitlines() if line.startswith(f"{name} ")]
    if name == "HEALTHCHECK":
        line = line.partition(" CMD ")[2] or _continued(dockerfile, line)
        return list(json.loads(line))
    return list(json.loads(line.removeprefix(f"{name} ")))


def _continued(dockerfile: str, first: str) -> str:
    lines = dockerfile.splitlines()
    index = lines.index(first)
    while " CMD " not in f" {lines[index].strip()}":
        index += 1
    return lines[index].strip().removeprefix("CMD ")


def without(args: list[str], *options: str) -> list[str]:
    """``args`` less each ``option`` and its value."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        else:
            out.append(arg)
    return out


def test_the_image_command_serves_on_every_address_and_answers_its_health_check(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], httpserver: HTTPServer
) -> None:
    dockerfile = (ROOT / "local_runner" / "Dockerfile").read_text(encoding="utf-8")
    command = instruction(dockerfile, "CMD")
    assert command[:2] == ["runner", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--data-dir") + 1] == "/data"
    assert 'VOLUME ["/data"]' in dockerfile and "USER runner" in dockerfile

    runner = runner_process(tmp_path, *without(command[2:], "--port", "--data-dir"))
    port = urlsplit(runner.url).port
    assert any("0.0.0.0" in line and "WARNING" in line for line in runner.log)

    check = instruction(dockerfile, "HEALTHCHECK")
    assert check[0] == "python"
    check = [sys.executable, *(part.replace(":8123/", f":{port}/") for part in check[1:])]
    assert subprocess.run(check, capture_output=True, timeout=20).returncode == 0

    # Another container calls it by its service name: any Host is served when bound to every address.
    base = f"http://127.0.0.1:{port}"
    parent = "projects/local-project/locations/us-central1"
    headers = {"Host": f"runner:{port}"}
    created = requests.post(
        f"{base}/v2/{parent}/queues", json={"name": f"{parent}/queues/q"}, headers=headers
    )
    assert created.status_code == 200, created.text
    target = httpserver.url_for("/work")
    httpserver.expect_request("/work").respond_with_data("ok")
    task = {"httpRequest": {"url": target, "body": "eyJhIjogMX0="}}
    answer = requests.post(f"{base}/v2/{parent}/queues/q/tasks", json={"task": task}, headers=headers)
    assert answer.status_code == 200, answer.text
    eventually(lambda: len(httpserver.log) == 1)
    assert (tmp_path / "runner.sqlite3").exists() and (tmp_path / "runner.lock").exists()


def test_the_compose_file_wires_the_worker_to_the_runner_and_redis() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["runner"]["build"]["dockerfile"] == "local_runner/Dockerfile"
    assert services["worker"]["build"]["dockerfile"] == "sample_worker/Dockerfile"
    for dockerfile in ("local_runner/Dockerfile", "sample_worker/Dockerfile"):
        assert (ROOT / dockerfile).is_file()
    environment = services["worker"]["environment"]
    assert environment["CLOUD_TASKS_EMULATOR_HOST"] == "runner:8123"
    assert environment["TASKTOOLKIT_STORE"].startswith("redis://redis:")
    assert services["worker"]["depends_on"]["runner"]["condition"] == "service_healthy"
    runner_command = services["runner"]["command"]
    # The runner answers the name the worker calls it by, and refuses other Host names (DNS rebinding).
    allowed = runner_command[runner_command.index("--allowed-host") + 1]
    assert allowed == urlsplit("//" + environment["CLOUD_TASKS_EMULATOR_HOST"]).hostname
    queue_file = runner_command[runner_command.index("--queues") + 1]
    assert (
        queue_file == "/app/sample_worker/queues.yaml" and (ROOT / "sample_worker" / "queues.yaml").is_file()
    )
