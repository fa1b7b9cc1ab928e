"""A small path matcher for Google-style REST paths, custom ``:verb`` suffixes included.

aiohttp routes everything under a prefix to one view; this table then picks the handler, so unknown
paths and methods get the proper JSON 404 and the ``:verb`` suffixes need no special routing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: ``projects/P/locations/L``: project IDs may contain ``:`` (domain-scoped projects), later parts may not.
LOCATION = r"projects/[^/]+/locations/[^/:]+"
#: ``projects/P/locations/L/queues/Q``.
QUEUE = LOCATION + r"/queues/[^/:]+"
#: ``projects/P/locations/L/queues/Q/tasks/T``.
TASK = QUEUE + r"/tasks/[^/:]+"

Handler = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    """One HTTP method on one path pattern, with the query parameters it binds."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    #: Request fields that may come from the query string (lowerCamelCase).
    query: frozenset[str]


@dataclass(frozen=True)
class Match:
    """A route and the named groups its pattern captured."""

    route: Route
    params: dict[str, str]


class Router:
    """Matches ``(method, path)`` against regular expressions in order of registration.

    A client calls few distinct paths (CreateTask, one per queue), so the last answers are kept.
    """

    def __init__(self) -> None:
        self._routes: dict[str, list[Route]] = {}
        self._found: Callable[[str, str], tuple[Route, dict[str, str]] | None] = functools.lru_cache(
            maxsize=256
        )(self._find)

    def add(self, method: str, pattern: str, handler: Handler, query: Iterable[str] = ()) -> None:
        """Register ``handler`` for ``method`` on paths fully matching ``pattern``."""
        route = Route(method.upper(), re.compile(pattern), handler, frozenset(query))
        self._routes.setdefault(route.method, []).append(route)
        self._found = functools.lru_cache(maxsize=256)(self._find)

    def match(self, method: str, path: str) -> Match | None:
        """The first route for this method whose pattern matches the whole path."""
        found = self._found(method.upper(), path)
        return None if found is None else Match(found[0], dict(found[1]))

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes.get(method, ()):
            found = route.pattern.fullmatch(path)
            if found is not None:
                return route, {k: v for k, v in found.groupdict().items() if v is not None}
        return None
