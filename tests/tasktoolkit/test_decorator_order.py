"""``@task_handler`` above ``@app.post(...)`` (Flask registers the bare function) is refused, naming it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flask import Blueprint, Flask

from tasktoolkit import ConfigurationError, TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import MemoryDedupStore

WRONG_ORDER = r"without @task_handler at POST /tasks/{} \(endpoint '{}'\).*Put @task_handler directly above"


def add_misordered_route(target: Flask | Blueprint, runs: list[str]) -> None:
    """``POST /tasks/charge`` with ``@task_handler`` written above the route decorator."""

    @task_handler
    @target.post("/tasks/charge")
    def charge(payload: Any = None, task: Any = None) -> Any:
        runs.append("charge")
        return {"charged": True}


def test_wrong_order_after_init_app_is_refused_when_the_decorator_is_applied(make_app: Any) -> None:
    app = make_app()
    TaskToolkit(app, store=MemoryDedupStore())
    with pytest.raises(ConfigurationError, match=WRONG_ORDER.format("charge", "charge")):
        add_misordered_route(app, [])


def test_wrong_order_before_init_app_is_refused_by_init_app(make_app: Any) -> None:
    app = make_app()
    add_misordered_route(app, [])

    with pytest.raises(ConfigurationError, match=WRONG_ORDER.format("charge", "charge")):
        TaskToolkit(app, store=MemoryDedupStore())


def test_wrong_order_in_a_blueprint_is_refused_at_the_first_request(make_app: Any, serve: Any) -> None:
    """Registered after init_app, so the first request finds it: no caller ever reaches the function."""
    runs: list[str] = []
    tasks = Blueprint("billing", __name__)
    add_misordered_route(tasks, runs)

    app = make_app()
    TaskToolkit(app, store=MemoryDedupStore())
    app.register_blueprint(tasks)
    url = serve(app).url
    for _ in range(2):  # refused until fixed, not only once
        assert requests.post(f"{url}/tasks/charge", timeout=10).status_code == 500
    assert runs == []
    app.testing = True  # the exception reaches the caller instead of a 500 page
    with pytest.raises(ConfigurationError, match=WRONG_ORDER.format("charge", "billing.charge")):
        app.test_client().post("/tasks/charge")


def test_a_wrapped_function_registered_bare_is_refused_at_the_first_request(
    make_app: Any, serve: Any
) -> None:
    runs: list[str] = []

    def charge(payload: Any = None, task: Any = None) -> Any:
        runs.append("charge")
        return {"charged": True}

    app = make_app()
    TaskToolkit(app, store=MemoryDedupStore())
    app.add_url_rule("/tasks/charge", view_func=task_handler(charge), methods=["POST"])
    app.add_url_rule("/tasks/charge-raw", "charge_raw", view_func=charge, methods=["POST"])
    url = serve(app).url
    assert requests.post(f"{url}/tasks/charge-raw", timeout=10).status_code == 500
    assert requests.post(f"{url}/tasks/charge", timeout=10).status_code == 500  # the whole app refuses
    assert runs == []
    app.testing = True
    with pytest.raises(ConfigurationError, match=WRONG_ORDER.format("charge-raw", "charge_raw")):
        app.test_client().post("/tasks/charge-raw")


def test_the_right_order_is_served(make_app: Any, serve: Any, tokens: Any, task_headers: Any) -> None:
    app = make_app()
    TaskToolkit(app, store=MemoryDedupStore())

    @app.post("/tasks/charge")
    @task_handler
    def charge(payload: Any, task: TaskContext) -> Any:
        return {"charged": True}

    url = serve(app).url + "/tasks/charge"
    assert requests.post(url, timeout=10).status_code == 401
    assert requests.post(url, json={}, headers=task_headers(tokens.google()), timeout=10).json() == {
        "charged": True
    }


def test_init_app_after_the_first_request_still_checks_the_routes(make_app: Any) -> None:
    app = make_app()
    add_misordered_route(app, [])
    app.test_client().get("/")  # the app served a request before the toolkit was set up
    with pytest.raises(ConfigurationError, match=WRONG_ORDER.format("charge", "charge")):
        TaskToolkit(app, store=MemoryDedupStore())
    served = make_app()
    served.test_client().get("/")
    TaskToolkit(served, store=MemoryDedupStore())  # no Flask setup method is called that late
