"""A small blocking client for the runner's REST v2 API, used by the management commands.

Every failure becomes a :class:`ClientError` whose message is one line fit for a terminal.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from urllib.parse import quote

import requests

from local_runner.codec.scalars import JsonObject as JsonObject  # the CLI modules take it from here
from local_runner.errors import RunnerError

#: Where the official clients' emulator support looks for a local Cloud Tasks (``HOST:PORT``).
EMULATOR_HOST_ENV = "CLOUD_TASKS_EMULATOR_HOST"
DEFAULT_ENDPOINT = "http://127.0.0.1:8123"
#: Seconds to wait for a connection and for an answer.
TIMEOUT = (10.0, 60.0)


class ClientError(RunnerError):
    """A call that failed; ``str(error)`` is one line."""


class CallRefused(ClientError):
    """The runner answered with a Cloud Tasks error (``{"error": {"code", "message", "status"}}``)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"({status}) {' '.join(message.split())}")
        self.status = status
        self.message = message


class UnreachableError(ClientError):
    """No answer from the runner at all."""


def default_endpoint() -> str:
    """``http://$CLOUD_TASKS_EMULATOR_HOST`` if set, else the runner's default address."""
    host = os.environ.get(EMULATOR_HOST_ENV, "").strip()
    return normalize_endpoint(host) if host else DEFAULT_ENDPOINT


def normalize_endpoint(endpoint: str) -> str:
    """``HOST:PORT`` or a URL, as a URL without a trailing slash."""
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if "://" in endpoint else f"http://{endpoint}"


class RunnerClient:
    """Calls ``{endpoint}/v2/{path}`` and returns the decoded JSON answer."""

    def __init__(self, endpoint: str, version: str = "v2") -> None:
        self.endpoint = normalize_endpoint(endpoint)
        #: The API's path prefix: ``v2`` (Cloud Tasks) or ``v1`` (Cloud Scheduler).
        self.version = version

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: JsonObject | None = None,
        api: str | None = None,
    ) -> JsonObject:
        """One API call; ``path`` is a resource name plus an optional ``:verb``.

        ``api`` is the path prefix when it is not :attr:`version` (the runner's extensions: ``runner/v1``).

        Raises:
            CallRefused: the runner refused the call.
            UnreachableError: the runner could not be reached.
            ClientError: the answer was not the API's JSON.
        """
        url = f"{self.endpoint}/{api or self.version}/{quote(path, safe='/:')}"
        try:
            response = requests.request(method, url, params=params, json=body, timeout=TIMEOUT)
        except requests.Timeout:
            raise UnreachableError(f"cannot reach the runner at {self.endpoint}: timed out") from None
        except requests.ConnectionError as error:
            raise UnreachableError(f"cannot reach the runner at {self.endpoint}: {_reason(error)}") from None
        except requests.RequestException as error:
            raise ClientError(f"bad request to {url}: {error}") from None
        return _decode(response)

    def list_all(
        self, path: str, key: str, params: Mapping[str, str | int] | None = None, api: str | None = None
    ) -> Iterator[JsonObject]:
        """Every item of a List method, following ``nextPageToken`` until the last page."""
        query: dict[str, str | int] = dict(params or {})
        seen: set[str] = set()
        while True:
            page = self.call("GET", path, params=query, api=api)
            yield from page.get(key, [])
            token = page.get("nextPageToken", "")
            if not token or token in seen:
                return
            seen.add(token)
            query["pageToken"] = token


def _decode(response: requests.Response) -> JsonObject:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.ok and isinstance(data, dict):
        return data
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        raise CallRefused(str(error.get("status") or error.get("code") or "UNKNOWN"), error["message"])
    raise ClientError(
        f"unexpected answer from {response.url}: HTTP {response.status_code} {response.reason}; "
        "is this a local Cloud Tasks runner?"
    )


def _reason(error: BaseException) -> str:
    """The root cause of a connection failure, in a few words."""
    seen: set[int] = set()
    stack: list[object] = [error]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror):
            return "unknown host"
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return "connection failed"
