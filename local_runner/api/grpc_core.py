"""gRPC's C core, its calls answered on the event loop: one poller thread, no thread per call.

The C core reads and writes the connections on its own threads and reports each step of a call on a
completion queue. One poller thread waits on that queue: for a new call it asks the core for the request
message (or answers UNIMPLEMENTED at once); when the message is there, it hands the call to the event
loop, where :class:`~local_runner.api.grpc_front.GrpcFront` answers it; the loop sends the answer and
the status in one batch. Calls that arrive while the loop has not yet woken for earlier ones share one
wake-up.

``grpc.server`` (a thread per call, each waiting for the loop) cost about 1.5x the CPU per call, mostly
in waking threads and handing the interpreter lock around; ``grpc.aio`` runs the core's callbacks on
the loop itself (docs/performance.md, "gRPC CreateTask"). grpcio's public API offers nothing between
the two, so this uses ``grpc._cython.cygrpc``, the layer under both of them (the same calls
``grpc._server`` makes; ``tests/local_runner/test_grpc_front.py`` covers every path). That layer is
private: :class:`GrpcServer` checks it is there as used here (tested: :data:`TESTED_GRPCIO`) and raises
:class:`GrpcCoreUnavailable` otherwise, so a grpcio that changes it turns gRPC off, not the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import logging
import threading
from typing import Any

import grpc

from local_runner.api.errors import INTERNAL_MESSAGE
from local_runner.api.grpc_front import GrpcFront, Outcome
from local_runner.api.grpc_methods import RpcMethod
from local_runner.errors import RunnerError

log = logging.getLogger("local_runner.api")
cygrpc: Any = None  # grpc._cython.cygrpc once _check_core has found it usable

#: New calls the core may hand over before the poller asks for more.
_REQUESTED_CALLS = 16
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_SHUTTING_DOWN = "The runner is shutting down."
#: How long a stop waits for the core to finish after cancelling the calls left, in seconds.
_STOP_WAIT_S = 10.0
_NO_FLAGS = 0


#: The grpcio releases this module was tested with (docs/runner.md, "gRPC and the grpcio version").
TESTED_GRPCIO = "1.59 to 1.85"
#: What this module uses of ``grpc._cython.cygrpc``: a class or enum and the attributes it needs.
_CORE_USES: dict[str, tuple[str, ...]] = {
    "CompletionQueue": ("poll",),
    "Server": (
        "register_completion_queue",
        "add_http2_port",
        "start",
        "request_call",
        "shutdown",
        "cancel_all_calls",
        "destroy",
    ),
    "Call": ("start_server_batch",),
    "StatusCode": ("ok",),
    "ReceiveMessageOperation": (),
    "SendMessageOperation": (),
    "SendInitialMetadataOperation": (),
    "SendStatusFromServerOperation": (),
    "ReceiveCloseOnServerOperation": (),
}


class GrpcCoreUnavailable(RunnerError):
    """This grpcio's private layer is not what :class:`GrpcServer` is built on; the message says why."""


def grpcio_version() -> str:
    """The installed grpcio's version (for messages)."""
    try:
        return importlib.metadata.version("grpcio")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - grpc imported without metadata
        return str(getattr(grpc, "__version__", "unknown"))


def _check_core() -> None:
    """Import ``grpc._cython.cygrpc`` and check it offers what this module calls, as it calls it."""
    global cygrpc
    try:
        core = importlib.import_module("grpc._cython.cygrpc")
    except ImportError as error:
        raise GrpcCoreUnavailable(f"grpc._cython.cygrpc cannot be imported ({error})") from error
    missing: list[str] = []
    for name, attributes in _CORE_USES.items():
        owner = getattr(core, name, None)
        missing += [name] if owner is None else [f"{name}.{a}" for a in attributes if not hasattr(owner, a)]
    if missing:
        raise GrpcCoreUnavailable(f"grpc._cython.cygrpc has no {', '.join(missing)}")
    try:  # the operations _send and _new_call build, with the same arguments
        core.ReceiveMessageOperation(_NO_FLAGS)
        core.SendMessageOperation(b"", _NO_FLAGS)
        core.SendInitialMetadataOperation(None, _NO_FLAGS)
        core.SendStatusFromServerOperation(None, core.StatusCode.ok, b"", _NO_FLAGS)
        core.ReceiveCloseOnServerOperation(_NO_FLAGS)
    except Exception as error:
        raise GrpcCoreUnavailable(f"grpc._cython.cygrpc's operations changed ({error!r})") from error
    cygrpc = core


class _Tag:
    """What a completion-queue event is about."""


_NEW_CALL, _SENT, _SHUTDOWN = _Tag(), _Tag(), _Tag()


class _Received(_Tag):
    """The request message of ``call`` has arrived (or the call ended without one)."""

    __slots__ = ("call", "method", "raw")

    def __init__(self, call: Any, method: RpcMethod) -> None:
        self.call = call
        self.method = method
        #: The serialized request, or None if the client closed its side without sending one.
        self.raw: bytes | None = None


