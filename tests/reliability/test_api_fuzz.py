"""Property-based fuzzing of every REST method of the runner (hypothesis), over real HTTP.

Each request is built from a valid one of its method with one part broken (a path segment, a query
parameter, a body field given another value or type, an unknown field, or the whole body replaced), or is
raw noise, or is what a web page could send (foreign ``Host``, cross-site ``Origin``/``Sec-Fetch-Site``, a
form's content type), or carries a header no HTTP request can carry (CR, LF, NUL, spaces in names).
Properties: never a 500 or a non-JSON answer; errors in Google's shape with the canonical code's HTTP
status; a body field of the wrong type is named in the message; a refused request changes nothing in the
database (every table compared) or in the IAM policies; the server keeps answering.

The API is served without a dispatcher, so that nothing changes the state between two snapshots.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability.figures import Figures, Row
from reliability.sink import AppThread

from local_runner.api import browser_guard, views
from local_runner.api.lean_http import LeanHttp
from local_runner.clock import SystemClock
from local_runner.codec.scalars import format_timestamp, parse_duration, snake
from local_runner.errors import Code, InvalidArgument
from local_runner.service import TasksService
from local_runner.store import SQLiteTaskStore

PARENT = "projects/fuzz/locations/us-central1"
QUEUE = f"{PARENT}/queues/home"
TASK = f"{QUEUE}/tasks/t1"
CANONICAL = {(code.http_status, code.name) for code in Code}
DESIGNED_5XX = {"UNIMPLEMENTED", "DEADLINE_EXCEEDED"}  # 501 for unsupported methods, 504 from waitIdle


class ApiUnderTest:
    """The REST API on a SQLite store in a thread, with counters for the figures."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.store = SQLiteTaskStore(db)
        self.service = TasksService(self.store, SystemClock())
        hosts = browser_guard.HostCheck("127.0.0.1")
        app = web.Application(
            client_max_size=views.MAX_REQUEST_BYTES, middlewares=[browser_guard.middleware(hosts)]
        )
        router = views.register(app, self.service)
        self.thread = AppThread()
        self.url = self.thread.start(
            app, lambda aiohttp: LeanHttp(aiohttp, router, hosts)
        )  # as the runner serves
        self.http = requests.Session()
        self.tried = 0
        self.refused = 0
        #: Refusals of the browser-style and unsendable-header cases (their own row in the figures).
        self.browser_refused = 0
        self.header_refused = 0

    def seed(self) -> None:
        """Make sure the home queue and its task exist (a fuzzed reset or delete may have removed them)."""
        if self.http.get(f"{self.url}/v2/{QUEUE}", timeout=10).status_code == 404:
            answer = self.http.post(f"{self.url}/v2/{PARENT}/queues", json={"name": QUEUE}, timeout=10)
            assert answer.status_code in (200, 400), answer.text  # 400: name still tombstoned
        if self.http.get(f"{self.url}/v2/{TASK}", timeout=10).status_code == 404:
            task = {"name": TASK, "httpRequest": {"url": "http://127.0.0.1:9/x"}}
            self.http.post(f"{self.url}/v2/{QUEUE}/tasks", json={"task": task}, timeout=10)

    def snapshot(self) -> tuple[Any, ...]:
        """Every row of every table (the IAM policies among them)."""
        with sqlite3.connect(self.db) as conn:
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return tuple(tuple(sorted(map(repr, conn.execute(f"SELECT * FROM {t}")))) for t in sorted(tables))

    def close(self) -> None:
        self.thread.close()
        self.store.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiUnderTest]:
    under_test = ApiUnderTest(tmp_path_factory.mktemp("fuzz") / "runner.sqlite3")
    yield under_test
    under_test.close()


# -- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
segments = st.sampled_from(["home", "t1", "missing", "fuzz", "us-central1", ""]) | st.text(max_size=16)


def later() -> str:
    return format_timestamp(time.time() + 60)


def queue_doc(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "rateLimits": {"maxDispatchesPerSecond": 5, "maxConcurrentDispatches": 3},
        "retryConfig": {
            "maxAttempts": 3,
            "minBackoff": "1s",
            "maxBackoff": "10s",
            "maxDoublings": 2,
            "maxRetryDuration": "60s",
        },
        "httpTarget": {
            "uriOverride": {"host": "example.com", "scheme": "HTTPS", "port": "8443"},
            "httpMethod": "PUT",
            "headerOverrides": [{"header": {"key": "X-A", "value": "b"}}],
        },
        "state": "RUNNING",
    }


