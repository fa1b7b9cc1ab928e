"""What keeps the console same-origin: a per-process form token and strict response headers.

The runner's browser guard (:mod:`local_runner.api.browser_guard`) already refuses cross-site writes and
foreign ``Host`` names; every console form also carries this process's token, which only a page served
by the runner itself can read (the same-origin policy keeps other sites from reading the pages).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

from aiohttp import web

#: No inline script or style, nothing from other origins, never framed, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: The form field holding the token.
TOKEN_FIELD = "csrf"


def new_token() -> str:
    """A fresh random token (one per runner process)."""
    return secrets.token_urlsafe(32)


def token_matches(expected: str, given: object) -> bool:
    """Whether a form's token is this process's, compared in constant time."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def secure(response: web.StreamResponse) -> web.StreamResponse:
    """Add the console's security headers to a response."""
    response.headers.update(SECURITY_HEADERS)
    return response


def local_path(target: object, default: str) -> str:
    """``target`` if it is a path on this origin (``/...``, not ``//host``), else ``default``."""
    if (
        isinstance(target, str)
        and target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and all(c.isprintable() and c != "\\" for c in target)
    ):
        return target
    return default
