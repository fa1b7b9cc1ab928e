"""JSON responses and the Google REST error shape: ``{"error": {"code", "message", "status"}}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from local_runner.errors import ApiError, Code, StoreError, StoreFull

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


def error_answer(code: Code, message: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status of ``code`` and its error body (:func:`error_document`)."""
    return code.http_status, error_document(code, message)


def error_response(code: Code, message: str) -> web.Response:
    """An error response with the HTTP status of ``code``."""
    status, document = error_answer(code, message)
    return json_response(document, status=status)


def api_error_response(error: ApiError) -> web.Response:
    """The response for a refused request."""
    return error_response(error.code, error.message)


def store_error_status(error: StoreError) -> tuple[Code, str]:
    """The answer when a store of the runner fails: RESOURCE_EXHAUSTED if its disk is full, else UNAVAILABLE.

    Nothing was changed by the request (every store method is one transaction), so it may be retried.
    """
    code = Code.RESOURCE_EXHAUSTED if isinstance(error, StoreFull) else Code.UNAVAILABLE
    return code, f"The runner cannot use its database; nothing was changed. {error}"
