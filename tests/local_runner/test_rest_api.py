"""The REST v2 surface over plain HTTP against a real runner (real store, scheduler and dispatcher).

Tasks target http://127.0.0.1:9/ (connections are refused) and are either scheduled an hour ahead or
sit in paused queues, so nothing is dispatched unless a test asks for it.
"""

from __future__ import annotations

import base64
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from local_runner import errors
from local_runner.api.views import MAX_REQUEST_BYTES
from local_runner.config import RunnerSettings
from local_runner.server import RunnerServer

PARENT = "projects/test-project/locations/us-central1"
NOWHERE = "http://127.0.0.1:9/"
_ids = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as running:
        yield running


class Api:
    """Thin JSON helpers bound to one server."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = requests.Session()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        kwargs: dict[str, Any] = {"params": params, "timeout": 10}
        if isinstance(body, bytes | str):  # raw (often malformed) JSON, labelled as JSON clients do
            kwargs["data"] = body
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        response = self.http.request(method, f"{self.base}/v2/{path}", **kwargs)
        assert response.headers["Content-Type"].startswith("application/json")
        return response

    def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = self.call(method, path, body, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def new_queue(self, parent: str = PARENT, **fields: Any) -> str:
        name = f"{parent}/queues/q-{next(_ids)}"
        self.ok("POST", f"{parent}/queues", {"name": name, **fields})
        return name

    def new_task(self, queue: str, task_id: str | None = None, **fields: Any) -> Any:
        task: dict[str, Any] = {
            "httpRequest": {"url": NOWHERE, "body": _b64(b"payload")},
            "scheduleTime": _later(),
        }
        if task_id is not None:
            task["name"] = f"{queue}/tasks/{task_id}"
        task.update(fields)
        return self.ok("POST", f"{queue}/tasks", {"task": task})


@pytest.fixture
def api(server: RunnerServer) -> Api:
    return Api(server.base_url)


@pytest.fixture(autouse=True)
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Any exception escaping a handler (an HTTP 500) fails the test that caused it."""
    yield
    failures = [r for r in caplog.records if r.name == "local_runner.api" and r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _later(hours: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def assert_error(response: requests.Response, status: int, canonical: str, message: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    assert error["status"] == canonical
    if message is not None:
        assert error["message"] == message
    return str(error["message"])


def poll(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Call ``check`` until it returns something truthy, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


# -- queues ----------------------------------------------------------------------------------------


def test_create_queue_returns_the_real_defaults(api: Api) -> None:
    name = f"{PARENT}/queues/defaults-{next(_ids)}"
    created = api.ok("POST", f"{PARENT}/queues", {"name": name})
    assert created == {
        "name": name,
        "rateLimits": {"maxDispatchesPerSecond": 500, "maxBurstSize": 100, "maxConcurrentDispatches": 1000},
        "retryConfig": {
            "maxAttempts": 100,
            "minBackoff": "0.100s",
            "maxBackoff": "3600s",
            "maxDoublings": 16,
        },
        "state": "RUNNING",
    }
    assert api.ok("GET", name) == created


def test_queue_lifecycle(api: Api) -> None:
    name = api.new_queue(rate_limits={"max_dispatches_per_second": 5}, retryConfig={"maxAttempts": "3"})
    queue = api.ok("GET", name)
    assert queue["rateLimits"]["maxDispatchesPerSecond"] == 5
    assert queue["rateLimits"]["maxBurstSize"] == 10
    assert queue["retryConfig"]["maxAttempts"] == 3
    assert name in [q["name"] for q in api.ok("GET", f"{PARENT}/queues")["queues"]]

    assert api.ok("POST", f"{name}:pause", {})["state"] == "PAUSED"
    assert api.ok("GET", name)["state"] == "PAUSED"
    assert api.ok("POST", f"{name}:resume")["state"] == "RUNNING"

    api.new_task(name, "before-purge")
    purged = api.ok("POST", f"{name}:purge", {})
    assert purged["purgeTime"].endswith("Z")
    assert api.ok("GET", f"{name}/tasks") == {}

    assert api.ok("DELETE", name) == {}
    assert_error(api.call("GET", name), 404, "NOT_FOUND", errors.QUEUE_NOT_FOUND)


def test_output_only_queue_fields_are_ignored_on_create(api: Api) -> None:
    name = api.new_queue(state="PAUSED", purgeTime="2020-01-01T00:00:00Z", rateLimits={"maxBurstSize": -5})
    queue = api.ok("GET", name)
    assert queue["state"] == "RUNNING"
    assert "purgeTime" not in queue
    assert queue["rateLimits"]["maxBurstSize"] == 100


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"rateLimits": {"maxDispatchesPerSecond": 501}},
            "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
        ),
        (
            {"rateLimits": {"maxDispatchesPerSecond": -1}},
            "RateLimits.maxDispatchesPerSecond cannot be negative.",
        ),
        (
            {"rateLimits": {"maxConcurrentDispatches": 5001}},
            "RateLimits.maxConcurrentDispatches must be less than or equal to 5000.",
        ),
        (
            {"rateLimits": {"maxConcurrentDispatches": -1}},
            "RateLimits.maxConcurrentDispatches cannot be negative.",
        ),
        ({"retryConfig": {"maxAttempts": -2}}, "RetryConfig.maxAttempts must be greater or equal to -1."),
        ({"retryConfig": {"maxDoublings": -1}}, "RetryConfig.maxDoublings cannot be negative."),
        ({"retryConfig": {"minBackoff": "-1s"}}, "RetryConfig.minBackoff cannot be negative."),
        (
            {"retryConfig": {"minBackoff": "20s", "maxBackoff": "10s"}},
            "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.",
        ),
    ],
)
def test_create_queue_validation_messages(api: Api, fields: dict[str, Any], message: str) -> None:
    response = api.call("POST", f"{PARENT}/queues", {"name": f"{PARENT}/queues/bad-{next(_ids)}", **fields})
    assert_error(response, 400, "INVALID_ARGUMENT", message)


