"""The dispatcher's HTTP client against real sockets on 127.0.0.1, including servers that misbehave."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from local_runner.http_client import (
    EXCERPT_BYTES,
    MAX_RESPONSE_BYTES,
    ConnectFailed,
    ConnectionBroke,
    HttpClient,
    InvalidRequest,
    Response,
)

T = TypeVar("T")
#: A scripted server: it gets each accepted connection and answers as the test wants.
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """A raw TCP server recording how many connections it accepted and what it read."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def answering(*answers: bytes, then_close: bool = False) -> Callable[[Server], Script]:
    """A script reading one request per answer and writing the answers in turn on one connection."""

    def script_for(server: Server) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                await server.read_request(reader)
                writer.write(answer)
                await writer.drain()
            if not then_close:
                await reader.read()  # keep the connection until the client closes it

        return script

    return script_for


async def serve(make_script: Callable[[Server], Script], scenario: Callable[[Server], Awaitable[T]]) -> T:
    server = Server(lambda r, w: make_script(server)(r, w))
    async with server:
        return await scenario(server)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(main())


async def post(client: HttpClient, url: str, body: bytes = b"{}", **headers: str) -> Response:
    return await client.request("POST", url, headers, body)


def test_request_is_written_as_http_1_1_with_host_length_and_body() -> None:
    async def scenario(server: Server) -> Response:
        client = HttpClient()
        try:
            return await client.request(
                "POST", f"{server.url}/work/a?x=1#frag", {"X-Custom": "v"}, b'{"n": 1}'
            )
        finally:
            await client.close()

    response = run(serve(answering(OK), scenario))
    assert response == Response(200, None)


def test_wire_format_of_the_request() -> None:
    captured: list[bytes] = []

    async def scenario(server: Server) -> None:
        client = HttpClient()
        try:
            await client.request("PUT", f"{server.url}/work/a?x=1#frag", {"X-Custom": "v"}, b'{"n": 1}')
            await client.request("GET", f"{server.url}/", {}, b"")
        finally:
            await client.close()
        captured.extend(server.requests)

    run(serve(answering(OK, OK), scenario))
    port = captured[0].split(b"Host: 127.0.0.1:")[1].split(b"\r\n")[0]
    assert captured[0] == (
        b"PUT /work/a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\nX-Custom: v\r\n"
        b"Content-Length: 8\r\n\r\n" + b'{"n": 1}'
    )
    assert captured[1] == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:" + port + b"\r\n\r\n"  # no body, no length


def posting(count: int) -> Callable[[Server], Awaitable[tuple[list[int], int]]]:
    """A scenario posting ``count`` times in turn; gives the statuses and the connections the server saw."""

    async def scenario(server: Server) -> tuple[list[int], int]:
        client = HttpClient()
        try:
            statuses = [(await post(client, server.url)).status for _ in range(count)]
        finally:
            await client.close()
        return statuses, server.connections

    return scenario


def test_keep_alive_connection_is_reused() -> None:
    assert run(serve(answering(OK, OK, OK), posting(3))) == ([200, 200, 200], 1)


def test_connection_close_answer_is_not_reused() -> None:
    closing = b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert run(serve(answering(closing, then_close=True), posting(2))) == ([202, 202], 2)


def test_idle_connection_past_the_idle_timeout_is_not_reused() -> None:
    async def scenario(server: Server) -> int:
        client = HttpClient(idle_timeout=0.0)
        try:
            await post(client, server.url)
            await asyncio.sleep(0.01)
            await post(client, server.url)
        finally:
            await client.close()
        return server.connections

    assert run(serve(answering(OK, OK), scenario)) == 2


def test_connection_closed_by_the_server_while_idle_is_not_reused() -> None:
    async def scenario(server: Server) -> tuple[int, int]:
        client = HttpClient()
        try:
            await post(client, server.url)
            await asyncio.sleep(0.05)  # the server's close reaches the client
            status = (await post(client, server.url)).status
        finally:
            await client.close()
        return status, server.connections

    assert run(serve(answering(OK, then_close=True), scenario)) == (200, 2)


def test_body_until_end_of_connection_chunked_body_and_retry_after() -> None:
    unframed = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\n\r\nbusy, try later"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    async def scenario(server: Server) -> list[Response]:
        client = HttpClient()
        try:
            return [await post(client, server.url), await post(client, server.url)]
        finally:
            await client.close()

    responses = run(serve(answering(chunked, unframed, then_close=True), scenario))
    assert responses == [Response(200, None), Response(503, "30")]


def test_interim_100_continue_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"

    async def scenario(server: Server) -> int:
        client = HttpClient()
        try:
            return (await post(client, server.url)).status
        finally:
            await client.close()

    assert run(serve(answering(answer), scenario)) == 204


