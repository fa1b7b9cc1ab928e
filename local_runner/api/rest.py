"""The Cloud Tasks REST v2 methods: parse a call's fields, ask the service, answer proto3 JSON.

Free of any HTTP server: :mod:`local_runner.api.views` serves this table on aiohttp, the gRPC front
transcodes to it, and ``tasktoolkit.testing.FakeQueue`` calls it in process. Every path under ``/v2/``
reaches one :class:`~local_runner.api.routing.Router`, which picks the handler (custom ``:verb``
methods included). Runner-only extensions live under ``/runner/v1/`` (:mod:`local_runner.api.runner_ext`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from local_runner.api import field_mask, iam
from local_runner.api.batch import BatchTasks
from local_runner.api.cmek import CmekConfigs
from local_runner.api.operations import Operations
from local_runner.api.request import (
    Call,
    check_fields,
    is_int32,
    parse_int,
    parse_view,
)
from local_runner.api.routing import LOCATION, QUEUE, TASK, Router
from local_runner.api.task_inserts import Inserts, TaskInserts
from local_runner.codec.queues import queue_from_json, queue_to_json
from local_runner.codec.scalars import JsonObject, decode_bytes
from local_runner.codec.tasks import new_task_from_json, task_to_json
from local_runner.errors import AlreadyExists, InvalidArgument, NotFound
from local_runner.model import TaskView, check_headers, parse_queue_name
from local_runner.service import TasksService


def _page(key: str, items: list[JsonObject], token: str) -> JsonObject:
    out: JsonObject = {}
    if items:
        out[key] = items
    if token:
        out["nextPageToken"] = token
    return out


def _location_to_json(name: str) -> JsonObject:
    return {"name": name, "locationId": name.rpartition("/")[2]}


class CloudTasksApi:
    """The ``google.cloud.tasks.v2.CloudTasks`` and Locations methods, one handler each.

    ``inserts`` stores CreateTask's tasks (default: those of one event-loop turn in one transaction).
    """

    def __init__(self, service: TasksService, inserts: Inserts | None = None) -> None:
        self.service = service
        self._inserts = inserts or TaskInserts(service)
        r = self.router = Router()
        page = ("pageSize", "pageToken")
        r.add("GET", r"projects/(?P<project>[^/]+)/locations", self.list_locations, ("filter", *page))
        r.add("GET", rf"(?P<name>{LOCATION})", self.get_location)
        r.add("GET", rf"(?P<parent>{LOCATION})/queues", self.list_queues, ("filter", *page))
        r.add("POST", rf"(?P<parent>{LOCATION})/queues", self.create_queue)
        r.add("GET", rf"(?P<name>{QUEUE})", self.get_queue)
        r.add("PATCH", rf"(?P<name>{QUEUE})", self.update_queue, ("updateMask",))
        r.add("DELETE", rf"(?P<name>{QUEUE})", self.delete_queue)
        r.add("POST", rf"(?P<name>{QUEUE}):purge", self.purge_queue)
        r.add("POST", rf"(?P<name>{QUEUE}):pause", self.pause_queue)
        r.add("POST", rf"(?P<name>{QUEUE}):resume", self.resume_queue)
        r.add("POST", rf"(?P<name>{QUEUE}):getIamPolicy", self.get_iam_policy)
        r.add("POST", rf"(?P<name>{QUEUE}):setIamPolicy", self.set_iam_policy)
        r.add("POST", rf"(?P<name>{QUEUE}):testIamPermissions", self.test_iam_permissions)
        r.add("GET", rf"(?P<parent>{QUEUE})/tasks", self.list_tasks, ("responseView", *page))
        r.add("POST", rf"(?P<parent>{QUEUE})/tasks", self.create_task)
        r.add("POST", rf"(?P<parent>{QUEUE})/tasks:buffer", self.buffer_task)
        r.add("POST", rf"(?P<parent>{QUEUE})/tasks/(?P<task_id>[^/:]+):buffer", self.buffer_task)
        operations = Operations()
        batch = BatchTasks(service, operations)
        r.add("POST", rf"(?P<parent>{QUEUE})/tasks:batchCreate", batch.create)
        r.add("POST", rf"(?P<parent>{QUEUE})/tasks:batchDelete", batch.delete)
        r.add("GET", rf"(?P<name>{TASK})", self.get_task, ("responseView",))
        r.add("DELETE", rf"(?P<name>{TASK})", self.delete_task)
        r.add("POST", rf"(?P<name>{TASK}):run", self.run_task)
        cmek = CmekConfigs()
        r.add("GET", rf"(?P<name>{LOCATION}/cmekConfig)", cmek.get)
        r.add("PATCH", rf"(?P<name>{LOCATION}/cmekConfig)", cmek.update, ("updateMask",))
        operation = rf"(?P<name>{LOCATION}/operations/[^/:]+)"
        r.add(
            "GET",
            rf"(?P<name>{LOCATION})/operations",
            operations.list,
            ("filter", *page, "returnPartialSuccess"),
        )
        r.add("GET", operation, operations.get)
        r.add("DELETE", operation, operations.delete)
        r.add("POST", operation + ":cancel", operations.cancel)
        r.add("POST", operation + ":wait", operations.wait)

    # -- locations ---------------------------------------------------------------------------------

    def list_locations(self, call: Call) -> JsonObject:
        """ListLocations: the runner's one location (filter and paging accepted, nothing to page)."""
        parse_int(call.query.get("pageSize"), "pageSize")
        names = self.service.list_locations(call.params["project"])
        return _page("locations", [_location_to_json(name) for name in names], "")

    def get_location(self, call: Call) -> JsonObject:
        """GetLocation."""
        return _location_to_json(self.service.get_location(call.params["name"]))

    # -- queues ------------------------------------------------------------------------------------

    def list_queues(self, call: Call) -> JsonObject:
        """ListQueues, with a ``state`` filter and page tokens."""
        page = self.service.list_queues_page(
            call.params["parent"],
            call.query.get("filter", ""),
            parse_int(call.query.get("pageSize"), "pageSize"),
            call.query.get("pageToken", ""),
        )
        queues = [queue_to_json(queue, call.int_enums) for queue in page.items]
        return _page("queues", queues, page.next_page_token)

    def create_queue(self, call: Call) -> JsonObject:
        """CreateQueue: the body is the Queue; its name must be under the URL's parent."""
        queue = self.service.create_queue(call.params["parent"], queue_from_json(call.body, "queue"))
        return queue_to_json(queue, call.int_enums)

    def get_queue(self, call: Call) -> JsonObject:
        """GetQueue."""
        return queue_to_json(self.service.get_queue(call.params["name"]), call.int_enums)

    def update_queue(self, call: Call) -> JsonObject:
        """UpdateQueue: all fields without a mask, else only the masked ones; creates a missing queue."""
        name = str(parse_queue_name(call.params["name"]))
        patch = field_mask.camelize(call.body)
        if patch.get("name") not in (None, "", name):
            raise InvalidArgument(
                f"The queue name in the request body ('{patch['name']}') must be the same as the queue "
                f"name in the URL ('{name}'); a queue cannot be renamed."
            )
        patch["name"] = name
        paths = field_mask.parse_update_mask(call.query.get("updateMask", ""))
        if paths:
            try:
                base = queue_to_json(self.service.get_queue(name))
            except NotFound:
                base = {"name": name}
            queue_from_json(field_mask.overlay(base, patch), "queue")  # type-checks every request field
            patch = field_mask.apply_mask(base, patch, paths)
        return queue_to_json(self.service.upsert_queue(queue_from_json(patch, "queue")), call.int_enums)

    def delete_queue(self, call: Call) -> JsonObject:
        """DeleteQueue."""
        self.service.delete_queue(call.params["name"])
        return {}

    def purge_queue(self, call: Call) -> JsonObject:
        """PurgeQueue."""
        call.fields()
        return queue_to_json(self.service.purge_queue(call.params["name"]), call.int_enums)

    def pause_queue(self, call: Call) -> JsonObject:
        """PauseQueue."""
        call.fields()
        return queue_to_json(self.service.pause_queue(call.params["name"]), call.int_enums)

    def resume_queue(self, call: Call) -> JsonObject:
        """ResumeQueue."""
        call.fields()
        return queue_to_json(self.service.resume_queue(call.params["name"]), call.int_enums)

    # -- IAM (stored, not enforced) ----------------------------------------------------------------

    def get_iam_policy(self, call: Call) -> JsonObject:
        """GetIamPolicy (``options.requestedPolicyVersion`` is checked, then ignored)."""
        options = call.fields("options").get("options", {})
        if not isinstance(options, Mapping):
            raise InvalidArgument(f"Invalid value at 'options' (google.iam.v1.GetPolicyOptions), {options!r}")
        version = check_fields(options, ("requestedPolicyVersion",), "options").get(
            "requestedPolicyVersion", 0
        )
        if not is_int32(version):
            raise InvalidArgument(
                f"Invalid value at 'options.requested_policy_version' (TYPE_INT32), {version!r}"
            )
        return iam.policy_to_json(self.service.get_iam_policy(call.params["name"]), call.int_enums)

    def set_iam_policy(self, call: Call) -> JsonObject:
        """SetIamPolicy: replaces the policy, or only the fields named by ``updateMask``."""
        fields = call.fields("policy", "updateMask")
        policy = iam.normalize_policy(fields.get("policy", {}))
        mask = fields.get("updateMask", "")
        if not isinstance(mask, str):
            raise InvalidArgument(f"Invalid value at 'update_mask' (google.protobuf.FieldMask), {mask!r}")
        if mask.strip():
            merged = self.service.get_iam_policy(call.params["name"])
            for path in (part.strip() for part in mask.split(",")):
                key = {"audit_configs": "auditConfigs"}.get(path, path)
                if key not in ("version", "bindings", "auditConfigs", "etag"):
                    raise InvalidArgument(f'Invalid update_mask provided: "{path}" is not a field of Policy.')
                if key in policy:
                    merged[key] = policy[key]
                else:
                    merged.pop(key, None)
            policy = merged
        return iam.policy_to_json(self.service.set_iam_policy(call.params["name"], policy), call.int_enums)

    def test_iam_permissions(self, call: Call) -> JsonObject:
        """TestIamPermissions: all asked permissions on an existing queue (never NOT_FOUND)."""
        permissions = iam.check_permissions(call.fields("permissions").get("permissions"))
        granted = self.service.test_iam_permissions(call.params["name"], permissions)
        return {"permissions": granted} if granted else {}

    # -- tasks -------------------------------------------------------------------------------------

    def list_tasks(self, call: Call) -> JsonObject:
        """ListTasks (BASIC view unless asked for FULL)."""
        view = parse_view(call.query.get("responseView", "BASIC"))
        page = self.service.list_tasks(
            call.params["parent"],
            parse_int(call.query.get("pageSize"), "pageSize"),
            call.query.get("pageToken", ""),
        )
        tasks = [task_to_json(task, view, call.int_enums) for task in page.items]
        return _page("tasks", tasks, page.next_page_token)

    def get_task(self, call: Call) -> JsonObject:
        """GetTask."""
        view = parse_view(call.query.get("responseView", "BASIC"))
        return task_to_json(self.service.get_task(call.params["name"]), view, call.int_enums)

    async def create_task(self, call: Call) -> JsonObject:
        """CreateTask: body ``{"task": {...}, "responseView": ...}``; stored with concurrent calls' tasks."""
        fields = call.fields("task", "responseView")
        view = parse_view(fields.get("responseView", "BASIC"))
        request = new_task_from_json(fields.get("task", {}), "task")
        while True:
            task = self.service.new_task(call.params["parent"], request)
            try:
                await self._inserts.add(task)
            except AlreadyExists:
                if request.name is None:  # a generated id that another task holds: draw another
                    continue
                raise
            return task_to_json(task, view, call.int_enums)

    def delete_task(self, call: Call) -> JsonObject:
        """DeleteTask."""
        self.service.delete_task(call.params["name"])
        return {}

    def run_task(self, call: Call) -> JsonObject:
        """RunTask: dispatch now, even on a paused queue."""
        view = parse_view(call.fields("responseView").get("responseView", "BASIC"))
        return task_to_json(self.service.run_task(call.params["name"]), view, call.int_enums)

    def buffer_task(self, call: Call) -> JsonObject:
        """BufferTask: body ``{"body": {"contentType", "data": <base64>}}``; answers ``{"task": ...}``."""
        http_body = call.fields("body").get("body", {})
        if not isinstance(http_body, Mapping):
            raise InvalidArgument(f"Invalid value at 'body' (google.api.HttpBody), {http_body!r}")
        fields = check_fields(http_body, ("contentType", "data", "extensions"), "body")
        content_type = fields.get("contentType", "")
        if not isinstance(content_type, str):
            raise InvalidArgument(f"Invalid value at 'body.content_type' (TYPE_STRING), {content_type!r}")
        check_headers([("Content-Type", content_type)], "body.contentType")
        task = self.service.buffer_task(
            call.params["parent"], call.params.get("task_id"), _base64(fields.get("data", "")), content_type
        )
        return {"task": task_to_json(task, TaskView.BASIC, call.int_enums)}


def _base64(value: Any) -> bytes:
    """Standard or URL-safe base64, padding optional (proto3 JSON bytes)."""
    decoded = decode_bytes(value)
    if decoded is not None:
        return decoded
    shown = f'"{value[:40]}"' if isinstance(value, str) else repr(value)
    raise InvalidArgument(f"Invalid value at 'body.data' (TYPE_BYTES), {shown}")
