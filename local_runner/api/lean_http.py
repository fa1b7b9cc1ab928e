"""The REST API's plain calls, answered without aiohttp's request and response objects.

Most calls a client makes look alike: ``GET``, ``POST``, ``PATCH`` or ``DELETE`` of a ``/v2/`` path over
HTTP/1.1, a ``Content-Length`` body of a few hundred bytes, at most a plain ``key=value`` query. Every
HTTP connection starts here. Such a call is read straight from the connection's bytes, checked by the
same browser guard (:func:`~local_runner.api.browser_guard.refusal`), answered by the same code as the
aiohttp view (:func:`~local_runner.api.views.answer`) and written with aiohttp's status line and headers.
aiohttp's objects cost about 35 µs per call, a third of a CreateTask (docs/performance.md).

The first request of a connection that is anything else (another path, percent-encoding, chunked or
compressed bodies, ``Expect``, ``Upgrade``, ``Connection: close``, HTTP/1.0, a body over
:data:`LEAN_MAX_BODY`, a head over :data:`LEAN_MAX_HEAD`, non-ASCII or malformed header lines, a
repeated header that the guard reads) hands the connection to aiohttp for good, from that request's
first byte, once the calls before it are answered. aiohttp then answers it, errors included, as it
answers any connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from http import HTTPStatus

from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive

from local_runner.api import browser_guard, views
from local_runner.api.errors import error_answer
from local_runner.api.routing import Router

log = logging.getLogger("local_runner.api")

ProtocolFactory = Callable[[], asyncio.Protocol]

#: Largest request head (request line and headers) read here; aiohttp reads larger ones (up to its limits).
LEAN_MAX_HEAD = 8 * 1024
#: Largest body read here; aiohttp reads larger ones (up to ``views.MAX_REQUEST_BYTES``, then refuses).
LEAN_MAX_BODY = 64 * 1024
#: Bytes of calls sent ahead of their answers that are read before the connection stops reading.
_MAX_BUFFERED = LEAN_MAX_HEAD + LEAN_MAX_BODY
#: Seconds an idle connection stays open (aiohttp's own ``keepalive_timeout``).
KEEPALIVE_TIMEOUT_S = 3630.0

_METHODS = frozenset({"GET", "POST", "PATCH", "DELETE"})
_QUERY_PAIR = rb"[A-Za-z0-9_.$-]+=[A-Za-z0-9._~$;,:=-]*"
#: A path aiohttp reads as it is written (nothing to decode or normalize), and a query of plain
#: ``key=value`` pairs (such as the official clients' ``$alt=json;enum-encoding=int``).
_REQUEST_LINE = re.compile(
    rb"([A-Z]{3,6}) (/v2/[A-Za-z0-9._~:@,=+/-]*)(?:\?(%s(?:&%s)*))? HTTP/1\.1" % (_QUERY_PAIR, _QUERY_PAIR)
)
#: Header lines as RFC 9110 writes them: a token, a colon, visible ASCII, spaces and tabs.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*")
#: Headers after which aiohttp does more than read a plain body (or closes): those calls go to aiohttp.
_AIOHTTP_ONLY = frozenset(
    {b"transfer-encoding", b"content-encoding", b"expect", b"upgrade", b"http2-settings", b"te"}
)
#: Headers the guard or the body reading looks at; a call that repeats one goes to aiohttp.
_READ = {
    b"host": "Host",
    b"content-length": "Content-Length",
    b"content-type": "Content-Type",
    b"origin": "Origin",
    b"sec-fetch-site": "Sec-Fetch-Site",
    b"connection": "Connection",
}
_HEADS = {
    status: f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    "Content-Type: application/json; charset=utf-8\r\nContent-Length: "
    for status in (200, 400, 401, 403, 404, 409, 429, 500, 501, 503, 504)
}


class _Call:
    """One plain call read from the connection."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    def query_items(self) -> list[tuple[str, str]]:
        """The query's ``(key, value)`` pairs, in order."""
        if not self.query:
            return []
        return [(key, value) for key, _, value in (pair.partition("=") for pair in self.query.split("&"))]

    async def read_body(self) -> bytes:
        """The body, read with the head."""
        return self.body


def _read_head(head: bytes) -> tuple[str, str, str, dict[str, str], int] | None:
    """Method, path, query, the headers of :data:`_READ` and the body length; ``None``: aiohttp reads it."""
    line_end = head.find(b"\r\n")  # ``head`` ends with one
    first = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if first is None or _HEADER_LINES.fullmatch(head, line_end + 2) is None:
        return None
    method = first[1].decode()
    if method not in _METHODS:
        return None
    path = first[2].decode()
    if "/." in path or "//" in path:  # aiohttp normalizes such paths
        return None
    headers: dict[str, str] = {}
    for line in head[line_end + 2 : -2].split(b"\r\n"):
        raw_name, _, raw_value = line.partition(b":")
        name = raw_name.lower()
        if name in _AIOHTTP_ONLY:
            return None
        key = _READ.get(name)
        if key is not None:
            if key in headers:
                return None
            headers[key] = raw_value.strip(b" \t").decode()
    if "Host" not in headers or headers.get("Connection", "keep-alive").lower() != "keep-alive":
        return None
    length = headers.get("Content-Length", "0")
    if not length.isdigit() or len(length) > 9 or int(length) > LEAN_MAX_BODY:
        return None
    query = first[3].decode() if first[3] is not None else ""
    return method, path, query, headers, int(length)


