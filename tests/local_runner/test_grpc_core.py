"""gRPC's core served from the event loop: hand-over in batches, odd calls, cancellation, the stop, and a
grpcio whose private layer is not the one the server is built on (gRPC off, REST served)."""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import requests
from testsupport.runner_process import RunnerProcess

from local_runner.api import grpc_methods
from local_runner.api.grpc_core import GrpcCoreUnavailable, GrpcServer, grpcio_version
from local_runner.api.grpc_front import GrpcFront, Outcome
from local_runner.api.grpc_methods import RpcMethod
from local_runner.api.routing import Router

#: Bounds the waits on other threads (each is over in milliseconds when things work).
_WAIT_S = 10.0
CALLS = 20
CREATE = next(m for m in grpc_methods.METHODS if m.name == "CreateTask")
T = TypeVar("T")


class _Front(GrpcFront):
    """Answers CreateTask with its request bytes reversed, once ``release`` is set (at once if it is).

    An unserved method named ``.../Broken`` makes it fail (a bug in the front).
    """

    def __init__(self) -> None:
        super().__init__(Router())
        self.release = asyncio.Event()
        self.release.set()
        self.arrived = threading.Semaphore(0)

    def methods(self) -> dict[str, RpcMethod]:
        return {CREATE.full_name: CREATE}

    def unimplemented(self, name: str) -> str:
        if name.endswith("/Broken"):
            raise RuntimeError("a bug")
        return super().unimplemented(name)

    async def outcome(self, method: RpcMethod, raw: bytes) -> Outcome:
        self.arrived.release()
        await self.release.wait()
        return raw[::-1]


