"""Shared fixtures: a fake clock, a real redis-server, real HTTP servers, test signing keys and tokens."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, abort
from google.auth import jwt
from pytest_httpserver import HTTPServer
from testsupport.firestore_emulator import (
    PATIENT_TIMEOUT_S,
    FirestoreEmulator,
    allow_emulator_starts,
    emulator_command,
)
from werkzeug.serving import BaseWSGIServer, make_server

from local_runner.oidc import SigningKey
from tasktoolkit import PermanentFailure, RetryTask, TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import (
    DedupStore,
    FirestoreDedupStore,
    MemoryDedupStore,
    RedisDedupStore,
    SQLiteDedupStore,
)

AUDIENCE = "https://worker.example.test"
EMAIL = "tasks@my-proj.iam.gserviceaccount.com"
GOOGLE_ISSUER = "https://accounts.google.com"
CERTS_PATH = "/oauth2/v1/certs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- redis-server --------------------------------------------------------------------------------


class RedisServer:
    """A real ``redis-server`` child process on a loopback port, without persistence unless ``args`` ask."""

    def __init__(self, binary: str, port: int, *args: str) -> None:
        self.binary = binary
        self.port = port
        self.args = args
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *self.args,
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        with redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5) as client:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(f"redis-server did not answer PING on port {self.port}") from None
                    threading.Event().wait(0.02)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait(10)
        self._process = None


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_redis_binary(), free_port()).start()
    yield server
    server.kill()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server for one test (which may kill and restart it)."""
    server = RedisServer(_redis_binary(), free_port()).start()
    yield server
    server.kill()


# -- Firestore emulator --------------------------------------------------------------------------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that may start the Firestore emulator get the time a cold JVM needs on a loaded machine."""
    allow_emulator_starts(items)


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    emulator = FirestoreEmulator(emulator_command(), free_port()).start()
    yield emulator
    emulator.kill()


@pytest.fixture
def own_firestore_emulator() -> Iterator[FirestoreEmulator]:
    """A Firestore emulator for one test (which may pause, kill and restart it)."""
    emulator = FirestoreEmulator(emulator_command(), free_port()).start()
    yield emulator
    emulator.kill()


# -- stores --------------------------------------------------------------------------------------


StoreFactory = Callable[..., DedupStore]


@pytest.fixture
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``make(kind, clock=...)``: a fresh store (Redis: unique key prefix; Firestore: unique collection)."""
    made: list[DedupStore] = []

    def make(kind: str, clock: Callable[[], float] = time.time, **kwargs: Any) -> DedupStore:
        store: DedupStore
        if kind == "memory":
            store = MemoryDedupStore(clock=clock, **kwargs)
        elif kind == "sqlite":
            store = SQLiteDedupStore(tmp_path / "dedup.db", clock=clock, **kwargs)
        elif kind == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisDedupStore.from_url(
                server.url, prefix=f"test:{uuid.uuid4().hex}:", clock=clock, **kwargs
            )
        elif kind == "firestore":
            emulator: FirestoreEmulator = request.getfixturevalue("firestore_emulator")
            kwargs.setdefault("timeout_s", PATIENT_TIMEOUT_S)  # the contract is the subject, not the budget
            store = FirestoreDedupStore(
                collection=f"dedup-{uuid.uuid4().hex}", client=emulator.client(), clock=clock, **kwargs
            )
        else:  # pragma: no cover
            raise ValueError(kind)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


# -- HTTP ----------------------------------------------------------------------------------------


class LiveServer:
    """A Flask app on a real threaded werkzeug server at 127.0.0.1:<free port>."""

    def __init__(self, app: Flask) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], LiveServer]]:
    """``serve(app)`` runs the app on a real port until the test ends."""
    servers: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        server = LiveServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def _no_emulator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without CLOUD_TASKS_EMULATOR_HOST; those that need it set it themselves."""
    monkeypatch.delenv("CLOUD_TASKS_EMULATOR_HOST", raising=False)


@pytest.fixture(autouse=True)
def _quiet_werkzeug() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


# -- keys and tokens -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def google_key() -> SigningKey:
    """Stands in for Google's signing key: its certificate is served as the "Google" certs."""
    return SigningKey.generate()


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def google_certs_url(httpserver: HTTPServer, google_key: SigningKey) -> str:
    """A local stand-in for https://www.googleapis.com/oauth2/v1/certs."""
    httpserver.expect_request(CERTS_PATH).respond_with_json(
        {google_key.kid: google_key.certificate_pem}, headers={"Cache-Control": "public, max-age=3600"}
    )
    return httpserver.url_for(CERTS_PATH)


class Tokens:
    """Mints test ID tokens: valid Google-style claims by default, any claim overridable."""

    audience = AUDIENCE
    email = EMAIL
    issuer = GOOGLE_ISSUER

    def __init__(self, google_key: SigningKey, other_key: SigningKey) -> None:
        self.google_key = google_key
        self.other_key = other_key

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims with ``overrides`` applied (``None`` removes a claim)."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": GOOGLE_ISSUER,
            "aud": AUDIENCE,
            "azp": "113774264463038321964",
            "sub": "113774264463038321964",
            "email": EMAIL,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    @staticmethod
    def sign(key: SigningKey, payload: Mapping[str, Any]) -> str:
        token: bytes = jwt.encode(key.signer, dict(payload))  # type: ignore[no-untyped-call]
        return token.decode("ascii")

    def google(self, **overrides: Any) -> str:
        """A token signed with the stand-in Google key."""
        return self.sign(self.google_key, self.claims(**overrides))


