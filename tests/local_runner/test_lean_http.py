"""Plain REST calls answered without aiohttp's objects (``api/lean_http.py``), over real HTTP on 127.0.0.1.

Each call is sent twice on fresh connections: as is, and in a form only aiohttp reads (an empty query
``?``, or a percent-encoded byte in it); the two answers must be the same, status line and headers
included.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from local_runner.api import lean_http
from local_runner.config import RunnerSettings
from local_runner.model import Queue
from local_runner.server import RunnerServer

PARENT = "projects/lean/locations/us-central1"
QUEUE = f"{PARENT}/queues/q"
TASKS = f"/v2/{QUEUE}/tasks"
QUEUE_PATH = f"/v2/{QUEUE}"
_ids = itertools.count()


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        server.service.create_queue(PARENT, Queue(name=QUEUE))
        server.service.pause_queue(QUEUE)
        yield server


class Answer:
    """One HTTP response read off a socket."""

    def __init__(self, status_line: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_line = status_line
        self.headers = headers
        self.body = body

    @property
    def document(self) -> Any:
        return json.loads(self.body)

    def shape(self) -> tuple[str, list[tuple[str, str]], Any]:
        """Status line, headers and document, without what differs from one call to the next."""
        headers = [(k, "<date>" if k == "Date" else v) for k, v in self.headers]
        text = self.body.decode()
        text = re.sub(r"tasks/\d{19}", "tasks/<id>", text)
        text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", text)
        headers = [(k, "<n>" if k == "Content-Length" else v) for k, v in headers]
        return self.status_line, headers, json.loads(text) if text else None


class Client:
    """A raw HTTP/1.1 connection: send any bytes, read answers in order."""

    def __init__(self, runner: RunnerServer) -> None:
        port = int(runner.base_url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Answer:
        status_line = self.file.readline().decode().rstrip("\r\n")
        headers: list[tuple[str, str]] = []
        while (line := self.file.readline().decode().rstrip("\r\n")) != "":
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        length = int(dict(headers).get("Content-Length", "0"))
        return Answer(status_line, headers, self.file.read(length))

    def at_end(self) -> bool:
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def request(method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
    """A request to ``Host: 127.0.0.1``, JSON if it has a body; ``headers`` replace those (``""``: drop)."""
    fields = {"Host": "127.0.0.1"}
    if body is not None:
        fields |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
    fields |= {name.replace("_", "-"): value for name, value in headers.items()}
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def create_body(name: str | None = None, payload: bytes = b'{"n": 1}') -> bytes:
    http = {"url": "http://127.0.0.1:9/work", "body": base64.b64encode(payload).decode()}
    task: dict[str, Any] = {"httpRequest": http}
    if name is not None:
        task["name"] = f"{QUEUE}/tasks/{name}"
    return json.dumps({"task": task}).encode()


def one(runner: RunnerServer, data: bytes) -> Answer:
    client = Client(runner)
    try:
        client.send(data)
        return client.read()
    finally:
        client.close()


def test_create_task_is_answered_without_aiohttp(runner: RunnerServer) -> None:
    aiohttp_server = runner._runner.server  # type: ignore[union-attr]
    assert aiohttp_server is not None
    client = Client(runner)
    try:
        for path in (TASKS, TASKS + "?$alt=json;enum-encoding=int", QUEUE_PATH):
            client.send(request("POST", path, create_body()) if path != QUEUE_PATH else request("GET", path))
            assert client.read().status_line == "HTTP/1.1 200 OK"
        assert len(runner._lean.connections) == 1  # type: ignore[union-attr]
        assert not aiohttp_server.connections
    finally:
        client.close()


JSON = {"Content_Type": "application/json"}
#: ``(id, method, path, body, headers)``: each answered here and by aiohttp alike.
CASES: list[tuple[str, str, str, bytes | None, dict[str, str]]] = [
    ("create", "POST", TASKS, create_body(), {}),
    ("full-view", "POST", TASKS, b'{"task": {"httpRequest": {"url": "http://h/"}}, "responseView": 2}', {}),
    ("bad-json", "POST", TASKS, b'{"task": ', {}),
    ("not-an-object", "POST", TASKS, b"[1]", {}),
    ("unknown-field", "POST", TASKS, b'{"task": {"httpRequest": {"url": "http://h/"}, "nope": 1}}', {}),
    ("no-payload", "POST", TASKS, b'{"task": {}}', {}),
    ("empty-body", "POST", TASKS, b"", {}),
    ("foreign-host", "POST", TASKS, create_body(), {"Host": "evil.example"}),
    ("cross-site-origin", "POST", TASKS, create_body(), {"Origin": "https://evil.example"}),
    ("cross-site-fetch", "POST", TASKS, create_body(), {"Sec_Fetch_Site": "cross-site"}),
    ("form-type", "POST", TASKS, create_body(), {"Content_Type": "text/plain"}),
    ("no-type", "POST", TASKS, create_body(), {"Content_Type": ""}),
    ("list", "GET", TASKS, None, {}),
    ("get-queue", "GET", QUEUE_PATH, None, {}),
    ("not-found", "GET", QUEUE_PATH + "/nothing/here", None, {}),
    ("delete-missing", "DELETE", TASKS + "/missing", None, {}),
    ("patch-queue", "PATCH", QUEUE_PATH, b'{"name": "' + QUEUE.encode() + b'"}', {}),
    ("pause-no-body", "POST", QUEUE_PATH + ":pause", None, {"Content_Type": ""}),
    ("keep-alive", "POST", TASKS, create_body(), {"Connection": "keep-alive", **JSON}),
    ("int-enums", "POST", TASKS + "?$alt=json;enum-encoding=int", create_body(), {}),
    ("list-query", "GET", TASKS + "?pageSize=1&responseView=FULL&alt=json", None, {}),
    ("unknown-query", "GET", TASKS + "?nope=1", None, {}),
    ("bad-page-size", "GET", TASKS + "?pageSize=x", None, {}),
    ("system-query", "DELETE", TASKS + "/missing?prettyPrint=false&$.xgafv=2", None, {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_answers_are_aiohttps(
    runner: RunnerServer, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    lean = one(runner, request(method, path, body, **headers))
    aiohttp = one(runner, request(method, aiohttps(path), body, **headers))
    assert lean.shape() == aiohttp.shape()


def aiohttps(path: str) -> str:
    """The same call in a form only aiohttp reads: an empty query, or one with a percent-encoded byte."""
    path, mark, query = path.partition("?")
    return f"{path}?%{ord(query[0]):02X}{query[1:]}" if mark else path + "?"


@pytest.mark.parametrize("line_end", [b"\n", b"\r"])
def test_lines_ending_otherwise_than_in_crlf_are_aiohttps(runner: RunnerServer, line_end: bytes) -> None:
    """aiohttp refuses them (its message quotes the request line, so only the status is compared)."""
    lean = one(runner, request("GET", TASKS).replace(b"\r\n", line_end))
    aiohttp = one(runner, request("GET", aiohttps(TASKS)).replace(b"\r\n", line_end))
    assert lean.status_line == aiohttp.status_line == "HTTP/1.0 400 Bad Request"


def test_duplicate_name_is_already_exists_both_ways(runner: RunnerServer) -> None:
    name = f"dup-{next(_ids)}"
    assert one(runner, request("POST", TASKS, create_body(name))).status_line == "HTTP/1.1 200 OK"
    lean = one(runner, request("POST", TASKS, create_body(name)))
    aiohttp = one(runner, request("POST", aiohttps(TASKS), create_body(name)))
    assert lean.status_line == "HTTP/1.1 409 Conflict"
    assert lean.shape() == aiohttp.shape()


def test_pipelined_calls_are_answered_in_order_then_aiohttp_takes_over(runner: RunnerServer) -> None:
    """Two CreateTasks and a GET /healthz in one write, then a chunked CreateTask: four answers, in order."""
    names = [f"pipe-{next(_ids)}" for _ in range(2)]
    client = Client(runner)
    try:
        client.send(
            request("POST", TASKS, create_body(names[0]))
            + request("POST", TASKS, create_body(names[1]))
            + request("GET", "/healthz")
        )
        first, second, health = client.read(), client.read(), client.read()
        body = create_body(f"chunked-{next(_ids)}")
        client.send(
            f"POST {TASKS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        chunked = client.read()
    finally:
        client.close()
    assert [first.document["name"], second.document["name"]] == [f"{QUEUE}/tasks/{n}" for n in names]
    assert health.document == {"status": "ok"}
    assert chunked.status_line == "HTTP/1.1 200 OK", chunked.body


def test_call_split_over_many_writes(runner: RunnerServer) -> None:
    data = request("POST", TASKS, create_body(f"split-{next(_ids)}"))
    client = Client(runner)
    try:
        for i in range(0, len(data), 7):
            client.send(data[i : i + 7])
        answer = client.read()
        client.send(request("POST", TASKS, create_body()))  # the connection stays open
        again = client.read()
    finally:
        client.close()
    assert (answer.status_line, again.status_line) == ("HTTP/1.1 200 OK", "HTTP/1.1 200 OK")


def test_expect_continue_and_large_bodies_go_to_aiohttp(runner: RunnerServer) -> None:
    big = create_body(payload=b"x" * (lean_http.LEAN_MAX_BODY + 1))
    assert one(runner, request("POST", TASKS, big)).status_line == "HTTP/1.1 200 OK"
    client = Client(runner)
    try:
        body = create_body()
        client.send(
            request("POST", TASKS, body)
            .removesuffix(body)
            .replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
        )
        assert client.read().status_line == "HTTP/1.1 100 Continue"
        client.send(body)
        assert client.read().status_line == "HTTP/1.1 200 OK"
    finally:
        client.close()
    too_large = one(runner, request("POST", TASKS, b" " * (2 * 1024 * 1024 + 1)))
    assert too_large.document["error"]["message"] == "Request payload size exceeds the limit: 2097152 bytes."


def test_connection_close_is_aiohttps(runner: RunnerServer) -> None:
    client = Client(runner)
    try:
        client.send(request("POST", TASKS, create_body(), Connection="close"))
        answer = client.read()
        assert client.at_end()
    finally:
        client.close()
    assert ("Connection", "close") in answer.headers


def test_stopping_closes_idle_connections() -> None:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        server.service.create_queue(PARENT, Queue(name=QUEUE))
        client = Client(server)
        client.send(request("POST", TASKS, create_body()))
        assert client.read().status_line == "HTTP/1.1 200 OK"
    try:
        assert client.at_end()
    finally:
        client.close()


def test_calls_sent_far_ahead_of_their_answers(runner: RunnerServer) -> None:
    """1,500 CreateTasks written at once while the answers are read on: all answered, in order."""
    names = [f"ahead-{next(_ids)}" for _ in range(1500)]
    client = Client(runner)
    sender = threading.Thread(
        target=client.send, args=(b"".join(request("POST", TASKS, create_body(n)) for n in names),)
    )
    sender.start()
    try:
        answered = [client.read().document["name"] for _ in names]
    finally:
        sender.join()
        client.close()
    assert answered == [f"{QUEUE}/tasks/{n}" for n in names]


def test_a_client_that_does_not_read_its_answers_stops_the_calls_it_sent_ahead() -> None:
    """Answers do not pile up in the runner: no call starts while the client's socket is full.

    Another connection's round trips serve as the clock: after each, the silent connection's unsent
    answers must stay near the transport's high-water mark (64 KiB), never the 300 answers sent ahead.
    """
    parent = "projects/lean-backpressure/locations/us-central1"
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        for index in range(60):
            server.service.create_queue(parent, Queue(name=f"{parent}/queues/q{index:02}"))
        listing = request("GET", f"/v2/{parent}/queues?pageSize=1000")
        answer_size = len(one(server, listing).body)
        silent = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        other = Client(server)
        try:
            silent.sendall(listing * 300)
            assert server._lean is not None
            lean = server._lean
            most = 0
            for _ in range(200):
                other.send(request("GET", QUEUE_PATH.replace(QUEUE, f"{parent}/queues/q00")))
                assert other.read().status_line == "HTTP/1.1 200 OK"
                unsent = [c._transport.get_write_buffer_size() for c in lean.connections if c._transport]
                most = max([most, *unsent])
            assert answer_size > 10_000
            assert most < 64 * 1024 + 2 * answer_size, most
        finally:
            other.close()
            silent.close()
