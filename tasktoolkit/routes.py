"""Refuses a task function that Flask serves without its ``@task_handler`` (decorators in the wrong order).

``@task_handler`` written *above* ``@app.post(...)`` wraps the function only after Flask registered it, so the
route would run the bare function for any caller. Every function a :class:`~tasktoolkit.handler.TaskHandler`
wraps is remembered here; finding one among an app's view functions raises :class:`ConfigurationError`:

- when the decorator is applied, for the apps :class:`~tasktoolkit.TaskToolkit` already initialized;
- in ``init_app``, for the routes registered before it;
- before the app's first request (and every request until fixed), for routes registered later, e.g.
  by blueprints.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from tasktoolkit.errors import ConfigurationError

#: Functions wrapped by a TaskHandler (weakly: a function that is gone cannot be registered).
_wrapped: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
#: Apps initialized by TaskToolkit, checked when a decorator is applied.
_apps: weakref.WeakSet[Flask] = weakref.WeakSet()
#: Apps whose view functions were checked at their first request.
_checked: weakref.WeakSet[Flask] = weakref.WeakSet()


def _describe(app: Flask, endpoint: str) -> str:
    """``POST /tasks/x (endpoint 'x')`` for each rule of ``endpoint``."""
    try:
        rules = list(app.url_map.iter_rules(endpoint))
    except KeyError:  # a view function without a URL rule
        rules = []
    served = [
        f"{','.join(sorted((rule.methods or set()) - {'HEAD', 'OPTIONS'}))} {rule.rule}" for rule in rules
    ]
    return f"{' and '.join(served) or 'no URL'} (endpoint {endpoint!r})"


def _refuse(app: Flask, endpoints: list[str]) -> ConfigurationError:
    routes = "; ".join(_describe(app, endpoint) for endpoint in endpoints)
    return ConfigurationError(
        f"app {app.name!r} serves a task function without @task_handler at {routes}: the decorator "
        "is written above the route decorator, so Flask registered the bare function and any caller "
        "could run it. Put @task_handler directly above the function, below @app.post(...)"
    )


def check_routes(app: Flask) -> None:
    """Raises if any view function of ``app`` is a function some ``@task_handler`` wraps.

    Raises:
        ConfigurationError: Names every such route.
    """
    endpoints = [endpoint for endpoint, view in list(app.view_functions.items()) if _is_wrapped(view)]
    if endpoints:
        raise _refuse(app, sorted(endpoints))


def _is_wrapped(view: Any) -> bool:
    try:
        return view in _wrapped
    except TypeError:  # unhashable callable: never wrapped (remember() could not hold it either)
        return False


def remember(func: Callable[..., Any]) -> None:
    """Records that ``func`` is wrapped by a TaskHandler; raises if a known app already serves it bare.

    Raises:
        ConfigurationError: An app initialized by TaskToolkit registered ``func`` itself as a view.
    """
    try:
        _wrapped.add(func)
    except TypeError:  # not weakly referenceable or unhashable: only the per-app checks miss it
        return
    for app in list(_apps):
        endpoints = [endpoint for endpoint, view in list(app.view_functions.items()) if view is func]
        if endpoints:
            raise _refuse(app, sorted(endpoints))


def _check_first_request() -> None:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if app not in _checked:
        check_routes(app)
        _checked.add(app)


def watch(app: Flask) -> None:
    """Checks ``app``'s routes now and before its first request, and on every later decoration.

    Raises:
        ConfigurationError: A route already serves a task function without its ``@task_handler``.
    """
    _apps.add(app)
    check_routes(app)
    if getattr(app, "_got_first_request", False):
        return  # no route can be added any more: the check above covered them all
    if _check_first_request not in app.before_request_funcs.get(None, []):
        app.before_request(_check_first_request)
