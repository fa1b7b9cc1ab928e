"""``make demo``: tasks flowing through a local Cloud Tasks runner, live in the terminal.

Starts ``runner serve`` on its SQLite default (``.runner/``), a small worker on a free port, creates
the demo queue through the Cloud Tasks REST API and enqueues: a task that succeeds, one that fails
twice and succeeds on the third attempt (backoff), one scheduled a few seconds ahead, and a
duplicate of a named task (absorbed by name deduplication). Stops both when everything is done or
on Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

PROJECT, LOCATION, QUEUE_ID = "local-project", "us-central1", "demo"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
QUEUE = f"{PARENT}/queues/{QUEUE_ID}"
_LOG_PREFIX = re.compile(r"^\d\d:\d\d:\d\d (INFO\s+)?")
#: The demo's whole run must end well within this many seconds.
TIME_LIMIT = 45.0


def say(who: str, text: str) -> None:
    """One line of the live log."""
    print(f"{time.strftime('%H:%M:%S')} {who:<7} {text}", flush=True)


class DemoWorker:
    """The handler side: records each delivery; ``/tasks/thumbnail`` fails its first two attempts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: set[str] = set()
        self.changed = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Answer one delivery (a WSGI application)."""
        request = Request(environ)
        task = request.headers.get("X-CloudTasks-TaskName", "?")
        retry = int(request.headers.get("X-CloudTasks-TaskRetryCount", "0"))
        failing = request.path == "/tasks/thumbnail" and retry < 2
        status = 503 if failing else 200
        say("worker", f"{request.path} task={task} retry={retry} -> {status}")
        if not failing:
            with self.lock:
                self.done.add(request.path)
            self.changed.set()
        return Response(status=status)(environ, start_response)


@contextmanager
def serve_worker(worker: DemoWorker) -> Iterator[str]:
    """Serve the worker on a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, worker, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def run_runner() -> Iterator[str]:
    """Start ``runner serve`` on ``.runner/``, echo its log; yields its URL; Ctrl-C stops it on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local_runner", "serve", "--port", "0", "--data-dir", ".runner"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    url: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            text = line.rstrip("\n")
            match = re.search(r"runner on (http://\S+)", text)
            if match:
                url.append(match.group(1))
                ready.set()
            say("runner", _LOG_PREFIX.sub("", text))
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(30) or not url:
            raise SystemExit("the runner did not start; see its log above")
        yield url[0]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def create_task(api: str, url: str, name: str | None = None, delay: float = 0.0) -> requests.Response:
    """CreateTask through the Cloud Tasks REST v2 API."""
    task: dict[str, Any] = {
        "httpRequest": {
            "url": url,
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(json.dumps({"demo": True}).encode()).decode(),
        }
    }
    if name:
        task["name"] = f"{QUEUE}/tasks/{name}"
    if delay:
        task["scheduleTime"] = (
            (datetime.now(UTC) + timedelta(seconds=delay)).isoformat().replace("+00:00", "Z")
        )
    return requests.post(f"{api}/v2/{QUEUE}/tasks", json={"task": task}, timeout=10)


def main() -> int:
    """Run the demo; returns the process exit code."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    worker = DemoWorker()
    with serve_worker(worker) as worker_url, run_runner() as api:
        queue = {
            "name": QUEUE,
            "rateLimits": {"maxDispatchesPerSecond": 5},
            "retryConfig": {"maxAttempts": 5, "minBackoff": "1s", "maxBackoff": "4s"},
        }
        response = requests.patch(f"{api}/v2/{QUEUE}", json=queue, timeout=10)
        response.raise_for_status()
        say("demo", "queue 'demo' ready: 5/s, retries back off 1s, 2s, 4s")
        run_id = time.strftime("%H%M%S")
        create_task(api, f"{worker_url}/tasks/welcome-email", name=f"welcome-{run_id}").raise_for_status()
        say("demo", "enqueued welcome email (named task)")
        duplicate = create_task(api, f"{worker_url}/tasks/welcome-email", name=f"welcome-{run_id}")
        say(
            "demo",
            f"enqueued it again: {duplicate.status_code} {duplicate.json()['error']['status']} (dedup)",
        )
        create_task(api, f"{worker_url}/tasks/thumbnail").raise_for_status()
        say("demo", "enqueued thumbnail job (fails twice, then succeeds)")
        create_task(api, f"{worker_url}/tasks/reminder", delay=5).raise_for_status()
        say("demo", "enqueued reminder scheduled 5 s from now")
        expected = {"/tasks/welcome-email", "/tasks/thumbnail", "/tasks/reminder"}
        deadline = time.monotonic() + TIME_LIMIT
        while worker.done != expected and time.monotonic() < deadline:
            worker.changed.wait(0.5)
            worker.changed.clear()
        missing = expected - worker.done
        if missing:
            say("demo", f"not delivered in time: {sorted(missing)}")
            return 1
        say("demo", "all tasks delivered; stopping")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
