"""What a Google API answers, for tests that stand a local server in for one."""

from __future__ import annotations

import json

from werkzeug import Response


def error(status: str, code: int, message: str) -> Response:
    """A Google API error in its JSON shape: ``{"error": {"code", "message", "status"}}``."""
    body = json.dumps({"error": {"code": code, "message": message, "status": status}})
    return Response(body, status=code, content_type="application/json")