def test_head_answer_with_a_length_but_no_body_completes() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"

    async def scenario(server: Server) -> int:
        client = HttpClient()
        try:
            return (await client.request("HEAD", server.url, {}, b"")).status
        finally:
            await client.close()

    assert run(serve(answering(answer), scenario)) == 200


def test_oversized_body_gives_the_status_and_drops_the_connection() -> None:
    size = MAX_RESPONSE_BYTES * 4
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size

    async def scenario(server: Server) -> tuple[int, int, int]:
        client = HttpClient()
        try:
            first = (await post(client, server.url)).status
            second = (await post(client, server.url)).status
        finally:
            await client.close()
        return first, second, server.connections

    assert run(serve(answering(big, OK), scenario)) == (200, 200, 2)


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\nContent-Le", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b""],
    ids=["mid-headers", "mid-body", "nothing"],
)
def test_connection_closed_before_a_full_response_is_a_broken_connection(answer: bytes) -> None:
    async def scenario(server: Server) -> None:
        client = HttpClient()
        try:
            await post(client, server.url + "/w")
        finally:
            await client.close()

    with pytest.raises(ConnectionBroke, match=r"connection to http://127\.0\.0\.1:\d+/w broke before a full"):
        run(serve(answering(answer, then_close=True), scenario))


def test_an_answer_that_is_not_http_is_a_broken_connection() -> None:
    async def scenario(server: Server) -> None:
        client = HttpClient()
        try:
            await post(client, server.url)
        finally:
            await client.close()

    with pytest.raises(ConnectionBroke, match="not valid HTTP"):
        run(serve(answering(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), scenario))


def test_refused_connection_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpClient(max_connections=1)
    with pytest.raises(
        ConnectFailed, match=rf"cannot connect to http://127\.0\.0\.1:{port}/x: Connection refused"
    ):
        run(post(client, f"http://127.0.0.1:{port}/x"))
    assert client.open_connections == 0  # the refused socket does not count against the cap


@pytest.mark.parametrize(
    ("url", "headers", "message"),
    [
        ("ftp://example.com/x", {}, "only http:// and https://"),
        ("http:///nohost", {}, "only http:// and https://"),
        ("http://example.com:99999/x", {}, "invalid URL"),
        ("http://example.com/x", {"X-Evil": "a\r\nInjected: 1"}, "invalid value of header X-Evil"),
        ("http://example.com/x", {"Bad Name": "v"}, "invalid header name 'Bad Name'"),
    ],
)
def test_a_request_that_cannot_be_written_sends_nothing(
    url: str, headers: dict[str, str], message: str
) -> None:
    client = HttpClient()
    with pytest.raises(InvalidRequest, match=message):
        run(client.request("POST", url, headers, b""))


def test_cancelled_request_closes_its_connection() -> None:
    def hanging(server: Server) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            if await reader.read() == b"":  # no answer is ever written; wait for the client to go
                server.connections += 100

        return script

    async def scenario(server: Server) -> int:
        client = HttpClient()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(client, server.url)
        for _ in range(200):
            if server.connections > 100:
                break
            await asyncio.sleep(0.01)
        await client.close()
        return server.connections

    assert run(serve(hanging, scenario)) == 101


def keep_answering(server: Server) -> Script:
    """A script answering every request on the connection until the client closes it."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(OK)
            await writer.drain()

    return script


def test_requests_beyond_max_connections_wait_and_reuse_the_connections() -> None:
    async def scenario(server: Server) -> tuple[list[int], int, int]:
        client = HttpClient(max_connections=2)
        try:
            answers = await asyncio.gather(*(post(client, server.url) for _ in range(8)))
            return [answer.status for answer in answers], server.connections, client.open_connections
        finally:
            await client.close()

    assert run(serve(keep_answering, scenario)) == ([200] * 8, 2, 2)


def test_at_the_cap_the_idle_connection_to_another_origin_is_closed_for_room() -> None:
    async def scenario(first: Server) -> tuple[list[int], int, int, int]:
        second = Server(lambda reader, writer: keep_answering(second)(reader, writer))
        async with second:
            client = HttpClient(max_connections=1)
            try:
                statuses = [(await post(client, first.url)).status]
                statuses.append((await post(client, second.url)).status)  # `first`'s idle one is closed
                statuses.append((await post(client, first.url)).status)
                return statuses, first.connections, second.connections, client.open_connections
            finally:
                await client.close()

    assert run(serve(keep_answering, scenario)) == ([200, 200, 200], 2, 1, 1)


def test_the_first_kib_of_each_body_is_kept_per_response() -> None:
    long = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"a" * 1024 + b"\r\n"
    long += b"10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n"

    async def scenario(server: Server) -> list[Response]:
        client = HttpClient()
        try:
            return [await post(client, server.url) for _ in range(3)]
        finally:
            await client.close()

    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    answers = run(serve(answering(OK, long, empty), scenario))
    assert [r.excerpt for r in answers] == [b"ok", b"a" * EXCERPT_BYTES, b""]  # not carried over