@pytest.mark.parametrize("name", ["my_queue", "projects/p/queues/q", "", "x" * 101])
def test_create_queue_bad_name(api: Api, name: str) -> None:
    queue_name = f"{PARENT}/queues/{name}" if name and "/" not in name else name
    response = api.call("POST", f"{PARENT}/queues", {"name": queue_name})
    message = (
        'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".'
    )
    assert_error(response, 400, "INVALID_ARGUMENT", message)


def test_create_queue_duplicate_and_foreign_parent(api: Api) -> None:
    name = api.new_queue()
    assert_error(
        api.call("POST", f"{PARENT}/queues", {"name": name}), 409, "ALREADY_EXISTS", "Queue already exists"
    )
    other = "projects/test-project/locations/europe-west1"
    message = assert_error(api.call("POST", f"{other}/queues", {"name": name}), 400, "INVALID_ARGUMENT")
    assert other in message


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("POST", ":pause"), ("POST", ":resume"), ("POST", ":purge")]
)
def test_missing_queue_is_not_found(api: Api, method: str, suffix: str) -> None:
    response = api.call(method, f"{PARENT}/queues/never-created{suffix}", {} if method == "POST" else None)
    assert_error(response, 404, "NOT_FOUND", errors.QUEUE_NOT_FOUND)


def test_delete_missing_queue(api: Api) -> None:
    response = api.call("DELETE", f"{PARENT}/queues/never-created")
    assert_error(response, 404, "NOT_FOUND", "Requested entity was not found.")


def test_deleted_queue_name_is_blocked_for_a_while(api: Api) -> None:
    name = api.new_queue()
    api.ok("DELETE", name)
    response = api.call("POST", f"{PARENT}/queues", {"name": name})
    assert_error(response, 400, "FAILED_PRECONDITION", errors.QUEUE_TOMBSTONED)


# -- UpdateQueue -------------------------------------------------------------------------------------


def test_update_queue_without_mask_replaces_every_field(api: Api) -> None:
    name = api.new_queue(rateLimits={"maxDispatchesPerSecond": 5}, retryConfig={"maxAttempts": 7})
    api.ok("POST", f"{name}:pause")
    updated = api.ok("PATCH", name, {"name": name, "retryConfig": {"maxAttempts": 3}, "state": "RUNNING"})
    assert updated["retryConfig"]["maxAttempts"] == 3
    assert updated["rateLimits"]["maxDispatchesPerSecond"] == 500  # unset -> default
    assert updated["state"] == "PAUSED"  # output only: UpdateQueue cannot resume
    assert api.ok("GET", name) == updated