class _Served:
    """A :class:`GrpcServer` over :class:`_Front` on a loop in its own thread, and a channel to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.front = self.on_loop(self._start)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.create = self.channel.unary_unary(CREATE.full_name)

    async def _start(self) -> _Front:
        front = _Front()
        self.server = GrpcServer(front)
        self.port = self.server.start("127.0.0.1:0")
        return front

    def on_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(_WAIT_S)

    def stop(self, grace: float) -> None:
        self.on_loop(lambda: self.server.stop(grace))


@pytest.fixture
def served() -> Iterator[_Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    served = _Served(loop)
    yield served
    served.channel.close()
    served.stop(0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(_WAIT_S)
    loop.close()


def test_calls_that_arrive_meanwhile_share_one_wake_up_of_the_loop(served: _Served) -> None:
    wake_ups: list[object] = []
    signal = served.loop.call_soon_threadsafe

    def counted(callback: Callable[..., object], *args: object) -> asyncio.Handle:
        wake_ups.append(callback)
        return signal(callback, *args)

    busy, go = threading.Event(), threading.Event()
    served.loop.call_soon_threadsafe(lambda: (busy.set(), go.wait(_WAIT_S)))  # the loop is busy elsewhere
    assert busy.wait(_WAIT_S)
    served.loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    calls = [served.create.future(bytes([n, 0])) for n in range(CALLS)]
    while len(served.server._arrived) < CALLS and not any(c.done() for c in calls):
        threading.Event().wait(0.001)
    go.set()
    assert [c.result(_WAIT_S) for c in calls] == [bytes([0, n]) for n in range(CALLS)]
    assert len(wake_ups) == 1


def test_a_call_without_its_request_message_is_unimplemented(served: _Served) -> None:
    streaming = served.channel.stream_unary(CREATE.full_name)
    with pytest.raises(grpc.RpcError) as refused:
        streaming(iter([]), timeout=_WAIT_S)
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert refused.value.details() == f'"{CREATE.full_name}" requires exactly one request message.'


def test_a_method_not_served_is_unimplemented(served: _Served) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        served.channel.unary_unary("/google.cloud.tasks.v2beta3.CloudTasks/CreateTask")(b"", timeout=_WAIT_S)
    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "not implemented by the local Cloud Tasks runner" in str(refused.value.details())


def test_a_call_its_client_cancelled_is_answered_into_the_void(served: _Served) -> None:
    served.on_loop(_clear(served.front.release))
    waiting = served.create.future(b"ab")
    assert served.front.arrived.acquire(timeout=_WAIT_S)
    waiting.cancel()
    served.loop.call_soon_threadsafe(served.front.release.set)  # the answer goes to a cancelled call
    assert served.create(b"cd", timeout=_WAIT_S) == b"dc"


def test_a_call_still_running_after_the_grace_gets_unavailable_and_new_calls_are_refused(
    served: _Served,
) -> None:
    served.on_loop(_clear(served.front.release))  # no call ends by itself
    running = served.create.future(b"ab")
    assert served.front.arrived.acquire(timeout=_WAIT_S)
    served.stop(grace=0.05)
    assert running.exception(_WAIT_S).code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[union-attr]
    assert not served.server._answering
    with pytest.raises(grpc.RpcError) as refused:
        served.create(b"cd", timeout=_WAIT_S)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_calls_in_flight_finish_within_the_grace(served: _Served) -> None:
    served.on_loop(_clear(served.front.release))
    running = served.create.future(b"ab")
    assert served.front.arrived.acquire(timeout=_WAIT_S)
    stopping = asyncio.run_coroutine_threadsafe(served.server.stop(_WAIT_S), served.loop)
    while not served.server._stopping:
        threading.Event().wait(0.001)
    served.loop.call_soon_threadsafe(served.front.release.set)  # the call ends during the grace
    stopping.result(_WAIT_S)
    assert running.result(_WAIT_S) == b"ba"


def _clear(event: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    async def clear() -> None:
        event.clear()

    return clear


def test_a_bug_on_the_poller_fails_that_call_only(served: _Served, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        served.channel.unary_unary("/google.cloud.tasks.v2.CloudTasks/Broken")(b"", timeout=_WAIT_S)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert "the gRPC poller failed on an event" in caplog.text
    assert served.create(b"ab", timeout=_WAIT_S) == b"ba"


def test_an_address_in_use_is_refused_and_the_unstarted_server_stops() -> None:
    async def start_twice() -> None:
        first = GrpcServer(_Front())
        port = first.start("127.0.0.1:0")
        second = GrpcServer(_Front())
        with pytest.raises(RuntimeError, match="cannot listen"):
            second.start(f"127.0.0.1:{port}")
        await second.stop(0)
        await first.stop(0)

    asyncio.run(start_twice())


def _build() -> None:
    async def build() -> None:
        GrpcServer(_Front())

    asyncio.run(build())


def test_a_grpcio_without_a_name_the_server_uses_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    core = importlib.import_module("grpc._cython.cygrpc")
    monkeypatch.delattr(core, "SendStatusFromServerOperation")
    monkeypatch.setattr(core, "Call", type("Call", (), {}))  # its methods cannot be deleted one by one
    with pytest.raises(GrpcCoreUnavailable) as refused:
        _build()
    assert (
        str(refused.value)
        == "grpc._cython.cygrpc has no Call.start_server_batch, SendStatusFromServerOperation"
    )


def test_a_grpcio_whose_operations_take_other_arguments_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    core = importlib.import_module("grpc._cython.cygrpc")
    monkeypatch.setattr(core, "ReceiveMessageOperation", lambda: None)  # no flags any more
    with pytest.raises(GrpcCoreUnavailable, match="operations changed"):
        _build()


#: A ``sitecustomize`` that takes from grpcio what a future version might drop.
_WITHOUT_COMPLETION_QUEUE = "import grpc._cython.cygrpc as core\n\ndel core.CompletionQueue\n"
PARENT = "projects/local-project/locations/us-central1"


def test_runner_serve_on_a_grpcio_it_cannot_use_serves_rest_and_says_once_why_grpc_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner_process: Callable[..., RunnerProcess]
) -> None:
    (tmp_path / "sitecustomize.py").write_text(_WITHOUT_COMPLETION_QUEUE)
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    runner = runner_process(None)  # before the check, the runner exited: AttributeError: CompletionQueue
    queues = requests.get(f"{runner.url}/v2/{PARENT}/queues", timeout=_WAIT_S)
    assert queues.status_code == 200 and queues.json() == {}
    assert requests.get(f"{runner.url}/", timeout=_WAIT_S).status_code == 200  # the console
    off = [line for line in runner.log if "gRPC is off" in line]
    assert len(off) == 1
    assert f"grpcio {grpcio_version()} (grpc._cython.cygrpc has no CompletionQueue)" in off[0]
    with grpc.insecure_channel(runner.url.removeprefix("http://")) as channel:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(CREATE.full_name)(b"", timeout=_WAIT_S)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert runner.interrupt() == 0
    hints = [line for line in runner.log if "a gRPC client connected, but gRPC is off" in line]
    assert len(hints) == 1
    assert not [line for line in runner.log if "Traceback" in line]
