"""Cloud Scheduler REST v1 (``/v1/projects/*/locations/*/jobs...``) on the runner's port.

The paths, verbs and bodies of ``google/cloud/scheduler/v1/cloudscheduler.proto``'s HTTP bindings;
the same :class:`~local_runner.api.routing.Router` and error documents as the Cloud Tasks API.
"""

from __future__ import annotations

from aiohttp import web

from local_runner.api.request import Call, parse_int
from local_runner.api.routing import LOCATION, Router
from local_runner.api.views import make_view
from local_runner.cloud_scheduler.service import JobsService
from local_runner.codec.scalars import JsonObject
from local_runner.errors import NotFound

PREFIX = "/v1/"
JOB = LOCATION + r"/jobs/[^/:]+"


def routes(service: JobsService, locations: Router | None = None) -> Router:
    """The CloudScheduler methods, one route each; ListLocations and GetLocation from ``locations``.

    ``locations`` is the Cloud Tasks API's router: the runner has one location for both products.
    """
    r = Router()
    if locations is not None:
        _share_locations(r, locations)
    r.add("GET", rf"(?P<parent>{LOCATION})/jobs", lambda c: _list(service, c), ("pageSize", "pageToken"))
    r.add("POST", rf"(?P<parent>{LOCATION})/jobs", lambda c: service.create_job(c.params["parent"], c.body))
    r.add("GET", rf"(?P<name>{JOB})", lambda c: service.get_job(c.params["name"]))
    r.add("PATCH", rf"(?P<name>{JOB})", lambda c: _update(service, c), ("updateMask",))
    r.add("DELETE", rf"(?P<name>{JOB})", lambda c: service.delete_job(c.params["name"]))
    r.add("POST", rf"(?P<name>{JOB}):pause", lambda c: service.pause_job(c.params["name"]))
    r.add("POST", rf"(?P<name>{JOB}):resume", lambda c: service.resume_job(c.params["name"]))
    r.add("POST", rf"(?P<name>{JOB}):run", lambda c: service.run_job(c.params["name"]))
    r.add("GET", rf"(?P<name>{JOB}):attempts", lambda c: {"attempts": service.attempts(c.params["name"])})
    return r


def _share_locations(r: Router, tasks: Router) -> None:
    """The Scheduler client's Locations mixin under ``/v1/``, answered by the Cloud Tasks handlers."""

    def shared(call: Call) -> object:
        match = tasks.match("GET", call.params["path"])
        if match is None:  # pragma: no cover - both routers use the same patterns
            raise NotFound(f"The requested URL /v1/{call.params['path']} was not found on this server.")
        return match.route.handler(Call(params=match.params, query=call.query))

    r.add("GET", r"(?P<path>projects/[^/]+/locations)", shared, ("filter", "pageSize", "pageToken"))
    r.add("GET", rf"(?P<path>{LOCATION})", shared)


def _list(service: JobsService, call: Call) -> JsonObject:
    size = parse_int(call.query.get("pageSize"), "pageSize")
    return service.list_jobs(call.params["parent"], size, call.query.get("pageToken", ""))


def _update(service: JobsService, call: Call) -> JsonObject:
    mask = call.query.get("updateMask")
    paths = None if mask is None else [path.strip() for path in mask.split(",")]
    return service.update_job(call.params["name"], call.body, paths)


def register(app: web.Application, service: JobsService, locations: Router | None = None) -> Router:
    """Serve the Cloud Scheduler API under ``/v1/``; returns the router, which the gRPC front shares."""
    router = routes(service, locations)
    app.router.add_route("*", PREFIX + r"{tail:[\s\S]*}", make_view(router, PREFIX))
    return router