@pytest.mark.parametrize(
    "mask",
    ["rateLimits.maxDispatchesPerSecond,retryConfig", "rate_limits.max_dispatches_per_second,retry_config"],
)
def test_update_queue_with_mask_changes_only_masked_fields(api: Api, mask: str) -> None:
    name = api.new_queue(
        rateLimits={"maxDispatchesPerSecond": 5, "maxConcurrentDispatches": 7},
        retryConfig={"maxAttempts": 9, "maxDoublings": 2},
        stackdriverLoggingConfig={"samplingRatio": 0.5},
    )
    body = {
        "rateLimits": {"maxDispatchesPerSecond": 20, "maxConcurrentDispatches": 1},
        "retryConfig": {"minBackoff": "1s"},
        "stackdriverLoggingConfig": {"samplingRatio": 1.0},
    }
    updated = api.ok("PATCH", name, body, updateMask=mask)
    assert updated["rateLimits"] == {
        "maxDispatchesPerSecond": 20,
        "maxBurstSize": 10,
        "maxConcurrentDispatches": 7,  # not masked
    }
    # The whole retryConfig is masked: fields absent from the request go back to their defaults.
    assert updated["retryConfig"] == {
        "maxAttempts": 100,
        "minBackoff": "1s",
        "maxBackoff": "3600s",
        "maxDoublings": 16,
    }
    assert updated["stackdriverLoggingConfig"] == {"samplingRatio": 0.5}


def test_update_queue_creates_a_missing_queue(api: Api) -> None:
    name = f"{PARENT}/queues/upserted-{next(_ids)}"
    created = api.ok("PATCH", name, {"rateLimits": {"maxDispatchesPerSecond": 2}})
    assert created["state"] == "RUNNING"
    assert created["rateLimits"]["maxDispatchesPerSecond"] == 2
    masked = f"{PARENT}/queues/upserted-{next(_ids)}"
    created = api.ok(
        "PATCH", masked, {"retryConfig": {"maxAttempts": 4}}, updateMask="retryConfig.maxAttempts"
    )
    assert created["retryConfig"]["maxAttempts"] == 4
    assert api.ok("GET", masked) == created


def test_update_queue_errors(api: Api) -> None:
    name = api.new_queue()
    other = f"{PARENT}/queues/someone-else"
    assert_error(api.call("PATCH", name, {"name": other}), 400, "INVALID_ARGUMENT")
    assert_error(api.call("PATCH", name, {}, updateMask="rateLimits.bogus"), 400, "INVALID_ARGUMENT")
    response = api.call(
        "PATCH", name, {"rateLimits": {"maxDispatchesPerSecond": 600}}, updateMask="rateLimits"
    )
    assert_error(
        response,
        400,
        "INVALID_ARGUMENT",
        "RateLimits.maxDispatchesPerSecond must be less than or equal to 500.",
    )
    # Fields outside the mask are still type-checked, as the real JSON parser does.
    response = api.call("PATCH", name, {"retryConfig": {"bogus": 1}}, updateMask="rateLimits")
    assert_error(response, 400, "INVALID_ARGUMENT")
    assert_error(api.call("PATCH", f"{PARENT}/queues/bad_name", {}), 400, "INVALID_ARGUMENT")


def test_update_queue_http_target(api: Api) -> None:
    name = api.new_queue()
    target = {
        "uriOverride": {"scheme": "HTTP", "host": "127.0.0.1", "port": "9", "pathOverride": {"path": "/x"}}
    }
    updated = api.ok("PATCH", name, {"httpTarget": target}, updateMask="httpTarget")
    assert updated["httpTarget"]["uriOverride"]["host"] == "127.0.0.1"
    assert updated["httpTarget"]["uriOverride"]["port"] == "9"
    cleared = api.ok("PATCH", name, {}, updateMask="httpTarget")
    assert "httpTarget" not in cleared


# -- ListQueues: filter and pages ------------------------------------------------------------------


def test_list_queues_filter_and_pages(api: Api) -> None:
    parent = f"projects/list-project-{next(_ids)}/locations/us-east1"
    names = [api.new_queue(parent) for _ in range(5)]
    for name in names[1:3]:
        api.ok("POST", f"{name}:pause")
    everything = api.ok("GET", f"{parent}/queues")
    assert [q["name"] for q in everything["queues"]] == sorted(names)
    assert "nextPageToken" not in everything

    def names_for(filter_text: str) -> list[str]:
        return [q["name"] for q in api.ok("GET", f"{parent}/queues", filter=filter_text).get("queues", [])]

    assert names_for("state:PAUSED") == sorted(names[1:3])
    assert names_for('state: "PAUSED"') == sorted(names[1:3])
    assert names_for("state = RUNNING") == sorted(names[:1] + names[3:])
    assert names_for("state != PAUSED") == sorted(names[:1] + names[3:])
    assert names_for("state:DISABLED") == []

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = api.ok("GET", f"{parent}/queues", pageSize=2, pageToken=token, filter="state:RUNNING")
        seen += [q["name"] for q in page["queues"]]
        pages += 1
        token = page.get("nextPageToken", "")
        if not token:
            break
        switched = api.call("GET", f"{parent}/queues", pageSize=2, pageToken=token, filter="state:PAUSED")
        assert_error(switched, 400, "INVALID_ARGUMENT")
    assert seen == sorted(names[:1] + names[3:])
    assert pages == 2


