"""The few Cloud Tasks REST calls the reliability tests make against a runner, over real HTTP."""

from __future__ import annotations

import base64
from typing import Any

import requests

from local_runner.codec.scalars import format_timestamp

PARENT = "projects/reliability/locations/us-central1"


class RunnerApi:
    """A runner's REST v2 API and test aids at ``base_url``."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url
        self.http = session or requests.Session()

    def call(self, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
        """Send one request; the response is returned whatever its status."""
        return self.http.request(
            method, f"{self.base_url}/{path}", json=body, params=params or None, timeout=120
        )

    def ok(self, method: str, path: str, body: Any = None, **params: str) -> dict[str, Any]:
        """Send one request that must succeed; its JSON answer."""
        response = self.call(method, path, body, **params)
        assert response.status_code == 200, (method, path, response.status_code, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def create_queue(self, queue_id: str, **fields: Any) -> str:
        """CreateQueue under :data:`PARENT`; returns the queue's full name."""
        name = f"{PARENT}/queues/{queue_id}"
        self.ok("POST", f"v2/{PARENT}/queues", {"name": name, **fields})
        return name

    def create_task(
        self,
        queue: str,
        url: str,
        *,
        task_id: str | None = None,
        body: bytes = b"",
        schedule_time: float | None = None,
        dispatch_deadline: float | None = None,
        **fields: Any,
    ) -> str:
        """CreateTask (POST to ``url``, ``fields`` added to ``httpRequest``); returns the task's name."""
        task: dict[str, Any] = {"httpRequest": {"url": url, "httpMethod": "POST", **fields}}
        if dispatch_deadline is not None:
            task["dispatchDeadline"] = f"{dispatch_deadline:g}s"
        if body:
            task["httpRequest"]["body"] = _base64(body)
        if task_id is not None:
            task["name"] = f"{queue}/tasks/{task_id}"
        if schedule_time is not None:
            task["scheduleTime"] = format_timestamp(schedule_time)
        return str(self.ok("POST", f"v2/{queue}/tasks", {"task": task})["name"])

    def wait_idle(self, timeout: float = 120.0, queue: str | None = None) -> None:
        """Block until nothing is in flight or due."""
        body: dict[str, Any] = {"timeout": f"{timeout:g}s"}
        if queue is not None:
            body["queue"] = queue
        self.ok("POST", "runner/v1/waitIdle", body)

    def all_tasks(self, queue: str) -> list[dict[str, Any]]:
        """Every task of the queue, exhausted ones included (all pages)."""
        tasks: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.ok("GET", f"runner/v1/{queue}/tasks", exhausted="true", pageToken=token)
            tasks += page.get("tasks", [])
            token = page.get("nextPageToken", "")
            if not token:
                return tasks

    def attempts(self, task_name: str) -> list[dict[str, Any]]:
        """The task's finished attempts, oldest first."""
        return list(self.ok("GET", f"runner/v1/{task_name}:attempts").get("attempts", []))


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
