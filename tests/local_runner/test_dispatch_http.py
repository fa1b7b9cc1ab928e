"""The runner dispatching over real HTTP on 127.0.0.1, driven by a virtual clock."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from google.auth.transport import requests as google_requests
from google.oauth2 import id_token
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local_runner.clock import VirtualClock
from local_runner.config import RunnerSettings
from local_runner.model import HttpRequest, NewTask, OidcToken, Queue, RateLimits, RetryConfig, TaskState
from local_runner.server import RunnerServer

PARENT = "projects/test-proj/locations/us-central1"
QUEUE = f"{PARENT}/queues/emails"


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded, real time) for the runner's event loop to reach a state."""
    done = threading.Event()
    deadline = 0.0
    while not check():
        if deadline > timeout:
            raise AssertionError("condition not reached in time")
        done.wait(0.005)
        deadline += 0.005


class Recorder:
    """A handler that answers a scripted sequence of responses and records each request."""

    def __init__(self, statuses: list[int | Callable[[], Response]]) -> None:
        self.statuses = statuses
        self.requests: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            index = len(self.requests)
            self.requests.append(dict(request.headers))
            self.bodies.append(request.get_data())
        answer = self.statuses[min(index, len(self.statuses) - 1)]
        return answer() if callable(answer) else Response(status=answer)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@pytest.fixture
def clock() -> VirtualClock:
    # Starts at the real time so that minted tokens are valid for google-auth's real-time checks.
    return VirtualClock(start=float(int(time.time())))


@pytest.fixture
def runner(clock: VirtualClock) -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5), clock=clock) as server:
        yield server


@pytest.fixture
def threaded_httpserver() -> Iterator[HTTPServer]:
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def make_queue(runner: RunnerServer, **changes: object) -> Queue:
    queue = Queue(
        QUEUE, retry_config=RetryConfig(min_backoff=10, max_backoff=300, max_doublings=3), **changes
    )  # type: ignore[arg-type]
    return runner.service.create_queue(PARENT, queue)


def wait_for_attempts(runner: RunnerServer, name: str, count: int) -> None:
    """Wait until the runner has recorded ``count`` finished attempts of the task."""
    eventually(lambda: len(runner.store.attempts(name)) >= count)


def test_header_sequence_over_real_http(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([503, 404, 429, 500, 302, 200])
    httpserver.expect_request("/work").respond_with_handler(recorder)
    make_queue(runner)
    task = runner.service.create_task(
        QUEUE,
        NewTask(
            HttpRequest(
                url=httpserver.url_for("/work"),
                body=b'{"n": 1}',
                headers={"Content-Type": "application/json"},
            )
        ),
    )
    for attempt in range(1, 7):
        wait_for_attempts(runner, task.name, attempt)
        if attempt < 6:
            stored = runner.store.get_task(task.name)
            assert stored is not None and stored.state is TaskState.QUEUED
            clock.set(stored.schedule_time)
    assert runner.store.get_task(task.name) is None  # acknowledged: deleted
    expected = [
        ("0", "0", None),
        ("1", "0", "503"),
        ("2", "1", "404"),
        ("3", "2", "429"),
        ("4", "2", "500"),
        ("5", "3", "302"),
    ]
    for headers, (retry, execution, previous) in zip(recorder.requests, expected, strict=True):
        assert headers["User-Agent"] == "Google-Cloud-Tasks"
        assert headers["X-Cloudtasks-Queuename"] == "emails"
        assert headers["X-Cloudtasks-Taskname"] == task.task_id
        assert headers["X-Cloudtasks-Taskretrycount"] == retry
        assert headers["X-Cloudtasks-Taskexecutioncount"] == execution
        assert headers["Content-Type"] == "application/json"
        if previous is None:
            assert "X-Cloudtasks-Taskpreviousresponse" not in headers
        else:
            assert headers["X-Cloudtasks-Taskpreviousresponse"] == previous
            assert headers["X-Cloudtasks-Taskretryreason"] == ""
    assert recorder.bodies == [b'{"n": 1}'] * 6
    statuses = [a.http_status for a in runner.store.attempts(task.name)]
    assert statuses == [503, 404, 429, 500, 302, 200]


def test_backoff_schedule_over_real_http(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([500] * 8 + [200])
    httpserver.expect_request("/work").respond_with_handler(recorder)
    make_queue(runner)
    task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/work"))))
    waits = []
    for attempt in range(1, 9):
        wait_for_attempts(runner, task.name, attempt)
        stored = runner.store.get_task(task.name)
        assert stored is not None
        waits.append(round(stored.schedule_time - clock.now(), 6))
        clock.set(stored.schedule_time)
    wait_for_attempts(runner, task.name, 9)
    assert waits == [10, 20, 40, 80, 160, 240, 300, 300]


def test_deadline_exceeded_gives_504_previous_response(
    runner: RunnerServer, clock: VirtualClock, threaded_httpserver: HTTPServer
) -> None:
    httpserver = threaded_httpserver
    release = threading.Event()

    def stall() -> Response:
        release.wait(10)
        return Response(status=200)

    recorder = Recorder([stall, 200])
    httpserver.expect_request("/slow").respond_with_handler(recorder)
    make_queue(runner)
    try:
        task = runner.service.create_task(
            QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/slow")), dispatch_deadline=15)
        )
        eventually(lambda: recorder.count() == 1)
        clock.advance(15)
        wait_for_attempts(runner, task.name, 1)
        first = runner.store.attempts(task.name)[0]
        assert first.http_status is None and first.response_status is not None
        assert first.response_status.code == 4
        stored = runner.store.get_task(task.name)
        assert stored is not None
        clock.set(stored.schedule_time)
        wait_for_attempts(runner, task.name, 2)
    finally:
        release.set()
    second = recorder.requests[1]
    assert second["X-Cloudtasks-Taskpreviousresponse"] == "504"
    assert second["X-Cloudtasks-Taskexecutioncount"] == "0"
    assert second["X-Cloudtasks-Taskretrycount"] == "1"


def test_refused_connection_is_a_failed_attempt(
    runner: RunnerServer, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    make_queue(runner)
    task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url="http://127.0.0.1:9/nothing-listens")))
    wait_for_attempts(runner, task.name, 1)
    attempt = runner.store.attempts(task.name)[0]
    assert attempt.http_status is None
    assert (
        attempt.response_status is not None
        and "http://127.0.0.1:9/nothing-listens" in attempt.response_status.message
    )
    stored = runner.store.get_task(task.name)
    assert stored is not None and stored.state is TaskState.QUEUED
    assert any("http://127.0.0.1:9/nothing-listens" in r.getMessage() for r in caplog.records)


