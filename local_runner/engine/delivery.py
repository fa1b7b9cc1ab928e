"""The request Cloud Tasks sends for an attempt, and what its ``Retry-After`` answer means (sans-IO).

Pure: the OIDC token comes from a ``mint`` callable passed in (the runner's issuer, or the fake queue's),
so the runner's dispatcher and ``tasktoolkit.testing.FakeQueue`` build byte-identical requests.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from local_runner.codec.scalars import format_epoch_seconds
from local_runner.model import (
    NO_RESPONSE_STATUS,
    HttpMethod,
    HttpTarget,
    Queue,
    Task,
    is_sendable_header,
    parse_queue_name,
)

#: Mints an OIDC ID token: ``(service account email, audience, now) -> JWT``.
Mint = Callable[[str, str, float], str]

USER_AGENT = "Google-Cloud-Tasks"
#: Headers a task may not set: Cloud Tasks replaces or reserves them (reference §5.1).
_RESERVED_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
#: Headers of a task that are never sent. Host, Content-Length and User-Agent are computed, as the real
#: service documents ("ignored or replaced", reference §5.1); the others frame the message or belong to
#: one connection (RFC 9110 §7.6.1, RFC 9112 §6): a task's ``Transfer-Encoding`` next to the computed
#: ``Content-Length`` makes servers refuse the request or read another request out of its body.
_DROPPED = frozenset(
    {
        "host",
        "content-length",
        "user-agent",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
#: Characters left as they are in a URL's path and query: RFC 3986 unreserved and reserved characters
#: (``#``, ``[`` and ``]`` excepted) and ``%``, so existing escapes are not encoded twice.
_URL_SAFE = "/?:@!$&'()*+,;=-._~%"
#: A URL with nothing to encode (the common case, answered without splitting it).
_PLAIN_URL = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[A-Za-z0-9.:\[\]-]+(?:/[" + re.escape(_URL_SAFE) + r"A-Za-z0-9]*)?"
)
#: An OAuth token cannot be minted locally; handlers see this placeholder instead.
LOCAL_OAUTH_TOKEN = "local-runner-oauth-access-token"


@dataclass(frozen=True)
class OutboundRequest:
    """An HTTP request ready to send."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


def _apply_uri_override(url: str, target: HttpTarget) -> str:
    override = target.uri_override
    if override is None:
        return url
    parts = urlsplit(url)
    if override.enforce_mode == "IF_NOT_EXISTS":
        scheme = parts.scheme or override.scheme.lower() or "https"
        host = parts.hostname or override.host
    else:
        scheme = override.scheme.lower() or parts.scheme or "https"
        host = override.host or parts.hostname or ""
    port = override.port or parts.port
    netloc = f"{host}:{port}" if port else host
    path = override.path or parts.path
    query = override.query or parts.query
    return urlunsplit((scheme, netloc, path, query, ""))


def encode_url(url: str) -> str:
    """The URL as it goes on the wire: path and query percent-encoded, a non-ASCII host in punycode.

    Like a browser, and like Cloud Tasks ("Cloud Tasks will encode some characters", reference §2.3):
    spaces, quotes, controls and non-ASCII characters (as UTF-8) are escaped; reserved characters and
    ``%`` escapes stay as they are; the fragment is dropped (it is never sent). ``http://h/a b?c d``
    becomes ``http://h/a%20b?c%20d`` and ``http://h/café`` ``http://h/caf%C3%A9``.
    """
    if _PLAIN_URL.fullmatch(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc if parts.netloc.isascii() else _ascii_netloc(parts.netloc)
    path = quote(parts.path, safe=_URL_SAFE, errors="surrogatepass")
    query = quote(parts.query, safe=_URL_SAFE, errors="surrogatepass")
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _ascii_netloc(netloc: str) -> str:
    """``user@host:port`` with the host in IDNA (punycode) and the user info percent-encoded."""
    userinfo, at, host_port = netloc.rpartition("@")
    host, colon, port = host_port.rpartition(":")
    if not colon or not port.isdigit():
        host, colon, port = host_port, "", ""
    with contextlib.suppress(UnicodeError):  # else sent as given: the connection fails, and the attempt
        host = host.encode("idna").decode("ascii")
    return f"{quote(userinfo, safe=_URL_SAFE, errors='surrogatepass')}{at}{host}{colon}{port}"


def _sendable(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` less those never sent (:data:`_DROPPED`, reserved prefixes) and those no request can carry.

    CreateTask refuses the last kind; a task stored before it did is sent without them.
    """
    return {
        key: value
        for key, value in headers.items()
        if key.lower() not in _DROPPED
        and not key.lower().startswith(_RESERVED_PREFIXES)
        and is_sendable_header(key, value)
    }


def build_request(task: Task, queue: Queue, mint: Mint | None, now: float) -> OutboundRequest:
    """The request Cloud Tasks would send for the attempt just claimed on ``task``.

    Applies the queue's ``httpTarget`` overrides, then sets ``User-Agent``, the ``X-CloudTasks-*``
    headers (reference §5.1) and the ``Authorization`` header from the OIDC token, if any (minted by
    ``mint``; without one no token is attached).
    """
    request = task.http_request
    target = queue.http_target or HttpTarget()
    url = _apply_uri_override(request.url, target)
    method = (
        target.http_method
        if target.http_method is not HttpMethod.HTTP_METHOD_UNSPECIFIED
        else request.http_method
    )
    headers = dict(request.headers)
    for key, value in target.header_overrides:
        for existing in [k for k in headers if k.lower() == key.lower()]:
            del headers[existing]
        headers[key] = value
    headers = _sendable(headers)
    headers["User-Agent"] = USER_AGENT
    headers.update(cloud_tasks_headers(task))
    oidc = target.oidc_token or request.oidc_token
    oauth = target.oauth_token or request.oauth_token
    if oidc is not None or oauth is not None:
        for existing in [k for k in headers if k.lower() == "authorization"]:
            del headers[existing]
    if oidc is not None and mint is not None:
        token = mint(oidc.service_account_email, oidc.audience or url, now)
        headers["Authorization"] = f"Bearer {token}"
    elif oauth is not None:
        headers["Authorization"] = f"Bearer {LOCAL_OAUTH_TOKEN}"
    body = request.body if method.name in ("POST", "PUT", "PATCH") else b""
    return OutboundRequest(method.name, encode_url(url), headers, body)


def cloud_tasks_headers(task: Task) -> dict[str, str]:
    """The ``X-CloudTasks-*`` headers of the attempt just claimed on ``task`` (reference §5.1)."""
    attempt = task.last_attempt
    retry_count = max(0, task.dispatch_count - 1)
    eta = attempt.schedule_time if attempt else task.schedule_time
    headers = {
        "X-CloudTasks-QueueName": _queue_id(task.queue_name),
        "X-CloudTasks-TaskName": task.task_id,
        "X-CloudTasks-TaskRetryCount": str(retry_count),
        "X-CloudTasks-TaskExecutionCount": str(task.execution_count),
        "X-CloudTasks-TaskETA": format_epoch_seconds(eta),
    }
    if retry_count > 0:
        headers["X-CloudTasks-TaskPreviousResponse"] = str(task.previous_response or NO_RESPONSE_STATUS)
        headers["X-CloudTasks-TaskRetryReason"] = ""
    return headers


@functools.lru_cache(maxsize=1024)
def _queue_id(queue_name: str) -> str:
    """The queue id of a full queue name, validated; a queue's tasks ask again and again."""
    return parse_queue_name(queue_name).queue_id


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
