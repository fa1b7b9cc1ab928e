"""One port, two protocols: the first bytes of a connection pick the server that answers it.

A connection that opens with the HTTP/2 preface (gRPC clients on an insecure channel send it at once,
"prior knowledge" h2c) is piped byte for byte to the internal gRPC server; anything else is handed, in
process and without a copy, to the aiohttp protocol of the REST API. A TLS handshake is refused with a
one-line hint in the log: the runner speaks plain text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("local_runner.api")

#: The HTTP/2 client connection preface (RFC 9113 §3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The first byte of a TLS record carrying a handshake (a ClientHello).
_TLS_HANDSHAKE = 0x16
#: Seconds a connection may take to send the bytes that tell its protocol apart before it is closed.
SNIFF_DEADLINE_S = 10.0

ProtocolFactory = Callable[[], asyncio.Protocol]
#: Opens a connection to the gRPC server with the given protocol; returns its transport.
Connector = Callable[[ProtocolFactory], Awaitable[asyncio.BaseTransport]]


class ProtocolSniffer:
    """Creates one :class:`_Sniffing` protocol per accepted connection and tracks them until closed.

    A connection that has not told its protocol apart within ``sniff_deadline`` seconds (silent, or
    stopped inside the HTTP/2 preface) is closed, so idle clients cannot hold file descriptors forever.
    """

    def __init__(
        self,
        http_factory: ProtocolFactory,
        connect_grpc: Connector | None,
        sniff_deadline: float = SNIFF_DEADLINE_S,
    ) -> None:
        self._http_factory = http_factory
        self._connect_grpc = connect_grpc
        self.sniff_deadline = sniff_deadline
        self._sniffing: set[asyncio.BaseTransport] = set()
        self._piped: set[asyncio.BaseTransport] = set()
        #: Connections that sent the HTTP/2 preface, by the task connecting them to the gRPC server.
        self._connecting: dict[asyncio.Task[None], asyncio.BaseTransport] = {}
        self._hinted: set[str] = set()

    def __call__(self) -> asyncio.Protocol:
        """The protocol factory for ``loop.create_server``."""
        return _Sniffing(self)

    async def close(self) -> None:
        """Close every connection still being sniffed or being piped to the gRPC server (both ends)."""
        for transport in list(self._sniffing):
            transport.close()
        connecting = dict(self._connecting)
        for task, transport in connecting.items():
            task.cancel()  # a task cancelled before it runs never reaches its own clean-up
            transport.close()
        await asyncio.gather(*connecting, return_exceptions=True)
        for transport in list(self._piped):
            transport.close()

    def sniffing(self, transport: asyncio.BaseTransport) -> None:
        """Track a connection whose protocol is not known yet."""
        self._sniffing.add(transport)

    def sniffed(self, transport: asyncio.BaseTransport) -> None:
        """Stop tracking a connection that was handed over or closed."""
        self._sniffing.discard(transport)

    def hint(self, kind: str, message: str) -> None:
        """Log ``message`` once per ``kind``: what a client that cannot be served should change."""
        if kind not in self._hinted:
            self._hinted.add(kind)
            log.warning("%s", message)

    def to_http(self, transport: asyncio.Transport, first: bytes) -> None:
        """Hand the connection to the REST API, replaying the bytes read so far."""
        if b" /google." in first[:64]:
            self.hint(
                "grpc-http1",
                "a client sent a gRPC call over HTTP/1.1; gRPC needs HTTP/2 (an insecure channel "
                "speaks it): the REST API answers 404",
            )
        protocol = self._http_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(first)

    def start_pipe(self, transport: asyncio.Transport, first: bytes) -> None:
        """Start :meth:`to_grpc` (the connection to the gRPC server is opened asynchronously).

        Without a gRPC server (``connect_grpc`` is None: gRPC is off) the connection is closed.
        """
        if self._connect_grpc is None:
            self.hint(
                "grpc-off",
                "a gRPC client connected, but gRPC is off in this runner (the start-up log says why): "
                "the connection is closed; the REST API is served",
            )
            transport.close()
            return
        task = asyncio.get_running_loop().create_task(self.to_grpc(transport, first))
        self._connecting[task] = transport
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[None]) -> None:
        del self._connecting[task]

    async def to_grpc(self, transport: asyncio.Transport, first: bytes) -> None:
        """Pipe the connection to the gRPC server, starting with the bytes read so far."""
        client_side = _Pump(transport, self._piped)
        assert self._connect_grpc is not None
        try:
            backend = await self._connect_grpc(lambda: _Pump(transport, self._piped))
        except OSError as error:
            log.error("cannot reach the gRPC server: %s", error)
            transport.close()
            return
        if transport.is_closing():
            backend.close()
            return
        assert isinstance(backend, asyncio.WriteTransport) and isinstance(backend, asyncio.ReadTransport)
        client_side.peer = backend
        self._piped.add(transport)
        self._piped.add(backend)
        transport.set_protocol(client_side)
        client_side.connection_made(transport)
        backend.write(first)
        transport.resume_reading()


class _Sniffing(asyncio.Protocol):
    """Reads until the first bytes tell the protocol apart, then hands the connection over."""

    def __init__(self, sniffer: ProtocolSniffer) -> None:
        self._sniffer = sniffer
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sniffer.sniffing(transport)
        self._deadline = asyncio.get_running_loop().call_later(self._sniffer.sniff_deadline, transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._buffer += data
        first = self._buffer
        if len(first) < len(HTTP2_PREFACE) and HTTP2_PREFACE.startswith(first):
            return  # could still be the preface
        self._buffer = b""
        self._handed_over()
        if first.startswith(HTTP2_PREFACE):
            transport.pause_reading()
            self._sniffer.start_pipe(transport, first)
        elif first[0] == _TLS_HANDSHAKE:
            self._sniffer.hint(
                "tls",
                "a client opened a TLS connection; the runner speaks plain text: use http://host:port for "
                "REST and an insecure channel for gRPC (docs/connect-your-client.md)",
            )
            transport.close()
        else:
            self._sniffer.to_http(transport, first)

    def eof_received(self) -> bool | None:
        return None  # close: nothing was said that could be answered

    def connection_lost(self, exc: Exception | None) -> None:
        self._handed_over()

    def _handed_over(self) -> None:
        """The sniffing is over: disarm the deadline and stop tracking the connection here."""
        if self._deadline is not None:
            self._deadline.cancel()
        if self._transport is not None:
            self._sniffer.sniffed(self._transport)


class _Pump(asyncio.Protocol):
    """Writes what its transport reads into ``peer``; back-pressure pauses the other side."""

    def __init__(self, peer: asyncio.Transport | None, piped: set[asyncio.BaseTransport]) -> None:
        self.peer: asyncio.WriteTransport | None = peer
        self._piped = piped
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)

    def eof_received(self) -> bool | None:
        return None  # close this side; connection_lost closes the peer

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._piped.discard(self._transport)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if isinstance(self.peer, asyncio.ReadTransport):
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if isinstance(self.peer, asyncio.ReadTransport) and not self.peer.is_closing():
            self.peer.resume_reading()