class GrpcServer:
    """gRPC on an internal address, each call answered by ``front`` on the running event loop."""

    def __init__(self, front: GrpcFront) -> None:
        """Build the core's server; raises :class:`GrpcCoreUnavailable` if this grpcio cannot."""
        _check_core()
        self._front = front
        self._methods = front.methods()
        self._loop = asyncio.get_running_loop()
        try:
            self._queue = cygrpc.CompletionQueue()
            self._server = cygrpc.Server(
                (("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)), False
            )
            self._server.register_completion_queue(self._queue)
        except Exception as error:
            raise GrpcCoreUnavailable(f"grpc._cython.cygrpc's server cannot be built ({error!r})") from error
        self._lock = threading.Lock()
        self._arrived: list[_Received] = []
        self._woken = False
        self._stopping = False
        self._shut_down = threading.Event()
        self._answering: dict[_Received, asyncio.Task[None]] = {}
        self._poller = threading.Thread(target=self._poll, name="grpc-poller", daemon=True)

    def start(self, address: str) -> int:
        """Listen on ``address`` (``unix:PATH``, ``unix-abstract:NAME`` or ``HOST:PORT``); the bound port."""
        port: int = self._server.add_http2_port(address.encode())
        if port == 0:  # the core says no more than this
            raise RuntimeError(f"the gRPC server cannot listen on {address}")
        self._server.start()
        for _ in range(_REQUESTED_CALLS):
            self._server.request_call(self._queue, self._queue, _NEW_CALL)
        self._poller.start()
        return port

    async def stop(self, grace: float) -> None:
        """Refuse new calls, give those in flight ``grace`` seconds, then cancel the rest (UNAVAILABLE)."""
        with self._lock:
            if self._stopping or self._poller.ident is None:  # stopped, or never started
                self._stopping = True
                return
            self._stopping = True
            self._server.shutdown(self._queue, _SHUTDOWN)
        if not await asyncio.to_thread(self._shut_down.wait, grace):
            self._server.cancel_all_calls()
            for task in list(self._answering.values()):
                task.cancel()  # each sends UNAVAILABLE, which the core has already sent
            await asyncio.sleep(0)  # the cancelled tasks run (or end unstarted) and drop their calls
            self._answering.clear()
            await asyncio.to_thread(self._shut_down.wait, _STOP_WAIT_S)
        await asyncio.to_thread(self._poller.join, _STOP_WAIT_S)
        self._server.destroy()

    # -- the poller thread -------------------------------------------------------------------------

    def _poll(self) -> None:
        """Take the core's events until it has shut down; hand arrived requests to the loop."""
        while True:
            event = self._queue.poll()
            tag = event.tag
            if tag is _SHUTDOWN:
                self._shut_down.set()
                return
            try:
                if tag is _NEW_CALL:
                    self._new_call(event)
                elif isinstance(tag, _Received) and event.success:  # else the call ended before its message
                    tag.raw = event.batch_operations[0].message()
                    self._hand_over(tag)
                # _SENT (an answer went out, or the client had gone) and queue timeouts need nothing
            except Exception:  # a bug must not stop the poller: every later call would hang
                log.exception("the gRPC poller failed on an event")
                call = event.call if tag is _NEW_CALL else getattr(tag, "call", None)
                if call is not None:
                    with contextlib.suppress(Exception):
                        _send(call, (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE))

    def _new_call(self, event: Any) -> None:
        with self._lock:
            if not self._stopping:
                self._server.request_call(self._queue, self._queue, _NEW_CALL)
        if not event.success:  # the server is shutting down
            return
        name = event.call_details.method.decode("utf-8", "replace")
        method = self._methods.get(name)
        if method is None:
            details = self._front.unimplemented(name)
            _send(event.call, (grpc.StatusCode.UNIMPLEMENTED, details))
            return
        receive = (cygrpc.ReceiveMessageOperation(_NO_FLAGS),)
        event.call.start_server_batch(receive, _Received(event.call, method))

    def _hand_over(self, received: _Received) -> None:
        with self._lock:
            self._arrived.append(received)
            wake = not self._woken
            self._woken = True
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
                self._loop.call_soon_threadsafe(self._answer_arrived)

    # -- the event loop ----------------------------------------------------------------------------

    def _answer_arrived(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
            self._woken = False
        for received in arrived:
            self._answering[received] = self._loop.create_task(self._answer(received))

    async def _answer(self, received: _Received) -> None:
        """Answer one call: the response, or the status its error maps to."""
        outcome: Outcome
        raw = received.raw
        try:
            if raw is None:
                outcome = (
                    grpc.StatusCode.UNIMPLEMENTED,
                    f'"{received.method.full_name}" requires exactly one request message.',
                )
            else:
                outcome = await self._front.outcome(received.method, raw)
        except asyncio.CancelledError:
            outcome = (grpc.StatusCode.UNAVAILABLE, _SHUTTING_DOWN)
        finally:
            self._answering.pop(received, None)
        try:
            _send(received.call, outcome)
        except Exception:
            log.exception("%s: the answer could not be sent", received.method.full_name)


def _send(call: Any, outcome: Outcome) -> None:
    """Send the answer (initial metadata, the message if any, the status) in one batch."""
    message: tuple[Any, ...]
    if isinstance(outcome, bytes):
        code, details = cygrpc.StatusCode.ok, b""
        message = (cygrpc.SendMessageOperation(outcome, _NO_FLAGS),)
    else:
        status, text = outcome
        code, details, message = status.value[0], text.encode(), ()
    call.start_server_batch(
        (
            cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
            *message,
            cygrpc.SendStatusFromServerOperation(None, code, details, _NO_FLAGS),
            cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),
        ),
        _SENT,
    )