def task_doc() -> dict[str, Any]:
    return {
        "task": {
            "name": f"{QUEUE}/tasks/new-1",
            "scheduleTime": later(),
            "dispatchDeadline": "30s",
            "httpRequest": {
                "url": "http://127.0.0.1:9/x",
                "httpMethod": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": "e30=",
                "oidcToken": {"serviceAccountEmail": "a@p.iam.gserviceaccount.com", "audience": "x"},
            },
        },
        "responseView": "FULL",
    }


@dataclass(frozen=True)
class Method:
    """One REST method: verb, path template (``{q}`` queue id, ``{t}`` task id), query names, body."""

    verb: str
    path: str
    query: tuple[str, ...] = ()
    body: Any = None


METHODS = [
    Method("GET", "v2/projects/fuzz/locations", ("filter", "pageSize", "pageToken")),
    Method("GET", "v2/projects/fuzz/locations/{l}"),
    Method("GET", "v2/projects/fuzz/locations/{l}/queues", ("filter", "pageSize", "pageToken")),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues", body=lambda: queue_doc(f"{PARENT}/queues/new")),
    Method("GET", "v2/projects/fuzz/locations/{l}/queues/{q}"),
    Method("PATCH", "v2/projects/fuzz/locations/{l}/queues/{q}", ("updateMask",), lambda: queue_doc(QUEUE)),
    Method("DELETE", "v2/projects/fuzz/locations/{l}/queues/{q}"),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}:purge", body=dict),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}:pause", body=dict),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}:resume", body=dict),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}:getIamPolicy", body=lambda: {"options": {}}),
    Method(
        "POST",
        "v2/projects/fuzz/locations/{l}/queues/{q}:setIamPolicy",
        body=lambda: {
            "policy": {"version": 1, "bindings": [{"role": "roles/viewer", "members": ["user:a@b.c"]}]},
            "updateMask": "bindings",
        },
    ),
    Method(
        "POST",
        "v2/projects/fuzz/locations/{l}/queues/{q}:testIamPermissions",
        body=lambda: {"permissions": ["cloudtasks.queues.get"]},
    ),
    Method(
        "GET", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks", ("responseView", "pageSize", "pageToken")
    ),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks", body=task_doc),
    Method(
        "POST",
        "v2/projects/fuzz/locations/{l}/queues/{q}/tasks:buffer",
        body=lambda: {"body": {"contentType": "text/plain", "data": "aGk="}},
    ),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}:buffer", body=lambda: {"body": {}}),
    Method("GET", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}", ("responseView",)),
    Method("DELETE", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}"),
    Method(
        "POST", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}:run", body=lambda: {"responseView": 1}
    ),
    Method("POST", "v2/projects/fuzz/locations/{l}/queues/{q}/tasks:batchCreate", body=dict),
    Method("GET", "v2/projects/fuzz/locations/{l}/cmekConfig"),
    Method("GET", "runner/v1/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}:attempts"),
    Method("GET", "runner/v1/projects/fuzz/locations/{l}/queues/{q}/tasks", ("exhausted", "pageSize")),
    Method("GET", "runner/v1/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}", ("responseView",)),
    Method("POST", "runner/v1/projects/fuzz/locations/{l}/queues/{q}/tasks/{t}:replay", body=dict),
    Method("POST", "runner/v1/waitIdle", body=lambda: {"timeout": "0.01s", "queue": QUEUE, "within": "1s"}),
    Method("POST", "runner/v1/reset", body=dict),
]
QUERY_VALUES = (
    st.sampled_from(["", "0", "5", "-1", "9801", "FULL", "BASIC", "7", "state:PAUSED", "true"])
    | (st.sampled_from(["rateLimits", "retryConfig.maxAttempts", "httpTarget", "name", "state", "bogus"]))
    | st.text(max_size=12)
)


