"""The runner's listening port: REST (HTTP/1.1, aiohttp) and gRPC (HTTP/2, ``grpcio``) side by side.

gRPC's server cannot adopt a socket accepted elsewhere, so it listens on an internal unix socket (an
abstract one on Linux; elsewhere a fresh directory only this user can enter; loopback TCP where unix
sockets do not exist) and the :class:`~local_runner.api.protocol_sniffer.ProtocolSniffer` pipes gRPC
connections to it (measured cost: about 30 µs of server CPU per call). If this grpcio cannot run that
server (:class:`~local_runner.api.grpc_core.GrpcCoreUnavailable`), gRPC is off, said once in the log,
and the port serves REST alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from local_runner.api.grpc_core import TESTED_GRPCIO, GrpcServer, grpcio_version
from local_runner.api.grpc_front import GrpcFront
from local_runner.api.protocol_sniffer import Connector, ProtocolFactory, ProtocolSniffer

log = logging.getLogger("local_runner.api")

#: How long in-flight gRPC calls may finish when the runner stops.
GRPC_STOP_GRACE_S = 1.0
_BACKLOG = 128


class OnePortServer:
    """Listens on one TCP port; gRPC connections go to ``grpc_front``, the rest to ``http_factory``."""

    def __init__(self, http_factory: ProtocolFactory, grpc_front: GrpcFront) -> None:
        self._http_factory = http_factory
        self._grpc_front = grpc_front
        self._grpc: GrpcServer | None = None
        self._listener: asyncio.Server | None = None
        self._sniffer: ProtocolSniffer | None = None
        self._socket_dir: Path | None = None

    async def start(self, host: str, port: int) -> int:
        """Start the gRPC server, then listen on ``host:port``; returns the bound port."""
        self._sniffer = ProtocolSniffer(self._http_factory, self._start_grpc())
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                self._sniffer, host, port, reuse_address=True, backlog=_BACKLOG
            )
        except BaseException:
            await self.close()
            raise
        bound: int = self._listener.sockets[0].getsockname()[1]
        return bound

    def _start_grpc(self) -> Connector | None:
        """Start the gRPC server on an internal address; how to connect to it, or None if gRPC is off."""
        loop = asyncio.get_running_loop()
        path, grpc_port = "", 0
        try:
            self._grpc = GrpcServer(self._grpc_front)
            if sys.platform == "linux":  # an abstract socket: no file left behind if the process is killed
                name = f"tasktoolkit-runner-{os.getpid()}-{secrets.token_hex(8)}"
                self._grpc.start(f"unix-abstract:{name}")
                path = "\0" + name
            elif hasattr(socket, "AF_UNIX"):
                self._socket_dir = Path(tempfile.mkdtemp(prefix="runner-grpc-"))
                path = str(self._socket_dir / "grpc.sock")
                self._grpc.start(f"unix:{path}")
            else:  # pragma: no cover - Windows
                grpc_port = self._grpc.start("127.0.0.1:0")
        except Exception as error:  # a grpcio whose private layer changed must not stop REST
            self._grpc = None
            log.warning(
                "gRPC is off: the runner's gRPC server cannot run on grpcio %s (%s); the REST API and the "
                "console are served (tested: grpcio %s; docs/runner.md)",
                grpcio_version(),
                error,
                TESTED_GRPCIO,
            )
            return None

        async def connect(factory: ProtocolFactory) -> asyncio.BaseTransport:
            if path:
                transport, _ = await loop.create_unix_connection(factory, path)
            else:  # pragma: no cover - Windows
                transport, _ = await loop.create_connection(factory, "127.0.0.1", grpc_port)
            return transport

        return connect

    async def close(self) -> None:
        """Stop accepting, let in-flight gRPC calls finish briefly, then close every open connection.

        aiohttp closes the REST connections (``AppRunner.cleanup``); this closes the ones still being
        sniffed and the ones piped to the gRPC server.
        """
        if self._listener is not None:
            self._listener.close()
        if self._grpc is not None:
            await self._grpc.stop(GRPC_STOP_GRACE_S)
        if self._sniffer is not None:
            await self._sniffer.close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
