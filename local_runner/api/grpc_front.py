"""The gRPC front: every RPC of the method tables, answered by the REST handlers.

The tables are :mod:`~local_runner.api.grpc_methods` (Cloud Tasks v2) and
:mod:`~local_runner.api.grpc_scheduler_methods` (Cloud Scheduler v1).

Each call is transcoded to the REST call its HTTP rule describes (:mod:`~local_runner.api.grpc_messages`)
and routed through the same :class:`~local_runner.api.routing.Router` as REST (the one of the rule's API
version), so both fronts run the same validation against the same service and answer the same messages; the
canonical code becomes the gRPC status. A method the runner does not serve answers UNIMPLEMENTED.

The server is gRPC's threaded one: its C core reads and writes the connections on its own threads, and
each call's handler thread hands the call to the event loop (:class:`~local_runner.api.grpc_hop.LoopHop`)
and waits for the answer. ``grpc.aio`` ran its completion callbacks on the event loop itself, which cost
the loop more than the REST handler did (docs/performance.md, "gRPC CreateTask").
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from local_runner.api import grpc_methods, grpc_scheduler_methods
from local_runner.api.errors import INTERNAL_MESSAGE, store_error_status
from local_runner.api.grpc_hop import LoopClosed, LoopHop
from local_runner.api.grpc_messages import parse_request, to_response, to_rest_call
from local_runner.api.grpc_methods import RpcMethod
from local_runner.api.grpc_status import grpc_status
from local_runner.api.request import Call
from local_runner.api.routing import Router
from local_runner.errors import ApiError, Code, InvalidArgument, StoreError

log = logging.getLogger("local_runner.api")

Behaviour = Callable[[bytes, grpc.ServicerContext], bytes]
#: A call's outcome on the loop: the serialized response, or the status to abort the call with.
Outcome = bytes | tuple[grpc.StatusCode, str]

#: Handler threads: each waits for one call's answer from the loop (more calls in flight wait in line).
HANDLER_THREADS = 32
_SHUTTING_DOWN = "The runner is shutting down."


class GrpcFront:
    """The gRPC handlers over the REST routers, one per API version prefix of the method tables."""

    def __init__(self, router: Router, scheduler_router: Router | None = None) -> None:
        """``router`` answers the ``/v2/`` (Cloud Tasks) rules, ``scheduler_router`` the ``/v1/`` ones.

        Without ``scheduler_router``, Cloud Scheduler calls answer UNIMPLEMENTED.
        """
        self._routers = {"/v2/": router}
        if scheduler_router is not None:
            self._routers[grpc_scheduler_methods.PREFIX] = scheduler_router

    def handlers(self, hop: LoopHop) -> Sequence[grpc.GenericRpcHandler]:
        """One generic handler per gRPC service, then the UNIMPLEMENTED answer for any other method.

        Each handler runs its call on the loop behind ``hop``.
        """
        services: list[grpc.GenericRpcHandler] = [
            grpc.method_handlers_generic_handler(
                service,
                {
                    method.name: grpc.unary_unary_rpc_method_handler(self._behaviour(method, hop))
                    for method in methods
                },
            )
            for service, methods in self._served()
        ]
        return [*services, _Unimplemented()]

    def _served(self) -> list[tuple[str, list[RpcMethod]]]:
        """Each service's methods whose API version has a router here."""
        tables = [*grpc_methods.by_service(), *grpc_scheduler_methods.by_service()]
        served = [(service, [m for m in methods if m.prefix in self._routers]) for service, methods in tables]
        return [(service, methods) for service, methods in served if methods]

    def _behaviour(self, method: RpcMethod, hop: LoopHop) -> Behaviour:
        def behaviour(raw: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                outcome = hop.run(lambda: self.outcome(method, raw))
            except LoopClosed:
                outcome = (grpc.StatusCode.UNAVAILABLE, _SHUTTING_DOWN)
            if isinstance(outcome, bytes):
                return outcome
            context.abort(*outcome)
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

        return behaviour

    async def outcome(self, method: RpcMethod, raw: bytes) -> Outcome:
        """:meth:`answer`, or the status its error maps to (logged when it is the runner's fault)."""
        try:
            return await self.answer(method, raw)
        except ApiError as error:
            code, message = error.code, error.message
        except StoreError as error:
            log.error("%s: %s", method.full_name, error)
            code, message = store_error_status(error)
        except Exception:
            log.exception("%s failed", method.full_name)
            code, message = Code.INTERNAL, INTERNAL_MESSAGE
        return grpc_status(code), message

    async def answer(self, method: RpcMethod, raw: bytes) -> bytes:
        """The serialized response to the serialized request ``raw`` (raises the API's errors)."""
        rest = to_rest_call(method, parse_request(method, raw))
        match = self._routers[method.prefix].match(method.verb, rest.path)
        if match is None:  # the path variables matched the rule, but not the REST route's stricter form
            raise InvalidArgument(f"Invalid resource field value in the request: {rest.path}.")
        result = match.route.handler(Call(params=match.params, query=rest.query, body=rest.body))
        if inspect.isawaitable(result):
            result = await result
        return to_response(method, result)


#: How many distinct unserved services get a hint in the log (a misbehaving client cannot flood it).
_MAX_HINTS = 20


class _Unimplemented(grpc.GenericRpcHandler):
    """Any method no service handler claimed: UNIMPLEMENTED, naming what the runner serves.

    The first call to each unserved service also logs a one-line hint (a v2beta3 client, say).
    """

    def __init__(self) -> None:
        self._hinted: set[str] = set()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        name = str(handler_call_details.method)
        served = (
            f"{grpc_methods.TASKS_SERVICE}, {grpc_scheduler_methods.SCHEDULER_SERVICE}, "
            f"{grpc_methods.LOCATIONS_SERVICE} and {grpc_methods.OPERATIONS_SERVICE}"
        )
        message = f"Method {name} is not implemented by the local Cloud Tasks runner; it serves {served}."
        service = name.rpartition("/")[0]
        if service not in self._hinted and len(self._hinted) < _MAX_HINTS:
            self._hinted.add(service)
            log.warning("a gRPC client called %s, which is not served (the runner serves %s)", name, served)

        def behaviour(raw: bytes, context: grpc.ServicerContext) -> bytes:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

        return grpc.unary_unary_rpc_method_handler(behaviour)


class GrpcServer:
    """gRPC's threaded server for ``front``, its calls answered on the running event loop."""

    def __init__(self, front: GrpcFront) -> None:
        self._hop = LoopHop(asyncio.get_running_loop())
        self._server = grpc.server(
            ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="grpc-call"),
            handlers=list(front.handlers(self._hop)),
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 32 * 1024 * 1024)],
        )

    def start(self, address: str) -> int:
        """Listen on ``address`` (``unix:PATH``, ``unix-abstract:NAME`` or ``HOST:PORT``); the bound port."""
        port = self._server.add_insecure_port(address)
        self._server.start()
        return port

    async def stop(self, grace: float) -> None:
        """Refuse new calls, give those in flight ``grace`` seconds, then cancel the rest."""
        stopped = self._server.stop(grace)
        await asyncio.to_thread(stopped.wait)
        self._hop.close()
