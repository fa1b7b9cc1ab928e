"""Dedup keys are scoped per handler (its Flask endpoint) unless handlers share a ``dedup_scope``.

Task names are reusable after their tombstone (about an hour, reference §3), so the same queue and task name
can reach two different handlers; each must run its own code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from flask import Blueprint, Flask

from tasktoolkit import ConfigurationError, TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import DedupStatus, DedupStore
from tasktoolkit.handler import store_key

STORE_KINDS = ["memory", "sqlite", "redis"]
REPLAYED = "X-TaskToolkit-Replayed"


def by_user(payload: Any, task: TaskContext) -> str:
    return f"user:{payload['user_id']}"


def two_handler_app(app: Flask, store: DedupStore, runs: list[str], **options: Any) -> Flask:
    """``/tasks/a`` and ``/tasks/b``: two handlers with the same ``task_handler`` options on one store."""
    TaskToolkit(app, store=store)

    @app.post("/tasks/a")
    @task_handler(**options)
    def handler_a(payload: Any, task: TaskContext) -> Any:
        runs.append("a")
        return {"ran": "a"}

    @app.post("/tasks/b")
    @task_handler(**options)
    def handler_b(payload: Any, task: TaskContext) -> Any:
        runs.append("b")
        return {"ran": "b"}

    return app


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, store_factory: Any) -> DedupStore:
    made: DedupStore = store_factory(request.param)
    return made


@pytest.fixture
def deliver(tokens: Any, task_headers: Callable[..., dict[str, str]]) -> Callable[..., requests.Response]:
    def post(url: str, payload: Any, *, name: str = "reused-name") -> requests.Response:
        headers = task_headers(tokens.google(), queue="emails", name=name)
        return requests.post(url, json=payload, headers=headers, timeout=20)

    return post


@pytest.mark.parametrize("same_payload", [True, False], ids=["same-payload", "other-payload"])
def test_same_queue_and_task_name_on_two_handlers_runs_both(
    store: DedupStore, make_app: Any, serve: Any, deliver: Any, same_payload: bool
) -> None:
    runs: list[str] = []
    url = serve(two_handler_app(make_app(), store, runs)).url
    first = deliver(f"{url}/tasks/a", {"user_id": 1})
    second = deliver(f"{url}/tasks/b", {"user_id": 1 if same_payload else 2})
    assert (first.status_code, first.json()) == (200, {"ran": "a"})
    assert (second.status_code, second.json()) == (200, {"ran": "b"})  # not a replay, not a mismatch ack
    assert REPLAYED not in second.headers
    assert runs == ["a", "b"]
    for endpoint in ("handler_a", "handler_b"):
        record = store.get(f"{endpoint}|emails/reused-name")
        assert record is not None and record.status is DedupStatus.COMPLETED
    assert store.get("emails/reused-name") is None  # the unscoped key of earlier versions is not used


def test_a_custom_key_is_scoped_per_handler_too(
    store: DedupStore, make_app: Any, serve: Any, deliver: Any
) -> None:
    runs: list[str] = []
    url = serve(two_handler_app(make_app(), store, runs, dedup_key=by_user)).url
    assert deliver(f"{url}/tasks/a", {"user_id": 7}, name="t1").json() == {"ran": "a"}
    assert deliver(f"{url}/tasks/b", {"user_id": 7}, name="t2").json() == {"ran": "b"}
    assert deliver(f"{url}/tasks/b", {"user_id": 7}, name="t3").headers[REPLAYED] == "true"
    assert runs == ["a", "b"]
    assert store.get("handler_a|user:7") is not None and store.get("handler_b|user:7") is not None


def test_handlers_naming_one_dedup_scope_share_their_keys(
    store: DedupStore, make_app: Any, serve: Any, deliver: Any
) -> None:
    runs: list[str] = []
    app = two_handler_app(make_app(), store, runs, dedup_key=by_user, dedup_scope="welcome-email")
    url = serve(app).url
    assert deliver(f"{url}/tasks/a", {"user_id": 7}, name="t1").json() == {"ran": "a"}
    replay = deliver(f"{url}/tasks/b", {"user_id": 7}, name="t2")
    assert (replay.json(), replay.headers[REPLAYED]) == ({"ran": "a"}, "true")
    assert runs == ["a"]
    assert store.get("welcome-email|user:7") is not None


def test_the_scope_is_the_endpoint_so_a_new_process_finds_the_record(
    store_factory: Any, make_app: Any, serve: Any, deliver: Any
) -> None:
    """Two apps built by the same code (two deploys), each with its own store on one SQLite file."""

    def build() -> tuple[Flask, list[str]]:
        runs: list[str] = []
        app = make_app()
        TaskToolkit(app, store=store_factory("sqlite"))
        tasks = Blueprint("jobs", __name__)

        @tasks.post("/tasks/resize")
        @task_handler
        def resize(payload: Any, task: TaskContext) -> Any:
            runs.append("resize")
            return {"resized": True}

        app.register_blueprint(tasks)
        return app, runs

    old_app, old_runs = build()
    new_app, new_runs = build()
    assert deliver(serve(old_app).url + "/tasks/resize", {"w": 64}).status_code == 200
    again = deliver(serve(new_app).url + "/tasks/resize", {"w": 64})
    assert (again.status_code, again.headers[REPLAYED]) == (200, "true")
    assert (old_runs, new_runs) == (["resize"], [])
    assert store_factory("sqlite").get("jobs.resize|emails/reused-name") is not None


def test_store_key_keeps_scopes_apart() -> None:
    assert store_key("jobs.resize", "emails/t") == "jobs.resize|emails/t"
    assert store_key("a|b", "c") != store_key("a", "b|c")
    assert store_key("a|b", "c") == "a%7Cb|c"


@pytest.mark.parametrize("scope", ["", 7, "x" * 201])
def test_an_invalid_dedup_scope_is_refused_when_applied(scope: Any) -> None:
    with pytest.raises(ConfigurationError, match="dedup_scope must be a str of 1-200 characters"):
        task_handler(dedup_scope=scope)
