"""The dispatcher's HTTP/1.1 client: keep-alive connections per origin, responses parsed by httptools.

Dispatch needs one thing from HTTP: send a request and learn its status (and ``Retry-After``). A
general client spends most of a dispatch on features a task never uses (cookies, redirects,
decompression, tracing); this one writes the request in one call and parses the answer in C.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import socket
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from local_runner.errors import RunnerError
from local_runner.model import breaks_header_line, is_header_name

#: An idle connection is closed rather than reused after this many seconds. Servers drop idle
#: keep-alive connections after a few seconds (gunicorn 2 s, uvicorn 5 s); a request written while
#: they do fails, so a connection is only reused well before that.
IDLE_TIMEOUT = 1.0
#: How much of a response body is read before the connection is given up instead of drained.
MAX_RESPONSE_BYTES = 64 * 1024
#: How much of a response body is kept (the console shows it next to the attempt).
EXCERPT_BYTES = 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpError(RunnerError):
    """A request got no complete response."""


class InvalidRequest(HttpError):
    """The request cannot be written (bad URL, header name or header value); nothing was sent."""


class ConnectFailed(HttpError):
    """No connection to the target could be made (refused, unknown host, TLS handshake)."""


class ConnectionBroke(HttpError):
    """The connection closed, or sent something that is not HTTP, before a full response."""


@dataclass(frozen=True)
class Response:
    """What dispatch keeps of a response."""

    status: int
    retry_after: str | None
    #: The first :data:`EXCERPT_BYTES` bytes of the body.
    excerpt: bytes = field(default=b"", compare=False)


class Origin(NamedTuple):
    """Where a request goes: the scheme, host and port of its URL (one connection pool each)."""

    scheme: str
    host: str
    port: int


class _Target(NamedTuple):
    origin: Origin
    host_header: str
    path: str


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> _Target:
    """Where ``url`` goes and what its request line and ``Host`` say; a queue's tasks repeat their URLs."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidRequest(f"invalid URL {url}: {error}") from error
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidRequest(f"invalid URL {url}: only http:// and https:// URLs with a host are sent")
    default = _DEFAULT_PORTS[scheme]
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port in (None, default) else f"{bracketed}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(Origin(scheme, host, port or default), host_header, path)


def origin_of(url: str) -> Origin:
    """The destination of ``url``.

    Raises:
        InvalidRequest: the URL is not an ``http://`` or ``https://`` URL with a host.
    """
    return _split(url).origin