class LeanHttp:
    """The protocol factory of the runner's HTTP connections (see the module); aiohttp's for the rest.

    Args:
        fallback: aiohttp's protocol factory (``AppRunner.server``), which takes over a connection.
        router: The ``/v2/`` router of the REST API.
        hosts: The ``Host`` names the runner answers.
    """

    def __init__(self, fallback: ProtocolFactory, router: Router, hosts: browser_guard.HostCheck) -> None:
        self.fallback = fallback
        self.router = router
        self.hosts = hosts
        self.connections: set[_LeanConnection] = set()
        self.serving: set[asyncio.Task[None]] = set()

    def __call__(self) -> asyncio.Protocol:
        """A protocol for one new connection."""
        return _LeanConnection(self)

    async def close(self) -> None:
        """Let the calls being answered finish, then close the connections still read here."""
        for connection in self.connections:
            connection.closing = True  # no new call starts
        await asyncio.gather(*self.serving, return_exceptions=True)
        for connection in list(self.connections):
            connection.close()


class _LeanConnection(asyncio.Protocol):
    """Reads plain calls one after the other; hands the connection to aiohttp at the first other one."""

    def __init__(self, owner: LeanHttp) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._busy = False
        self._handing_over = False
        self.closing = False
        self._last_active = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._read_paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._owner.connections.add(self)
        tcp_keepalive(transport)
        loop = asyncio.get_running_loop()
        self._last_active = loop.time()
        self._idle = loop.call_at(self._last_active + KEEPALIVE_TIMEOUT_S, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        if not self._busy:
            self._next()
        elif len(self._buffer) > _MAX_BUFFERED:
            self._pace()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pace()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pace()
        if not self._busy:
            self._next()  # the calls held back while the client was not reading its answers

    def eof_received(self) -> bool | None:
        return None  # as aiohttp: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True  # the calls still buffered are not answered (as aiohttp)
        self._buffer = b""
        self._forget()

    # -- calls --------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start answering the next whole call in the buffer, or hand the connection over."""
        buffer = self._buffer
        if not buffer or self.closing or self._write_paused:
            # While the client does not read its answers, no call starts (as aiohttp awaits its drain):
            # answers do not pile up here, and no hand-over happens while the transport is paused.
            return
        end = buffer.find(b"\r\n\r\n", 0, LEAN_MAX_HEAD + 4)
        if end < 0:
            crlf = buffer.count(b"\r\n")
            if len(buffer) > LEAN_MAX_HEAD or buffer.count(b"\n") != crlf or buffer.count(b"\r") != crlf:
                self._hand_over()  # too long, or a bare CR or LF: never a plain call
            return
        read = _read_head(buffer[: end + 2])
        if read is None:
            self._hand_over()
            return
        method, path, query, headers, length = read
        start = end + 4
        if len(buffer) < start + length:
            return  # the rest of the body is on its way
        self._buffer = buffer[start + length :]
        self._busy = True
        call = _Call(method, path, query, headers, buffer[start : start + length])
        task = asyncio.get_running_loop().create_task(self._answer(call))
        self._owner.serving.add(task)
        task.add_done_callback(self._owner.serving.discard)

    async def _answer(self, call: _Call) -> None:
        try:
            refused = browser_guard.refusal(
                call.method, call.path, call.headers, bool(call.body), self._owner.hosts
            )
            if refused is not None:
                status, document = error_answer(refused.code, refused.message)
            else:
                status, document = await views.answer(
                    self._owner.router,
                    call.method,
                    call.path,
                    len(views.API_PREFIX),
                    call.query_items(),
                    call.read_body,
                )
            self._write(status, document)
        except Exception:  # a bug here must not leave the client waiting
            log.exception("%s %s failed", call.method, call.path)
            self.close()
            return
        self._busy = False
        self._last_active = asyncio.get_running_loop().time()
        if self._read_paused:
            self._pace()
        if self._buffer:
            self._next()

    def _write(self, status: int, document: object) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        head = _HEADS.get(status) or (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: "
        )
        head += f"{len(body)}\r\nDate: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
        transport.write(head.encode() + body)

    # -- connection ---------------------------------------------------------------------------------

    def _pace(self) -> None:
        """Stop reading while the client does not read its answers or sends far ahead of them."""
        transport = self._transport
        pause = self._write_paused or (self._busy and len(self._buffer) > _MAX_BUFFERED)
        if transport is None or pause is self._read_paused or transport.is_closing():
            return
        self._read_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _hand_over(self) -> None:
        """Give the connection to aiohttp, replaying the bytes of the calls not answered here."""
        transport = self._transport
        if transport is None or self._handing_over:
            return
        self._handing_over = True
        self._forget()
        if self._read_paused:  # aiohttp paces the connection from here on
            transport.resume_reading()
        protocol = self._owner.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        buffer, self._buffer = self._buffer, b""
        protocol.data_received(buffer)

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._last_active + KEEPALIVE_TIMEOUT_S
        if self._busy or due > loop.time():
            self._idle = loop.call_at(max(due, loop.time() + 1.0), self._check_idle)
        else:
            self.close()

    def close(self) -> None:
        """Close the connection (the runner stops, or it stayed idle too long)."""
        self.closing = True
        if self._transport is not None:
            self._transport.close()
        self._forget()

    def _forget(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._owner.connections.discard(self)
