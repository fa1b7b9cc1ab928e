"""The official Node client, ``@google-cloud/tasks``, on its default gRPC transport against ``runner serve``.

``tests/contract/node/scenario.js`` runs the scenario and prints what it saw; this test checks it and that
the task was delivered. Needs ``node`` and ``npm ci`` in ``tests/contract/node`` (``.ci/run`` does it):
skipped locally without them, a failure in CI.
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

NODE_DIR = Path(__file__).parent / "node"


def node_or_skip() -> str:
    node = shutil.which("node")
    missing = (
        "node is not installed"
        if node is None
        else "run `npm ci` in tests/contract/node"
        if not (NODE_DIR / "node_modules" / "@google-cloud" / "tasks").is_dir()
        else ""
    )
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Node client test must run in CI: {missing}")
        pytest.skip(missing)
    assert node is not None
    return node


@pytest.mark.timeout(120)
def test_node_client_on_grpc(runner_url: str, httpserver: HTTPServer) -> None:
    node = node_or_skip()
    delivered = threading.Event()
    bodies: list[bytes] = []

    def handler(request: Request) -> Response:
        bodies.append(request.get_data())
        delivered.set()
        return Response("ok")

    httpserver.expect_request("/node", method="POST").respond_with_handler(handler)
    env = {**os.environ, "METADATA_SERVER_DETECTION": "none", "NO_GCE_CHECK": "True"}
    done = subprocess.run(
        [node, "scenario.js", runner_url.removeprefix("http://"), httpserver.url_for("/node")],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["queueState"] == "RUNNING"
    assert seen["duplicateQueue"] == 6  # ALREADY_EXISTS
    assert seen["missingQueue"] == 5  # NOT_FOUND
    assert seen["deliveredName"].endswith("/tasks/deliver")
    assert seen["duplicateTask"] == 6
    assert seen["missingQueueTask"] == 5
    assert seen["pages"] == [["page-0", "page-1"], ["page-2", "page-3"], ["page-4"]]
    assert int(seen["ranDispatchCount"]) == 1
    assert delivered.wait(10), "the runner did not deliver the Node client's task within 10 s"
    assert b'{"from": "node"}' in bodies