def test_schedule_time_is_honoured(runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/later").respond_with_handler(recorder)
    make_queue(runner)
    task = runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/later")), schedule_time=clock.now() + 3600)
    )
    clock.advance(3599)
    wait_for_attempts(runner, task.name, 0)
    assert recorder.count() == 0
    assert runner.store.get_task(task.name) is not None
    clock.advance(1)
    wait_for_attempts(runner, task.name, 1)
    assert recorder.count() == 1


def test_paused_queue_holds_tasks_and_run_task_still_dispatches_once(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/t").respond_with_handler(recorder)
    make_queue(runner)
    runner.service.pause_queue(QUEUE)
    held = runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/t")), name=f"{QUEUE}/tasks/held")
    )
    run = runner.service.create_task(
        QUEUE,
        NewTask(
            HttpRequest(url=httpserver.url_for("/t")),
            name=f"{QUEUE}/tasks/run",
            schedule_time=clock.now() + 60,
        ),
    )
    clock.advance(120)
    ran = runner.service.run_task(run.name)
    assert ran.dispatch_count == 1
    wait_for_attempts(runner, run.name, 1)
    clock.advance(120)
    assert recorder.count() == 1
    assert recorder.requests[0]["X-Cloudtasks-Taskname"] == "run"
    assert runner.store.get_task(held.name) is not None
    runner.service.resume_queue(QUEUE)
    wait_for_attempts(runner, held.name, 1)
    assert [r["X-Cloudtasks-Taskname"] for r in recorder.requests] == ["run", "held"]


def test_max_concurrent_dispatches_is_respected(
    runner: RunnerServer, clock: VirtualClock, threaded_httpserver: HTTPServer
) -> None:
    httpserver = threaded_httpserver
    release = threading.Event()
    lock = threading.Lock()
    active = [0, 0]  # now, peak

    def slow() -> Response:
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        release.wait(10)
        with lock:
            active[0] -= 1
        return Response(status=200)

    recorder = Recorder([slow])
    httpserver.expect_request("/c").respond_with_handler(recorder)
    make_queue(runner, rate_limits=RateLimits(max_dispatches_per_second=500, max_concurrent_dispatches=3))
    names = [
        runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/c")))).name
        for _ in range(8)
    ]
    try:
        eventually(lambda: recorder.count() == 3)
        clock.advance(1)
        assert recorder.count() == 3
    finally:
        release.set()
    eventually(lambda: all(runner.store.get_task(n) is None for n in names))
    assert active[1] == 3
    assert recorder.count() == 8


