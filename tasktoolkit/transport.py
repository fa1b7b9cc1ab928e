"""How TasksClient's REST calls reach the wire: ``requests`` for Google, pooled ``http.client`` for a runner.

A wire sends one request and returns the status and body; it never retries, waits or interprets an answer
(``tasktoolkit.client`` does all of that, in one place). When a request fails before an answer, the wire says
whether the request may have reached the server, so the caller can tell a safe resend from an unsafe one.

Proxy and CA settings from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``,
``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) are read once, when the wire is made, instead of on every request
as ``requests`` does by default (see ``docs/enqueue.md``, "Connections, proxies and certificates").
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import select
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from urllib3.exceptions import NewConnectionError

from tasktoolkit.errors import TaskToolkitError

#: Sent with every request of the pooled wire (``requests`` sends its own).
USER_AGENT = "tasktoolkit"
_JSON_HEADERS = {"Content-Type": "application/json"}


class SendFailed(TaskToolkitError):
    """A request got no answer (the client retries it or raises ``ServiceUnavailable``).

    Args:
        message: What failed.
        maybe_sent: Whether the request may have reached the server (False: surely never sent).
        reused: Whether it failed on a kept-alive connection that the server may have closed while idle.
    """

    def __init__(self, message: str, *, maybe_sent: bool, reused: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
        self.reused = reused


class Wire(Protocol):
    """Sends one request and returns ``(HTTP status, body)``; raises :class:`SendFailed` without an answer."""

    def send(
        self, method: str, path: str, query: Mapping[str, str] | None, body: bytes | None
    ) -> tuple[int, bytes]:
        """Sends ``method path?query`` (path from the endpoint's root, e.g. ``/v2/projects/...``)."""
        ...

    def close(self) -> None:
        """Closes the wire's connections."""
        ...


def proxy_for(url: str) -> str | None:
    """The proxy that ``HTTP(S)_PROXY`` / ``NO_PROXY`` (as ``requests`` reads them) give for ``url``.

    A loopback host (``localhost``, ``127.0.0.0/8``, ``::1``) never gets one: a proxy cannot reach this
    machine's loopback, so a runner there is always reached directly.
    """
    if _loopback(urlsplit(url).hostname or ""):
        return None
    proxies = get_environ_proxies(url)
    scheme = urlsplit(url).scheme
    return proxies.get(scheme) or proxies.get("all")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settle_environment(session: requests.Session, url: str) -> requests.Session:
    """Applies the environment's proxy and CA bundle for ``url`` to ``session`` once, then stops reading it.

    ``requests`` otherwise looks up proxies, ``NO_PROXY``, the CA bundle variables and ``~/.netrc`` on every
    request (about 30% of a call's cost against a local runner). The result for one endpoint is the same,
    except that ``~/.netrc`` credentials are not used (the client authenticates with OAuth, or not at all).
    """
    session.trust_env = False
    proxy = proxy_for(url)
    session.proxies = {urlsplit(url).scheme: proxy} if proxy else {}
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class RequestsWire:
    """A wire over a ``requests`` session (an ``AuthorizedSession`` for Google adds and refreshes the token).

    Args:
        session: The session; its environment should already be settled (:func:`settle_environment`).
        endpoint: Base URL, e.g. ``https://cloudtasks.googleapis.com``.
        timeout_s: Per-request timeout.
        pool_size: Connections kept per host (the most requests in flight at once).
    """

    def __init__(self, session: requests.Session, endpoint: str, *, timeout_s: float, pool_size: int) -> None:
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s

    def send(
        self, method: str, path: str, query: Mapping[str, str] | None, body: bytes | None
    ) -> tuple[int, bytes]:
        """Sends through the session."""
        url = self.endpoint + path
        try:
            response = self.session.request(
                method,
                url,
                params=query,
                data=body,
                headers=_JSON_HEADERS if body is not None else None,
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            raise SendFailed(f"{method} {url} failed: {exc}", maybe_sent=not _never_sent(exc)) from exc
        return response.status_code, response.content

    def close(self) -> None:
        """Closes the session."""
        self.session.close()


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached the server (refused or timed out while connecting)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), NewConnectionError)


class _Connection(http.client.HTTPConnection):
    """An ``HTTPConnection`` that writes a request's head and body in one send (``http.client`` uses two).

    Two writes cost a second system call and a second wake-up of the server for every request.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._hold_head = False
        self._head = b""

    def send_request(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]) -> None:
        """Sends the request (head and body together)."""
        self._hold_head = bool(body)
        self.request(method, target, body, dict(headers))

    def send(self, data: Any) -> None:
        if self._hold_head:  # the head: sent with the body that follows
            self._hold_head, self._head = False, bytes(data)
            return
        if self._head:
            data, self._head = self._head + bytes(data), b""
        super().send(data)


class PooledWire:
    """Keep-alive ``http.client`` connections to one ``http://`` host, shared by the calling threads.

    Each request takes an idle connection (the most recently used first) or opens one, and gives it back
    after reading the whole answer, so ``enqueue_many`` with N workers holds at most N connections and
    reuses them from call to call. A connection the server closed while it sat idle is noticed before
    sending (it reads as end-of-file) and replaced, so nothing is sent on it. No proxy applies: the client
    uses this wire only when the environment gives none for the endpoint.

    Args:
        endpoint: ``http://host:port``.
        timeout_s: Connect and read timeout.
        max_idle: Idle connections kept; more are closed when given back.
    """

    def __init__(self, endpoint: str, *, timeout_s: float, max_idle: int) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"PooledWire needs an http://host[:port] endpoint, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def send(
        self, method: str, path: str, query: Mapping[str, str] | None, body: bytes | None
    ) -> tuple[int, bytes]:
        """Sends on an idle connection or a new one; raises :class:`SendFailed` without an answer."""
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        connection, reused = self._take()
        try:
            if not reused:
                connection.connect()
        except OSError as exc:
            connection.close()
            raise SendFailed(f"{method} {self.endpoint}{target} failed: {exc}", maybe_sent=False) from exc
        headers = {"User-Agent": USER_AGENT, **(_JSON_HEADERS if body is not None else {})}
        try:
            connection.send_request(method, target, body, headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise SendFailed(
                f"{method} {self.endpoint}{target} failed: {exc!r}", maybe_sent=True, reused=reused
            ) from exc
        except BaseException:
            connection.close()  # never give back a connection with half a request or answer on it
            raise
        if response.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return response.status, data

    def _take(self) -> tuple[_Connection, bool]:
        """An idle connection that is still open, else a new (unconnected) one; and whether it is reused."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return _Connection(self._host, self._port, self.timeout_s), False
            if not _closed_by_peer(connection):
                return connection, True
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Closes the idle connections (connections in use close when their request ends)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def __del__(self) -> None:
        # A client that is dropped without close() (e.g. an app's, built from config) closes its sockets.
        if hasattr(self, "_idle"):
            self.close()


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection is unusable: readable while idle means closed (or garbage)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
