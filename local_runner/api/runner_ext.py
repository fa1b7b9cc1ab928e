"""Runner-only extensions (not part of Cloud Tasks), under their own prefix so clients never mistake them.

- ``GET /runner/v1/{task}:attempts``: the task's attempt history (kept after the task is deleted).
- ``GET /runner/v1/{queue}/tasks?exhausted=true``: ListTasks including tasks whose retries ran out.
- ``GET /runner/v1/{task}``: GetTask that also finds exhausted tasks.

Tasks carry an extra ``state`` field: ``QUEUED``, ``DISPATCHING`` or ``EXHAUSTED``.
"""

from __future__ import annotations

from local_runner.api.request import Call, JsonObject, parse_int, parse_view
from local_runner.api.routing import QUEUE, TASK, Router
from local_runner.codec import attempt_to_stored_json, task_to_json
from local_runner.errors import InvalidArgument
from local_runner.model import Task, TaskView
from local_runner.service import TasksService

PREFIX = "/runner/v1/"


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise InvalidArgument(f"Invalid value at '{name}' (TYPE_BOOL), \"{value}\"")


def _task(task: Task, view: TaskView, int_enums: bool) -> JsonObject:
    return task_to_json(task, view, int_enums) | {"state": task.state.value}


def routes(service: TasksService) -> Router:
    """The extension routes, answering from ``service``."""

    def attempts(call: Call) -> JsonObject:
        history = service.attempts(call.params["name"])
        return {"attempts": [attempt_to_stored_json(attempt) for attempt in history]} if history else {}

    def list_tasks(call: Call) -> JsonObject:
        view = parse_view(call.query.get("responseView", "BASIC"))
        page = service.list_tasks(
            call.params["parent"],
            parse_int(call.query.get("pageSize"), "pageSize"),
            call.query.get("pageToken", ""),
            include_exhausted=_flag(call.query.get("exhausted"), "exhausted"),
        )
        out: JsonObject = {}
        if page.items:
            out["tasks"] = [_task(task, view, call.int_enums) for task in page.items]
        if page.next_page_token:
            out["nextPageToken"] = page.next_page_token
        return out

    def get_task(call: Call) -> JsonObject:
        view = parse_view(call.query.get("responseView", "BASIC"))
        return _task(service.get_task(call.params["name"], include_exhausted=True), view, call.int_enums)

    router = Router()
    router.add("GET", rf"(?P<name>{TASK}):attempts", attempts)
    router.add(
        "GET",
        rf"(?P<parent>{QUEUE})/tasks",
        list_tasks,
        ("responseView", "pageSize", "pageToken", "exhausted"),
    )
    router.add("GET", rf"(?P<name>{TASK})", get_task, ("responseView",))
    return router
