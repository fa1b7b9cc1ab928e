"""Connections that never tell their protocol apart are closed: after a deadline, and on stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from local_runner.api.protocol_sniffer import HTTP2_PREFACE, ProtocolSniffer
from local_runner.config import RunnerSettings
from local_runner.server import RunnerServer

#: A short sniff deadline so the tests wait briefly; the bound on reading EOF only guards against a hang.
SHORT_DEADLINE_S = 0.2
_EOF_WAIT_S = 10.0


async def _never_connect(factory: object) -> asyncio.BaseTransport:
    await asyncio.Event().wait()  # the gRPC server never answers: the connection stays "connecting"
    raise AssertionError("unreachable")


async def _serve(sniffer: ProtocolSniffer) -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(sniffer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await sniffer.close()
        await server.wait_closed()


async def _sees_eof(port: int, first: bytes) -> bool:
    """Whether a client that sends ``first`` and then nothing is closed by the server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        data = await asyncio.wait_for(reader.read(100), _EOF_WAIT_S)
        return data == b""
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("first", [b"", HTTP2_PREFACE[:10]], ids=["silent", "partial-preface"])
def test_a_connection_that_says_too_little_is_closed_after_the_deadline(first: bytes) -> None:
    async def scenario() -> bool:
        sniffer = ProtocolSniffer(asyncio.Protocol, _never_connect, sniff_deadline=SHORT_DEADLINE_S)
        async for port in _serve(sniffer):
            return await _sees_eof(port, first)
        raise AssertionError("unreachable")

    assert asyncio.run(scenario())


def test_close_ends_connections_being_sniffed_or_connecting_to_grpc() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        sniffer = ProtocolSniffer(asyncio.Protocol, _never_connect)  # the default deadline: not reached
        server = await asyncio.get_running_loop().create_server(sniffer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        grpc_reader, grpc_writer = await asyncio.open_connection("127.0.0.1", port)
        grpc_writer.write(HTTP2_PREFACE)
        await grpc_writer.drain()
        while not sniffer._connecting:  # the preface reached the sniffer
            await asyncio.sleep(0)
        server.close()
        await sniffer.close()
        silent = await asyncio.wait_for(silent_reader.read(100), _EOF_WAIT_S)
        grpc = await asyncio.wait_for(grpc_reader.read(100), _EOF_WAIT_S)
        for writer in (silent_writer, grpc_writer):
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()
        return silent, grpc

    assert asyncio.run(scenario()) == (b"", b"")


def test_stopping_the_runner_closes_a_connection_being_sniffed() -> None:
    server = RunnerServer(RunnerSettings(port=0, data_dir=None, shutdown_grace=0.1)).start()
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(HTTP2_PREFACE[:10])
        server.stop()
        client.settimeout(_EOF_WAIT_S)
        assert client.recv(100) == b""
