"""The gRPC front: every RPC of the method tables, answered by the REST handlers.

The tables are :mod:`~local_runner.api.grpc_methods` (Cloud Tasks v2) and
:mod:`~local_runner.api.grpc_scheduler_methods` (Cloud Scheduler v1).

Each call is transcoded to the REST call its HTTP rule describes (:mod:`~local_runner.api.grpc_messages`)
and routed through the same :class:`~local_runner.api.routing.Router` as REST (the one of the rule's API
version), so both fronts run the same validation against the same service and answer the same messages; the
canonical code becomes the gRPC status. A method the runner does not serve answers UNIMPLEMENTED.

The server (:mod:`~local_runner.api.grpc_core`) answers each call on the event loop through
:meth:`GrpcFront.outcome`.
"""

from __future__ import annotations

import inspect
import logging

import grpc

from local_runner.api import grpc_methods, grpc_scheduler_methods
from local_runner.api.errors import INTERNAL_MESSAGE, store_error_status
from local_runner.api.grpc_messages import parse_request, to_response, to_rest_call
from local_runner.api.grpc_methods import RpcMethod
from local_runner.api.grpc_status import grpc_status
from local_runner.api.request import Call
from local_runner.api.routing import Router
from local_runner.errors import ApiError, Code, InvalidArgument, StoreError

log = logging.getLogger("local_runner.api")
#: How many distinct unserved services get a hint in the log (a misbehaving client cannot flood it).
_MAX_HINTS = 20

#: A call's outcome on the loop: the serialized response, or the status to abort the call with.
Outcome = bytes | tuple[grpc.StatusCode, str]


class GrpcFront:
    """The gRPC handlers over the REST routers, one per API version prefix of the method tables."""

    def __init__(self, router: Router, scheduler_router: Router | None = None) -> None:
        """``router`` answers the ``/v2/`` (Cloud Tasks) rules, ``scheduler_router`` the ``/v1/`` ones.

        Without ``scheduler_router``, Cloud Scheduler calls answer UNIMPLEMENTED.
        """
        self._routers = {"/v2/": router}
        if scheduler_router is not None:
            self._routers[grpc_scheduler_methods.PREFIX] = scheduler_router
        self._hinted: set[str] = set()

    def methods(self) -> dict[str, RpcMethod]:
        """The methods served (those whose API version has a router here), by gRPC path."""
        tables = [*grpc_methods.by_service(), *grpc_scheduler_methods.by_service()]
        return {m.full_name: m for _, methods in tables for m in methods if m.prefix in self._routers}

    def unimplemented(self, name: str) -> str:
        """The UNIMPLEMENTED message for method ``name``, naming what the runner serves.

        The first call to each unserved service also logs a one-line hint (a v2beta3 client, say).
        """
        served = (
            f"{grpc_methods.TASKS_SERVICE}, {grpc_scheduler_methods.SCHEDULER_SERVICE}, "
            f"{grpc_methods.LOCATIONS_SERVICE} and {grpc_methods.OPERATIONS_SERVICE}"
        )
        service = name.rpartition("/")[0]
        if service not in self._hinted and len(self._hinted) < _MAX_HINTS:
            self._hinted.add(service)
            log.warning("a gRPC client called %s, which is not served (the runner serves %s)", name, served)
        return f"Method {name} is not implemented by the local Cloud Tasks runner; it serves {served}."

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