@pytest.mark.parametrize(
    "params",
    [
        {"filter": "name:foo"},
        {"filter": "state:SLEEPING"},
        {"filter": "state > RUNNING"},
        {"pageSize": "9801"},
        {"pageSize": "-1"},
        {"pageSize": "many"},
        {"pageSize": "4294967296"},
        {"pageToken": "not-a-token"},
    ],
)
def test_list_queues_bad_arguments(api: Api, params: dict[str, str]) -> None:
    assert_error(api.call("GET", f"{PARENT}/queues", **params), 400, "INVALID_ARGUMENT")


# -- tasks -----------------------------------------------------------------------------------------


def test_task_lifecycle_and_views(api: Api) -> None:
    queue = api.new_queue()
    created = api.new_task(
        queue, "t-1", httpRequest={"url": NOWHERE, "body": _b64(b"hello"), "headers": {"x-a": "1"}}
    )
    assert created["name"] == f"{queue}/tasks/t-1"
    assert created["view"] == "BASIC"
    assert "body" not in created["httpRequest"]
    assert created["httpRequest"]["headers"] == {"x-a": "1", "User-Agent": "Google-Cloud-Tasks"}
    assert created["httpRequest"]["httpMethod"] == "POST"
    assert created["dispatchDeadline"] == "600s"

    basic = api.ok("GET", created["name"])
    assert "body" not in basic["httpRequest"]
    full = api.ok("GET", created["name"], responseView="FULL")
    assert full["view"] == "FULL"
    assert base64.b64decode(full["httpRequest"]["body"]) == b"hello"
    assert (
        api.ok("GET", created["name"], responseView="2")["httpRequest"]["body"] == full["httpRequest"]["body"]
    )

    listed = api.ok("GET", f"{queue}/tasks")["tasks"]
    assert [t["name"] for t in listed] == [created["name"]]
    assert "body" not in listed[0]["httpRequest"]
    assert "body" in api.ok("GET", f"{queue}/tasks", responseView="FULL")["tasks"][0]["httpRequest"]

    assert api.ok("DELETE", created["name"]) == {}
    assert_error(api.call("GET", created["name"]), 404, "NOT_FOUND", errors.TASK_GONE)
    assert_error(api.call("DELETE", created["name"]), 404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    recreated = api.call(
        "POST", f"{queue}/tasks", {"task": {"name": created["name"], "httpRequest": {"url": NOWHERE}}}
    )
    assert_error(recreated, 409, "ALREADY_EXISTS", errors.TASK_TOMBSTONED)


def test_create_task_full_view_and_generated_id(api: Api) -> None:
    queue = api.new_queue()
    body = {
        "task": {
            "http_request": {"url": NOWHERE, "body": _b64(b"x"), "http_method": "PUT"},
            "schedule_time": _later(),
        }
    }
    created = api.ok("POST", f"{queue}/tasks", {**body, "response_view": "FULL"})
    task_id = created["name"].rpartition("/tasks/")[2]
    assert task_id.isdigit()
    assert created["httpRequest"]["body"] == _b64(b"x")
    assert created["httpRequest"]["httpMethod"] == "PUT"


def test_task_not_found_messages(api: Api) -> None:
    queue = api.new_queue()
    missing = f"{queue}/tasks/never"
    assert_error(api.call("GET", missing), 404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    assert_error(api.call("DELETE", missing), 404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    assert_error(api.call("POST", f"{missing}:run", {}), 404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    response = api.call(
        "POST", f"{PARENT}/queues/no-such-queue/tasks", {"task": {"httpRequest": {"url": NOWHERE}}}
    )
    assert_error(response, 404, "NOT_FOUND", errors.QUEUE_NOT_FOUND)


def test_duplicate_task(api: Api) -> None:
    queue = api.new_queue()
    api.new_task(queue, "dup")
    response = api.call(
        "POST", f"{queue}/tasks", {"task": {"name": f"{queue}/tasks/dup", "httpRequest": {"url": NOWHERE}}}
    )
    assert_error(response, 409, "ALREADY_EXISTS", "Requested entity already exists")


def _task_body(queue: str, **fields: Any) -> dict[str, Any]:
    return {"task": {"httpRequest": {"url": NOWHERE}, **fields}}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda q: _task_body(q, name=f"{q}/tasks/bad id!"),
            'Task ID "bad id!" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), '
            "or underscores (_). Task ID must between 1 and 500 characters.",
        ),
        (
            lambda q: _task_body(q, name=f"{PARENT}/queues/other/tasks/t"),
            None,
        ),
        (lambda q: {"task": {"httpRequest": {"url": ""}}}, "HttpRequest.url is required."),
        (lambda q: {"task": {"httpRequest": {}}}, "HttpRequest.url is required."),
        (
            lambda q: {"task": {"httpRequest": {"url": "ftp://x/"}}},
            "HttpTarget.url must start with 'http://' or 'https://'.",
        ),
        (lambda q: {"task": {}}, "Task.payload_type is not set."),
        (lambda q: _task_body(q, dispatchDeadline="5s"), None),
        (lambda q: {"task": {"httpRequest": {"url": NOWHERE, "httpMethod": "GET", "body": "eA=="}}}, None),
    ],
)
def test_create_task_validation(api: Api, build: Callable[[str], Any], message: str | None) -> None:
    queue = api.new_queue()
    assert_error(api.call("POST", f"{queue}/tasks", build(queue)), 400, "INVALID_ARGUMENT", message)


UNSENDABLE_HEADERS = [
    ({"X-Evil": "1\r\nX-Injected: 2"}, 'the value of header "X-Evil" contains CR, LF or NUL'),
    ({"X-Evil": "a\x00b"}, 'the value of header "X-Evil" contains CR, LF or NUL'),
    ({"X Evil": "1"}, '"X Evil" is not a valid HTTP header name'),
    ({"X-Evil\n": "1"}, r'"X-Evil\n" is not a valid HTTP header name'),
]


@pytest.mark.parametrize(("headers", "words"), UNSENDABLE_HEADERS)
def test_create_task_refuses_headers_no_request_can_carry(
    api: Api, headers: dict[str, str], words: str
) -> None:
    queue = api.new_queue()
    task = {"name": f"{queue}/tasks/smuggler", "httpRequest": {"url": NOWHERE, "headers": headers}}
    message = assert_error(api.call("POST", f"{queue}/tasks", {"task": task}), 400, "INVALID_ARGUMENT")
    assert message.startswith("HttpRequest.headers: ") and words in message
    assert api.ok("GET", f"{queue}/tasks") == {}  # nothing stored, nothing to retry
    overrides = [{"header": {"key": key, "value": value}} for key, value in headers.items()]
    refused = api.call(
        "POST", f"{PARENT}/queues", {"name": f"{queue}-o", "httpTarget": {"headerOverrides": overrides}}
    )
    assert assert_error(refused, 400, "INVALID_ARGUMENT").startswith("HttpTarget.headerOverrides: ")
    patch = api.call("PATCH", queue, {"httpTarget": {"headerOverrides": overrides}}, updateMask="httpTarget")
    assert words in assert_error(patch, 400, "INVALID_ARGUMENT")
    assert "httpTarget" not in api.ok("GET", queue)
    assert_error(api.call("GET", f"{queue}-o"), 404, "NOT_FOUND")


def test_buffer_task_refuses_a_content_type_no_request_can_carry(api: Api) -> None:
    queue = api.new_queue()
    api.ok("PATCH", queue, {"httpTarget": {"uriOverride": {"host": "127.0.0.1"}}}, updateMask="httpTarget")
    body = {"body": {"contentType": "text/plain\r\nX-Injected: 1", "data": _b64(b"x")}}
    message = assert_error(api.call("POST", f"{queue}/tasks:buffer", body), 400, "INVALID_ARGUMENT")
    assert message.startswith("body.contentType: ")
    assert api.ok("GET", f"{queue}/tasks") == {}


def test_framing_headers_are_accepted_and_echoed(api: Api) -> None:
    """Like Host and Content-Length, which the real service accepts and computes; dispatch drops them."""
    queue = api.new_queue()
    headers = {"Transfer-Encoding": "chunked", "Connection": "close", "Content-Length": "3"}
    task = api.new_task(queue, httpRequest={"url": NOWHERE, "headers": headers})
    assert task["httpRequest"]["headers"] == {**headers, "User-Agent": "Google-Cloud-Tasks"}


def test_task_name_in_another_queue(api: Api) -> None:
    queue = api.new_queue()
    other = f"{PARENT}/queues/other/tasks/t"
    response = api.call("POST", f"{queue}/tasks", _task_body(queue, name=other))
    expected = (
        f"The queue name from request ('{queue}') must be the same as the queue name in the named task "
        f"('{other}')."
    )
    assert_error(response, 400, "INVALID_ARGUMENT", expected)


def test_schedule_time_too_far_ahead(api: Api) -> None:
    queue = api.new_queue()
    response = api.call("POST", f"{queue}/tasks", _task_body(queue, scheduleTime=_later(hours=721)))
    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert message.endswith(
        "is too far in the future. Schedule time must be no more than 720h in the future."
    )


def test_task_pages(api: Api) -> None:
    queue = api.new_queue()
    names = [api.new_task(queue, f"t{i}")["name"] for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = api.ok("GET", f"{queue}/tasks", pageSize=2, pageToken=token)
        assert len(page["tasks"]) <= 2
        seen += [t["name"] for t in page["tasks"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert sorted(seen) == sorted(names)
    for params in (
        {"pageSize": "1001"},
        {"pageSize": "x"},
        {"pageToken": "garbage"},
        {"responseView": "HUGE"},
    ):
        assert_error(api.call("GET", f"{queue}/tasks", **params), 400, "INVALID_ARGUMENT")


def test_run_task_dispatches_from_a_paused_queue(api: Api, server: RunnerServer) -> None:
    queue = api.new_queue(retryConfig={"maxAttempts": 1})
    api.ok("POST", f"{queue}:pause")
    task = api.new_task(queue, "run-me")
    ran = api.ok("POST", f"{task['name']}:run", {"responseView": "FULL"})
    assert ran["dispatchCount"] == 1
    assert ran["view"] == "FULL"
    assert "firstAttempt" in ran
    # Port 9 refuses the connection; with maxAttempts 1 the task is exhausted: gone for the real API,
    # visible through the runner extension.
    runner = f"{server.base_url}/runner/v1/{queue}"
    history = poll(lambda: requests.get(f"{runner}/tasks/run-me:attempts", timeout=5).json().get("attempts"))
    assert len(history) == 1
    assert "responseStatus" in history[0]
    assert_error(api.call("GET", task["name"]), 404, "NOT_FOUND", errors.TASK_GONE)
    assert api.ok("GET", f"{queue}/tasks") == {}
    exhausted = poll(lambda: requests.get(f"{runner}/tasks", params={"exhausted": "true"}, timeout=5).json())
    assert [(t["name"], t["state"]) for t in exhausted["tasks"]] == [(task["name"], "EXHAUSTED")]
    assert requests.get(f"{runner}/tasks/run-me", timeout=5).json()["state"] == "EXHAUSTED"
    assert_error(
        requests.get(f"{runner}/tasks", params={"exhausted": "perhaps"}, timeout=5), 400, "INVALID_ARGUMENT"
    )


# -- BufferTask ------------------------------------------------------------------------------------


def test_buffer_task(api: Api) -> None:
    queue = api.new_queue()
    api.ok("POST", f"{queue}:pause")
    body = {"body": {"contentType": "application/json", "data": _b64(b'{"a": 1}')}}
    response = api.call("POST", f"{queue}/tasks:buffer", body)
    message = assert_error(response, 400, "FAILED_PRECONDITION")
    assert "httpTarget.uriOverride" in message

    target = {
        "uriOverride": {"scheme": "HTTP", "host": "127.0.0.1", "port": "9", "pathOverride": {"path": "/hook"}}
    }
    api.ok("PATCH", queue, {"httpTarget": target}, updateMask="httpTarget")
    generated = api.ok("POST", f"{queue}/tasks:buffer", body)["task"]
    assert generated["httpRequest"]["url"] == "http://127.0.0.1:9/hook"
    assert generated["httpRequest"]["httpMethod"] == "POST"
    named = api.ok("POST", f"{queue}/tasks/buffered-1:buffer", body)["task"]
    assert named["name"] == f"{queue}/tasks/buffered-1"
    full = api.ok("GET", named["name"], responseView="FULL")
    assert base64.b64decode(full["httpRequest"]["body"]) == b'{"a": 1}'
    assert full["httpRequest"]["headers"]["Content-Type"] == "application/json"
    assert_error(api.call("POST", f"{queue}/tasks/buffered-1:buffer", body), 409, "ALREADY_EXISTS")
    assert_error(api.call("POST", f"{queue}/tasks:buffer", {"body": {"data": "!!"}}), 400, "INVALID_ARGUMENT")
    assert_error(api.call("POST", f"{PARENT}/queues/nope/tasks:buffer", body), 404, "NOT_FOUND")


# -- malformed requests: always a 400 JSON error, never a 500 ----------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[]",
        b'"a string"',
        b"42",
        b"\xff\xfe",
        b'{"task": NaN}',
        b"[" * 100_000,
    ],
)
def test_malformed_bodies(api: Api, payload: bytes) -> None:
    queue = api.new_queue()
    response = api.call("POST", f"{queue}/tasks", payload)
    message = assert_error(response, 400, "INVALID_ARGUMENT")
    assert message.startswith("Invalid JSON payload received.")


@pytest.mark.parametrize(
    "body",
    [
        {"task": {"httpRequest": {"url": NOWHERE}}, "extra": 1},
        {"task": {"httpRequest": {"url": NOWHERE, "color": "red"}}},
        {"task": {"httpRequest": {"url": 5}}},
        {"task": {"httpRequest": {"url": NOWHERE, "headers": ["a"]}}},
        {"task": {"httpRequest": {"url": NOWHERE, "headers": {"a": 1}}}},
        {"task": {"httpRequest": {"url": NOWHERE, "body": "not base64!"}}},
        {"task": {"httpRequest": {"url": NOWHERE, "httpMethod": "FETCH"}}},
        {"task": {"httpRequest": {"url": NOWHERE}, "scheduleTime": "tomorrow"}},
        {"task": {"httpRequest": {"url": NOWHERE}, "dispatchDeadline": 30}},
        {"task": "a task"},
        {"task": {"httpRequest": {"url": NOWHERE}}, "responseView": "EVERYTHING"},
    ],
)
def test_wrong_types_and_unknown_fields_in_tasks(api: Api, body: dict[str, Any]) -> None:
    queue = api.new_queue()
    assert_error(api.call("POST", f"{queue}/tasks", body), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "fields",
    [
        {"rateLimits": "fast"},
        {"rateLimits": {"maxDispatchesPerSecond": "fast"}},
        {"retryConfig": {"maxAttempts": 1.5}},
        {"retryConfig": {"minBackoff": 1}},
        {"retryConfig": {"maxBackoff": "1m"}},
        {"state": "SLEEPING"},
        {"colour": "blue"},
        {"stackdriverLoggingConfig": {"samplingRatio": 2}},
        {"httpTarget": {"headerOverrides": {"a": "b"}}},
    ],
)
def test_wrong_types_and_unknown_fields_in_queues(api: Api, fields: dict[str, Any]) -> None:
    response = api.call("POST", f"{PARENT}/queues", {"name": f"{PARENT}/queues/typed-{next(_ids)}", **fields})
    assert_error(response, 400, "INVALID_ARGUMENT")


def test_oversize_body(api: Api) -> None:
    queue = api.new_queue()
    payload = b'{"task": {"httpRequest": {"url": "http://x/", "body": "' + b"A" * MAX_REQUEST_BYTES + b'"}}}'
    response = api.call("POST", f"{queue}/tasks", payload)
    assert_error(
        response,
        400,
        "INVALID_ARGUMENT",
        f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.",
    )


def test_task_over_one_mib(api: Api) -> None:
    queue = api.new_queue()
    response = api.call(
        "POST",
        f"{queue}/tasks",
        _task_body(queue) | {"task": {"httpRequest": {"url": NOWHERE, "body": _b64(b"x" * (1024 * 1024))}}},
    )
    assert_error(response, 400, "INVALID_ARGUMENT")


def test_unknown_query_parameter_and_system_parameters(api: Api) -> None:
    queue = api.new_queue()
    assert_error(api.call("GET", queue, colour="blue"), 400, "INVALID_ARGUMENT")
    system = {
        "$.xgafv": "2",
        "alt": "json",
        "prettyPrint": "false",
        "fields": "name",
        "key": "k",
        "quotaUser": "u",
    }
    assert api.ok("GET", queue, **system)["name"] == queue


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "nothing/here"),
        ("GET", f"{PARENT}/queues/q:explode"),
        ("PUT", f"{PARENT}/queues/q"),
        ("POST", f"{PARENT}/queues/q/tasks/t:fly"),
        ("GET", f"{PARENT}/queues/q/tasks/t/more"),
    ],
)
def test_unknown_paths_are_json_404(api: Api, method: str, path: str) -> None:
    assert_error(api.call(method, path), 404, "NOT_FOUND")