def open_file_limit() -> int | None:
    """This process's open-file soft limit (``ulimit -n``); ``None`` if unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _encode_head(method: str, target: _Target, headers: Mapping[str, str], body_length: int) -> bytes:
    """The request line and headers, ``Host`` and ``Content-Length`` included.

    Raises:
        InvalidRequest: if a header name is not an HTTP token or a value holds CR, LF or NUL.
    """
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    for name, value in headers.items():
        if not is_header_name(name):
            raise InvalidRequest(f"invalid header name {name!r}")
        if breaks_header_line(value):
            raise InvalidRequest(f"invalid value of header {name}: it holds a line break or NUL")
        lines.append(f"{name}: {value}\r\n")
    if body_length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_length}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._url = ""
        self._begin()

    def _begin(self) -> None:
        self._retry_after: str | None = None
        self._framed = False  # Content-Length or chunked: the body's end is known without EOF
        self._headers_done = False
        self._body_bytes = 0
        self._excerpt = b""

    # -- use -------------------------------------------------------------------------------------

    async def exchange(self, data: bytes, url: str, head_only: bool) -> Response:
        """Write one request for ``url`` and wait for its response."""
        assert self._transport is not None and self._loop is not None and self._waiter is None
        self._url = url
        self._waiter = self._loop.create_future()
        self._head_only = head_only
        self.reusable = False
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        """Drop the connection at once (an unfinished exchange cannot be resumed)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        self.reusable = keep_alive and not self.closed
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), self._retry_after, self._excerpt))
        if not self.reusable:
            self.close()

    def _fail(self, error: HttpError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    @property
    def made(self) -> bool:
        """Whether the socket was connected (then ``connection_lost`` follows when it closes)."""
        return self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        # Kept: in Python 3.11 each asyncio.get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: the connection is out of step
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(self._broke("the target switched protocols instead of answering"))
        except httptools.HttpParserError as error:
            self._fail(self._broke(f"the answer is not valid HTTP ({error})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost()
        if self._waiter is None:
            return
        if self._headers_done and not self._framed:  # the body ran to the end of the connection
            self._finish(keep_alive=False)
            return
        self._fail(self._broke(f"{exc}" if exc else "the target closed it"))

    def _broke(self, reason: str) -> ConnectionBroke:
        return ConnectionBroke(f"connection to {self._url} broke before a full response: {reason}")

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_only and self._parser.get_status_code() >= 200:
            self._finish(keep_alive=False)  # a HEAD answer has no body, whatever its Content-Length says

    def on_body(self, body: bytes) -> None:
        if len(self._excerpt) < EXCERPT_BYTES:
            self._excerpt += body[: EXCERPT_BYTES - len(self._excerpt)]
        self._body_bytes += len(body)
        if self._body_bytes > MAX_RESPONSE_BYTES:
            self._finish(keep_alive=False)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # an interim answer: the real one follows
            self._begin()
            return
        self._finish(keep_alive=self._parser.should_keep_alive())
        self._begin()


def _reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed: {error}"
    if isinstance(error, socket.gaierror) or not error.errno:
        return error.strerror or str(error)
    return os.strerror(error.errno)  # asyncio words a refusal "Connect call failed (address)"


class HttpClient:
    """Sends requests over keep-alive connections, one request at a time per connection.

    An idle connection to the request's origin is reused first. At most ``max_connections`` sockets are
    open at once (``None``: no cap). At the cap a request waits instead of failing: for a connection to
    its origin that another request is done with, or for room, which closing the oldest idle
    connection (to any origin) makes.
    """

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_connections: int | None = None) -> None:
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Sockets open or opening; each is counted until its ``connection_lost`` (its fd is closed).
        self.open_connections = 0
        #: Requests waiting at the cap, each for its origin: given a connection, or ``None`` (room).
        self._waiting: deque[tuple[Origin, asyncio.Future[_Connection | None]]] = deque()

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Send one request and wait for its status line and headers (and up to 64 KiB of body).

        Cancelling the call closes its connection.

        Raises:
            InvalidRequest: nothing was sent (bad URL or header).
            ConnectFailed: no connection could be made.
            ConnectionBroke: the connection failed before a full response.
        """
        target = _split(url)
        data = _encode_head(method, target, headers, len(body)) + body
        loop = self._loop
        if loop is None:  # kept: in Python 3.11 each asyncio.get_running_loop() is a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        connection = self._idle_connection(target.origin, loop.time()) or await self._connect(target, url)
        try:
            response = await connection.exchange(data, url, head_only=method == "HEAD")
        except BaseException:
            connection.close()
            raise
        if not connection.reusable or self._hand_over(target.origin, connection):
            pass
        elif self._waiting:  # requests to other origins wait at the cap: this socket makes room
            connection.close()
        else:
            connection.idle_since = loop.time()
            self._idle.setdefault(target.origin, deque()).append(connection)
            if self._sweep is None:
                self._sweep = loop.call_later(self._idle_timeout, self._close_expired)
        return response

    def _close_expired(self) -> None:
        """Close the connections idle too long, for every origin (not only those still in use)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for origin, idle in list(self._idle.items()):
            self._drop_expired(idle, now)
            if not idle:
                del self._idle[origin]
        self._sweep = loop.call_later(self._idle_timeout, self._close_expired) if self._idle else None

    def _drop_expired(self, idle: deque[_Connection], now: float) -> None:
        """Close the connections of ``idle`` that were closed or idle too long (the oldest come first)."""
        while idle and (idle[0].closed or now - idle[0].idle_since > self._idle_timeout):
            idle.popleft().close()

    def _idle_connection(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        self._drop_expired(idle, now)
        while idle:
            connection = idle.pop()  # most recently used first
            if not connection.closed:
                return connection
        return None

    def _close_oldest_idle(self) -> bool:
        """Close the connection idle longest, whatever its origin; ``False`` if none is idle."""
        oldest: deque[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        oldest.popleft().close()
        return True

    def _hand_over(self, origin: Origin, connection: _Connection) -> bool:
        """Give a connection a request is done with to a request waiting for its origin, if any."""
        for waiting in self._waiting:
            if waiting[0] == origin and not waiting[1].done():
                self._waiting.remove(waiting)
                waiting[1].set_result(connection)
                return True
        return False

    async def _wait_at_cap(self, origin: Origin) -> _Connection | None:
        """Wait while ``max_connections`` sockets are open: for a connection to ``origin``, or room."""
        cap = self._max_connections
        while cap is not None and self.open_connections >= cap:
            self._close_oldest_idle()  # its socket is counted until the loop has closed it
            waiting: tuple[Origin, asyncio.Future[_Connection | None]] = (
                origin,
                asyncio.get_running_loop().create_future(),
            )
            self._waiting.append(waiting)
            try:
                connection = await waiting[1]
            except BaseException:  # cancelled: leave the line, and drop a connection handed over meanwhile
                if waiting in self._waiting:
                    self._waiting.remove(waiting)
                handed = waiting[1].result() if waiting[1].done() and not waiting[1].cancelled() else None
                if handed is not None:
                    handed.close()
                raise
            if connection is not None:
                return connection
        return None

    def _connection_lost(self) -> None:
        self.open_connections -= 1
        while self._waiting:
            _, room = self._waiting.popleft()
            if not room.done():
                room.set_result(None)
                return

    async def _connect(self, target: _Target, url: str) -> _Connection:
        handed_over = await self._wait_at_cap(target.origin)
        if handed_over is not None:
            return handed_over
        origin = target.origin
        tls = None
        if origin.scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        self.open_connections += 1
        connection = _Connection(self._connection_lost)  # counted down in its connection_lost
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: connection,
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls else None,
            )
        except BaseException as error:
            if not connection.made:  # no connection_lost will come
                self._connection_lost()
            if isinstance(error, OSError):  # refused, unreachable, unknown host, TLS handshake (SSLError)
                raise ConnectFailed(f"cannot connect to {url}: {_reason(error)}") from error
            raise
        return connection

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their request ends."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