@pytest.fixture(scope="session")
def tokens(google_key: SigningKey, other_key: SigningKey) -> Tokens:
    return Tokens(google_key, other_key)


def _task_headers(
    token: str | None, *, queue: str = "emails", name: str = "task-1", retry: int = 0, **extra: str
) -> dict[str, str]:
    """The headers Cloud Tasks sends on an attempt (reference §5.1), with a bearer token."""
    headers = {
        "User-Agent": "Google-Cloud-Tasks",
        "Content-Type": "application/json",
        "X-CloudTasks-QueueName": queue,
        "X-CloudTasks-TaskName": name,
        "X-CloudTasks-TaskRetryCount": str(retry),
        "X-CloudTasks-TaskExecutionCount": str(retry),
        "X-CloudTasks-TaskETA": f"{time.time():.6f}",
    }
    if retry:
        headers["X-CloudTasks-TaskPreviousResponse"] = "503"
        headers["X-CloudTasks-TaskRetryReason"] = ""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra)
    return headers


@pytest.fixture(scope="session")
def task_headers() -> Callable[..., dict[str, str]]:
    """``task_headers(token, queue=, name=, retry=, **extra)``."""
    return _task_headers


# -- a worker app --------------------------------------------------------------------------------


class Worker:
    """A Flask app whose task handlers record each run; the payload's ``action`` picks the behaviour."""

    def __init__(self, store: DedupStore | None, config: Mapping[str, Any]) -> None:
        self.runs: list[tuple[str, Any]] = []
        self.unblock = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()
        app = Flask("worker")
        app.config.update(config)
        self.toolkit = TaskToolkit(app, store=store)
        self.app = app

        @app.post("/tasks/work")
        @task_handler
        def work(payload: Any, task: TaskContext) -> Any:
            return self.act("work", payload, task)

        @app.post("/tasks/welcome")
        @task_handler(dedup_key=lambda payload, task: f"welcome:{payload['user_id']}")
        def welcome(payload: Any, task: TaskContext) -> Any:
            return self.act("welcome", payload, task)

        @app.post("/tasks/no-dedup")
        @task_handler(dedup_key=None)
        def no_dedup(payload: Any, task: TaskContext) -> Any:
            return self.act("no-dedup", payload, task)

        @app.post("/tasks/kind/<kind>")
        @task_handler(lease_s=30, ttl_s=60)
        def by_kind(payload: Any, task: TaskContext, kind: str) -> Any:
            return self.act(f"kind:{kind}", payload, task)

    def count(self, name: str | None = None) -> int:
        with self._lock:
            return sum(1 for run, _ in self.runs if name is None or run == name)

    def act(self, name: str, payload: Any, task: TaskContext) -> Any:
        with self._lock:
            self.runs.append((name, payload))
        action = payload.get("action", "ok") if isinstance(payload, dict) else "ok"
        if action == "block" or (isinstance(payload, dict) and payload.get("block")):
            self.started.set()
            self.unblock.wait(20)
        if action == "slow":
            threading.Event().wait(float(payload.get("delay_s", 0.05)))
        elif action == "retry":
            raise RetryTask(7.2)
        elif action == "permanent":
            raise PermanentFailure("the user does not exist")
        elif action == "error":
            raise RuntimeError("secret internal detail")
        elif action == "status":
            return {"status": "custom"}, int(payload["status"])
        elif action == "abort":
            abort(404)
        elif action == "text":
            return "plain text", 201, {"Content-Type": "text/plain; charset=utf-8"}
        return {
            "ran": name,
            "queue": task.queue_name,
            "task": task.task_name,
            "retry_count": task.retry_count,
        }


def _trusting(google_certs_url: str, tokens: Tokens, config: Mapping[str, Any]) -> dict[str, Any]:
    """Settings that trust the stand-in Google certs and the test tokens' audience and email."""
    return {
        "TASKTOOLKIT_AUDIENCE": tokens.audience,
        "TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS": [tokens.email],
        "TASKTOOLKIT_GOOGLE_CERTS_URL": google_certs_url,
        **config,
    }


@pytest.fixture
def apps() -> Iterator[Callable[..., Flask]]:
    """``apps(**config)``: a Flask app with that config (not initialized); its toolkit state closed after."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask("tasks")
        app.config.update(config)
        made.append(app)
        return app

    yield make
    for app in made:
        state = app.extensions.get("tasktoolkit")
        if state is not None:
            state.close()


@pytest.fixture
def make_app(apps: Callable[..., Flask], google_certs_url: str, tokens: Tokens) -> Callable[..., Flask]:
    """``make_app(**config)``: a Flask app configured (not initialized) to trust the stand-in Google certs."""
    return lambda **config: apps(**_trusting(google_certs_url, tokens, config))


@pytest.fixture
def make_worker(google_certs_url: str, tokens: Tokens) -> Iterator[Callable[..., Worker]]:
    """``make_worker(store, **config)``: a Worker trusting the stand-in Google certs."""
    workers: list[Worker] = []

    def make(store: DedupStore | None, **config: Any) -> Worker:
        worker = Worker(store, _trusting(google_certs_url, tokens, config))
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.unblock.set()
        TaskToolkit.state(worker.app).close()


@pytest.fixture
def waits() -> list[float]:
    """The waits between retries a client asked for (passed as its ``sleep``)."""
    return []
