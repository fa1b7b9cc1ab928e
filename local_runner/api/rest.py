"""Cloud Tasks REST v2 on aiohttp (placeholder until the full surface lands)."""

from __future__ import annotations

from aiohttp import web

from local_runner.service import TasksService

#: Largest request body the API accepts (a task may be up to 1 MiB; JSON and base64 add a third).
MAX_REQUEST_BYTES = 2 * 1024 * 1024


def register(app: web.Application, service: TasksService) -> None:
    """Add the REST v2 routes to ``app``."""