def test_oidc_token_verifies_against_runner_certs(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/secure").respond_with_handler(recorder)
    make_queue(runner)
    url = httpserver.url_for("/secure")
    task = runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url=url, oidc_token=OidcToken("tasks@test-proj.iam.gserviceaccount.com")))
    )
    wait_for_attempts(runner, task.name, 1)
    token = recorder.requests[0]["Authorization"].removeprefix("Bearer ")
    claims = id_token.verify_token(
        token, google_requests.Request(), audience=url, certs_url=f"{runner.base_url}/certs"
    )
    assert claims["iss"] == runner.base_url
    assert claims["email"] == "tasks@test-proj.iam.gserviceaccount.com"
    assert claims["email_verified"] is True
    assert claims["iat"] == int(clock.now())


def test_rate_limit_and_burst_over_real_http(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/r").respond_with_handler(recorder)
    runner.service.pause_queue(make_queue(runner, rate_limits=RateLimits(max_dispatches_per_second=5)).name)
    names = [
        runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/r")))).name
        for _ in range(30)
    ]
    runner.service.resume_queue(QUEUE)
    eventually(lambda: recorder.count() == 10)  # the burst: 5/s gives a bucket of 10
    clock.advance(0.1)  # half a token
    assert recorder.count() == 10
    eventually(lambda: sum(runner.store.get_task(n) is None for n in names) == 10)
    clock.advance(0.9)  # one second since the burst: 5 tokens
    eventually(lambda: recorder.count() == 15)
    eventually(lambda: sum(runner.store.get_task(n) is None for n in names) == 15)
    clock.advance(0.19)  # 0.95 of a token: nothing may start
    assert recorder.count() == 15
    clock.advance(2.81)  # 14 tokens' worth of time, but the bucket holds only 10
    eventually(lambda: recorder.count() == 25)
    eventually(lambda: sum(runner.store.get_task(n) is None for n in names) == 25)
    assert recorder.count() == 25
    clock.advance(1.0)
    eventually(lambda: recorder.count() == 30)


def test_429_with_retry_after_delays_the_retry(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([lambda: Response(status=429, headers={"Retry-After": "120"}), 200])
    httpserver.expect_request("/busy").respond_with_handler(recorder)
    make_queue(runner)
    task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/busy"))))
    wait_for_attempts(runner, task.name, 1)
    stored = runner.store.get_task(task.name)
    assert stored is not None
    assert stored.schedule_time - clock.now() == pytest.approx(120)  # not the 10 s backoff
    clock.advance(119)
    assert recorder.count() == 1
    clock.advance(1)
    wait_for_attempts(runner, task.name, 2)
    assert recorder.requests[1]["X-Cloudtasks-Taskpreviousresponse"] == "429"


def test_purge_removes_queued_tasks(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/p").respond_with_handler(recorder)
    make_queue(runner)
    task = runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/p")), schedule_time=clock.now() + 10)
    )
    clock.advance(1)
    runner.service.purge_queue(QUEUE)
    clock.advance(20)
    assert runner.store.get_task(task.name) is None
    assert recorder.count() == 0


class RawTarget:
    """A target on a raw socket that reads requests as a strict server does and records each one.

    ``Transfer-Encoding: chunked`` takes precedence over ``Content-Length`` (RFC 9112 §6.3), so a
    request framed both ways shows up as the two requests a smuggling attack would make of it.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        stream = connection.makefile("rb")
        with connection, stream:
            while (line := stream.readline()) not in (b"", b"\r\n"):
                headers: dict[str, str] = {}
                while (header := stream.readline()) not in (b"", b"\r\n"):
                    name, _, value = header.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(stream.readline().split(b";")[0] or b"0", 16):
                        body += stream.read(size)
                        stream.readline()
                    stream.readline()
                else:
                    body = stream.read(int(headers.get("content-length", "0")))
                with self.lock:
                    self.requests.append((line.decode("latin-1").rstrip("\r\n"), headers, body))
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def raw_target() -> Iterator[RawTarget]:
    target = RawTarget()
    yield target
    target.close()


def test_task_urls_are_percent_encoded_on_the_wire(
    runner: RunnerServer, httpserver: HTTPServer, raw_target: RawTarget
) -> None:
    recorder = Recorder([200])
    httpserver.expect_request("/a b/café", query_string="c%20d=%C3%A9&x=%41&y=a+b").respond_with_handler(
        recorder
    )
    make_queue(runner)
    tail = "/a b/café?c d=é&x=%41&y=a+b#fragment"
    task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("") + tail[1:])))
    raw = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=raw_target.url + tail)))
    eventually(lambda: recorder.count() == 1 and raw_target.count() == 1)
    wait_for_attempts(runner, task.name, 1)
    assert runner.store.get_task(task.name) is None  # werkzeug decoded the path as intended and answered 200
    assert raw_target.requests[0][0] == "POST /a%20b/caf%C3%A9?c%20d=%C3%A9&x=%41&y=a+b HTTP/1.1"
    wait_for_attempts(runner, raw.name, 1)


def test_framing_headers_of_a_task_are_never_sent(runner: RunnerServer, raw_target: RawTarget) -> None:
    make_queue(runner)
    smuggled = b"0\r\n\r\nDELETE /smuggled HTTP/1.1\r\nHost: victim\r\nContent-Length: 0\r\n\r\n"
    framing = {
        "Transfer-Encoding": "chunked",
        "Content-Length": "5",
        "Connection": "keep-alive, Upgrade",
        "Keep-Alive": "timeout=5",
        "Upgrade": "h2c",
        "TE": "trailers",
        "Expect": "100-continue",
    }
    request = HttpRequest(url=raw_target.url + "/work", headers={**framing, "X-Kept": "yes"}, body=smuggled)
    task = runner.service.create_task(QUEUE, NewTask(request))
    wait_for_attempts(runner, task.name, 1)
    assert runner.store.get_task(task.name) is None  # one attempt, answered 200
    assert [line for line, _, _ in raw_target.requests] == ["POST /work HTTP/1.1"]  # nothing smuggled
    _, headers, body = raw_target.requests[0]
    assert body == smuggled and headers["content-length"] == str(len(smuggled))
    assert headers["x-kept"] == "yes"
    assert not {name.lower() for name in framing} - {"content-length"} & set(headers)


def test_headers_stored_before_they_were_refused_are_dropped_at_dispatch(
    runner: RunnerServer, raw_target: RawTarget
) -> None:
    make_queue(runner)
    headers = {"X-Split": "a\r\nX-Injected: 1", "Bad Name": "x", "X-Nul": "a\x00b", "X-Kept": "yes"}
    task = runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url=raw_target.url + "/old", headers=headers))
    )
    wait_for_attempts(runner, task.name, 1)
    assert (
        runner.store.get_task(task.name) is None
    )  # delivered at the first attempt, not retried to exhaustion
    _, received, _ = raw_target.requests[0]
    assert received["x-kept"] == "yes"
    assert not {"x-split", "x-injected", "bad name", "x-nul"} & set(received)


def test_schedule_time_is_truncated_to_the_microsecond(
    runner: RunnerServer, clock: VirtualClock, raw_target: RawTarget
) -> None:
    make_queue(runner)
    second = int(clock.now()) + 60
    text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    body = {"task": {"scheduleTime": f"{text}.999999999Z", "httpRequest": {"url": raw_target.url + "/eta"}}}
    created = requests.post(f"{runner.base_url}/v2/{QUEUE}/tasks", json=body, timeout=10).json()
    assert created["scheduleTime"] == f"{text}.999999Z"
    got = requests.get(f"{runner.base_url}/v2/{created['name']}", timeout=10).json()
    assert got["scheduleTime"] == f"{text}.999999Z"
    clock.set(second + 1)
    wait_for_attempts(runner, created["name"], 1)
    _, headers, _ = raw_target.requests[0]
    assert headers["x-cloudtasks-tasketa"] == f"{second}.999999"


def test_attempt_cut_by_a_restart_gives_504_previous_response(
    tmp_path: Path, clock: VirtualClock, threaded_httpserver: HTTPServer
) -> None:
    release = threading.Event()

    def stall() -> Response:
        release.wait(10)
        return Response(status=200)

    recorder = Recorder([503, stall, 200])
    threaded_httpserver.expect_request("/cut").respond_with_handler(recorder)
    settings = RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.1)
    try:
        with RunnerServer(settings, clock=clock) as first_run:
            make_queue(first_run)
            task = first_run.service.create_task(
                QUEUE, NewTask(HttpRequest(url=threaded_httpserver.url_for("/cut")))
            )
            wait_for_attempts(first_run, task.name, 1)  # answered 503
            stored = first_run.store.get_task(task.name)
            assert stored is not None
            clock.set(stored.schedule_time)
            eventually(lambda: recorder.count() == 2)  # the second attempt is in flight when the runner stops
    finally:
        release.set()
    with RunnerServer(settings, clock=clock) as second_run:
        wait_for_attempts(second_run, task.name, 2)
    third = recorder.requests[2]
    assert third["X-Cloudtasks-Taskretrycount"] == "2"
    assert third["X-Cloudtasks-Taskpreviousresponse"] == "504"  # not the 503 of the attempt before
