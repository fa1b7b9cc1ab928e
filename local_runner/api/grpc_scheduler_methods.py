"""The Cloud Scheduler v1 gRPC method table: each RPC's message classes and its HTTP rule.

The message classes ship in ``google-cloud-scheduler`` (proto-plus types; no ``.proto`` file is compiled)
and the HTTP rules are those of ``google/cloud/scheduler/v1/cloudscheduler.proto``, so each gRPC call is
transcoded to the ``/v1/`` REST call the REST transport would send and answered by the runner's Cloud
Scheduler REST handlers (:mod:`local_runner.cloud_scheduler.api`). The client's Locations mixin calls are
the ``google.cloud.location.Locations`` service of :mod:`~local_runner.api.grpc_methods`, one per server.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.cloud.scheduler_v1 import types
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from local_runner.api.grpc_methods import RpcMethod
from local_runner.api.grpc_methods import _pb as pb  # the protobuf class behind a proto-plus one

SCHEDULER_SERVICE = "google.cloud.scheduler.v1.CloudScheduler"
#: The REST prefix the Scheduler rules are under (the router :class:`~local_runner.api.grpc_front.GrpcFront`
#: is given for it).
PREFIX = "/v1/"

_LOCATION = "projects/*/locations/*"
_JOB = _LOCATION + "/jobs/*"
_JOB_MSG = pb(types.Job)


def _scheduler(name: str, response: type[Message], verb: str, path: str, body: str = "") -> RpcMethod:
    request = pb(getattr(types, f"{name}Request"))
    return RpcMethod(SCHEDULER_SERVICE, name, request, response, verb, path, body, PREFIX)


#: Every CloudScheduler RPC (``google-cloud-scheduler`` 2.21's gRPC transport).
METHODS: tuple[RpcMethod, ...] = (
    _scheduler("ListJobs", pb(types.ListJobsResponse), "GET", f"{{parent={_LOCATION}}}/jobs"),
    _scheduler("GetJob", _JOB_MSG, "GET", f"{{name={_JOB}}}"),
    _scheduler("CreateJob", _JOB_MSG, "POST", f"{{parent={_LOCATION}}}/jobs", "job"),
    _scheduler("UpdateJob", _JOB_MSG, "PATCH", f"{{job.name={_JOB}}}", "job"),
    _scheduler("DeleteJob", empty_pb2.Empty, "DELETE", f"{{name={_JOB}}}"),
    _scheduler("PauseJob", _JOB_MSG, "POST", f"{{name={_JOB}}}:pause", "*"),
    _scheduler("ResumeJob", _JOB_MSG, "POST", f"{{name={_JOB}}}:resume", "*"),
    _scheduler("RunJob", _JOB_MSG, "POST", f"{{name={_JOB}}}:run", "*"),
)


def by_service() -> Iterator[tuple[str, list[RpcMethod]]]:
    """The table as one service (the shape of :func:`local_runner.api.grpc_methods.by_service`)."""
    yield SCHEDULER_SERVICE, list(METHODS)
