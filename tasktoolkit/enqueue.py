"""``handler.enqueue(payload)``: a task for a decorated route, built from the app's config and URL map.

The app's client is a :class:`~tasktoolkit.client.TasksClient` built on first use from
``TASKTOOLKIT_PROJECT`` and ``TASKTOOLKIT_LOCATION`` (real Cloud Tasks, or the runner when
``CLOUD_TASKS_EMULATOR_HOST`` is set), unless a test installed a :class:`~tasktoolkit.testing.FakeQueue`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from flask import Flask, current_app
from werkzeug.routing import BuildError

from tasktoolkit.config import (
    BASE_URL,
    DEFAULT_QUEUE,
    LOCATION,
    PROJECT,
    SERVICE_ACCOUNT,
    config_string,
    token_audience,
    token_service_account,
)
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.taskspec import CreatedTask

CLIENT_KEY = "tasktoolkit.client"
_lock = threading.Lock()


class Enqueuer(Protocol):
    """What ``handler.enqueue`` needs of a client: :class:`TasksClient` and :class:`FakeQueue` both fit."""

    @property
    def enqueue(self) -> Callable[..., CreatedTask | None]:
        """Creates one task: ``enqueue(queue, **options)`` (see :meth:`TasksClient.enqueue`)."""
        ...


def client_for(app: Flask) -> Enqueuer:
    """The app's client: the installed one, or a ``TasksClient`` built from config on first use."""
    with _lock:
        client = app.extensions.get(CLIENT_KEY)
        if client is None:
            from tasktoolkit.client import TasksClient

            why = "the Cloud Tasks {} of the queues, needed to create tasks"
            project = config_string(app.config, PROJECT, required=why.format("project"))
            location = config_string(app.config, LOCATION, required=why.format("location"))
            assert project is not None and location is not None
            client = TasksClient(project, location)
            app.extensions[CLIENT_KEY] = client
        return cast(Enqueuer, client)


def install_client(app: Flask, client: Enqueuer) -> None:
    """Makes ``client`` the app's client (a test installs its fake queue this way)."""
    with _lock:
        app.extensions[CLIENT_KEY] = client


def _route(app: Flask, view: object, route_args: Mapping[str, Any]) -> tuple[str, str]:
    """The path and method of the route served by ``view``."""
    endpoints = [endpoint for endpoint, function in app.view_functions.items() if function is view]
    name = getattr(view, "__name__", repr(view))
    if len(endpoints) != 1:
        where = "is not a route" if not endpoints else f"serves several endpoints {endpoints}"
        raise ConfigurationError(f"cannot enqueue {name}: it {where} of app {app.name!r}")
    [endpoint] = endpoints
    rule = next(app.url_map.iter_rules(endpoint))
    methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    method = "POST" if "POST" in methods or not methods else methods[0]
    try:
        path = app.url_map.bind("localhost").build(endpoint, dict(route_args), method=method)
    except BuildError as exc:
        raise ConfigurationError(f"cannot build the URL of {name}: pass route_args for {rule.rule}") from exc
    return path, method


def _audience(app: Flask) -> str | None:
    return token_audience(app.config)


def _service_account(app: Flask) -> str | None:
    return token_service_account(app.config)


def route_task(
    view: object,
    payload: Any,
    *,
    queue: str | None,
    route_args: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> tuple[Flask, str, dict[str, Any]]:
    """The current app, the queue and the ``enqueue()`` options of a task for the route ``view`` serves.

    The URL is ``TASKTOOLKIT_BASE_URL`` + the route's path; the OIDC token is for
    ``TASKTOOLKIT_SERVICE_ACCOUNT`` (or the only allowed service account) with the first
    ``TASKTOOLKIT_AUDIENCE`` as audience (or, without one, the URL, as Cloud Tasks does).
    """
    try:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError as exc:
        raise ConfigurationError(
            "enqueue needs an app: call it in a request or in app.app_context()"
        ) from exc
    queue = queue or config_string(
        app.config, DEFAULT_QUEUE, required="name a queue with @task_handler(queue=...) or enqueue(queue=...)"
    )
    base = config_string(
        app.config, BASE_URL, required="the public URL of this service, e.g. https://worker-abc.a.run.app"
    )
    assert queue is not None and base is not None
    path, method = _route(app, view, route_args or {})
    task_options: dict[str, Any] = {
        "url": base.rstrip("/") + path,
        "method": method,
        "service_account": _service_account(app),
        "audience": _audience(app),
    }
    if payload is not None:
        task_options["json"] = payload
    task_options.update(options)
    if task_options["service_account"] is None:
        if "service_account" not in options:
            raise ConfigurationError(
                f"{SERVICE_ACCOUNT} is not set: the service account whose OIDC token the task carries "
                "(or pass service_account=None to send none)"
            )
        task_options.pop("audience")
    return app, queue, task_options


def enqueue_route(
    view: object,
    payload: Any,
    *,
    queue: str | None,
    route_args: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> CreatedTask | None:
    """Creates a task for the route that ``view`` serves in the current app (see :func:`route_task`)."""
    app, queue, task_options = route_task(view, payload, queue=queue, route_args=route_args, options=options)
    return client_for(app).enqueue(queue, **task_options)
