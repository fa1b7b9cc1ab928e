"""Runner-only extensions (not part of Cloud Tasks), under their own prefix so clients never mistake them.

- ``GET /runner/v1/{task}:attempts``: the task's attempt history (kept after the task is deleted).
- ``GET /runner/v1/{queue}/tasks?exhausted=true``: ListTasks including tasks whose retries ran out.
- ``GET /runner/v1/{task}``: GetTask that also finds exhausted tasks.
- ``POST /runner/v1/{task}:replay``: queue an exhausted task again with a fresh retry budget.
- ``POST /runner/v1/waitIdle``: answer once nothing is in flight or due (body ``queue``, ``timeout``,
  ``within``), or DEADLINE_EXCEEDED after the timeout.
- ``POST /runner/v1/reset``: delete every queue, task, tombstone and attempt.
- ``GET /runner/v1/clock``: the runner's time, and whether it is virtual (``runner serve --virtual-clock``).
- ``POST /runner/v1/clock:advance``: move a virtual clock forward (body ``by`` or ``to``); what falls due
  on the way is dispatched at its time.

``replay``, ``reset`` and ``clock:advance`` change state and are refused when the runner runs with
``--no-test-aids``.

Tasks carry an extra ``state`` field: ``QUEUED``, ``DISPATCHING`` or ``EXHAUSTED``.
"""

from __future__ import annotations

import asyncio
import time

from local_runner.api.request import Call, parse_int, parse_view
from local_runner.api.routing import QUEUE, TASK, Router
from local_runner.clock import VirtualClock
from local_runner.codec.scalars import JsonObject, format_timestamp, parse_duration, parse_timestamp
from local_runner.codec.tasks import attempt_to_stored_json, task_to_json
from local_runner.errors import ApiError, Code, FailedPrecondition, InvalidArgument
from local_runner.model import Task, TaskView
from local_runner.service import TasksService

PREFIX = "/runner/v1/"
#: waitIdle's default and longest wait, in seconds.
DEFAULT_WAIT = 30.0
MAX_WAIT = 300.0
_POLL_INTERVAL = 0.01


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise InvalidArgument(f"Invalid value at '{name}' (TYPE_BOOL), \"{value}\"")


def _task(task: Task, view: TaskView, int_enums: bool) -> JsonObject:
    return task_to_json(task, view, int_enums) | {"state": task.state.value}


def require_test_aids(enabled: bool) -> None:
    """Refuse a state-changing test aid (replay, reset) on a runner serving with ``--no-test-aids``."""
    if not enabled:
        raise ApiError(
            "Test aids are disabled on this runner (runner serve --no-test-aids).", Code.PERMISSION_DENIED
        )


def routes(service: TasksService, test_aids: bool = True) -> Router:
    """The extension routes, answering from ``service``; ``test_aids=False`` refuses replay and reset."""

    def replay(call: Call) -> JsonObject:
        require_test_aids(test_aids)
        return _task(service.replay_task(call.params["name"]), TaskView.BASIC, call.int_enums)

    def reset(call: Call) -> JsonObject:
        require_test_aids(test_aids)
        service.reset()
        return {}

    async def wait_idle(call: Call) -> JsonObject:
        body = call.fields("queue", "timeout", "within")
        queue = body.get("queue") or None
        if queue is not None and not isinstance(queue, str):
            raise InvalidArgument(f"Invalid value at 'queue' (TYPE_STRING), {queue!r}")
        timeout = parse_duration(body.get("timeout", f"{DEFAULT_WAIT:g}s"), "timeout")
        if not 0 <= timeout <= MAX_WAIT:
            raise InvalidArgument(f"timeout must be between 0s and {MAX_WAIT:g}s; got {timeout:g}s.")
        within = parse_duration(body["within"], "within") if "within" in body else None
        deadline = time.monotonic() + timeout
        while not service.is_idle(queue, within):
            if time.monotonic() >= deadline:
                raise ApiError(f"Not idle after {timeout:g}s.", Code.DEADLINE_EXCEEDED)
            await asyncio.sleep(_POLL_INTERVAL)
        return {"idle": True}

    def clock(call: Call) -> JsonObject:
        return {
            "now": format_timestamp(service.clock.now()),
            "virtual": isinstance(service.clock, VirtualClock),
        }

    def advance_clock(call: Call) -> JsonObject:
        require_test_aids(test_aids)
        virtual = service.clock
        if not isinstance(virtual, VirtualClock):
            raise FailedPrecondition(
                "The runner runs on the real clock; start it with --virtual-clock to move time."
            )
        body = call.fields("by", "to")
        if ("by" in body) == ("to" in body):
            raise InvalidArgument("Give exactly one of 'by' (a duration) and 'to' (a timestamp).")
        now = virtual.now()
        target = now + parse_duration(body["by"], "by") if "by" in body else parse_timestamp(body["to"], "to")
        if target < now:
            raise InvalidArgument(f"The clock cannot go back: it is {format_timestamp(now)}.")
        virtual.set(target)
        return clock(call)

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
    router.add("POST", rf"(?P<name>{TASK}):replay", replay)
    router.add("POST", "waitIdle", wait_idle)
    router.add("POST", "reset", reset)
    router.add("GET", "clock", clock)
    router.add("POST", "clock:advance", advance_clock)
    router.add("GET", rf"(?P<name>{TASK}):attempts", attempts)
    router.add(
        "GET",
        rf"(?P<parent>{QUEUE})/tasks",
        list_tasks,
        ("responseView", "pageSize", "pageToken", "exhausted"),
    )
    router.add("GET", rf"(?P<name>{TASK})", get_task, ("responseView",))
    return router