def test_bad_names_in_urls(api: Api) -> None:
    assert_error(api.call("GET", f"{PARENT}/queues/bad_queue"), 400, "INVALID_ARGUMENT")
    assert_error(api.call("GET", f"{PARENT}/queues/q/tasks/bad.task"), 400, "INVALID_ARGUMENT")
    assert_error(api.call("GET", "projects/p/locations/bad_location/queues"), 400, "INVALID_ARGUMENT")


def test_batches_and_cmek_answer_proto3_json(api: Api) -> None:
    queue = api.new_queue()
    assert_error(api.call("POST", f"{queue}/tasks:batchCreate", {}), 400, "INVALID_ARGUMENT")
    batch = {
        "requests": [{"task": {"httpRequest": {"url": NOWHERE}}}, {"task": {"httpRequest": {"url": "x"}}}]
    }
    operation = api.ok("POST", f"{queue}/tasks:batchCreate", batch, **{"$alt": "json;enum-encoding=int"})
    assert operation["done"] is True
    assert operation["name"].startswith(f"{PARENT}/operations/")
    assert (
        operation["metadata"]["@type"] == "type.googleapis.com/google.cloud.tasks.v2.BatchCreateTasksMetadata"
    )
    assert operation["metadata"]["state"] == 5  # PARTIALLY_SUCCEEDED
    assert operation["metadata"]["failedRequests"]["1"]["code"] == 3
    assert len(operation["response"]["tasks"]) == 1
    assert api.ok("GET", operation["name"]) == operation
    assert api.ok("GET", f"{PARENT}/cmekConfig") == {"name": f"{PARENT}/cmekConfig"}
    assert_error(
        api.call("PATCH", f"{PARENT}/cmekConfig", {"kmsKey": "k"}, updateMask="name"), 400, "INVALID_ARGUMENT"
    )


