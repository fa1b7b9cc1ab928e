"""Regenerate docs/console-*.png: a runner with some traffic, photographed in headless Chromium.

Run from the repository root: ``.venv/bin/python tests/console/make_screenshots.py`` (about 45 s).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from browser import Chromium, require_chromium

from local_runner.config import RunnerSettings
from local_runner.model import HttpRequest, NewTask, OidcToken, Queue, RateLimits, RetryConfig
from local_runner.server import RunnerServer

DOCS = Path(__file__).resolve().parents[2] / "docs"
PARENT = "projects/local-project/locations/us-central1"
SECONDS = 40


class Worker(BaseHTTPRequestHandler):
    """``/ok`` answers 200, ``/flaky`` 500 on every third request, ``/down`` 503 with a reason (slowly)."""

    counter = itertools.count()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b""
        if self.path == "/down":
            time.sleep(0.05)
            status, body = 503, b'{"error": "image storage unavailable", "retry": true}'
        elif self.path == "/flaky":
            status = 500 if next(self.counter) % 3 == 0 else 200
        else:
            status = 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    worker = ThreadingHTTPServer(("127.0.0.1", 0), Worker)
    threading.Thread(target=worker.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{worker.server_address[1]}"
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as runner:
        service = runner.service
        quick = RetryConfig(max_attempts=5, min_backoff=1.0, max_backoff=10.0, max_doublings=3)
        for queue_id, rate, retry in (
            ("emails", 5.0, quick),
            ("images", 2.0, RetryConfig(max_attempts=3, min_backoff=0.5, max_backoff=5.0)),
            ("reports", 1.0, RetryConfig()),
        ):
            service.create_queue(
                PARENT,
                Queue(f"{PARENT}/queues/{queue_id}", RateLimits(rate, 10), retry),
            )
        service.pause_queue(f"{PARENT}/queues/reports")
        emails, images, reports = (f"{PARENT}/queues/{q}" for q in ("emails", "images", "reports"))
        for index in range(12):
            body = json.dumps({"report": "weekly", "team": f"team-{index}"}).encode()
            service.create_task(reports, NewTask(HttpRequest(f"{target}/ok", body=body)))
        for index in range(6):
            later = NewTask(
                HttpRequest(f"{target}/ok", body=b'{"kind": "reminder"}'),
                name=f"{emails}/tasks/reminder-ada-{index}",
                schedule_time=runner.clock.now() + 3600 * (index + 1),
            )
            service.create_task(emails, later)
        thumbnail = NewTask(
            HttpRequest(
                f"{target}/down",
                headers={"Content-Type": "application/json", "X-Request-Id": "7f3a9c"},
                body=json.dumps({"image_id": "cat-photo-ada", "size": [128, 96]}).encode(),
                oidc_token=OidcToken("tasks@local-project.iam.gserviceaccount.com", f"{target}/"),
            ),
            name=f"{images}/tasks/thumbnail-cat-photo-ada",
        )
        service.create_task(images, thumbnail)
        for second in range(SECONDS):
            for index in range(3 + second % 4):
                body = json.dumps({"to": f"user{second}-{index}@example.com", "template": "welcome"}).encode()
                service.create_task(emails, NewTask(HttpRequest(f"{target}/flaky", body=body)))
            if second % 5 == 0:
                service.create_task(images, NewTask(HttpRequest(f"{target}/flaky", body=b'{"image": 1}')))
            time.sleep(1)
        browser = Chromium(require_chromium())
        try:
            for path, filename in (
                ("/", "console-queues.png"),
                (f"/console/{emails}", "console-queue.png"),
                (f"/console/{thumbnail.name}", "console-task.png"),
            ):
                browser.open(runner.base_url + path)
                browser.wait_for("document.getElementById('live') !== null")
                browser.screenshot(DOCS / filename)
                print("wrote", DOCS / filename)
        finally:
            browser.close()
    worker.shutdown()


if __name__ == "__main__":
    main()
