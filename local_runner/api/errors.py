"""JSON responses and the Google REST error shape: ``{"error": {"code", "message", "status"}}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from local_runner.errors import ApiError, Code

#: The message Google APIs answer with when something unexpected went wrong.
INTERNAL_MESSAGE = "Internal error encountered."


def json_response(document: Any, status: int = 200) -> web.Response:
    """A compact ``application/json`` response."""
    return web.Response(
        text=json.dumps(document, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type="application/json",
    )


def error_document(code: Code, message: str) -> dict[str, Any]:
    """The error body Google REST APIs send (the HTTP status is repeated as ``code``)."""
    return {"error": {"code": code.http_status, "message": message, "status": code.name}}


def error_response(code: Code, message: str) -> web.Response:
    """An error response with the HTTP status of ``code``."""
    return json_response(error_document(code, message), status=code.http_status)


def api_error_response(error: ApiError) -> web.Response:
    """The response for a refused request."""
    return error_response(error.code, error.message)
