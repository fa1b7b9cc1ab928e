"""TasksClient's connections to a runner over http://: keep-alive reuse, dropped connections, safe resends.

The server is a real HTTP/1.1 keep-alive server on 127.0.0.1 that counts the connections it accepts and the
requests it reads, and can drop idle connections or drop a connection after reading a request.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tasktoolkit.client import RetryPolicy, TasksClient
from tasktoolkit.errors import ServiceUnavailable

TASKS = "/v2/projects/p/locations/l/queues/q/tasks"


class CountingServer(socketserver.ThreadingTCPServer):
    """Answers every request with a CreateTask-like JSON body; records connections and request bodies."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Connection)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []
        self.authorizations: list[str | None] = []
        self.open: set[socket.socket] = set()
        #: Read the next request, then close the connection without answering.
        self.drop_next = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close_idle(self) -> None:
        """Closes every connection from the server side (all are idle between the test's calls)."""
        with self.lock:
            for sock in self.open:
                sock.shutdown(socket.SHUT_RDWR)


class _Connection(socketserver.StreamRequestHandler):
    server: CountingServer

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
            self.server.open.add(self.connection)
        try:
            while self._one_request():
                pass
        finally:
            with self.server.lock:
                self.server.open.discard(self.connection)

    def _one_request(self) -> bool:
        line = self.rfile.readline()
        if not line:
            return False
        headers = {}
        while (header := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode().partition(":")
            headers[name.lower()] = value.strip()
        body = self.rfile.read(int(headers.get("content-length", 0)))
        with self.server.lock:
            self.server.requests.append((line.decode().split()[1], body))
            self.server.authorizations.append(headers.get("authorization"))
            drop, self.server.drop_next = self.server.drop_next, False
        if drop:
            return False
        answer = json.dumps(
            {"name": "projects/p/locations/l/queues/q/tasks/1", "scheduleTime": "2026-11-21T10:00:00Z"}
        ).encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(answer)}\r\n\r\n".encode()
            + answer
        )
        return True


@pytest.fixture
def server() -> Iterator[CountingServer]:
    server = CountingServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def client(server: CountingServer, waits: list[float]) -> Iterator[TasksClient]:
    with TasksClient(
        "p", "l", endpoint=server.url, retry=RetryPolicy(attempts=3), sleep=waits.append
    ) as tasks:
        yield tasks


def test_calls_share_one_kept_alive_connection(server: CountingServer, client: TasksClient) -> None:
    for i in range(20):
        client.enqueue("q", url="https://w.example/x", json={"n": i})
    assert server.connections == 1 and len(server.requests) == 20


def test_enqueue_many_opens_at_most_one_connection_per_worker_and_keeps_them(
    server: CountingServer, client: TasksClient
) -> None:
    for _ in range(2):
        results = client.enqueue_many("q", [{"url": "https://w.example/x"}] * 40, max_workers=4)
        assert all(result.ok for result in results)
    assert len(server.requests) == 80
    assert 1 <= server.connections <= 4  # the second batch reuses the first one's connections


def test_a_connection_the_server_closed_while_idle_is_replaced_without_resending(
    server: CountingServer, client: TasksClient, waits: list[float]
) -> None:
    client.enqueue("q", url="https://w.example/x", json={"n": 1})
    server.close_idle()
    created = client.enqueue("q", url="https://w.example/x", json={"n": 2})  # unnamed: must not be sent twice
    assert created is not None
    assert server.connections == 2
    assert [json.loads(body)["task"]["httpRequest"]["body"] for _, body in server.requests] == [
        "eyJuIjoxfQ==",  # {"n":1}
        "eyJuIjoyfQ==",  # {"n":2}
    ]
    assert waits == []


def test_an_unnamed_create_is_not_resent_after_a_reset(
    server: CountingServer, client: TasksClient, waits: list[float]
) -> None:
    client.get_queue("q")  # opens the connection
    server.drop_next = True
    with pytest.raises(ServiceUnavailable, match="failed"):
        client.enqueue("q", url="https://w.example/x")  # the server may have created it: never resent
    assert [path for path, _ in server.requests].count(TASKS) == 1
    assert waits == []


def test_a_named_create_is_resent_at_once_on_a_new_connection_after_a_reset(
    server: CountingServer, client: TasksClient, waits: list[float]
) -> None:
    client.get_queue("q")
    server.drop_next = True
    assert client.enqueue("q", url="https://w.example/x", name="t1") is not None
    assert [path for path, _ in server.requests].count(TASKS) == 2
    assert server.connections == 2 and waits == []  # reopened without a backoff wait


def test_proxy_variables_never_route_a_loopback_runner_and_are_read_once(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = "http://127.0.0.1:9"
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    with TasksClient("p", "l", endpoint=server.url, retry=RetryPolicy(attempts=1)) as tasks:
        assert tasks.enqueue("q", url="https://w.example/x") is not None
        monkeypatch.setenv("http_proxy", dead_proxy)
        assert tasks.enqueue("q", url="https://w.example/x") is not None
    assert server.connections == 1


def test_a_proxy_applies_to_a_runner_on_another_host(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", server.url)  # the counting server plays the proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with TasksClient("p", "l", endpoint="http://runner.invalid:8123", retry=RetryPolicy(attempts=1)) as tasks:
        assert tasks.enqueue("q", url="https://w.example/x") is not None
    assert server.requests[0][0] == f"http://runner.invalid:8123{TASKS}"  # absolute URI: proxied


def test_google_credentials_go_through_the_proxy_read_at_construction(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.oauth2.credentials import Credentials

    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with TasksClient(
        "p",
        "l",
        endpoint="http://tasks.invalid",
        credentials=Credentials(token="ya29.t"),
        retry=RetryPolicy(attempts=1),
    ) as tasks:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # read once: later changes do not apply
        assert tasks.enqueue("q", url="https://w.example/x") is not None
    assert server.requests[0][0] == f"http://tasks.invalid{TASKS}"
    assert server.authorizations == ["Bearer ya29.t"]