def leaves(doc: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Paths of every value in a JSON document (containers included)."""
    found: list[tuple[str | int, ...]] = [path] if path else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += leaves(value, (*path, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += leaves(value, (*path, index))
    return found


def put(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


@st.composite
def broken_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], Any, tuple[str | int, ...] | None]:
    """A valid request of a method with one part broken; returns the broken body path if any."""
    method = draw(st.sampled_from(METHODS))
    fill = {"l": "us-central1", "q": "home", "t": "t1"}
    query: dict[str, str] = {}
    body = method.body() if method.body is not None else None
    broken: tuple[str | int, ...] | None = None
    part = draw(st.sampled_from(["path", "query", "field", "unknown", "body"]))
    if part == "path":
        fill[draw(st.sampled_from(sorted(fill)))] = quote(draw(segments), safe="/:")
    elif part == "query" or (part in ("field", "unknown") and body is None):
        names = [*method.query, "bogus", "page_size", "$alt", "fields"]
        query[draw(st.sampled_from(names))] = draw(QUERY_VALUES)
    elif part == "field" and leaves(body):
        broken = draw(st.sampled_from(leaves(body)))
        scalar = not isinstance(_get(body, broken), dict | list)
        put(body, broken, draw(json_values))
        broken = broken if scalar else None  # only a scalar's place has one clear type to name
    elif part == "unknown":
        targets = [(), *(p for p in leaves(body) if isinstance(_get(body, p), dict))]
        target = draw(st.sampled_from(targets))
        _get(body, target)[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    else:
        body = draw(json_values | st.binary(max_size=64))
    path = method.path.format(**fill)
    return method.verb, path, query, short_wait(path, body), broken


def short_wait(path: str, body: Any) -> Any:
    """A waitIdle body that would wait (the API has no dispatcher: never idle) gets a short timeout.

    An empty body, or raw bytes that read as a JSON object, would wait the default 30 s, as long as the
    client's own timeout: those are sent as the object with a short timeout too.
    """
    if path != "runner/v1/waitIdle":
        return body
    if body is None or body == b"":
        return {"timeout": "0.01s"}
    if isinstance(body, bytes):
        try:
            decoded = json.loads(body)
        except ValueError:
            return body
        return short_wait(path, decoded) if isinstance(decoded, dict) else body
    if isinstance(body, dict):
        try:
            long_wait = parse_duration(body.get("timeout"), "timeout") > 0.05
        except InvalidArgument:
            long_wait = body.get("timeout") is None
        if long_wait:
            body["timeout"] = "0.01s"
    return body


def _get(doc: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def send(api: ApiUnderTest, verb: str, path: str, query: dict[str, str], body: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else None
    json_body = None if isinstance(body, bytes) or body is None else body
    return api.http.request(verb, f"{api.url}/{path}", params=query, data=data, json=json_body, timeout=30)


def check_answer(api: ApiUnderTest, answer: requests.Response, before: tuple[Any, ...]) -> dict[str, Any]:
    api.tried += 1
    assert answer.status_code != 500, answer.text
    document = answer.json()  # always JSON
    if answer.status_code < 400:
        return {}
    api.refused += 1
    error = document["error"]
    assert set(error) == {"code", "message", "status"} and error["message"], document
    assert error["code"] == answer.status_code and (error["code"], error["status"]) in CANONICAL, document
    assert answer.status_code < 500 or error["status"] in DESIGNED_5XX, document
    assert api.snapshot() == before, f"a refused request changed the state: {document}"
    return dict(error)


SETTINGS = settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@SETTINGS
@given(request=broken_requests())
def test_every_method_refuses_broken_requests_cleanly(
    api: ApiUnderTest, request: tuple[str, str, dict[str, str], Any, tuple[str | int, ...] | None]
) -> None:
    verb, path, query, body, broken = request
    api.seed()
    before = api.snapshot()
    error = check_answer(api, send(api, verb, path, query, body), before)
    if broken is not None and error.get("status") == "INVALID_ARGUMENT":
        value = _get(body, broken[:-1])[broken[-1]] if broken else None
        if isinstance(value, dict | list) and not isinstance(broken[-1], int):
            # A container where a scalar belongs: the message names the field (or a field inside it).
            names = {snake(str(step)) for step in broken if isinstance(step, str)}
            names |= {str(step) for step in broken if isinstance(step, str)}
            assert any(name in error["message"] for name in names) or "Unknown name" in error["message"]


@settings(max_examples=300, deadline=None, database=None)
@given(
    verb=st.sampled_from(["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"]),
    prefix=st.sampled_from(["v2/", "runner/v1/", "v2/projects/fuzz/locations/us-central1/", ""]),
    tail=st.text(max_size=40).filter(lambda t: "waitIdle" not in t),
    body=st.binary(max_size=256),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-protobuf"]),
)
def test_noise_on_any_path_is_answered_without_a_crash(
    api: ApiUnderTest, verb: str, prefix: str, tail: str, body: bytes, content_type: str
) -> None:
    before = api.snapshot()
    answer = api.http.request(
        verb,
        f"{api.url}/{prefix}{quote(tail, safe='/:?=&')}",
        data=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )
    sent = answer.request.path_url or ""
    if not sent.startswith(("/v2/", "/runner/v1/")):
        return  # outside the API, aiohttp's own 404/405 pages answer
    check_answer(api, answer, before)


WRITES = [method for method in METHODS if method.verb != "GET" and "waitIdle" not in method.path]
FOREIGN_HOSTS = st.sampled_from(
    [
        "evil.example",
        "127.0.0.1.nip.io",
        "localhost.evil.example",
        "10.0.0.1",
        "[::2]",
        "0.0.0.0",
        "localhost@evil",
    ]
)
CROSS_SITE = st.sampled_from(
    [
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost:1"},
        {"Origin": "http://127.0.0.1"},
        {"Origin": "evil"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "{own}"},
    ]
)
FORM_TYPES = st.sampled_from(
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ]
)


@st.composite
def browser_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """A valid call, sent as a web page could: foreign Host, cross-site, or a form's content type."""
    method = draw(st.sampled_from(METHODS if draw(st.booleans()) else WRITES))
    path = method.path.format(l="us-central1", q="home", t="t1")
    body = json.dumps(method.body()).encode() if method.body is not None and draw(st.booleans()) else b""
    headers = {"Content-Type": "application/json"}
    trait = draw(st.sampled_from(["host", "cross-site", "form"] if method.verb != "GET" else ["host"]))
    if trait == "host":
        port = draw(st.sampled_from(["", ":8123", ":1"]))
        headers["Host"] = draw(FOREIGN_HOSTS) + port
    elif trait == "cross-site":
        headers.update(draw(CROSS_SITE))
    else:
        headers["Content-Type"] = draw(FORM_TYPES)
    return method.verb, path, headers, body


@settings(max_examples=300, deadline=None, database=None)
@given(request=browser_requests())
def test_what_a_web_page_could_send_is_refused_and_changes_nothing(
    api: ApiUnderTest, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    verb, path, headers, body = request
    api.seed()
    before = api.snapshot()
    headers = {key: value.replace("{own}", api.url) for key, value in headers.items()}
    answer = api.http.request(verb, f"{api.url}/{path}", headers=headers, data=body, timeout=30)
    error = check_answer(api, answer, before)
    assert (answer.status_code, error.get("status")) in (
        (403, "PERMISSION_DENIED"),
        (400, "INVALID_ARGUMENT"),
    )
    api.browser_refused += 1


UNSENDABLE = st.sampled_from(["\r", "\n", "\r\n", "\x00"])


@st.composite
def unsendable_headers(draw: st.DrawFn) -> tuple[str, str]:
    """A header whose name is not an HTTP token or whose value holds CR, LF or NUL."""
    name = draw(st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=8))
    value = draw(st.text(max_size=12))
    place = draw(st.sampled_from(["name", "value", "space"]))
    if place == "space":
        return f"{name} {name}", value
    index = draw(st.integers(0, len(name if place == "name" else value)))
    if place == "name":
        return name[:index] + draw(UNSENDABLE) + name[index:], value
    return name, value[:index] + draw(UNSENDABLE) + value[index:]


@settings(max_examples=200, deadline=None, database=None)
@given(header=unsendable_headers(), where=st.sampled_from(["task", "create-queue", "update-queue"]))
def test_headers_no_request_can_carry_are_refused_at_creation(
    api: ApiUnderTest, header: tuple[str, str], where: str
) -> None:
    api.seed()
    before = api.snapshot()
    key, value = header
    overrides = {"httpTarget": {"headerOverrides": [{"header": {"key": key, "value": value}}]}}
    if where == "task":
        body = task_doc()
        body["task"]["httpRequest"]["headers"] = {key: value}
        answer = send(api, "POST", f"v2/{QUEUE}/tasks", {}, body)
    elif where == "create-queue":
        answer = send(
            api, "POST", f"v2/{PARENT}/queues", {}, {"name": f"{PARENT}/queues/headers", **overrides}
        )
    else:
        answer = send(api, "PATCH", f"v2/{QUEUE}", {"updateMask": "httpTarget"}, overrides)
    error = check_answer(api, answer, before)
    assert error.get("status") == "INVALID_ARGUMENT", answer.text
    assert error["message"].startswith(("HttpRequest.headers: ", "HttpTarget.headerOverrides: "))
    api.header_refused += 1


def test_zz_report_fuzzing_figures(api: ApiUnderTest, figures: Figures) -> None:
    assert api.tried > 0
    assert api.http.get(f"{api.url}/v2/{PARENT}/queues", timeout=10).status_code == 200  # still serving
    figures.record(
        Row(
            "REST API fuzzing (hypothesis), every method",
            f"{api.tried:,} requests, {api.refused:,} refused",
            "one part broken per request (path, query, field value or type, unknown field, body), raw noise",
            bad_inputs=api.refused,
            server_errors=0,  # check_answer fails the run on any 500
        )
    )
    figures.record(
        Row(
            "REST API: requests a web page could send, headers no request can carry",
            f"{api.browser_refused + api.header_refused:,} requests, all refused, nothing stored",
            "foreign Host, cross-site Origin/Sec-Fetch-Site, form content types; CR/LF/NUL/space in headers",
            bad_inputs=api.browser_refused + api.header_refused,
            server_errors=0,
        )
    )