# -- enum encoding -----------------------------------------------------------------------------------


def test_enum_encoding_int(api: Api) -> None:
    queue = api.new_queue()
    alt = {"$alt": "json;enum-encoding=int"}
    assert api.ok("POST", f"{queue}:pause", {}, **alt)["state"] == 2
    body = {"task": {"httpRequest": {"url": NOWHERE, "httpMethod": 4, "body": _b64(b"b")}}, "responseView": 2}
    task = api.ok("POST", f"{queue}/tasks", body, **alt)
    assert task["view"] == 2
    assert task["httpRequest"]["httpMethod"] == 4
    assert task["httpRequest"]["body"] == _b64(b"b")
    named = api.ok("GET", task["name"])
    assert named["view"] == "BASIC"
    assert named["httpRequest"]["httpMethod"] == "PUT"
    queues = api.ok("GET", f"{PARENT}/queues", filter="state:PAUSED", **alt)["queues"]
    assert {q["state"] for q in queues} == {2}
    # The raw form the official client sends in the URL.
    raw = requests.get(f"{api.base}/v2/{queue}?$alt=json;enum-encoding=int", timeout=10)
    assert raw.json()["state"] == 2


# -- IAM and locations ---------------------------------------------------------------------------------


def test_iam_policies_are_stored_per_queue(api: Api) -> None:
    queue = api.new_queue()
    assert api.ok("POST", f"{queue}:getIamPolicy", {}) == {"etag": "ACAB"}
    policy = {
        "version": 1,
        "bindings": [{"role": "roles/cloudtasks.enqueuer", "members": ["user:dev@example.com"]}],
    }
    stored = api.ok("POST", f"{queue}:setIamPolicy", {"policy": policy})
    assert stored["bindings"] == policy["bindings"]
    assert stored["etag"] != "ACAB"
    got = api.ok("POST", f"{queue}:getIamPolicy", {"options": {"requestedPolicyVersion": 3}})
    assert got == stored
    other = api.new_queue()
    assert api.ok("POST", f"{other}:getIamPolicy") == {"etag": "ACAB"}

    asked = ["cloudtasks.tasks.create", "cloudtasks.queues.get"]
    assert api.ok("POST", f"{queue}:testIamPermissions", {"permissions": asked}) == {"permissions": asked}
    missing = f"{PARENT}/queues/no-such-queue"
    assert api.ok("POST", f"{missing}:testIamPermissions", {"permissions": asked}) == {}
    assert_error(api.call("POST", f"{missing}:getIamPolicy", {}), 404, "NOT_FOUND")
    assert_error(
        api.call("POST", f"{queue}:testIamPermissions", {"permissions": ["cloudtasks.*"]}),
        400,
        "INVALID_ARGUMENT",
    )
    bad = {"policy": {"bindings": [{"role": "r", "members": "everyone"}]}}
    assert_error(api.call("POST", f"{queue}:setIamPolicy", bad), 400, "INVALID_ARGUMENT")
    assert_error(
        api.call("POST", f"{queue}:setIamPolicy", {"policy": {"owner": "me"}}), 400, "INVALID_ARGUMENT"
    )
    too_big = {"policy": {"version": 2**40}}
    assert_error(api.call("POST", f"{queue}:setIamPolicy", too_big), 400, "INVALID_ARGUMENT")


def test_locations(api: Api) -> None:
    listed = api.ok("GET", "projects/test-project/locations")
    assert listed == {
        "locations": [{"name": "projects/test-project/locations/us-central1", "locationId": "us-central1"}]
    }
    got = api.ok("GET", "projects/test-project/locations/europe-west1")
    assert got == {"name": "projects/test-project/locations/europe-west1", "locationId": "europe-west1"}
